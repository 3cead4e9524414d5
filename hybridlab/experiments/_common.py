"""Helpers shared by the experiment modules: a result grid, seeded generators, configured devices."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..devices import Device, make_device

DTYPE = torch.float64


@dataclass
class Grid:
    """Values on a rectangular grid: ``values[i0, i1, ...]`` belongs to ``axes[name0][i0], ...``.

    >>> g = Grid({"M": [1, 10], "mu": [1e-3, 1e-2]}, np.zeros((2, 2)))
    >>> g.sel(M=10).shape
    (2,)
    """

    axes: dict[str, list]
    values: np.ndarray

    def __post_init__(self) -> None:
        shape = tuple(len(v) for v in self.axes.values())
        if tuple(self.values.shape) != shape:
            raise ValueError(f"values have shape {self.values.shape}, the axes describe {shape}")

    def index(self, name: str, value: Any) -> int:
        """Position of ``value`` on axis ``name`` (ValueError naming the valid values if absent)."""
        if name not in self.axes:
            raise ValueError(f"no axis {name!r}; axes: {', '.join(self.axes)}")
        for i, v in enumerate(self.axes[name]):
            if v == value or (isinstance(v, float) and isinstance(value, (int, float)) and math.isclose(v, value)):
                return i
        raise ValueError(f"{value!r} is not on axis {name!r}; values: {self.axes[name]}")

    def sel(self, **where: Any) -> np.ndarray:
        """The sub-array at the given axis values (the other axes stay, in order)."""
        idx = tuple(self.index(n, where[n]) if n in where else slice(None) for n in self.axes)
        unknown = set(where) - set(self.axes)
        if unknown:
            raise ValueError(f"unknown axes {sorted(unknown)}; axes: {', '.join(self.axes)}")
        return self.values[idx]


def _progress(iterable: Iterable, total: int, progress: bool, desc: str) -> Iterable:
    if not progress:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc)


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


def _configured(name: str, d_in: int, d_out: int, seed: int, w: Tensor | None = None, **options) -> Device:
    dev = make_device(name, d_in, d_out, seed=seed, dtype=DTYPE, **options)
    dev.configure(dev.init_params() if w is None else w)
    return dev


def _counts(dev: Device) -> tuple[int, int]:
    return dev.queries, dev.reconfigurations
