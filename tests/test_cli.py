"""The command line: every task x device x method in quick runs, real-data folders, the JSON schema,
and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.io import wavfile

from hybridlab.cli import main
from hybridlab.devices import DEVICES
from hybridlab.recipes import ALL_METHODS, DEFAULTS, TASKS, run, settings

REPO = Path(__file__).resolve().parents[1]
COMMON_KEYS = {"task": str, "device": str, "method": str, "layer": str, "metric": str, "dataset": dict,
               "queries": int, "reconfigurations": int, "seconds": float, "data_seconds": float, "history": dict,
               "settings": dict, "device_options": dict, "args": dict, "seed": int, "data_seed": int,
               "torch_device": str, "torch_threads": int, "hybridlab_version": str, "torch_version": str}


def check_schema(r: dict, task: str, device: str, method: str) -> None:
    for key, kind in COMMON_KEYS.items():
        assert isinstance(r[key], kind), (key, type(r[key]))
    assert (r["task"], r["device"], r["method"]) == (task, device, method)
    metric = "bits_per_char" if task == "text" else "accuracy"
    assert r["metric"] == metric
    value = r[metric]
    assert isinstance(value, float)
    if task == "text":
        assert 0.0 < value < 20.0
    else:
        assert 0.0 <= value <= 1.0
    assert set(r["history"]) >= {"steps", "train_loss", "metric", "queries", "reconfigurations"}
    assert len(r["history"]["steps"]) == len(r["history"]["metric"]) >= 1
    if method == "digital":
        assert r["queries"] == r["reconfigurations"] == 0
    else:
        assert r["queries"] > 0 and r["reconfigurations"] > 0
    sizes = ("n_chars", "n_train", "n_val", "vocab_size") if task == "text" else ("n_train", "n_test", "n_classes")
    assert all(isinstance(r["dataset"][k], int) and r["dataset"][k] > 0 for k in sizes)
    assert isinstance(r["dataset"]["name"], str)
    json.dumps(r)  # serialisable


def cli(*args: str) -> list[str]:
    return ["train", "--quick", "--no-progress", *args]


@pytest.mark.parametrize("method", ALL_METHODS)
@pytest.mark.parametrize("device", sorted(DEVICES))
@pytest.mark.parametrize("task", TASKS)
def test_every_task_device_method(task, device, method, tmp_path, capsys):
    out = tmp_path / "r.json"
    code = main(cli("--task", task, "--device", device, "--method", method, "--out", str(out)))
    err = capsys.readouterr().err
    assert code == 0, err
    r = json.loads(out.read_text())
    check_schema(r, task, device, method)
    assert err.strip().splitlines()[-1].startswith(f"{task} {method}")  # the summary line


def test_json_to_stdout_with_digital_baseline(capsys):
    assert main(cli("--task", "vision", "--device", "mrr", "--with-digital", "--seed", "3")) == 0
    r = json.loads(capsys.readouterr().out)
    check_schema(r, "vision", "mrr", "surrogate")
    assert 0.0 <= r["digital_accuracy"] <= 1.0 and r["digital_seconds"] > 0
    assert r["seed"] == 3 and r["args"]["with_digital"] is True
    assert r["settings"]["lr_device"] is None  # set from device_step and the measured sensitivity
    assert r["settings"]["device_step"] == DEFAULTS["vision"]["device_step"]


def test_runs_are_reproducible():
    kw = {"quick": True, "seed": 5}
    a, b = run("text", "slm", "surrogate", **kw), run("text", "slm", "surrogate", **kw)
    assert a["bits_per_char"] == b["bits_per_char"] and a["queries"] == b["queries"]
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    c = run("vision", "mzi", "surrogate", **kw)
    assert c["accuracy"] == run("vision", "mzi", "surrogate", **kw)["accuracy"]


def test_options_reach_the_run():
    r = run("vision", "slm", "surrogate", quick=True, epochs=2, rank=4, samples=3, sketch=8, mu=1e-2, lr=1e-3,
            lr_device=0.5, width=32, layer="embed", anneal=0.5, device_options={"noise": 0.01, "bits": 8})
    s = r["settings"]
    assert (s["epochs"], s["rank"], s["samples"], s["sketch"], s["mu"], s["lr_device"], s["width"]) == \
        (2, 4, 3, 8, 1e-2, 0.5, 32)
    assert r["layer"] == "embed" and r["device_options"] == {"noise": 0.01, "bits": 8}
    assert r["history"]["steps"] == [4, 8]  # 256 examples / 64 = 4 steps, one epoch at lr, one at lr/10
    text = settings("text", "mzi", "surrogate", steps=50)
    assert text["steps"] == 50 and "epochs" not in text


def test_zo_direction_options_reach_the_layer(tmp_path):
    out = tmp_path / "r.json"
    assert main(cli("--task", "vision", "--device", "slm", "--directions", "lowrank", "--direction-rank", "2",
                    "--out", str(out))) == 0
    r = json.loads(out.read_text())
    assert (r["settings"]["directions"], r["settings"]["direction_rank"]) == ("lowrank", 2)
    assert (r["args"]["directions"], r["args"]["direction_rank"]) == ("lowrank", 2)
    # the default draws other directions from the same seed: the device trains differently
    default = run("vision", "slm", "surrogate", quick=True)
    assert default["settings"]["directions"] == "gaussian"
    assert default["history"]["train_loss"] != r["history"]["train_loss"]


def test_a_served_device_is_refused_in_a_data_parallel_run():
    from hybridlab.parallel import Ranks

    with pytest.raises(ValueError, match="one training process"):
        run("vision", "slm", quick=True, remote="localhost:1", ranks=Ranks(rank=0, world_size=2))


def write_fsdd(folder: Path, speakers=("alice", "bob"), indices=(0, 1, 5, 6, 7)) -> None:
    """FSDD-style wav files: a tone whose pitch depends on the digit, plus noise (8 kHz, int16)."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(2400) / 8000.0
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            for index in indices:
                x = 0.5 * np.sin(2 * np.pi * (200 + 60 * digit + 10 * s) * t) + 0.05 * rng.standard_normal(t.size)
                wavfile.write(folder / f"{digit}_{speaker}_{index}.wav", 8000, (x * 20000).astype(np.int16))


