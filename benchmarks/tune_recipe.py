"""The search behind the recipe's defaults: every setting chosen on VALIDATION data, never on the test split.

    python benchmarks/tune_recipe.py --jobs 16 --out recipe_search.json      # the full grid
    python benchmarks/tune_recipe.py --quick --jobs 2                         # a smoke run

Every point of the grid is one :func:`hybridlab.recipes.run` (one PyTorch thread per process, the CPU
only): the digital network's learning rate, then the device step (``device_step``, the relative change
of the device's outputs per step that sets each device's learning rate from its measured sensitivity),
the learning rate and the upkeep of the hybrid network, and the frozen device for reference, on the
easy and the hard vision task (seeds 0 and 1) and on text (seed 0). The grid is small enough to
evaluate completely, so a plain process pool runs it; the choice is the setting with the best mean
validation metric, printed per task with the test metric beside it only for the record.

Each result line of ``--out`` holds the run's arguments, its validation and test metric, its budget
and its wall time; :func:`summarise` prints the table the defaults were read from.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

VISION_DEVICES = ("slm", "mrr", "mzi")


def grid(quick: bool = False) -> list[dict[str, Any]]:
    """The runs of the search, each a dict of :func:`hybridlab.recipes.run` keyword arguments."""
    seeds = (0,) if quick else (0, 1)
    steps = (0.02, 0.05, 0.1, 0.2)
    jobs: list[dict[str, Any]] = []
    for variant, seed in itertools.product(("easy", "hard"), seeds):
        base = {"task": "vision", "variant": variant, "seed": seed}
        for lr in (1e-3, 3e-3, 1e-2):
            jobs.append({**base, "method": "digital", "device": "ideal", "lr": lr})
        for device in VISION_DEVICES:
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
    for device in VISION_DEVICES:
        for step in steps:
            jobs.append({**base, "method": "surrogate", "device": device, "device_step": step, "upkeep": "forward"})
        jobs.append({**base, "method": "frozen", "device": device})
    if quick:
        jobs = [{**j, "quick": True} for j in jobs[:: max(1, len(jobs) // 8)]]
    return jobs


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    from hybridlab import recipes

    kw = dict(job)
    task, device, method = kw.pop("task"), kw.pop("device"), kw.pop("method")
    t0 = time.perf_counter()
    r = recipes.run(task, device, method, use_cuda=False, **kw)
    m = r["metric"]
    return {"job": job, "val": r[f"val_{m}"], "test": r[m], "metric": m, "queries": r["queries"],
            "reconfigurations": r["reconfigurations"], "best_step": r["history"]["best_step"],
            "lr_device": r["settings"]["lr_device"], "seconds": time.perf_counter() - t0}


def summarise(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean validation (and, for the record, test) metric per setting over the seeds."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for r in results:
        key = tuple(sorted((k, v) for k, v in r["job"].items() if k not in ("seed", "quick")))
        groups[key].append(r)
    rows = []
    for key, rs in sorted(groups.items(), key=lambda kv: str(kv[0])):
        rows.append({**dict(key), "seeds": len(rs), "val": sum(r["val"] for r in rs) / len(rs),
                     "test": sum(r["test"] for r in rs) / len(rs), "metric": rs[0]["metric"]})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one PyTorch thread each)")
    parser.add_argument("--out", default="recipe_search.json", help="JSON lines of every run")
    parser.add_argument("--quick", action="store_true", help="a few tiny runs (smoke test)")
    args = parser.parse_args()
    jobs = grid(args.quick)
    # the slowest runs first, so that the pool ends together
    jobs.sort(key=lambda j: (j["task"] != "text", j.get("variant") != "hard", j["method"] == "digital"))
    results = []
    with ProcessPoolExecutor(args.jobs) as pool, open(args.out, "w") as out:
        futures = {pool.submit(run_one, j): j for j in jobs}
        for future in as_completed(futures):
            r = future.result()
            results.append(r)
            out.write(json.dumps(r) + "\n")
            out.flush()
            print(f"[{len(results)}/{len(jobs)}] {r['job']} val {r['val']:.4f} test {r['test']:.4f} "
                  f"{r['seconds']:.0f} s", flush=True)
    for row in summarise(results):
        print(json.dumps(row))


if __name__ == "__main__":
    main()
