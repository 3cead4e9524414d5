"""Experiments of chapter 10, "Real-world effects": imperfect devices in training, every method at equal
hardware time, and a device served by another process.

* :data:`EFFECTS`, :func:`effect_variants` -- one typical strength per non-ideality (chapter 2), and
  the runs of one effect at a time and of all together that a device kind models;
* :func:`train_many` -- many calls of :func:`hybridlab.recipes.run`, here or in worker processes;
  :func:`summary_rows` -- mean and spread over seeds per (task, device, label), gap to a reference;
* :func:`zo_step_study`, :func:`smallest_good_step` -- the cosine between the zero-order estimate
  and the exact gradient of the task's black box on *validation* batches, against the step ``mu``,
  for several read-out noise levels: the measurement behind :func:`hybridlab.recipes.recommended_mu`;
* :func:`upkeep_variants` -- with drift: the static surrogate against each upkeep;
* :func:`comparison_methods`, :func:`hardware_rows`, :func:`equal_time_rows`, :func:`front_verdict` --
  every black-box method at equal hardware time (:mod:`hybridlab.hardware`), its Pareto front and
  whether the surrogate method is on it, with the reason;
* :func:`served_comparison`, :func:`killed_and_resumed` -- training against a device served by
  another process with injected faults, and a training process killed and resumed from its
  checkpoint.

Every training run is one call of :func:`hybridlab.recipes.run` with the committed defaults (plus the
overrides a chapter cell names), so ``python -m hybridlab train`` repeats it.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import recipes
from ..data import TextCorpus
from ..data.bundle import validation_split
from ..devices import DEVICES, make_device
from ..hardware import Timing, hardware_seconds, pareto_front
from ..layer import METHODS, UPKEEPS
from ..models import DEFAULT_BLACK_BOX, MODEL_DEFAULTS, build_model
from ..remote import Faults, RetryPolicy, start_server
from ..zo import zo_gradient
from ._common import DTYPE, Grid, _generator, _progress
from .tasks import metric_scale
from .zero_order import cosine, oracle_gradient

__all__ = ["EFFECTS", "TOGETHER", "comparison_methods", "effect_variants", "equal_time_rows", "front_verdict",
           "hardware_rows", "killed_and_resumed", "method_description", "plan", "same_numbers", "served_comparison",
           "smallest_good_step", "summary_rows", "train_many", "upkeep_variants", "zo_step_study"]

#: One typical strength per non-ideality (chapter 2's units): relative read-out noise, phase bits,
#: neighbour coupling, fabrication spread, drift per device update (radians).
EFFECTS: dict[str, dict[str, Any]] = {
    "read-out noise": {"noise": 0.01},
    "8-bit phases": {"bits": 8},
    "4-bit phases": {"bits": 4},
    "2-bit phases": {"bits": 2},
    "crosstalk": {"crosstalk": 0.05},
    "fabrication error": {"fab_error": 0.05},
    "drift": {"drift": 1e-3},
}
#: The effects switched on together (each device kind gets those it models).
TOGETHER: tuple[str, ...] = ("read-out noise", "8-bit phases", "crosstalk", "fabrication error", "drift")

Variant = tuple[dict[str, Any], dict[str, Any]]  # (device physics, setting overrides)


# =============================================================================================
# running many trainings
# =============================================================================================
def effect_variants(device: str, effects: Mapping[str, Mapping[str, Any]] = EFFECTS,
                    together: Sequence[str] = TOGETHER, *, reference: str = "none") -> dict[str, Variant]:
    """``{label: (physics, overrides)}``: the ideal device (``reference``), each effect the device kind
    models, and ``"together"`` (every effect of ``together`` it models). Settings are the defaults
    (with read-out noise, :func:`hybridlab.recipes.recommended_mu` sets ``mu``)."""
    supported = set(DEVICES[device].supported)
    out: dict[str, Variant] = {reference: ({}, {})}
    for label, physics in effects.items():
        if set(physics) <= supported:
            out[label] = (dict(physics), {})
    both: dict[str, Any] = {}
    for label in together:
        if set(effects[label]) <= supported:
            both.update(effects[label])
    if both:
        out["together"] = (both, {})
    return out


def upkeep_variants(drift: float, upkeeps: Sequence[str] = UPKEEPS) -> dict[str, Variant]:
    """``{label: (physics, overrides)}`` for the drift table: every upkeep of the surrogate method;
    upkeep ``none`` is the static surrogate (labelled so)."""
    for u in upkeeps:
        if u not in UPKEEPS:
            raise ValueError(f"unknown upkeep {u!r}; choose from {', '.join(UPKEEPS)}")
    return {("static (none)" if u == "none" else u): ({"drift": float(drift)}, {"upkeep": u}) for u in upkeeps}


def _job(task: str, device: str, method: str, seed: int, label: str, variant: Variant, options: Mapping[str, Any]
         ) -> dict[str, Any]:
    physics, overrides = variant
    return {"task": task, "device": device, "method": method, "seed": seed, "label": label,
            "device_options": dict(physics), **options, **overrides}


def _settings_of(task: str, keys: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``keys`` that are settings of ``task`` (:func:`hybridlab.recipes.settings`)."""
    names = recipes.settings(task, quick=True)
    return {k: v for k, v in keys.items() if k in names}


