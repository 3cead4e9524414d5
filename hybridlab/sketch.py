"""Random rows with ``E[z z^T] = I``: the one source of random probes for the whole package.

Three places of the method push random vectors through the device or along the parameters, and all
three need the same property, an identity second moment, so that an average over the rows is
unbiased:

* the zero-order directions ``u_i`` of :func:`hybridlab.zo.zo_gradient` (``M`` rows of length ``p``);
* the range-finder inputs and row-space sketch of :func:`hybridlab.lowrank.fit_randomized`;
* the sketch ``Z`` of the implicit projector-splitting update (:mod:`hybridlab.surrogate`).

:func:`random_rows` draws them. Kinds:

* ``'gaussian'``: i.i.d. ``N(0, 1)`` entries;
* ``'rademacher'``: i.i.d. ``+-1`` entries (``||z||^2 = d`` exactly: lower variance);
* ``'orthogonal'``: rows of Haar-random orthogonal ``d x d`` matrices scaled by ``sqrt(d)``; for
  more than ``d`` rows independent blocks are stacked (the last one cut). When the number of rows
  is a multiple of ``d``, ``Z^T Z / s = I`` exactly. It needs a ``d x d`` QR per block, so it is
  meant for sketches of the input width, not for directions over millions of parameters.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from . import checks

__all__ = ["KINDS", "random_rows"]

KINDS: tuple[str, ...] = ("gaussian", "rademacher", "orthogonal")
"""Valid ``kind`` values of :func:`random_rows`."""


def random_rows(
    n: int,
    d: int,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    torch_device: torch.device | str | None = None,
) -> Tensor:
    """``n`` random rows of length ``d`` with ``E[z z^T] = I_d``.

    Args:
        n: number of rows (>= 1).
        d: row length (>= 1).
        kind: ``'gaussian'``, ``'rademacher'`` or ``'orthogonal'`` (see the module docstring).
        generator: source of randomness (same state, same rows). Numbers are drawn on the
            generator's torch device and moved to ``torch_device``. ``None``: the global generator.
        dtype: floating dtype (default: ``torch.get_default_dtype()``).
        torch_device: where the result lives (default: the generator's device, else torch's
            default device).

    Returns:
        Tensor of shape ``(n, d)``.
    """
    n = checks.count(n, "n", what="number of rows")
    d = checks.count(d, "d", what="row length")
    checks.choice(kind, "kind", KINDS)
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}")
    draw_on = generator.device if generator is not None else torch_device
    if kind == "gaussian":
        Z = torch.randn(n, d, generator=generator, dtype=dtype, device=draw_on)
    elif kind == "rademacher":
        Z = torch.randint(0, 2, (n, d), generator=generator, device=draw_on).to(dtype).mul_(2).sub_(1)
    else:  # Haar matrices from the QR of Gaussian blocks, with the sign fix of R's diagonal
        blocks = math.ceil(n / d)
        G = torch.randn(blocks, d, d, generator=generator, dtype=dtype, device=draw_on)
        Q, R = torch.linalg.qr(G)
        signs = torch.sgn(torch.diagonal(R, dim1=-2, dim2=-1))
        Q = Q * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(-2)
        Z = math.sqrt(d) * Q.reshape(blocks * d, d)[:n]
    return Z if torch_device is None else Z.to(torch_device)
