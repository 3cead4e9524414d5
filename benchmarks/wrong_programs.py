"""Plant known wrong programs one at a time (bugs that once passed the suite), run the tests that reach
each, restore: every one must fail at least one test.

Usage, in a clean checkout (tracked files unmodified; the script edits and restores them):
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/wrong_programs.py [name-substring ...]

For every row: assert the old text occurs exactly once in the file, replace it with the new text,
run pytest (-x -q -p no:cacheprovider) on the given test files in a subprocess, restore the file
(``git checkout -- <file>``), and print a markdown table. A mutant the targeted files miss is run
again against the whole ``tests/`` (without the notebook / book / assignment tests).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

LAYER = ["tests/test_layer_formulas.py", "tests/test_method_formulas.py", "tests/test_layer.py"]
DEVICES = ["tests/test_device_physics.py", "tests/test_devices.py"]
TRAIN = ["tests/test_layer_formulas.py", "tests/test_method_formulas.py", "tests/test_training.py"]
WHOLE = ["tests/", "--ignore=tests/test_chapters.py", "--ignore=tests/test_book.py",
         "--ignore=tests/test_assignments.py"]

# (name, file, old text, new text, test files)
MUTANTS: list[tuple[str, str, str, str, list[str]]] = [
    ("surrogate backward with S transposed", "hybridlab/layer.py",
     "return ((v @ self.U) @ self.S) @ self.V.T", "return ((v @ self.U) @ self.S.T) @ self.V.T", LAYER),
    ("V in place of U in the surrogate backward", "hybridlab/layer.py",
     "return ((v @ self.U) @ self.S) @ self.V.T", "return ((v @ self.V) @ self.S) @ self.V.T", LAYER),
    ("zo_only input gradient sign flipped (layer)", "hybridlab/layer.py",
     "return zo_input_gradient(", "return -zo_input_gradient(", LAYER),
    ("zo_only input gradient sign flipped (zo.zo_input_gradient)", "hybridlab/zo.py",
     "return (diff.to(U.dtype).unsqueeze(-1) * U).sum(0) / M",
     "return -(diff.to(U.dtype).unsqueeze(-1) * U).sum(0) / M", LAYER),
    ("fa feedback sign flipped", "hybridlab/layer.py",
     "return v @ self.B_fb", "return -(v @ self.B_fb)", LAYER),
    ("dfa feedback sign flipped", "hybridlab/layer.py",
     "return e @ self.B_fb", "return -(e @ self.B_fb)", LAYER),
    ("cached upkeep keeps old-parameter queries", "hybridlab/layer.py",
     "self.F_Z = F_new[r:]", "self.F_Z = F_old[r:]", LAYER),
    ("gain calibration inverted", "hybridlab/layer.py",
     "self.gain.copy_(xs.pow(2).mean().sqrt() / ys.pow(2).mean().sqrt().clamp_min(1e-12))",
     "self.gain.copy_(ys.pow(2).mean().sqrt() / xs.pow(2).mean().sqrt().clamp_min(1e-12))", LAYER),
    ("SLM crosstalk without (1 - c)", "hybridlab/devices/slm.py",
     "phi = (1.0 - self.crosstalk) * phi + self.crosstalk * neighbour_mean(phi)",
     "phi = phi + self.crosstalk * neighbour_mean(phi)", DEVICES),
    ("MRR crosstalk halved", "hybridlab/devices/mrr.py",
     "phi = phi + self.crosstalk * neighbour_sum(phi)",
     "phi = phi + 0.5 * self.crosstalk * neighbour_sum(phi)", DEVICES),
    ("MZI beam-splitter errors swapped", "hybridlab/devices/mzi.py",
     "eps1, eps2 = (self.eps[0], self.eps[1])", "eps1, eps2 = (self.eps[1], self.eps[0])", DEVICES),
    ("drift grows like steps, not sqrt(steps)", "hybridlab/devices/base.py",
     "alpha=self.drift * math.sqrt(steps)", "alpha=self.drift * steps", DEVICES),
    ("read-out noise doubled", "hybridlab/devices/base.py",
     "keepdim=True).sqrt_().mul_(self.noise)", "keepdim=True).sqrt_().mul_(2 * self.noise)", DEVICES),
    ("annealing no longer divides lr by 10", "hybridlab/train.py",
     'group["lr"] /= 10', 'group["lr"] /= 1', TRAIN),
]


def run_pytest(args: list[str]) -> tuple[bool, str]:
    """(caught, first failing test with its reason) for one pytest run."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", COLUMNS="400")
    proc = subprocess.run([PY, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "-rfE", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode == 0:
        return False, ""
    m = re.search(r"^(?:FAILED|ERROR) (\S+)(?: - (.*))?$", proc.stdout, re.M)
    if m is None:
        return True, f"(pytest exit {proc.returncode}) " + proc.stdout.strip().splitlines()[-1]
    reason = (m.group(2) or "").replace("|", "\\|")
    return True, f"`{m.group(1)}`" + (f": {reason[:110]}" if reason else "")


def main(filters: list[str]) -> int:
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                            capture_output=True, text=True).stdout
    if status.strip():
        sys.exit(f"the working tree has changes to tracked files; commit or restore them first:\n{status}")
    print("| wrong program | file:line | edit | caught? | first failing test | seconds |")
    print("|---|---|---|---|---|---|")
    missed = 0
    for name, file, old, new, tests in MUTANTS:
        if filters and not any(f.lower() in name.lower() for f in filters):
            continue
        path = ROOT / file
        text = path.read_text()
        count = text.count(old)
        assert count == 1, f"{name}: {old!r} occurs {count} times in {file} (expected exactly once)"
        line = text[: text.index(old)].count("\n") + 1
        path.write_text(text.replace(old, new))
        t0 = time.monotonic()
        try:
            caught, first = run_pytest(tests)
            where = "targeted files"
            if not caught:
                caught, first = run_pytest(WHOLE)
                where = "whole suite"
        finally:
            subprocess.run(["git", "checkout", "--", file], cwd=ROOT, check=True)
        assert path.read_text() == text, f"{file} was not restored"
        seconds = time.monotonic() - t0
        missed += not caught
        verdict = f"yes ({where})" if caught else "**NO**"
        print(f"| {name} | {file}:{line} | `{old}` -> `{new}` | {verdict} | {first or '-'} | {seconds:.0f} |",
              flush=True)
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
