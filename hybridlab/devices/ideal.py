"""Ideal matrix device: ``A = w.reshape(d_out, d_in)`` (chapter 2).

The sanity case: with every option off, a hybrid network on this device must match the
digital network. Models b-bit quantisation of each entry on ``[-1, 1]``, read-out noise and
drift (a random walk of the entries).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from .base import Device, quantise_unit

__all__ = ["IdealDevice"]


class IdealDevice(Device):
    """A freely programmable matrix, ``p = d_out * d_in``.

    ``bits`` quantises each entry to ``2**bits`` uniform levels on ``[-1, 1]`` (values outside are
    clipped); crosstalk and fabrication error are not modelled.
    """

    name = "ideal"
    supported = ("bits", "noise", "drift")

    def _matrix(self, w: Tensor) -> Tensor:
        a = self._add_drift(quantise_unit(w, self.bits))
        return a.reshape(*w.shape[:-1], self.d_out, self.d_in)

    def init_params(self, generator: torch.Generator | None = None) -> Tensor:
        """Entries uniform in ``[-1/sqrt(d_in), 1/sqrt(d_in))`` (like ``nn.Linear``)."""
        bound = 1.0 / math.sqrt(self.d_in)
        return self._uniform(generator, -bound, bound)
