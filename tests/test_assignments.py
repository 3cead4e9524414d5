"""Classroom assignments: the instructor sources, the student release and the grader.

* static (fast): every source follows the nbgrader conventions, declares its points and time,
  and releases to a notebook with no solution line, no hidden-test line and no output; filling
  the release with the solutions and restoring the hidden tests gives the source back;
* graded in a real kernel (``slow``): every source scores full marks, every release scores 0,
  and every wrong implementation in :data:`WRONG` (plausible student mistakes, written as edits
  of the reference solution) loses points on the graded cell named with it -- at least three per
  assignment on a cell of hidden tests;
* robustness (``slow``): a submission that raises, loops forever, kills its kernel or deletes a
  graded cell gets a report, never a crash, and the report never shows hidden-test source;
* the real ``nbgrader generate_assignment`` makes the same student notebooks as the release.
"""

from __future__ import annotations

import copy
import json
import os
import re
import runpy
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

from hybridlab import assignments
from hybridlab.assignments import notebooks as nbs

ROOT = Path(__file__).resolve().parents[1]
SOURCES = assignments.sources()
BY_NAME = {a.name: a for a in SOURCES}
TIMEOUT = 120  # per cell, for gradings that should finish


# ------------------------------------------------------------------------------------------ fixtures
@dataclass(frozen=True)
class Wrong:
    """A plausible wrong implementation: the reference solution of one cell, edited.

    ``old`` -> ``new`` replaces text that occurs exactly once in the solution cell ``cell``; with
    ``old`` empty, ``new`` replaces the whole solution region. ``caught_by`` is the graded cell
    that must lose points.
    """

    assignment: str
    mistake: str
    cell: str
    caught_by: str
    old: str
    new: str


