"""Command line: train one hybrid network and write its result as JSON.

    python -m hybridlab train --task vision --device slm --method surrogate --seed 0 --out result.json
    python -m hybridlab train --task text --device mzi --with-digital --quick

The network is :func:`hybridlab.models.build_model` for the task, with one Linear (``--layer``,
default :data:`hybridlab.models.DEFAULT_BLACK_BOX`) replaced by a
:class:`~hybridlab.layer.BlackBoxLinear` on the chosen device; method ``digital`` keeps the plain
``nn.Linear`` (no device, no queries). Every setting has a per-task default in :data:`DEFAULTS`
(the chapters use the same numbers through :func:`run`); the command-line options override them.

Training runs ``epochs`` epochs (vision, audio) or ``steps`` steps (text) with AdamW; the last
``anneal`` fraction of them runs at a tenth of both learning rates (a step schedule: the device
settles and the network adapts to its final matrix). The metric is the test accuracy (vision,
audio) or the bits per character on the whole validation split (text).

JSON result (one object; ``<metric>`` is ``accuracy`` or ``bits_per_char``)::

    task, device, method, layer    str    what was trained (device is unused for 'digital')
    metric                         str    "accuracy" (fraction in [0, 1], higher is better) or
                                          "bits_per_char" (> 0, lower is better)
    <metric>                       float  the final metric of this run
    digital_<metric>               float  the same network with a plain Linear (--with-digital only)
    digital_seconds                float  wall seconds of that baseline run (--with-digital only)
    dataset                        dict   name and sizes: n_train, n_test, input_shape, n_classes
                                          (text: n_chars, n_train, n_val, vocab_size)
    queries, reconfigurations      int    device totals, training and evaluation (0 for digital)
    seconds                        float  wall seconds of training and evaluation (no data loading)
    data_seconds                   float  wall seconds spent loading the data
    history                        dict   steps, train_loss, metric, queries, reconfigurations per
                                          evaluation (text: metric on a few validation batches)
    settings                       dict   every resolved hyper-parameter (lr, lr_device, rank, ...)
    args                           dict   the arguments of :func:`run` as given (None = default)
    seed, data_seed                int    training seed; seed of the data split / synthesis
    torch_device, hybridlab_version, torch_version   str
    torch_threads                  int    CPU threads of PyTorch during the run (``--threads``); the
                                          floating-point sums, so the last digits, depend on it

Errors in values or data (an unknown layer, a rank too large, a folder without the dataset, an
unreadable file) print one line on stderr and exit with code 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import __version__, assignments
from .data import DataUnavailable, Dataset, TextCorpus, load_task
from .devices import DEVICES
from .layer import METHODS, BlackBoxLinear, replace_linear
from .models import DEFAULT_BLACK_BOX, MODEL_DEFAULTS, build_model, replaceable
from .train import History, hardware_budget, train_classifier, train_language_model

__all__ = ["DEFAULTS", "QUICK", "TASKS", "TRAINING_OPTIONS", "ALL_METHODS", "build_parser", "load_data", "main",
           "run", "settings"]

TASKS: tuple[str, ...] = ("vision", "audio", "text")
ALL_METHODS: tuple[str, ...] = ("digital", *METHODS)
METRIC: dict[str, str] = {"vision": "accuracy", "audio": "accuracy", "text": "bits_per_char"}

#: Per-task training defaults (the book's chapters 6-8 use these). They were tuned so that, over
#: seeds 0-2, the surrogate method stays within 1.5 points (vision), 2 points (audio) or 5 % of the
#: bits per character (text) of the digital network, beats the static surrogate, and a chapter
#: (digital + surrogate + static on three devices, 3 seeds) trains in a few minutes on 2 CPU cores.
#:
#: * ``lr_device`` is per device: the same phase step moves an SLM matrix less than a ring near
#:   resonance or an MZI mesh (where every phase acts on a whole column), so the device rates are
#:   set for a comparable relative change of the matrix over training (order 1).
#: * ``gain`` is the black box's initial output gain relative to the calibrated one (output RMS =
#:   gain x input RMS); the transformer needs 0.1, or the device output swamps its residual stream.
#: * text uses the compressed-batch ZO estimate (``d_out`` queries per sample instead of the 2048
#:   tokens of a batch), which makes ``M = 100`` samples affordable; more samples make the device
#:   updates descend rather than wander.
DEFAULTS: dict[str, dict[str, Any]] = {
    "vision": {
        "epochs": 25, "batch_size": 64, "lr": 1e-2, "anneal": 0.2,
        "rank": 16, "samples": 10, "mu": 1e-3, "sketch": 32, "sketch_kind": "gaussian", "compressed": False,
        "gain": 1.0, "rebuild_every": None,
        "lr_device": {"ideal": 1e-2, "slm": 0.07, "mrr": 1e-2, "mzi": 1e-2},
    },
    "audio": {
        "epochs": 15, "batch_size": 64, "lr": 1e-2, "anneal": 0.2,
        "rank": 16, "samples": 10, "mu": 1e-3, "sketch": 32, "sketch_kind": "gaussian", "compressed": False,
        "gain": 1.0, "rebuild_every": None,
        "lr_device": {"ideal": 1e-2, "slm": 0.1, "mrr": 1e-2, "mzi": 1e-2},
    },
    "text": {
        "steps": 600, "batch_size": 64, "lr": 2e-3, "anneal": 0.2,
        "rank": 32, "samples": 100, "mu": 1e-3, "sketch": 32, "sketch_kind": "gaussian", "compressed": True,
        "gain": 0.1, "rebuild_every": None,
        "lr_device": {"ideal": 1e-2, "slm": 0.06, "mrr": 1e-2, "mzi": 1e-2},
    },
}  # fmt: skip

#: Overrides of ``--quick`` (tiny runs for tests): one epoch on a small subset, or a few small steps.
QUICK: dict[str, dict[str, Any]] = {
    "vision": {"epochs": 1, "n_train": 256, "n_test": 128},
    "audio": {"epochs": 1, "n_train": 256, "n_test": 128},
    "text": {"steps": 8, "batch_size": 16, "samples": 10, "n_val": 2048},
}

_DATA_CACHE_SIZE = 8


# ---------------------------------------------------------------------------------------- setup
def settings(task: str, device: str = "ideal", method: str = "surrogate", *, quick: bool = False,
             **overrides: Any) -> dict[str, Any]:
    """The resolved training settings of a run: :data:`DEFAULTS` ``[task]``, ``--quick``, overrides.

    ``overrides`` set to ``None`` are ignored (the command line passes every option). The model
    sizes of :data:`~hybridlab.models.MODEL_DEFAULTS` (``width``, ...) are settings too.

    Raises:
        ValueError: unknown task, device or method, or an option the task does not have.
    """
    _check_choice("task", task, TASKS)
    _check_choice("device", device, tuple(DEVICES))
    _check_choice("method", method, ALL_METHODS)
    s = {**MODEL_DEFAULTS[task], **DEFAULTS[task]}
    s["lr_device"] = s["lr_device"][device]
    if quick:
        s.update(QUICK[task])
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in s:
            hint = {"epochs": "use steps (--steps) for text", "steps": "use epochs (--epochs) for vision and audio"}
            raise ValueError(f"option {key!r} does not apply to the {task} task"
                             + (f": {hint[key]}" if key in hint else ""))
        s[key] = value
    return s


def _check_choice(what: str, value: str, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}; choose one of {', '.join(choices)}")


@functools.lru_cache(maxsize=_DATA_CACHE_SIZE)
def _load_cached(task: str, data_dir: str | None, download: bool, quick: bool, data_seed: int):
    return load_task(task, data_dir=data_dir, download=download, quick=quick, seed=data_seed)


def load_data(task: str, *, data_dir: str | Path | None = None, download: bool = False, quick: bool = False,
              data_seed: int = 0) -> Dataset | TextCorpus:
    """The task's data (memoised per process, so repeated runs do not reload or re-synthesise).

    ``quick`` keeps a seeded subset (:data:`QUICK`) for fast runs.
    """
    _check_choice("task", task, TASKS)
    data = _load_cached(task, None if data_dir is None else str(data_dir), download, quick, data_seed)
    if quick and isinstance(data, Dataset):
        data = data.subsample(QUICK[task]["n_train"], QUICK[task]["n_test"], seed=data_seed)
    return data


def _hybrid_model(task: str, data: Dataset | TextCorpus, device: str, method: str, layer: str, s: dict[str, Any],
                  seed: int, device_options: dict[str, Any]) -> tuple[nn.Module, BlackBoxLinear | None]:
    sizes = {k: s[k] for k in MODEL_DEFAULTS[task]}
    model = build_model(task, data, seed=seed, **sizes)
    if not isinstance(dict(model.named_modules()).get(layer), nn.Linear):
        raise ValueError(f"layer {layer!r} is not a Linear of the {task} model; choose one of "
                         f"{', '.join(replaceable(model))}")
    if method == "digital":
        return model, None
    options = {k: s[k] for k in ("rank", "samples", "mu", "sketch", "sketch_kind", "compressed", "rebuild_every")}
    bb = replace_linear(model, layer, device, method=method, seed=seed, device_options=device_options or None,
                        **options)
    return model, bb


def _set_gain(model: nn.Module, bb: BlackBoxLinear | None, x: Tensor, gain: float) -> None:
    """Calibrate the black box's gain on ``x`` (one forward pass), then scale it by ``gain``."""
    if bb is None or gain == 1.0:
        return
    with torch.no_grad():
        model(x)  # the layer sets gain so that its output RMS equals its input RMS
        bb.gain.mul_(gain)


