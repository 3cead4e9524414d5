"""Smoke test of the benchmark script (tiny sizes; the timings themselves are not tested)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

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


def test_step_time_compare_times_each_directions_upkeep_pair_in_one_run():
    cmd = [sys.executable, str(ROOT / "benchmarks" / "step_time.py"), "--d", "16", "--batch", "8", "--samples", "3",
           "--rank", "2", "--sketch", "4", "--steps", "1", "--workloads", "mlp", "--devices", "slm",
           "--compare", "packed:ksl,lowrank:forward"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    lines = out.strip().split("\n\n")[2].splitlines()
    assert lines[1].split() == ["workload", "device", "directions", "upkeep", "total", "device", "method", "network",
                                "layer", "surr/dig", "nondev/dig"]
    rows = [line.split() for line in lines[2:]]
    assert [r[:4] for r in rows] == [["mlp", "slm", "packed", "ksl"], ["mlp", "slm", "lowrank", "forward"]]
    for r in rows:
        total, device, method, network, layer, surr, nondev = map(float, r[4:])
        assert total > device > 0 and network > 0
        # method = total - device - network (each printed to 0.0005 ms)
        assert abs(total - device - network - method) <= 0.002


def _directions_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("directions_accuracy", ROOT / "benchmarks" / "directions_accuracy.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_directions_table_gives_mean_std_paired_differences_and_verdict():
    table = _directions_module().table

    def row(device, kind, seed, test, val, metric="accuracy", task="vision"):
        return {"task": task, "device": device, "directions": kind, "seed": seed, "metric": metric, "test": test,
                "val": val}

    rows = [row("ideal", None, s, a, a) for s, a in enumerate((0.9, 0.92))]
    rows += [row("slm", k, s, a, v) for k, accs, vals in (("gaussian", (0.90, 0.94), (0.9, 0.9)),
                                                         ("lowrank", (0.91, 0.95), (0.92, 0.94)),
                                                         ("packed", (0.80, 0.82), (0.9, 0.9)))
             for s, (a, v) in enumerate(zip(accs, vals))]
    rows += [row("mrr", k, 0, b, b + 0.1, "bits_per_char", "text") for k, b in (("gaussian", 2.5), ("packed", 2.4))]
    lines = table(rows).replace("\u00a0", " ").splitlines()  # no-break spaces around ±
    assert lines[0].startswith("| task | device | directions | test | test vs gaussian | validation vs gaussian |")
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert cells[0] == ["vision", "digital", "–", "91.00 ± 1.41", "", "", ""]
    assert cells[1][3:] == ["92.00 ± 2.83", "", "", ""]
    assert cells[2][3:] == ["93.00 ± 2.83", "+1.00 ± 0.00", "+3.00 ± 1.41", "yes"]
    assert cells[3][3:] == ["81.00 ± 1.41", "-11.00 ± 1.41", "+0.00 ± 0.00", "no"]
    # bits per character: to 0.001, as they are (lower is better)
    assert cells[5][:6] == ["text", "mrr", "packed", "2.400 ± 0.000", "-0.100 ± 0.000", "-0.100 ± 0.000"]


def test_directions_benchmark_runs_quick(tmp_path):
    out = tmp_path / "directions.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "directions_accuracy.py"), "--quick", "--tasks", "vision",
           "--devices", "slm", "--directions", "gaussian,packed", "--jobs", "1", "--out", str(out)]
    text = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True).stdout
    lines = [line for line in text.splitlines() if line.startswith("| vision")]
    assert [line.split("|")[2:4] for line in lines] == [[" digital ", " – "], [" slm ", " gaussian "],
                                                        [" slm ", " packed "]]
    assert lines[2].rstrip().endswith(("| yes |", "| no |"))
    assert "6 of 6 runs were made by this version" in text and len(out.read_text().splitlines()) == 6
    # the committed results are never written by a quick run
    with pytest.raises(subprocess.CalledProcessError):
        subprocess.run(cmd[:-2], capture_output=True, text=True, timeout=300, check=True)


def test_scaling_page_shows_the_table_of_the_committed_directions_results():
    module = _directions_module()
    results = module.load(module.RESULTS, module.key)
    assert results, "benchmarks/results/directions.jsonl is missing: run benchmarks/directions_accuracy.py"
    page = (ROOT / "book" / "scaling.md").read_text()
    assert module.table(module.ordered(results)) in page
    # the page names the code that made the runs (one fingerprint for all of them)
    made_by = {r.get("code") for r in results}
    assert len(made_by) == 1 and f"fingerprint `{made_by.pop()}`" in page


# --- the resumable runner and the recipe search's rule (benchmarks/resumable.py, benchmarks/tune_recipe.py) ---

sys.path.insert(0, str(ROOT / "benchmarks"))
import json  # noqa: E402

import resumable  # noqa: E402
import tune_recipe  # noqa: E402


def _package(root: Path, source: str) -> Path:
    (root / "pkg").mkdir(exist_ok=True)
    (root / "pkg" / "mod.py").write_text(source)
    return root / "pkg"


def test_code_hash_ignores_docstrings_and_comments_but_not_code(tmp_path):
    base = '"""Module."""\n\ndef f(x):\n    """Square."""\n    return x * x  # the square\n'
    h = resumable.code_hash(_package(tmp_path, base))
    assert h == resumable.code_hash(_package(tmp_path, base.replace("Square.", "The square of x.")
                                                   .replace("# the square", "")))
    assert h != resumable.code_hash(_package(tmp_path, base.replace("x * x", "x * x * x")))
    assert len(resumable.code_hash()) == 12  # the real package parses


def _job_result(job):
    return {"job": job, "value": job["n"] ** 2}


def _key(line):
    return tuple(sorted(line.get("job", line).items()))


def test_run_missing_reruns_lines_of_other_code_and_keeps_one_line_per_job(tmp_path):
    out = tmp_path / "results.jsonl"
    code = resumable.code_hash()
    old = [{"job": {"n": 1}, "value": -1, "code": "old"},              # made by other code: run again
           {"job": {"n": 2}, "value": -2},                            # no fingerprint: run again
           {"job": {"n": 3}, "value": 9, "code": code},               # current: kept as it is
           {"job": {"n": 9}, "value": -9, "code": "old"}]             # not a job any more: kept, not run
    out.write_text("".join(json.dumps(r) + "\n" for r in old))
    results = resumable.run_missing([{"n": n} for n in (1, 2, 3, 4)], _key, _job_result, out, 1, str)
    by = {r["job"]["n"]: r for r in results}
    assert {n: by[n]["value"] for n in by} == {1: 1, 2: 4, 3: 9, 4: 16, 9: -9}
    assert all(by[n]["code"] == code for n in (1, 2, 3, 4))
    assert len(out.read_text().splitlines()) == 5  # rewritten: the superseded lines are gone
    from hybridlab.provenance import provenance

    assert provenance(resumable.load(out, _key)).startswith("4 of 5 runs were made by this version")


def test_choose_keeps_the_default_unless_clearly_better_on_validation():
    rows = {0: {"val": -0.5, "se": 0.2}, 1: {"val": 0.0, "se": 0.0}, 2: {"val": 0.15, "se": 0.01}}
    assert tune_recipe.choose(rows, "rank") == 1                      # below the tolerance
    rows[2] = {"val": 0.6, "se": 0.4}
    assert tune_recipe.choose(rows, "rank") == 1                      # within two standard errors
    rows[2] = {"val": 0.9, "se": 0.3}
    rows[0] = {"val": 0.7, "se": 0.1}
    assert tune_recipe.choose(rows, "rank") == 2                      # the best of those clearly better
    assert tune_recipe.choose(rows, "epochs") == 1                    # a budget setting keeps its default


def test_summarise2_gains_per_cell_over_the_default_and_only_complete_comparisons():
    def line(setting, value, seed, val, metric="accuracy", task="vision"):
        job = {"task": task, "variant": "easy", "device": "mrr", "method": "surrogate", "seed": seed,
               "setting": setting, "value": value}
        return {"job": job, "val": val, "test": val, "metric": metric, "queries": 100 if value != 8 else 50,
                "reconfigurations": 10}
    results = [line("default", None, 0, 0.90), line("default", None, 1, 0.80),
               line("rank", 8, 0, 0.89), line("rank", 32, 0, 0.93),
               line("rank", 8, 1, 0.81)]                                # seed 1 lacks rank 32: left out
    rows = tune_recipe.summarise2(results)["vision", "rank"]
    assert rows[0]["cells"] == 1 and abs(rows[0]["val"] - (-1.0)) < 1e-9 and abs(rows[2]["val"] - 3.0) < 1e-9
    assert rows[1]["val"] == 0 and rows[0]["queries"] == 0.5 and rows[2]["queries"] == 1
    text = [line("default", None, 0, 2.0, "bits_per_char", "text"), line("rank", 16, 0, 2.1, "bits_per_char", "text"),
            line("rank", 64, 0, 1.9, "bits_per_char", "text")]
    rows = tune_recipe.summarise2(text)["text", "rank"]               # bits: lower is better, in percent
    assert abs(rows[0]["val"] - (-5.0)) < 1e-9 and abs(rows[2]["val"] - 5.0) < 1e-9


def test_show_robustness_says_which_code_made_the_runs(capsys):
    pytest.importorskip("IPython")
    from hybridlab import experiments as ex
    from hybridlab.provenance import code_fingerprint

    def line(method, device, test, code):
        return {"task": "vision", "variant": "easy", "device": device, "method": method, "seed": 0,
                "metric": "accuracy", "test": test, "code": code}
    lines = [line("digital", "ideal", 0.9, code_fingerprint())] + [
        line(m, "mrr", 0.8, code_fingerprint() if m != "frozen" else "0123456789ab")
        for m in ("oracle", "surrogate", "static", "frozen")]
    ex.show_robustness(lines, "vision")
    out = capsys.readouterr().out
    assert f"4 of 5 runs were made by this version of hybridlab's code (fingerprint {code_fingerprint()})" in out
    assert "the others by other code" in out
    ex.show_robustness(lines[:4], "vision")
    out = capsys.readouterr().out
    assert "4 of 4 runs" in out and "other code" not in out
