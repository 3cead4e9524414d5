"""Checkpoints and output files: a resumed run ends with the numbers of an uninterrupted one (in-process,
after a killed process, against a served device that died), damaged or foreign checkpoints give clear
errors, files are never half-written, output paths are checked before training, and settings that
make training meaningless are reported."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from hybridlab import cli, recipes
from hybridlab.checkpoint import FORMAT, Checkpoint, atomic_write, check_output_path
from hybridlab.recipes import SettingWarning, run
from hybridlab.remote import Faults, RetryPolicy, start_server

REPO = Path(__file__).resolve().parents[1]
NOISY = {"noise": 0.01, "fab_error": 0.05}
RUNS = {"vision": {"epochs": 4}, "text": {"steps": 8, "checkpoint_every": 3}}


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def same_run(a: dict, b: dict) -> None:
    """Same metric, validation metric, device counters and history (wall seconds aside)."""
    m = a["metric"]
    assert (a[m], a[f"val_{m}"], a["queries"], a["reconfigurations"]) == \
           (b[m], b[f"val_{m}"], b["queries"], b["reconfigurations"])
    ha, hb = dict(a["history"]), dict(b["history"])
    ha.pop("seconds"), hb.pop("seconds")
    assert ha == hb


def interrupted_after(saves: int, monkeypatch) -> None:
    """Make the next run stop (KeyboardInterrupt) right after its ``saves``-th checkpoint."""
    original, done = Checkpoint.save, []

    def save(self, *args, **kwargs):
        original(self, *args, **kwargs)
        done.append(1)
        if len(done) == saves:
            raise KeyboardInterrupt

    monkeypatch.setattr(Checkpoint, "save", save)


# ------------------------------------------------------------------------------- resume = uninterrupted
@pytest.mark.parametrize("task", ["vision", "text"])
def test_a_run_stopped_and_resumed_ends_as_an_uninterrupted_one(task, tmp_path, monkeypatch):
    common = dict(quick=True, device_options=NOISY, use_cuda=False, **RUNS[task])
    whole = run(task, "mrr", "surrogate", checkpoint=tmp_path / "whole.pt", **common)
    interrupted_after(2, monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        run(task, "mrr", "surrogate", checkpoint=tmp_path / "part.pt", **common)
    monkeypatch.undo()
    saved = torch.load(tmp_path / "part.pt", weights_only=True)
    assert saved["format"] == FORMAT and 0 < saved["loop"]["position"] < (common.get("epochs") or common["steps"])
    resumed = run(task, "mrr", "surrogate", checkpoint=tmp_path / "part.pt", resume=True, **common)
    same_run(resumed, whole)
    # a finished run resumed again only restores its result: no training, the same numbers
    again = run(task, "mrr", "surrogate", checkpoint=tmp_path / "part.pt", resume=True, **common)
    same_run(again, whole)


def test_resume_without_a_file_starts_and_an_existing_file_needs_resume(tmp_path):
    common = dict(quick=True, use_cuda=False, epochs=2)
    fresh = run("vision", "slm", "static", checkpoint=tmp_path / "c.pt", resume=True, **common)
    assert (tmp_path / "c.pt").is_file()
    same_run(fresh, run("vision", "slm", "static", **common))
    with pytest.raises(ValueError, match="exists: continue it with resume=True"):
        run("vision", "slm", "static", checkpoint=tmp_path / "c.pt", **common)
    with pytest.raises(ValueError, match="need a checkpoint file"):
        run("vision", "slm", "static", resume=True, **common)


def test_a_killed_process_resumes_from_its_checkpoint(tmp_path):
    """The command line killed (SIGKILL) after its first checkpoints; the same command with --resume
    ends with the result of an uninterrupted run."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    args = ["train", "--task", "vision", "--device", "mzi", "--quick", "--epochs", "30", "--noise", "0.01",
            "--no-progress", "--cpu", "--threads", "1"]
    ckpt = tmp_path / "run.pt"
    proc = subprocess.Popen([sys.executable, "-m", "hybridlab", *args, "--checkpoint", str(ckpt),
                             "--out", str(tmp_path / "never.json")], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if ckpt.exists() and torch.load(ckpt, weights_only=True)["loop"]["position"] >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    position = torch.load(ckpt, weights_only=True)["loop"]["position"]  # whole, whatever the moment of the kill
    assert 2 <= position < 30 and not (tmp_path / "never.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "a temporary file was left behind"
    assert cli.main([*args, "--checkpoint", str(ckpt), "--resume", "--out", str(tmp_path / "resumed.json")]) == 0
    assert cli.main([*args, "--out", str(tmp_path / "whole.json")]) == 0
    same_run(*(json.loads((tmp_path / f"{k}.json").read_text()) for k in ("resumed", "whole")))


def test_a_run_on_a_served_device_that_died_resumes_on_a_new_server(tmp_path):
    """The server dies for good mid-run: the run fails with a clear error, its checkpoint is whole, and the
    run resumed against a fresh server (same kind and physics) ends as an uninterrupted in-process run."""
    common = dict(quick=True, use_cuda=False, epochs=4)
    local = run("vision", "slm", "surrogate", device_options=NOISY, **common)
    options = {**NOISY, "seed": 0}
    retry = RetryPolicy(attempts=2, timeout=1.0, backoff=0.1)
    ckpt = tmp_path / "served.pt"
    with start_server("slm", options=options, faults=Faults(die_after=80), max_restarts=0, use_cuda=False,
                      threads=1) as server:
        with pytest.raises(ValueError, match=r"failed 2 times"):
            run("vision", "slm", "surrogate", remote=server.address, remote_retry=retry, checkpoint=ckpt, **common)
    saved = torch.load(ckpt, weights_only=True)
    assert 1 <= saved["loop"]["position"] < 4
    with start_server("slm", options=options, use_cuda=False, threads=1) as server:
        resumed = run("vision", "slm", "surrogate", remote=server.address, checkpoint=ckpt, resume=True, **common)
    same_run(resumed, local)


# ------------------------------------------------------------------------------- clear errors
def test_damaged_foreign_and_mismatched_checkpoints_are_refused(tmp_path):
    common = dict(quick=True, use_cuda=False, epochs=2)
    good = tmp_path / "good.pt"
    run("vision", "slm", "static", checkpoint=good, **common)
    data = good.read_bytes()
    cases = {"truncated.pt": data[: len(data) // 2], "noise.pt": os.urandom(2000), "empty.pt": b""}
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=rf"cannot read the checkpoint .*{name}.*damaged or not a hybridlab"):
            run("vision", "slm", "static", checkpoint=tmp_path / name, resume=True, **common)
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="is not a hybridlab checkpoint"):
        run("vision", "slm", "static", checkpoint=tmp_path / "other.pt", resume=True, **common)
    with pytest.raises(ValueError, match=r"written by another run \(args.seed: 0 in the checkpoint, 1 now\)"):
        run("vision", "slm", "static", seed=1, checkpoint=good, resume=True, **common)
    with pytest.raises(ValueError, match=r"args.method: 'static' in the checkpoint, 'surrogate' now"):
        run("vision", "slm", "surrogate", checkpoint=good, resume=True, **common)
    default_lr = recipes.settings("vision")["lr"]
    with pytest.raises(ValueError, match=rf"settings.lr: {default_lr} in the checkpoint, 0.02 now"):
        run("vision", "slm", "static", lr=0.02, checkpoint=good, resume=True, **common)
    assert good.read_bytes() == data  # a refused resume leaves the checkpoint as it was


def test_a_checkpoint_that_does_not_fit_the_model_is_refused(tmp_path):
    model, other = torch.nn.Linear(3, 2), torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    Checkpoint(tmp_path / "c.pt").save(model, opt, {}, {"position": 1})
    with pytest.raises(ValueError, match="does not fit this model or optimizer"):
        Checkpoint(tmp_path / "c.pt", resume=True).load(other, torch.optim.AdamW(other.parameters()), {})
    with pytest.raises(ValueError, match="holds the generators"):
        Checkpoint(tmp_path / "c.pt", resume=True).load(model, opt, {"batch_order": torch.Generator()})


def test_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    target = tmp_path / "result.json"
    atomic_write(target, "old\n")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="No space left"):
        atomic_write(target, "new\n")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.json"]  # no temporary file left
    monkeypatch.undo()

    # a checkpoint whose writing is interrupted keeps the previous one, loadable
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters())
    ckpt = Checkpoint(tmp_path / "c.pt")
    ckpt.save(model, opt, {}, {"position": 1})
    before = (tmp_path / "c.pt").read_bytes()

    def killed_while_writing(fd):  # the process is interrupted after the bytes went out, before the rename
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", killed_while_writing)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save(model, opt, {}, {"position": 2})
    monkeypatch.undo()
    assert (tmp_path / "c.pt").read_bytes() == before
    assert torch.load(tmp_path / "c.pt", weights_only=True)["loop"]["position"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pt", "result.json"]


def test_output_paths_are_checked_before_training(tmp_path, capsys, monkeypatch):
    (tmp_path / "a_file").write_text("x")
    bad = {str(tmp_path / "missing" / "r.json"): "does not exist",
           str(tmp_path): "is a folder",
           str(tmp_path / "a_file" / "r.json"): "is not a folder"}
    for path, match in bad.items():
        with pytest.raises(ValueError, match=match):
            check_output_path(path, "--out")
    assert check_output_path(tmp_path / "r.json") == tmp_path / "r.json"

    def no_training(*args, **kwargs):
        raise AssertionError("training started before the output paths were checked")

    monkeypatch.setattr(cli, "run", no_training)
    for option in ("--out", "--checkpoint"):
        for path, match in bad.items():
            if option == "--checkpoint":
                monkeypatch.setattr(recipes, "load_data", no_training)
                monkeypatch.setattr(cli, "run", run)
            code = cli.main(["train", "--task", "vision", "--quick", "--no-progress", option, path])
            err = capsys.readouterr().err
            assert code == 2 and match in err and err.count("\n") == 1, err
    assert cli.main(["train", "--task", "vision", "--quick", "--resume"]) == 2
    assert "--resume and --checkpoint-every need --checkpoint FILE" in capsys.readouterr().err


def test_a_result_that_cannot_be_written_goes_to_stdout(tmp_path, capsys, monkeypatch):
    def full_disk(path, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(cli, "atomic_write", full_disk)
    code = cli.main(["train", "--task", "vision", "--quick", "--no-progress", "--out", str(tmp_path / "r.json")])
    out, err = capsys.readouterr()
    assert code == 2 and "cannot write --out" in err and "the result is on stdout" in err
    assert json.loads(out)["task"] == "vision"


# ------------------------------------------------------------------------------- meaningless settings
def test_the_noise_sets_the_default_zero_order_step():
    base = recipes.settings("vision", "mrr")["mu"]
    assert recipes.settings("vision", "mrr", device_options={"noise": 0.0})["mu"] == base
    for noise in (1e-4, 0.01, 0.05, 1.0):
        mu = recipes.settings("vision", "mrr", device_options={"noise": noise})["mu"]
        assert mu == recipes.recommended_mu(noise, base)
        assert mu == min(max(base, recipes.NOISE_MU * noise), max(base, recipes.MAX_MU))
    assert recipes.settings("vision", "mrr", device_options={"noise": 0.01}, mu=1e-4)["mu"] == 1e-4  # given: kept
    assert recipes.recommended_mu(0.01, 1e-3) > recipes.recommended_mu(0.001, 1e-3)


@pytest.mark.parametrize("physics, overrides, match", [
    ({"noise": 1.0}, {}, "read-out noise 1 is at least the signal"),
    ({"noise": 0.05}, {"mu": 1e-4}, "500 times below the read-out noise 0.05"),
    ({}, {"mu": 2.0}, "a radian or more"),
    ({}, {"rank": 40, "upkeep": "ksl"}, "2r = 80 queries alone cost more than re-reading the whole matrix .64 queries"),
    ({"drift": 0.05}, {}, r"drift 0.05 rad per step is larger than the device learning rate 0\.0\d"),
])
def test_meaningless_settings_are_reported_before_training(physics, overrides, match, capsys):
    with pytest.warns(SettingWarning, match=match):
        run("vision", "mrr", "surrogate", quick=True, use_cuda=False, epochs=1, device_options=physics, **overrides)
    args = ["train", "--task", "vision", "--device", "mrr", "--quick", "--no-progress", "--epochs", "1"]
    args += [f"--{k}" if v is True else f"--{k}={v}" for k, v in {**physics, **overrides}.items()
             if k in ("noise", "bits", "mu", "rank", "upkeep")]
    if set(physics) <= {"noise", "bits"}:
        assert cli.main(args) == 0
        err = capsys.readouterr().err
        assert "hybridlab: warning: " in err and err.index("hybridlab: warning:") < err.index("vision surrogate")


def test_sensible_settings_give_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error", SettingWarning)
        for task in recipes.TASKS:
            run(task, "mrr", "surrogate", quick=True, use_cuda=False, device_options={"noise": 0.01, "bits": 8})
        run("vision", "mzi", "surrogate", quick=True, use_cuda=False, device_options={"drift": 1e-3})
