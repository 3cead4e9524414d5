"""Resumable benchmark runs: one JSON line per finished run, appended, so a stopped benchmark continues.

Used by ``robustness.py``, ``upkeep.py``, ``tune_recipe.py`` and ``directions_accuracy.py``: each gives
its jobs (dicts of arguments), the key that identifies a job in its result line, and the function that
runs one job in a worker process (each a :func:`run_recipe`).

Every line records :func:`code_hash`, a fingerprint of the package's code, so that a result made by
older code is never taken for a current one: :func:`run_missing` runs again every job whose line was
made by other code (or by a runner that did not record it).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

from hybridlab.provenance import code_fingerprint as code_hash  # the fingerprint every result line records

Key = Callable[[dict[str, Any]], tuple]


def run_recipe(task: str, device: str, method: str, **options: Any) -> tuple[dict[str, Any], float]:
    """One :func:`hybridlab.recipes.run` as a benchmark worker runs it: on the CPU, with one PyTorch
    thread (so that the numbers do not depend on the machine's load). Returns the run's result and its
    wall-clock seconds, data loading included."""
    import torch

    torch.set_num_threads(1)
    from hybridlab import recipes

    t0 = time.perf_counter()
    r = recipes.run(task, device, method, use_cuda=False, **options)
    return r, time.perf_counter() - t0


def load(path: Path, key: Key) -> list[dict[str, Any]]:
    """Every result line of ``path`` (the last one of each job, if a job was run twice); [] if none.
    :func:`hybridlab.provenance.provenance` says how many of them the present code made."""
    if not path.is_file():
        return []
    by = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            by[key(r)] = r
    return list(by.values())


def run_missing(jobs: Sequence[dict[str, Any]], key: Key, run_one: Callable[[dict[str, Any]], dict[str, Any]],
                out: Path, workers: int, describe: Callable[[dict[str, Any]], str]) -> list[dict[str, Any]]:
    """Run, in ``workers`` processes and in the given order, the jobs that have no line in ``out`` made by
    the present code; append each result, with the code's fingerprint, to ``out`` as it finishes. When
    every job is done, rewrite ``out`` with only the latest line of each job. Returns every result of
    ``out`` (:func:`load`)."""
    code = code_hash()
    lines = load(out, key)
    done = {key(r) for r in lines if r.get("code") == code}
    todo = [j for j in jobs if key(j) not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    stale = sum(key(r) not in done for r in lines)
    print(f"{len(todo)} runs to do ({len(done)} already in {out}; {stale} lines there from other code)", flush=True)
    with ProcessPoolExecutor(workers) as pool, out.open("a") as fh:
        for n, future in enumerate(as_completed([pool.submit(run_one, j) for j in todo]), 1):
            r = {**future.result(), "code": code}
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            print(f"[{n}/{len(todo)}] {describe(r)}", flush=True)
    results = load(out, key)
    out.write_text("".join(json.dumps(r) + "\n" for r in results))
    return results