def _merge(first: History, second: History) -> History:
    """One history from two consecutive phases (the second's steps continue the first's)."""
    offset = first.steps[-1] if first.steps else 0
    return History(steps=first.steps + [offset + k for k in second.steps],
                   train_loss=first.train_loss + second.train_loss, metric=first.metric + second.metric,
                   queries=first.queries + second.queries,
                   reconfigurations=first.reconfigurations + second.reconfigurations,
                   metric_name=first.metric_name, seconds=first.seconds + second.seconds)


def _split(total: int, anneal: float) -> tuple[int, int]:
    """(main, annealed) counts: the last ``anneal`` fraction of ``total`` (rounded) is annealed."""
    if not 0.0 <= anneal < 1.0:
        raise ValueError(f"anneal must be in [0, 1), got {anneal}")
    tail = min(total - 1, round(anneal * total)) if total > 1 else 0
    return total - tail, tail


def _fit_classifier(model: nn.Module, bb: BlackBoxLinear | None, data: Dataset, s: dict[str, Any], seed: int,
                    dev: torch.device, progress: bool, desc: str) -> History:
    X, y, Xt, yt = data
    _set_gain(model, bb, X[: s["batch_size"]].to(dev), s["gain"])
    main, tail = _split(s["epochs"], s["anneal"])
    kw = {"batch_size": s["batch_size"], "progress": progress, "desc": desc}
    hist = train_classifier(model, X, y, Xt, yt, epochs=main, lr=s["lr"], lr_device=s["lr_device"], seed=seed, **kw)
    if tail:
        hist = _merge(hist, train_classifier(model, X, y, Xt, yt, epochs=tail, lr=s["lr"] / 10,
                                             lr_device=s["lr_device"] / 10, seed=seed + 1, **kw))
    return hist


