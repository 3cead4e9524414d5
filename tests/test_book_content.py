"""What the chapters teach, checked on the notebooks themselves.

* **scratch, then package**: chapters 3, 4 and 5 each write a piece of the method from scratch in a
  code cell tagged ``from-scratch`` (without calling the package's implementation of it), and the
  next code cell, tagged ``scratch-check``, asserts that it gives the numbers of ``hybridlab``; in
  QUICK mode those check cells run without error (the notebooks are executed once per test
  session, by the ``quick_chapters`` fixture of ``conftest.py``);
* **no copied pages**: no two chapters share more than :data:`MAX_SHARED` identical code cells
  (whitespace normalised); what several chapters need belongs in a helper of the package.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from pathlib import Path

import pytest
from test_chapters import CHAPTERS, _read

ROOT = Path(__file__).resolve().parents[1]
SCRATCH_CHAPTERS = ("03_zero_order.ipynb", "04_dlra.ipynb", "05_training.ipynb")
SCRATCH_TAG, CHECK_TAG = "from-scratch", "scratch-check"
#: names of the package's implementation that a from-scratch cell must not call
PACKAGE_NAMES = ("hybridlab", "zo_gradient", "ksl_step", "projector_splitting_step", "sketched_transpose",
                 "forward_upkeep", "BlackBoxLinear", "_BlackBoxFunction", "ex.")
MAX_SHARED = 3


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def _pairs(nb) -> list[tuple]:
    """(scratch cell, the code cell after it) for every cell tagged ``from-scratch``."""
    code = _code(nb)
    return [(cell, code[i + 1] if i + 1 < len(code) else None)
            for i, cell in enumerate(code) if SCRATCH_TAG in cell.metadata.get("tags", [])]


@pytest.mark.parametrize("name", SCRATCH_CHAPTERS)
def test_chapter_has_scratch_cells_each_followed_by_a_check_against_the_package(name: str):
    nb = _read(ROOT / "chapters" / name)
    pairs = _pairs(nb)
    assert pairs, f"{name}: no code cell tagged {SCRATCH_TAG!r} (the method written out from scratch)"
    for scratch, check in pairs:
        head = scratch.source.splitlines()[0]
        used = [n for n in PACKAGE_NAMES if n in scratch.source]
        assert not used, f"{name}: the from-scratch cell {head!r} uses the package ({used})"
        assert re.search(r"^\s*(def|class) ", scratch.source, re.M), f"{name}: {head!r} defines nothing"
        assert check is not None and CHECK_TAG in check.metadata.get("tags", []), \
            f"{name}: the cell after the from-scratch cell {head!r} must be tagged {CHECK_TAG!r}"
        assert re.search(r"\bassert\b|assert_close", check.source), f"{name}: the check after {head!r} asserts nothing"
        assert any(n in check.source for n in PACKAGE_NAMES), \
            f"{name}: the check after {head!r} does not compare with hybridlab"
        defined = re.findall(r"^(?:def|class) (\w+)", scratch.source, re.M)
        assert any(re.search(rf"\b{d}\b", check.source) for d in defined), \
            f"{name}: the check after {head!r} does not call what the scratch cell defines ({defined})"


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRATCH_CHAPTERS)
def test_scratch_checks_pass_in_quick_mode(name: str, quick_chapters):
    nb = quick_chapters.run(ROOT / "chapters" / name).notebook
    checks = [c for c in _code(nb) if CHECK_TAG in c.metadata.get("tags", [])]
    assert checks
    for cell in checks:
        assert cell.get("execution_count"), f"{name}: a {CHECK_TAG!r} cell did not run"
        outputs = cell.get("outputs", [])
        assert not [o for o in outputs if o.get("output_type") == "error"], f"{name}: a {CHECK_TAG!r} cell failed"
        printed = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
        assert printed.strip(), f"{name}: a {CHECK_TAG!r} cell prints nothing (it should say what it compared)"


# ------------------------------------------------------------------------ no copied pages
def _normalised_code(path: Path) -> Counter:
    return Counter(re.sub(r"\s+", " ", c.source).strip() for c in _code(_read(path)) if c.source.strip())


def _chapter_pairs() -> list:
    return [pytest.param(a, b, id=f"{a.stem}-{b.stem}") for a, b in itertools.combinations(CHAPTERS, 2)]


@pytest.mark.parametrize("a, b", _chapter_pairs())
def test_no_two_chapters_share_more_than_three_code_cells(a: Path, b: Path):
    shared = _normalised_code(a) & _normalised_code(b)
    n = sum(shared.values())
    assert n <= MAX_SHARED, (f"{a.name} and {b.name} share {n} identical code cells (at most {MAX_SHARED}): "
                             + "; ".join(s[:60] for s in shared))


def test_the_duplicate_count_sees_identical_cells(tmp_path: Path):
    """The comparison ignores whitespace but nothing else."""
    nbformat = pytest.importorskip("nbformat")
    from nbformat.v4 import new_code_cell, new_notebook

    paths = []
    for k, sources in enumerate((["x = 1\ny = 2", "print(x)", "z = 3"], ["x  =  1\n\ny = 2 ", "print( x )", "z = 3"])):
        path = tmp_path / f"{k}.ipynb"
        nbformat.write(new_notebook(cells=[new_code_cell(s) for s in sources]), str(path))
        paths.append(path)
    assert sum((_normalised_code(paths[0]) & _normalised_code(paths[1])).values()) == 2


# ------------------------------------------------------------------------ the chapters in JupyterLab
def test_make_lab_opens_the_chapters_with_the_pinned_myst_extension():
    """``make lab`` opens chapters/ in JupyterLab; jupyterlab-myst (which renders the MyST markup) is
    pinned, and the installed version is the pinned one."""
    import importlib.metadata

    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s#]+)", (ROOT / "requirements.txt").read_text(), re.M))
    assert "jupyterlab-myst" in pins, "requirements.txt must pin jupyterlab-myst"
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^lab:.*\n((?:\t.*\n)+)", makefile, re.M)
    assert target and "jupyter lab chapters/" in target.group(1), "the Makefile needs a `lab` target opening chapters/"
    assert "make lab" in (ROOT / "README.md").read_text()
    try:
        installed = importlib.metadata.version("jupyterlab-myst")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("jupyterlab-myst is not installed in this environment")
    assert installed == pins["jupyterlab-myst"]


# ------------------------------------------------------------------------ a self-contained text
def test_nothing_cites_a_notes_file_outside_the_repository():
    """The book, the package, the tests and the benchmarks stand alone: no reference to the background
    notes the project started from (the method page of the book holds what they held)."""
    name = "algorithms" + ".md"  # spelled in two parts, so that this file does not match itself
    skip_dirs = {".git", "_build", ".venv", "mutants", "node_modules", "__pycache__", ".ipynb_checkpoints"}
    hits = []
    for path in ROOT.rglob("*"):
        if not path.is_file() or skip_dirs & set(path.relative_to(ROOT).parts):
            continue
        if path.suffix not in (".py", ".md", ".ipynb", ".txt", ".toml", ".yml", ".yaml", ".cfg", ".bib", ""):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if name in text.lower():
            hits.append(path.relative_to(ROOT))
    assert not hits, f"files that cite {name}, a file outside the repository: {hits}"
