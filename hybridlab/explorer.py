"""The budget explorer of chapter 6: rank and query budget against accuracy and hardware time.

:func:`budget_explorer_figure` draws precomputed grid points (:func:`hybridlab.experiments.budget_grid`)
as one plotly figure that works in the static book: two sliders choose the rank ``r`` and the ZO
samples ``M``; the left panel shows the validation curves of every upkeep at that point, the right
panel every grid point on the accuracy-versus-hardware-time plane, the Pareto front, and the
selected runs highlighted.

Two plotly sliders cannot read each other's value, so each sets a *different* trace attribute:
the rank slider sets ``visible`` and the samples slider sets ``opacity`` (and whether the trace
answers hover). A run is shown exactly when both agree, whatever the order in which the sliders
moved, with no code running in the page.

:func:`live_point` draws one freshly trained point for :func:`hybridlab.plots.interactive_figure`
(JupyterLab only). :func:`pareto_figure` draws every method's runs of chapter 10 on the same
plane, one panel per task and device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from .hardware import pareto_front
from .plots import METRIC_LABEL, PALETTE

__all__ = ["UPKEEP_COLORS", "budget_explorer_figure", "live_point", "pareto_figure"]

#: colour of each surrogate upkeep in the explorer's figures
UPKEEP_COLORS: dict[str, str] = {"ksl": "#636EFA", "forward": "#00CC96", "none": "#EF553B", "cached": "#AB63FA",
                                 "rebuild": "#FFA15A"}


def _pct(values: Sequence[float]) -> list[float]:
    return [100 * v for v in values]


def budget_explorer_figure(points: Sequence[dict[str, Any]], *, device: str | None = None,
                           rank: int | None = None, samples: int | None = None, height: int = 520):
    """The explorer: sliders for rank and samples, learning curves, and the accuracy-vs-hardware-time plane.

    Args:
        points: results of :func:`hybridlab.experiments.budget_point` (one per grid point).
        device: whose hardware time to plot (default: the device the runs trained on).
        rank, samples: the initially selected grid point (default: the middle values).
        height: figure height in pixels.

    Returns:
        A plotly figure. Trace order: one legend entry per upkeep, the grey cloud of all points, the
        Pareto front, then a (curve, highlight) pair per point in the order of ``points``.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not points:
        raise ValueError("no grid points to draw")
    device = device or points[0]["device"]
    ranks = sorted({p["rank"] for p in points})
    samples_ = sorted({p["samples"] for p in points})
    upkeeps = list(dict.fromkeys(p["upkeep"] for p in points))
    rank = ranks[len(ranks) // 2] if rank is None else rank
    samples = samples_[len(samples_) // 2] if samples is None else samples
    if rank not in ranks or samples not in samples_:
        raise ValueError(f"rank {rank} / samples {samples} is not a grid point (ranks {ranks}, samples {samples_})")
    time = [p["hardware_s"][device] for p in points]
    acc = [p["accuracy_pct"] for p in points]

    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.09,
                        subplot_titles=("validation accuracy during training", f"test accuracy vs hardware time "
                                                                                f"({device.upper()})"))
    for u in upkeeps:  # legend entries (always shown)
        fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines+markers", name=f"upkeep {u}",
                                 line={"color": UPKEEP_COLORS.get(u)}), 1, 1)
    labels = [f"r = {p['rank']}, M = {p['samples']}, {p['upkeep']}" for p in points]
    fig.add_trace(go.Scatter(x=time, y=acc, mode="markers", name="every grid point", text=labels,
                             marker={"color": "rgba(120,120,120,0.35)", "size": 7},
                             hovertemplate="%{text}<br>%{x:.3g} s<br>%{y:.2f} %<extra></extra>"), 1, 2)
    front = pareto_front(time, acc)
    fig.add_trace(go.Scatter(x=[time[i] for i in front], y=[acc[i] for i in front], mode="lines",
                             name="Pareto front", line={"color": "black", "dash": "dot", "shape": "hv"}), 1, 2)
    fixed = len(fig.data)
    for p, label in zip(points, labels):
        color = UPKEEP_COLORS.get(p["upkeep"])
        h = p["history"]
        fig.add_trace(go.Scatter(x=h["steps"], y=_pct(h["metric"]), mode="lines", line={"color": color},
                                 showlegend=False, name=label, hovertemplate=label + "<br>step %{x}: %{y:.1f} %"
                                                                               "<extra></extra>"), 1, 1)
        fig.add_trace(go.Scatter(x=[p["hardware_s"][device]], y=[p["accuracy_pct"]], mode="markers",
                                 showlegend=False, name=label,
                                 marker={"color": color, "size": 15, "line": {"color": "black", "width": 1}},
                                 hovertemplate=label + f"<br>{p['queries']:,} queries, {p['reconfigurations']:,} "
                                               "reconfigurations<br>%{x:.3g} s, %{y:.2f} %<extra></extra>"), 1, 2)

    n = len(fig.data)

    def per_trace(values_of_point: Callable[[dict[str, Any]], Any], fixed_value: Any) -> list[Any]:
        return [fixed_value] * fixed + [v for p in points for v in (values_of_point(p),) * 2]

    def visible(r: int) -> list[Any]:
        return per_trace(lambda p: p["rank"] == r, True)

    def shown(m: int) -> tuple[list[float], list[str]]:
        return (per_trace(lambda p: 1.0 if p["samples"] == m else 0.0, 1.0),
                per_trace(lambda p: "all" if p["samples"] == m else "skip", "all"))

    for i, v in enumerate(visible(rank)):
        fig.data[i].visible = v
    opacity, hover = shown(samples)
    for i in range(n):
        fig.data[i].opacity, fig.data[i].hoverinfo = opacity[i], hover[i]
    fig.update_layout(
        height=height, margin={"t": 70, "b": 110}, legend={"orientation": "h", "y": -0.42, "font": {"size": 12}},
        sliders=[
            {"active": ranks.index(rank), "currentvalue": {"prefix": "rank r = "}, "pad": {"t": 45}, "x": 0.0,
             "len": 0.46, "steps": [{"label": str(r), "method": "restyle", "args": [{"visible": visible(r)}]}
                                    for r in ranks]},
            {"active": samples_.index(samples), "currentvalue": {"prefix": "ZO samples M = "}, "pad": {"t": 45},
             "x": 0.54, "len": 0.46,
             "steps": [{"label": str(m), "method": "restyle",
                        "args": [dict(zip(("opacity", "hoverinfo"), shown(m)))]} for m in samples_]},
        ])
    fig.update_xaxes(title_text="optimizer step", row=1, col=1)
    fig.update_yaxes(title_text="validation accuracy (%)", row=1, col=1)
    fig.update_xaxes(title_text="hardware seconds (log)", type="log", row=1, col=2)
    fig.update_yaxes(title_text="test accuracy (%)", row=1, col=2)
    return fig