def test_audio_from_an_fsdd_folder(tmp_path, capsys):
    write_fsdd(tmp_path / "recordings")
    out = tmp_path / "r.json"
    assert main(cli("--task", "audio", "--device", "slm", "--data-dir", str(tmp_path), "--out", str(out))) == 0
    r = json.loads(out.read_text())
    check_schema(r, "audio", "slm", "surrogate")
    assert r["dataset"]["name"] == "fsdd"
    assert (r["dataset"]["n_train"], r["dataset"]["n_test"]) == (60, 40)  # indices 5-7 train, 0-1 test
    assert r["args"]["data_dir"] == str(tmp_path)


@pytest.mark.parametrize("as_folder", [False, True])
def test_text_from_a_file_or_folder(tmp_path, as_folder):
    text = "".join(f"line {i}: the hybrid layer is queried, never differentiated.\n" for i in range(300))
    path = tmp_path / ("input.txt" if as_folder else "corpus.txt")
    path.write_text(text, encoding="utf-8")
    out = tmp_path / "r.json"
    target = tmp_path if as_folder else path
    assert main(cli("--task", "text", "--device", "mrr", "--data-dir", str(target), "--out", str(out))) == 0
    r = json.loads(out.read_text())
    check_schema(r, "text", "mrr", "surrogate")
    assert r["dataset"]["name"] == "text-file" and r["dataset"]["n_chars"] == len(text)


def one_line_error(capsys, *args: str, match: str) -> None:
    code = main(list(args))
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("hybridlab: error:") and match in lines[0], lines[0]


@pytest.mark.parametrize("args, match", [
    (("--task", "speech"), "invalid choice"),
    (("--task", "vision", "--device", "laser"), "invalid choice"),
    (("--task", "vision", "--method", "backprop"), "invalid choice"),
    (("--task", "vision", "--epochs", "many"), "invalid int"),
    (("--task", "text", "--epochs", "2"), "--steps"),
    (("--task", "vision", "--steps", "2"), "--epochs"),
    (("--task", "vision", "--layer", "conv9"), "hidden"),
    (("--task", "vision", "--rank", "999"), "rank"),
    (("--task", "vision", "--samples", "0"), "samples"),
    (("--task", "vision", "--anneal", "1.5"), "anneal"),
    (("--task", "vision", "--threads", "0"), "--threads"),
    (("--task", "vision", "--directions", "sobol"), "invalid choice"),
    (("--task", "vision", "--direction-rank", "0"), "direction_rank"),
])
def test_bad_values_exit_2_with_one_line(capsys, args, match):
    one_line_error(capsys, *cli(*args), match=match)


def test_threads_option_sets_and_records_the_thread_count(tmp_path):
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "r.json"
    try:
        assert main(cli("--task", "vision", "--method", "digital", "--threads", "1", "--out", str(out))) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert json.loads(out.read_text())["torch_threads"] == 1


def test_missing_command_exits_2(capsys):
    one_line_error(capsys, match="required")


def test_unreadable_data_exits_2_with_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    one_line_error(capsys, *cli("--task", "audio", "--data-dir", str(missing)), match="does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_line_error(capsys, *cli("--task", "audio", "--data-dir", str(empty)), match="no .wav files")
    one_line_error(capsys, *cli("--task", "vision", "--data-dir", str(empty)), match="MNIST")
    one_line_error(capsys, *cli("--task", "text", "--data-dir", str(empty)), match="input.txt")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "3_carol_0.wav").write_bytes(b"not a wav file")
    (broken / "3_carol_9.wav").write_bytes(b"not a wav file")
    one_line_error(capsys, *cli("--task", "audio", "--data-dir", str(broken)), match="wav")
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81" * 100)
    one_line_error(capsys, *cli("--task", "text", "--data-dir", str(binary)), match="UTF-8")
    short = tmp_path / "short.txt"
    short.write_text("too short to learn from\n" * 4)
    one_line_error(capsys, *cli("--task", "text", "--data-dir", str(short)), match="longer text")


def test_python_dash_m(tmp_path):
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "hybridlab", *cli("--task", "vision", "--method", "digital",
                                                                       "--out", str(out))],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    check_schema(json.loads(out.read_text()), "vision", "ideal", "digital")
    bad = subprocess.run([sys.executable, "-m", "hybridlab", "train", "--task", "nope"], capture_output=True,
                         text=True, cwd=REPO, timeout=300)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "Traceback" not in bad.stderr


def test_every_setting_has_a_meaning_and_the_command_line_sets_the_training_ones():
    from hybridlab import recipes
    from hybridlab.cli import build_parser
    from hybridlab.models import MODEL_DEFAULTS

    for task in recipes.TASKS:
        keys = set(recipes.settings(task, quick=True)) | set(MODEL_DEFAULTS[task])
        assert keys <= set(recipes.MEANINGS), f"{task}: settings without a meaning: {keys - set(recipes.MEANINGS)}"
    options = {a.dest for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions}
    assert set(recipes.COMMAND_LINE) <= options
    assert set(recipes.COMMAND_LINE) <= set(recipes.MEANINGS)
