"""Command line: ``python -m hybridlab train ...`` trains one network and writes its result as JSON;
``python -m hybridlab serve ...`` serves a simulated device to training runs in other processes.

    python -m hybridlab train --task vision --device slm --method surrogate --seed 0 --out result.json
    python -m hybridlab train --task text --device mzi --with-digital --quick
    python -m hybridlab serve --device slm --port 5000 --noise 0.01 --drop 0.01   # in one terminal
    python -m hybridlab train --task vision --device slm --remote localhost:5000  # in another
    torchrun --nproc-per-node 2 -m hybridlab train --task vision --device slm   # data parallel, 2 processes

Argument parsing only: every ``train`` option maps to an argument of :func:`hybridlab.recipes.run`
(the settings, their per-task defaults and meanings, and the result's JSON schema are documented
there), every ``serve`` option to one of :func:`hybridlab.remote.serve` or :class:`hybridlab.remote.Faults`.
Under ``torchrun`` (or ``python -m torch.distributed.run``) every process trains its rows of each
batch under ``DistributedDataParallel`` (:mod:`hybridlab.parallel`) and rank 0 alone writes the
result, the one-process run's up to float rounding.
Errors in values or data (an unknown layer, a rank too large, a folder without the dataset, an
unreadable file) print one line on stderr and exit with code 2.

Nothing a run produced is lost to a late error: ``--out`` and ``--checkpoint`` are checked before
anything is loaded or trained, the result is written atomically (whole or not at all; if it still
cannot be written, it goes to stdout), ``--checkpoint FILE`` saves the whole training state while
training, and the same command with ``--resume`` continues an interrupted run with the same
numbers. Settings that make training meaningless (read-out noise above the signal, ...) are
reported on stderr as ``hybridlab: warning: ...`` before the first step.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from . import __version__, assignments, parallel
from .checkpoint import atomic_write, check_output_path
from .data import DataUnavailable
from .devices import DEVICES
from .layer import UPKEEPS
from .recipes import ALL_METHODS, COMMAND_LINE, MEANINGS, TASKS, SettingWarning, run
from .remote import Faults, RetryPolicy, serve
from .sketch import KINDS as SKETCH_KINDS
from .zo import KINDS as ZO_KINDS

__all__ = ["build_parser", "main"]


# ---------------------------------------------------------------------------------------- command line
class _UsageError(Exception):
    """A bad command line (reported on one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        raise _UsageError(f"{message} (see: python -m {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m hybridlab`` argument parser (subcommands ``train``, ``serve``, ``assignments``)."""
    parser = _Parser(prog="hybridlab", description="Train networks that contain a physical, query-only layer.")
    parser.add_argument("--version", action="version", version=f"hybridlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train one network and write its result as JSON",
                       description="Train one network (a digital one or a hybrid one with a black-box layer) and "
                                   "write the result as JSON. Defaults per task: hybridlab.recipes.DEFAULTS.")
    p.add_argument("--task", required=True, choices=TASKS,
                   help="vision (digits), audio (spoken digits), text (characters)")
    p.add_argument("--device", default="ideal", choices=tuple(DEVICES), help="physical layer model (default: ideal)")
    p.add_argument("--method", default="surrogate", choices=ALL_METHODS,
                   help="training method (default: surrogate); 'digital' keeps a plain Linear")
    g = p.add_argument_group("data")
    g.add_argument("--data-dir", help="the real dataset: MNIST IDX files (vision), FSDD wav files (audio), "
                                      "a .txt file or a folder with input.txt (text)")
    g.add_argument("--download", action="store_true", help="try to download the real dataset (MNIST, Tiny Shakespeare)")
    g.add_argument("--data-seed", type=int, default=0, help="seed of the data split and synthesis (default: 0)")
    g.add_argument("--quick", action="store_true", help="a tiny run (small subset, one epoch / a few steps)")
    g.add_argument("--variant", default="easy", choices=("easy", "hard"),
                   help="the offline data: easy (the embedded default) or hard (built to behave like real data: "
                        "distorted digits, spoken digits through room, microphone, noise and telephone line)")
    g = p.add_argument_group("training (defaults per task and device: hybridlab.recipes.DEFAULTS)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, device, ZO directions, batches (default: 0)")
    types = {"lr": float, "lr_device": float, "anneal": float, "mu": float, "gain": float}
    for key in COMMAND_LINE:  # one option per setting, its help the setting's meaning
        flag = "--" + key.replace("_", "-")
        if key == "compressed":
            g.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=MEANINGS[key])
        elif key == "sketch_kind":
            g.add_argument(flag, choices=SKETCH_KINDS, help=MEANINGS[key])
        elif key == "upkeep":
            g.add_argument(flag, choices=UPKEEPS, help=MEANINGS[key])
        elif key == "directions":
            g.add_argument(flag, choices=ZO_KINDS, help=MEANINGS[key])
        else:
            g.add_argument(flag, type=types.get(key, int), help=MEANINGS[key])
    g.add_argument("--layer", help="name of the Linear to replace (default: hybridlab.models.DEFAULT_BLACK_BOX)")
    g = p.add_argument_group("device physics")
    g.add_argument("--noise", type=float, help="device read-out noise (relative)")
    g.add_argument("--bits", type=int, help="device phase quantisation bits")
    g = p.add_argument_group("output")
    g.add_argument("--with-digital", action="store_true", help="also train the digital baseline (digital_<metric>)")
    g.add_argument("--out", help="write the JSON here, atomically (default: stdout); checked before training")
    g.add_argument("--checkpoint", metavar="FILE",
                   help="save the whole training state here (atomically) after every epoch (vision, audio) or every "
                        "--checkpoint-every steps (text) and at the end; an existing FILE needs --resume")
    g.add_argument("--resume", action="store_true",
                   help="continue from --checkpoint FILE if it exists (else start); ends with the same numbers as an "
                        "uninterrupted run")
    g.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="epochs (vision, audio; default 1) or steps (text; default 100) between checkpoints")
    g.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")
    g.add_argument("--threads", type=int,
                   help="PyTorch CPU threads (default: PyTorch's); runs repeat exactly only with the same count")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    g = p.add_argument_group("a device served by another process (python -m hybridlab serve)")
    g.add_argument("--remote", metavar="HOST:PORT", help="train with the device of this server (its kind must be "
                                                         "--device; its physics options are the server's)")
    g.add_argument("--timeout", type=float, help=f"seconds one try may take: connect, send, reply (default "
                                                 f"{RetryPolicy.timeout:g}); a silent server ends the run after "
                                                 "--attempts tries")
    g.add_argument("--attempts", type=int, help=f"tries per device operation (default {RetryPolicy.attempts})")
    _add_serve_parser(sub)
    assignments.add_subcommands(sub)  # python -m hybridlab assignments release|grade
    return parser