def plan(task: str, devices: Sequence[str], variants: Mapping[str, Variant] | Callable[[str], Mapping[str, Variant]],
         seeds: Sequence[int], *, method: str = "surrogate", **options: Any) -> list[dict[str, Any]]:
    """Jobs for :func:`train_many`: every device x variant x seed, in that order.

    ``variants`` is ``{label: (physics, overrides)}`` for every device, or a function of the device
    kind that returns them (e.g. :func:`effect_variants`); an override ``method`` replaces
    ``method``. ``options`` are further keyword arguments of :func:`hybridlab.recipes.run` for every
    job (``quick``, setting overrides such as ``epochs``). Every name and setting is checked here,
    before any training.
    """
    jobs = []
    for device in devices:
        mine = variants(device) if callable(variants) else variants
        for label, (physics, overrides) in mine.items():
            overrides = dict(overrides)
            method_here = overrides.pop("method", method)
            recipes.settings(task, device, method_here, quick=options.get("quick", False), device_options=physics,
                             **_settings_of(task, {**options, **overrides}))
            for seed in seeds:
                jobs.append(_job(task, device, method_here, int(seed), label, (physics, overrides), options))
    return jobs


_WORKER_DATA: dict[str, Any] = {}


def _worker_init(data: Mapping[str, Any]) -> None:
    torch.set_num_threads(1)
    _WORKER_DATA.update(data)


