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
the HTML is emitted, and progress bars are switched off: a tqdm bar saved in a page would show
the build machine's timings, and its widget state is of no use to a reader.

Everything a plotly slider does must be precomputed (steps / frames): the book has no kernel.
ipywidgets render in the book from saved widget state (their values at execution time), so they
are for exploring in JupyterLab; interactive figures in the book are plotly sliders.
"""

from __future__ import annotations

import os

from .tables import TABLE_METADATA_KEY, html_table, markdown_table, show_source, show_table

__all__ = ["BOOK_RENDERER", "TABLE_METADATA_KEY", "budget_figure", "html_table", "interactive_figure",
           "learning_curves_figure", "markdown_table", "matrix_panel", "plain_log_ticks", "rank_slider_figure",
           "setup_matplotlib", "setup_notebook", "setup_plotly", "show", "show_source", "show_table",
           "silence_progress_bars", "slider_figure"]

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
    """Call once at the top of every chapter: plotly renderer + matplotlib style (+ no progress bars
    while the book is built)."""
    setup_plotly(plotly_template)
    setup_matplotlib(matplotlib_format)
    if os.environ.get(BOOK_BUILD_ENV) == "1":
        silence_progress_bars()


def silence_progress_bars() -> None:
    """Make ``tqdm.auto.tqdm`` (and ``tqdm.autonotebook.tqdm``) draw nothing in this process.

    Every progress bar of the package is created as ``from tqdm.auto import tqdm`` at call time, so
    this reaches all of them. In a kernel ``tqdm.auto`` is the notebook (widget) bar, which ignores
    the ``TQDM_DISABLE`` environment variable; the replacement is the same class with
    ``disable=True`` forced. Called by :func:`setup_notebook` during the book build.
    """
    import tqdm.auto
    import tqdm.autonotebook

    base = tqdm.std.tqdm

    class SilentTqdm(base):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)

    tqdm.auto.tqdm = tqdm.autonotebook.tqdm = SilentTqdm


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


# =============================================================================================
# Figure builders.  They only draw what they are given (numbers come from hybridlab.experiments
# or the chapters); plotly builders precompute every slider state, so the figures stay
# interactive in the static book.
# =============================================================================================

#: Colours used for curves, in order (plotly's default qualitative palette).
PALETTE = ("#636EFA", "#EF553B", "#00CC96", "#AB63FA", "#FFA15A", "#19D3F3", "#FF6692", "#B6E880",
           "#FF97FF", "#FECB52")


def _xy(data, x):
    """``(x, y)`` from ``y`` (uses the shared ``x``) or from an ``(x, y)`` pair."""
    if isinstance(data, tuple) and len(data) == 2:
        return list(data[0]), list(data[1])
    if x is None:
        raise ValueError("a curve was given as y values only, but slider_figure got no shared x")
    return list(x), list(data)


def slider_figure(x, curves_by_value, *, slider_label: str = "value", value_format: str = "{}",
                  static_curves=None, xaxis_title: str = "", yaxis_title: str = "", log_x: bool = False,
                  log_y: bool = False, title: str | None = None, active: int | None = None,
                  y_range=None, markers: bool = True, dashed=(), height: int = PLOTLY_HEIGHT):
    """A plotly line figure with a slider that switches between precomputed sets of curves.

    Args:
        x: shared x values (or ``None`` if every curve is given as an ``(x, y)`` pair).
        curves_by_value: ``{slider value: {curve name: y or (x, y)}}``; the same curve name gets
            the same colour at every slider value.
        slider_label: shown before the current value (``"M = 16"``).
        value_format: format of the slider labels, e.g. ``"{:g}"``.
        static_curves: ``{name: y or (x, y)}`` drawn at every slider value (dashed).
        xaxis_title, yaxis_title, title: labels.
        log_x, log_y: logarithmic axes.
        active: index of the initially selected value (default: the middle one).
        y_range: fixed y range (``[lo, hi]``; for a log axis give it in log10 units).
        markers: draw markers on the curves.
        dashed: names of curves (in ``curves_by_value``) to draw dashed without markers, e.g. a
            theoretical reference.
        height: figure height in pixels.

    Returns:
        A ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    values = list(curves_by_value)
    if not values:
        raise ValueError("curves_by_value is empty: give at least one slider value")
    active = len(values) // 2 if active is None else active
    static_curves = dict(static_curves or {})
    names = list(dict.fromkeys(n for v in values for n in curves_by_value[v]))
    color = {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(list(static_curves) + names)}
    mode = "lines+markers" if markers else "lines"
    dashed = set(dashed)
    fig = go.Figure()
    for name, data in static_curves.items():
        xs, ys = _xy(data, x)
        fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines",
                                 line=dict(color=color[name], dash="dash")))
    owner = []
    for i, v in enumerate(values):
        for name, data in curves_by_value[v].items():
            xs, ys = _xy(data, x)
            fig.add_trace(go.Scatter(x=xs, y=ys, name=name, mode="lines" if name in dashed else mode,
                                     visible=(i == active), legendgroup=name, marker=dict(size=6),
                                     line=dict(color=color[name], dash="dash" if name in dashed else None)))
            owner.append(i)
    n_static = len(static_curves)
    steps = [dict(method="restyle", label=value_format.format(v),
                  args=[{"visible": [True] * n_static + [o == i for o in owner]}]) for i, v in enumerate(values)]
    n_names = len(static_curves) + len(names)
    legend_rows = 1 + n_names // 3  # a horizontal legend wraps at about three entries in a book column
    top = 20 * legend_rows + (45 if title else 15)
    fig.update_layout(
        title=dict(text=title, y=0.99, yanchor="top", x=0.01, xanchor="left") if title else None,
        height=height + 20 * legend_rows, margin=dict(l=60, r=20, t=top, b=40),
        sliders=[dict(active=active, steps=steps, pad=dict(t=55), currentvalue=dict(prefix=f"{slider_label} = "))],
        legend=dict(orientation="h", yanchor="bottom", y=1.02, xanchor="left", x=0),
        xaxis_title=xaxis_title, yaxis_title=yaxis_title,
    )
    if log_x:
        fig.update_xaxes(type="log", exponentformat="power")
    if log_y:
        fig.update_yaxes(type="log", exponentformat="power")
    if y_range is not None:
        fig.update_yaxes(range=list(y_range))
    return fig