def _add_serve_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve a simulated device to training runs in other processes",
                       description="Serve one simulated device on a TCP port until stopped (Ctrl-C, SIGTERM); "
                                   "train against it with: python -m hybridlab train ... --remote HOST:PORT. "
                                   "Clients and server share the key in $HYBRIDLAB_AUTHKEY (unset: a local "
                                   "default, accepted on this machine's loopback interface only).")
    p.add_argument("--device", required=True, choices=tuple(DEVICES), help="the device kind")
    p.add_argument("--port", required=True, type=int, help="TCP port (0: a free one, printed on stdout)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default: 127.0.0.1, this machine)")
    g = p.add_argument_group("device physics (hybridlab.devices)")
    g.add_argument("--noise", type=float, help="read-out noise (relative)")
    g.add_argument("--bits", type=int, help="phase quantisation bits")
    g.add_argument("--fab-error", type=float, help="fabrication error (standard deviation)")
    g.add_argument("--crosstalk", type=float, help="neighbour coupling")
    g.add_argument("--drift", type=float, help="drift per step (standard deviation)")
    g.add_argument("--seed", type=int, default=0, help="seed of fabrication errors and read-out noise (default: 0; "
                                                       "a run repeats an in-process one when it equals its --seed)")
    g = p.add_argument_group("faults to inject (hybridlab.remote.Faults)")
    g.add_argument("--drop", type=float, default=0.0, metavar="P", help="probability that a reply is lost")
    g.add_argument("--delay", type=float, default=0.0, metavar="P", help="probability that a reply comes late")
    g.add_argument("--delay-seconds", type=float, default=Faults.delay_seconds, metavar="S",
                   help=f"how late a late reply comes (default: {Faults.delay_seconds:g})")
    g.add_argument("--nonfinite", type=float, default=0.0, metavar="P",
                   help="probability that a read-out carries a NaN or Inf")
    g.add_argument("--die-after", type=int, metavar="N",
                   help="the device process dies after every N requests and is restarted from its state file")
    g.add_argument("--fault-seed", type=int, default=0, help="seed of the fault draws (default: 0)")
    g = p.add_argument_group("server")
    g.add_argument("--state", metavar="FILE", help="state file of the device (default: a temporary one); an "
                                                   "existing file is resumed")
    g.add_argument("--max-restarts", type=int, default=100, help="give up after this many deaths (default: 100)")
    g.add_argument("--cpu", action="store_true", help="keep the device on the CPU even when CUDA is available")
    g.add_argument("--threads", type=int, help="PyTorch CPU threads of the device (default: PyTorch's)")


