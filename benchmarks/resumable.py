"""Resumable benchmark runs: one JSON line per finished run, appended, so a stopped benchmark continues.

Used by ``robustness.py`` and ``upkeep.py``: each gives its jobs (dicts of arguments), the key that
identifies a job in its result line, and the function that runs one job in a worker process.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

Key = Callable[[dict[str, Any]], tuple]


def load(path: Path, key: Key) -> list[dict[str, Any]]:
    """Every result line of ``path`` (the last one of each job, if a job was run twice); [] if none."""
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
    """Run, in ``workers`` processes and in the given order, the jobs whose key is not in ``out`` yet;
    append each result to ``out`` as it finishes. Returns every result of ``out`` (:func:`load`)."""
    done = {key(r) for r in load(out, key)}
    todo = [j for j in jobs if key(j) not in done]
    out.parent.mkdir(parents=True, exist_ok=True)
    print(f"{len(todo)} runs to do ({len(done)} already in {out})", flush=True)
    with ProcessPoolExecutor(workers) as pool, out.open("a") as fh:
        for n, future in enumerate(as_completed([pool.submit(run_one, j) for j in todo]), 1):
            r = future.result()
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            print(f"[{n}/{len(todo)}] {describe(r)}", flush=True)
    return load(out, key)
