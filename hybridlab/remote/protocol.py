"""What client and server of a served device agree on: addresses, messages, retries, errors.

A *request* is ``{"op", "session", "seq", "args"}``: the operation, the client's session id (drawn
when it creates the device), the request's sequence number (0 for ``create``, then 1, 2, ...) and
the operation's arguments. A *reply* is ``{"seq", "ok", "result", "error", "counters"}``: the
sequence number it answers, whether the device did it, the result or the device's error message,
and the device's ``(queries, reconfigurations)`` after it. Tensors travel as NumPy arrays of the
device's dtype. Messages are pickled and sent over a :mod:`multiprocessing.connection` connection
that both ends authenticated with a shared key (HMAC challenge); pickle is only safe between
parties that hold the key, which is why a server beyond this machine must not use the default key.
"""

from __future__ import annotations

import ipaddress
import os
import pickle
import socket
from dataclasses import dataclass
from typing import Any

from .. import checks

__all__ = ["AUTHKEY_VARIABLE", "DEFAULT_AUTHKEY", "READOUTS", "RemoteDeviceError", "RetryPolicy", "authkey",
           "decode", "encode", "format_address", "is_loopback", "no_delay", "parse_address"]

#: The environment variable holding the shared key (both ends read it).
AUTHKEY_VARIABLE = "HYBRIDLAB_AUTHKEY"
#: The key used when the variable is unset; accepted on the loopback interface only.
DEFAULT_AUTHKEY = b"hybridlab-local"
#: Operations whose result is a read-out (checked for non-finite values by the client).
READOUTS: tuple[str, ...] = ("query", "query_batch")


class RemoteDeviceError(ValueError):
    """A served device could not be reached or refused an operation.

    A ``ValueError`` like every device error, so that :class:`hybridlab.layer.BlackBoxLinear` names
    the training step in front of it and ``python -m hybridlab`` reports it on one line.
    """


@dataclass(frozen=True)
class RetryPolicy:
    """How long a client waits for a served device and how often it tries again.

    Attributes:
        attempts: tries per operation (the first one included).
        timeout: seconds one try may take: to connect (a restarting server is waited for), to
            authenticate and to receive the reply.
        backoff: pause after the first failed try, doubled after each further one.

    An operation the server never answers fails after at most :attr:`deadline` seconds.
    """

    attempts: int = 5
    timeout: float = 30.0
    backoff: float = 0.1

    def __post_init__(self) -> None:
        checks.count(self.attempts, "attempts", what="tries per operation")
        checks.positive_number(self.timeout, "timeout", "seconds one try may take, e.g. 30")
        checks.nonnegative_number(self.backoff, "backoff")

    def pause(self, failed: int) -> float:
        """Seconds to wait after the ``failed``-th failed try (1-based)."""
        return self.backoff * 2 ** (failed - 1)

    @property
    def deadline(self) -> float:
        """Worst-case seconds of one operation: every try times out."""
        return self.attempts * self.timeout + sum(self.pause(k) for k in range(1, self.attempts))


def authkey(key: bytes | str | None = None) -> bytes:
    """The shared key: ``key``, else ``$HYBRIDLAB_AUTHKEY``, else :data:`DEFAULT_AUTHKEY`."""
    if key is None:
        key = os.environ.get(AUTHKEY_VARIABLE) or DEFAULT_AUTHKEY
    key = key.encode() if isinstance(key, str) else bytes(key)
    if not key:
        raise ValueError(f"the authentication key is empty: set {AUTHKEY_VARIABLE} to a secret, or leave it unset")
    return key


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"HOST:PORT"`` (or ``(host, port)``; ``"[::1]:PORT"`` for IPv6) as ``(host, port)``.

    Raises:
        ValueError: not of that form, or a port outside 1-65535.
    """
    if isinstance(address, tuple) and len(address) == 2:
        host, port = address
    elif isinstance(address, str):
        host, sep, port = address.strip().rpartition(":")
        host = host.strip("[]")
        if not sep or not host:
            raise ValueError(f"a device address is HOST:PORT (for example localhost:5000), got {address!r}")
    else:
        raise ValueError(f"a device address is a 'HOST:PORT' string or a (host, port) pair, got {address!r}")
    try:
        port = int(port)
    except (TypeError, ValueError):
        raise ValueError(f"the port of the device address {address!r} is not a number") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"the port of the device address {address!r} must be in 1-65535, got {port}")
    return str(host), port


def format_address(address: tuple[str, int]) -> str:
    """``(host, port)`` as ``"HOST:PORT"`` (IPv6 hosts in brackets)."""
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine's loopback interface (``localhost``, ``127.x``, ``::1``)."""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0].split("%")[0]).is_loopback for info in infos)


def no_delay(fd: int) -> None:
    """Send small messages at once on the TCP socket ``fd`` (no Nagle delay waiting for an ACK).

    A connection writes a long message as a header and a body; with Nagle's algorithm the body
    waits for the peer's delayed ACK of the header, tens of milliseconds per request.
    """
    with socket.socket(fileno=os.dup(fd)) as sock:
        if sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def encode(message: dict[str, Any]) -> bytes:
    """A message as bytes for ``Connection.send_bytes``."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


def decode(data: bytes) -> dict[str, Any]:
    """The message sent as ``data`` (only call on an authenticated connection)."""
    message = pickle.loads(data)
    if not isinstance(message, dict):
        raise ValueError(f"a message must be a dict, got {type(message).__name__}")
    return message
