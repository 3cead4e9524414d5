"""The searches behind the recipe's defaults: every setting chosen on VALIDATION data, never on the test split.

    python benchmarks/tune_recipe.py --jobs 2                  # both stages, resumable
    python benchmarks/tune_recipe.py --stage 2 --summary       # the tables from the results files
    python benchmarks/tune_recipe.py --quick --jobs 2          # a smoke run (a few tiny runs, ./quick_*.jsonl)

Every run is one :func:`hybridlab.recipes.run` (one PyTorch thread per process, the CPU only); its
validation metric (the part carved from the training split) makes the choice, its test metric is kept
only for the record. Results are appended to ``benchmarks/results/recipe_search_stage{1,2}.jsonl``, one
JSON line per run (:mod:`resumable`), so a stopped search continues where it stopped.

Stage 1 (the settings that interact most): the digital network's learning rate; the device step
(``device_step``, the relative change of the device's outputs per step that sets each device's learning
rate from its measured sensitivity), the learning rate and the upkeep of the hybrid network; the frozen
device for reference. Vision easy and hard (seeds 0-1), text (seed 0), every device kind.

Stage 2 (the rest, one at a time around the stage-1 choice): epochs (text: steps), batch size, rank r,
ZO samples M, ZO step mu, the annealed fraction, the initial gain, the kind of ZO directions (vision) and
the sketch size s (with the ``ksl`` upkeep, the only one that uses a sketch); both tasks also split a
fixed budget between steps and batch size (``split``: vision epochs x batch at the same number of steps,
text steps x batch at the same number of characters). The surrogate method on vision easy (every device
kind, seeds 0-1), hard (MRR, seed 0; not the settings of :data:`EASY_ONLY`) and text (MRR, seed 0).

The audio task is in neither stage, on purpose: it is the task the recipe never saw, so that its
chapter (and ``robustness.py``) shows how the recipe does on data it was not chosen on.

Both grids are small and evaluated completely (no sampler would skip a point), so the "search" is a
table. Stage 1 prints the mean validation metric of every setting. Stage 2 prints, for each setting and
value, the validation gain over the default in every (task, variant, device, seed) cell (points of
accuracy; for text, percent of bits per character), its mean and standard error, and the device
queries and reconfigurations of a run; :func:`choose` keeps the default unless a value is measurably
better on validation.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

from resumable import load, run_missing, run_recipe

RESULTS = Path(__file__).with_name("results")
DEVICES = ("slm", "mrr", "mzi")
SEEDS = (0, 1)
#: A value replaces the default only when its mean validation gain exceeds this (points of accuracy, or
#: percent of bits per character) as well as twice its standard error (:func:`choose`).
TOLERANCE = 0.2

#: Stage 2: the values tried around the stage-1 recipe; the middle one of each is the default.
AROUND: dict[str, dict[str, tuple]] = {
    "vision": {"epochs": (15, 25, 40), "batch_size": (128, 64, 32), "rank": (8, 16, 32), "samples": (5, 10, 20),
               "mu": (1e-4, 1e-3, 1e-2), "anneal": (0.0, 0.2, 0.4), "gain": (0.5, 1.0, 2.0), "sketch": (16, 32, 64),
               "directions": ("packed", "gaussian", "lowrank"), "split": ("50x128", "25x64", "12x32")},
    "text": {"steps": (400, 600, 900), "split": ("1200x32", "600x64", "300x128"), "rank": (16, 32, 64),
             "samples": (50, 100, 200), "mu": (1e-4, 1e-3, 1e-2), "anneal": (0.0, 0.2, 0.4), "gain": (0.03, 0.1, 0.3),
             "sketch": (16, 32, 64)},
}
#: Settings that buy accuracy with time or hardware: more epochs (text: steps), ZO samples or, at a fixed
#: number of epochs, smaller batches (more steps, so more reconfigurations of the device) are expected to
#: help, so validation cannot choose them; their default is what the book's time budget affords (each
#: chapter a few minutes on 2 cores), and the table shows what more or less of them would change. The
#: batch size is chosen at a fixed budget instead (``split``): of examples for vision (epochs x batch,
#: the same number of steps and so of reconfigurations), of characters for text (steps x batch).
BUDGET = ("epochs", "steps", "samples", "batch_size")
#: Settings of stage 2 searched on the easy vision data only (to keep the search within an hour on 2
#: cores): the sketch (used by the ``ksl`` upkeep only, not by the recipe's), the vision gain and the kind
#: of ZO directions.
EASY_ONLY = ("sketch", "gain", "directions")


def stage1(quick: bool = False) -> list[dict[str, Any]]:
    """The runs of stage 1, each a dict of :func:`hybridlab.recipes.run` keyword arguments."""
    steps = (0.02, 0.05, 0.1, 0.2)
    jobs: list[dict[str, Any]] = []
    for variant, seed in itertools.product(("easy", "hard"), SEEDS[:1] if quick else SEEDS):
        base = {"task": "vision", "variant": variant, "seed": seed}
        for lr in (1e-3, 3e-3, 1e-2):
            jobs.append({**base, "method": "digital", "device": "ideal", "lr": lr})
        for device in DEVICES:
            for step in steps:
                jobs.append({**base, "method": "surrogate", "device": device, "lr": 3e-3, "device_step": step,
                             "upkeep": "forward"})
            jobs.append({**base, "method": "surrogate", "device": device, "lr": 1e-3, "device_step": 0.05,
                         "upkeep": "forward"})
            jobs.append({**base, "method": "surrogate", "device": device, "lr": 3e-3, "device_step": 0.05,
                         "upkeep": "ksl"})
            jobs.append({**base, "method": "frozen", "device": device, "lr": 3e-3})
    base = {"task": "text", "variant": "easy", "seed": 0}
    for lr in (1e-3, 2e-3, 5e-3):
        jobs.append({**base, "method": "digital", "device": "ideal", "lr": lr})
    for device in DEVICES:
        for step in steps:
            jobs.append({**base, "method": "surrogate", "device": device, "device_step": step, "upkeep": "forward"})
        jobs.append({**base, "method": "frozen", "device": device})
    return _quick(jobs) if quick else jobs


def stage2(quick: bool = False) -> list[dict[str, Any]]:
    """The runs of stage 2: each setting of :data:`AROUND` moved alone, the others at their defaults.

    Each job names the setting it moves (``"setting"``, ``"value"``); the default point is one job per
    cell (``"setting": "default"``), shared by every setting's comparison but the sketch's, which runs
    with the ``ksl`` upkeep.
    """
    cells = [("vision", "easy", d, s) for d in DEVICES for s in SEEDS]
    cells += [("vision", "hard", "mrr", 0)]
    cells += [("text", "easy", "mrr", 0)]
    jobs = []
    for task, variant, device, seed in cells:
        base = {"task": task, "variant": variant, "device": device, "method": "surrogate", "seed": seed}
        jobs.append({**base, "setting": "default", "value": None})
        for setting, values in AROUND[task].items():
            if (task, variant) == ("vision", "hard") and setting in EASY_ONLY:
                continue
            for value in values:
                if setting == "sketch":  # the only upkeep that draws a sketch
                    jobs.append({**base, "setting": setting, "value": value, "upkeep": "ksl"})
                elif value != values[1]:
                    jobs.append({**base, "setting": setting, "value": value})
    return _quick(jobs) if quick else jobs


def _quick(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**j, "quick": True} for j in jobs[:: max(1, len(jobs) // 8)]]


def key(line: dict[str, Any]) -> tuple:
    """A job's identity: its arguments (a result line keeps them under ``"job"``)."""
    return tuple(sorted(line.get("job", line).items()))


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    kw = dict(job)
    task, device, method = kw.pop("task"), kw.pop("device"), kw.pop("method")
    setting, value = kw.pop("setting", "default"), kw.pop("value", None)
    if setting == "split":  # text: steps x batch; vision: epochs x batch
        kw["steps" if task == "text" else "epochs"], kw["batch_size"] = map(int, value.split("x"))
    elif setting != "default":
        kw[setting] = value
    r, seconds = run_recipe(task, device, method, **kw)
    m = r["metric"]
    return {"job": job, "val": r[f"val_{m}"], "test": r[m], "metric": m, "queries": r["queries"],
            "reconfigurations": r["reconfigurations"], "best_step": r["history"]["best_step"],
            "lr_device": r["settings"]["lr_device"], "seconds": seconds,
            "hybridlab_version": r["hybridlab_version"]}