def _to_uint8(img, lo: float, hi: float):
    import numpy as np

    img = np.asarray(img, dtype=float)
    return np.clip(np.rint((img - lo) / max(hi - lo, 1e-300) * 255.0), 0, 255).astype(np.uint8)


def rank_slider_figure(original, approximations, ranks, errors, *, title: str | None = None,
                       active: int | None = None, error_label: str = "relative error",
                       height: int = 430):
    """Image of the rank-r approximation and its error, with a slider over r (all precomputed).

    Args:
        original: the matrix ``A`` (2-D array), shown as the slider's last position and used
            for the grey scale.
        approximations: ``{r: rank-r approximation (2-D array)}``, e.g. from
            :func:`hybridlab.experiments.rank_approximations`.
        ranks, errors: the error curve (``errors[i]`` at rank ``ranks[i]``) drawn on the right,
            e.g. :func:`hybridlab.experiments.rank_errors`; a marker shows the selected r.
        title: figure title.
        active: index of the initially selected rank (default: the middle one).
        height: figure height in pixels.

    Images are stored as 8-bit grey levels, so the figure stays small in the page.
    """
    import numpy as np
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    A = np.asarray(original, dtype=float)
    lo, hi = float(A.min()), float(A.max())
    rs = list(approximations)
    active = len(rs) // 2 if active is None else active
    err_at = dict(zip([int(r) for r in ranks], errors))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.58, 0.42], horizontal_spacing=0.1,
                        subplot_titles=("rank-r approximation", "error against rank"))
    fig.add_trace(go.Scatter(x=list(ranks), y=list(errors), mode="lines", name="Eckart–Young error",
                             line=dict(color=PALETTE[0])), row=1, col=2)
    labels = [*(str(r) for r in rs), "full"]
    images = [approximations[r] for r in rs] + [A]
    for i, img in enumerate(images):
        fig.add_trace(go.Heatmap(z=_to_uint8(img, lo, hi), colorscale="gray", zmin=0, zmax=255,
                                 showscale=False, visible=(i == active), hoverinfo="skip",
                                 name=f"r = {labels[i]}"), row=1, col=1)
    for i, r in enumerate(rs):
        e = err_at.get(int(r))
        fig.add_trace(go.Scatter(x=[r], y=[e], mode="markers", marker=dict(size=12, color=PALETTE[1]),
                                 name=f"r = {r}", showlegend=False, visible=(i == active)), row=1, col=2)
    n_img = len(images)
    steps = []
    for i, label in enumerate(labels):
        vis = [True] + [j == i for j in range(n_img)] + [j == i for j in range(len(rs))]
        steps.append(dict(method="restyle", label=label, args=[{"visible": vis}]))
    fig.update_layout(
        title=title, height=height, showlegend=False, margin=dict(l=30, r=20, t=70 if title else 40, b=30),
        sliders=[dict(active=active, steps=steps, pad=dict(t=40), currentvalue=dict(prefix="rank r = "))],
    )
    fig.update_xaxes(showticklabels=False, showgrid=False, zeroline=False, row=1, col=1)
    fig.update_yaxes(showticklabels=False, showgrid=False, zeroline=False, scaleanchor="x", autorange="reversed",
                     row=1, col=1)
    fig.update_xaxes(title_text="rank r", type="log", dtick=1, row=1, col=2)
    fig.update_yaxes(title_text=error_label, type="log", dtick=1, exponentformat="power", row=1, col=2)
    return fig


