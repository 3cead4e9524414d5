"""Instructor sources in the nbgrader convention, and what students get from them.

An instructor source is a notebook in ``source/`` whose cells carry nbgrader metadata
(``metadata["nbgrader"]`` with ``grade``, ``grade_id``, ``locked``, ``points``, ``solution``,
``schema_version`` 3, ``task``), so that nbgrader can use it unchanged:

* a **solution** cell (``solution: true``) holds the reference answer between the lines
  ``### BEGIN SOLUTION`` and ``### END SOLUTION``; students get ``# YOUR CODE HERE`` and
  ``raise NotImplementedError()`` instead (indented like the ``BEGIN`` line). A solution cell
  without markers is replaced as a whole;
* a **test** cell (``grade: true``, ``solution: false``) is worth ``points``; its visible asserts
  give students immediate feedback, and the lines between ``### BEGIN HIDDEN TESTS`` and
  ``### END HIDDEN TESTS`` are removed from the student version and put back by the grader;
* a **read-only** cell (``locked: true``) is restored from the source when grading.

:func:`release_notebook` makes the student version exactly as ``nbgrader generate_assignment``
does in the code students see (same stubs, same line handling); :func:`restore_locked_cells` is
the grader's half: it puts the instructor's test and read-only cells back into a submission.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbformat import NotebookNode

__all__ = [
    "SOURCE_DIR",
    "CODE_STUB",
    "TEXT_STUB",
    "Assignment",
    "sources",
    "describe",
    "find_source",
    "load_source",
    "check_source",
    "release_notebook",
    "release",
    "restore_locked_cells",
    "student_markdown",
    "nbgrader_meta",
    "grade_id",
    "is_solution",
    "is_grade",
    "is_test",
    "is_locked",
    "solution_lines",
    "hidden_test_lines",
]

#: Folder of the instructor sources shipped with the package.
SOURCE_DIR = Path(__file__).with_name("source")

#: What a solution region becomes in a code cell / a markdown cell (nbgrader's defaults for Python).
CODE_STUB = "# YOUR CODE HERE\nraise NotImplementedError()"
TEXT_STUB = "YOUR ANSWER HERE"

BEGIN_SOLUTION, END_SOLUTION = "BEGIN SOLUTION", "END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"


# ------------------------------------------------------------------------------------------ cell kinds
def nbgrader_meta(cell: NotebookNode) -> dict:
    """The cell's nbgrader metadata (empty dict for an ordinary cell)."""
    return dict(cell.get("metadata", {}).get("nbgrader", {}))


def is_solution(cell: NotebookNode) -> bool:
    return bool(nbgrader_meta(cell).get("solution", False))


def is_grade(cell: NotebookNode) -> bool:
    return bool(nbgrader_meta(cell).get("grade", False))


def is_test(cell: NotebookNode) -> bool:
    """An autograded test cell: graded, not a solution (its source is the instructor's)."""
    return is_grade(cell) and not is_solution(cell)


def is_locked(cell: NotebookNode) -> bool:
    """A cell whose source the grader restores from the instructor source (nbgrader's rule)."""
    meta = nbgrader_meta(cell)
    if not meta or meta.get("solution", False):
        return False
    return bool(meta.get("grade", False) or meta.get("locked", False))


def grade_id(cell: NotebookNode) -> str | None:
    return nbgrader_meta(cell).get("grade_id")


# ------------------------------------------------------------------------------------------ regions
def _replace_regions(source: str, begin: str, end: str, stub: str | None) -> tuple[str, bool]:
    """Replace each region between lines containing ``begin`` and ``end`` (markers included).

    ``stub`` (indented like the ``begin`` line) replaces the region; ``None`` removes it. Returns
    the new source and whether a region was found. Raises ValueError for a nested or unclosed
    region. Lines are split on ``\\n`` and joined again exactly as nbgrader does.
    """
    out: list[str] = []
    inside = found = False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise ValueError(f"nested '{begin}' region")
            inside = found = True
            if stub is not None:
                indent = re.match(r"\s*", line).group(0)
                out.extend(indent + s for s in stub.split("\n"))
        elif end in line:
            if not inside:
                raise ValueError(f"'{end}' without a '{begin}' before it")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"'{begin}' region is never closed with '{end}'")
    return "\n".join(out), found


def solution_lines(source: str) -> list[str]:
    """The lines inside the solution regions of ``source`` (markers excluded)."""
    return _region_lines(source, BEGIN_SOLUTION, END_SOLUTION)


