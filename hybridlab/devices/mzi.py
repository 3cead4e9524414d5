"""Mach-Zehnder interferometer mesh in the Clements rectangular layout (chapter 2).

The mesh acts on ``N = max(d_in, d_out)`` optical modes. It has ``N`` columns; column ``c`` holds
MZIs on the mode pairs ``(0,1), (2,3), ...`` (``c`` even) or ``(1,2), (3,4), ...`` (``c`` odd), in
all ``N(N-1)/2`` MZIs, followed by one output phase per mode. Parameters (``p = N*N``)::

    w = [theta (N(N-1)/2), phi (N(N-1)/2), alpha (N)]        # MZIs ordered column by column

One MZI (2x2, acting on its mode pair)::

    T = BS(pi/4 + eps2) . diag(e^{i theta}, 1) . BS(pi/4 + eps1) . diag(e^{i phi}, 1) * 10^(-loss_db/20)
    BS(b) = [[cos b, i sin b], [i sin b, cos b]]

and ``U = diag(e^{i alpha}) . C_{N-1} ... C_1 . C_0`` is unitary when ``eps = 0`` and ``loss_db = 0``.

Coherent detection: the input ``x`` (real) is zero-padded to ``N`` modes and the device reads
``y = Re(U x_pad)[:d_out]``. Because ``x`` is real, ``Re(U x) = Re(U) x``, so the device is linear
in ``x`` with the real transfer matrix ``A = Re(U)[:d_out, :d_in]``.

Non-idealities (all off by default): ``fab_error`` (std of the splitting-angle error ``eps`` of
every beam splitter, fixed at fabrication), ``phase_noise`` (std of a fresh phase error on every
phase for each query call), ``loss_db`` (insertion loss per MZI), ``bits`` (phase quantisation
on ``[0, 2 pi)``), ``noise`` (read-out) and ``drift`` (random walk of all phases).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .. import checks
from .base import TWO_PI, Device

__all__ = ["MZIMesh", "mzi_coefficients"]


def _expi(x: Tensor) -> Tensor:
    """``exp(i x)`` for real ``x`` (as ``cos + i sin``: much faster than ``torch.polar`` on CPU)."""
    return torch.complex(torch.cos(x), torch.sin(x))


def _cos_sin_quarter(eps: Tensor | float, like: Tensor) -> tuple[Tensor | float, Tensor | float]:
    """``cos`` and ``sin`` of ``pi/4 + eps``: tensors for a tensor ``eps``, Python floats for a number
    (no tensor is made on the GPU from a host number, which would wait for it)."""
    if isinstance(eps, Tensor):
        b = eps.to(dtype=like.dtype, device=like.device) + math.pi / 4
        return torch.cos(b), torch.sin(b)
    b = float(eps) + math.pi / 4
    return math.cos(b), math.sin(b)


def mzi_coefficients(
    theta: Tensor, phi: Tensor, eps1: Tensor | float = 0.0, eps2: Tensor | float = 0.0, loss: float = 1.0
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Entries ``(t00, t01, t10, t11)`` of the 2x2 MZI transfer matrix, elementwise over the inputs.

    ``T = loss * BS(pi/4+eps2) diag(e^{i theta},1) BS(pi/4+eps1) diag(e^{i phi},1)`` multiplied out::

        t00 = e^{i phi} (c1 c2 e^{i theta} - s1 s2)      t01 = i (s1 c2 e^{i theta} + c1 s2)
        t10 = i e^{i phi} (c1 s2 e^{i theta} + s1 c2)    t11 = c1 c2 - s1 s2 e^{i theta}

    with ``c_k = cos(pi/4 + eps_k)``, ``s_k = sin(pi/4 + eps_k)``. Differentiable.
    """
    c1, s1 = _cos_sin_quarter(eps1, theta)
    c2, s2 = _cos_sin_quarter(eps2, theta)
    if loss != 1.0:  # every entry has exactly one factor c1 or s1: fold the loss in there
        c1, s1 = c1 * loss, s1 * loss
    # small per-MZI (or scalar) factors first, then few passes over the big phase tensors
    cc, ss, ic_s, is_c = c1 * c2, s1 * s2, 1j * (c1 * s2), 1j * (s1 * c2)
    e_th, e_ph = _expi(theta), _expi(phi)
    t00 = e_ph * (cc * e_th - ss)
    t01 = is_c * e_th + ic_s
    t10 = e_ph * (ic_s * e_th + is_c)
    t11 = cc - ss * e_th
    return t00, t01, t10, t11