@torch.no_grad()
def validation_bits_per_char(model: nn.Module, ids: Tensor, block: int, batch_size: int = 256) -> float:
    """Bits per character on ``ids`` cut into consecutive windows of ``block`` characters.

    Every character after a window's first is predicted once (deterministic, no sampling).
    """
    n = (len(ids) - 1) // block
    if n < 1:
        raise ValueError(f"the validation text has {len(ids)} characters; it needs more than the context "
                         f"length {block}: use a longer text")
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    x, y = ids[: n * block].view(n, block), ids[1: n * block + 1].view(n, block)
    total = 0.0
    for i in range(0, n, batch_size):
        logits = model(x[i: i + batch_size].to(dev))
        targets = y[i: i + batch_size].to(dev).flatten()
        total += F.cross_entropy(logits.flatten(0, 1), targets, reduction="sum").item()
    model.train(was_training)
    return total / (n * block) / math.log(2)


def _fit_language_model(model: nn.Module, bb: BlackBoxLinear | None, corpus: TextCorpus, s: dict[str, Any],
                        seed: int, data_seed: int, dev: torch.device, progress: bool,
                        desc: str) -> tuple[History, float]:
    block = model.block_size
    for split, ids in (("training", corpus.train), ("validation", corpus.val)):
        if len(ids) <= block + 1:
            raise ValueError(f"the {split} split of {corpus.name} has {len(ids)} characters; it needs more than "
                             f"the context length {block}: use a longer text")
    g_train = torch.Generator().manual_seed(seed)
    g_val = torch.Generator().manual_seed(data_seed + 1)
    train = lambda: corpus.batch("train", block, s["batch_size"], g_train)  # noqa: E731
    val = lambda: corpus.batch("val", block, s["batch_size"], g_val)  # noqa: E731
    first, _ = corpus.batch("train", block, s["batch_size"], torch.Generator().manual_seed(seed + 1))
    _set_gain(model, bb, first.to(dev), s["gain"])
    main, tail = _split(s["steps"], s["anneal"])
    kw = {"eval_every": math.ceil(s["steps"] / 5), "eval_batches": 4, "progress": progress, "desc": desc}
    hist = train_language_model(model, train, val, steps=main, lr=s["lr"], lr_device=s["lr_device"], **kw)
    if tail:
        hist = _merge(hist, train_language_model(model, train, val, steps=tail, lr=s["lr"] / 10,
                                                 lr_device=s["lr_device"] / 10, **kw))
    val_ids = corpus.val[: s["n_val"]] if "n_val" in s else corpus.val
    return hist, validation_bits_per_char(model, val_ids, block)


