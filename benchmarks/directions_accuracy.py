"""Accuracy of the cheap zero-order directions in training: Gaussian against low-rank and packed signs.

    python benchmarks/directions_accuracy.py --jobs 2        # every run (resumable), then the table
    python benchmarks/directions_accuracy.py --summary       # only the table of the results file
    python benchmarks/directions_accuracy.py --quick --out quick_directions.jsonl   # a smoke run

For each task (vision, audio, text; the easy data), device (slm, mrr, mzi), kind of ZO direction
(gaussian, lowrank, packed) and seed (0, 1, 2), one run of :func:`hybridlab.recipes.run` with the
committed defaults (method ``surrogate``, one PyTorch thread per process), ``directions`` the only
setting changed; the digital network of each seed is the reference row. A seed fixes the weights, the
device, the batches and the direction stream, so the kinds are compared seed by seed as well.

Results are appended to ``benchmarks/results/directions.jsonl``, one JSON line per run with the code
fingerprint (:mod:`resumable`); ``book/scaling.md`` shows the table of that file, which
``tests/test_benchmark.py`` checks is the one this script prints.

The table (Markdown): the test metric (accuracy in %, or bits per character for text: lower is better)
as mean ± standard deviation over the seeds (``statistics.stdev``; each seed's numbers are in the
results file), the paired
difference to ``gaussian`` (mean ± std of the per-seed differences) on the test split and on the
validation part (the split a choice of default may be made on), and ``within spread``: ``yes`` when the
test mean differs from the Gaussian test mean by at most the larger of the two seed standard deviations.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from pathlib import Path
from typing import Any

from resumable import load, run_missing, run_recipe

RESULTS = Path(__file__).with_name("results") / "directions.jsonl"
TASKS = ("vision", "audio", "text")
DEVICES = ("slm", "mrr", "mzi")
KINDS = ("gaussian", "lowrank", "packed")
SEEDS = (0, 1, 2)
PM = "\u00a0±\u00a0"  # "±" between no-break spaces: a mean and its spread stay on one line of a table cell


def jobs(tasks=TASKS, devices=DEVICES, kinds=KINDS, seeds=SEEDS, quick: bool = False) -> list[dict[str, Any]]:
    """The runs: per task, the digital network (``directions`` None) and every (device, kind), each seed."""
    out = []
    for task in tasks:
        pairs = [("ideal", None)] + list(itertools.product(devices, kinds))
        out += [{"task": task, "device": d, "directions": k, "seed": s, "quick": quick}
                for (d, k), s in itertools.product(pairs, seeds)]
    return out


def key(job: dict[str, Any]) -> tuple:
    return tuple(job[k] for k in ("task", "device", "directions", "seed", "quick"))


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    method, options = ("digital", {}) if job["directions"] is None else ("surrogate", {"directions": job["directions"]})
    r, seconds = run_recipe(job["task"], job["device"], method, seed=job["seed"], variant="easy", quick=job["quick"],
                            **options)
    m = r["metric"]
    return {**job, "metric": m, "test": r[m], "val": r[f"val_{m}"], "queries": r["queries"],
            "seconds": seconds, "hybridlab_version": r["hybridlab_version"]}


def ordered(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows in the table's order: task, the digital rows first, then device, kind and seed."""
    return sorted(rows, key=lambda r: (TASKS.index(r["task"]), r["directions"] is not None, r["device"],
                                       KINDS.index(r["directions"]) if r["directions"] else 0, r["seed"]))


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict[str, Any]]) -> str:
    """The Markdown table of the runs' rows (``task, device, directions, seed, metric, test, val``)."""
    groups: dict[tuple, dict[int, tuple[float, float]]] = {}
    digits = {}  # decimals per task: points of accuracy to 0.01, bits per character to 0.001
    for r in rows:
        digits[r["task"]] = 2 if r["metric"] == "accuracy" else 3
        scale = 100.0 if r["metric"] == "accuracy" else 1.0  # accuracy in %, bits per character as they are
        groups.setdefault((r["task"], r["device"], r["directions"]), {})[r["seed"]] = (scale * r["test"],
                                                                                        scale * r["val"])
    lines = ["| task | device | directions | test | test vs gaussian | validation vs gaussian | within spread |",
             "|---|---|---|---|---|---|---|"]
    for (task, device, kind), by_seed in groups.items():
        n = digits[task]
        test = {s: v[0] for s, v in by_seed.items()}
        mean, std = _spread(list(test.values()))
        versus_test, versus_val, within = "", "", ""
        gauss = groups.get((task, device, "gaussian"))
        if kind not in (None, "gaussian") and gauss is not None:
            common = [s for s in by_seed if s in gauss]
            d_test = _spread([by_seed[s][0] - gauss[s][0] for s in common])
            d_val = _spread([by_seed[s][1] - gauss[s][1] for s in common])
            g_mean, g_std = _spread([gauss[s][0] for s in gauss])
            versus_test, versus_val = (f"{m:+.{n}f}{PM}{s:.{n}f}" for m, s in (d_test, d_val))
            within = "yes" if abs(mean - g_mean) <= max(std, g_std) else "no"
        name = "digital" if kind is None else device
        lines.append(f"| {task} | {name} | {kind or '–'} | {mean:.{n}f}{PM}{std:.{n}f} | {versus_test} | "
                     f"{versus_val} | {within} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one PyTorch thread each)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results, one JSON line per run (appended)")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--devices", default=",".join(DEVICES))
    parser.add_argument("--directions", default=",".join(KINDS))
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    parser.add_argument("--quick", action="store_true", help="tiny runs (recipes.QUICK), seeds 0 and 1")
    parser.add_argument("--summary", action="store_true", help="only print the table of the results file")
    args = parser.parse_args()
    if args.quick and args.out == RESULTS:
        parser.error("--quick runs do not go into the committed results: give --out")
    seeds = (0, 1) if args.quick else tuple(int(s) for s in args.seeds.split(","))
    todo = jobs(args.tasks.split(","), args.devices.split(","), args.directions.split(","), seeds, args.quick)
    if not args.summary:
        todo.sort(key=lambda j: j["task"] != "text")  # the long runs first
        run_missing(todo, key, run_one, args.out, args.jobs,
                    lambda r: f"{key(r)} test {r['test']:.4f} ({r['seconds']:.0f} s)")
    from hybridlab.provenance import provenance
    wanted = {key(j) for j in todo}
    results = [r for r in load(args.out, key) if key(r) in wanted]
    print(table(ordered(results)))
    print()
    print(provenance(results))


if __name__ == "__main__":
    main()