def gain(metric: str, value: float, default: float) -> float:
    """How much better a validation (or test) metric is than the default's: points of accuracy, or
    percent of bits per character (lower is better); negative when worse."""
    if metric == "accuracy":
        return 100 * (value - default)
    return 100 * (default - value) / default


def summarise1(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stage 1: mean validation (and, for the record, test) metric per setting over the seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        groups[tuple(sorted((k, v) for k, v in r["job"].items() if k not in ("seed", "quick")))].append(r)
    return [{**dict(k), "seeds": len(rs), "val": sum(r["val"] for r in rs) / len(rs),
             "test": sum(r["test"] for r in rs) / len(rs), "metric": rs[0]["metric"]}
            for k, rs in sorted(groups.items(), key=lambda kv: str(kv[0]))]


def summarise2(results: list[dict[str, Any]]) -> dict[tuple[str, str], dict[int, dict[str, float]]]:
    """Stage 2, per (task, setting) and value (index in :data:`AROUND`, 1 = the default): the validation
    gain over the default in each complete (task, variant, device, seed) cell (one unit per task), its
    mean, standard error and worst case, the mean test gain (for the record), and a run's device queries
    and reconfigurations relative to the default's (its cost on hardware; wall times are not compared,
    the runs share a machine)."""
    cells: dict[tuple, dict[Any, dict[str, Any]]] = defaultdict(dict)
    for r in results:
        j = r["job"]
        if j["setting"] not in ("default", *AROUND[j["task"]]):
            continue  # a setting no longer searched
        cell = (j["task"], j["variant"], j["device"], j["seed"])
        settings = [s for s in AROUND[j["task"]] if s != "sketch"] if j["setting"] == "default" else [j["setting"]]
        for setting in settings:
            value = AROUND[j["task"]][setting][1] if j["setting"] == "default" else j["value"]
            cells[(setting, *cell)][value] = r
    table: dict[tuple[str, str], dict[int, dict[str, list[float]]]] = \
        defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for (setting, task, *_), runs in cells.items():
        values = AROUND[task][setting]
        if any(v not in runs for v in values):
            continue  # an incomplete comparison says nothing
        default = runs[values[1]]
        for i, value in enumerate(values):
            r, row = runs[value], table[task, setting][i]
            row["val"].append(gain(r["metric"], r["val"], default["val"]))
            row["test"].append(gain(r["metric"], r["test"], default["test"]))
            row["queries"].append(r["queries"] / default["queries"])
            row["reconfigurations"].append(r["reconfigurations"] / default["reconfigurations"])
    out: dict[tuple[str, str], dict[int, dict[str, float]]] = {}
    for name, rows in table.items():
        out[name] = {}
        for i, row in sorted(rows.items()):
            n, v = len(row["val"]), row["val"]
            mean = sum(v) / n
            se = (sum((x - mean) ** 2 for x in v) / (n - 1) / n) ** 0.5 if n > 1 else float("inf")
            out[name][i] = {"val": mean, "se": se, "worst": min(v), "test": sum(row["test"]) / n,
                            "queries": sum(row["queries"]) / n,
                            "reconfigurations": sum(row["reconfigurations"]) / n, "cells": n}
    return out


def choose(rows: dict[int, dict[str, float]], setting: str) -> int:
    """The rule that confirmed or changed each default: keep the default (index 1) unless another value
    is better on validation by more than twice the standard error of its mean gain and by more than
    :data:`TOLERANCE`; then take the best such value. A :data:`BUDGET` setting keeps its default."""
    if setting in BUDGET:
        return 1
    better = [i for i, r in rows.items() if i != 1 and r["val"] > max(TOLERANCE, 2 * r["se"])]
    return max(better, key=lambda i: rows[i]["val"]) if better else 1


def print_stage2(results: list[dict[str, Any]]) -> None:
    table = summarise2(results)
    print("validation gain over the default (points of accuracy; text: % of bits per character), "
          "mean ± standard error over the cells")
    print("task   setting     index |      gain ± se     worst | test gain | queries, reconfigurations (x default) "
          "| cells")
    for (task, setting), rows in sorted(table.items()):
        pick = choose(rows, setting)
        for i, r in rows.items():
            mark = ("<- budget" if setting in BUDGET else "<- chosen") if i == pick else ""
            print(f"{task:6s} {setting:10s}  {i}     | {r['val']:+7.2f} ± {r['se']:4.2f}  {r['worst']:+6.2f} | "
                  f"{r['test']:+7.2f}   | {r['queries']:5.2f} {r['reconfigurations']:5.2f}"
                  f"                           | {r['cells']:3d} {mark}")
    print("values by task (index 0, 1 = the default, 2):")
    for task, around in AROUND.items():
        print(f"  {task}: " + ", ".join(f"{k} {v}" for k, v in around.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one PyTorch thread each)")
    parser.add_argument("--stage", type=int, choices=(1, 2), help="only this stage (default: both)")
    parser.add_argument("--summary", action="store_true", help="only print the tables of the results files")
    parser.add_argument("--quick", action="store_true", help="a few tiny runs (smoke test), written to ./quick_*")
    args = parser.parse_args()
    for stage in (1, 2) if args.stage is None else (args.stage,):
        out = Path(f"quick_recipe_search_stage{stage}.jsonl") if args.quick else \
            RESULTS / f"recipe_search_stage{stage}.jsonl"
        jobs = (stage1 if stage == 1 else stage2)(args.quick)
        # the slowest runs first, so that the pool ends together
        jobs.sort(key=lambda j: (j["task"] == "vision" and j["variant"] == "easy", j["task"] != "text",
                                 j["device"] != "mzi"))
        if args.summary:
            results = load(out, key)
        else:
            results = run_missing(jobs, key, run_one, out, args.jobs,
                                  lambda r: f"{r['job']} val {r['val']:.4f} test {r['test']:.4f} {r['seconds']:.0f} s")
        print(f"stage {stage}: {len(results)} runs")
        if stage == 1:
            for row in summarise1(results):
                print(json.dumps(row))
        else:
            print_stage2(results)


if __name__ == "__main__":
    main()
