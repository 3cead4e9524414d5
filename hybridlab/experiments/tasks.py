"""Experiments of the task chapters (vision, audio, text): every device kind against the digital network.

Every training run is one call of :func:`hybridlab.recipes.run` with the committed per-task
defaults, so the chapters and ``python -m hybridlab train`` compute the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import recipes

# =============================================================================================
# chapters 7-9: one task, every device kind, against the digital network
# =============================================================================================

#: the device kinds chapters 7-9 train, in table order (``ideal`` last: the sanity row)
CHAPTER_DEVICES: tuple[str, ...] = ("slm", "mrr", "mzi", "ideal")
#: the method and the competitor it must beat
CHAPTER_METHODS: tuple[str, ...] = ("surrogate", "static")
#: Targets of the surrogate method per task: ``("points", m)`` -- mean test accuracy at least
#: ``m`` percentage points below digital; ``("ratio", q)`` -- mean bits per character at most
#: ``q`` times digital.
TARGETS: dict[str, tuple[str, float]] = {"vision": ("points", 1.5), "audio": ("points", 2.0), "text": ("ratio", 1.05)}


def _comparison_plan(devices: Sequence[str], methods: Sequence[str] | Mapping[str, Sequence[str]]
                     ) -> list[tuple[str, str]]:
    """``[(device, method), ...]`` in table order; ``methods`` may be given per device."""
    devices = list(devices)
    if not devices:
        raise ValueError("devices is empty: give at least one device kind")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices repeat: {devices}")
    if isinstance(methods, Mapping):
        missing, extra = set(devices) - set(methods), set(methods) - set(devices)
        if missing or extra:
            raise ValueError(f"methods given per device must name exactly the devices {devices}; "
                             f"missing {sorted(missing)}, extra {sorted(extra)}")
        per_device = {d: list(methods[d]) for d in devices}
    else:
        if isinstance(methods, str):
            raise ValueError(f"methods must be a sequence of names, got the string {methods!r}")
        per_device = {d: list(methods) for d in devices}
    plan = []
    for d in devices:
        for m in per_device[d]:
            if m == "digital":
                raise ValueError("'digital' is trained once per seed anyway; leave it out of methods")
            if (d, m) in plan:
                raise ValueError(f"method {m!r} repeats for device {d!r}")
            plan.append((d, m))
    if not plan:
        raise ValueError("no (device, method) run to train: give at least one method")
    return plan


def compare_devices(task: str, devices: Sequence[str] = CHAPTER_DEVICES,
                    methods: Sequence[str] | Mapping[str, Sequence[str]] = CHAPTER_METHODS,
                    seeds: Sequence[int] = (0, 1, 2), *, quick: bool = False, data: Any = None,
                    data_dir: str | None = None, data_seed: int = 0, progress: bool = False,
                    workers: int = 1, **run_options: Any) -> list[dict[str, Any]]:
    """Train the digital network and every (device, method) of a task, for every seed.

    Every run is one call of :func:`hybridlab.recipes.run` (the committed per-task ``DEFAULTS``, the
    same as ``python -m hybridlab train``); the digital network (a plain ``nn.Linear``) is trained
    once per seed. The data are loaded once (:func:`hybridlab.recipes.load_data`) unless ``data`` is
    given, and shared by all runs.

    Args:
        task: ``"vision"``, ``"audio"`` or ``"text"``.
        devices: device kinds, in table order.
        methods: methods trained on every device, or ``{device: methods}`` to train some devices
            with fewer methods (every device must be named). ``"digital"`` is not a method here.
        seeds: training seeds; each seed trains digital once and every (device, method) once.
        quick: tiny runs (:data:`hybridlab.recipes.QUICK`).
        data: an already loaded dataset of the task (default: load it).
        data_dir: the real dataset's folder (MNIST, FSDD, a text file), as ``--data-dir``.
        data_seed: seed of the data split and synthesis (fixed across training seeds).
        progress: one tqdm bar over all runs.
        workers: ``1`` trains the runs one after the other in this process (with PyTorch's
            default threads, exactly as ``python -m hybridlab train``). ``n > 1`` trains ``n`` runs
            at a time in fresh worker processes with one PyTorch thread each (on a small CPU this
            gets more runs done per minute than one run on all cores); such a run is repeated
            exactly by ``python -m hybridlab train ... --threads 1``.
        run_options: more keyword arguments of :func:`hybridlab.recipes.run` (``device_options``,
            ``layer``, setting overrides such as ``epochs``); they apply to every run.

    Returns:
        The result dictionaries of :func:`hybridlab.recipes.run`, seed by seed: digital first, then
        the (device, method) runs in table order.

    Raises:
        ValueError: an unknown task, device or method, no seeds, repeated runs or fewer than one
            worker -- before any training starts.
    """
    plan = _comparison_plan(devices, methods)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds}")
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    for device, method in plan:  # validate every name before the first (long) run
        recipes.settings(task, device, method, quick=quick)
    if data is None:
        data = recipes.load_data(task, data_dir=data_dir, quick=quick, data_seed=data_seed,
                                 variant=run_options.get("variant", "easy"))
    jobs = [job for seed in seeds for job in [(seed, "ideal", "digital"), *((seed, d, m) for d, m in plan)]]
    options = {"data_seed": data_seed, "data_dir": data_dir, "quick": quick, **run_options}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"{task} runs")

    def done(seed: int, device: str, method: str) -> None:
        if bar is not None:
            bar.set_postfix_str(f"seed {seed} {method}" + ("" if method == "digital" else f" {device}"))
            bar.update(1)

    try:
        if int(workers) == 1:
            results = []
            for seed, device, method in jobs:
                results.append(recipes.run(task, device, method, seed=seed, data=data, **options))
                done(seed, device, method)
            return results
        return _run_in_workers(task, jobs, data, options, int(workers), done)
    finally:
        if bar is not None:
            bar.close()


_WORKER_DATA: Any = None


def _worker_init(data: Any) -> None:
    global _WORKER_DATA
    torch.set_num_threads(1)
    _WORKER_DATA = data


def _worker_run(task: str, device: str, method: str, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    return recipes.run(task, device, method, seed=seed, data=_WORKER_DATA, **options)


def _run_in_workers(task: str, jobs: list[tuple[int, str, str]], data: Any, options: dict[str, Any], workers: int,
                    done: Callable[[int, str, str], None]) -> list[dict[str, Any]]:
    """The jobs of :func:`compare_devices` in ``workers`` spawned processes; results in job order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # the short digital runs last, so that the workers finish at about the same time
    order = sorted(range(len(jobs)), key=lambda i: jobs[i][2] == "digital")
    results: list[Any] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(data,)) as pool:
        futures = {pool.submit(_worker_run, task, jobs[i][1], jobs[i][2], jobs[i][0], options): i for i in order}
        try:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                done(*jobs[i])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def _run_key(result: dict[str, Any]) -> tuple[str, str | None]:
    return ("digital", None) if result["method"] == "digital" else (result["method"], result["device"])