def _train_one(task: str, data: Dataset | TextCorpus, device: str, method: str, layer: str, s: dict[str, Any],
               seed: int, data_seed: int, dev: torch.device, progress: bool,
               device_options: dict[str, Any]) -> dict[str, Any]:
    t0 = time.perf_counter()
    model, bb = _hybrid_model(task, data, device, method, layer, s, seed, device_options)
    model.to(dev)
    desc = f"{task} {method}" + ("" if method == "digital" else f" {device}")
    if task == "text":
        hist, metric = _fit_language_model(model, bb, data, s, seed, data_seed, dev, progress, desc)
    else:
        hist = _fit_classifier(model, bb, data, s, seed, dev, progress, desc)
        metric = hist.final
    return {"metric": metric, "history": hist.as_dict(), "seconds": time.perf_counter() - t0, **hardware_budget(model)}


# ---------------------------------------------------------------------------------------- run
def run(task: str, device: str = "ideal", method: str = "surrogate", *, seed: int = 0, data_seed: int = 0,
        data: Dataset | TextCorpus | None = None, data_dir: str | Path | None = None, download: bool = False,
        quick: bool = False, layer: str | None = None, with_digital: bool = False, progress: bool = False,
        use_cuda: bool = True, device_options: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """Train one network and return the result dictionary (the JSON schema of this module).

    Args:
        task: ``"vision"``, ``"audio"`` or ``"text"``.
        device: a device name (:data:`hybridlab.devices.DEVICES`); unused by method ``digital``.
        method: ``"digital"`` or one of :data:`hybridlab.layer.METHODS`.
        seed: seeds the weights, the device (fabrication, parameters), the ZO directions, the
            sketches and the batch order.
        data_seed: seeds the data split and synthesis (fixed by default, so that seeds vary the
            training only and runs share one dataset).
        data: an already loaded dataset (skips loading; ``data_dir``/``download``/``quick``
            then only change the settings).
        data_dir: folder (or text file) with the real dataset.
        download: try to download the real dataset (falls back to the default with a warning).
        quick: a tiny run for tests (:data:`QUICK`).
        layer: name of the Linear that becomes the black box (default :data:`DEFAULT_BLACK_BOX`).
        with_digital: also train the digital baseline and add ``digital_<metric>``.
        progress: show tqdm progress bars (stderr).
        use_cuda: train on the GPU when one is available.
        device_options: physics options of the device (e.g. ``{"noise": 0.01, "bits": 8}``).
        overrides: settings of :data:`DEFAULTS` (``epochs``, ``lr``, ``rank``, ...) and model ``width``.
    """
    args = {"task": task, "device": device, "method": method, "seed": seed, "data_seed": data_seed,
            "data_dir": None if data_dir is None else str(data_dir), "download": download, "quick": quick,
            "layer": layer, "with_digital": with_digital, "device_options": device_options, **overrides}
    s = settings(task, device, method, quick=quick, **overrides)
    layer = layer or DEFAULT_BLACK_BOX[task]
    t0 = time.perf_counter()
    if data is None:
        data = load_data(task, data_dir=data_dir, download=download, quick=quick, data_seed=data_seed)
    data_seconds = time.perf_counter() - t0
    dev = torch.device("cuda" if use_cuda and torch.cuda.is_available() else "cpu")
    options = dict(device_options or {})
    metric = METRIC[task]

    out = _train_one(task, data, device, method, layer, s, seed, data_seed, dev, progress, options)
    result: dict[str, Any] = {"task": task, "device": device, "method": method, "layer": layer, "metric": metric,
                              metric: out["metric"]}
    if with_digital:
        base = out if method == "digital" else _train_one(task, data, device, "digital", layer, s, seed, data_seed,
                                                          dev, progress, options)
        result[f"digital_{metric}"] = base["metric"]
        result["digital_seconds"] = base["seconds"]
    summary = data.summary()
    summary.pop("input_shape", None)
    if isinstance(data, Dataset):
        summary["input_shape"] = list(data.input_shape)
    if quick and task == "text":
        summary["n_val"] = min(summary["n_val"], s["n_val"])
    result.update({
        "dataset": summary,
        "queries": out["queries"], "reconfigurations": out["reconfigurations"],
        "seconds": out["seconds"], "data_seconds": data_seconds,
        "history": out["history"],
        "settings": s, "device_options": options, "args": args,
        "seed": seed, "data_seed": data_seed,
        "torch_device": str(dev), "torch_threads": torch.get_num_threads(),
        "hybridlab_version": __version__, "torch_version": torch.__version__,
    })  # fmt: skip
    return result


# ---------------------------------------------------------------------------------------- command line
class _UsageError(Exception):
    """A bad command line (reported on one line, exit code 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(f"{message} (see: python -m {self.prog} --help)")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m hybridlab`` argument parser (subcommand ``train``)."""
    parser = _Parser(prog="hybridlab", description="Train networks that contain a physical, query-only layer.")
    parser.add_argument("--version", action="version", version=f"hybridlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("train", help="train one network and write its result as JSON",
                       description="Train one network (a digital one or a hybrid one with a black-box layer) and "
                                   "write the result as JSON. Defaults per task: hybridlab.cli.DEFAULTS.")
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
    g = p.add_argument_group("training (defaults per task and device: hybridlab.cli.DEFAULTS)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights, device, ZO directions, batches (default: 0)")
    g.add_argument("--epochs", type=int, help="training epochs (vision, audio)")
    g.add_argument("--steps", type=int, help="training steps (text)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--lr", type=float, help="learning rate of the digital parameters")
    g.add_argument("--lr-device", type=float, help="learning rate of the device parameters w")
    g.add_argument("--anneal", type=float, help="last fraction of training run at lr/10 (0 = constant lr)")
    g.add_argument("--width", type=int, help="model width = size of the square black-box layer")
    g = p.add_argument_group("black-box layer")
    g.add_argument("--layer", help="name of the Linear to replace (default: hybridlab.models.DEFAULT_BLACK_BOX)")
    g.add_argument("--rank", type=int, help="surrogate rank r")
    g.add_argument("--samples", type=int, help="zero-order samples M")
    g.add_argument("--mu", type=float, help="zero-order step mu")
    g.add_argument("--sketch", type=int, help="sketch size s of the surrogate update")
    g.add_argument("--sketch-kind", choices=("gaussian", "rademacher", "orthogonal"),
                   help="distribution of the sketch rows")
    g.add_argument("--compressed", action=argparse.BooleanOptionalAction, default=None,
                   help="compressed-batch zero-order estimate (d_out queries per sample instead of the batch)")
    g.add_argument("--rebuild-every", type=int, help="full re-read of the matrix every k steps")
    g.add_argument("--gain", type=float,
                   help="initial gain relative to the calibrated one (1: output RMS = input RMS)")
    g.add_argument("--noise", type=float, help="device read-out noise (relative)")
    g.add_argument("--bits", type=int, help="device phase quantisation bits")
    g = p.add_argument_group("output")
    g.add_argument("--with-digital", action="store_true", help="also train the digital baseline (digital_<metric>)")
    g.add_argument("--out", help="write the JSON here (default: stdout)")
    g.add_argument("--cpu", action="store_true", help="stay on the CPU even when CUDA is available")
    g.add_argument("--threads", type=int,
                   help="PyTorch CPU threads (default: PyTorch's); runs repeat exactly only with the same count")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    assignments.add_subcommands(sub)  # python -m hybridlab assignments release|grade
    return parser


#: Settings of :data:`DEFAULTS` that have a command-line option of the same name (``--batch-size``...).
TRAINING_OPTIONS = ("epochs", "steps", "batch_size", "lr", "lr_device", "anneal", "width", "rank", "samples", "mu",
                    "sketch", "sketch_kind", "compressed", "rebuild_every", "gain")


def _train_command(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads is not None:
        if args.threads < 1:
            raise _UsageError(f"--threads must be at least 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    device_options = {k: getattr(args, k) for k in ("noise", "bits") if getattr(args, k) is not None}
    return run(args.task, args.device, args.method, seed=args.seed, data_seed=args.data_seed, data_dir=args.data_dir,
               download=args.download, quick=args.quick, layer=args.layer, with_digital=args.with_digital,
               progress=not args.no_progress, use_cuda=not args.cpu, device_options=device_options,
               **{k: getattr(args, k) for k in TRAINING_OPTIONS})


def _summary_line(r: dict[str, Any]) -> str:
    m = r["metric"]
    line = f"{r['task']} {r['method']}" + ("" if r["method"] == "digital" else f" on {r['device']}")
    line += f": {m} {r[m]:.4f}"
    if f"digital_{m}" in r:
        line += f" (digital {r[f'digital_{m}']:.4f})"
    return line + f", {r['queries']} queries, {r['reconfigurations']} reconfigurations, {r['seconds']:.1f} s"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m hybridlab``; returns the exit code (0 ok, 2 bad usage or data)."""
    try:
        args = build_parser().parse_args(argv)
        if args.command == "assignments":
            return assignments.main(args)
        result = _train_command(args)
        text = json.dumps(result, indent=2)
        if args.out:
            Path(args.out).expanduser().write_text(text + "\n")
        else:
            print(text)
    except _UsageError as err:
        print(f"hybridlab: error: {err}", file=sys.stderr)
        return 2
    except (ValueError, OSError, DataUnavailable, ImportError) as err:
        message = " ".join(str(err).split())  # one line
        print(f"hybridlab: error: {message}", file=sys.stderr)
        return 2
    print(_summary_line(result), file=sys.stderr)
    return 0
