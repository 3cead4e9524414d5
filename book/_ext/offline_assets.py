"""Sphinx extension: serve MathJax, RequireJS, the ipywidgets embedder and plotly.js locally.

``book/vendor.py`` fetches these into the ignored folder ``book/_vendor/``.  At build time this
extension checks, per asset group, whether the files are there:

* present  -> the page loads the local copy, published with the site as ``<outdir>/_vendor/``;
* missing  -> the CDN default stays (MathJax and the widget embedder: Sphinx / myst-nb defaults;
              plotly.js: cdn.plot.ly at the version of the installed plotly package).

URLs.  Sphinx turns a relative script path into ``_static/<path>`` and then into a path relative
to the current page (``pathto(..., resource=True)``).  We register ``../_vendor/<file>``, which
becomes ``_static/../_vendor/<file>`` and, from ``chapters/x.html``,
``../_static/../_vendor/<file>``: relative, so it works over http(s) under any base URL and from
``file://``.  (A root-relative ``/_vendor/...`` would break under ``file://``.)

The folder is copied to ``<outdir>/_vendor`` at the end of the build rather than put in
``_static`` (every ``.js`` in ``_static`` would be auto-loaded by some themes) or passed through
``html_extra_path`` (which copies a folder's *contents* to the site root).

plotly.js is added only to pages whose body contains a plotly figure (``Plotly.newPlot``),
with a priority that loads it *before* RequireJS: plotly's UMD wrapper would otherwise register
itself as an AMD module and never define ``window.Plotly``.

The widget embedder's style sheet asks for icon fonts at ``<assets path>/<hash>.woff2`` (webpack
assets of the html-manager package); ``book/vendor.py`` keeps them next to ``embed-amd.js``.  Pages
with widgets tell the embedder where that folder is in two ways, before ``require.js`` loads:
``window.__jupyter_widgets_assets_path__`` (read by the embedder's main bundle) and a RequireJS
configuration (a ``require`` object defined before ``require.js``, which takes it as its config)
that maps the AMD module ``@jupyter-widgets/html-manager/dist/libembed-amd`` into that folder: that
module takes the folder of its fonts from its own module URL, by default
``chapters/@jupyter-widgets/html-manager/dist/``, where the browser would ask for them in vain (404
in the console; tests/test_book.py checks every page for failed requests).

Kernels started by the build inherit two environment variables: ``HYBRIDLAB_BOOK_BUILD=1``
(``hybridlab.plots.setup_notebook`` then emits plotly figures as HTML only and switches progress
bars off, so that no bar with the build machine's timings reaches a page) and ``TQDM_DISABLE=1``
(the same for plain-text tqdm bars; the notebook bar ignores it).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from sphinx.application import Sphinx
from sphinx.util import logging

#: The environment of the kernels the build starts (see the module's docstring): ``hybridlab.plots``
#: emits plotly figures as HTML only (no plotly mime bundle, which the book cannot show and myst-nb
#: warns about) and draws no progress bars. The tests run the chapters with the same environment.
KERNEL_ENV = {"HYBRIDLAB_BOOK_BUILD": "1", "TQDM_DISABLE": "1"}

logger = logging.getLogger(__name__)

VENDOR = Path(__file__).resolve().parent.parent / "_vendor"
URL_PREFIX = "../_vendor/"  # relative to _static/, see the module docstring

REQUIREJS = "require.js"
EMBED_AMD = "html-manager/embed-amd.js"
MATHJAX = "mathjax/tex-mml-chtml.js"
MATHJAX_FONT = "mathjax/output/chtml/fonts/woff-v2/MathJax_Main-Regular.woff"
PLOTLY = "plotly.min.js"
# The AMD module of embed-amd.js whose style sheet asks for the icon fonts: webpack takes the folder of the
# fonts from the module's URL, which RequireJS derives from this name (by default <page folder>/<name>.js).
AMD_DIST = "@jupyter-widgets/html-manager/dist"
# The same attribute myst-nb uses for its CDN default: where the embedder fetches widget
# modules it does not bundle (third-party widgets; the book uses only the built-in ones).
WIDGETS_CDN = "https://cdn.jsdelivr.net/npm/"


def _have(*files: str) -> bool:
    return all((VENDOR / f).is_file() for f in files)


def _plotly_cdn() -> str:
    try:
        from plotly.offline import get_plotlyjs_version

        return f"https://cdn.plot.ly/plotly-{get_plotlyjs_version()}.min.js"
    except ImportError:  # pragma: no cover
        return "https://cdn.plot.ly/plotly-latest.min.js"


def configure(app: Sphinx, config) -> None:
    """config-inited: point MathJax and the widget scripts at the local copies when present."""
    for key, value in KERNEL_ENV.items():  # inherited by the kernels the build starts
        os.environ.setdefault(key, value)
    used = []
    if _have(MATHJAX, MATHJAX_FONT):
        config.mathjax_path = URL_PREFIX + MATHJAX
        used.append("MathJax")
    if _have(REQUIREJS, EMBED_AMD):
        config.nb_ipywidgets_js = {
            URL_PREFIX + REQUIREJS: {},
            URL_PREFIX + EMBED_AMD: {"data-jupyter-widgets-cdn": WIDGETS_CDN},
        }
        used.append("ipywidgets embedder")
    if _have(PLOTLY):
        used.append("plotly.js")
    app.offline_assets_plotly = URL_PREFIX + PLOTLY if _have(PLOTLY) else _plotly_cdn()
    missing = {"MathJax", "ipywidgets embedder", "plotly.js"} - set(used)
    if missing:
        logger.info(
            "[offline_assets] not vendored (run book/vendor.py): %s -> loaded from CDNs",
            ", ".join(sorted(missing)),
        )
    if used:
        logger.info("[offline_assets] local copies: %s", ", ".join(used))


# ipywidgets 8's html-manager typesets widget labels with the MathJax 2 API
# (``MathJax.Hub.Queue``); with MathJax 3 on the page that throws.  Bridge it to MathJax 3.
# Runs on DOMContentLoaded: after the deferred MathJax script, before the widgets render ("load").
MATHJAX2_SHIM = """document.addEventListener("DOMContentLoaded", function () {
  var M = window.MathJax;
  if (!M || M.Hub) return;
  M.Hub = {Queue: function (job) {
    var el = job && job[2];
    if (M.startup && M.startup.promise && M.typesetPromise) {
      M.startup.promise.then(function () { return M.typesetPromise(el ? [el] : undefined); })
        .catch(function () {});
    }
  }};
});"""


# Where the widget embedder's icon fonts are (see the module docstring); runs before require.js.
WIDGET_ASSETS = """(function (assets) {
  window.__jupyter_widgets_assets_path__ = assets;
  window.require = {paths: {AMD_DIST: assets.replace(/\\/$/, "")}};
})(new URL(FOLDER, document.baseURI).href);"""


def add_page_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """html-page-context: plotly.js on pages with a plotly figure; the MathJax shim for widgets."""
    if app.builder.format != "html":
        return
    body = context.get("body") or ""
    if "Plotly.newPlot" in body:
        app.add_js_file(app.offline_assets_plotly, priority=450, charset="utf-8")
    if "application/vnd.jupyter.widget-view+json" in body:
        app.add_js_file(None, body=MATHJAX2_SHIM, priority=460)
    if _have(EMBED_AMD) and _has_widget_state(app, pagename):
        folder = context["pathto"]("_vendor/html-manager/", 1)
        script = WIDGET_ASSETS.replace("AMD_DIST", json.dumps(AMD_DIST)).replace("FOLDER", json.dumps(folder))
        app.add_js_file(None, body=script, priority=440)


def _has_widget_state(app: Sphinx, pagename: str) -> bool:
    """Whether myst-nb loads the widget embedder on this page (its notebook saved widget state)."""
    try:
        from myst_nb.sphinx_ext import NbMetadataCollector

        files = NbMetadataCollector.get_js_files(app.env, pagename)
    except Exception:  # another myst-nb version: no assets path (the fonts 404, nothing else breaks)
        return False
    return any(EMBED_AMD in str(path) for path, _ in files.values())


def dedupe_scripts(app: Sphinx, pagename: str, templatename: str, context: dict, doctree) -> None:
    """html-page-context (last): drop repeated inline scripts.

    sphinx-thebe registers its inline config script (``const THEBE_JS_URL = ...``) twice under
    Jupyter Book, and the second copy throws "Identifier 'THEBE_JS_URL' has already been declared"
    in the browser console on every page.
    """
    scripts = context.get("script_files")
    if not isinstance(scripts, list):
        return
    seen, kept = set(), []
    for js in scripts:
        attrs = getattr(js, "attributes", {}) or {}
        key = (getattr(js, "filename", js) or "", tuple(sorted((k, str(v)) for k, v in attrs.items())))
        if key in seen:
            continue
        seen.add(key)
        kept.append(js)
    if len(kept) != len(scripts):
        context["script_files"] = kept


def publish(app: Sphinx, exception) -> None:
    """build-finished: copy book/_vendor to <outdir>/_vendor (skip unchanged files)."""
    if exception is not None or app.builder.format != "html" or not VENDOR.is_dir():
        return
    dest = Path(app.outdir) / "_vendor"
    copied = 0
    for src in VENDOR.rglob("*"):
        if not src.is_file():
            continue
        target = dest / src.relative_to(VENDOR)
        st = src.stat()
        if target.is_file() and target.stat().st_size == st.st_size and target.stat().st_mtime >= st.st_mtime:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)
        copied += 1
    logger.info("[offline_assets] published _vendor/ (%d files updated)", copied)


def setup(app: Sphinx) -> dict:
    # before myst-nb reads nb_ipywidgets_js (builder-inited) and Sphinx's mathjax (page context)
    app.connect("config-inited", configure, priority=300)
    app.connect("html-page-context", add_page_scripts)
    app.connect("html-page-context", dedupe_scripts, priority=900)
    app.connect("build-finished", publish)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}


if __name__ == "__main__":  # quick report: python book/_ext/offline_assets.py
    print(json.dumps({f: _have(f) for f in (REQUIREJS, EMBED_AMD, MATHJAX, MATHJAX_FONT, PLOTLY)}, indent=2))