def metric_scale(metric: str) -> float:
    """Factor from a result's metric to the number the tables show (accuracy in %, bits as is)."""
    return 100.0 if metric == "accuracy" else 1.0


def comparison_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run kind (digital, then each (method, device)) with mean and spread over seeds.

    Args:
        results: result dictionaries of :func:`hybridlab.recipes.run` (e.g. from
            :func:`compare_devices`), all of one task.

    Returns:
        Rows ``{"run", "method", "device", "metric", "seeds", "values", "mean", "std", "gap", "ratio",
        "queries", "reconfigurations", "steps", "seconds"}`` (``metric``: the results' metric name), digital
        first, then in order of first appearance. ``values`` are the metrics of the seeds (in the order
        given; accuracy in %, bits per character as is), ``mean`` and ``std`` their ``np.mean`` and
        ``np.std`` (the population formula, ``ddof=0``). ``gap`` is ``mean`` minus digital's mean, ``ratio``
        is ``mean`` over digital's mean (both ``None`` without a digital run). ``queries``,
        ``reconfigurations`` (device totals of one run: training and evaluation), ``steps`` (optimizer steps
        of one run) and ``seconds`` (wall time of one run) are means over the seeds; ``device`` is ``"—"``
        for digital.
    """
    if not results:
        raise ValueError("no results to summarise")
    tasks = {r["task"] for r in results}
    if len(tasks) != 1:
        raise ValueError(f"results of several tasks {sorted(tasks)}: summarise one task at a time")
    metric = results[0]["metric"]
    scale = metric_scale(metric)
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for key in [("digital", None)] + [_run_key(r) for r in results]:
        groups.setdefault(key, [])
    for r in results:
        groups[_run_key(r)].append(r)
    if not groups[("digital", None)]:
        del groups[("digital", None)]
    base = None
    if ("digital", None) in groups:
        base = float(np.mean([r[metric] * scale for r in groups[("digital", None)]]))
    rows = []
    for (method, device), runs in groups.items():
        values = np.array([r[metric] * scale for r in runs], dtype=float)
        mean = float(values.mean())
        rows.append({
            "run": method if device is None else f"{method} {device}",
            "method": method, "device": "—" if device is None else device, "metric": metric,
            "seeds": len(runs), "values": values.tolist(),
            "mean": mean, "std": float(values.std()),
            "gap": mean - base if base is not None else None,
            "ratio": mean / base if base else None,
            "queries": float(np.mean([r["queries"] for r in runs])),
            "reconfigurations": float(np.mean([r["reconfigurations"] for r in runs])),
            "steps": float(np.mean([r["history"]["steps"][-1] if r["history"]["steps"] else 0 for r in runs])),
            "seconds": float(np.mean([r["seconds"] for r in runs])),
        })
    return rows


def check_targets(rows: Sequence[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The surrogate rows of :func:`comparison_rows` against :data:`TARGETS` and the static rows.

    Returns:
        One dict per device with a surrogate row: ``{"device", "surrogate", "static", "digital",
        "threshold", "meets_target", "beats_static"}`` (means in table units; ``static`` and
        ``beats_static`` are ``None`` when that device has no static row). For accuracy
        the threshold is ``digital - margin`` and the surrogate must reach it; for bits per
        character it is ``digital * q`` and the surrogate must stay at or below it. "Beats" means
        strictly better on the mean (higher accuracy, fewer bits).
    """
    if task not in TARGETS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TARGETS)}")
    kind, margin = TARGETS[task]
    by = {(r["method"], r["device"]): r for r in rows}
    if ("digital", "—") not in by:
        raise ValueError("the rows have no digital row to compare with")
    digital = by[("digital", "—")]["mean"]
    threshold = digital - margin if kind == "points" else digital * margin
    out = []
    for r in rows:
        if r["method"] != "surrogate":
            continue
        static = by.get(("static", r["device"]))
        higher_is_better = kind == "points"
        meets = r["mean"] >= threshold if higher_is_better else r["mean"] <= threshold
        beats = None
        if static is not None:
            beats = r["mean"] > static["mean"] if higher_is_better else r["mean"] < static["mean"]
        out.append({"device": r["device"], "surrogate": r["mean"],
                    "static": static["mean"] if static is not None else None, "digital": digital,
                    "threshold": threshold, "meets_target": bool(meets), "beats_static": beats})
    return out


