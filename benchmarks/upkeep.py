"""The surrogate's upkeeps against each other and against digital, with and without read-out noise.

    python benchmarks/upkeep.py --jobs 2              # all runs (about 15 minutes on 2 cores)
    python benchmarks/upkeep.py --summary             # the table from the results file

On the vision task (easy variant, the committed defaults otherwise), for each device kind (SLM, MRR,
MZI), read-out noise 0 and 1 % of the output scale, and seeds 0-2: the method with the ``forward``
upkeep (the recipe's default: the surrogate refitted from the forward pass's own read-outs), with the
reference implicit projector-splitting update (``ksl``) and with no upkeep (``none``, the static
surrogate), and the digital network. Every run is one :func:`hybridlab.recipes.run` (one PyTorch
thread per process; with noise the zero-order step follows the noise, as ``train --noise`` does).
Results are appended to ``--out``, one JSON line per run, so an interrupted benchmark continues where
it stopped.

The summary prints, per device and noise level, the mean test accuracy of each upkeep over the
seeds, the forward upkeep's distance to digital and to ``ksl``, and whether ``forward`` spent exactly
the queries and reconfigurations of ``none`` in training (the device's own counters at the end of
training, seed by seed; restoring the kept state for the test can cost one reconfiguration more or
less, depending on which epoch was kept).
"""

from __future__ import annotations

import argparse
import itertools
from collections import defaultdict
from pathlib import Path
from typing import Any

from resumable import load, run_missing, run_recipe

RESULTS = Path(__file__).with_name("results") / "upkeep.jsonl"
DEVICES = ("slm", "mrr", "mzi")
UPKEEPS = ("forward", "ksl", "none")
NOISES = (0.0, 0.01)
SEEDS = (0, 1, 2)


def jobs() -> list[dict[str, Any]]:
    out = [{"device": "ideal", "method": "digital", "upkeep": None, "noise": 0.0, "seed": s} for s in SEEDS]
    out += [{"device": d, "method": "surrogate", "upkeep": u, "noise": n, "seed": s}
            for d, n, u, s in itertools.product(DEVICES, NOISES, UPKEEPS, SEEDS)]
    return out


def key(job: dict[str, Any]) -> tuple:
    return tuple(job[k] for k in ("device", "method", "upkeep", "noise", "seed"))


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    options = {"noise": job["noise"]} if job["noise"] else None
    extra = {"upkeep": job["upkeep"]} if job["upkeep"] else {}
    r, seconds = run_recipe("vision", job["device"], job["method"], seed=job["seed"], device_options=options,
                            **extra)
    hist = r["history"]  # its last entry: the end of training, before the kept state is restored and tested
    return {**job, "test": 100 * r["accuracy"], "val": 100 * r["val_accuracy"], "queries": r["queries"],
            "reconfigurations": r["reconfigurations"], "train_queries": hist["queries"][-1],
            "train_reconfigurations": hist["reconfigurations"][-1], "mu": r["settings"]["mu"],
            "seconds": seconds, "hybridlab_version": r["hybridlab_version"]}


def summarise(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per (device, noise): mean accuracy of every upkeep, gaps, and the counter check."""
    acc: dict[tuple, dict[int, float]] = defaultdict(dict)
    budget: dict[tuple, dict[int, tuple[int, int]]] = defaultdict(dict)
    for r in lines:
        acc[(r["device"], r["upkeep"], r["noise"])][r["seed"]] = r["test"]
        budget[(r["device"], r["upkeep"], r["noise"])][r["seed"]] = (r["train_queries"], r["train_reconfigurations"])
    digital = acc.get(("ideal", None, 0.0), {})
    d_mean = sum(digital.values()) / len(digital) if digital else None
    rows = []
    for device, noise in itertools.product(DEVICES, NOISES):
        row: dict[str, Any] = {"device": device, "noise": noise, "digital": d_mean}
        for u in UPKEEPS:
            vals = acc.get((device, u, noise), {})
            row[u] = sum(vals.values()) / len(vals) if vals else None
            row[f"{u}_n"] = len(vals)
        f, k = row["forward"], row["ksl"]
        row["forward_vs_digital"] = None if f is None or d_mean is None else f - d_mean
        row["forward_vs_ksl"] = None if f is None or k is None else f - k
        fb, nb = budget.get((device, "forward", noise), {}), budget.get((device, "none", noise), {})
        common = sorted(set(fb) & set(nb))
        row["same_budget_as_none"] = bool(common) and all(fb[s] == nb[s] for s in common)
        rows.append(row)
    return rows


def print_summary(lines: list[dict[str, Any]]) -> None:
    def f(x: float | None, fmt: str = "{:6.2f}") -> str:
        return "   —  " if x is None else fmt.format(x)

    print("device noise | digital forward   ksl   none | fwd-dig fwd-ksl | fwd budget == none")
    for r in summarise(lines):
        print(f"{r['device']:6s} {r['noise']:5.2f} | {f(r['digital'])} {f(r['forward'])} {f(r['ksl'])} "
              f"{f(r['none'])} | {f(r['forward_vs_digital'], '{:+6.2f}')} {f(r['forward_vs_ksl'], '{:+6.2f}')} | "
              f"{r['same_budget_as_none']}  (n = {r['forward_n']}/{r['ksl_n']}/{r['none_n']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=2, help="worker processes (one PyTorch thread each)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results, one JSON line per run (appended)")
    ap.add_argument("--summary", action="store_true", help="only print the table of the results file")
    args = ap.parse_args()
    if args.summary:
        done = load(args.out, key)
    else:
        done = run_missing(jobs(), key, run_one, args.out, args.jobs,
                           lambda r: f"{r['device']:5s} {r['upkeep']!s:8s} noise {r['noise']:.2f} seed {r['seed']}: "
                                     f"{r['test']:.2f} % ({r['seconds']:.0f} s)")
    print_summary(done)
    from hybridlab.provenance import provenance

    print(provenance(done))


if __name__ == "__main__":
    main()