def hidden_test_lines(source: str) -> list[str]:
    """The lines inside the hidden-test regions of ``source`` (markers excluded)."""
    return _region_lines(source, BEGIN_HIDDEN, END_HIDDEN)


def _region_lines(source: str, begin: str, end: str) -> list[str]:
    lines, inside = [], False
    for line in source.split("\n"):
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside:
            lines.append(line)
    return lines


# ------------------------------------------------------------------------------------------ sources
@dataclass(frozen=True)
class Assignment:
    """One instructor source and what its metadata says about it."""

    name: str            #: file stem, e.g. ``"01_sketch_fit"``
    path: Path           #: the instructor source
    title: str           #: from the notebook metadata ``hybridlab.title``
    minutes: int         #: time estimate for a student, from ``hybridlab.minutes``
    goals: tuple[str, ...]  #: learning goals, from ``hybridlab.goals``
    points: dict[str, float]  #: grade_id -> points of every graded cell, in notebook order
    hidden: tuple[str, ...]   #: grade_ids of the graded cells that contain hidden tests

    @property
    def max_score(self) -> float:
        return float(sum(self.points.values()))

    @property
    def hidden_points(self) -> float:
        return float(sum(self.points[g] for g in self.hidden))


def sources(folder: str | Path | None = None) -> list[Assignment]:
    """Every instructor source (``NN_name.ipynb``) in ``folder`` (default: :data:`SOURCE_DIR`), sorted."""
    folder = Path(folder) if folder is not None else SOURCE_DIR
    return [describe(path) for path in sorted(folder.glob("[0-9][0-9]_*.ipynb"))]


def describe(path: str | Path) -> Assignment:
    """Read one instructor source and summarise it (see :class:`Assignment`)."""
    path = Path(path)
    nb = load_source(path)
    meta = nb.metadata.get("hybridlab", {})
    points: dict[str, float] = {}
    hidden = []
    for cell in nb.cells:
        if is_grade(cell):
            points[grade_id(cell)] = float(nbgrader_meta(cell)["points"])
            if hidden_test_lines(cell.source):
                hidden.append(grade_id(cell))
    return Assignment(name=path.stem, path=path, title=meta.get("title", path.stem),
                      minutes=int(meta.get("minutes", 0)), goals=tuple(meta.get("goals", ())),
                      points=points, hidden=tuple(hidden))


def find_source(name: str, folder: str | Path | None = None) -> Path:
    """The instructor source called ``name`` (``"01_sketch_fit"`` or ``"01"``), else ValueError."""
    found = [a.path for a in sources(folder) if name in (a.name, a.name.split("_", 1)[0], a.path.name)]
    if len(found) != 1:
        names = ", ".join(a.name for a in sources(folder)) or "none"
        raise ValueError(f"no single assignment called {name!r}; the assignments are: {names}")
    return found[0]


def load_source(path: str | Path) -> NotebookNode:
    """Read an instructor source and check it (:func:`check_source`)."""
    nb = nbformat.read(str(path), as_version=4)
    check_source(nb, Path(path).name)
    return nb


def check_source(nb: NotebookNode, name: str = "notebook") -> None:
    """Raise ValueError if ``nb`` breaks the nbgrader conventions this module relies on.

    Checks: every nbgrader cell has ``schema_version`` 3 and a unique, non-empty ``grade_id``;
    graded cells have ``points > 0``; solution regions only in solution cells, hidden-test regions
    only in test cells, both balanced and not nested.
    """
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index}"
        meta = nbgrader_meta(cell)
        try:
            has_solution = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, "")[1]
            has_hidden = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, None)[1]
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        if not meta:
            if has_solution or has_hidden:
                raise ValueError(f"{where}: solution or hidden-test region in a cell without nbgrader metadata")
            continue
        if meta.get("schema_version") != 3:
            raise ValueError(f"{where}: nbgrader schema_version must be 3, got {meta.get('schema_version')!r}")
        gid = meta.get("grade_id")
        if not gid or not isinstance(gid, str):
            raise ValueError(f"{where}: an nbgrader cell needs a non-empty grade_id")
        if gid in seen:
            raise ValueError(f"{where}: grade_id {gid!r} is used twice")
        seen.add(gid)
        if meta.get("grade") and not (isinstance(meta.get("points"), (int, float)) and meta["points"] > 0):
            raise ValueError(f"{where} ({gid}): a graded cell needs points > 0, got {meta.get('points')!r}")
        if has_solution and not meta.get("solution"):
            raise ValueError(f"{where} ({gid}): solution region in a cell not marked solution")
        if has_hidden and not is_test(cell):
            raise ValueError(f"{where} ({gid}): hidden tests in a cell that is not an autograded test cell")


