"""A device served by another process: the same numbers as in-process, with or without faults;
clear errors for a silent server and for bad addresses. Servers listen on free localhost ports and
are always stopped."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from hybridlab.cli import main
from hybridlab.devices import make_device
from hybridlab.layer import BlackBoxLinear
from hybridlab.recipes import run
from hybridlab.remote import Faults, RemoteDevice, RemoteDeviceError, RetryPolicy, start_server

REPO = Path(__file__).resolve().parents[1]
D_IN, D_OUT, B = 12, 10, 8
PHYSICS = {"noise": 0.01, "drift": 1e-3, "fab_error": 0.05}
LAYER = {"rank": 3, "samples": 4, "sketch": 5, "seed": 0}
QUICK = {"quick": True, "seed": 0, "use_cuda": False}
PATIENT = RetryPolicy(attempts=10, timeout=2.0, backoff=0.1)  # outlasts a restart of the device process


def serve(device: str, options: dict | None = None, **kwargs):
    return start_server(device, options={**(options or {}), "seed": 0}, use_cuda=False, threads=1, **kwargs)


@pytest.fixture(scope="module")
def slm_server():
    with serve("slm", PHYSICS) as server:
        yield server.address


def train_layer(device, steps: int = 6, method: str = "surrogate") -> tuple[list[float], torch.Tensor, tuple[int, int]]:
    """A few steps of a small regression through a BlackBoxLinear: losses, final w, (queries, reconfigurations)."""
    layer = BlackBoxLinear(D_IN, D_OUT, device, method=method, **LAYER,
                           device_options=None if isinstance(device, RemoteDevice) else PHYSICS)
    opt = torch.optim.Adam(layer.parameters(), lr=0.02)
    g = torch.Generator().manual_seed(1)
    losses = []
    for _ in range(steps):
        x, t = torch.randn(B, D_IN, generator=g).requires_grad_(), torch.randn(B, D_OUT, generator=g)
        opt.zero_grad()
        loss = (layer(x) - t).pow(2).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    layer.sync()
    return losses, layer.w.detach().clone(), (layer.physical.queries, layer.physical.reconfigurations)


def same_numbers(a: dict, b: dict) -> None:
    assert (a["accuracy"], a["queries"], a["reconfigurations"]) == (b["accuracy"], b["queries"], b["reconfigurations"])
    assert a["history"]["train_loss"] == b["history"]["train_loss"]
    assert a["history"]["metric"] == b["history"]["metric"]


# ------------------------------------------------------------------------------ the same numbers
def test_every_operation_matches_the_in_process_device(slm_server):
    local = make_device("slm", D_IN, D_OUT, **PHYSICS, seed=0)
    with RemoteDevice(slm_server, D_IN, D_OUT) as remote:
        assert (remote.name, remote.p, remote.linear_in_x) == ("slm", local.p, True)
        assert remote.options == {**PHYSICS, "seed": 0}
        g_remote, g_local = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        w = remote.init_params(g_remote)
        assert torch.equal(w, local.init_params(g_local)) and torch.equal(g_remote.get_state(), g_local.get_state())
        X, W = torch.randn(B, D_IN), torch.randn(3, local.p)
        for dev in (remote, local):
            dev.configure(w)
            dev.advance(2)
        assert torch.equal(remote.query(X), local.query(X))
        assert torch.equal(remote.query_batch(W, X), local.query_batch(W, X))
        assert torch.equal(remote.query(X), local.query(X))  # the runtime generators stayed in step
        assert (remote.queries, remote.reconfigurations) == (local.queries, local.reconfigurations) == (5 * B, 4)
        state = remote.get_extra_state()
        assert torch.load(io.BytesIO(state), weights_only=True)["_extra_state"]["queries"] == 5 * B
        with pytest.raises(RemoteDeviceError, match="refused query: X must have shape"):
            remote.query(torch.randn(2, D_IN + 1))  # the device's own error, at once


@pytest.mark.parametrize("method", ["surrogate", "zo_only"])
def test_a_layer_trains_the_same_on_the_served_device(slm_server, method):
    local = train_layer("slm", method=method)
    with RemoteDevice(slm_server, D_IN, D_OUT) as remote:
        served = train_layer(remote, method=method)
        assert sum(remote.problems.values()) == 0
    assert served[0] == local[0] and torch.equal(served[1], local[1]) and served[2] == local[2]


def test_state_dict_of_a_layer_with_a_served_device_resumes_exactly(slm_server):
    def layer_for(device):
        layer = BlackBoxLinear(D_IN, D_OUT, device, **LAYER,
                               device_options=None if isinstance(device, RemoteDevice) else PHYSICS)
        return layer, torch.optim.Adam(layer.parameters(), lr=0.02)

    def steps(layer, opt, n, seed):
        g = torch.Generator().manual_seed(seed)
        for _ in range(n):
            opt.zero_grad()
            (layer(torch.randn(B, D_IN, generator=g)) - 1).pow(2).mean().backward()
            opt.step()
        layer.sync()
        return layer.w.detach().clone(), layer.physical.queries, layer.physical.reconfigurations

    local, opt_local = layer_for("slm")
    steps(local, opt_local, 3, 1)
    expected = steps(local, opt_local, 3, 2)
    with RemoteDevice(slm_server, D_IN, D_OUT) as first:
        a, opt_a = layer_for(first)
        steps(a, opt_a, 3, 1)
        saved = {"model": a.state_dict(), "opt": opt_a.state_dict()}
    with RemoteDevice(slm_server, D_IN, D_OUT) as second:  # a new session: a fresh device on the server
        b, opt_b = layer_for(second)
        b.load_state_dict(saved["model"])
        opt_b.load_state_dict(saved["opt"])
        resumed = steps(b, opt_b, 3, 2)
    assert torch.equal(resumed[0], expected[0]) and resumed[1:] == expected[1:]


def test_recipes_run_on_the_served_device_gives_the_same_numbers(slm_server):
    local = run("vision", "slm", **QUICK, device_options=PHYSICS)
    served = run("vision", "slm", **QUICK, remote=slm_server)
    same_numbers(served, local)
    assert served["device_options"] == {**PHYSICS, "seed": 0} and served["args"]["remote"] == slm_server
    json.dumps(served)


# ------------------------------------------------------------------------------------ faults
def test_lost_late_and_non_finite_replies_do_not_change_the_numbers(capfd):
    faults = Faults(drop=0.05, delay=0.03, delay_seconds=1.0, nonfinite=0.1, seed=0)
    local = train_layer("slm", steps=8)
    with serve("slm", PHYSICS, faults=faults) as server, \
            RemoteDevice(server.address, D_IN, D_OUT, retry=RetryPolicy(attempts=8, timeout=0.5)) as remote:
        served = train_layer(remote, steps=8)
        problems = dict(remote.problems)
    assert served[0] == local[0] and torch.equal(served[1], local[1]) and served[2] == local[2]
    log = capfd.readouterr().err
    assert 0 < problems.get("a non-finite read-out", 0) <= log.count("non-finite read-out"), (problems, log)
    assert problems.get("no reply within 0.5 s", 0) >= log.count("lost the reply") > 0, (problems, log)
    assert log.count("s late to") > 0, log


def test_a_restarting_server_with_lost_and_non_finite_replies_gives_the_same_numbers(capfd):
    local = run("vision", "slm", **QUICK, device_options=PHYSICS)
    faults = Faults(drop=0.05, nonfinite=0.1, die_after=9, seed=1)
    with serve("slm", PHYSICS, faults=faults) as server:
        served = run("vision", "slm", **QUICK, remote=server.address, remote_retry=PATIENT)
    same_numbers(served, local)
    log = capfd.readouterr().err
    assert log.count("restarting it from") >= 2, log
    assert log.count("lost the reply") > 0 and log.count("non-finite read-out") > 0, log


def test_a_server_restarted_on_its_state_file_continues_the_session(tmp_path):
    state = tmp_path / "slm.pt"
    local = train_layer("slm")
    with serve("slm", PHYSICS, state_file=state) as server:
        remote = RemoteDevice(server.address, D_IN, D_OUT, retry=PATIENT)
        address = server.address
    # the operator starts the server again on the same port and state file; the run goes on
    with serve("slm", PHYSICS, state_file=state, port=int(address.rsplit(":", 1)[1])):
        served = train_layer(remote)
        remote.close()
    assert served[0] == local[0] and torch.equal(served[1], local[1]) and served[2] == local[2]
    with pytest.raises(ValueError, match="belongs to a slm device"):
        serve("slm", {"noise": 0.5}, state_file=state)


# ----------------------------------------------------------------------------- clear errors
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_server_that_never_answers_ends_the_run_within_the_timeout():
    retry = RetryPolicy(attempts=2, timeout=0.5, backoff=0.1)
    # accepts connections (the kernel does) but never speaks
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        t0 = time.monotonic()
        with pytest.raises(RemoteDeviceError, match="sent no handshake within 0.5 s"):
            RemoteDevice(f"127.0.0.1:{silent.getsockname()[1]}", D_IN, D_OUT, retry=retry)
        assert time.monotonic() - t0 < retry.deadline + 1.0
    # a server that answers nothing in time
    with serve("slm", faults=Faults(delay=1.0, delay_seconds=30.0)) as server:
        t0 = time.monotonic()
        with pytest.raises(ValueError, match=rf"create on the device server at {server.address} failed 2 "
                                             r"times .*no reply within 0.5 s.*--timeout"):
            run("vision", "slm", **QUICK, remote=server.address, remote_retry=retry)
        assert time.monotonic() - t0 < retry.deadline + 1.0


def test_a_server_that_dies_mid_run_names_the_training_step():
    with serve("slm", faults=Faults(die_after=20), max_restarts=0) as server:
        remote = RemoteDevice(server.address, D_IN, D_OUT, retry=RetryPolicy(attempts=2, timeout=0.5))
        with pytest.raises(ValueError, match=rf"training step \d+: .* at {server.address} failed 2 times "
                                             r".*connection refused"):
            train_layer(remote, steps=20)
        remote.close()


@pytest.mark.parametrize("address, match", [
    ("localhost", "HOST:PORT"),
    ("localhost:http", "not a number"),
    ("localhost:70000", "1-65535"),
    ("no-such-host.invalid:5000", "cannot resolve the host 'no-such-host.invalid'"),
])
def test_bad_addresses_give_clear_errors(address, match):
    with pytest.raises(ValueError, match=match):
        RemoteDevice(address, D_IN, D_OUT, retry=RetryPolicy(attempts=1, timeout=2.0))


def test_nothing_listening_fails_at_once():
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(RemoteDeviceError, match=rf"nothing listens at 127.0.0.1:{port}: start the device server"):
        RemoteDevice(f"127.0.0.1:{port}", D_IN, D_OUT)
    assert time.monotonic() - t0 < 5.0


def test_misuse_of_a_served_device_gives_clear_errors(slm_server, monkeypatch):
    with pytest.raises(ValueError, match="serves the slm device, not mrr: train with device 'slm'"):
        run("vision", "mrr", **QUICK, remote=slm_server)
    with pytest.raises(ValueError, match="belong to the server"):
        run("vision", "slm", **QUICK, remote=slm_server, device_options={"noise": 0.1})
    with RemoteDevice(slm_server, D_IN, D_OUT) as remote:
        with pytest.raises(ValueError, match="oracle"):
            BlackBoxLinear(D_IN, D_OUT, remote, method="oracle")
        with pytest.raises(RemoteDeviceError, match="no handshake within 0.5 s .is it busy with another client"):
            RemoteDevice(slm_server, D_IN, D_OUT, retry=RetryPolicy(attempts=1, timeout=0.5))
    monkeypatch.setenv("HYBRIDLAB_AUTHKEY", "not the server's key")
    with pytest.raises(RemoteDeviceError, match="refused the authentication key"):
        RemoteDevice(slm_server, D_IN, D_OUT)
    with pytest.raises(ValueError, match="needs a secret key"):
        monkeypatch.delenv("HYBRIDLAB_AUTHKEY")
        start_server("slm", host="0.0.0.0")
    with pytest.raises(ValueError, match="cannot start on 127.0.0.1"):
        start_server("slm", port=int(slm_server.rsplit(":", 1)[1]))  # the port is taken
    with pytest.raises(ValueError, match="fab_error is not modelled"):
        start_server("ideal", options={"fab_error": 0.1})
    with pytest.raises(ValueError, match="port must be in 0-65535"):
        start_server("ideal", port=70000)


# ----------------------------------------------------------------------------- command line
def test_serve_and_train_on_the_command_line(tmp_path, capsys):
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    server = subprocess.Popen([sys.executable, "-m", "hybridlab", "serve", "--device", "slm", "--port", "0",
                               "--noise", "0.01", "--cpu", "--threads", "1", "--drop", "0.05", "--fault-seed", "3"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(server.stdout.readline()), daemon=True)
        reader.start()
        reader.join(300)
        assert line and line[0].startswith("hybridlab serve: slm device on 127.0.0.1:"), (line, server.poll())
        address = line[0].split()[-1]
        common = ["train", "--quick", "--no-progress", "--cpu", "--task", "vision", "--device", "slm"]
        assert main([*common, "--noise", "0.01", "--out", str(tmp_path / "local.json")]) == 0
        assert main([*common, "--remote", address, "--timeout", "1", "--out", str(tmp_path / "served.json")]) == 0
        local, served = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("local", "served"))
        same_numbers(served, local)
        assert main([*common, "--timeout", "1"]) == 2
        assert "--remote" in capsys.readouterr().err
    finally:
        server.terminate()
        code = server.wait(60)
    assert code == 0, server.stderr.read()
