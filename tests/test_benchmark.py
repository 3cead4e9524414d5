"""Smoke test of the benchmark script (tiny sizes; the timings themselves are not tested)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_time_prints_one_row_per_workload_and_device():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--d", "16", "--batch", "8", "--samples", "3",
           "--rank", "2", "--sketch", "4", "--steps", "1", "--workloads", "layer,mlp,cnn", "--devices", "ideal,mzi",
           "--directions", "lowrank"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    medians, split = out.strip().split("\n\n")
    lines = medians.splitlines()
    assert "d=16 B=8 M=3 r=2 s=4; directions=lowrank" in lines[0]
    header = lines[1].split()
    assert header[:2] == ["workload", "device"] and header[-1] == "surr/dig"
    rows = [line.split() for line in lines[2:]]
    pairs = [(w, d) for w in ("layer", "mlp", "cnn") for d in ("ideal", "mzi")]
    assert [(r[0], r[1]) for r in rows] == pairs
    for r in rows:
        digital, oracle, surrogate, sim, ratio_o, ratio_s = map(float, r[2:])
        assert min(digital, oracle, surrogate, sim) > 0
        # the printed ratios are the ratios of the printed times (times rounded to 0.005 ms, ratios to 0.05)
        for ratio, t in ((ratio_s, surrogate), (ratio_o, oracle)):
            lo, hi = (t - 0.005) / (digital + 0.005), (t + 0.005) / max(digital - 0.005, 1e-9)
            assert lo - 0.05 <= ratio <= hi + 0.05, (r, ratio, lo, hi)

    # the split: exclusive sections that add up to the step (each printed to 0.0005 ms)
    lines = split.splitlines()
    assert lines[1].split() == ["workload", "device", "total", "device", "random", "upkeep", "rest", "digital",
                                "nondev/dig"]
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == pairs
    for r in rows:
        total, device, random, upkeep, rest, digital, ratio = map(float, r[2:])
        assert min(device, random, upkeep, rest) >= 0 and device > 0 and random > 0 and digital > 0
        assert abs(device + random + upkeep + rest - total) <= 0.0025
        # ratio rounded to 0.005; total, device and digital each to 0.0005 ms
        assert abs(ratio - (total - device) / digital) <= 0.005 + (0.001 + 0.0005 * ratio) / digital
