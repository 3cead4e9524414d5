"""Every chapter notebook runs top to bottom in QUICK mode, fast, and is committed clean.

* static checks (fast): the first code cell is tagged ``parameters`` and sets ``QUICK = False``;
  no outputs or execution counts are committed; the chapter has learning objectives, exercises
  and a summary; ``setup_notebook()`` is called before anything is shown;
* a run of each ``chapters/*.ipynb`` with papermill (``QUICK = True`` injected after the
  ``parameters`` cell, a fresh ``python3`` kernel, the chapter folder as working directory, the
  environment of the book build): it must not raise and must finish within :data:`MAX_SECONDS`.
  Each chapter runs once per test session (the ``quick_chapters`` fixture of ``conftest.py``); the
  same runs are checked below and built into the book by ``test_book.py``;
* the tracking table that chapter 4 prints (cell tagged ``tracking-table``, exact numbers attached
  to the output's metadata by ``hybridlab.plots.show_table``) equals a fresh call of
  :func:`hybridlab.experiments.tracking_table`
  with the configuration printed next to it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "chapters").glob("[0-9][0-9]_*.ipynb"))
MAX_SECONDS = 60          # per chapter, QUICK mode (kernel start included)
TRACKING_CHAPTER = "04_dlra.ipynb"
TRACKING_TAG = "tracking-table"


def _read(path: Path):
    nbformat = pytest.importorskip("nbformat")
    return nbformat.read(str(path), as_version=4)


def test_there_are_chapters():
    assert CHAPTERS, "no chapters/NN_*.ipynb found"


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_is_clean_and_complete(path: Path):
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name} has no code cells"
    first = code[0]
    assert "parameters" in first.metadata.get("tags", []), f"{path.name}: first code cell must be tagged 'parameters'"
    assert re.search(r"^QUICK\s*=\s*False\b", first.source, re.M), \
        f"{path.name}: parameters cell must set QUICK = False"
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name}: committed outputs in cells {dirty} (strip them)"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert "Learning objectives" in markdown, f"{path.name}: no learning objectives"
    assert "## Summary" in markdown, f"{path.name}: no summary"
    n_ex = len(re.findall(r"`{3,}\{exercise\}", markdown))
    n_sol = len(re.findall(r"`{3,}\{solution\}", markdown))
    assert 2 <= n_ex <= 4 and n_sol == n_ex, f"{path.name}: {n_ex} exercises, {n_sol} solutions"
    sources = [c.source for c in code]
    setup = next((i for i, s in enumerate(sources) if "setup_notebook()" in s), None)
    assert setup is not None, f"{path.name}: setup_notebook() is never called"
    shown = next((i for i, s in enumerate(sources) if ".show()" in s or "plt.show" in s), len(sources))
    assert setup < shown, f"{path.name}: a figure is shown before setup_notebook()"


@pytest.mark.slow
@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_runs_quick(path: Path, quick_chapters):
    run = quick_chapters.run(path)
    nb, seconds = run.notebook, run.seconds
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors, f"{path.name} produced errors: {[e.get('ename') for e in errors]}"
    assert seconds < MAX_SECONDS, f"{path.name} took {seconds:.1f} s in QUICK mode (limit {MAX_SECONDS} s)"


@pytest.mark.slow
def test_tracking_table_matches_experiments(quick_chapters):
    path = ROOT / "chapters" / TRACKING_CHAPTER
    if not path.is_file():
        pytest.skip(f"{TRACKING_CHAPTER} does not exist")
    nb = quick_chapters.run(path).notebook
    shown = _tagged_table(nb, TRACKING_TAG)
    config, rows = shown["config"], shown["rows"]
    assert rows and {"method", "mean_ratio", "queries_per_step"} <= set(rows[0])

    import torch

    from hybridlab import experiments

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the chapter
    try:
        fresh = experiments.tracking_table(**config)
    finally:
        torch.set_num_threads(threads)
    assert [r["method"] for r in fresh] == [r["method"] for r in rows]
    for got, want in zip(rows, fresh):
        for key, value in want.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-12), (want["method"], key)
            else:
                assert got[key] == value, (want["method"], key)


# ------------------------------------------------------------------------ chapters 7-9: device comparisons
#: chapter file -> task of the chapters that compare every device kind with the digital network
DEVICE_CHAPTERS = {"07_vision.ipynb": "vision", "08_audio.ipynb": "audio", "09_text.ipynb": "text"}
RESULTS_TAG = "results-table"
SETTINGS_TAG = "settings-table"
ROBUSTNESS_TAG = "robustness-table"  # the easy and hard data, read from benchmarks/results/robustness.jsonl
CARRY_TAG = "carry-table"  # the network in which the device carries the computation, trained against frozen
#: training code that must not appear in these chapters: every run goes through hybridlab.recipes.run
FORBIDDEN = ("train_classifier", "train_language_model", "replace_linear", "BlackBoxLinear(", ".backward(",
             "optim.", "zero_grad")


def _device_chapters():
    return [ROOT / "chapters" / name for name in DEVICE_CHAPTERS if (ROOT / "chapters" / name).is_file()]


def _tagged_table(nb, tag: str) -> dict:
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    from hybridlab.plots import TABLE_METADATA_KEY

    for out in cells[0].get("outputs", []):
        payload = out.get("metadata", {}).get(TABLE_METADATA_KEY)
        if payload is not None:
            return json.loads(payload) if isinstance(payload, str) else payload
    raise AssertionError(f"the cell tagged {tag!r} has no output with {TABLE_METADATA_KEY!r} metadata")


@pytest.mark.parametrize("path", _device_chapters(), ids=lambda p: p.stem)
def test_device_chapter_trains_only_through_the_cli_and_documents_reruns(path: Path):
    nb = _read(path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = code[0].source
    assert re.search(r"^SEEDS\s*=\s*\(0,\s*1,\s*2\)", params, re.M), f"{path.name}: SEEDS must be (0, 1, 2)"
    assert re.search(r"^DEVICES\s*=\s*\(\"slm\",\s*\"mrr\",\s*\"mzi\",\s*\"ideal\"\)", params, re.M)
    assert re.search(r"^METHODS\s*=\s*\(\"surrogate\",\s*\"static\",\s*\"frozen\"\)", params, re.M)
    sources = "\n".join(c.source for c in code)
    assert "ex.compare_devices(" in sources and "recipes.load_data(" in sources
    used = [f for f in FORBIDDEN if f in sources]
    assert not used, f"{path.name} trains outside hybridlab.recipes.run: {used}"
    markdown = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    task = DEVICE_CHAPTERS[path.name]
    assert f"python -m hybridlab train --task {task}" in markdown and "--data-dir" in markdown
    assert "{cite:p}" in markdown
    for tag in (RESULTS_TAG, SETTINGS_TAG, ROBUSTNESS_TAG, CARRY_TAG):
        assert sum(tag in c.metadata.get("tags", []) for c in code) == 1, f"{path.name}: one cell tagged {tag!r}"
    assert "ROBUSTNESS" in params and "ex.show_robustness(ROBUSTNESS, TASK)" in sources


@pytest.mark.slow
@pytest.mark.parametrize("path", _device_chapters(), ids=lambda p: p.stem)
def test_device_chapter_tables_are_what_hybridlab_computes(path: Path, quick_chapters):
    """The QUICK run shows the settings of recipes.settings, a row per run with the right seeds, budgets
    that are zero only for digital, and numbers that a fresh recipes.run repeats."""
    import torch

    from hybridlab import experiments as ex
    from hybridlab import recipes

    nb = quick_chapters.run(path).notebook
    task = DEVICE_CHAPTERS[path.name]

    shown = _tagged_table(nb, SETTINGS_TAG)
    assert shown["task"] == task and shown["quick"] is True
    assert shown["rows"] == ex.settings_table(task, tuple(shown["devices"]), quick=True,
                                              differing_from=shown.get("differing_from"))

    table = _tagged_table(nb, RESULTS_TAG)
    config, rows = table["config"], table["rows"]
    assert config["task"] == task and config["quick"] is True and config["seeds"] == [0]
    assert set(config["runs"]) == {"slm", "mrr", "mzi", "ideal"}
    assert all("surrogate" in methods for methods in config["runs"].values())
    assert all({"static", "frozen"} <= set(config["runs"][d]) for d in ("slm", "mrr", "mzi"))
    expected = [("digital", "—")] + [(m, d) for d, methods in config["runs"].items() for m in methods]
    assert [(r["method"], r["device"]) for r in rows] == expected
    for r in rows:
        assert r["seeds"] == 1 and len(r["values"]) == 1 and r["std"] == 0.0
        assert (r["queries"] == 0) == (r["method"] == "digital") and r["reconfigurations"] >= 0

    robust = _tagged_table(nb, ROBUSTNESS_TAG)  # the committed benchmark results, summarised by hybridlab
    assert robust["task"] == task and robust["rows"] == json.loads(json.dumps(
        ex.robustness_rows(ROOT / "benchmarks" / "results" / "robustness.jsonl", task)))
    carry = _tagged_table(nb, CARRY_TAG)
    trained = [(r["method"], r["device"]) for r in carry["rows"] if r["method"] != "digital"]
    assert trained == [("surrogate", "mrr"), ("frozen", "mrr")] and carry["config"]["layer"] == "embed"

    threads = torch.get_num_threads()
    torch.set_num_threads(config["threads"])  # as in the chapter
    try:
        fresh = recipes.run(task, "mzi", "surrogate", seed=0, quick=True)
    finally:
        torch.set_num_threads(threads)
    row = next(r for r in rows if (r["method"], r["device"]) == ("surrogate", "mzi"))
    scale = ex.metric_scale(fresh["metric"])
    assert row["values"][0] == pytest.approx(fresh[fresh["metric"]] * scale, rel=1e-9)
    assert row["queries"] == fresh["queries"] and row["reconfigurations"] == fresh["reconfigurations"]


# ------------------------------------------------------------------------ chapter 6: the budget explorer
BUDGET_CHAPTER = "06_budget.ipynb"


def _plotly_figure(nb, tag: str) -> dict:
    """``{"data": ..., "layout": ...}`` of the plotly figure shown by the cell tagged ``tag``, read from the
    ``text/html`` output the book shows (the book build's kernels emit no plotly mime bundle), i.e. from the
    arguments of its ``Plotly.newPlot("<div id>", data, layout, config)`` call."""
    cells = [c for c in nb.cells if tag in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged {tag!r}"
    decoder = json.JSONDecoder()
    for out in cells[0].get("outputs", []):
        html = out.get("data", {}).get("text/html", "")
        html = "".join(html) if isinstance(html, list) else html
        call = re.search(r'Plotly\.newPlot\(\s*"[^"]*"\s*,\s*', html)
        if call:
            data, end = decoder.raw_decode(html, call.end())
            comma = re.compile(r"\s*,\s*").match(html, end)
            assert comma, f"the figure of the cell tagged {tag!r} has no layout"
            layout, _ = decoder.raw_decode(html, comma.end())
            return {"data": data, "layout": layout}
    raise AssertionError(f"the cell tagged {tag!r} shows no plotly figure")


def test_plotly_figure_reads_what_the_plotly_mime_bundle_holds():
    """The figure read back from the book's HTML is the one plotly's own mime bundle carries (JupyterLab)."""
    pytest.importorskip("plotly")
    import numpy as np
    import plotly.graph_objects as go
    import plotly.io as pio
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from hybridlab import plots

    fig = go.Figure(go.Scatter(x=np.arange(3.0), y=[1, 3, 2], name='a "quoted" </script> name'))
    fig.update_layout(sliders=[{"steps": [{"label": "1"}, {"label": "2"}]}])
    plots.setup_plotly()
    html = pio.renderers["book_html"].to_mimebundle(fig.to_dict())
    cell = new_code_cell("fig.show()", metadata={"tags": ["figure"]},
                         outputs=[new_output("display_data", data=html)])
    mime = pio.renderers._build_mime_bundle(fig.to_dict(), renderers_string="plotly_mimetype")
    want = json.loads(json.dumps(mime["application/vnd.plotly.v1+json"]))
    assert _plotly_figure(new_notebook(cells=[cell]), "figure") == {k: want[k] for k in ("data", "layout")}


@pytest.mark.slow
def test_budget_explorer_figure_shows_what_a_fresh_run_of_a_grid_point_gives(quick_chapters):
    path = ROOT / "chapters" / BUDGET_CHAPTER
    nb = quick_chapters.run(path).notebook
    table = _tagged_table(nb, "front-table")
    fig = _plotly_figure(nb, "budget-explorer")
    grid = table["grid"]
    highlights = [t for t in fig["data"] if t.get("marker", {}).get("size") == 15]
    assert len(highlights) == len(grid)
    assert [t["y"][0] for t in highlights] == pytest.approx([p["accuracy_pct"] for p in grid])
    # every (rank, samples) of the grid is a step of the sliders
    sliders = fig["layout"]["sliders"]
    assert [s["label"] for s in sliders[0]["steps"]] == [str(r) for r in sorted({p["rank"] for p in grid})]
    assert [s["label"] for s in sliders[1]["steps"]] == [str(m) for m in sorted({p["samples"] for p in grid})]

    import torch

    from hybridlab import experiments as ex
    from hybridlab import recipes

    point = grid[-1]
    threads = torch.get_num_threads()
    torch.set_num_threads(table["threads"])
    try:
        fresh = ex.budget_point(point["rank"], point["samples"], point["upkeep"], device=table["device"],
                                seed=table["seed"], quick=True, data=recipes.load_data("vision", quick=True),
                                epochs=table["epochs"])
    finally:
        torch.set_num_threads(threads)
    assert fresh["accuracy_pct"] == pytest.approx(point["accuracy_pct"], rel=1e-9)
    assert (fresh["queries"], fresh["reconfigurations"]) == (point["queries"], point["reconfigurations"])
    assert highlights[-1]["x"][0] == pytest.approx(fresh["hardware_s"][table["device"]], rel=1e-12)


# ------------------------------------------------------------------------ chapter 10: real-world effects
REAL_WORLD_CHAPTER = "10_real_world.ipynb"


@pytest.mark.slow
def test_real_world_chapter_shows_what_hybridlab_computes(quick_chapters):
    """The QUICK run's effects table has every effect the Done-when names on every device kind, with the
    recommended step under read-out noise, and a row that a fresh recipes.run repeats; the drift table
    has the static surrogate and every upkeep; the hardware-time figure is interactive (plotly) with
    every method."""
    path = ROOT / "chapters" / REAL_WORLD_CHAPTER
    if not path.is_file():
        pytest.skip(f"{REAL_WORLD_CHAPTER} does not exist")
    import torch

    from hybridlab import experiments as ex
    from hybridlab import recipes

    nb = quick_chapters.run(path).notebook
    effects = _tagged_table(nb, "effects-table")
    assert effects["quick"] is True
    rows = {(r["device"], r["label"]): r for r in effects["rows"]}
    for device in ("slm", "mrr", "mzi"):
        for label in ("none", "read-out noise", "read-out noise, μ / 10", "8-bit phases", "4-bit phases",
                      "2-bit phases"):
            assert (device, label) in rows, (device, label)
        mu = recipes.recommended_mu(effects["noise"], recipes.settings("vision")["mu"])
        assert rows[(device, "read-out noise")]["mu"] == mu and mu > recipes.settings("vision")["mu"]
        assert rows[(device, "read-out noise, μ / 10")]["mu"] == pytest.approx(mu / 10, rel=1e-12)

    threads = torch.get_num_threads()
    torch.set_num_threads(effects["threads"])  # as in the chapter
    try:
        fresh = recipes.run("vision", "mrr", "surrogate", seed=0, quick=True,
                            device_options={"noise": effects["noise"]})
    finally:
        torch.set_num_threads(threads)
    row = rows[("mrr", "read-out noise")]
    assert row["values"][0] == pytest.approx(100 * fresh["accuracy"], rel=1e-9)
    assert (row["queries"], row["reconfigurations"]) == (fresh["queries"], fresh["reconfigurations"])

    drift = _tagged_table(nb, "drift-table")
    assert [r["label"] for r in drift["rows"]] == list(ex.upkeep_variants(drift["drift"]))
    fig = _plotly_figure(nb, "hardware-figure")
    assert set(ex.comparison_methods()) <= {t.get("name") for t in fig["data"]}