WRONG = [
    # 1 -- sketch fit
    Wrong("01_sketch_fit", "the sketch forgets the 1/s", "fit_from_queries", "fit_hidden",
          "@ Z / s", "@ Z"),
    Wrong("01_sketch_fit", "row space from the range-finder queries instead of a sketch", "fit_from_queries",
          "fit_hidden", "B = (Q.T @ F_Z.T) @ Z / s", "B = (Q.T @ F.T) @ Omega / k"),
    Wrong("01_sketch_fit", "basis cut to r columns before the SVD (oversampling wasted)", "fit_from_queries",
          "fit_hidden", "Q, _ = torch.linalg.qr(F.T)", "Q = torch.linalg.qr(F.T)[0][:, :r]"),
    Wrong("01_sketch_fit", "query count forgets that k is capped at d_in", "fit_query_count", "count_hidden",
          "min(r + oversample, d_in) + s", "r + oversample + s"),
    # 2 -- zero-order estimate
    Wrong("02_zo_gradient", "ZO estimate without the 1/mu", "zo_estimate", "zo_hidden",
          "/ (M * mu)", "/ M"),
    Wrong("02_zo_gradient", "sign of the upstream error flipped", "zo_estimate", "zo_hidden",
          "phi[1:] - phi[0]", "phi[0] - phi[1:]"),
    Wrong("02_zo_gradient", "divides by p instead of M", "zo_estimate", "zo_hidden",
          "/ (M * mu)", "/ (U.shape[1] * mu)"),
    Wrong("02_zo_gradient", "re-reads f(X; w) for every direction (2M reconfigurations)", "zo_estimate",
          "zo_hidden", "", """\
M = U.shape[0]
g = torch.zeros_like(w)
for u in U:
    f0 = query_at(w[None], X)[0]
    f1 = query_at((w + mu * u)[None], X)[0]
    g = g + ((f1 - f0) * V).sum() / mu * u
return g / M"""),
    # 3 -- KSL step
    Wrong("03_ksl_step", "KSL step that skips the S-step", "ksl_step_explicit", "ksl_hidden",
          "S_hat - U1.T @ dA_V0", "S_hat"),
    Wrong("03_ksl_step", "L-step with the old basis U0", "ksl_step_explicit", "ksl_hidden",
          "dA.T @ U1", "dA.T @ U0"),
    Wrong("03_ksl_step", "implicit step: the sketch forgets the 1/s", "ksl_step_from_queries", "implicit_hidden",
          "Z.T @ (Y @ U1) / s", "Z.T @ (Y @ U1)"),
    Wrong("03_ksl_step", "implicit step forgets the old-parameter half (dA V0 = f(V0; w_new))",
          "ksl_step_from_queries", "implicit_hidden", "dF = F_new - F_old", "dF = F_new"),
    Wrong("03_ksl_step", "query count forgets the old-parameter half", "implicit_step_cost", "cost_hidden",
          "return 2 * (r + s), 2", "return r + s, 1"),
    # 4 -- the layer's backward pass
    Wrong("04_blackbox_backward", "dL/dx through A^T instead of A", "blackbox_function", "backward_hidden",
          "grad_x = v @ layer.U @ layer.S @ layer.V.T", "grad_x = v @ layer.V @ layer.S.T @ layer.U.T"),
    Wrong("04_blackbox_backward", "sign of the upstream error flipped in dL/dw", "blackbox_function",
          "backward_hidden", "(phi - phi0)", "(phi0 - phi)"),
    Wrong("04_blackbox_backward", "queries f(X; w) again instead of reusing the forward output",
          "blackbox_function", "backward_hidden",
          "phi0 = (y * v).sum()", "phi0 = (layer.device.query_batch(w.detach()[None], x)[0] * v).sum()"),
    Wrong("04_blackbox_backward", "dL/dw by autograd through the simulator (the oracle)", "blackbox_function",
          "backward_hidden", "", """\
grad_x = v @ layer.U @ layer.S @ layer.V.T
with torch.enable_grad():
    w_ = w.detach().requires_grad_()
    grad_w, = torch.autograd.grad(((x @ layer.device.transfer_matrix(w_).T) * v).sum(), w_)"""),
    # 5 -- budget challenge
    Wrong("05_budget_challenge", "trains on a private, noiseless copy of the device", "challenge_run",
          "challenge_genuine", "torch.manual_seed(0)\n",
          'device = make_device("mrr", d_in=32, d_out=32, seed=7)   # no spread, no crosstalk, no noise\n'
          "torch.manual_seed(0)\n"),
    Wrong("05_budget_challenge", "a digital network: the device is left out", "challenge_run", "challenge_genuine",
          'replace_linear(model, "2", device, method="surrogate", rank=8, samples=2, sketch=16, mu=1e-2,\n'
          "               compressed=True, upkeep=\"cached\", seed=0)\n", ""),
    Wrong("05_budget_challenge", "resets the device's counters after training", "challenge_run",
          "challenge_genuine", 'print(f"validation accuracy',
          'device.queries = device.reconfigurations = 0\nprint(f"validation accuracy'),
]


def _strip_markers(source: str) -> str:
    """A solution cell as a student who wrote the reference answer hands it in."""
    return "\n".join(line for line in source.split("\n")
                     if nbs.BEGIN_SOLUTION not in line and nbs.END_SOLUTION not in line)


def _apply(source: str, wrong: Wrong) -> str:
    if wrong.old:
        assert source.count(wrong.old) == 1, f"{wrong.mistake}: {wrong.old!r} must occur once in {wrong.cell}"
        return source.replace(wrong.old, wrong.new)
    return nbs._replace_regions(source, nbs.BEGIN_SOLUTION, nbs.END_SOLUTION, wrong.new)[0]


