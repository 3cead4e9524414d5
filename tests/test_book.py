"""Checks of the book's set-up and of the rendered book, as a reader's browser shows it.

Fast tests: the configuration and table of contents are consistent, every citation key exists,
and ``hybridlab.plots.setup_notebook`` makes plotly emit what the book and JupyterLab need.

The rendered-book tests build the real book in a temporary folder -- the repository's
``_config.yml`` (execution off), ``_toc.yml``, ``book/`` pages and assets, and every chapter of the
table of contents executed in QUICK mode as the book build runs it (the ``quick_chapters`` fixture
of ``conftest.py``, shared with ``test_chapters.py``, so that no chapter runs twice) -- and require a
build without warnings.  Headless Chromium (Debian package ``chromium``), driven through the
DevTools protocol, then opens every page of the table of contents offline at 1400 px and checks
what a reader gets: no code cell or output wider than the text column, no request that failed
(the console's "Failed to load resource" messages, and images, style sheets and fonts that did not
load), no progress bar of the build, MathJax typeset every formula, every plotly figure and saved
widget drew, no remote script.  The landing page links every page of the table of contents, and a
screenshot of the slider figure of ``CHAPTER_WITH_SLIDER`` is not blank.  A planted broken page
shows that these checks do report what they look for.  The tests skip, with the reason, where
Chromium or the vendored offline assets (``python book/vendor.py``) are missing.
"""

from __future__ import annotations

import base64
import io
import json
import os
import posixpath
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: The chapter whose slider figure is screenshot.  It must show a plotly figure with a slider
#: (``layout.sliders``) as its first figure.
CHAPTER_WITH_SLIDER = "chapters/01_rank"

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--remote-debugging-pipe",
]
VIEWPORT = (1400, 900)  # px: the width at which no code cell or output may pass the text column
SETTLE_S = 1.5          # a page is read once this long after its load event no event came for QUIET_S
QUIET_S = 0.5
PAGE_TIMEOUT_S = 60
VENDORED = [  # what book/_ext/offline_assets.py needs to serve everything locally
    "book/_vendor/require.js",
    "book/_vendor/html-manager/embed-amd.js",
    "book/_vendor/mathjax/tex-mml-chtml.js",
    "book/_vendor/plotly.min.js",
]


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

    from offline_assets import KERNEL_ENV  # the book's extension (tests/conftest.py puts it on the path)

    assert KERNEL_ENV[plots.BOOK_BUILD_ENV] == "1"  # the build sets the variable plots reads
    monkeypatch.setenv(plots.BOOK_BUILD_ENV, "1")  # what the book build sets
    plots.setup_notebook()
    bundle = pio.renderers._build_mime_bundle(fig.to_dict(), renderers_string=None)
    assert set(bundle) == {"text/html"}


# ---------------------------------------------------------------------------------------------
# the rendered book in a browser
# ---------------------------------------------------------------------------------------------

def _toc_pages() -> list[str]:
    """The documents of ``_toc.yml`` in reading order, the root first ([] without PyYAML)."""
    try:
        import yaml
    except ImportError:
        return []
    return _toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))


TOC_PAGES = _toc_pages()


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


class _ArticleLinks(HTMLParser):
    """The ``href`` of every ``<a>`` inside the page's ``<article>`` (not the navigation around it)."""

    def __init__(self):
        super().__init__()
        self.depth = 0
        self.hrefs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "article":
            self.depth += 1
        elif tag == "a" and self.depth:
            href = dict(attrs).get("href")
            if href:
                self.hrefs.append(href)

    def handle_endtag(self, tag):
        if tag == "article" and self.depth:
            self.depth -= 1


def _article_links(html: str, page: str) -> set[str]:
    """Site-relative paths (``chapters/01_rank.html``) that the article of ``page`` (site-relative too)
    links to; fragments and queries dropped, external links left out."""
    parser = _ArticleLinks()
    parser.feed(html)
    out = set()
    for href in parser.hrefs:
        target = re.split(r"[#?]", href, maxsplit=1)[0]
        if target and "://" not in target and not target.startswith(("mailto:", "/")):
            out.add(posixpath.normpath(posixpath.join(posixpath.dirname(page), target)))
    return out