def _run_job(job: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> dict[str, Any]:
    job = dict(job)
    label = job.pop("label", None)
    given = data if data is not None else _WORKER_DATA
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", recipes.SettingWarning)
        result = recipes.run(data=given.get(job["task"]), **job)
    result["label"] = label
    result["warnings"] = [str(w.message) for w in caught if issubclass(w.category, recipes.SettingWarning)]
    for w in caught:  # any other warning goes on as it came
        if not issubclass(w.category, recipes.SettingWarning):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return result


def train_many(jobs: Sequence[Mapping[str, Any]], *, data: Mapping[str, Any] | None = None, workers: int = 1,
               progress: bool = False) -> list[dict[str, Any]]:
    """``recipes.run(**job)`` for every job, results in job order, each with the job's ``label`` and the
    messages of the :class:`hybridlab.recipes.SettingWarning` s the run raised (``warnings``: a list,
    here and in worker processes alike, instead of a warning per run).

    Args:
        jobs: keyword arguments of :func:`hybridlab.recipes.run` (``task``, ``device``, ``method``,
            ``seed``, ...) plus an optional ``label`` copied into the result.
        data: ``{task: dataset}`` already loaded (shared by every run of that task); a task not in
            it is loaded by each run.
        workers: ``1`` runs here, one after the other; ``n > 1`` runs ``n`` at a time in spawned worker
            processes with one PyTorch thread each (repeat such a run with ``--threads 1``).
        progress: a tqdm bar over the jobs.
    """
    jobs = [dict(j) for j in jobs]
    data = dict(data or {})
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    if int(workers) == 1 or len(jobs) < 2:
        return [_run_job(j, data) for j in _progress(jobs, len(jobs), progress, "runs")]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
    with ProcessPoolExecutor(int(workers), mp_context=context, initializer=_worker_init, initargs=(data,)) as pool:
        # the longest jobs first, so that the workers end together (a quick guess: epochs x samples)
        order = sorted(range(len(jobs)), key=lambda i: -_cost_guess(jobs[i]))
        futures = {i: pool.submit(_run_job, jobs[i]) for i in order}
        results = [None] * len(jobs)
        for i in _progress(order, len(order), progress, "runs"):
            results[i] = futures[i].result()
    return results


def _cost_guess(job: Mapping[str, Any]) -> float:
    cfg = recipes.settings(job["task"], job["device"], job["method"], quick=job.get("quick", False),
                           **_settings_of(job["task"], job))
    work = cfg.get("epochs", cfg.get("steps", 1)) * (1 + cfg["samples"] * (job["method"] != "digital"))
    return work * (3 if job["method"] == "zo_only" else 1) * (2 if job["task"] == "audio" else 1)


# =============================================================================================
# tables
# =============================================================================================
def summary_rows(results: Sequence[Mapping[str, Any]], reference: str | None = "none",
                 timings: Mapping[str, Timing] | None = None) -> list[dict[str, Any]]:
    """One row per (task, device, label), in order of first appearance, with mean and spread over seeds.

    Returns:
        Rows ``{"task", "device", "label", "method", "seeds", "values", "mean", "std", "val_mean",
        "gap", "queries", "reconfigurations", "hardware_s", "mu", "best_step", "steps"}``: the metric
        in table units (accuracy in %, bits per character), ``gap`` the mean per-seed difference to
        the ``reference`` label of the same task and device (``None`` without one), counters and
        hardware seconds (:func:`hybridlab.hardware.hardware_seconds`, ``timings`` or the defaults)
        as means over the seeds, ``mu`` the zero-order step the runs used, ``best_step`` (mean) the
        step whose state was kept and ``steps`` the optimizer steps of a run.
    """
    if not results:
        raise ValueError("no results to summarise")
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in results:
        groups.setdefault((r["task"], r["device"], r.get("label") or r["method"]), []).append(r)
    rows = []
    for (task, device, label), runs in groups.items():
        metric = runs[0]["metric"]
        scale = metric_scale(metric)
        values = np.array([r[metric] * scale for r in runs])
        by_seed = {r["seed"]: r[metric] * scale for r in runs}
        gap = None
        ref = groups.get((task, device, reference)) if reference is not None else None
        if ref is not None:
            ref_by_seed = {r["seed"]: r[metric] * scale for r in ref}
            common = sorted(set(by_seed) & set(ref_by_seed))
            if common:
                gap = float(np.mean([by_seed[s] - ref_by_seed[s] for s in common]))
        rows.append({
            "task": task, "device": device, "label": label, "method": runs[0]["method"], "seeds": len(runs),
            "values": values.tolist(), "mean": float(values.mean()), "std": float(values.std()),
            "val_mean": float(np.mean([r[f"val_{metric}"] * scale for r in runs])), "gap": gap,
            "queries": float(np.mean([r["queries"] for r in runs])),
            "reconfigurations": float(np.mean([r["reconfigurations"] for r in runs])),
            "hardware_s": float(np.mean([_seconds(r, timings) for r in runs])),
            "mu": runs[0]["settings"]["mu"],
            "best_step": float(np.mean([r["history"]["best_step"] or 0 for r in runs])),
            "steps": float(np.mean([r["history"]["steps"][-1] for r in runs])),
        })
    return rows


def _seconds(result: Mapping[str, Any], timings: Mapping[str, Timing] | None, queries: float | None = None,
             reconfigurations: float | None = None) -> float:
    if result["method"] == "digital":
        return 0.0
    q = result["queries"] if queries is None else queries
    c = result["reconfigurations"] if reconfigurations is None else reconfigurations
    return hardware_seconds(q, c, result["device"], timings)


# =============================================================================================
# how mu must follow the read-out noise
# =============================================================================================
def _validation_batch(task: str, data: Any, cfg: Mapping[str, Any], batch: int, data_seed: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of one batch of the recipe's validation part (never the test split)."""
    if isinstance(data, TextCorpus):
        cut = round(len(data.train) * (1 - cfg["val_fraction"]))
        model_block = int(cfg["block_size"])
        val = data.train[cut:]
        g = _generator(data_seed + 1)
        starts = torch.randint(len(val) - model_block - 1, (batch,), generator=g)
        x = torch.stack([val[i:i + model_block] for i in starts])
        y = torch.stack([val[i + 1:i + 1 + model_block] for i in starts])
        return x, y
    _, fit = validation_split(data, cfg["val_fraction"], seed=data_seed)
    return fit.X_test[:batch], fit.y_test[:batch]


def zo_step_study(task: str, data: Any, devices: Sequence[str] = ("slm", "mrr", "mzi"),
                  noises: Sequence[float] = (0.0, 0.003, 0.01, 0.03, 0.1),
                  mus: Sequence[float] = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3), *, trials: int = 6,
                  samples: int | None = None, batch: int | None = None, seed: int = 0, data_seed: int = 0,
                  progress: bool = False) -> Grid:
    """Cosine between the zero-order estimate of ``dL/dw`` and the exact one, for the task's black box.

    The network of the task (:func:`hybridlab.models.build_model`, seed ``seed``) reads one batch of
    the recipe's *validation* part (``batch`` examples, default the task's batch size); hooks
    record the inputs ``X`` of the black-box Linear and the upstream error ``V = dL/dy``. For each
    device kind of that size (seeded, at its initial parameters, each noise level a device of its
    own) the estimate of :func:`hybridlab.zo.zo_gradient` with ``samples`` directions (default the
    task's ``M``; its compressed batch where the task uses it) is compared with the simulator's exact gradient
    (:func:`~hybridlab.experiments.oracle_gradient`), ``trials`` times.

    Returns:
        A :class:`Grid` with axes ``device, noise, mu, trial`` and the cosines.
    """
    cfg = recipes.settings(task)
    batch = int(batch or cfg["batch_size"])
    samples = int(samples or cfg["samples"])
    model = build_model(task, data, seed=seed, **{k: cfg[k] for k in MODEL_DEFAULTS[task]}).to(DTYPE)
    layer = model.get_submodule(DEFAULT_BLACK_BOX[task])
    x, y = _validation_batch(task, data, cfg, batch, data_seed)
    seen: dict[str, torch.Tensor] = {}

    def keep(module, args, output):
        seen["x"] = args[0].detach()
        output.retain_grad()
        seen["y"] = output
        return output

    hook = layer.register_forward_hook(keep)
    try:
        logits = model(x.to(DTYPE) if x.is_floating_point() else x)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss.backward()
    finally:
        hook.remove()
    X = seen["x"].reshape(-1, layer.in_features)
    V = seen["y"].grad.reshape(-1, layer.out_features).detach()
    values = np.zeros((len(devices), len(noises), len(mus), trials))
    combos = [(i, j) for i in range(len(devices)) for j in range(len(noises))]
    for i, j in _progress(combos, len(combos), progress, "ZO step study"):
        dev = make_device(devices[i], layer.in_features, layer.out_features, seed=seed, dtype=DTYPE,
                          **({"noise": float(noises[j])} if noises[j] else {}))
        w = dev.init_params()
        dev.configure(w)
        exact = oracle_gradient(dev, w, X, V)
        for k, mu in enumerate(mus):
            g = _generator(1000 * seed + 17 * k + j)
            for t in range(trials):
                est = zo_gradient(dev.query_batch, w, X, V, samples=samples, mu=float(mu),
                                  compressed=bool(cfg["compressed"]), generator=g)
                values[i, j, k, t] = cosine(est, exact)
    return Grid({"device": list(devices), "noise": [float(n) for n in noises], "mu": [float(m) for m in mus],
                 "trial": list(range(trials))}, values)


def smallest_good_step(grid: Grid, fraction: float = 0.9) -> dict[tuple[str, float], float | None]:
    """For each (device, noise) of :func:`zo_step_study`, the smallest ``mu`` whose mean cosine reaches
    ``fraction`` of the best mean cosine without noise (that device, any ``mu``); ``None`` if none does."""
    mean = grid.values.mean(axis=-1)
    zero = grid.index("noise", 0.0) if 0.0 in grid.axes["noise"] else None
    if zero is None:
        raise ValueError("the study needs the noise level 0 as its reference")
    out: dict[tuple[str, float], float | None] = {}
    for i, device in enumerate(grid.axes["device"]):
        target = fraction * mean[i, zero].max()
        for j, noise in enumerate(grid.axes["noise"]):
            good = [mu for k, mu in enumerate(grid.axes["mu"]) if mean[i, j, k] >= target]
            out[(device, noise)] = min(good) if good else None
    return out


# =============================================================================================
# every method at equal hardware time
# =============================================================================================
_DESCRIPTIONS = {
    "surrogate": "the method: low-rank surrogate kept current, ZO estimate for the device",
    "static": "surrogate fitted once, never updated (upkeep none)",
    "rebuild": "full re-read of the matrix every k steps",
    "frozen": "device never trained: only the digital layers learn",
    "zo_only": "ZO estimates for dL/dx too (no surrogate)",
    "twin": "digital twin: autograd through a nominal model of the device",
    "fa": "feedback alignment: a fixed random matrix in place of A^T",
    "dfa": "direct feedback alignment: the output error through a fixed random matrix",
    "oracle": "autograd through the simulator (impossible on hardware)",
}


def method_description(method: str) -> str:
    """One line on what ``method`` (a name of :data:`hybridlab.layer.METHODS`) does."""
    base = method.split(" (")[0]
    return _DESCRIPTIONS.get(base, base)


def comparison_methods(upkeeps: Sequence[str] = ("ksl", "cached", "forward")) -> dict[str, Variant]:
    """``{label: (physics, overrides)}`` of every black-box method of :data:`hybridlab.layer.METHODS`:
    the surrogate method with each upkeep in ``upkeeps`` (labelled ``"surrogate (ksl)"``, ...), then
    every other method but the oracle (which needs the simulator) in the order of ``METHODS``.

    ``overrides`` carry the ``method``; physics are empty (give them to :func:`plan` per call)."""
    out: dict[str, Variant] = {f"surrogate ({u})": ({}, {"method": "surrogate", "upkeep": u}) for u in upkeeps}
    for m in METHODS:
        if m not in ("oracle", "surrogate"):
            out[m] = ({}, {"method": m})
    return out


def hardware_rows(results: Sequence[Mapping[str, Any]], timings: Mapping[str, Timing] | None = None
                  ) -> list[dict[str, Any]]:
    """One row per run: label, metric (table units), hardware seconds, the validation curve against
    hardware time, and whether the run is on the Pareto front of its (task, device).

    Returns:
        Rows ``{"task", "device", "label", "method", "seed", "metric", "val", "queries",
        "reconfigurations", "hardware_s", "curve_s", "curve_val", "on_front"}``; ``curve_s`` and
        ``curve_val`` are the hardware seconds spent and the validation metric at every evaluation
        (the state a run could have stopped with at that cost). The front
        (:func:`hybridlab.hardware.pareto_front`) is over the test metric against total hardware time
        of the runs of one (task, device); for bits per character lower is better.
    """
    rows = []
    for r in results:
        metric = r["metric"]
        scale = metric_scale(metric)
        h = r["history"]
        rows.append({
            "task": r["task"], "device": r["device"], "label": r.get("label") or r["method"], "method": r["method"],
            "seed": r["seed"], "metric": r[metric] * scale, "val": r[f"val_{metric}"] * scale,
            "metric_name": metric, "queries": r["queries"], "reconfigurations": r["reconfigurations"],
            "hardware_s": _seconds(r, timings),
            "curve_s": [_seconds(r, timings, q, c) for q, c in zip(h["queries"], h["reconfigurations"])],
            "curve_val": [v * scale for v in h["metric"]], "on_front": False,
        })
    for key in dict.fromkeys((row["task"], row["device"]) for row in rows):
        mine = [row for row in rows if (row["task"], row["device"]) == key]
        sign = 1.0 if mine[0]["metric_name"] == "accuracy" else -1.0
        for i in pareto_front([row["hardware_s"] for row in mine], [sign * row["metric"] for row in mine]):
            mine[i]["on_front"] = True
    return rows


def equal_time_rows(rows: Sequence[Mapping[str, Any]], reference: str = "surrogate (ksl)") -> list[dict[str, Any]]:
    """What each method reaches with the hardware time of ``reference``, per (task, device).

    From the validation curves of :func:`hardware_rows`: the best validation metric among the
    evaluations whose hardware time so far is at most the reference run's total (``None`` if even
    the first evaluation costs more). Rows ``{"task", "device", "label", "budget_s", "val_at_budget",
    "hardware_s", "fraction_used"}``; ``fraction_used`` is the method's whole run over the budget.
    """
    out = []
    for key in dict.fromkeys((r["task"], r["device"]) for r in rows):
        mine = [r for r in rows if (r["task"], r["device"]) == key]
        ref = [r for r in mine if r["label"] == reference]
        if not ref:
            raise ValueError(f"no {reference!r} run for {key}")
        budget = float(np.mean([r["hardware_s"] for r in ref]))
        better = max if mine[0]["metric_name"] == "accuracy" else min
        for r in mine:
            within = [v for s, v in zip(r["curve_s"], r["curve_val"]) if s <= budget]
            out.append({"task": key[0], "device": key[1], "label": r["label"], "seed": r["seed"], "budget_s": budget,
                        "val_at_budget": better(within) if within else None, "hardware_s": r["hardware_s"],
                        "fraction_used": r["hardware_s"] / budget if budget > 0 else math.inf})
    return out


def front_verdict(rows: Sequence[Mapping[str, Any]], label: str = "surrogate (ksl)", near: float = 1.0
                  ) -> list[dict[str, Any]]:
    """Whether the run ``label`` is on (or near) the Pareto front of its (task, device), and why not.

    "Near": no run that costs at most as much hardware time beats it by more than ``near`` (points of
    accuracy, or bits per character x 100 %). The reason is read off the runs: which run dominates
    it (cheaper and at least as good), by what time factor and metric difference, and where the
    method's time goes -- the share of the ZO estimate (``static`` minus ``frozen``: the same steps
    without and with device training) and of the surrogate's upkeep (``label`` minus ``static``).

    Returns:
        One dict per (task, device): ``{"task", "device", "label", "on_front", "near_front",
        "dominated_by", "time_factor", "metric_gap", "zo_share", "upkeep_share", "frozen_gap"}``
        (``dominated_by`` is the label of the best cheaper run, ``None`` on the front; ``frozen_gap``
        the metric of ``frozen`` minus the method's).
    """
    out = []
    for key in dict.fromkeys((r["task"], r["device"]) for r in rows):
        mine = {r["label"]: r for r in rows if (r["task"], r["device"]) == key}
        if label not in mine:
            raise ValueError(f"no {label!r} run for {key}")
        me = mine[label]
        sign = 1.0 if me["metric_name"] == "accuracy" else -1.0
        cheaper = [r for r in mine.values() if r is not me and r["hardware_s"] <= me["hardware_s"]
                   and sign * r["metric"] >= sign * me["metric"]]
        best = max(cheaper, key=lambda r: (sign * r["metric"], -r["hardware_s"])) if cheaper else None
        gap = (sign * (best["metric"] - me["metric"])) if best is not None else 0.0
        frozen, static = mine.get("frozen"), mine.get("static")
        total = me["hardware_s"]
        out.append({
            "task": key[0], "device": key[1], "label": label, "on_front": bool(me["on_front"]),
            "near_front": bool(me["on_front"] or gap <= near),
            "dominated_by": None if me["on_front"] or best is None else best["label"],
            "time_factor": None if best is None or best["hardware_s"] == 0 else total / best["hardware_s"],
            "metric_gap": gap,
            "zo_share": None if frozen is None or static is None or not total
            else (static["hardware_s"] - frozen["hardware_s"]) / total,
            "upkeep_share": None if static is None or not total else (total - static["hardware_s"]) / total,
            "frozen_gap": None if frozen is None else frozen["metric"] - me["metric"],
        })
    return out


# =============================================================================================
# a device in another process; checkpoints
# =============================================================================================
def same_numbers(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two results have the same metric, validation metric, device counters and learning curve."""
    m = a["metric"]
    keys = ("train_loss", "metric", "val_loss", "queries", "reconfigurations", "steps", "best_step")
    return (a[m], a[f"val_{m}"], a["queries"], a["reconfigurations"]) == \
        (b[m], b[f"val_{m}"], b["queries"], b["reconfigurations"]) and \
        all(a["history"][k] == b["history"][k] for k in keys)


def served_comparison(task: str, device: str, physics: Mapping[str, Any], faults: Faults, *, seed: int = 0,
                      quick: bool = False, retry: RetryPolicy | None = None, **overrides: Any) -> dict[str, Any]:
    """Train the surrogate method in-process and against a device served by another process with ``faults``.

    The server (:func:`hybridlab.remote.start_server`) holds a device of the same kind, ``physics``
    and seed in a child process and injects the faults; the client retries (``retry``). Both runs
    stay on the CPU with this process's PyTorch threads.

    Returns:
        ``{"local": result, "served": result, "same": bool, "problems": {reason: count}}``; the
        problems are the failed tries the client's retries absorbed.
    """
    common = dict(seed=seed, quick=quick, use_cuda=False, **overrides)
    local = recipes.run(task, device, "surrogate", device_options=dict(physics), **common)
    with start_server(device, options={**physics, "seed": seed}, faults=faults, use_cuda=False,
                      threads=torch.get_num_threads()) as server:
        served = recipes.run(task, device, "surrogate", remote=server.address, remote_retry=retry, **common)
    return {"local": local, "served": served, "same": same_numbers(local, served),
            "problems": dict(served.get("remote_problems", {}))}


def killed_and_resumed(task: str, device: str, folder: str | Path, *, epochs: int, kill_after: int = 2,
                       physics: Mapping[str, Any] | None = None, seed: int = 0, quick: bool = False,
                       timeout: float = 600.0) -> dict[str, Any]:
    """Kill a ``python -m hybridlab train ... --checkpoint FILE`` process, resume it here, compare.

    The training runs in a child process (this Python, this hybridlab, this process's PyTorch
    thread count, on the CPU) and is killed (SIGKILL on POSIX) as soon as its checkpoint holds
    ``kill_after`` epochs (or steps). The run is then resumed in this process from the checkpoint
    (``recipes.run(..., checkpoint=FILE, resume=True)``) and trained once more without interruption.

    Returns:
        ``{"killed_at": epochs or steps in the checkpoint when it was killed, "total": epochs,
        "resumed": result, "whole": result, "same": bool, "command": the command line}``.

    Raises:
        ValueError: the child process ended before it could be killed (make the run longer).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ckpt = folder / f"{task}-{device}-seed{seed}.pt"
    if ckpt.exists():
        ckpt.unlink()
    physics = dict(physics or {})
    unsupported = set(physics) - {"noise", "bits"}
    if unsupported:
        raise ValueError(f"the command line sets only noise and bits, not {sorted(unsupported)}")
    steps_key = "steps" if task == "text" else "epochs"
    command = [sys.executable, "-m", "hybridlab", "train", "--task", task, "--device", device, "--seed", str(seed),
               f"--{steps_key}", str(epochs), "--cpu", "--threads", str(torch.get_num_threads()), "--no-progress",
               "--checkpoint", str(ckpt)] + (["--quick"] if quick else [])
    for k, v in physics.items():
        command += [f"--{k}", str(v)]
    if task == "text":
        command += ["--checkpoint-every", "1"]
    package_root = str(Path(recipes.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]).rstrip(
        os.pathsep)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    killed_at = None
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists():
                position = torch.load(ckpt, weights_only=True)["loop"]["position"]
                if position >= kill_after:
                    proc.kill()
                    break
            time.sleep(0.02)
        proc.wait(60)
        if proc.returncode == 0:
            raise ValueError(f"the training process finished before it was killed: give it more {steps_key}")
        if proc.returncode is None or not ckpt.exists():
            raise ValueError(f"the training process failed before its first checkpoint: {proc.stderr.read()[-500:]}")
        killed_at = int(torch.load(ckpt, weights_only=True)["loop"]["position"])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()
    common = {"seed": seed, "quick": quick, "use_cuda": False, "device_options": physics, steps_key: epochs}
    extra = {"checkpoint_every": 1} if task == "text" else {}
    resumed = recipes.run(task, device, "surrogate", checkpoint=ckpt, resume=True, **common, **extra)
    whole = recipes.run(task, device, "surrogate", **common)
    return {"killed_at": killed_at, "total": epochs, "resumed": resumed, "whole": whole,
            "same": same_numbers(resumed, whole), "command": " ".join(command[1:])}
