"""Accuracy of the cheap zero-order directions in training: Gaussian against low-rank and packed signs.

For each task (vision, audio; the easy data), device (mrr, slm), kind of ZO direction (gaussian,
lowrank, packed) and seed (0, 1, 2), one run of :func:`hybridlab.recipes.run` with the committed
defaults (method ``surrogate``), ``directions`` the only setting changed; the digital network of
each seed is the reference row. A seed fixes the weights, the device, the batches and the
direction stream, so the kinds are compared seed by seed as well.

Printed (Markdown): test accuracy in % as mean +- standard deviation over the seeds (``statistics.stdev``),
the seeds' values, the paired difference to ``gaussian`` (mean +- std of the per-seed differences)
and ``within spread``: ``yes`` when the mean differs from the Gaussian mean by at most the larger of
the two seed standard deviations.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/directions_accuracy.py --json directions.json
    python benchmarks/directions_accuracy.py --quick            # a smoke run (tiny runs, 2 seeds)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from hybridlab.recipes import run


def accuracy_runs(tasks: list[str], devices: list[str], kinds: list[str], seeds: list[int], *,
                  quick: bool = False) -> list[dict]:
    """One row per run: task, device (``None`` for digital), directions, seed, accuracy."""
    rows = []
    for task in tasks:
        jobs = [("digital", None, None)] + [("surrogate", d, k) for d in devices for k in kinds]
        for method, device, kind in jobs:
            for seed in seeds:
                options = {} if kind is None else {"directions": kind}
                r = run(task, device or "ideal", method, seed=seed, quick=quick, variant="easy", **options)
                rows.append({"task": task, "device": device, "directions": kind, "seed": seed,
                             "accuracy": r["accuracy"], "queries": r["queries"]})
                print(f"{task} {device or 'digital'} {kind or ''} seed {seed}: {100 * r['accuracy']:.2f} %",
                      file=sys.stderr, flush=True)
    return rows


def _spread(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def table(rows: list[dict]) -> str:
    """The Markdown table of :func:`accuracy_runs`' rows (accuracies in %)."""
    groups: dict[tuple, dict[int, float]] = {}
    for r in rows:
        groups.setdefault((r["task"], r["device"], r["directions"]), {})[r["seed"]] = 100 * r["accuracy"]
    lines = ["| task | device | directions | accuracy % (mean +- std) | seeds | vs gaussian (paired) | within spread |",
             "|---|---|---|---|---|---|---|"]
    for (task, device, kind), by_seed in groups.items():
        mean, std = _spread(list(by_seed.values()))
        seeds = ", ".join(f"{v:.2f}" for v in by_seed.values())
        versus, within = "", ""
        gauss = groups.get((task, device, "gaussian"))
        if kind not in (None, "gaussian") and gauss is not None:
            paired = [by_seed[s] - gauss[s] for s in by_seed if s in gauss]
            d_mean, d_std = _spread(paired)
            g_mean, g_std = _spread(list(gauss.values()))
            versus = f"{d_mean:+.2f} +- {d_std:.2f}"
            within = "yes" if abs(mean - g_mean) <= max(std, g_std) else "no"
        lines.append(f"| {task} | {device or 'digital'} | {kind or '-'} | {mean:.2f} +- {std:.2f} | {seeds} | "
                     f"{versus} | {within} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="vision,audio")
    parser.add_argument("--devices", default="mrr,slm")
    parser.add_argument("--directions", default="gaussian,lowrank,packed")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--quick", action="store_true", help="tiny runs (recipes.QUICK), seeds 0 and 1")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--json", help="also write the runs' rows here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    seeds = [0, 1] if args.quick else [int(s) for s in args.seeds.split(",")]
    rows = accuracy_runs(args.tasks.split(","), args.devices.split(","), args.directions.split(","), seeds,
                         quick=args.quick)
    print(f"test accuracy over seeds {', '.join(map(str, seeds))} (recipes.run defaults, easy data, "
          f"torch {torch.__version__}, {args.threads} thread(s)" + (", quick" if args.quick else "") + ")\n")
    print(table(rows))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