def matrix_panel(matrices, *, cmap: str = "RdBu_r", symmetric: bool = True, ncols: int | None = None,
                 size: float = 2.8, colorbar: bool = True, suptitle: str | None = None, max_width: float = 6.8):
    """Matplotlib figure showing several matrices side by side as images.

    Args:
        matrices: ``{title: 2-D array}``.
        cmap: colour map (a diverging one for signed entries).
        symmetric: colour limits ``[-m, m]`` with ``m`` the largest absolute entry of each matrix.
        ncols: number of columns (default: all in one row).
        size: size of one panel in inches (reduced so that the figure is at most ``max_width`` wide).
        colorbar: add a colour bar to every panel.
        suptitle: overall title.
        max_width: largest figure width in inches (the book's text column is about 6.8 in).
    """
    import matplotlib.pyplot as plt
    import numpy as np

    items = list(matrices.items())
    ncols = ncols or len(items)
    nrows = -(-len(items) // ncols)
    widen = 1.25 if colorbar else 1.0
    size = min(size, max_width / (ncols * widen))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols * widen, size * nrows + 0.3), squeeze=False)
    for ax, (name, M) in zip(axes.flat, items):
        M = np.asarray(M, dtype=float)
        kw = {}
        if symmetric:
            m = float(np.abs(M).max()) or 1.0
            kw = dict(vmin=-m, vmax=m)
        im = ax.imshow(M, cmap=cmap, interpolation="nearest", **kw)
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        if colorbar:
            fig.colorbar(im, ax=ax, shrink=0.8)
    for ax in list(axes.flat)[len(items):]:
        ax.axis("off")
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def interactive_figure(draw, controls, initial=None):
    """ipywidgets sliders that redraw a matplotlib figure (live in JupyterLab).

    Args:
        draw: ``draw(**values)`` draws one matplotlib figure for the selected values.
        controls: ``{name: sequence of values}``; each becomes a selection slider.
        initial: ``{name: initial value}`` (default: the middle value of each sequence).

    Returns:
        An ``ipywidgets.VBox`` with the sliders and the figure; display it (last line of a cell).
        Sliders act on release (``continuous_update=False``). In the static book a saved widget
        cannot recompute: use the precomputed plotly sliders there.
    """
    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    initial = dict(initial or {})
    sliders = {}
    for name, values in controls.items():
        options = list(values)
        if not options:
            raise ValueError(f"control {name!r} has no values")
        value = initial.get(name, options[len(options) // 2])
        if value not in options:
            raise ValueError(f"initial value {value!r} of {name!r} is not one of {options}")
        sliders[name] = widgets.SelectionSlider(
            options=options, value=value, description=name, continuous_update=False,
            style={"description_width": "initial"}, layout=widgets.Layout(width="70%"))
    out = widgets.Output()

    def render(change=None) -> None:
        # Draw, render the new figures to PNG and put them in the Output widget's state directly
        # (``outputs``), instead of capturing with ``with out:``: plain state updates are all a
        # front end (or a batch executor such as nbclient) has to handle.
        import io

        from IPython.display import Image

        before = set(plt.get_fignums())
        draw(**{n: s.value for n, s in sliders.items()})
        images = []
        for num in [n for n in plt.get_fignums() if n not in before]:
            fig = plt.figure(num)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=2 * fig.dpi)
            width = int(fig.get_figwidth() * fig.dpi)
            plt.close(fig)
            images.append(Image(data=buf.getvalue(), format="png", width=width))
        out.outputs = ()
        for image in images:
            out.append_display_data(image)

    for s in sliders.values():
        s.observe(render, names="value")
    render()
    return widgets.VBox([*sliders.values(), out])


def plain_log_ticks(ax, axis: str = "both") -> None:
    """Label the ticks of logarithmic matplotlib axes as plain numbers (``0.5``, ``200``).

    Matplotlib writes ``6 x 10^0`` on log axes that span little more than a decade; plain numbers
    are easier to read. Minor ticks get a label only at 2 and 5 times a power of ten, and only
    when the axis spans less than two decades.
    """
    import math

    from matplotlib.ticker import FuncFormatter

    def minor(v, _):
        if v <= 0:
            return ""
        lead = round(v / 10 ** math.floor(math.log10(v) + 1e-12), 6)
        return f"{v:g}" if lead in (2.0, 5.0) else ""

    axes = {"x": [ax.xaxis], "y": [ax.yaxis], "both": [ax.xaxis, ax.yaxis]}[axis]
    for a in axes:
        if a.get_scale() != "log":
            continue
        a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        a.set_minor_formatter(FuncFormatter(minor) if _decades(a) < 2 else FuncFormatter(lambda v, _: ""))


def _decades(axis) -> float:
    import math

    lo, hi = axis.get_view_interval()
    if lo <= 0 or hi <= 0:
        return math.inf
    return math.log10(hi / lo)


# =============================================================================================
# chapters 7-9: every device kind against the digital network
# =============================================================================================
#: dash style of each training method in the figures of chapters 7-9
METHOD_DASH = {"surrogate": "solid", "static": "dot", "rebuild": "dashdot", "zo_only": "longdash",
               "oracle": "dash", "twin": "longdashdot", "fa": "dash", "dfa": "dash"}
#: axis titles of the metrics of :func:`hybridlab.cli.run` results
METRIC_LABEL = {"accuracy": "test accuracy (%)", "bits_per_char": "validation bits per character"}


def _device_colors(keys) -> dict:
    devices = list(dict.fromkeys(d for m, d in keys if m != "digital"))
    return {d: PALETTE[i % len(PALETTE)] for i, d in enumerate(devices)}


def learning_curves_figure(results, *, x: str = "steps", average: bool = True, title: str | None = None,
                           height: int = PLOTLY_HEIGHT):
    """Learning curves of :func:`hybridlab.cli.run` results: the metric at every evaluation.

    One trace per run kind (digital, and each method on each device): colour = device, dash =
    method (:data:`METHOD_DASH`), digital in black, dashed.

    Args:
        results: result dictionaries (e.g. :func:`hybridlab.experiments.compare_devices`), one task.
        x: ``"steps"`` (optimizer steps) or ``"queries"`` (device queries so far, log axis; the
            digital network, which makes none, is left out).
        average: the mean over the seeds of each run kind (their histories must share the
            evaluation steps); ``False``: the first seed only.
        title: figure title.
        height: figure height in pixels.
    """
    import numpy as np
    import plotly.graph_objects as go

    if x not in ("steps", "queries"):
        raise ValueError(f"x must be 'steps' or 'queries', got {x!r}")
    if not results:
        raise ValueError("no results to draw")
    metric = results[0]["metric"]
    scale = 100.0 if metric == "accuracy" else 1.0
    groups: dict = {}
    for r in results:
        key = ("digital", None) if r["method"] == "digital" else (r["method"], r["device"])
        groups.setdefault(key, []).append(r)
    color = _device_colors(groups)
    fig = go.Figure()
    for (method, device), runs in groups.items():
        if x == "queries" and method == "digital":
            continue
        runs = runs if average else runs[:1]
        steps = [list(r["history"]["steps"]) for r in runs]
        if any(s != steps[0] for s in steps):
            raise ValueError(f"{method} {device or ''}: the seeds were evaluated at different steps; "
                             f"use average=False")
        y = np.mean([np.asarray(r["history"]["metric"], dtype=float) * scale for r in runs], axis=0)
        xs = steps[0] if x == "steps" else np.mean([r["history"]["queries"] for r in runs], axis=0).tolist()
        name = "digital" if device is None else f"{method} · {device}"
        seeds = f"mean of {len(runs)} seeds" if len(runs) > 1 else f"seed {runs[0]['seed']}"
        line = dict(color="black", dash="dash") if device is None else dict(color=color[device],
                                                                              dash=METHOD_DASH.get(method, "dash"))
        fig.add_trace(go.Scatter(x=list(xs), y=y.tolist(), name=name, mode="lines+markers", line=line,
                                 marker=dict(size=5),
                                 hovertemplate=f"{name} ({seeds})<br>%{{x:,}} {x}<br>%{{y:.3f}}<extra></extra>"))
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left") if title else None, height=height,
        margin=dict(l=60, r=20, t=60 if title else 30, b=40),
        xaxis_title="optimizer step" if x == "steps" else "device queries so far (log)",
        yaxis_title=METRIC_LABEL.get(metric, metric),
        legend=dict(title="method · device"),
    )
    if x == "queries":
        fig.update_xaxes(type="log", exponentformat="power")
    return fig


