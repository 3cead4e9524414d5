"""Data-parallel training through the command line: ``torchrun --nproc-per-node 2`` on the CPU (gloo)
gives the one-process run of the whole batches, and rank 0 alone prints.

Each case runs the real command line (tests/ddp_train.py calls :func:`hybridlab.cli.main` and
saves the trained states) twice: as two processes under ``python -m torch.distributed.run`` and
as one process. Both in float64 (the recipe's model, device and data cast by the helper), so that
what is compared is the method, not the order of float32 sums.

Tolerance. The two runs add the same numbers in a different order (two half-batch gradients, then
DDP's average, against one whole-batch gradient); Adam then divides every gradient entry by its own
running magnitude, which amplifies the relative rounding of small entries. Measured on these cases
in float32 (unit roundoff 6e-8): parameters differ by up to 9e-3 relative (vision; text 3e-4), an
amplification of about 1.5e5. In float64 (unit roundoff 1.1e-16) that predicts about 2e-11; 1.3e-12
is measured. ``RTOL = 1e-9`` leaves a factor of 50 over the prediction. A wrong weighting of the
uneven shards (23 and 22 rows, weights 46/45 and 44/45, replaced by 1) moves the parameters by
order 1 (1.2 relative, the surrogate's S) and changes the test accuracy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
HELPER = REPO / "tests" / "ddp_train.py"
RTOL = 1e-9
CASES = {
    # every batch of 45 rows splits unevenly (23 + 22; the last one, 38, evenly): the loss weights
    # matter; two epochs (the second annealed), the best one kept; low-rank ZO directions
    "vision": ["--task", "vision", "--device", "slm", "--batch-size", "45", "--epochs", "2",
               "--directions", "lowrank"],
    # sequences split over the ranks; the forward upkeep gathers both ranks' tokens; the digital
    # baseline is trained under DDP as well
    "text": ["--task", "text", "--device", "mrr", "--upkeep", "forward", "--with-digital"],
}


def train(args: list[str], save_dir: Path, processes: int) -> subprocess.CompletedProcess:
    save_dir.mkdir()
    env = {**os.environ, "HYBRIDLAB_SAVE_DIR": str(save_dir), "HYBRIDLAB_FLOAT64": "1", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    launcher = [] if processes == 1 else ["-m", "torch.distributed.run", "--standalone",
                                          f"--nproc-per-node={processes}"]
    command = [sys.executable, *launcher, str(HELPER), "train", "--quick", "--cpu", "--no-progress", "--threads", "1",
               *args]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=save_dir, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


@pytest.mark.parametrize("case", CASES)
def test_two_gloo_processes_train_like_one_process_through_the_command_line(case, tmp_path):
    parallel = train(CASES[case], tmp_path / "two", 2)
    one = train(CASES[case], tmp_path / "one", 1)

    # rank 0 alone prints: one JSON document on stdout, one summary line on stderr
    two_result, one_result = json.loads(parallel.stdout), json.loads(one.stdout)
    summaries = [line for line in parallel.stderr.splitlines() if line.startswith(f"{case} surrogate on ")]
    assert len(summaries) == 1, parallel.stderr[-3000:]
    assert (two_result["world_size"], one_result["world_size"]) == (2, 1)

    # the same result: metrics equal, losses equal to rounding
    metric = one_result["metric"]
    for key in (metric, f"val_{metric}", f"digital_{metric}"):
        if key in one_result:
            assert two_result[key] == pytest.approx(one_result[key], rel=RTOL), key
    a, b = two_result["history"], one_result["history"]
    assert (a["steps"], a["best_step"]) == (b["steps"], b["best_step"])
    assert a["train_loss"] == pytest.approx(b["train_loss"], rel=RTOL)
    assert a["val_loss"] == pytest.approx(b["val_loss"], rel=RTOL)
    # the device counters are summed over the ranks' devices: every training query is made once
    # (each rank queries its own rows), the surrogate's probes and the evaluations on every rank
    assert two_result["queries"] > one_result["queries"]

    # the same parameters (digital and device) and surrogate; the two ranks agree bit for bit
    runs = sorted(p.name.split("_")[1] for p in (tmp_path / "one").glob("rank0_*.pt"))
    assert len(runs) == (2 if "--with-digital" in CASES[case] else 1)
    for run in runs:
        reference = torch.load(tmp_path / "one" / f"rank0_{run}", weights_only=True)
        ranks = [torch.load(tmp_path / "two" / f"rank{r}_{run}", weights_only=True) for r in range(2)]
        assert ranks[0].keys() == reference.keys()
        errors = {name: relative_error(ranks[0][name], value) for name, value in reference.items() if value.numel()}
        assert max(errors.values()) <= RTOL, {k: f"{v:.1e}" for k, v in errors.items()}
        assert all(torch.equal(ranks[0][name], ranks[1][name]) for name in reference)
        assert reference[next(iter(reference))].dtype == torch.float64