def submission(name: str, wrong: Wrong | None = None, edit=None) -> nbformat.NotebookNode:
    """The released notebook, filled in with the reference solutions (one of them made wrong)."""
    source = nbs.load_source(BY_NAME[name].path)
    answers = {nbs.grade_id(c): c.source for c in source.cells if nbs.is_solution(c)}
    if wrong is not None:
        answers[wrong.cell] = _apply(answers[wrong.cell], wrong)
    nb = assignments.release_notebook(source)
    for cell in nb.cells:
        if nbs.is_solution(cell):
            cell.source = _strip_markers(answers[nbs.grade_id(cell)])
    if edit is not None:
        edit(nb)
    return nb


def grade(nb, name: str, timeout: float = TIMEOUT) -> assignments.GradeReport:
    source = nbs.load_source(BY_NAME[name].path)
    return assignments.grade_notebook(nb, source, name=name, timeout=timeout)


def points(report) -> dict[str, float]:
    return {c.grade_id: c.points for c in report.cells}


def hidden_lines(source) -> set[str]:
    """Lines that only the hidden tests contain (long enough to be telling)."""
    outside = {line.strip() for c in source.cells for line in nbs._replace_regions(
        c.source, nbs.BEGIN_HIDDEN, nbs.END_HIDDEN, None)[0].split("\n")}
    return {line.strip() for c in source.cells for line in nbs.hidden_test_lines(c.source)
            if len(line.strip()) > 12 and line.strip() not in outside}


def solution_text(source) -> set[str]:
    """Lines that only the solutions contain (long enough to be telling)."""
    outside = {line.strip() for c in source.cells for line in nbs._replace_regions(
        c.source, nbs.BEGIN_SOLUTION, nbs.END_SOLUTION, "")[0].split("\n")}
    return {line.strip() for c in source.cells for line in nbs.solution_lines(c.source)
            if len(line.strip()) > 12 and line.strip() not in outside}


# ------------------------------------------------------------------------------------------ static checks
def test_five_assignments_ship_with_the_package():
    assert [a.name for a in SOURCES] == ["01_sketch_fit", "02_zo_gradient", "03_ksl_step", "04_blackbox_backward",
                                        "05_budget_challenge"]
    for a in SOURCES:
        assert a.path.parent == assignments.SOURCE_DIR


@pytest.mark.parametrize("a", SOURCES, ids=lambda a: a.name)
def test_source_follows_the_nbgrader_convention(a):
    nb = nbs.load_source(a.path)   # runs check_source
    assert nb.metadata["hybridlab"]["assignment"] == a.name
    assert a.minutes > 0 and len(a.goals) >= 2 and a.title
    assert len(a.hidden) >= 1 and a.hidden_points > 0
    for cell in nb.cells:
        meta = nbs.nbgrader_meta(cell)
        if meta:
            assert set(meta) >= {"grade", "grade_id", "locked", "schema_version", "solution", "task"}
            if meta["grade"]:
                assert meta["locked"] and not meta["solution"]
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, f"{a.name}: committed outputs"
    # the header states the points that the metadata gives
    header = nb.cells[0].source
    visible = a.max_score - a.hidden_points
    assert (f"**Points:** {a.max_score:g} ({visible:g} in visible tests, {a.hidden_points:g} in hidden tests)"
            in " ".join(header.split())), f"{a.name}: the header's points disagree with the metadata"
    every_solution_is_used = [nbs.grade_id(c) for c in nb.cells if nbs.is_solution(c)]
    assert every_solution_is_used, f"{a.name} has nothing for the student to write"