def live_point(train: Callable[..., dict[str, Any]], points: Sequence[dict[str, Any]], device: str | None = None
               ) -> Callable[..., None]:
    """A ``draw(rank, samples, upkeep)`` for :func:`hybridlab.plots.interactive_figure` that trains one point.

    ``train(rank=..., samples=..., upkeep=...)`` returns a :func:`hybridlab.experiments.budget_point`
    result; the drawing shows its validation curve and places it among the precomputed ``points``.
    """
    import matplotlib.pyplot as plt

    def draw(rank: int, samples: int, upkeep: str) -> None:
        p = train(rank=rank, samples=samples, upkeep=upkeep)
        dev = device or p["device"]
        fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6), layout="constrained")
        h = p["history"]
        left.plot(h["steps"], _pct(h["metric"]), color=UPKEEP_COLORS.get(upkeep))
        left.set(xlabel="optimizer step", ylabel="validation accuracy (%)",
                 title=f"r = {rank}, M = {samples}, upkeep {upkeep}")
        right.scatter([q["hardware_s"][dev] for q in points], [q["accuracy_pct"] for q in points], color="0.7",
                      label="precomputed grid")
        right.scatter([p["hardware_s"][dev]], [p["accuracy_pct"]], s=120, color=UPKEEP_COLORS.get(upkeep),
                      edgecolor="black", label="this run")
        right.set(xscale="log", xlabel=f"hardware seconds ({dev.upper()})", ylabel="test accuracy (%)")
        right.legend(fontsize=10)

    return draw


