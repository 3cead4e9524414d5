"""Microring resonator (MRR) weight bank (chapter 2).

One ring per matrix entry (grid ``d_out x d_in``), ``w`` = nominal ring phases, ``p = d_out * d_in``.
Through-port power transmission of an all-pass ring with round-trip amplitude ``a`` and
self-coupling ``r``::

    T(phi) = (a^2 + r^2 - 2 a r cos phi) / (1 + a^2 r^2 - 2 a r cos phi)

and balanced detection gives the weight ``2 T - 1`` in ``[-1, 1]``. No ``1/sqrt(d)`` scaling (the
layer has a learnable gain).

Non-idealities (all off by default):

* ``fab_error``: heater efficiency spread, effective ``phi = w * (1 + gamma_i)``, ``gamma_i ~ N(0, fab_error^2)``
  per ring, drawn once from ``seed``;
* ``crosstalk`` ``c``: thermal crosstalk, the phase grid convolved with ``[[0,c,0],[c,1,c],[0,c,0]]``;
* ``bits``: quantisation of the written phase to ``2**bits`` levels on ``[0, 2 pi)``;
* ``noise`` (read-out) and ``drift`` (random walk of the effective phases).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Device, neighbour_sum

__all__ = ["MRR", "RING_PRESETS"]

#: (a, r) presets: the book's default ring (chapter 2) and a 5 um ring.
RING_PRESETS: dict[str, tuple[float, float]] = {"default": (0.8, 0.9), "5um": (0.925, 0.93)}


class MRR(Device):
    """Microring weight bank computing ``y = (2 T(phi) - 1) x``.

    Extra physics options: ``a`` (round-trip amplitude, in ``(0, 1)``), ``r`` (self-coupling, in
    ``(0, 1)``) or ``preset`` (a name in :data:`RING_PRESETS`, overrides ``a`` and ``r``).
    """

    name = "mrr"
    supported = ("bits", "crosstalk", "fab_error", "noise", "drift")

    def __init__(
        self, d_in: int, d_out: int, *, a: float = 0.8, r: float = 0.9, preset: str | None = None, **options
    ) -> None:
        super().__init__(d_in, d_out, **options)
        if preset is not None:
            if preset not in RING_PRESETS:
                raise ValueError(f"preset must be one of {sorted(RING_PRESETS)}, got {preset!r}")
            a, r = RING_PRESETS[preset]
        if not (0.0 < float(a) < 1.0):
            raise ValueError(
                f"a (ring round-trip amplitude) must be in (0, 1), got {a!r} (a lossless ring, a = 1, "
                "transmits everything: T = 1 for every phase)"
            )
        if not (0.0 < float(r) < 1.0):
            raise ValueError(f"r (ring self-coupling) must be in (0, 1), got {r!r}")
        self.a, self.r, self.preset = float(a), float(r), preset
        gamma = 1.0 + self._fab_normal(self._fab_generator(), self.p) if self.fab_error > 0 else None
        self.register_buffer("gamma", gamma)

    def transmission(self, phi: Tensor) -> Tensor:
        """Through-port power transmission ``T(phi)`` of one ring."""
        a, r = self.a, self.r
        c = (2.0 * a * r) * torch.cos(phi)
        return (a * a + r * r - c) / (1.0 + a * a * r * r - c)

    def _matrix(self, w: Tensor) -> Tensor:
        phi = self._quantise(w)
        if self.gamma is not None:
            phi = phi * self.gamma
        phi = phi.reshape(*w.shape[:-1], self.d_out, self.d_in)
        if self.crosstalk > 0:
            phi = phi + self.crosstalk * neighbour_sum(phi)
        if self.drift > 0:
            phi = phi + self.drift_offset.view(self.d_out, self.d_in)
        return self._weight(phi)

    def _weight(self, phi: Tensor) -> Tensor:
        """Balanced-detection weight ``2 T(phi) - 1`` in ``[-1, 1]``.

        Written as ``1 - 2 (1-a^2)(1-r^2) / (1 + a^2 r^2 - 2 a r cos phi)`` (fewer passes), and
        clamped to ``[-1, 1]`` against rounding at critical coupling (``a = r``, where ``T(0) = 0``).
        """
        a, r = self.a, self.r
        k = -2.0 * (1.0 - a * a) * (1.0 - r * r)
        den = torch.cos(phi)
        if den.requires_grad:
            return (1.0 + k / (1.0 + a * a * r * r - 2.0 * a * r * den)).clamp(-1.0, 1.0)
        den.mul_(-2.0 * a * r).add_(1.0 + a * a * r * r)
        return den.reciprocal_().mul_(k).add_(1.0).clamp_(-1.0, 1.0)

    def weight_range(self) -> tuple[float, float]:
        """Smallest and largest weight ``2 T - 1`` (at ``phi = 0`` and ``phi = pi``)."""
        a, r = self.a, self.r
        t_min = (a - r) ** 2 / (1 - a * r) ** 2
        t_max = (a + r) ** 2 / (1 + a * r) ** 2
        return 2 * t_min - 1, 2 * t_max - 1

    def phase_for_weight(self, weight: Tensor) -> Tensor:
        """The phase in ``[0, pi]`` giving ``2 T - 1 = weight`` (inverse of the ring response)."""
        a, r = self.a, self.r
        T = (weight + 1.0) / 2.0
        cos_phi = (a * a + r * r - T * (1.0 + a * a * r * r)) / (2.0 * a * r * (1.0 - T))
        return torch.acos(cos_phi.clamp(-1.0, 1.0))

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """Phases whose weights are uniform in ``[-s, s]``, ``s`` = half the symmetric weight range.

        Uniform phases would give mostly large positive weights (the resonance is narrow), so the
        initial weights are drawn zero-mean and mapped back through the ring response.
        """
        lo, hi = self.weight_range()
        s = 0.5 * min(-lo, hi)
        return self.phase_for_weight(self._uniform(generator, -s, s))

    def _physics_repr(self) -> list[str]:
        return [f"a={self.a}", f"r={self.r}"]
