"""The client: a device served by another process, used through the query-only interface."""

from __future__ import annotations

import socket
import time
import uuid
from collections import Counter
from multiprocessing import AuthenticationError
from multiprocessing.connection import Connection, answer_challenge, deliver_challenge
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import checks
from .protocol import READOUTS, RemoteDeviceError, RetryPolicy, authkey, decode, encode, format_address, parse_address

__all__ = ["RemoteDevice"]


class _NoAnswer(Exception):
    """A try ran out of time."""


class RemoteDevice(nn.Module):
    """A simulated device served by ``python -m hybridlab serve``, behind the query-only interface.

    :class:`hybridlab.layer.BlackBoxLinear` accepts it wherever it accepts a
    :class:`hybridlab.devices.Device`: :meth:`configure`, :meth:`query`, :meth:`query_batch`,
    :meth:`advance`, :meth:`init_params`, ``d_in``, ``d_out``, ``p``, ``name``, ``linear_in_x``, and
    the counters ``queries`` and ``reconfigurations`` as the server's device counts them. The
    differentiable simulator (``transfer_matrix``, ``simulate``) stays on the server, so the
    ``oracle`` method cannot use a served device.

    Constructing it connects and creates the server's device with these sizes (the kind and the
    physics options are the server's). Every operation is one request with a sequence number;
    a try that fails (no connection, no reply within ``retry.timeout``, a non-finite read-out) is
    repeated with the same number after a pause, and the server replays the reply it already
    computed, so retries never change the numbers. After ``retry.attempts`` failed tries the
    operation raises :class:`~hybridlab.remote.RemoteDeviceError` naming the operation, the address
    and what to check. An error of the device itself (a bad shape, a non-finite output) is raised
    at once, without retrying.

    Args:
        address: ``"HOST:PORT"`` of the server.
        d_in, d_out: the layer's sizes.
        dtype: floating dtype of the device (default: torch's default dtype).
        retry: the :class:`~hybridlab.remote.RetryPolicy` (default: 5 tries of 30 s).
        key: the shared authentication key (default: ``$HYBRIDLAB_AUTHKEY`` or the local default).

    Raises:
        RemoteDeviceError: nothing listens at the address, the host is unknown, the key differs,
            or the server does not answer.
    """

    def __init__(self, address: str | tuple[str, int], d_in: int, d_out: int, *, dtype: torch.dtype | None = None,
                 retry: RetryPolicy | None = None, key: bytes | str | None = None) -> None:
        super().__init__()
        self._host, self._port = parse_address(address)
        self.address = format_address((self._host, self._port))
        self.d_in = checks.count(d_in, "d_in")
        self.d_out = checks.count(d_out, "d_out")
        self.dtype = dtype or torch.get_default_dtype()
        if self.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {self.dtype!r}")
        self.retry = retry or RetryPolicy()
        if not isinstance(self.retry, RetryPolicy):
            raise TypeError(f"`retry` must be a RetryPolicy, got {type(self.retry).__name__}")
        self._key = authkey(key)
        self._session = uuid.uuid4().hex  # names this client's device on the server (not a number of the run)
        self._seq = -1
        self._conn: Connection | None = None
        self.queries = 0
        self.reconfigurations = 0
        #: failed tries so far, by reason (what the retries absorbed)
        self.problems: Counter[str] = Counter()
        self.name = "remote"  # until the server says which kind it serves
        self._conn = self._first_connection()
        try:
            info = self._call("create", d_in=self.d_in, d_out=self.d_out, dtype=str(self.dtype).removeprefix("torch."))
        except BaseException:
            self._disconnect()
            raise
        self.name = info["name"]
        self.p: int = info["p"]
        self.linear_in_x: bool = info["linear_in_x"]
        #: the parameters viewed as a matrix (low-rank ZO directions), as the server's device defines it
        self.param_shape: tuple[int, int] = tuple(info["param_shape"])
        #: the server's physics options (``noise``, ``bits``, ``seed``, ...)
        self.options: dict[str, Any] = info["options"]

    @property
    def device(self) -> torch.device:
        """Where the client's tensors live: the host (replies arrive as host arrays and are moved to the
        inputs' torch device)."""
        return torch.from_numpy(np.empty(0)).device  # where arrays from the wire land

    # ------------------------------------------------------------------ the query-only interface
    def configure(self, w: Tensor) -> None:
        """Write the parameter vector ``w`` (shape ``(p,)``); see :meth:`hybridlab.devices.Device.configure`."""
        self._call("configure", w=self._array(w, "w"))

    def query(self, X: Tensor) -> Tensor:
        """Outputs ``(n, d_out)`` for inputs ``X (n, d_in)``; see :meth:`hybridlab.devices.Device.query`."""
        return self._tensor(self._call("query", X=self._array(X, "X")), X)

    def query_batch(self, W: Tensor, X: Tensor) -> Tensor:
        """Outputs ``(M, n, d_out)`` for ``M`` parameter sets; see :meth:`hybridlab.devices.Device.query_batch`."""
        return self._tensor(self._call("query_batch", W=self._array(W, "W"), X=self._array(X, "X")), X)

    def advance(self, steps: int = 1) -> None:
        """Let the device drift for ``steps`` time steps; see :meth:`hybridlab.devices.Device.advance`."""
        self._call("advance", steps=checks.count(steps, "steps", minimum=0))

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """The device's seeded initial parameters ``(p,)``, drawn on the server from ``generator``'s state.

        ``generator`` (a CPU generator) advances exactly as it would on an in-process device.
        """
        state = None
        if generator is not None:
            if generator.device.type != "cpu":
                raise ValueError(f"init_params of a served device needs a CPU generator, got one on {generator.device}")
            state = generator.get_state().numpy()
        result = self._call("init_params", generator_state=state)
        if generator is not None:
            generator.set_state(torch.from_numpy(result["generator_state"]))
        return torch.from_numpy(result["params"])

    # ------------------------------------------------------------------ state and connection
    def get_extra_state(self) -> bytes:
        """The server device's ``state_dict`` (serialised), so a layer's ``state_dict`` holds it."""
        return self._call("state")

    def set_extra_state(self, state: bytes) -> None:
        """Load a state saved by :meth:`get_extra_state` into the server's device."""
        if not isinstance(state, bytes):
            raise TypeError(f"the saved state of a served device is bytes, got {type(state).__name__}")
        self._call("load_state", state=state)

    def close(self) -> None:
        """Close the connection (the server then serves the next client)."""
        self._disconnect()

    def __enter__(self) -> RemoteDevice:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def extra_repr(self) -> str:
        return f"{self.name!r} at {self.address}, d_in={self.d_in}, d_out={self.d_out}, p={getattr(self, 'p', '?')}"

    # ------------------------------------------------------------------ internals
    def _array(self, t: Tensor, name: str) -> np.ndarray:
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        return t.detach().to(self.dtype).cpu().numpy()

    @staticmethod
    def _tensor(a: np.ndarray, like: Tensor) -> Tensor:
        return torch.from_numpy(a).to(like.device)

    def _where(self) -> str:
        if not hasattr(self, "p"):  # not created yet
            return f"the device server at {self.address}"
        return f"the served {self.name} device at {self.address}"

    def _first_connection(self) -> Connection:
        """Connect once, failing at once when nothing listens (a typo in the address, no server)."""
        try:
            return self._connect(time.monotonic() + self.retry.timeout, wait_for_server=False)
        except ConnectionRefusedError:
            raise RemoteDeviceError(
                f"nothing listens at {self.address}: start the device server there "
                f"(python -m hybridlab serve --device NAME --port {self._port}) or check the address") from None
        except socket.gaierror as err:
            raise RemoteDeviceError(f"cannot resolve the host {self._host!r} of {self.address} ({err.strerror}): "
                                    "check the host name") from None
        except AuthenticationError:
            raise RemoteDeviceError(self._key_message()) from None
        except (_NoAnswer, OSError, EOFError) as err:
            raise RemoteDeviceError(f"cannot connect to {self.address}: {_describe(err)}; check that "
                                    "`python -m hybridlab serve` runs there and serves no other client") from None

    def _key_message(self) -> str:
        return (f"the server at {self.address} refused the authentication key: set HYBRIDLAB_AUTHKEY to the "
                "server's key (or unset it on both sides for a local server)")

    def _connect(self, deadline: float, wait_for_server: bool = True) -> Connection:
        """A new authenticated connection; ``wait_for_server``: retry refusals until ``deadline``."""
        while True:
            remaining = max(deadline - time.monotonic(), 1e-3)
            try:
                sock = socket.create_connection((self._host, self._port), timeout=remaining)
                break
            except ConnectionRefusedError:  # the server is (re)starting
                if not wait_for_server or time.monotonic() >= deadline:
                    raise
                time.sleep(min(0.05, remaining))
            except TimeoutError:
                raise _NoAnswer(f"no connection within {self.retry.timeout:g} s") from None
        sock.setblocking(True)  # the connection does blocking reads; poll() below bounds the waits
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = Connection(sock.detach())
        try:
            if not conn.poll(max(deadline - time.monotonic(), 0.0)):
                raise _NoAnswer(f"the server accepted the connection but sent no handshake within "
                                f"{self.retry.timeout:g} s (is it busy with another client?)")
            answer_challenge(conn, self._key)
            deliver_challenge(conn, self._key)
        except BaseException:
            conn.close()
            raise
        return conn

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _call(self, op: str, **args: Any) -> Any:
        """Run one operation on the server with the retry policy; returns its result."""
        seq = self._seq + 1
        request = encode({"op": op, "session": self._session, "seq": seq, "args": args})
        problems: list[str] = []
        start = time.monotonic()
        for attempt in range(1, self.retry.attempts + 1):
            if attempt > 1:
                time.sleep(self.retry.pause(attempt - 1))
            deadline = time.monotonic() + self.retry.timeout
            try:
                if self._conn is None:
                    self._conn = self._connect(deadline)
                self._conn.send_bytes(request)
                if not self._conn.poll(max(deadline - time.monotonic(), 0.0)):
                    raise _NoAnswer(f"no reply within {self.retry.timeout:g} s")
                reply = decode(self._conn.recv_bytes())
            except AuthenticationError:
                self._disconnect()
                raise RemoteDeviceError(self._key_message()) from None
            except (_NoAnswer, OSError, EOFError) as err:
                problems.append(_describe(err))
                self.problems[problems[-1]] += 1
                self._disconnect()  # a late reply must not be read as the answer to a later request
                continue
            if reply.get("seq") != seq:
                self._disconnect()
                raise RemoteDeviceError(f"{self._where()} answered request {reply.get('seq')} to request {seq} "
                                        f"({op}): {reply.get('error') or 'protocol error'}")
            self._seq = seq
            self.queries, self.reconfigurations = reply["counters"]
            if not reply["ok"]:
                raise RemoteDeviceError(f"{self._where()} refused {op}: {reply['error']}")
            result = reply["result"]
            if op in READOUTS and not np.isfinite(result).all():
                problems.append("a non-finite read-out")  # a read-out glitch: read the same reply again
                self.problems[problems[-1]] += 1
                continue
            return result
        raise RemoteDeviceError(
            f"{op} on {self._where()} failed {self.retry.attempts} times in {time.monotonic() - start:.1f} s "
            f"({'; '.join(dict.fromkeys(problems))}): check that `python -m hybridlab serve` still runs there "
            "and is reachable, or allow more time (--timeout, --attempts)")


def _describe(err: BaseException) -> str:
    if isinstance(err, EOFError):
        return "the server closed the connection"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused"
    return str(err) or type(err).__name__

