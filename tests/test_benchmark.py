"""Smoke test of the benchmark script (tiny sizes; the timings themselves are not tested)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_step_time_prints_one_row_per_workload_and_device():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--d", "16", "--batch", "8", "--samples", "3",
           "--rank", "2", "--sketch", "4", "--steps", "1", "--workloads", "layer,mlp,cnn", "--devices", "ideal,mzi"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.strip().splitlines()
    assert "d=16 B=8 M=3 r=2 s=4" in lines[0]
    header = lines[1].split()
    assert header[:2] == ["workload", "device"] and header[-1] == "surr/dig"
    rows = [line.split() for line in lines[2:]]
    assert [(r[0], r[1]) for r in rows] == [(w, d) for w in ("layer", "mlp", "cnn") for d in ("ideal", "mzi")]
    for r in rows:
        digital, oracle, surrogate, sim, ratio_o, ratio_s = map(float, r[2:])
        assert min(digital, oracle, surrogate, sim) > 0
        # the printed ratios are the ratios of the printed times (times rounded to 0.005 ms, ratios to 0.05)
        for ratio, t in ((ratio_s, surrogate), (ratio_o, oracle)):
            lo, hi = (t - 0.005) / (digital + 0.005), (t + 0.005) / max(digital - 0.005, 1e-9)
            assert lo - 0.05 <= ratio <= hi + 0.05, (r, ratio, lo, hi)
