"""Checks of the book's set-up and of one rendered page, as a reader's browser shows it.

Fast tests: the configuration and table of contents are consistent, every citation key exists,
and ``hybridlab.plots.setup_notebook`` makes plotly emit what the book and JupyterLab need.

The rendered-page test builds a *tiny* book in a temporary folder -- a top-level page with
formulas, the chapter named by ``CHAPTER_WITH_SLIDER`` and a bibliography -- using the repository's
``_config.yml`` and ``book/`` assets.  The chapter is executed first with papermill in QUICK mode
(``QUICK = True`` injected after its ``parameters`` cell), then the book is built with execution
off.  Headless Chromium (Debian package ``chromium``) then opens the pages offline and checks the
DOM (plotly drew its SVG and slider, MathJax typeset every formula, saved widgets rendered) and a
screenshot of the plotly figure (not blank).  It skips, with the reason, where Chromium, the
chapter, or the vendored offline assets (``python book/vendor.py``) are missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The chapter whose rendering is checked.  It must (1) call ``hybridlab.plots.setup_notebook()``
#: before showing figures, (2) show at least one plotly figure with a slider (``layout.sliders``),
#: (3) have a cell tagged ``parameters`` that defines ``QUICK``.
CHAPTER_WITH_SLIDER = "chapters/01_rank.ipynb"

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--virtual-time-budget=8000",
]
VENDORED = [  # what book/_ext/offline_assets.py needs to serve everything locally
    "book/_vendor/require.js",
    "book/_vendor/html-manager/embed-amd.js",
    "book/_vendor/mathjax/tex-mml-chtml.js",
    "book/_vendor/plotly.min.js",
]
TOP_PAGE = r"""# Rendering check

Inline $A \approx U S V^\top$ and a display formula

$$
\min_{\operatorname{rank} Y \le r} \lVert A - Y \rVert_F = \Big(\sum_{k>r}\sigma_k^2\Big)^{1/2}
$$