@pytest.mark.parametrize("a", SOURCES, ids=lambda a: a.name)
def test_release_hides_solutions_and_hidden_tests(a):
    source = nbs.load_source(a.path)
    released = assignments.release_notebook(source)
    text = "\n".join(c.source for c in released.cells)
    for marker in (nbs.BEGIN_SOLUTION, nbs.END_SOLUTION, nbs.BEGIN_HIDDEN, nbs.END_HIDDEN):
        assert marker not in text
    lines = {line.strip() for line in text.split("\n")}
    leaked = [line for line in solution_text(source) | hidden_lines(source) if line in lines]
    assert not leaked, f"{a.name}: the release shows {leaked[:3]}"
    assert hidden_lines(source), "the source has no hidden test lines to check"
    stubs = [c for c in released.cells if nbs.is_solution(c)]
    assert stubs and all("# YOUR CODE HERE" in c.source and "raise NotImplementedError()" in c.source for c in stubs)
    assert all(not c.outputs and c.execution_count is None for c in released.cells if c.cell_type == "code")
    assert [nbs.nbgrader_meta(c) for c in released.cells] == [nbs.nbgrader_meta(c) for c in source.cells]
    assert released.metadata["hybridlab"] == source.metadata["hybridlab"]
    shown = {line.strip() for line in nbs.student_markdown(released).split("\n")}
    assert not [line for line in solution_text(source) | hidden_lines(source) if line in shown]
    assert a.name == released.metadata["hybridlab"]["assignment"]


@pytest.mark.parametrize("a", SOURCES, ids=lambda a: a.name)
def test_filled_release_with_tests_restored_is_the_source(a):
    source = nbs.load_source(a.path)
    nb, missing = assignments.restore_locked_cells(submission(a.name), source)
    assert missing == []
    for got, want in zip(nb.cells, source.cells, strict=True):
        expected = _strip_markers(want.source) if nbs.is_solution(want) else want.source
        assert got.source == expected


def test_check_source_rejects_broken_sources():
    nb = nbs.load_source(BY_NAME["01_sketch_fit"].path)
    bad = copy.deepcopy(nb)
    next(c for c in bad.cells if nbs.is_solution(c)).source += "\n### BEGIN SOLUTION"
    with pytest.raises(ValueError, match="never closed"):
        nbs.check_source(bad)
    bad = copy.deepcopy(nb)
    next(c for c in bad.cells if nbs.nbgrader_meta(c).get("locked") and not nbs.is_grade(c)).source += \
        "\n### BEGIN HIDDEN TESTS\nassert True\n### END HIDDEN TESTS"
    with pytest.raises(ValueError, match="hidden tests in a cell"):
        nbs.check_source(bad)
    bad = copy.deepcopy(nb)
    ids = [c for c in bad.cells if nbs.is_grade(c)]
    ids[1].metadata["nbgrader"]["grade_id"] = nbs.grade_id(ids[0])
    with pytest.raises(ValueError, match="used twice"):
        nbs.check_source(bad)


def test_wrong_implementations_apply_and_three_per_assignment_are_caught_by_hidden_tests():
    for a in SOURCES:
        mine = [w for w in WRONG if w.assignment == a.name]
        on_hidden = [w for w in mine if w.caught_by in a.hidden]
        assert len(on_hidden) >= 3, f"{a.name}: only {len(on_hidden)} wrong implementations aimed at hidden tests"
        for w in mine:
            assert w.caught_by in a.points, f"{w.mistake}: {w.caught_by} is not a graded cell"
            nb = submission(a.name, w)   # the edit applies (the old text occurs once)
            reference = submission(a.name)
            assert [c.source for c in nb.cells] != [c.source for c in reference.cells]


# ------------------------------------------------------------------------------------------ graded in a kernel
@pytest.mark.slow
@pytest.mark.parametrize("a", SOURCES, ids=lambda a: a.name)
def test_instructor_source_scores_full_marks(a):
    report = assignments.grade(a.path, timeout=TIMEOUT)
    assert report.score == report.max_score == a.max_score, report.to_text()
    assert [c.grade_id for c in report.cells] == list(a.points)


@pytest.mark.slow
@pytest.mark.parametrize("a", SOURCES, ids=lambda a: a.name)
def test_released_notebook_scores_zero(a, tmp_path):
    path, = assignments.release(tmp_path, [a.name])
    report = assignments.grade(path, timeout=TIMEOUT)
    assert report.score == 0 and report.max_score == a.max_score, report.to_text()


