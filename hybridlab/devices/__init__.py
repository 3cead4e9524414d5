"""Simulated photonic devices behind one query-only interface (chapter 2; book/method.md, "Cost model" and "Devices").

>>> import torch
>>> from hybridlab.devices import make_device
>>> dev = make_device("mzi", d_in=8, d_out=4, noise=0.01, seed=1)
>>> dev.configure(dev.init_params())
>>> dev.query(torch.randn(5, 8)).shape
torch.Size([5, 4])
"""

from __future__ import annotations

from .base import Device
from .ideal import IdealDevice
from .mrr import MRR, RING_PRESETS
from .mzi import MZIMesh, mzi_coefficients
from .slm import SLM

__all__ = ["DEVICES", "Device", "IdealDevice", "MRR", "MZIMesh", "RING_PRESETS", "SLM", "make_device",
           "mzi_coefficients"]

#: device name -> class
DEVICES: dict[str, type[Device]] = {cls.name: cls for cls in (IdealDevice, SLM, MRR, MZIMesh)}


def make_device(name: str, d_in: int, d_out: int, **options) -> Device:
    """Build the device called ``name`` (one of :data:`DEVICES`) with the given options.

    Raises ``ValueError`` listing the valid names for an unknown ``name``.
    """
    if name not in DEVICES:
        raise ValueError(f"unknown device {name!r}; valid names: {', '.join(sorted(DEVICES))}")
    return DEVICES[name](d_in, d_out, **options)
