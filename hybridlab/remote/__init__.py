"""A device in another process: serve a simulated device and use it as lab equipment is used.

Real photonic hardware sits behind a driver in another program, often on another machine; it can
only be written to and read from, answers late or not at all, returns a glitched read-out now and
then, and its controller sometimes restarts. This package puts a simulated device in exactly that
position, so that training can be shown to survive it:

* :func:`serve` (``python -m hybridlab serve --device NAME --port N``) holds one device of a given
  kind and physics options in a separate process and answers one client at a time;
* :class:`RemoteDevice` is the client: the query-only interface of
  :class:`hybridlab.devices.Device` (``configure``, ``query``, ``query_batch``, ``advance``,
  ``init_params`` and the counters), so :class:`hybridlab.layer.BlackBoxLinear` takes it in place
  of a device (``python -m hybridlab train ... --remote HOST:PORT``);
* :class:`Faults` are injected on the server: lost replies, late replies, non-finite read-outs and
  a device process that dies and is restarted;
* :class:`RetryPolicy` bounds the client's patience; :func:`start_server` runs a server from
  Python, in the background (tests, notebooks).

Protocol (:mod:`hybridlab.remote.protocol`). The client connects, both ends authenticate with a
shared key, and the client sends ``create`` with the layer's sizes and dtype, then one request per
operation, each with the session id and a sequence number; the server answers each with the
result and the device's counters. The server executes a request at most once and answers a
repeated one (same session and number) with the reply it kept, and it saves the device's state
with that reply after every request, so that a restarted server continues where it stopped.

Retry policy. One try is: connect if needed (waiting while the server restarts), send, wait for
the reply, all within ``timeout`` seconds; a failed try (no connection, no reply, a non-finite
read-out) is repeated after ``backoff``, ``2 backoff``, ... seconds, ``attempts`` times in all,
then the operation raises :class:`RemoteDeviceError` naming the operation, the address and what
to check; the layer adds the training step. Retries resend the same numbered request, so the
numbers of a run do not depend on the faults: a run against a faulty server ends with the same
metric, queries and reconfigurations as against the in-process device.

Why :mod:`multiprocessing.connection`: it is in the standard library (nothing to install, kept
with Python), gives message framing, a listener and HMAC authentication with a shared key in a
few calls, and ``poll(timeout)`` bounds every wait; the messages are small dictionaries with
NumPy arrays, which pickle carries without a schema. A message broker (ZeroMQ) or an RPC
framework (gRPC) would add a dependency and a schema for a single client talking to a single
server; a raw socket would mean writing the framing and the authentication by hand.
"""

from .client import RemoteDevice
from .protocol import RemoteDeviceError, RetryPolicy, parse_address
from .server import Faults, ServerThread, serve, start_server

__all__ = ["Faults", "RemoteDevice", "RemoteDeviceError", "RetryPolicy", "ServerThread", "parse_address", "serve",
           "start_server"]