@pytest.mark.slow
@pytest.mark.parametrize("wrong", WRONG, ids=lambda w: f"{w.assignment[:2]}-{w.mistake}")
def test_wrong_implementation_loses_points(wrong):
    report = grade(submission(wrong.assignment, wrong), wrong.assignment)
    lost = {c.grade_id: c for c in report.cells if c.points < c.max_points}
    assert not [n for n in report.notes if n.startswith(f"{wrong.cell} raised")], \
        f"{wrong.mistake}: the wrong implementation itself does not run:\n{report.to_text()}"
    assert wrong.caught_by in lost, f"{wrong.mistake} was not caught by {wrong.caught_by}:\n{report.to_text()}"
    _no_hidden_source_in(report, wrong.assignment)


# ------------------------------------------------------------------------------------------ robustness
def _set_solution(nb, gid: str, source: str) -> None:
    next(c for c in nb.cells if nbs.grade_id(c) == gid).source = source


def _no_hidden_source_in(report, name: str) -> None:
    text = report.to_text()
    leaked = [line for line in hidden_lines(nbs.load_source(BY_NAME[name].path)) if line in text]
    assert not leaked, f"the report shows hidden-test source: {leaked[:3]}"


@pytest.mark.slow
def test_a_submission_that_raises_gets_a_report():
    def edit(nb):
        _set_solution(nb, "fit_from_queries", "def fit_from_queries(*args, **kwargs):\n"
                                              "    raise ValueError('my fit is broken')")
    report = grade(submission("01_sketch_fit", edit=edit), "01_sketch_fit")
    got = {c.grade_id: c for c in report.cells}
    assert got["fit_visible"].points == 0 and "ValueError: my fit is broken" in got["fit_visible"].message
    assert got["fit_hidden"].points == 0 and "Traceback" not in report.to_json()
    _no_hidden_source_in(report, "01_sketch_fit")


@pytest.mark.slow
def test_an_endless_loop_costs_its_cells_and_the_grader_goes_on():
    def edit(nb):
        _set_solution(nb, "fit_query_count", "def fit_query_count(d_in, r, oversample, s):\n"
                                             "    while True:\n        pass")
    report = grade(submission("01_sketch_fit", edit=edit), "01_sketch_fit", timeout=4)
    got = {c.grade_id: c for c in report.cells}
    for gid in ("count_visible", "count_hidden"):   # both call the looping function
        assert got[gid].points == 0 and "timed out after 4 s" in got[gid].message, report.to_text()
    assert got["fit_visible"].points == 2 and got["fit_hidden"].points == 4   # the kernel survived each interrupt
    assert any("count_visible timed out" in note for note in report.notes), report.notes


@pytest.mark.slow
def test_a_kernel_that_dies_gets_a_report():
    def edit(nb):
        _set_solution(nb, "fit_query_count", "import os\nos._exit(3)")
    report = grade(submission("01_sketch_fit", edit=edit), "01_sketch_fit")
    got = {c.grade_id: c for c in report.cells}
    assert got["fit_visible"].points == 2 and got["fit_hidden"].points == 4
    assert got["count_visible"].points == 0 and "kernel died" in got["count_visible"].message
    assert report.score == 6


