"""Shared machinery of the simulated devices (chapter 2; book/method.md, "Cost model" and "Devices").

A :class:`Device` is a query-only black box ``y = A(w) x``. Training code may only use

* :meth:`Device.configure` -- write a parameter vector (counts one *reconfiguration* if it changed),
* :meth:`Device.query` -- push a batch of inputs through at the current parameters (counts one
  *query* per input vector, adds fresh read-out noise),
* :meth:`Device.query_batch` -- the same for ``M`` parameter sets at once (the zero-order sampler).

These run under ``torch.no_grad`` and return detached tensors. The differentiable simulator path
(:meth:`Device.transfer_matrix`, :meth:`Device.simulate`) is the *oracle*, for teaching and tests.

Everything device independent lives here once: argument checks, counters, read-out noise,
phase quantisation with a straight-through estimator, crosstalk stencils, drift, the cached
matrix of the current configuration and the exact ``state_dict`` round trip (counters, random
generator state and the configured flag travel through ``get_extra_state``). A device file only
supplies its physics, ``w -> A(w)``, in :meth:`Device._matrix`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from .. import checks
from ..timing import timed

__all__ = [
    "Device",
    "neighbour_mean",
    "neighbour_sum",
    "quantise_periodic",
    "quantise_unit",
]

TWO_PI = 2.0 * math.pi


# --------------------------------------------------------------------------------------------
# helpers (pure functions, differentiable where it matters)
# --------------------------------------------------------------------------------------------
def _straight_through(x: Tensor, q: Tensor) -> Tensor:
    """Return ``q`` in the forward pass with the gradient of the identity (``dq/dx = 1``)."""
    if torch.is_grad_enabled() and x.requires_grad:
        return x + (q - x).detach()
    return q


def quantise_periodic(phi: Tensor, bits: int | None, period: float = TWO_PI) -> Tensor:
    """b-bit quantisation of a phase onto ``2**bits`` levels ``k * period / 2**bits``.

    The levels cover ``[0, period)``; a phase outside is mapped to the level of the same
    point modulo ``period`` (the physics is periodic, so the result is not wrapped).
    Straight-through estimator: the gradient is that of the identity.
    """
    if bits is None:
        return phi
    step = period / 2**bits
    return _straight_through(phi, torch.round(phi / step) * step)


def quantise_unit(w: Tensor, bits: int | None) -> Tensor:
    """b-bit quantisation of a value clipped to ``[-1, 1]`` onto ``2**bits`` uniform levels.

    ``bits=1`` gives ``{-1, 1}``. Straight-through estimator (identity gradient).
    """
    if bits is None:
        return w
    levels = 2**bits - 1
    q = torch.round((w.clamp(-1.0, 1.0) + 1.0) * (levels / 2.0)) * (2.0 / levels) - 1.0
    return _straight_through(w, q)


def neighbour_sum(grid: Tensor) -> Tensor:
    """Sum of the 4 grid neighbours (zero outside the grid) over the last two dimensions.

    Equivalent to a 2-D convolution with ``[[0,1,0],[1,0,1],[0,1,0]]`` and zero padding,
    done with shifted adds so it works for any leading batch shape.
    """
    g = F.pad(grid, (1, 1, 1, 1))
    return g[..., :-2, 1:-1] + g[..., 2:, 1:-1] + g[..., 1:-1, :-2] + g[..., 1:-1, 2:]


def neighbour_mean(grid: Tensor) -> Tensor:
    """Mean of the existing 4 grid neighbours (2 at corners, 3 on edges) of each element.

    A grid with a single element is its own neighbourhood (the mean is the element).
    """
    rows, cols = grid.shape[-2:]
    if rows * cols == 1:
        return grid
    count = neighbour_sum(torch.ones(rows, cols, dtype=grid.dtype, device=grid.device))
    return neighbour_sum(grid) / count.clamp_min(1.0)


def _seed_from(seed: int, stream: int) -> int:
    """An independent 63-bit seed for stream ``stream`` of a device seeded with ``seed``."""
    state = np.random.SeedSequence([seed, stream]).generate_state(2, np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


# --------------------------------------------------------------------------------------------
# the device
# --------------------------------------------------------------------------------------------
class Device(torch.nn.Module):
    """Base class of a simulated photonic device with a query-only interface.

    Parameters
    ----------
    d_in, d_out:
        Input and output width of the linear map ``y = A(w) x`` (both >= 1).
    bits:
        Phase (or value) quantisation to ``2**bits`` levels; ``None`` (default) = continuous.
    crosstalk:
        Neighbour coupling ``c`` >= 0 on the parameter grid (meaning depends on the device).
    fab_error:
        Standard deviation of the fabrication error (meaning depends on the device), drawn once
        at construction from ``seed`` and stored as a buffer.
    noise:
        Relative read-out noise: every query adds ``noise * rms(y) * N(0, 1)`` to each output,
        where ``rms(y)`` is the root mean square of that query's ``d_out`` noiseless outputs.
    drift:
        Standard deviation per :meth:`advance` step of a random walk of the effective phases.
    seed:
        Seeds the fabrication errors and the runtime generator (read-out noise, drift, phase noise).
    dtype, device:
        Floating dtype (``torch.float32`` or ``torch.float64``) and torch device of the buffers.

    Notes
    -----
    Counting follows the book's cost model (chapter 2; book/method.md, "Cost model"): :meth:`query`
    adds ``n`` queries for ``n`` input vectors; :meth:`configure` adds one reconfiguration iff the
    written vector differs from the one on the device. :meth:`query_batch` behaves exactly like the loop
    ``for w in W: configure(w); query(X)`` (so ``M`` reconfigurations for ``M`` distinct sets).
    """

    name: ClassVar[str] = "device"
    #: True if ``f(x; w)`` is linear in ``x`` (all four devices; MZI via coherent detection).
    linear_in_x: ClassVar[bool] = True
    #: the generic non-idealities this device models (others must be left at their default).
    supported: ClassVar[tuple[str, ...]] = ("bits", "noise", "drift")

    def __init__(
        self,
        d_in: int,
        d_out: int,
        *,
        bits: int | None = None,
        crosstalk: float = 0.0,
        fab_error: float = 0.0,
        noise: float = 0.0,
        drift: float = 0.0,
        seed: int = 0,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        self.d_in = checks.count(d_in, "d_in")
        self.d_out = checks.count(d_out, "d_out")
        self.bits = None if bits is None else checks.count(bits, "bits", what="phase quantisation bits")
        if self.bits is not None and self.bits > 30:
            raise ValueError(f"bits must be <= 30 (use bits=None for continuous phases), got {bits}")
        self.crosstalk = checks.nonnegative_number(crosstalk, "crosstalk")
        self.fab_error = checks.nonnegative_number(fab_error, "fab_error")
        self.noise = checks.nonnegative_number(noise, "noise")
        self.drift = checks.nonnegative_number(drift, "drift")
        self.seed = checks.count(seed, "seed", minimum=0)
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
        given = {"bits": self.bits is not None, "crosstalk": self.crosstalk > 0,
                 "fab_error": self.fab_error > 0, "noise": self.noise > 0, "drift": self.drift > 0}
        for option, on in given.items():
            if on and option not in self.supported:
                raise ValueError(
                    f"{option} is not modelled by the '{self.name}' device; leave it at its default "
                    f"(options it models: {', '.join(self.supported)})"
                )
        self.p = self._num_params(self.d_in, self.d_out)
        dev = torch.device(device) if device is not None else torch.empty(0).device
        self.register_buffer("w", torch.zeros(self.p, dtype=dtype, device=dev))
        self.register_buffer("drift_offset", torch.zeros(self.p, dtype=dtype, device=dev))
        self._gen = torch.Generator(device=self.w.device)
        self._gen.manual_seed(_seed_from(self.seed, 1))
        self.queries = 0
        self.reconfigurations = 0  # a Python int plus a count kept on the torch device (property)
        self._configured = False
        self._cache: Tensor | None = None  # transfer matrix at the configured w (not saved)
        self._config_queried = False  # queried since the last change of the configuration?

    # ---------------------------------------------------------------- to be supplied by devices
    @staticmethod
    def _num_params(d_in: int, d_out: int) -> int:
        """Number of control parameters ``p`` for the given sizes."""
        return d_in * d_out

    def _matrix(self, w: Tensor) -> Tensor:
        """Physics: ``(..., p) -> (..., d_out, d_in)`` including fixed non-idealities and drift.

        Must be differentiable when autograd is on; may use in-place ops when it is off.
        """
        raise NotImplementedError

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """A sensible, seeded initial parameter vector ``(p,)`` (default: from ``seed``)."""
        raise NotImplementedError

    # hooks with defaults -------------------------------------------------------------------
    @property
    def _per_call_randomness(self) -> bool:
        """True if each query call draws fresh random physics (e.g. MZI phase noise)."""
        return False

    def _noisy_matrix(self, w: Tensor) -> Tensor:
        """Matrix as seen by one query call (adds per-call randomness such as phase noise)."""
        return self._matrix(w)

    def _prefer_propagation(self, n: int) -> bool:
        """True if pushing ``n`` inputs through the physics beats building the matrix once.

        Used for the first query after a change of configuration (later queries at the same
        configuration reuse the cached matrix). Default: always build the matrix.
        """
        return False

    def _invalidate(self) -> None:
        """The configuration or the drift changed: drop the cached matrix."""
        self._cache = None
        self._config_queried = False

    def _batch_forward(self, W: Tensor, X: Tensor) -> Tensor:
        """Noiseless outputs ``(M, n, d_out)`` for ``W (M, p)`` and ``X (n, d_in)`` or ``(M, n, d_in)``.

        Runs under ``torch.no_grad``; default: all ``M`` matrices at once, then one GEMM.
        """
        A = self._noisy_matrix(W)  # (M, d_out, d_in)
        return _apply_matrices(A, X)

    # ---------------------------------------------------------------- properties and helpers
    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the device's buffers."""
        return self.w.dtype

    @property
    def device(self) -> torch.device:
        """Torch device of the buffers (and of the noise generator)."""
        return self.w.device

    @property
    def reconfigurations(self) -> int:
        """Reconfigurations counted so far.

        :meth:`query_batch` counts the changed parameter sets on the torch device (no read back to
        the host per call); reading this property adds them up (one read, only when asked).
        """
        if self._pending_reconfigurations is not None:
            self._reconfigurations += int(self._pending_reconfigurations)
            self._pending_reconfigurations = None
        return self._reconfigurations

    @reconfigurations.setter
    def reconfigurations(self, value: int) -> None:
        self._reconfigurations = int(value)
        self._pending_reconfigurations: Tensor | None = None

    @property
    def param_shape(self) -> tuple[int, int]:
        """The parameters ``w`` viewed as a matrix ``(d1, d2)``, ``d1 d2 = p`` (row-major).

        Used by low-rank zero-order directions (:func:`hybridlab.zo.zo_gradient`,
        ``kind='lowrank'``). Default: the ``d_out x d_in`` grid of one parameter per matrix entry.
        """
        return self.d_out, self.d_in

    @property
    def configured(self) -> bool:
        """Whether a parameter vector has been written with :meth:`configure`."""
        return self._configured

    def _fab_generator(self) -> torch.Generator:
        """CPU generator for the fabrication errors (identical across torch devices)."""
        g = torch.Generator()
        g.manual_seed(_seed_from(self.seed, 0))
        return g

    def _fab_normal(self, g: torch.Generator, *shape: int) -> Tensor:
        """``fab_error * N(0, 1)`` of the given shape, drawn on CPU, moved to the device."""
        return (self.fab_error * torch.randn(*shape, generator=g, dtype=torch.float64)).to(
            dtype=self.dtype, device=self.device
        )

    def _randn(self, *shape: int) -> Tensor:
        """Standard normal numbers from the device's runtime generator."""
        return torch.randn(*shape, generator=self._gen, dtype=self.dtype, device=self.device)

    def _quantise(self, phi: Tensor) -> Tensor:
        """Phase quantisation on ``[0, 2 pi)`` (no-op if ``bits`` is None)."""
        return quantise_periodic(phi, self.bits)

    def _add_drift(self, phi: Tensor) -> Tensor:
        """Add the current drift offset of the effective phases (no-op without drift)."""
        if self.drift == 0:
            return phi
        return phi + self.drift_offset

    def _init_generator(self, generator: torch.Generator | None) -> torch.Generator:
        if generator is not None:
            return generator
        g = torch.Generator()
        g.manual_seed(_seed_from(self.seed, 2))
        return g

    def _uniform(self, generator: torch.Generator | None, low: float, high: float) -> Tensor:
        """``(p,)`` uniform numbers in ``[low, high)`` from ``generator`` (default: seeded)."""
        g = self._init_generator(generator)
        u = torch.rand(self.p, generator=g, dtype=torch.float64, device=g.device)
        return (low + (high - low) * u).to(dtype=self.dtype, device=self.device)

    # ---------------------------------------------------------------- argument checks
    def _check_w(self, w: Tensor, name: str = "w", detach: bool = True, finite: bool = True) -> Tensor:
        if not isinstance(w, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor of shape ({self.p},), got {type(w).__name__}")
        if w.shape != (self.p,):
            raise ValueError(
                f"{name} must have shape ({self.p},) (p = number of '{self.name}' parameters for "
                f"d_in={self.d_in}, d_out={self.d_out}), got {tuple(w.shape)}"
            )
        w = (w.detach() if detach else w).to(dtype=self.dtype, device=self.device)
        if finite:
            self._check_finite_w(w, name)
        return w

    @staticmethod
    def _check_finite_w(w: Tensor, name: str) -> None:
        if not torch.isfinite(w.detach().sum()) and not torch.isfinite(w.detach()).all():
            raise ValueError(f"{name} contains NaN or Inf; the device can only be set to finite values")

    def _check_W(self, W: Tensor) -> Tensor:
        if not isinstance(W, Tensor):
            raise TypeError(f"W must be a torch.Tensor of shape (M, {self.p}), got {type(W).__name__}")
        if W.dim() != 2 or W.shape[1] != self.p or W.shape[0] < 1:
            raise ValueError(
                f"W must have shape (M, {self.p}) with M >= 1 parameter sets (p = number of "
                f"'{self.name}' parameters), got {tuple(W.shape)}"
            )
        # (non-finite entries are caught by the output check; a full scan here costs a pass over W)
        return W.detach().to(dtype=self.dtype, device=self.device)

    def _check_X(self, X: Tensor, M: int | None = None, detach: bool = True) -> Tensor:
        if not isinstance(X, Tensor):
            raise TypeError(f"X must be a torch.Tensor of shape (n, {self.d_in}), got {type(X).__name__}")
        ok_dims = (2,) if M is None else (2, 3)
        if X.dim() not in ok_dims or X.shape[-1] != self.d_in or (X.dim() == 3 and X.shape[0] != M):
            want = f"(n, {self.d_in})" + ("" if M is None else f" or ({M}, n, {self.d_in})")
            raise ValueError(
                f"X must have shape {want} (the device has d_in={self.d_in} inputs), got {tuple(X.shape)}"
            )
        return (X.detach() if detach else X).to(dtype=self.dtype, device=self.device)

    def _check_configured(self) -> None:
        if not self._configured:
            raise ValueError(
                f"the '{self.name}' device is not configured: call configure(w) first, "
                "e.g. device.configure(device.init_params())"
            )

    # ---------------------------------------------------------------- read-out
    def _readout(self, Y: Tensor) -> Tensor:
        """Add fresh read-out noise ``noise * rms(y) * N(0,1)`` (rms over each query's outputs)."""
        if self.noise > 0:
            scale = Y.detach().square().mean(dim=-1, keepdim=True).sqrt_().mul_(self.noise)
            eps = self._randn(*Y.shape).mul_(scale)
            Y = Y + eps if Y.requires_grad else Y.add_(eps)
        return Y

    @staticmethod
    def _check_finite(Y: Tensor) -> None:
        # fast path: a finite sum means finite entries; confirm with the full scan otherwise
        if not torch.isfinite(Y.sum()) and not torch.isfinite(Y).all():
            raise ValueError(
                "device returned non-finite output (NaN/Inf): check that the inputs X and the "
                "parameters w are finite and of moderate size (lower the learning rate or the "
                "zero-order step mu, or normalise the layer input)"
            )

    # ---------------------------------------------------------------- query interface
    @timed("device")
    @torch.no_grad()
    def configure(self, w: Tensor) -> None:
        """Write the parameter vector ``w`` (shape ``(p,)``) to the device.

        Counts one reconfiguration iff ``w`` differs from the vector on the device (or the
        device was not configured yet).
        """
        w = self._check_w(w, finite=False)
        if self._configured and torch.equal(w, self.w):  # (the vector on the device is finite)
            return
        self._check_finite_w(w, "w")
        self.w.copy_(w)
        self._configured = True
        self._reconfigurations += 1
        self._invalidate()

    @timed("device")
    @torch.no_grad()
    def query(self, X: Tensor) -> Tensor:
        """Outputs ``(n, d_out)`` for inputs ``X (n, d_in)`` at the current configuration.

        Counts ``n`` queries; adds fresh read-out noise. Detached, never tracks gradients.
        """
        self._check_configured()
        X = self._check_X(X)
        n = X.shape[0]
        self.queries += n
        # the first query after a change may push X through the physics directly (MZI); the
        # choice depends only on saved state, so a reloaded device repeats it exactly
        if self._per_call_randomness or (not self._config_queried and self._prefer_propagation(n)):
            Y = self._batch_forward(self.w[None], X)[0]
        else:
            Y = X @ self.true_matrix().mT
        self._config_queried = True
        Y = self._readout(Y)
        self._check_finite(Y)
        return Y

    @timed("device")
    @torch.no_grad()
    def query_batch(self, W: Tensor, X: Tensor) -> Tensor:
        """Outputs ``(M, n, d_out)`` for ``M`` parameter sets ``W (M, p)`` on inputs ``X``.

        ``X`` is ``(n, d_in)`` (shared by all sets) or ``(M, n, d_in)``. Same numbers and counts
        (up to read-out noise and floating point rounding) as ``for w in W: configure(w); query(X)``:
        one reconfiguration per set that differs from the previous one, ``M * n`` queries;
        the device is left configured at ``W[-1]``. All ``M`` sets are simulated at once.
        """
        W = self._check_W(W)
        X = self._check_X(X, W.shape[0])
        M, n = W.shape[0], X.shape[-2]
        changed = _count_changed_rows(W, self.w if self._configured else None)
        if isinstance(changed, Tensor):  # counted on the torch device: read when asked
            pending = self._pending_reconfigurations
            self._pending_reconfigurations = changed if pending is None else pending + changed
        else:
            self._reconfigurations += changed
        self._invalidate()  # (also when nothing changed: the matrix is rebuilt, identically)
        self.w.copy_(W[-1])
        self._configured = True
        self._config_queried = True
        self.queries += M * n
        Y = self._readout(self._batch_forward(W, X))
        self._check_finite(Y)
        return Y

    @timed("device")
    def advance(self, steps: int = 1) -> None:
        """Let the device drift for ``steps`` time steps (random walk of the effective phases).

        Each step adds ``N(0, drift^2)`` to every effective phase; no-op when ``drift == 0``.
        """
        steps = checks.count(steps, "steps", minimum=0)
        if self.drift == 0 or steps == 0:
            return
        with torch.no_grad():
            self.drift_offset.add_(self._randn(self.p), alpha=self.drift * math.sqrt(steps))
        self._invalidate()

    # ---------------------------------------------------------------- simulator internals
    def transfer_matrix(self, w: Tensor) -> Tensor:
        """Differentiable ``A(w)``: ``(..., p) -> (..., d_out, d_in)`` (oracle and tests only).

        Includes the fixed non-idealities (quantisation with a straight-through gradient,
        crosstalk, fabrication error, current drift); excludes read-out noise. Counts nothing.
        """
        if not isinstance(w, Tensor) or w.dim() < 1 or w.shape[-1] != self.p:
            shape = tuple(w.shape) if isinstance(w, Tensor) else type(w).__name__
            raise ValueError(f"w must have shape (..., {self.p}) for the '{self.name}' device, got {shape}")
        if w.dtype != self.dtype or w.device != self.device:
            w = w.to(dtype=self.dtype, device=self.device)
        return self._matrix(w)

    def true_matrix(self) -> Tensor:
        """The transfer matrix ``(d_out, d_in)`` at the configured ``w`` (cached; counts nothing)."""
        self._check_configured()
        if self._cache is None:
            with torch.no_grad():
                A = self._matrix(self.w)
            # never hand out a view of the parameter buffer (the ideal device's A is w reshaped)
            self._cache = A.clone() if A.data_ptr() == self.w.data_ptr() else A
        return self._cache

    @timed("device")
    def simulate(self, X: Tensor, w: Tensor) -> Tensor:
        """Differentiable forward ``X @ A(w)^T`` plus read-out noise (the oracle path).

        Counts ``n`` queries like :meth:`query` but does not configure the device. The noise
        scale is detached, so gradients are those of ``X @ A(w)^T``.
        """
        X = self._check_X(X, detach=False)
        w = self._check_w(w, detach=False)
        self.queries += X.shape[0]
        Y = self._readout(X @ self._noisy_matrix(w).mT)
        self._check_finite(Y)
        return Y

    # ---------------------------------------------------------------- state round trip
    def get_extra_state(self) -> dict[str, Any]:
        """Counters, configured flag and runtime generator state (saved in ``state_dict``)."""
        return {
            "queries": self.queries,
            "reconfigurations": self.reconfigurations,
            "configured": self._configured,
            "config_queried": self._config_queried,
            "rng_state": self._gen.get_state(),
            "rng_device": self._gen.device.type,
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_extra_state` saved.

        The generator state is restored exactly when saved and loaded on the same kind of torch
        device; otherwise the generator is reseeded deterministically from the saved state.
        """
        self.queries = int(state["queries"])
        self.reconfigurations = int(state["reconfigurations"])
        self._configured = bool(state["configured"])
        self._config_queried = bool(state.get("config_queried", False))
        rng = state["rng_state"]
        if state.get("rng_device", self._gen.device.type) == self._gen.device.type:
            self._gen.set_state(rng.cpu() if isinstance(rng, Tensor) else rng)
        else:
            digest = int(torch.as_tensor(rng).to(torch.int64).sum().item())
            self._gen.manual_seed(_seed_from(self.seed, 3 + digest))
        self._cache = None

    def _apply(self, fn, recurse: bool = True):
        # .to()/.cuda()/.double(): keep the generator on the buffers' device, drop the cache.
        self._reconfigurations = self.reconfigurations  # fold in the count kept on the old device
        out = super()._apply(fn, recurse)
        self._cache = None
        if self._gen.device != self.w.device:
            seed = int(torch.randint(0, 2**62, (1,), generator=self._gen, device=self._gen.device).item())
            self._gen = torch.Generator(device=self.w.device)
            self._gen.manual_seed(seed)
        return out

    def extra_repr(self) -> str:
        parts = [f"d_in={self.d_in}", f"d_out={self.d_out}", f"p={self.p}"]
        for k in ("bits", "crosstalk", "fab_error", "noise", "drift"):
            v = getattr(self, k)
            if v not in (None, 0, 0.0):
                parts.append(f"{k}={v}")
        parts.extend(self._physics_repr())
        parts.append(f"seed={self.seed}")
        return ", ".join(parts)

    def _physics_repr(self) -> list[str]:
        return []


def _count_changed_rows(W: Tensor, current: Tensor | None, on_device: bool | None = None) -> int | Tensor:
    """Number of rows ``W[i]`` that differ from the row before (``W[0]`` from ``current``; ``None``:
    the device is not configured, ``W[0]`` counts).

    ``on_device=False`` (the default on the CPU): cheap first, rows whose first entries differ are
    different and only the rest are compared in full; the result is an ``int``. ``on_device=True``
    (the default elsewhere, a GPU, where reading a flag back to the host would wait for it): every
    row is compared there and the count is a 0-dim tensor on that device.
    """
    if on_device is None:
        on_device = W.device.type != "cpu"
    if on_device:
        differ = (W[1:] != W[:-1]).any(dim=1).sum()
        return differ + (1 if current is None else (W[0] != current).any())
    first_new = 1 if current is None else int(not torch.equal(W[0], current))
    if W.shape[0] < 2:
        return first_new
    differ = W[1:, 0] != W[:-1, 0]
    if not bool(differ.all()):
        differ = differ | (W[1:] != W[:-1]).any(dim=1)
    return first_new + int(differ.sum())


def _apply_matrices(A: Tensor, X: Tensor) -> Tensor:
    """``Y[m] = X[m] @ A[m]^T`` for ``A (M, d_out, d_in)``, ``X (n, d_in)`` or ``(M, n, d_in)``.

    A shared ``X`` is pushed through all ``M`` matrices with one GEMM.
    """
    M, d_out, d_in = A.shape
    if X.dim() == 2:
        n = X.shape[0]
        Y = X @ A.reshape(M * d_out, d_in).mT  # (n, M * d_out)
        return Y.view(n, M, d_out).transpose(0, 1).contiguous()
    return torch.bmm(X, A.mT)