# ------------------------------------------------------------------------------------------ release
def release_notebook(source: NotebookNode) -> NotebookNode:
    """The student version of an instructor source (a new notebook; ``source`` is unchanged).

    Solution regions become :data:`CODE_STUB` (:data:`TEXT_STUB` in markdown), solution cells
    without markers are replaced as a whole, hidden-test regions are removed, outputs and
    execution counts are cleared. Metadata is kept; like nbgrader, graded, solution and
    read-only cells are made non-deletable, and graded and read-only cells non-editable.
    """
    check_source(source)
    nb = copy.deepcopy(source)
    for cell in nb.cells:
        stub = CODE_STUB if cell.cell_type == "code" else TEXT_STUB
        cell.source, replaced = _replace_regions(cell.source, BEGIN_SOLUTION, END_SOLUTION, stub)
        if is_solution(cell) and not replaced:
            cell.source = stub
        cell.source = _replace_regions(cell.source, BEGIN_HIDDEN, END_HIDDEN, None)[0]
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
        if is_solution(cell) or is_grade(cell) or is_locked(cell):
            cell.metadata["deletable"] = False
            if is_locked(cell):
                cell.metadata["editable"] = False
    nb.metadata.pop("celltoolbar", None)
    return nb


def release(out_dir: str | Path, names: list[str] | None = None, folder: str | Path | None = None) -> list[Path]:
    """Write the student version of each assignment (default: all) into ``out_dir``; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [find_source(n, folder) for n in names] if names else [a.path for a in sources(folder)]
    written = []
    for path in paths:
        target = out_dir / path.name
        nbformat.write(release_notebook(load_source(path)), str(target))
        written.append(target)
    return written


# ------------------------------------------------------------------------------------------ grading side
def restore_locked_cells(submission: NotebookNode, source: NotebookNode) -> tuple[NotebookNode, list[str]]:
    """Put the instructor's test and read-only cells back into a student's notebook.

    Every cell of ``submission`` whose grade_id is a test or read-only cell of ``source`` gets the
    source's text (hidden tests included) and nbgrader metadata; solution cells and cells the
    student added are kept as they are; a second cell with the same grade_id loses its nbgrader
    metadata (it runs, but is not graded). Nothing is re-inserted: a graded cell the student
    deleted is simply missing.

    Returns:
        ``(notebook to run, grade_ids of the source's graded cells missing from the submission)``.
    """
    reference = {grade_id(c): c for c in source.cells if nbgrader_meta(c)}
    nb = copy.deepcopy(submission)
    seen: set[str] = set()
    for cell in nb.cells:
        gid = grade_id(cell) if isinstance(cell.get("metadata"), dict) else None
        if gid is None:
            continue
        if gid in seen:
            cell.metadata.pop("nbgrader", None)
            continue
        seen.add(gid)
        ref = reference.get(gid)
        if ref is not None and is_locked(ref):
            cell.cell_type = ref.cell_type
            cell.source = ref.source
            cell.metadata["nbgrader"] = copy.deepcopy(ref.metadata["nbgrader"])
            if cell.cell_type == "code":
                cell.setdefault("outputs", [])
                cell.setdefault("execution_count", None)
    missing = [grade_id(c) for c in source.cells if is_grade(c) and grade_id(c) not in seen]
    return nb, missing


# ------------------------------------------------------------------------------------------ display
def student_markdown(nb: NotebookNode) -> str:
    """A student notebook as one Markdown text, for showing it on a page.

    Markdown cells are kept, except that their headings become bold lines (so that the page's own
    table of contents is not flooded); code cells become fenced ``python`` blocks, each graded cell
    labelled with its points and each solution cell marked as the student's. Use it on released
    notebooks (:func:`release_notebook`): it shows whatever it is given.
    """
    parts = []
    for cell in nb.cells:
        text = cell.source.rstrip()
        if cell.cell_type == "markdown":
            parts.append(re.sub(r"^#{1,6} +(.+?)\s*#*\s*$", r"**\1**\n", text, flags=re.M))
            continue
        if cell.cell_type != "code":
            continue
        label = ""
        if is_grade(cell):
            points = nbgrader_meta(cell)["points"]
            label = f"*Graded cell `{grade_id(cell)}`, {points:g} point{'s' if points != 1 else ''}.*\n\n"
        elif is_solution(cell):
            label = f"*Your code (`{grade_id(cell)}`).*\n\n"
        parts.append(f"{label}```python\n{text}\n```" if text else label.rstrip())
    return "\n\n".join(p for p in parts if p)