def _cli(capsys, *args: str) -> tuple[int, str, str]:
    from hybridlab import cli

    code = cli.main(["assignments", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.slow
def test_a_deleted_graded_cell_costs_its_points(tmp_path, capsys):
    def edit(nb):
        nb.cells = [c for c in nb.cells if nbs.grade_id(c) != "fit_hidden"]
    path = tmp_path / "submitted.ipynb"
    nbformat.write(submission("01_sketch_fit", edit=edit), str(path))
    code, out, err = _cli(capsys, "grade", str(path), "--json", "--timeout", str(TIMEOUT))
    assert code == 0, err
    report = json.loads(out)
    assert set(report) >= {"score", "max_score", "cells"}
    got = {c["grade_id"]: c for c in report["cells"]}
    assert set(got["fit_hidden"]) == {"grade_id", "points", "max_points", "message"}
    assert got["fit_hidden"]["points"] == 0 and got["fit_hidden"]["message"].startswith("missing")
    assert report["score"] == report["max_score"] - 4 == 6


def test_unreadable_notebook_and_bad_usage_are_errors_not_crashes(tmp_path, capsys):
    path = tmp_path / "broken.ipynb"
    path.write_text("{ not json")
    code, _, err = _cli(capsys, "grade", str(path))
    assert code == 2 and "cannot read" in err
    code, _, err = _cli(capsys, "frobnicate")
    assert code == 2 and "invalid choice" in err
    code, _, err = _cli(capsys, "grade", str(path), "--timeout", "0")
    assert code == 2 and "--timeout" in err
    other = tmp_path / "other.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1 + 1")]), str(other))
    code, _, err = _cli(capsys, "grade", str(other))
    assert code == 2 and "cannot tell which assignment" in err


def test_release_command_writes_every_student_notebook(tmp_path, capsys):
    code, out, err = _cli(capsys, "release", "--out", str(tmp_path))
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.glob("*.ipynb")) == [a.path.name for a in SOURCES]
    assert out.split() == [str(tmp_path / a.path.name) for a in SOURCES]
    for a in SOURCES:
        written = nbformat.read(str(tmp_path / a.path.name), as_version=4)
        assert written == assignments.release_notebook(nbs.load_source(a.path))
    code, _, _ = _cli(capsys, "release", "--out", str(tmp_path / "one"), "02")
    assert code == 0 and [p.name for p in (tmp_path / "one").iterdir()] == ["02_zo_gradient.ipynb"]


