"""The robustness table: one shared recipe on easy and hard data, every device kind, every way of training it.

    python benchmarks/robustness.py --jobs 2                          # all runs (hours on 2 cores)
    python benchmarks/robustness.py --jobs 2 --only vision-easy       # one task and variant
    python benchmarks/robustness.py --summary                         # the table from the results file

For each task and variant (vision and audio, easy and hard; text), each device kind (SLM, MRR, MZI)
and seeds 0-2: the digital network, and the hybrid network trained with exact gradients through the
simulator (``oracle``, impossible on hardware: the ceiling), with the method (``surrogate``), with a
surrogate fitted once (``static``) and with the device never trained (``frozen``). Every run is one
:func:`hybridlab.recipes.run` with the committed defaults (one PyTorch thread per process); the
table puts the gaps side by side. Results are appended to ``--out`` one JSON line per run, so an
interrupted benchmark continues where it stopped; the book's task chapters read this file.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path
from typing import Any

from resumable import load, run_missing, run_recipe

RESULTS = Path(__file__).with_name("results") / "robustness.jsonl"
SETTINGS = (("vision", "easy"), ("vision", "hard"), ("audio", "easy"), ("audio", "hard"), ("text", "easy"))
DEVICES = ("slm", "mrr", "mzi")
METHODS = ("oracle", "surrogate", "static", "frozen")
SEEDS = (0, 1, 2)


def jobs(only: str | None = None) -> list[dict[str, Any]]:
    out = []
    for (task, variant), seed in itertools.product(SETTINGS, SEEDS):
        if only and f"{task}-{variant}" != only:
            continue
        out.append({"task": task, "variant": variant, "device": "ideal", "method": "digital", "seed": seed})
        out += [{"task": task, "variant": variant, "device": d, "method": m, "seed": seed}
                for d, m in itertools.product(DEVICES, METHODS)]
    return out


def key(job: dict[str, Any]) -> tuple:
    return tuple(job[k] for k in ("task", "variant", "device", "method", "seed"))


def run_one(job: dict[str, Any]) -> dict[str, Any]:
    r, seconds = run_recipe(job["task"], job["device"], job["method"], seed=job["seed"], variant=job["variant"])
    m = r["metric"]
    return {**job, "metric": m, "test": r[m], "val": r[f"val_{m}"], "queries": r["queries"],
            "reconfigurations": r["reconfigurations"], "seconds": seconds,
            "hybridlab_version": r["hybridlab_version"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one PyTorch thread each)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results, one JSON line per run (appended)")
    parser.add_argument("--only", help="one task and variant, e.g. vision-hard")
    parser.add_argument("--summary", action="store_true", help="only print the table of the results file")
    args = parser.parse_args()
    if not args.summary:
        todo = sorted(jobs(args.only), key=lambda j: (j["task"] != "text", j["variant"] != "hard"))  # long first
        run_missing(todo, key, run_one, args.out, args.jobs,
                    lambda r: f"{key(r)} test {r['test']:.4f} ({r['seconds']:.0f} s)")
    from hybridlab.experiments import robustness_rows
    from hybridlab.provenance import provenance

    results = load(args.out, key)
    for row in robustness_rows(results):
        print(json.dumps(row))
    print(provenance(results))


if __name__ == "__main__":
    main()
