"""Grade a student's notebook against its instructor source, offline, without nbgrader.

:func:`grade` puts the instructor's test cells back (hidden tests included, matched by
``grade_id``), runs the notebook top to bottom in a fresh ``python3`` kernel with a fixed seed,
one thread and a per-cell timeout, and scores every graded cell the way nbgrader's autograder
does: an error, or anything written to standard error, costs the cell's points; a number shown as
the cell's result is partial credit; otherwise the cell earns all its points.

Nothing a student can do stops the grader: an exception, an infinite loop (the cell is
interrupted after ``timeout`` seconds), a kernel that dies or a deleted graded cell only costs
points, and the report says why. Feedback is one line per cell (the exception's type and message,
never a traceback), so the hidden tests' source is never shown.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .notebooks import (
    describe,
    find_source,
    grade_id,
    is_grade,
    load_source,
    nbgrader_meta,
    restore_locked_cells,
    sources,
)

__all__ = ["CellResult", "GradeReport", "grade", "grade_notebook", "identify", "DEFAULT_TIMEOUT", "DEFAULT_SEED"]

DEFAULT_TIMEOUT = 120.0   #: seconds per cell before it is interrupted
DEFAULT_SEED = 0          #: seed of Python's, NumPy's and PyTorch's global generators
MESSAGE_CHARS = 400       #: feedback longer than this is cut
SETUP_TIMEOUT = 120       #: seconds for the grader's own first cell (it imports PyTorch)
IOPUB_TIMEOUT = 60        #: seconds to wait for a finished cell's last outputs
_TIMEOUT = {"ename": "hybridlab-grader-timeout", "evalue": "", "traceback": []}   #: nbclient's reply on a timeout

_QUIET = logging.getLogger("hybridlab.assignments.grader")   # nbclient's own log lines (timeouts) stay out
_QUIET.addHandler(logging.NullHandler())                      # of the report and of the terminal
_QUIET.propagate = False

#: Run before the student's first cell (not shown, not graded): fixed seeds, one thread.
SETUP_CODE = """\
import random as _random
import numpy as _np
import torch as _torch
_random.seed({seed}); _np.random.seed({seed}); _torch.manual_seed({seed}); _torch.set_num_threads(1)
del _random, _np, _torch"""


@dataclass
class CellResult:
    """The score of one graded cell."""

    grade_id: str
    points: float
    max_points: float
    message: str


@dataclass
class GradeReport:
    """Points of every graded cell of one notebook, in the instructor source's order."""

    assignment: str
    cells: list[CellResult]
    notes: list[str] = field(default_factory=list)   #: what went wrong outside graded cells

    @property
    def score(self) -> float:
        return float(sum(c.points for c in self.cells))

    @property
    def max_score(self) -> float:
        return float(sum(c.max_points for c in self.cells))

    def as_dict(self) -> dict:
        """``{score, max_score, assignment, cells: [{grade_id, points, max_points, message}], notes}``."""
        return {"score": self.score, "max_score": self.max_score, "assignment": self.assignment,
                "cells": [asdict(c) for c in self.cells], "notes": list(self.notes)}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def to_text(self) -> str:
        width = max([len(c.grade_id) for c in self.cells] + [8])
        lines = [f"{self.assignment}: {self.score:g} / {self.max_score:g} points"]
        for c in self.cells:
            lines.append(f"  {c.grade_id:<{width}}  {c.points:>4g} / {c.max_points:<4g} {c.message}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ helpers
def _one_line(text: str, limit: int = MESSAGE_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _first_line(text: str) -> str:
    lines = [line for line in str(text).splitlines() if line.strip()]
    return lines[0].strip() if lines else ""


def _score_cell(cell: NotebookNode, max_points: float) -> tuple[float, str]:
    """nbgrader's rule: error or stderr -> 0, a numeric result -> partial credit, else full marks."""
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            name, value = out.get("ename", "Error"), out.get("evalue", "")
            return 0.0, _one_line(f"{name}: {value}" if value else name)
        if out.get("output_type") == "stream" and out.get("name") == "stderr":
            # only the first line: a warning's second line repeats the source line that raised it
            return 0.0, _one_line(f"wrote to standard error (counts as a failure): {_first_line(out.get('text', ''))}")
        if out.get("output_type") == "execute_result":
            text = out.get("data", {}).get("text/plain", "")
            try:
                value = float("".join(text) if isinstance(text, list) else text)
            except ValueError:
                continue
            if 0.0 <= value <= max_points:
                return value, f"partial credit {value:g} of {max_points:g}"
    return max_points, "passed"


def identify(submission: NotebookNode, path: Path | None = None, folder: str | Path | None = None) -> Path:
    """The instructor source a submission belongs to.

    By the notebook metadata ``hybridlab.assignment`` (kept by the release), else by the file name,
    else by the grade_ids the submission shares with a source. Raises ValueError if none fits.
    """
    name = submission.get("metadata", {}).get("hybridlab", {}).get("assignment")
    if name:
        return find_source(name, folder)
    if path is not None:
        try:
            return find_source(path.stem, folder)
        except ValueError:
            pass
    ids = {grade_id(c) for c in submission.get("cells", []) if isinstance(c.get("metadata"), dict)} - {None}
    best = max(sources(folder), key=lambda a: len(ids & set(a.points)), default=None)
    if best is None or not ids & set(best.points):
        raise ValueError("cannot tell which assignment this notebook is: it has no hybridlab metadata and no "
                         "graded cell of any assignment; pass the instructor source with --source")
    return best.path


# ------------------------------------------------------------------------------------------ grading
def grade(path: str | Path, *, source: str | Path | None = None, timeout: float = DEFAULT_TIMEOUT,
          seed: int = DEFAULT_SEED, folder: str | Path | None = None) -> GradeReport:
    """Grade the student notebook at ``path`` (see the module docstring).

    Args:
        path: the submitted notebook.
        source: its instructor source (default: found by :func:`identify`).
        timeout: seconds per cell before the cell is interrupted and scored 0.
        seed: seed of the global random generators, set before the first cell.
        folder: folder of the instructor sources (default: the package's).

    Raises:
        ValueError: the notebook cannot be read at all, or no instructor source fits it (nothing to
            grade against). Everything that goes wrong *inside* the notebook is part of the report.
    """
    path = Path(path)
    try:
        submission = nbformat.read(str(path), as_version=4)
    except Exception as err:  # not JSON, not a notebook: nothing to grade
        raise ValueError(f"cannot read {path} as a notebook: {_one_line(err, 200)}") from None
    source_path = Path(source) if source is not None else identify(submission, path, folder)
    return grade_notebook(submission, load_source(source_path), name=describe(source_path).name,
                          timeout=timeout, seed=seed)


def grade_notebook(submission: NotebookNode, source: NotebookNode, *, name: str = "notebook",
                   timeout: float = DEFAULT_TIMEOUT, seed: int = DEFAULT_SEED) -> GradeReport:
    """Grade an in-memory ``submission`` against the instructor ``source`` (see :func:`grade`)."""
    nb, missing = restore_locked_cells(submission, source)
    notes: list[str] = []
    outcome = _execute(nb, timeout=timeout, seed=seed, notes=notes)
    results = []
    for ref in source.cells:
        if not is_grade(ref):
            continue
        gid, max_points = grade_id(ref), float(nbgrader_meta(ref)["points"])
        if gid in missing:
            results.append(CellResult(gid, 0.0, max_points, "missing: the graded cell was deleted or its "
                                                            "metadata changed"))
            continue
        cell = next(c for c in nb.cells if grade_id(c) == gid and is_grade(c))
        status = outcome.get(id(cell))
        if status is not None:
            results.append(CellResult(gid, 0.0, max_points, status))
        else:
            points, message = _score_cell(cell, max_points)
            results.append(CellResult(gid, points, max_points, message))
    return GradeReport(name, results, notes)


def _execute(nb: NotebookNode, *, timeout: float, seed: int, notes: list[str]) -> dict[int, str]:
    """Run every code cell of ``nb`` in place (outputs filled in), in a temporary folder.

    Returns ``{id(cell): message}`` for the cells that did not run to an answer (timed out, or
    not run because the kernel died or hung); ``notes`` gets a line for each such event and for
    each error in an ungraded cell.
    """
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    unfinished: dict[int, str] = {}
    timed_out: set[int] = set()

    def on_executed(cell: NotebookNode, cell_index: int, execute_reply: dict) -> None:
        content = execute_reply.get("content", {})
        if content.get("ename") == _TIMEOUT["ename"]:   # nbclient interrupted the cell after the timeout
            timed_out.add(id(cell))
        elif content.get("status") == "error" and not any(o.get("output_type") == "error" for o in cell.outputs):
            # the kernel says the cell failed but no error output arrived: the failure still counts
            cell.outputs.append(nbformat.v4.new_output("error", ename=content.get("ename", "Error"),
                                                       evalue=content.get("evalue", ""), traceback=[]))

    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": str(int(seed))}
    for cell in nb.cells:
        if cell.get("cell_type") == "code":
            cell.outputs, cell.execution_count = [], None
    # nbclient writes each executed cell back to nb.cells[index]: the setup cell needs a real index
    setup = nbformat.v4.new_code_cell(SETUP_CODE.format(seed=int(seed)))
    nb.cells.insert(0, setup)
    code = [(i, c) for i, c in enumerate(nb.cells) if c.get("cell_type") == "code"]
    done: set[int] = set()
    cell_timeout = max(1, int(round(timeout)))
    with tempfile.TemporaryDirectory(prefix="hybridlab-grade-") as workdir:
        client = NotebookClient(
            nb, kernel_name="python3", allow_errors=True, resources={"metadata": {"path": workdir}},
            # after `timeout` s a cell is interrupted (KeyboardInterrupt) and the next one runs; the
            # setup cell (imports) gets SETUP_TIMEOUT whatever the student's timeout
            timeout=cell_timeout, interrupt_on_timeout=True, error_on_timeout=_TIMEOUT,
            timeout_func=lambda cell: max(SETUP_TIMEOUT, cell_timeout) if cell is setup else cell_timeout,
            # wait for every output of a finished cell, even on a busy machine
            iopub_timeout=IOPUB_TIMEOUT, on_cell_executed=on_executed, log=_QUIET)
        try:
            with client.setup_kernel(env=env, cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL):
                for position, (index, cell) in enumerate(code):
                    label = grade_id(cell) or f"cell {index}"
                    try:
                        client.execute_cell(cell, index)
                    except DeadKernelError:
                        unfinished[id(cell)] = "the kernel died while running this cell"
                        _skip(code[position + 1:], f"not run: the kernel died in {label}", unfinished)
                        notes.append(f"the kernel died in {label}; later cells were not run")
                        break
                    done.add(id(cell))
                    if id(cell) in timed_out:
                        unfinished[id(cell)] = f"timed out after {timeout:g} s (an endless loop?); interrupted"
                        notes.append(f"{label} timed out after {timeout:g} s and was interrupted")
                        if not _responsive(client, nb, timed_out):
                            _skip(code[position + 1:], "not run: the kernel hung after a cell timed out", unfinished)
                            notes.append("the kernel did not respond after the interrupt; later cells were not run")
                            break
        except Exception as err:  # the kernel could not start or stop: report, never crash
            left = [(i, c) for i, c in code if id(c) not in done]
            _skip(left, f"not run: {_one_line(err, 200)}", unfinished)
            notes.append(f"the notebook could not be run to the end: {_one_line(err, 200)}")
    del nb.cells[0]
    for index, cell in enumerate(nb.cells):  # errors in ungraded cells: the student's code, provided cells
        error = next((o for o in cell.get("outputs", []) if o.get("output_type") == "error"), None)
        if error is not None and not is_grade(cell) and id(cell) not in timed_out:
            label = grade_id(cell) or f"cell {index}"
            notes.append(_one_line(f"{label} raised {error.get('ename', 'an error')}: {error.get('evalue', '')}", 200))
    return unfinished


def _responsive(client, nb: NotebookNode, timed_out: set[int], wait: int = 10) -> bool:
    """Whether the kernel answers an empty cell within ``wait`` s (after an interrupted cell)."""
    probe = nbformat.v4.new_code_cell("pass")
    nb.cells.append(probe)
    saved = client.timeout_func
    try:
        client.timeout_func = lambda cell: wait
        client.execute_cell(probe, len(nb.cells) - 1)
        return id(probe) not in timed_out
    except Exception:  # a dead kernel, for one
        return False
    finally:
        client.timeout_func = saved
        nb.cells.pop()


def _skip(cells: list[tuple[int, NotebookNode]], message: str, unfinished: dict[int, str]) -> None:
    for _, cell in cells:
        unfinished.setdefault(id(cell), message)