def settings_table(task: str, devices: Sequence[str] = CHAPTER_DEVICES, method: str = "surrogate", *,
                   quick: bool = False, differing_from: str | None = None) -> list[dict[str, Any]]:
    """The resolved training settings (:func:`hybridlab.recipes.settings`) of a task, one row each.

    A setting that differs between devices is written ``"slm 0.07, mrr 0.01, ..."``. With
    ``differing_from`` (another task) only the settings whose value differs from that task's are
    kept, each with that task's value under ``"other"``: what is specific to this task.

    Returns:
        Rows ``{"setting", "value", "meaning"}`` (and ``"other"``) in the order of
        :func:`hybridlab.recipes.settings`; ``value`` is the setting itself (a number, string, bool
        or ``None``) or, when it differs between devices, that string.
    """
    def resolved(task_: str) -> dict[str, Any]:
        per_device = {d: recipes.settings(task_, d, method, quick=quick) for d in devices}
        if not per_device:
            raise ValueError("devices is empty: give at least one device kind")
        out = {}
        for key in per_device[devices[0]]:
            values = [per_device[d][key] for d in devices]
            out[key] = values[0] if all(v == values[0] for v in values) else ", ".join(
                f"{d} {v:g}" if isinstance(v, float) else f"{d} {v}" for d, v in zip(devices, values))
        return out

    mine = resolved(task)
    if differing_from is None:
        return [{"setting": k, "value": v, "meaning": recipes.MEANINGS[k]} for k, v in mine.items()]
    other = resolved(differing_from)
    return [{"setting": k, "value": v, "other": other.get(k, "—"), "meaning": recipes.MEANINGS[k]}
            for k, v in mine.items() if other.get(k, object()) != v]