def _check_threads(args: argparse.Namespace) -> None:
    if args.threads is not None and args.threads < 1:
        raise _UsageError(f"--threads must be at least 1, got {args.threads}")


def _train_command(args: argparse.Namespace, ranks: parallel.Ranks) -> dict[str, Any]:
    _check_threads(args)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device_options = {k: getattr(args, k) for k in ("noise", "bits") if getattr(args, k) is not None}
    retry = {k: getattr(args, k) for k in ("timeout", "attempts") if getattr(args, k) is not None}
    if retry and args.remote is None:
        raise _UsageError("--timeout and --attempts apply to a served device: add --remote HOST:PORT")
    if (args.resume or args.checkpoint_every is not None) and args.checkpoint is None:
        raise _UsageError("--resume and --checkpoint-every need --checkpoint FILE")
    if args.out:
        check_output_path(args.out, "--out")  # before training: a bad path fails now, not after an hour
    with warnings.catch_warnings():
        warnings.simplefilter("always", SettingWarning)
        warnings.showwarning = _one_line_warnings(warnings.showwarning)
        return run(args.task, args.device, args.method, seed=args.seed, data_seed=args.data_seed,
                   data_dir=args.data_dir, download=args.download, quick=args.quick, variant=args.variant,
                   layer=args.layer, with_digital=args.with_digital,
                   progress=not args.no_progress, use_cuda=not args.cpu, device_options=device_options,
                   remote=args.remote, remote_retry=RetryPolicy(**retry) if retry else None, ranks=ranks,
                   checkpoint=args.checkpoint, resume=args.resume, checkpoint_every=args.checkpoint_every,
                   **{k: getattr(args, k) for k in COMMAND_LINE})


def _one_line_warnings(show):
    """``warnings.showwarning`` that prints a :class:`~hybridlab.recipes.SettingWarning` as one line on
    stderr and hands other warnings to ``show``."""

    def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
        if issubclass(category, SettingWarning):
            print(f"hybridlab: warning: {message}", file=sys.stderr, flush=True)
        else:
            show(message, category, filename, lineno, file, line)

    return show_warning


def _serve_command(args: argparse.Namespace) -> int:
    _check_threads(args)
    physics = {"noise": args.noise, "bits": args.bits, "fab_error": args.fab_error, "crosstalk": args.crosstalk,
               "drift": args.drift, "seed": args.seed}
    faults = Faults(drop=args.drop, delay=args.delay, delay_seconds=args.delay_seconds, nonfinite=args.nonfinite,
                    die_after=args.die_after, seed=args.fault_seed)
    try:
        serve(args.device, port=args.port, host=args.host, options={k: v for k, v in physics.items() if v is not None},
              faults=faults, state_file=args.state, threads=args.threads, use_cuda=not args.cpu,
              max_restarts=args.max_restarts)
    except KeyboardInterrupt:
        print("hybridlab serve: stopped", file=sys.stderr)
    return 0


def _summary_line(r: dict[str, Any]) -> str:
    m = r["metric"]
    line = f"{r['task']} {r['method']}" + ("" if r["method"] == "digital" else f" on {r['device']}")
    line += f": {m} {r[m]:.4f}"
    if f"digital_{m}" in r:
        line += f" (digital {r[f'digital_{m}']:.4f})"
    return line + f", {r['queries']} queries, {r['reconfigurations']} reconfigurations, {r['seconds']:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hybridlab``; returns the exit code (0 ok, 2 bad usage, data or device)."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "serve":
            return _serve_command(args)
        if args.command == "assignments":
            return assignments.main(args)
        ranks = parallel.setup_from_env("gloo" if args.cpu else None)  # under torchrun; else one process
        try:
            result = _train_command(args, ranks)
        finally:
            if ranks.distributed:
                parallel.cleanup()
        if not ranks.is_main:  # data parallel: rank 0 alone writes
            return 0
        text = json.dumps(result, indent=2) + "\n"
        if args.out:
            try:
                atomic_write(Path(args.out).expanduser(), text)
            except OSError as err:  # the result is not lost: it goes to stdout instead
                sys.stdout.write(text)
                print(f"hybridlab: error: cannot write --out {args.out} ({err}); the result is on stdout above",
                      file=sys.stderr)
                return 2
        else:
            sys.stdout.write(text)
    except _UsageError as err:
        print(f"hybridlab: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError, DataUnavailable, ImportError) as err:
        message = " ".join(str(err).split())  # one line
        print(f"hybridlab: error: {message}", file=sys.stderr)
        return 2
    print(_summary_line(result), file=sys.stderr)
    return 0