# ------------------------------------------------------------------------------------------ nbgrader
def test_nbgrader_generate_assignment_matches_the_release(tmp_path):
    nbgrader = shutil.which("nbgrader", path=str(Path(sys.executable).parent)) or shutil.which("nbgrader")
    if nbgrader is None:
        pytest.skip("nbgrader is not installed (pip install -r requirements.txt)")
    course = tmp_path / "course"
    shutil.copytree(assignments.SOURCE_DIR, course / "source" / "hybridlab")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run([nbgrader, "generate_assignment", "hybridlab", "--force",
                           f"--CourseDirectory.root={course}"], capture_output=True, text=True, timeout=300,
                          cwd=course, env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    for a in SOURCES:
        theirs = nbformat.read(str(course / "release" / "hybridlab" / a.path.name), as_version=4)
        mine = assignments.release_notebook(nbs.load_source(a.path))
        assert [(c.cell_type, c.source) for c in theirs.cells] == [(c.cell_type, c.source) for c in mine.cells], \
            f"{a.name}: nbgrader's student version differs from the release"
        for t, m in zip(theirs.cells, mine.cells):   # same nbgrader metadata, up to nbgrader's checksums
            extra = {"checksum", "cell_type"}
            assert {k: v for k, v in nbs.nbgrader_meta(t).items() if k not in extra} == nbs.nbgrader_meta(m)


# ------------------------------------------------------------------------------------------ the book
CHAPTER = ROOT / "chapters" / "11_assignments.ipynb"


def _page_lines(html_text: str) -> set[str]:
    """The text lines of a built page (tags dropped, entities decoded, scripts and styles skipped)."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self):
            super().__init__()
            self.parts, self.skip = [], 0

        def handle_starttag(self, tag, attrs):
            self.skip += tag in ("script", "style")

        def handle_endtag(self, tag):
            self.skip -= tag in ("script", "style") and self.skip > 0

        def handle_data(self, data):
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(html_text)
    return {line.strip() for line in "".join(parser.parts).split("\n") if line.strip()}


def _build(book: Path, *extra: str) -> None:
    proc = subprocess.run([sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
                           "build", "--all", *extra, str(book)], capture_output=True, text=True, timeout=600, cwd=book)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    warnings = [line for line in log.splitlines() if "WARNING:" in line]
    assert not warnings, "\n".join(warnings)


@pytest.mark.slow
def test_book_shows_student_versions_and_the_course_build_hides_solutions(tmp_path):
    """A tiny book with the assignments chapter (executed in QUICK mode), built as ``make book`` and
    as ``make course`` build it: the page shows the released notebooks (no solution line, no
    hidden-test line of any source), ``make book`` keeps the exercise solutions in dropdowns and the
    course build leaves every one of them out."""
    papermill = pytest.importorskip("papermill")
    pytest.importorskip("jupyter_book")
    yaml = pytest.importorskip("yaml")
    book = tmp_path / "book"
    book.mkdir()
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (book / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    toc = {"format": "jb-book", "root": "index", "chapters": [{"file": "chapters/11_assignments"}]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    (book / "index.md").write_text("# A tiny book\n\nOne chapter.\n")
    shutil.copytree(ROOT / "book", book / "book", ignore=shutil.ignore_patterns("__pycache__", "*.md", "_vendor"))
    (book / "chapters").mkdir()
    papermill.execute_notebook(str(CHAPTER), str(book / "chapters" / CHAPTER.name), parameters={"QUICK": True},
                               kernel_name="python3", cwd=str(CHAPTER.parent), progress_bar=False)

    _build(book)
    course_config = runpy.run_path(str(ROOT / "book" / "course_config.py"))
    assert course_config["main"](["course_config.py", str(book / "course.yml"), str(book)]) == 0
    _build(book, "--config", str(book / "course.yml"), "--path-output", str(book / "_build" / "course"))

    chapter = nbformat.read(str(CHAPTER), as_version=4)
    markdown = "\n".join(c.source for c in chapter.cells if c.cell_type == "markdown")
    solutions = re.findall(r"```\{solution\}[^\n]*\n(?::[^\n]*\n)*\s*\n(.*?)```", markdown, re.S)
    assert len(solutions) == len(re.findall(r"```\{exercise\}", markdown)) >= 2
    exercises = re.findall(r"```\{exercise\}[^\n]*\n(?::[^\n]*\n)*\s*\n(.*?)```", markdown, re.S)

    def opening(text: str) -> str:  # the first few words, before any math, code or quote
        words = re.match(r"[^$`'\"]*", text.strip()).group(0).split()[:8]
        assert len(words) >= 4, f"pick a solution or exercise that starts with plain words: {text[:60]!r}"
        return " ".join(words)

    first_lines = [opening(s) for s in solutions]
    secret, public = set(), set()   # lines only the solutions and hidden tests have, in any source
    for a in SOURCES:
        source = nbs.load_source(a.path)
        secret |= solution_text(source) | hidden_lines(source)
        public |= {line.strip() for line in nbs.student_markdown(assignments.release_notebook(source)).split("\n")}
    secret -= public

    for html_dir, solutions_shown in ((book / "_build" / "html", True),
                                      (book / "_build" / "course" / "_build" / "html", False)):
        page = (html_dir / "chapters" / "11_assignments.html").read_text(encoding="utf-8")
        lines = _page_lines(page)
        assert page.count("# YOUR CODE HERE") >= sum(
            len([c for c in nbs.load_source(a.path).cells if nbs.is_solution(c)]) for a in SOURCES)
        assert not secret & lines, f"{html_dir}: the page shows {sorted(secret & lines)[:3]}"
        text = " ".join(" ".join(lines).split())
        assert all(opening(e) in text for e in exercises), "an exercise is missing"
        shown = [line for line in first_lines if " ".join(line.split()) in text]
        if solutions_shown:
            assert len(shown) == len(solutions) and page.count('class="solution dropdown') == len(solutions)
        else:
            assert shown == [] and 'class="solution' not in page, f"course build shows solutions: {shown}"