def budget_figure(rows, *, title: str | None = None, height: int = 380):
    """Device queries and reconfigurations of one run, per method and device (two bar panels).

    Args:
        rows: rows of :func:`hybridlab.experiments.comparison_rows` (the digital row, which spends
            nothing, is left out).
        title: figure title.
        height: figure height in pixels.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    rows = [r for r in rows if r["method"] != "digital"]
    if not rows:
        raise ValueError("no device rows to draw (only digital?)")
    methods = list(dict.fromkeys(r["method"] for r in rows))
    devices = list(dict.fromkeys(r["device"] for r in rows))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("queries per run", "reconfigurations per run"),
                        horizontal_spacing=0.12)
    for i, method in enumerate(methods):
        mine = {r["device"]: r for r in rows if r["method"] == method}
        for col, key in ((1, "queries"), (2, "reconfigurations")):
            fig.add_trace(go.Bar(x=[d for d in devices if d in mine], y=[mine[d][key] for d in devices if d in mine],
                                 name=method, legendgroup=method, showlegend=col == 1,
                                 marker_color=PALETTE[i % len(PALETTE)],
                                 hovertemplate=f"{method} · %{{x}}<br>%{{y:,.0f}} {key}<extra></extra>"),
                          row=1, col=col)
    fig.update_layout(barmode="group", height=height, title=dict(text=title, x=0.01, xanchor="left") if title else None,
                      margin=dict(l=60, r=20, t=70 if title else 40, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=-0.25, xanchor="left", x=0))
    fig.update_yaxes(exponentformat="SI", row=1, col=1)
    fig.update_yaxes(exponentformat="SI", row=1, col=2)
    return fig