def surrogate_update_cost(task: str, data: Any, *, layer: str | None = None, quick: bool = False,
                          **overrides: Any) -> dict[str, Any]:
    """Queries of one implicit surrogate update against one full re-read of the black box.

    The black box is the model's Linear ``layer`` (default
    :data:`hybridlab.models.DEFAULT_BLACK_BOX`); its sizes are read from the model built for
    ``data``, rank and sketch size from :func:`hybridlab.recipes.settings` (``overrides`` as there).

    Returns:
        ``{"layer", "d_in", "d_out", "rank", "sketch", "implicit_queries" (2r + 2s),
        "reread_queries" (d_in), "implicit_cheaper" (2r + 2s < d_in), "largest_cheaper_sketch"}``;
        the last is the largest sketch size ``s`` for which the implicit update is still cheaper
        than a re-read at this rank (``< 1``: none is).
    """
    from ..models import DEFAULT_BLACK_BOX, MODEL_DEFAULTS, build_model

    s = recipes.settings(task, quick=quick, **overrides)
    name = layer or DEFAULT_BLACK_BOX[task]
    model = build_model(task, data, **{k: s[k] for k in MODEL_DEFAULTS[task]})
    linear = dict(model.named_modules()).get(name)
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"{name!r} is not a Linear of the {task} model")
    r, sk, d_in = int(s["rank"]), int(s["sketch"]), int(linear.in_features)
    implicit = 2 * r + 2 * sk
    return {"layer": name, "d_in": d_in, "d_out": int(linear.out_features), "rank": r, "sketch": sk,
            "implicit_queries": implicit, "reread_queries": d_in, "implicit_cheaper": implicit < d_in,
            "largest_cheaper_sketch": math.ceil(d_in / 2 - r) - 1}


def measured_update_cost(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """What keeping the surrogate current cost per step, measured on the device counters.

    ``surrogate`` and ``static`` train the same network with the same seed and the same ZO
    estimate; they differ only in the surrogate update. The difference of their totals divided
    by the optimizer steps is the update's cost per step.

    Returns:
        One row per (device, seed) that has both a surrogate and a static run:
        ``{"device", "seed", "steps", "queries_per_step", "reconfigurations_per_step"}``.
    """
    runs = {(r["method"], r["device"], r["seed"]): r for r in results}
    out = []
    for (method, device, seed), sur in runs.items():
        sta = runs.get(("static", device, seed))
        if method != "surrogate" or sta is None:
            continue
        steps = sur["history"]["steps"][-1]
        if steps != sta["history"]["steps"][-1]:
            raise ValueError(f"surrogate and static on {device}, seed {seed}, ran different step counts")
        out.append({"device": device, "seed": seed, "steps": steps,
                    "queries_per_step": (sur["queries"] - sta["queries"]) / steps,
                    "reconfigurations_per_step": (sur["reconfigurations"] - sta["reconfigurations"]) / steps})
    return out


def rerun_command(result: dict[str, Any], out: str = "r.json", threads: bool = False) -> str:
    """The ``python -m hybridlab train ...`` command line that repeats the run of ``result``.

    Built from ``result["args"]`` (what :func:`hybridlab.recipes.run` was called with). ``threads``
    adds ``--threads`` with the run's PyTorch thread count (``result["torch_threads"]``): the
    floating-point sums, so the last digits of the result, depend on it.

    Raises:
        ValueError: the run used a device option the command line cannot set (only ``noise``
            and ``bits`` can).
    """
    import shlex

    from ..recipes import COMMAND_LINE

    args = dict(result["args"])
    parts = ["python", "-m", "hybridlab", "train", "--task", args["task"]]
    if args["method"] != "digital":
        parts += ["--device", args["device"]]
    parts += ["--method", args["method"], "--seed", str(args["seed"])]
    if args.get("data_seed", 0):
        parts += ["--data-seed", str(args["data_seed"])]
    if args.get("data_dir"):
        parts += ["--data-dir", str(args["data_dir"])]
    if args.get("download"):
        parts.append("--download")
    if args.get("quick"):
        parts.append("--quick")
    if args.get("variant", "easy") != "easy":
        parts += ["--variant", args["variant"]]
    if args.get("layer"):
        parts += ["--layer", args["layer"]]
    for key in sorted(set(COMMAND_LINE) & set(args)):
        value = args[key]
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "compressed":
            parts.append(flag if value else "--no-compressed")
        else:
            parts += [flag, str(value)]
    options = dict(args.get("device_options") or {})
    unsupported = set(options) - {"noise", "bits"}
    if unsupported:
        raise ValueError(f"device options {sorted(unsupported)} cannot be set on the command line "
                         f"(only noise and bits)")
    for key in ("noise", "bits"):
        if key in options:
            parts += [f"--{key}", str(options[key])]
    if threads:
        parts += ["--threads", str(result["torch_threads"])]
    parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)
