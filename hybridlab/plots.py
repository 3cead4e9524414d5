"""Figures for the book: display set-up for notebooks (plotly, matplotlib) and figure builders.

Every chapter starts with::

    from hybridlab.plots import setup_notebook
    setup_notebook()

after which ``fig.show()`` (or :func:`show`) on a plotly figure works both in the built book and
in JupyterLab, and matplotlib figures share one style.

Why a custom plotly renderer: plotly >= 6 defaults to the ``application/vnd.plotly.v1+json`` mime
type only, which JupyterLab renders (plotly ships a JupyterLab extension) but the static book
cannot (myst-nb drops it).  The ``"book"`` renderer emits *both* in one output:

* the plotly mime bundle -- chosen by JupyterLab / VS Code (their plotly renderer ranks first);
* ``text/html`` with ``include_plotlyjs=False`` -- chosen by the book, where one shared
  ``plotly.min.js`` per page is added by ``book/_ext/offline_assets.py`` (a local copy,
  or the CDN when it was not vendored).  No MathJax is injected (the page has its own).

During the book build (environment variable ``HYBRIDLAB_BOOK_BUILD=1``, set by the build) only
the HTML is emitted.

Everything a plotly slider does must be precomputed (steps / frames): the book has no kernel.
ipywidgets render in the book from saved widget state (their values at execution time), so they
are for exploring in JupyterLab; interactive figures in the book are plotly sliders.
"""

from __future__ import annotations

import os

#: Renderer used in JupyterLab & co: the plotly mime bundle (for JupyterLab) + HTML (for the book).
BOOK_RENDERER = "plotly_mimetype+book_html"
#: Set (to "1") by the book build (book/_ext/offline_assets.py) and inherited by the kernels it
#: starts: the output then carries only the HTML, since the book cannot use the plotly mime type
#: (myst-nb would warn about it).  A figure shown *without* setup_notebook() still warns: good.
BOOK_BUILD_ENV = "HYBRIDLAB_BOOK_BUILD"

#: Plotly figure config used in the book (no logo, responsive width).
PLOTLY_CONFIG = {"responsive": True, "displaylogo": False}
#: Default plotly height in pixels (width follows the page).
PLOTLY_HEIGHT = 480

#: Matplotlib style shared by all chapters.
MPL_STYLE = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 100,
    "figure.autolayout": False,
    "figure.constrained_layout.use": True,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": "medium",
    "axes.labelsize": "medium",
    "legend.frameon": False,
    "font.size": 11,
    "lines.linewidth": 1.8,
    "image.cmap": "viridis",
    "savefig.bbox": "tight",
}


def _register_plotly_renderer() -> None:
    import plotly.io as pio
    from plotly.io.base_renderers import MimetypeRenderer

    if "book_html" in pio.renderers:
        return

    class BookHtmlRenderer(MimetypeRenderer):
        """text/html without plotly.js or MathJax: the book page provides plotly.js."""

        def to_mimebundle(self, fig_dict):
            html = pio.to_html(
                fig_dict,
                config=PLOTLY_CONFIG,
                auto_play=False,
                include_plotlyjs=False,
                include_mathjax=False,
                full_html=False,
                default_width="100%",
                default_height=PLOTLY_HEIGHT,
                validate=False,
            )
            return {"text/html": html}

    pio.renderers["book_html"] = BookHtmlRenderer()


def _renderer() -> str:
    return "book_html" if os.environ.get(BOOK_BUILD_ENV) == "1" else BOOK_RENDERER


def setup_plotly(template: str = "plotly_white") -> None:
    """Make ``fig.show()`` emit the plotly mime bundle + book-ready HTML; set the template."""
    import plotly.io as pio

    _register_plotly_renderer()
    pio.renderers.default = _renderer()
    pio.templates.default = template


def setup_matplotlib(fmt: str = "retina") -> None:
    """Apply :data:`MPL_STYLE`; inline figures as ``fmt`` ('retina' PNG, 'svg', 'png')."""
    import matplotlib as mpl

    mpl.rcParams.update(MPL_STYLE)
    try:
        from IPython import get_ipython
        from matplotlib_inline.backend_inline import set_matplotlib_formats
    except ImportError:  # plain Python: only the style
        return
    if get_ipython() is not None:
        set_matplotlib_formats(fmt)


def setup_notebook(matplotlib_format: str = "retina", plotly_template: str = "plotly_white") -> None:
    """Call once at the top of every chapter: plotly renderer + matplotlib style."""
    setup_plotly(plotly_template)
    setup_matplotlib(matplotlib_format)


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"


def show(fig, **kwargs) -> None:
    """Show a plotly figure with the book renderer (in a plain script: plotly's default)."""
    if _in_kernel():
        _register_plotly_renderer()
        fig.show(renderer=_renderer(), **kwargs)
    else:
        fig.show(**kwargs)
