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


def _directions_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("directions_accuracy", ROOT / "benchmarks" / "directions_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_directions_table_gives_mean_std_paired_difference_and_verdict():
    table = _directions_module().table
    rows = [{"task": "vision", "device": None, "directions": None, "seed": s, "accuracy": a}
            for s, a in enumerate((0.9, 0.92))]
    rows += [{"task": "vision", "device": "slm", "directions": k, "seed": s, "accuracy": a}
             for k, accs in (("gaussian", (0.90, 0.94)), ("lowrank", (0.91, 0.95)), ("packed", (0.80, 0.82)))
             for s, a in enumerate(accs)]
    lines = table(rows).splitlines()
    assert lines[0].startswith("| task | device | directions | accuracy % (mean +- std) |")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0][:5] == ["vision", "digital", "-", "91.00 +- 1.41", "90.00, 92.00"]
    assert cells[1][3:] == ["92.00 +- 2.83", "90.00, 94.00", "", ""]
    assert cells[2][3:] == ["93.00 +- 2.83", "91.00, 95.00", "+1.00 +- 0.00", "yes"]
    assert cells[3][3:] == ["81.00 +- 1.41", "80.00, 82.00", "-11.00 +- 1.41", "no"]


def test_directions_benchmark_runs_quick():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "directions_accuracy.py"), "--quick", "--tasks", "vision",
           "--devices", "slm", "--directions", "gaussian,packed"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    lines = [line for line in out.splitlines() if line.startswith("| vision")]
    assert [line.split("|")[2:4] for line in lines] == [[" digital ", " - "], [" slm ", " gaussian "],
                                                        [" slm ", " packed "]]
    assert lines[2].rstrip().endswith(("| yes |", "| no |"))
