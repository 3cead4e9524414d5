"""The server: one simulated device in a separate process, with fault injection and restarts.

:func:`serve` is a small supervisor. It starts the *device process* (``multiprocessing``, spawn),
which listens on the port, holds the device and answers one client at a time; when that process
dies it is started again, and it recovers the device from its state file. :func:`start_server`
runs :func:`serve` in a background thread and returns once the device listens (tests, notebooks).

The device process executes each request at most once: it keeps the last reply, and a request
with the same session and sequence number (a retry) gets that reply again. After executing a
request and before answering it, it writes the device's ``state_dict``, the session, the sequence
number and the reply to the state file (a temporary file renamed over the old one, so the file is
always whole). A process that dies at any point therefore resumes with the same numbers: a
request it executed is replayed, one it had not yet saved is executed again from the same state.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import math
import multiprocessing
import os
import queue
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, Listener, wait
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import checks
from ..devices import make_device
from .protocol import DEFAULT_AUTHKEY, READOUTS, authkey, decode, encode, format_address, is_loopback, no_delay

__all__ = ["Faults", "ServerThread", "serve", "start_server"]

#: Exit code of a device process that dies on purpose (the ``die_after`` fault).
DIED_ON_PURPOSE = 75


@dataclass(frozen=True)
class Faults:
    """Faults the server injects, the way lab equipment misbehaves (all off by default).

    Attributes:
        drop: probability that a reply is lost (the client times out and asks again).
        delay: probability that a reply comes ``delay_seconds`` late (set it beyond the client's timeout).
        delay_seconds: how late a delayed reply comes.
        nonfinite: probability that a read-out arrives with a NaN or Inf entry (the client reads again).
        die_after: the device process dies after executing this many requests (before answering the
            last one) and is restarted from its state file; ``None``: never.
        seed: seeds the draws (each device process draws from ``seed`` and its restart count).
    """

    drop: float = 0.0
    delay: float = 0.0
    delay_seconds: float = 60.0
    nonfinite: float = 0.0
    die_after: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("drop", "delay", "nonfinite"):
            checks.nonnegative_number(getattr(self, name), name, maximum=1.0)
        checks.positive_number(self.delay_seconds, "delay_seconds", "seconds a delayed reply is late")
        if self.die_after is not None:
            checks.count(self.die_after, "die_after", what="requests a device process executes before it dies")
        checks.count(self.seed, "seed", minimum=0)


@dataclass(frozen=True)
class _Config:
    kind: str
    options: dict[str, Any]
    host: str
    port: int
    key: bytes
    state_file: str
    faults: Faults = field(default_factory=Faults)
    threads: int | None = None
    use_cuda: bool = True


# -------------------------------------------------------------------------------------- the device
class _DeviceHost:
    """The device of a device process: executes requests at most once and saves its state after each."""

    def __init__(self, config: _Config) -> None:
        self.kind, self.options = config.kind, config.options
        self.torch_device = torch.device("cuda" if config.use_cuda and torch.cuda.is_available() else "cpu")
        self.path = Path(config.state_file)
        self.device = None
        self.spec: dict[str, Any] | None = None
        self.session: str | None = None
        self.seq = -1
        self.reply = b""
        self.executed = 0  # requests executed by this process
        if self.path.exists():
            self._load()

    def handle(self, data: bytes) -> tuple[bytes, bool]:
        """The reply to one request, and whether the request was executed now (not replayed)."""
        try:
            request = decode(data)
            op, session, seq, args = request["op"], request["session"], request["seq"], request["args"]
        except Exception as err:  # noqa: BLE001 - a malformed request must not end the server
            return _reply(None, False, None, f"malformed request ({type(err).__name__}: {err})", self.device), False
        if session == self.session and seq == self.seq:
            return self.reply, False  # a retry: the same answer, nothing executed twice
        if op == "create":
            if seq != 0:
                return _reply(seq, False, None, "create must be request 0 of a session", self.device), False
        elif session != self.session:
            return _reply(seq, False, None, "the server does not know this session: it was restarted without its "
                          "state file, or another client created a new device; start the run again", self.device), False
        elif seq != self.seq + 1:
            return _reply(seq, False, None, f"request {seq} out of order (the last one was {self.seq})",
                          self.device), False
        operation = getattr(self, f"_op_{op}", None) if isinstance(op, str) else None
        try:
            if operation is None:
                raise ValueError(f"unknown operation {op!r}")
            result, ok, error = operation(**args), True, None
        except Exception as err:  # noqa: BLE001 - the device's refusal goes back to the client
            result, ok, error = None, False, str(err) if isinstance(err, ValueError | TypeError) else repr(err)
        self.session, self.seq = session, seq
        self.reply = _reply(seq, ok, result, error, self.device)
        self.executed += 1
        self._save()
        return self.reply, True

    # operations ---------------------------------------------------------------------------
    def _op_create(self, d_in: int, d_out: int, dtype: str) -> dict[str, Any]:
        checks.choice(dtype, "dtype", ("float32", "float64"))
        self.device = None
        self.spec = {"d_in": d_in, "d_out": d_out, "dtype": dtype}
        self.device = self._build()
        return {"name": self.device.name, "p": self.device.p, "linear_in_x": self.device.linear_in_x,
                "param_shape": tuple(self.device.param_shape),
                "options": dict(self.options)}

    def _op_init_params(self, generator_state: np.ndarray | None) -> dict[str, Any]:
        dev = self._device()
        if generator_state is None:
            return {"params": dev.init_params().cpu().numpy(), "generator_state": None}
        g = torch.Generator()
        g.set_state(torch.from_numpy(generator_state))
        params = dev.init_params(g)
        return {"params": params.cpu().numpy(), "generator_state": g.get_state().numpy()}

    def _op_configure(self, w: np.ndarray) -> None:
        self._device().configure(self._tensor(w))

    def _op_query(self, X: np.ndarray) -> np.ndarray:
        return self._device().query(self._tensor(X)).cpu().numpy()

    def _op_query_batch(self, W: np.ndarray, X: np.ndarray) -> np.ndarray:
        return self._device().query_batch(self._tensor(W), self._tensor(X)).cpu().numpy()

    def _op_advance(self, steps: int) -> None:
        self._device().advance(steps)

    def _op_state(self) -> bytes:
        buf = io.BytesIO()
        torch.save(self._device().state_dict(), buf)
        return buf.getvalue()

    def _op_load_state(self, state: bytes) -> None:
        self._device().load_state_dict(torch.load(io.BytesIO(state), map_location=self.torch_device,
                                                  weights_only=True))

    # helpers ------------------------------------------------------------------------------
    def _device(self):
        if self.device is None:
            raise ValueError("no device yet: the client creates it first")
        return self.device

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.torch_device)

    def _build(self):
        # built, then moved, as a layer builds and moves its device: on a GPU the runtime generator
        # is reseeded by the move, and the served device must draw the same noise as an in-process one
        s = self.spec
        return make_device(self.kind, s["d_in"], s["d_out"], dtype=getattr(torch, s["dtype"]),
                           **self.options).to(self.torch_device)

    def _save(self) -> None:
        state = {"kind": self.kind, "options": self.options, "spec": self.spec, "session": self.session,
                 "seq": self.seq, "reply": self.reply,
                 "device": None if self.device is None else self.device.state_dict()}
        tmp = self.path.with_name(self.path.name + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.path)  # atomic: the file is the old state or the new one, never half of each

    def _load(self) -> None:
        try:
            state = torch.load(self.path, map_location=self.torch_device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
            raise ValueError(f"cannot read the state file {self.path} ({err}); remove it to start afresh") from None
        if (state["kind"], state["options"]) != (self.kind, self.options):
            raise ValueError(f"the state file {self.path} belongs to a {state['kind']} device with options "
                             f"{state['options']}, not {self.kind} with {self.options}: serve that device, "
                             "or remove the file to start afresh")
        self.spec, self.session, self.seq, self.reply = state["spec"], state["session"], state["seq"], state["reply"]
        if self.spec is not None:
            self.device = self._build()
            self.device.load_state_dict(state["device"])


def _reply(seq: int | None, ok: bool, result: Any, error: str | None, device) -> bytes:
    counters = (0, 0) if device is None else (device.queries, device.reconfigurations)
    return encode({"seq": seq, "ok": ok, "result": result, "error": error, "counters": counters})


def _corrupt(reply: bytes, rng: random.Random) -> bytes:
    """The reply with one read-out entry replaced by NaN or Inf (what a detector glitch sends)."""
    message = decode(reply)
    Y = np.array(message["result"], copy=True)
    Y.flat[rng.randrange(Y.size)] = rng.choice([math.nan, math.inf])
    message["result"] = Y
    return encode(message)


# ---------------------------------------------------------------------------------- device process
def _exit_with_parent() -> None:
    """End this process when the process that started it ends (no orphaned servers)."""
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=lambda: (wait([parent.sentinel]), os._exit(0)), daemon=True).start()


def _device_process(config: _Config, report: Connection, generation: int) -> None:
    """Listen, then answer one client at a time until terminated (or a ``die_after`` fault)."""
    _exit_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the supervisor, which stops this process
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        host = _DeviceHost(config)
        listener = Listener((config.host, config.port), authkey=config.key)
    except (ValueError, OSError) as err:
        report.send(("error", f"the device server cannot start on {config.host}:{config.port}: {err}"))
        sys.exit(2)
    report.send(("ready", format_address((config.host, listener.address[1]))))
    faults, rng = config.faults, random.Random(config.faults.seed * 1_000_003 + generation)
    while True:
        try:
            conn = listener.accept()
        except (OSError, EOFError, multiprocessing.AuthenticationError) as err:
            print(f"hybridlab serve: refused a connection ({type(err).__name__}: {err})", file=sys.stderr)
            continue
        no_delay(conn.fileno())
        with conn:
            while True:
                try:
                    request = conn.recv_bytes()
                except (OSError, EOFError):
                    break  # the client left; serve the next one
                reply, executed = host.handle(request)
                if executed and faults.die_after and host.executed % faults.die_after == 0:
                    _log_fault("dies after executing", request)
                    os._exit(DIED_ON_PURPOSE)  # executed and saved, never answered
                drop, delay, corrupt = rng.random(), rng.random(), rng.random()
                if drop < faults.drop:
                    _log_fault("lost the reply to", request)
                    continue
                if delay < faults.delay:
                    _log_fault(f"answers {faults.delay_seconds:g} s late to", request)
                    time.sleep(faults.delay_seconds)
                if corrupt < faults.nonfinite and decode(request).get("op") in READOUTS and decode(reply)["ok"]:
                    _log_fault("sends a non-finite read-out in reply to", request)
                    reply = _corrupt(reply, rng)
                try:
                    conn.send_bytes(reply)
                except OSError:
                    break


def _log_fault(what: str, request: bytes) -> None:
    r = decode(request)
    print(f"hybridlab serve: fault: {what} request {r.get('seq')} ({r.get('op')})", file=sys.stderr, flush=True)


# -------------------------------------------------------------------------------------- supervisor
def serve(device: str, *, port: int = 0, host: str = "127.0.0.1", options: dict[str, Any] | None = None,
          faults: Faults | None = None, state_file: str | Path | None = None, key: bytes | str | None = None,
          threads: int | None = None, use_cuda: bool = True, max_restarts: int = 100,
          announce: Callable[[str], None] | None = None, stop: threading.Event | None = None) -> None:
    """Serve the simulated ``device`` on ``host:port`` until terminated (SIGTERM, Ctrl-C) or ``stop`` is set.

    The client (:class:`~hybridlab.remote.RemoteDevice`) creates the device with its layer's sizes;
    its kind and physics ``options`` (``noise``, ``bits``, ``fab_error``, ``crosstalk``, ``drift``,
    ``seed``, ...; see :func:`hybridlab.devices.make_device`) are the server's. The device lives in
    a child process (spawn), which is started again whenever it dies.

    Args:
        device: the device kind (:data:`hybridlab.devices.DEVICES`).
        port: the TCP port; 0 picks a free one (``announce`` tells which).
        host: the interface to listen on (default: this machine only).
        options: the device's physics options.
        faults: the :class:`Faults` to inject (default: none).
        state_file: where the device process keeps its state (default: a temporary file deleted at
            exit). An existing file is resumed: a server started again on it continues its session.
        key: the shared authentication key (default: ``$HYBRIDLAB_AUTHKEY`` or, on loopback only,
            the local default).
        threads: PyTorch CPU threads of the device process (default: PyTorch's).
        use_cuda: keep the device on the GPU when one is available.
        max_restarts: give up after the device process died this many times.
        announce: called with ``"HOST:PORT"`` once the device listens (default: print it).
        stop: an event that ends the server when set (:func:`start_server` uses it).

    Raises:
        ValueError: an unknown device or option, a port in use, the default key beyond loopback,
            a state file of another device, or more than ``max_restarts`` deaths.
    """
    options = dict(options or {})
    make_device(device, 2, 2, **options)  # check the kind and options now, not when a client connects
    key = authkey(key)
    if key == DEFAULT_AUTHKEY and not is_loopback(host):
        raise ValueError(f"serving on {host} beyond this machine needs a secret key: set HYBRIDLAB_AUTHKEY "
                         "on both sides (messages are pickled, so the key is what keeps strangers out)")
    if checks.count(port, "port", minimum=0) > 65535:
        raise ValueError(f"port must be in 0-65535 (0: a free one), got {port}")
    checks.count(max_restarts, "max_restarts", minimum=0)
    if port == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    announce = announce or (lambda address: print(f"hybridlab serve: {device} device on {address}", flush=True))
    stop = stop or threading.Event()
    ctx = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        with contextlib.suppress(ValueError):  # SIGTERM ends the server like Ctrl-C (main thread only)
            previous = signal.signal(signal.SIGTERM, _raise_exit)
            stack.callback(signal.signal, signal.SIGTERM, previous)
        if state_file is None:
            state_file = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="hybridlab-serve-"))) / "device.pt"
        config = _Config(device, options, host, port, key, str(state_file), faults or Faults(), threads, use_cuda)
        for generation in itertools.count():
            code = _run_device_process(ctx, config, generation, announce if generation == 0 else None, stop)
            if code is None:  # stopped
                return
            if generation >= max_restarts:
                raise ValueError(f"the device process died {generation + 1} times (last exit code {code}); "
                                 f"giving up after {max_restarts} restarts")
            print(f"hybridlab serve: the device process exited with code {code}; restarting it from "
                  f"{state_file} ({generation + 1} of at most {max_restarts})", file=sys.stderr, flush=True)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def _run_device_process(ctx, config: _Config, generation: int, announce: Callable[[str], None] | None,
                        stop: threading.Event) -> int | None:
    """Start one device process, wait until it listens, then until it exits (its exit code) or ``stop`` (None)."""
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_device_process, args=(config, send, generation), name=f"hybridlab-device-{generation}")
    proc.start()
    send.close()
    try:
        while not receive.poll(0.1):
            if not proc.is_alive():
                raise ValueError(f"the device process exited with code {proc.exitcode} before it listened")
            if stop.is_set():
                return None
        status, message = receive.recv()
        if status == "error":
            raise ValueError(message)
        if announce is not None:
            announce(message)
        while proc.is_alive():
            if stop.wait(0.1):
                return None
        return proc.exitcode
    finally:
        receive.close()
        if proc.is_alive():
            proc.terminate()
            proc.join(10)
            if proc.is_alive():
                proc.kill()
                proc.join()


# ------------------------------------------------------------------------------- in the background
class ServerThread:
    """A device server run by :func:`start_server`: ``address`` is ``"HOST:PORT"``; :meth:`stop` ends it."""

    def __init__(self, thread: threading.Thread, stop: threading.Event, address: str) -> None:
        self.thread, self._stop, self.address = thread, stop, address

    def stop(self) -> None:
        """End the server and its device process."""
        self._stop.set()
        self.thread.join()

    def __enter__(self) -> ServerThread:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(device: str, *, startup_timeout: float = 300.0, **kwargs: Any) -> ServerThread:
    """Run :func:`serve` in a background thread and return once the device listens.

    The device itself runs in a child process (spawn), as with ``python -m hybridlab serve``;
    ``kwargs`` are those of :func:`serve` (``port`` defaults to a free one). Use the result as a
    context manager, or call :meth:`ServerThread.stop`, so that the server ends with its user
    (the device process also ends when this process does).

    Raises:
        ValueError: the server could not start (with its reason), or did not listen within
            ``startup_timeout`` seconds.
    """
    events: queue.Queue[tuple[str, str]] = queue.Queue()
    stop = threading.Event()

    def run() -> None:
        try:
            serve(device, announce=lambda address: events.put(("ready", address)), stop=stop, **kwargs)
        except Exception as err:  # noqa: BLE001 - handed to the caller below
            events.put(("error", str(err)))

    thread = threading.Thread(target=run, name=f"hybridlab-serve-{device}", daemon=True)
    thread.start()
    server = ServerThread(thread, stop, "")
    try:
        status, message = events.get(timeout=startup_timeout)
    except queue.Empty:
        server.stop()
        raise ValueError(f"the {device} device server did not listen within {startup_timeout:g} s") from None
    if status == "error":
        server.stop()
        raise ValueError(message)
    server.address = message
    return server
