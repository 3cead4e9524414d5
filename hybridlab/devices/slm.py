"""Spatial light modulator with phase-only pixels (chapter 2).

``A_ij = cos(phi_ij) / sqrt(d_in)`` with one pixel phase per matrix entry, ``w = phi``,
``p = d_out * d_in`` (pixel grid ``d_out x d_in``).

Non-idealities (all off by default):

* ``bits``: phase quantisation to ``2**bits`` levels on ``[0, 2 pi)`` (8 bits is typical);
* ``crosstalk`` ``c`` in ``[0, 1]``: fringing fields pull each pixel phase toward the mean of its
  (up to 4) grid neighbours, ``phi <- (1 - c) phi + c * mean_neighbours(phi)``;
* ``fab_error``: a fixed per-pixel phase offset ``N(0, fab_error^2)`` (cell thickness / flatness
  error), drawn once from ``seed``;
* ``noise`` (read-out) and ``drift`` (random walk of the effective phases).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import TWO_PI, Device, neighbour_mean

__all__ = ["SLM"]


class SLM(Device):
    """Phase-only SLM computing ``y = A(phi) x`` with ``A = cos(phi) / sqrt(d_in)``."""

    name = "slm"
    supported = ("bits", "crosstalk", "fab_error", "noise", "drift")

    def __init__(self, d_in: int, d_out: int, **options) -> None:
        super().__init__(d_in, d_out, **options)
        if self.crosstalk > 1:
            raise ValueError(f"crosstalk must be in [0, 1] for the 'slm' device, got {self.crosstalk}")
        offset = self._fab_normal(self._fab_generator(), self.p) if self.fab_error > 0 else None
        self.register_buffer("phase_offset", offset)

    def _matrix(self, w: Tensor) -> Tensor:
        phi = self._quantise(w).reshape(*w.shape[:-1], self.d_out, self.d_in)
        if self.crosstalk > 0:
            phi = (1.0 - self.crosstalk) * phi + self.crosstalk * neighbour_mean(phi)
        if self.phase_offset is not None:
            phi = phi + self.phase_offset.view(self.d_out, self.d_in)
        if self.drift > 0:
            phi = phi + self.drift_offset.view(self.d_out, self.d_in)
        A = torch.cos(phi)
        scale = 1.0 / math.sqrt(self.d_in)
        return A.mul_(scale) if not A.requires_grad else A * scale

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """Phases uniform in ``[0, 2 pi)``: entries ``cos(phi)/sqrt(d_in)``, zero mean."""
        return self._uniform(generator, 0.0, TWO_PI)