with a citation {cite:p}`chertkov2025`.
"""


# ---------------------------------------------------------------------------------------------
# fast checks of the configuration
# ---------------------------------------------------------------------------------------------

def _toc_files(node) -> list[str]:
    out = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("file", "root") and isinstance(value, str):
                out.append(value)
            else:
                out.extend(_toc_files(value))
    elif isinstance(node, list):
        for item in node:
            out.extend(_toc_files(item))
    return out


def _resolve_doc(name: str) -> Path | None:
    for suffix in ("", ".md", ".ipynb"):
        path = ROOT / (name + suffix)
        if path.is_file():
            return path
    return None


def test_toc_files_exist():
    yaml = pytest.importorskip("yaml")
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = _toc_files(toc)
    assert files and files[0] == "book/intro"
    missing = [f for f in files if _resolve_doc(f) is None]
    assert not missing, f"_toc.yml lists files that do not exist: {missing}"


def test_citations_resolve():
    keys = set(re.findall(r"@\w+\s*\{\s*([^,\s]+)\s*,", (ROOT / "book/references.bib").read_text()))
    assert "chertkov2025" in keys
    cited = set()
    sources = list((ROOT / "book").glob("*.md")) + list((ROOT / "chapters").glob("*.ipynb"))
    for path in sources:
        for group in re.findall(r"\{cite(?::\w+)?\}`([^`]+)`", path.read_text(encoding="utf-8")):
            cited.update(k.strip() for k in group.split(","))
    unknown = sorted(cited - keys)
    assert not unknown, f"cited but not in book/references.bib: {unknown}"


def test_plotly_setup_emits_html_and_mime(monkeypatch):
    pytest.importorskip("plotly")
    import plotly.graph_objects as go
    import plotly.io as pio

    from hybridlab import plots

    fig = go.Figure(go.Scatter(y=[1, 3, 2]))
    monkeypatch.delenv(plots.BOOK_BUILD_ENV, raising=False)
    plots.setup_notebook()
    bundle = pio.renderers._build_mime_bundle(fig.to_dict(), renderers_string=None)
    assert set(bundle) == {"application/vnd.plotly.v1+json", "text/html"}  # JupyterLab + book
    html = bundle["text/html"]
    assert "Plotly.newPlot" in html
    assert "cdn.plot.ly" not in html and "MathJax.js" not in html  # page provides plotly.js

    monkeypatch.setenv(plots.BOOK_BUILD_ENV, "1")  # what the book build sets
    plots.setup_notebook()
    bundle = pio.renderers._build_mime_bundle(fig.to_dict(), renderers_string=None)
    assert set(bundle) == {"text/html"}


# ---------------------------------------------------------------------------------------------
# the rendered page in a browser
# ---------------------------------------------------------------------------------------------

class _TextOutsideScripts(HTMLParser):
    """Visible text of a page (skips <script>, <style>, <mjx-assistive-mml>)."""

    SKIP = {"script", "style", "mjx-assistive-mml", "textarea"}

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.parts: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in self.SKIP and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.depth:
            self.parts.append(data)


def _visible_text(html: str) -> str:
    parser = _TextOutsideScripts()
    parser.feed(html)
    return "".join(parser.parts)


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def _run_chromium(browser: str, url: str, *extra: str, timeout: int = 90) -> str:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.run(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *extra, url],
            capture_output=True, text=True, timeout=timeout,
        )
    return proc.stdout


@pytest.fixture(scope="module")
def built_book(tmp_path_factory):
    """Build the tiny book; return its html folder."""
    chapter = ROOT / CHAPTER_WITH_SLIDER
    if not chapter.is_file():
        pytest.skip(f"{CHAPTER_WITH_SLIDER} does not exist yet (CHAPTER_WITH_SLIDER in tests/test_book.py)")
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium): rendered-page check skipped")
    pytest.importorskip("papermill")
    pytest.importorskip("jupyter_book")
    yaml = pytest.importorskip("yaml")

    subprocess.run([sys.executable, str(ROOT / "book/vendor.py")], check=False, timeout=900,
                   capture_output=True)
    missing = [f for f in VENDORED if not (ROOT / f).is_file()]
    if missing:
        pytest.skip(f"offline assets not vendored ({', '.join(missing)}; npm unavailable?): "
                    "the offline rendering cannot be checked")

    book = tmp_path_factory.mktemp("book")
    # configuration: the repository's, with execution off (the chapter is executed below)
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (book / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    stem = CHAPTER_WITH_SLIDER.rsplit(".", 1)[0]
    toc = {"format": "jb-book", "root": "index",
           "chapters": [{"file": stem}, {"file": "bibliography"}]}
    (book / "_toc.yml").write_text(yaml.safe_dump(toc, sort_keys=False))
    (book / "index.md").write_text(TOP_PAGE)
    (book / "bibliography.md").write_text("# Bibliography\n\n```{bibliography}\n```\n")
    shutil.copytree(ROOT / "book", book / "book",
                    ignore=shutil.ignore_patterns("__pycache__", "*.md"))

    # execute the chapter as the book build would (plotly as HTML only), in QUICK mode
    import papermill

    out_nb = book / CHAPTER_WITH_SLIDER
    out_nb.parent.mkdir(parents=True, exist_ok=True)
    env_before = os.environ.get("HYBRIDLAB_BOOK_BUILD")
    os.environ["HYBRIDLAB_BOOK_BUILD"] = "1"
    try:
        papermill.execute_notebook(
            str(chapter), str(out_nb), parameters={"QUICK": True},
            cwd=str(chapter.parent), kernel_name="python3", progress_bar=False,
        )
    finally:
        if env_before is None:
            os.environ.pop("HYBRIDLAB_BOOK_BUILD", None)
        else:
            os.environ["HYBRIDLAB_BOOK_BUILD"] = env_before

    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
         "build", "--all", str(book)],
        capture_output=True, text=True, timeout=600, cwd=book,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"jupyter-book build failed:\n{log[-4000:]}"
    warnings = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in log.splitlines() if "WARNING:" in line]
    hint = ""
    if any("application/vnd.plotly.v1+json" in w for w in warnings):
        hint = "\n(plotly figure dropped: call hybridlab.plots.setup_notebook() before fig.show())"
    assert not warnings, "build warnings:\n" + "\n".join(warnings) + hint
    return book / "_build" / "html", browser


def _check_math(dom: str, page: str) -> None:
    assert "<mjx-container" in dom, f"{page}: MathJax did not typeset anything"
    text = _visible_text(dom)
    for raw in ("\\(", "\\[", "$$"):
        assert raw not in text, f"{page}: raw TeX delimiter {raw!r} left in the page text"


@pytest.mark.slow
def test_top_level_page_formulas(built_book):
    html, browser = built_book
    dom = _run_chromium(browser, (html / "index.html").as_uri(), "--dump-dom")
    _check_math(dom, "index.html")
    # numbered citations (bibtex_reference_style: label): "[1]", a link into the bibliography whose
    # title holds the reference
    cite = re.search(r'\[<a class="reference internal" href="bibliography\.html#[^"]+" title="([^"]*)">(\d+)</a>\]',
                     dom)
    assert cite and "Chertkov" in cite.group(1), "citation not rendered as a numbered link to the bibliography"


@pytest.mark.slow
def test_chapter_renders_offline(built_book):
    html, browser = built_book
    page = html / (CHAPTER_WITH_SLIDER.rsplit(".", 1)[0] + ".html")
    source = page.read_text(encoding="utf-8")
    assert "Plotly.newPlot" in source, (
        "no plotly figure in the page: call hybridlab.plots.setup_notebook() before fig.show()")
    for src in re.findall(r'<script[^>]*\bsrc="([^"]+)"', source):
        assert "://" not in src, f"page loads a remote script: {src}"
    # the book's own style sheet (book/_static/hybridlab.css) is linked and shipped
    assert re.search(r'<link[^>]+href="[^"]*_static/hybridlab\.css', source), "hybridlab.css not linked"
    assert "hybridlab-table" in (html / "_static" / "hybridlab.css").read_text(encoding="utf-8")

    dom = _run_chromium(browser, page.as_uri(), "--dump-dom")
    assert dom, "Chromium returned no DOM"
    assert 'class="main-svg"' in dom, "plotly did not draw (no .main-svg)"
    assert 'class="slider-container"' in dom, "no plotly slider drawn (layout.sliders)"
    if 'class="math' in source:
        _check_math(dom, page.name)
    n_views = source.count('type="application/vnd.jupyter.widget-view+json"')
    if n_views:
        assert dom.count('class="widget-subarea"') >= n_views, "saved ipywidgets did not render"

    # screenshot of the first plotly figure alone: a copy of the page that, once loaded, keeps
    # only that figure in the body (same folder, so relative URLs still resolve)
    probe = page.with_name("_probe_" + page.name)
    script = """<script>window.addEventListener('load', function () { setTimeout(function () {
      var p = document.querySelector('.js-plotly-plot');
      if (!p) return;
      var r = p.getBoundingClientRect();
      document.body.replaceChildren(p);
      document.body.style.margin = '0'; document.body.style.background = 'white';
      document.title = JSON.stringify({w: r.width, h: r.height});
    }, 500); });</script>"""
    probe.write_text(source.replace("</body>", script + "</body>"), encoding="utf-8")
    shot = probe.with_suffix(".png")
    _run_chromium(browser, probe.as_uri(), f"--screenshot={shot}", "--window-size=1000,700")
    assert shot.is_file(), "Chromium took no screenshot"
    pixels = _read_png(shot)
    nonwhite = (pixels.min(axis=2) < 0.94).mean()
    saturated = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.25).mean()
    assert nonwhite > 0.01, f"plot area looks blank ({nonwhite:.2%} non-white pixels)"
    assert saturated > 0.0005, f"no coloured traces in the plot ({saturated:.3%} coloured pixels)"
    info = _run_chromium(browser, probe.as_uri(), "--dump-dom")
    m = re.search(r"<title>(\{.*?\})</title>", info)
    if m:
        size = json.loads(m.group(1))
        assert size["w"] > 200 and size["h"] > 150, f"plotly figure too small: {size}"


def _read_png(path: Path):
    import numpy as np

    try:
        from PIL import Image

        return np.asarray(Image.open(path).convert("RGB"), dtype=float) / 255.0
    except ImportError:  # matplotlib reads PNG as floats in [0, 1]
        import matplotlib.image as mpimg

        return np.asarray(mpimg.imread(path))[..., :3]


#: what a progress bar leaves in a page (tqdm's text bar, or its widget's bar)
PROGRESS_MARKS = ("it/s]", "s/it]", "█", 'class="progress"', "<progress")


@pytest.mark.slow
def test_page_fits_its_column_loads_everything_and_shows_no_progress_bar(built_book):
    """As a reader at 1400 px sees the chapter: no code cell or output reaches past the text column or
    hides a part of its line behind a scroll bar, no image, style sheet or font fails to load, and no
    progress bar of the build is left."""
    html, browser = built_book
    page = html / (CHAPTER_WITH_SLIDER.rsplit(".", 1)[0] + ".html")
    source = page.read_text(encoding="utf-8")
    left = [m for m in PROGRESS_MARKS if m in source]
    assert not left, f"{page.name}: a progress bar of the build is in the page ({left})"

    probe = page.with_name("_width_" + page.name)
    script = """<script>window.addEventListener('load', function () { setTimeout(function () {
      var col = document.querySelector('main article, article.bd-article, #main-content');
      var right = col.getBoundingClientRect().right;
      var wide = [];
      document.querySelectorAll('.cell_input pre, .cell_output pre, .cell_output .output, .cell_output table')
        .forEach(function (e) { var r = e.getBoundingClientRect();
          var over = Math.max(r.right - right, e.scrollWidth - e.clientWidth);
          if (r.width > 0 && over > 1) wide.push(e.tagName + ':' + Math.round(over)); });
      var failed = [];
      document.querySelectorAll('img').forEach(function (i) {
        if (i.complete && i.naturalWidth === 0) failed.push('img ' + i.getAttribute('src')); });
      document.querySelectorAll('link[rel=stylesheet]').forEach(function (l) {
        if (!l.sheet) failed.push('css ' + l.getAttribute('href')); });
      var faces = {};  // a font is missing when every face declared for its family and weight failed
      document.fonts.forEach(function (f) { var k = f.family + ' ' + f.weight;
        faces[k] = (faces[k] || []).concat([f.status]); });
      Object.keys(faces).forEach(function (k) {
        if (faces[k].every(function (s) { return s === 'error'; })) failed.push('font ' + k); });
      document.title = JSON.stringify({wide: wide.slice(0, 10), n: wide.length, failed: failed});
    }, 1500); });</script>"""
    probe.write_text(source.replace("</body>", script + "</body>"), encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        proc = subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1400,900",
                               "--dump-dom", probe.as_uri()],
                              capture_output=True, text=True, timeout=90)
    m = re.search(r"<title>(\{.*?\})</title>", proc.stdout)
    assert m, "the width probe did not run"
    widths = json.loads(m.group(1))
    assert widths["n"] == 0, f"{widths['n']} code cells or outputs reach past the column (px over): {widths['wide']}"
    assert not widths["failed"], f"requests that failed (images, style sheets, fonts): {widths['failed']}"
