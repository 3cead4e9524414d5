"""Nothing a run produced is lost: output paths checked before training, files written whole, checkpoints.

* :func:`check_output_path` -- before any training: the folder of an output path exists and takes
  new files, and the path is not a folder itself (else a ``ValueError`` naming the option and what
  to do), so that a run never trains for an hour and then fails to write its result;
* :func:`atomic_write` -- a file is written whole or not at all: the bytes go to a temporary file in
  the same folder, are flushed to the disk, and the temporary file is renamed over the target
  (:func:`os.replace`, atomic on POSIX and Windows). A crash, a kill or a full disk leaves the old
  file or the new one, never half of one;
* :class:`Checkpoint` -- where and how often a training loop of :mod:`hybridlab.train` saves its
  whole state, and whether it continues from it (``python -m hybridlab train ... --checkpoint FILE
  [--resume]``).

What a checkpoint holds: the model's ``state_dict`` (with every black box's device counters,
device generator, ZO and sketch generator, surrogate factors and caches), the optimizer's state
(moments, step counts and the learning rates, so the annealing phase too), the random generators
the batches are drawn from, the loop's position, its history, the kept best state with its step,
and the identity of the run (its arguments and resolved settings). A resumed run draws the same
batches, directions, sketches and read-out noise as an uninterrupted one, so it ends with the same
metric and the same device counters. (The models draw nothing from torch's global generator.)
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import checks

__all__ = ["FORMAT", "Checkpoint", "atomic_write", "check_output_path"]

#: The ``format`` entry of every checkpoint file (and its version, below).
FORMAT = "hybridlab-checkpoint"
_VERSION = 1


def check_output_path(path: str | os.PathLike, option: str = "output") -> Path:
    """The path (``~`` expanded) after checking that a file can be written there; call it before training.

    Checks that the path is not a folder, that its folder exists and is a folder, and that a new
    file can be created in it (by creating and removing a temporary one: permission bits do not
    tell the whole story, for example on a read-only file system).

    Raises:
        ValueError: naming ``option``, the path and what to do.
    """
    path = Path(path).expanduser()
    folder = path.parent
    if path.is_dir():
        raise ValueError(f"{option} {path} is a folder: give a file name, e.g. {path / 'result.json'}")
    if not folder.exists():
        raise ValueError(f"{option} {path}: the folder {folder} does not exist; create it first "
                         f"(mkdir -p {folder}) or choose another path")
    if not folder.is_dir():
        raise ValueError(f"{option} {path}: {folder} is not a folder; choose another path")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{path.name}.", suffix=".check"):
            pass
    except OSError as err:
        raise ValueError(f"{option} {path}: cannot create files in {folder} ({err.strerror or err}); "
                         "choose a writable folder") from err
    return path


def atomic_write(path: str | os.PathLike, data: bytes | str) -> None:
    """Write ``data`` to ``path`` whole or not at all (a temporary file renamed over it).

    Text is written as UTF-8. On any error the temporary file is removed and the old ``path``,
    if any, is left as it was.
    """
    path = Path(path).expanduser()
    payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass
class Checkpoint:
    """Where and how often a training loop saves its whole state, and whether it continues from it.

    Pass one to :func:`hybridlab.train.train_classifier` or
    :func:`hybridlab.train.train_language_model` (``checkpoint=``); :func:`hybridlab.recipes.run`
    builds it from ``checkpoint=FILE``, ``resume`` and ``checkpoint_every``.

    Attributes:
        path: the checkpoint file (written with :func:`atomic_write`, so it is always whole).
        every: save after every ``every`` epochs (classifiers) or steps (language models); the end
            of training is always saved, so resuming a finished run only restores its result.
        resume: continue from ``path`` when it exists (when it does not, start at the beginning:
            the same command can be repeated after an interruption). Without ``resume`` an existing
            ``path`` is refused, so that a finished or interrupted run is never overwritten by accident.
        run: what identifies the run (arguments, resolved settings): a checkpoint written by a
            run that differs in any entry is refused, with the differences named.
        generators: random generators owned by the caller that the training batches depend on
            (the text recipe's batch samplers), saved and restored together with the loop's own.

    Raises:
        ValueError: ``path`` cannot be written (:func:`check_output_path`), or it exists and
            ``resume`` is false.
    """

    path: str | os.PathLike
    every: int = 1
    resume: bool = False
    run: dict[str, Any] = field(default_factory=dict)
    generators: dict[str, torch.Generator] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = check_output_path(self.path, "checkpoint")
        checks.count(self.every, "every", what="epochs or steps between checkpoints")
        if not self.resume and self.path.exists():
            raise ValueError(f"the checkpoint {self.path} exists: continue it with resume=True (--resume), "
                             "or delete it to start the run again")

    @property
    def resuming(self) -> bool:
        """Whether :meth:`load` will continue a saved run (``resume`` and the file exists)."""
        return bool(self.resume) and Path(self.path).exists()

    def due(self, position: int, last: int) -> bool:
        """Whether to save after epoch or step ``position`` (counted from 1) of ``last``."""
        return position % self.every == 0 or position == last

    def save(self, model: nn.Module, optimizer: torch.optim.Optimizer, generators: Mapping[str, torch.Generator],
             loop: dict[str, Any]) -> None:
        """Write the whole training state (atomically): model, optimizer, generators, the loop's ``loop`` dict."""
        state = {"format": FORMAT, "version": _VERSION, "run": self.run, "model": model.state_dict(),
                 "optimizer": optimizer.state_dict(),
                 "generators": {k: g.get_state() for k, g in self._generators(generators).items()}, "loop": loop}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.path, buffer.getvalue())

    def load(self, model: nn.Module, optimizer: torch.optim.Optimizer,
             generators: Mapping[str, torch.Generator]) -> dict[str, Any] | None:
        """Restore a saved state into ``model``, ``optimizer`` and the generators; return the loop's dict.

        Returns ``None`` (and changes nothing) when there is nothing to resume (:attr:`resuming`).

        Raises:
            ValueError: the file is damaged or not a checkpoint, or it belongs to another run
                (the differences are named), or its model or optimizer do not fit these.
        """
        if not self.resuming:
            return None
        state = self._read()
        differences = _differences(state["run"], self.run)
        if differences:
            raise ValueError(f"the checkpoint {self.path} was written by another run ({'; '.join(differences)}): "
                             "resume with the same options, or give another checkpoint file")
        mine = self._generators(generators)
        if set(mine) != set(state["generators"]):
            raise ValueError(f"the checkpoint {self.path} holds the generators {sorted(state['generators'])}, this "
                             f"loop has {sorted(mine)}: it was written by another kind of training loop")
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            message = " ".join(str(err).split())
            raise ValueError(f"the checkpoint {self.path} does not fit this model or optimizer ({message[:400]}): "
                             "it was written by another run") from err
        for name, g in mine.items():
            g.set_state(state["generators"][name])
        return state["loop"]

    def _generators(self, generators: Mapping[str, torch.Generator]) -> dict[str, torch.Generator]:
        both = {**self.generators, **generators}
        if len(both) != len(self.generators) + len(generators):
            raise ValueError(f"generator names repeat: {sorted(self.generators)} and {sorted(generators)}")
        return both

    def _read(self) -> dict[str, Any]:
        damaged = ("delete it to start the run again (a checkpoint written by hybridlab is never half-written: "
                   "this file was changed or truncated by something else)")
        try:
            state = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any failure to unpickle means the same thing here
            raise ValueError(f"cannot read the checkpoint {self.path} ({type(err).__name__}: "
                             f"{' '.join(str(err).split())[:200]}): it is damaged or not a hybridlab checkpoint; "
                             f"{damaged}") from err
        if not isinstance(state, dict) or state.get("format") != FORMAT:
            raise ValueError(f"{self.path} is not a hybridlab checkpoint (no format {FORMAT!r}); {damaged}")
        if state.get("version") != _VERSION:
            raise ValueError(f"the checkpoint {self.path} has version {state.get('version')}, this hybridlab writes "
                             f"version {_VERSION}: train again without --resume")
        missing = {"run", "model", "optimizer", "generators", "loop"} - set(state)
        if missing:
            raise ValueError(f"the checkpoint {self.path} lacks {sorted(missing)}; {damaged}")
        return state


def _differences(saved: Any, current: Any, prefix: str = "") -> list[str]:
    """What differs between two nested dictionaries, as ``"key: saved in the checkpoint, current now"``."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        out = []
        for key in sorted(set(saved) | set(current), key=str):
            name = f"{prefix}{key}"
            if key not in saved:
                out.append(f"{name}: absent in the checkpoint, {current[key]!r} now")
            elif key not in current:
                out.append(f"{name}: {saved[key]!r} in the checkpoint, absent now")
            else:
                out.extend(_differences(saved[key], current[key], f"{name}."))
        return out
    if _same(saved, current):
        return []
    return [f"{prefix.rstrip('.')}: {saved!r} in the checkpoint, {current!r} now"]


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b