def pareto_figure(rows, *, title: str | None = None, height: int | None = None, cols: int = 2):
    """Test metric against hardware time, one panel per (task, device), with the Pareto front.

    Args:
        rows: rows of :func:`hybridlab.experiments.hardware_rows` (one per run; several seeds of a
            label are drawn as separate points).
        title: figure title.
        height: figure height in pixels (default: 330 per row of panels).
        cols: panels per row.

    Every method has one colour across panels (hover: label, hardware time, metric, counters); the
    front (the runs no other run beats at lower or equal cost) is a grey step line. The x axis is
    logarithmic: the methods differ by orders of magnitude in hardware time.
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    if not rows:
        raise ValueError("no runs to draw")
    panels = list(dict.fromkeys((r["task"], r["device"]) for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))
    color = {label: PALETTE[i % len(PALETTE)] for i, label in enumerate(labels)}
    n_rows = -(-len(panels) // cols)
    fig = make_subplots(rows=n_rows, cols=min(cols, len(panels)), subplot_titles=[f"{t} · {d}" for t, d in panels],
                        horizontal_spacing=0.1, vertical_spacing=0.16)
    for p, (task, device) in enumerate(panels):
        row, col = p // cols + 1, p % cols + 1
        mine = [r for r in rows if (r["task"], r["device"]) == (task, device)]
        metric = mine[0]["metric_name"]
        unit = "%" if metric == "accuracy" else "bits/char"
        front = sorted((r for r in mine if r["on_front"]), key=lambda r: r["hardware_s"])
        fig.add_trace(go.Scatter(x=[r["hardware_s"] for r in front], y=[r["metric"] for r in front],
                                 mode="lines", line=dict(color="lightgrey", width=6, shape="hv"), name="Pareto front",
                                 legendgroup="front", showlegend=p == 0, hoverinfo="skip"), row=row, col=col)
        for label in labels:
            runs = [r for r in mine if r["label"] == label]
            if not runs:
                continue
            fig.add_trace(go.Scatter(
                x=[r["hardware_s"] for r in runs], y=[r["metric"] for r in runs], mode="markers", name=label,
                legendgroup=label, showlegend=p == 0 or label not in {x["label"] for x in rows
                                                                      if (x["task"], x["device"]) in panels[:p]},
                marker=dict(color=color[label], size=10, symbol=["star" if r["on_front"] else "circle" for r in runs],
                            line=dict(color="black", width=0.5)),
                customdata=[[r["seed"], r["queries"], r["reconfigurations"]] for r in runs],
                hovertemplate=(f"{label}<br>%{{x:.3g}} s of device time<br>%{{y:.2f}} {unit}"
                               "<br>seed %{customdata[0]}: %{customdata[1]:,} queries, "
                               "%{customdata[2]:,} reconfigurations<extra></extra>")), row=row, col=col)
        fig.update_xaxes(type="log", title_text="hardware time (s)", exponentformat="power", row=row, col=col)
        fig.update_yaxes(title_text=METRIC_LABEL.get(metric, metric) if col == 1 else None, row=row, col=col)
    fig.update_layout(height=height or 330 * n_rows + 80, title=dict(text=title, x=0.01, xanchor="left") if title
                      else None, margin=dict(l=60, r=20, t=80 if title else 50, b=40), legend=dict(title="method"))
    return fig