class MZIMesh(Device):
    """Clements MZI mesh with coherent detection, ``A = Re(U(w))[:d_out, :d_in]``.

    Extra physics options: ``phase_noise`` (rad, >= 0) and ``loss_db`` (dB per MZI, >= 0).
    """

    name = "mzi"
    supported = ("bits", "fab_error", "noise", "drift")

    def __init__(
        self, d_in: int, d_out: int, *, phase_noise: float = 0.0, loss_db: float = 0.0, **options
    ) -> None:
        super().__init__(d_in, d_out, **options)
        self.phase_noise = checks.nonnegative_number(phase_noise, "phase_noise")
        self.loss_db = checks.nonnegative_number(loss_db, "loss_db")
        self.N = max(self.d_in, self.d_out)
        self.n_mzi = self.N * (self.N - 1) // 2
        # column c: (first mode lo, number of MZIs K, offset of its first MZI in theta/phi)
        self._columns: list[tuple[int, int, int]] = []
        offset = 0
        for c in range(self.N):
            lo = c % 2
            K = (self.N - lo) // 2
            self._columns.append((lo, K, offset))
            offset += K
        assert offset == self.n_mzi
        eps = self._fab_normal(self._fab_generator(), 2, self.n_mzi) if self.fab_error > 0 else None
        self.register_buffer("eps", eps)  # (2, n_mzi): splitting-angle errors of BS1 and BS2
        # "split" mode order [0, 2, 4, ..., 1, 3, 5, ...] used by the fast in-place mesh
        split = torch.cat((torch.arange(0, self.N, 2), torch.arange(1, self.N, 2))).to(self.device)
        self.register_buffer("_split_order", split, persistent=False)
        self.register_buffer("_mode_order", torch.argsort(split), persistent=False)

    @staticmethod
    def _num_params(d_in: int, d_out: int) -> int:
        return max(d_in, d_out) ** 2

    @property
    def param_shape(self) -> tuple[int, int]:
        """The ``p = N^2`` phases, in their stored order ``[theta, phi, alpha]``, cut into ``N`` rows of ``N``.

        The phases have no matrix layout of their own; this reshaping only serves low-rank zero-order
        directions, whose variance depends on the shape only through ``d1 + d2``
        (:mod:`hybridlab.zo`), smallest for the square ``N x N``.
        """
        return self.N, self.N

    @property
    def _per_call_randomness(self) -> bool:
        return self.phase_noise > 0

    @property
    def _cdtype(self) -> torch.dtype:
        return torch.complex128 if self.dtype == torch.float64 else torch.complex64

    # ---------------------------------------------------------------- physics
    def split_phases(self, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(theta, phi, alpha)`` views of a parameter tensor ``(..., p)``."""
        m = self.n_mzi
        return w[..., :m], w[..., m : 2 * m], w[..., 2 * m :]

    def _phases(self, w: Tensor, noisy: bool) -> Tensor:
        phases = self._add_drift(self._quantise(w))
        if noisy and self.phase_noise > 0:
            phases = phases + self.phase_noise * self._randn(*w.shape)
        return phases

    def _coefficients(self, theta: Tensor, phi: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        eps1, eps2 = (self.eps[0], self.eps[1]) if self.eps is not None else (0.0, 0.0)
        return mzi_coefficients(theta, phi, eps1, eps2, 10.0 ** (-self.loss_db / 20.0))

    def _propagate(self, coefs: tuple[Tensor, ...], S: Tensor, inplace: bool) -> Tensor:
        """Apply the ``N`` mesh columns to the complex state ``S (..., N, k)`` (modes on dim -2).

        ``coefs`` are the four ``(..., n_mzi)`` MZI entries. ``inplace=True``: fast path without
        autograd (in-place updates of a working copy); otherwise a differentiable tensor is built
        column by column. Both return a new state in mode order; ``S`` is not modified.
        """
        if inplace:
            S_split = S.index_select(-2, self._split_order)
            return self._propagate_split(coefs, S_split).index_select(-2, self._mode_order)
        for lo, K, off in self._columns:
            if K == 0:
                continue
            t00, t01, t10, t11 = (t[..., off : off + K, None] for t in coefs)
            hi = lo + 2 * K
            a, b = S[..., lo:hi:2, :], S[..., lo + 1 : hi : 2, :]
            pairs = torch.stack((t00 * a + t01 * b, t10 * a + t11 * b), dim=-2).flatten(-3, -2)
            S = torch.cat((S[..., :lo, :], pairs, S[..., hi:, :]), dim=-2)
        return S

    def _propagate_split(self, coefs: tuple[Tensor, ...], S: Tensor) -> Tensor:
        """The mesh in place on a state ``S`` whose rows are in split order: 5 ops per column.

        With the even modes ``E = S[:NE]`` and the odd modes ``O = S[NE:]`` stored apart, the
        MZIs of an even column act on ``(E[k], O[k])`` and those of an odd column on
        ``(O[k], E[k+1])``: contiguous blocks of rows, no strided access. The views and the
        per-column coefficient slices are made once, so the loop over the ``N`` columns does
        nothing but arithmetic.
        """
        sizes = [K for _, K, _ in self._columns]
        t00s, t01s, t10s, t11s = (t.unsqueeze(-1).split(sizes, dim=-2) for t in coefs)
        n_even = (self.N + 1) // 2
        E, O = S[..., :n_even, :], S[..., n_even:, :]
        Ke, Ko = self.N // 2, (self.N - 1) // 2
        tmp = torch.empty_like(S[..., :Ke, :])
        views = [
            (E[..., :Ke, :], O[..., :Ke, :], tmp, Ke),  # even columns: (E[k], O[k])
            (O[..., :Ko, :], E[..., 1 : Ko + 1, :], tmp[..., :Ko, :], Ko),  # odd: (O[k], E[k+1])
        ]
        for c in range(self.N):
            a, b, t, K = views[c % 2]
            if K == 0:
                continue
            torch.mul(b, t01s[c], out=t)  # t = t01 b (old b)
            b.mul_(t11s[c]).addcmul_(a, t10s[c])  # b' = t10 a + t11 b
            a.mul_(t00s[c]).add_(t)  # a' = t00 a + t01 b
        return S

    def _mesh(self, w: Tensor, noisy: bool, k: int) -> tuple[Tensor, Tensor]:
        """Mesh applied to the first ``k`` columns of the identity, and the output phases alpha."""
        theta, phi, alpha = self.split_phases(self._phases(w, noisy))
        coefs = self._coefficients(theta, phi)
        inplace = not (torch.is_grad_enabled() and w.requires_grad)
        eye = torch.eye(self.N, k, dtype=self._cdtype, device=self.device)
        S = self._propagate(coefs, eye.expand(*w.shape[:-1], self.N, k), inplace)
        return S, alpha

    def unitary(self, w: Tensor) -> Tensor:
        """Complex mesh matrix ``U(w)`` ``(..., N, N)`` (unitary without loss and fabrication error).

        Differentiable; includes quantisation, fabrication error, loss and drift, no phase noise.
        """
        w = w.to(dtype=self.dtype, device=self.device)
        S, alpha = self._mesh(w, noisy=False, k=self.N)
        return _expi(alpha)[..., :, None] * S

    def _real_part_out(self, S: Tensor, alpha: Tensor) -> Tensor:
        """``Re(diag(e^{i alpha}) S)[..., :d_out, :]``."""
        S, alpha = S[..., : self.d_out, :], alpha[..., : self.d_out, None]
        return torch.cos(alpha) * S.real - torch.sin(alpha) * S.imag

    def _matrix(self, w: Tensor, noisy: bool = False) -> Tensor:
        S, alpha = self._mesh(w, noisy, k=self.d_in)  # only the first d_in columns of U are needed
        return self._real_part_out(S, alpha)

    def _noisy_matrix(self, w: Tensor) -> Tensor:
        return self._matrix(w, noisy=True)

    def _prefer_propagation(self, n: int) -> bool:
        # propagating n input columns vs the d_in columns of U needed for A
        return n <= self.d_in

    def _batch_forward(self, W: Tensor, X: Tensor) -> Tensor:
        n = X.shape[-2]
        if not self._prefer_propagation(n):  # cheaper to build the d_in columns of U and multiply
            return super()._batch_forward(W, X)
        # push the zero-padded inputs through the mesh: state (M, N, n) with rows in split
        # order (mode i lives in row _mode_order[i]); read back only the d_out output modes
        theta, phi, alpha = self.split_phases(self._phases(W, noisy=True))
        coefs = self._coefficients(theta, phi)
        S = torch.zeros(W.shape[0], self.N, n, dtype=self._cdtype, device=self.device)
        S[:, self._mode_order[: self.d_in], :] = X.mT.to(self._cdtype)
        S = self._propagate_split(coefs, S).index_select(1, self._mode_order[: self.d_out])
        return self._real_part_out(S, alpha).mT.contiguous()

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """All phases uniform in ``[0, 2 pi)`` (a random unitary)."""
        return self._uniform(generator, 0.0, TWO_PI)

    def _physics_repr(self) -> list[str]:
        out = [f"N={self.N}"]
        if self.phase_noise:
            out.append(f"phase_noise={self.phase_noise}")
        if self.loss_db:
            out.append(f"loss_db={self.loss_db}")
        return out
