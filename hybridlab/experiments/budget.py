"""Experiments of chapter 6, "Rank and query budget": the budget explorer, the wide layer, the upkeep phase diagram.

* :func:`budget_grid` trains the vision network once per grid point (rank ``r`` x ZO samples ``M``
  x surrogate upkeep) and records accuracy, the device's counters and the hardware time they cost;
* :func:`wide_layer_table` trains a network whose black box is wide, with every upkeep at the same
  number of upkeep queries per step;
* :func:`upkeep_phase_diagram` follows training-like trajectories of layers from 64 to 1024 inputs
  with each upkeep at several query budgets and reports which keeps the surrogate closest.

Every training run is one call of :func:`hybridlab.recipes.run`.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import recipes
from ..hardware import TIMINGS, hardware_seconds
from ._common import Grid, _progress
from .dlra import regression_trajectory, track

__all__ = ["BUDGET_UPKEEPS", "budget_grid", "budget_point", "upkeep_budget", "upkeep_phase_diagram",
           "wide_layer_table"]

#: the upkeeps the explorer compares: the reference, the free one, and none
BUDGET_UPKEEPS: tuple[str, ...] = ("ksl", "forward", "none")


def budget_point(rank: int, samples: int, upkeep: str, *, device: str = "mrr", seed: int = 0, data: Any = None,
                 quick: bool = False, **overrides: Any) -> dict[str, Any]:
    """Train the vision network at one point of the grid; the result of :func:`hybridlab.recipes.run` plus
    ``rank``, ``samples``, ``upkeep``, ``accuracy_pct`` and ``hardware_s`` (seconds per device kind)."""
    r = recipes.run("vision", device, "surrogate", seed=seed, data=data, quick=quick, rank=rank, samples=samples,
                    upkeep=upkeep, **overrides)
    r.update(rank=rank, samples=samples, upkeep=upkeep, accuracy_pct=100 * r["accuracy"],
             hardware_s={kind: hardware_seconds(r["queries"], r["reconfigurations"], kind) for kind in TIMINGS})
    return r


def budget_grid(ranks: Sequence[int] = (1, 4, 8, 16, 32, 64), samples: Sequence[int] = (1, 5, 20, 50),
                upkeeps: Sequence[str] = BUDGET_UPKEEPS, *, device: str = "mrr", seed: int = 0, data: Any = None,
                quick: bool = False, progress: bool = False, **overrides: Any) -> list[dict[str, Any]]:
    """:func:`budget_point` for every (rank, samples, upkeep); ``overrides`` (e.g. ``epochs``) apply to all.

    Returns:
        One result per point, in the order of ``itertools.product(ranks, samples, upkeeps)``.
    """
    if data is None:
        data = recipes.load_data("vision", quick=quick)
    points = list(itertools.product(ranks, samples, upkeeps))
    return [budget_point(r, m, u, device=device, seed=seed, data=data, quick=quick, **overrides)
            for r, m, u in _progress(points, len(points), progress, "grid")]


def upkeep_budget(upkeep: str, budget: int, d_in: int, rank: int) -> dict[str, Any]:
    """The settings that make ``upkeep`` spend about ``budget`` queries per step on a ``d_in``-wide layer.

    ``ksl``: ``2r + 2s = budget``; ``cached``: ``2r + s = budget``; ``rebuild``: a full re-read
    (``d_in`` queries) every ``round(d_in / budget)`` steps; ``forward`` and ``none``: no query
    (whatever the budget). Returns keyword arguments of the layer; raises ValueError when the
    budget cannot buy the upkeep (for example ``budget <= 2r`` for ``ksl``).
    """
    if upkeep == "ksl":
        sketch = budget // 2 - rank
    elif upkeep == "cached":
        sketch = budget - 2 * rank
    elif upkeep == "rebuild":
        return {"upkeep": "rebuild", "rebuild_every": max(1, round(d_in / budget))}
    else:
        return {"upkeep": upkeep}
    if sketch < 1:
        raise ValueError(f"a budget of {budget} queries per step cannot pay for the {upkeep} upkeep at rank {rank}")
    return {"upkeep": upkeep, "sketch": sketch}


def wide_layer_table(width: int = 512, devices: Sequence[str] = ("mrr",), seeds: Sequence[int] = (0,), *,
                     budget: int = 96, rank: int = 16, upkeeps: Sequence[str] = ("ksl", "cached", "rebuild", "forward",
                                                                              "none"),
                     data: Any = None, quick: bool = False, progress: bool = False,
                     **overrides: Any) -> list[dict[str, Any]]:
    """Train the vision network with a ``width x width`` black box, every upkeep at ``budget`` upkeep queries.

    Returns:
        Results of :func:`hybridlab.recipes.run`, seed by seed: digital first, then every (device,
        upkeep), each with ``upkeep`` and ``upkeep_settings`` added.
    """
    for device in devices:  # check every name and budget before the first (long) run
        recipes.settings("vision", device, "surrogate", quick=quick, width=width, rank=rank, **overrides)
    for upkeep in upkeeps:
        upkeep_budget(upkeep, budget, width, rank)
    if data is None:
        data = recipes.load_data("vision", quick=quick)
    results: list[dict[str, Any]] = []
    jobs = [(s, d, u) for s in seeds for d in [None, *devices] for u in ([None] if d is None else upkeeps)]
    for seed, device, upkeep in _progress(jobs, len(jobs), progress, "wide layer"):
        if device is None:
            r = recipes.run("vision", "ideal", "digital", seed=seed, data=data, quick=quick, width=width, **overrides)
            r.update(upkeep="—", upkeep_settings={})
        else:
            kw = upkeep_budget(upkeep, budget, width, rank)
            r = recipes.run("vision", device, "surrogate", seed=seed, data=data, quick=quick, width=width, rank=rank,
                            **kw, **overrides)
            r.update(upkeep=upkeep, upkeep_settings=kw)
        results.append(r)
    return results


def upkeep_phase_diagram(d_ins: Sequence[int] = (64, 128, 256, 512, 1024), budgets: Sequence[int] = (32, 64, 128),
                         *, rank: int = 8, steps: int = 40, batch: int = 64, seed: int = 0,
                         progress: bool = False) -> Grid:
    """Mean tracking ratio of each upkeep on layers of every width, at every query budget per step.

    For each ``d_in`` (square layers) one training-like trajectory
    (:func:`~hybridlab.experiments.dlra.regression_trajectory`, ideal device, batches of ``batch``
    inputs) is followed by the implicit KSL step (``2r + 2s = budget``), a periodic re-read at the same
    average cost, and the forward upkeep (no query at all, the same value at every budget).

    Returns:
        A :class:`Grid` with axes ``d_in``, ``budget``, ``upkeep`` (``ksl``, ``rebuild``, ``forward``)
        and the mean tracking ratio (1 is the best any rank-r surrogate can do); ``nan`` where the
        budget cannot buy the upkeep.
    """
    upkeeps = ("ksl", "rebuild", "forward")
    values = np.full((len(d_ins), len(budgets), len(upkeeps)), np.nan)
    jobs = list(itertools.product(range(len(d_ins)), range(len(budgets)), range(len(upkeeps))))
    trajectories: dict[int, Any] = {}
    for i, j, k in _progress(jobs, len(jobs), progress, "phase diagram"):
        d = int(d_ins[i])
        if d not in trajectories:
            trajectories = {d: regression_trajectory("ideal", d, d, rank=rank, steps=steps, batch=batch, seed=seed)}
        traj = trajectories[d]
        if upkeeps[k] == "forward" and j > 0:
            values[i, j, k] = values[i, 0, k]  # no query: the same at every budget
            continue
        try:
            kw = upkeep_budget(upkeeps[k], int(budgets[j]), d, rank)
        except ValueError:
            continue
        method = "rebuild" if upkeeps[k] == "rebuild" else "surrogate"
        if method == "rebuild":
            kw.pop("upkeep")
        res = track(traj, method, rank=rank, seed=seed, **kw)
        values[i, j, k] = float(np.mean(res.ratio))
    return Grid({"d_in": list(d_ins), "budget": list(budgets), "upkeep": list(upkeeps)}, values)