def test_article_links_are_the_article_s_own_and_resolved():
    html = """<nav><a href="../chapters/02_devices.html">sidebar</a></nav>
    <article class="bd-article"><p>See <a href="../chapters/01_rank.html#top">1</a>, <a href="method.html">m</a>,
    <a href="https://example.org/x.html">x</a> and <a href="#here">here</a>.</p></article>"""
    assert _article_links(html, "book/intro.html") == {"chapters/01_rank.html", "book/method.html"}


def _chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class _DevTools:
    """A headless Chromium driven through the DevTools protocol on a pipe (``--remote-debugging-pipe``):
    JSON messages ended by a NUL byte, which the browser reads from its file descriptor 3 and writes to 4.
    Events that arrive while waiting are kept in :attr:`events`."""

    def __init__(self, browser: str):
        to_browser, self._write = os.pipe()
        self._read, from_browser = os.pipe()

        def on_fds_3_and_4():  # in the child, before exec: the pipe ends become its fds 3 and 4
            reading, writing = os.dup(to_browser), os.dup(from_browser)
            os.dup2(reading, 3)
            os.dup2(writing, 4)

        self._profile = tempfile.TemporaryDirectory(prefix="chromium-profile-")
        self._proc = subprocess.Popen(
            [browser, *CHROMIUM_FLAGS, f"--user-data-dir={self._profile.name}", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=on_fds_3_and_4,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def __enter__(self) -> _DevTools:
        return self

    def __exit__(self, *exc) -> None:
        try:
            self._send("Browser.close")
            self._proc.wait(timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        finally:
            os.close(self._write)
            os.close(self._read)
            self._profile.cleanup()

    def _send(self, method: str, params: dict | None = None, session: str | None = None) -> int:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._write, json.dumps(message).encode() + b"\0")
        return self._next_id

    def receive(self, timeout: float) -> dict | None:
        """The next message, or None when none came within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._read], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                return None
            chunk = os.read(self._read, 1 << 20)
            if not chunk:
                raise RuntimeError("Chromium closed the DevTools pipe (it crashed or could not start)")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = PAGE_TIMEOUT_S) -> dict:
        """Send a command and return its result (events received meanwhile go to :attr:`events`)."""
        sent = self._send(method, params, session)
        deadline = time.monotonic() + timeout
        while True:
            message = self.receive(deadline - time.monotonic())
            if message is None:
                raise TimeoutError(f"no answer from Chromium to {method} within {timeout} s")
            if message.get("id") == sent:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def evaluate(self, expression: str, session: str):
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True}, session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"JavaScript error: {result['exceptionDetails']}")
        return result["result"].get("value")


#: Run in every page once it has settled: what reaches past the text column (code cells and outputs), what
#: did not load (images, style sheets, fonts), how many plotly figures there are and how many were drawn.
PAGE_PROBE = """(async function () {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) await MathJax.startup.promise;
  await document.fonts.ready;
  var col = document.querySelector('main article, article.bd-article, #main-content');
  if (!col) return {error: 'no text column (main article) in the page'};
  var right = col.getBoundingClientRect().right;
  var wide = [];
  document.querySelectorAll('.cell_input pre, .cell_output pre, .cell_output .output, .cell_output table')
    .forEach(function (e) { var r = e.getBoundingClientRect();
      var over = Math.max(r.right - right, e.scrollWidth - e.clientWidth);
      if (r.width > 0 && over > 1) wide.push(e.tagName + ' ' + Math.round(over) + ' px: '
                                              + e.textContent.trim().slice(0, 60)); });
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
  var figures = document.querySelectorAll('.plotly-graph-div');
  var drawn = Array.prototype.filter.call(figures, function (f) { return f.querySelector('.main-svg'); });
  return {wide: wide, failed: failed, figures: figures.length, drawn: drawn.length};
})()"""

#: The page coordinates of the first element matching a selector (for a screenshot of it).
ELEMENT_BOX = """(function (selector) {
  var e = document.querySelector(selector);
  if (!e) return null;
  e.scrollIntoView({block: "center"});
  var r = e.getBoundingClientRect();
  return {x: r.left + window.scrollX, y: r.top + window.scrollY, width: r.width, height: r.height, scale: 1};
})(%s)"""


@dataclass
class Visit:
    """What a reader's browser made of a page."""

    dom: str                    # the document once its scripts ran (MathJax, plotly, widgets)
    probe: dict                 # what PAGE_PROBE found
    console: list[dict]         # the console's messages (DevTools ``Log.entryAdded`` entries)
    exceptions: list[str] = field(default_factory=list)  # uncaught JavaScript errors
    screenshot: bytes | None = None  # PNG of the element asked for


def _visit(browser: str, url: str, screenshot_of: str | None = None) -> Visit:
    """Open ``url`` in a fresh headless Chromium at :data:`VIEWPORT`, wait until it settled, run
    :data:`PAGE_PROBE`, read the DOM and the console, and take a screenshot of ``screenshot_of``."""
    with _DevTools(browser) as tools:
        target = tools.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Log", "Runtime"):
            tools.call(f"{domain}.enable", session=session)
        width, height = VIEWPORT
        tools.call("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session)
        tools.call("Page.navigate", {"url": url}, session)
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        loaded = None  # wait for the load event, then for SETTLE_S and QUIET_S without any event
        while time.monotonic() < deadline:
            message = tools.receive(QUIET_S)
            if message is not None:
                tools.events.append(message)
                if message.get("method") == "Page.loadEventFired":
                    loaded = time.monotonic()
            elif loaded is not None and time.monotonic() - loaded >= SETTLE_S:
                break
        assert loaded is not None, f"{url} did not load within {PAGE_TIMEOUT_S} s"
        probe = tools.evaluate(PAGE_PROBE, session)
        dom = tools.evaluate("document.documentElement.outerHTML", session)
        shot = None
        if screenshot_of:
            # scrolled into the viewport and measured again once the layout is still (late fonts or
            # MathJax move what is below them): a box measured once can clip the wrong part of the page
            box, previous = None, {}
            for _ in range(20):
                box = tools.evaluate(ELEMENT_BOX % json.dumps(screenshot_of), session)
                if box == previous:
                    break
                previous = box
                time.sleep(0.25)
            if box and box["width"] and box["height"]:
                shot = base64.b64decode(tools.call("Page.captureScreenshot", {
                    "format": "png", "clip": box}, session)["data"])
    console = [m["params"]["entry"] for m in tools.events if m.get("method") == "Log.entryAdded"]
    exceptions = [m["params"]["exceptionDetails"].get("exception", {}).get("description")
                  or m["params"]["exceptionDetails"].get("text", "")
                  for m in tools.events if m.get("method") == "Runtime.exceptionThrown"]
    return Visit(dom, probe, console, exceptions, shot)


def _failed_requests(console: list[dict]) -> list[str]:
    """The requests that the console reports as failed ("Failed to load resource: net::ERR_...")."""
    return [f"{entry.get('url', '?')} ({entry.get('text', '')})" for entry in console
            if "Failed to load resource" in entry.get("text", "") or "net::ERR_" in entry.get("text", "")]


def test_failed_requests_are_read_from_the_console():
    console = [
        {"source": "network", "level": "error", "text": "Failed to load resource: net::ERR_FILE_NOT_FOUND",
         "url": "file:///book/_build/html/chapters/missing.png"},
        {"source": "javascript", "level": "info", "text": "MathJax ready"},
        {"source": "network", "level": "error", "text": "net::ERR_BLOCKED_BY_CLIENT", "url": "https://cdn/x.js"},
    ]
    assert _failed_requests(console) == [
        "file:///book/_build/html/chapters/missing.png (Failed to load resource: net::ERR_FILE_NOT_FOUND)",
        "https://cdn/x.js (net::ERR_BLOCKED_BY_CLIENT)"]
    assert _failed_requests(console[1:2]) == []


@pytest.fixture(scope="module")
def built_book(tmp_path_factory, quick_chapters):
    """Build the real book, every chapter executed in QUICK mode; return (its html folder, the browser)."""
    browser = _chromium()
    if browser is None:
        pytest.skip("headless Chromium not installed (apt-get install chromium): rendered-book checks skipped")
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
    # the repository's configuration with execution off (the chapters are executed by quick_chapters), its
    # table of contents, its pages and assets (book/), and every document of the table of contents
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    config.setdefault("execute", {})["execute_notebooks"] = "off"
    (book / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.copy(ROOT / "_toc.yml", book / "_toc.yml")
    shutil.copytree(ROOT / "book", book / "book", ignore=shutil.ignore_patterns("__pycache__"))
    for doc in TOC_PAGES:
        source = _resolve_doc(doc)
        assert source is not None, f"_toc.yml lists {doc}, which does not exist"
        target = book / source.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.suffix == ".ipynb":
            shutil.copy(quick_chapters.run(source).path, target)
        elif not target.exists():
            shutil.copy(source, target)

    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())",
         "build", "--all", str(book)],
        capture_output=True, text=True, timeout=1800, cwd=book,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"jupyter-book build failed:\n{log[-4000:]}"
    warnings = [re.sub(r"\x1b\[[0-9;]*m", "", line) for line in log.splitlines() if "WARNING:" in line]
    hint = ""
    if any("application/vnd.plotly.v1+json" in w for w in warnings):
        hint = "\n(plotly figure dropped: call hybridlab.plots.setup_notebook() before fig.show())"
    assert not warnings, "build warnings:\n" + "\n".join(warnings) + hint
    return book / "_build" / "html", browser


#: what a progress bar leaves in a page (tqdm's text bar, or its widget's bar)
PROGRESS_MARKS = ("it/s]", "s/it]", "█", 'class="progress"', "<progress")


def _page_problems(page: Path, browser: str, name: str) -> list[str]:
    """Everything wrong with a built page as a reader's browser at 1400 px shows it ([] when nothing)."""
    source = page.read_text(encoding="utf-8")
    problems = [f"{name}: a progress bar of the build is in the page ({mark!r})"
                for mark in PROGRESS_MARKS if mark in source]
    problems += [f"{name}: loads a remote script {src}"
                 for src in re.findall(r'<script[^>]*\bsrc="([^"]+)"', source) if "://" in src]
    if not re.search(r'<link[^>]+href="[^"]*_static/hybridlab\.css', source):
        problems.append(f"{name}: book/_static/hybridlab.css is not linked")

    visit = _visit(browser, page.as_uri())
    if "error" in visit.probe:
        return [*problems, f"{name}: {visit.probe['error']}"]
    problems += [f"{name}: reaches past the text column by {wide}" for wide in visit.probe["wide"]]
    problems += [f"{name}: did not load: {failed}" for failed in visit.probe["failed"]]
    problems += [f"{name}: the console reports a failed request: {failed}"
                 for failed in _failed_requests(visit.console)]
    problems += [f"{name}: JavaScript error: {error}" for error in visit.exceptions]
    if 'class="math' in source:
        if "<mjx-container" not in visit.dom:
            problems.append(f"{name}: MathJax did not typeset anything")
        text = _visible_text(visit.dom)
        problems += [f"{name}: raw TeX delimiter {raw!r} left in the page text"
                     for raw in ("\\(", "\\[", "$$") if raw in text]
    n_plots = source.count("Plotly.newPlot(")
    if n_plots and visit.probe["drawn"] < n_plots:
        problems.append(f"{name}: plotly drew {visit.probe['drawn']} of its {n_plots} figures")
    n_views = source.count('type="application/vnd.jupyter.widget-view+json"')
    if visit.dom.count('class="widget-subarea"') < n_views:
        problems.append(f"{name}: saved ipywidgets did not render")
    return problems


@pytest.mark.slow
@pytest.mark.parametrize("doc", TOC_PAGES)
def test_page_fits_its_column_loads_everything_and_shows_no_progress_bar(built_book, doc: str):
    """Every page of the table of contents as a reader at 1400 px sees it: no code cell or output reaches past
    the text column or hides a part of its line behind a scroll bar; no request failed (console), no image,
    style sheet or font is missing; no progress bar of the build is left; formulas are typeset, plotly
    figures and saved widgets drawn; no script comes from the network."""
    html, browser = built_book
    problems = _page_problems(html / f"{doc}.html", browser, f"{doc}.html")
    assert not problems, "\n".join(problems)


@pytest.mark.slow
def test_the_page_checks_report_a_planted_broken_page(built_book):
    """A copy of a real page with a missing image, a missing style sheet, an output wider than the column
    and a progress bar: the checks of every page report each of them."""
    html, browser = built_book
    page = html / f"{CHAPTER_WITH_SLIDER}.html"
    wide = "x" * 400
    plant = (f'<img src="missing.png" alt="planted"><link rel="stylesheet" href="missing.css">'
             f'<div class="cell_output"><pre>{wide}</pre></div><div class="progress"></div>')
    source = page.read_text(encoding="utf-8")
    article = re.search(r"<article[^>]*>", source)
    assert article, "no <article> in the page"
    planted = page.with_name("_planted_" + page.name)
    planted.write_text(source[:article.end()] + plant + source[article.end():], encoding="utf-8")
    problems = "\n".join(_page_problems(planted, browser, planted.name))
    assert "console reports a failed request: " + (html / "chapters" / "missing.png").as_uri() in problems
    assert "missing.css" in problems and "did not load: img missing.png" in problems
    assert "reaches past the text column" in problems and wide[:60] in problems
    assert "progress bar" in problems


@pytest.mark.slow
def test_landing_page_links_every_page_and_cites_by_number(built_book):
    html, _ = built_book
    root = f"{TOC_PAGES[0]}.html"
    index = (html / "index.html").read_text(encoding="utf-8")  # jupyter-book's redirect to the root page
    redirect = re.search(r'http-equiv="Refresh"\s+content="0;\s*url=([^"]+)"', index, re.I)
    assert redirect and redirect.group(1) == root, f"index.html does not lead to {root}"
    source = (html / root).read_text(encoding="utf-8")
    links = _article_links(source, root)
    missing = [f"{doc}.html" for doc in TOC_PAGES[1:] if f"{doc}.html" not in links]
    assert not missing, f"the landing page {root} does not link {missing}"
    # numbered citations (bibtex_reference_style: label): "[1]", links into the bibliography whose title
    # holds the reference
    titles = re.findall(r'<a class="reference internal" href="bibliography\.html#[^"]+" title="([^"]*)">\d+</a>',
                        source)
    assert any("Chertkov" in t for t in titles), "citation not rendered as a numbered link to the bibliography"


@pytest.mark.slow
def test_style_sheet_is_shipped(built_book):
    html, _ = built_book
    assert "hybridlab-table" in (html / "_static" / "hybridlab.css").read_text(encoding="utf-8")


@pytest.mark.slow
def test_slider_figure_draws_in_colour(built_book):
    html, browser = built_book
    visit = _visit(browser, (html / f"{CHAPTER_WITH_SLIDER}.html").as_uri(), screenshot_of=".js-plotly-plot")
    assert 'class="slider-container"' in visit.dom, "no plotly slider drawn (layout.sliders)"
    assert visit.screenshot, "no screenshot of the first plotly figure"
    pixels = _read_png(visit.screenshot)
    height, width = pixels.shape[:2]
    assert width > 200 and height > 150, f"plotly figure too small: {width} x {height} px"
    nonwhite = (pixels.min(axis=2) < 0.94).mean()
    saturated = ((pixels.max(axis=2) - pixels.min(axis=2)) > 0.25).mean()
    assert nonwhite > 0.01, f"plot area looks blank ({nonwhite:.2%} non-white pixels)"
    assert saturated > 0.0005, f"no coloured traces in the plot ({saturated:.3%} coloured pixels)"


def _read_png(png: bytes):
    import numpy as np

    try:
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=float) / 255.0
    except ImportError:  # matplotlib reads PNG as floats in [0, 1]
        import matplotlib.image as mpimg

        return np.asarray(mpimg.imread(io.BytesIO(png)))[..., :3]
