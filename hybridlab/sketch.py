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
* ``'packed'``: the same i.i.d. ``+-1`` entries, drawn 64 to a random 64-bit integer and unpacked
  through a 256-entry table of byte patterns (a different stream from ``'rademacher'``, 64 times
  fewer random numbers);
* ``'orthogonal'``: rows of Haar-random orthogonal ``d x d`` matrices scaled by ``sqrt(d)``; for
  more than ``d`` rows independent blocks are stacked (the last one cut). When the number of rows
  is a multiple of ``d``, ``Z^T Z / s = I`` exactly. It needs a ``d x d`` QR per block, so it is
  meant for sketches of the input width, not for directions over millions of parameters.

:func:`random_factors` draws the Gaussian factors of low-rank rows ``z = vec(A^T B)`` (a
``rows x cols`` matrix of rank ``k``, ``E[z z^T] = I`` too) for the zero-order directions of
:mod:`hybridlab.zo`; :func:`expand_factors` multiplies them out when a dense row is needed.

Every draw happens on the generator's torch device: keep the generator where the result is needed
and nothing crosses between CPU and GPU.
"""

from __future__ import annotations

import functools
import math

import torch
from torch import Tensor

from . import checks
from .timing import timed

__all__ = ["KINDS", "random_rows", "random_factors", "expand_factors"]

KINDS: tuple[str, ...] = ("gaussian", "rademacher", "packed", "orthogonal")
"""Valid ``kind`` values of :func:`random_rows`."""


@timed("random")
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
        kind: ``'gaussian'``, ``'rademacher'``, ``'packed'`` or ``'orthogonal'`` (see the module
            docstring).
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
    elif kind == "packed":
        Z = _packed_signs(n, d, generator, dtype, draw_on)
    else:  # Haar matrices from the QR of Gaussian blocks, with the sign fix of R's diagonal
        blocks = math.ceil(n / d)
        G = torch.randn(blocks, d, d, generator=generator, dtype=dtype, device=draw_on)
        Q, R = torch.linalg.qr(G)
        signs = torch.sgn(torch.diagonal(R, dim1=-2, dim2=-1))
        Q = Q * torch.where(signs == 0, torch.ones_like(signs), signs).unsqueeze(-2)
        Z = math.sqrt(d) * Q.reshape(blocks * d, d)[:n]
    return Z if torch_device is None else Z.to(torch_device)


def _packed_signs(n: int, d: int, generator: torch.Generator | None, dtype: torch.dtype,
                  device: torch.device | str | None) -> Tensor:
    """``(n, d)`` i.i.d. signs from ``ceil(d / 64)`` uniform 64-bit integers per row.

    Each integer's 8 bytes index a ``256 x 8`` table of their bit patterns as ``+-1``: one random
    number and one table look-up per 64 signs. Every bit of a uniform 64-bit integer is an
    independent fair coin, so the entries are i.i.d. Rademacher.
    """
    words = -(-d // 64)
    bits = torch.empty(n, words, dtype=torch.int64, device=device)
    bits.random_(-2**63, None, generator=generator)  # the full 64-bit range: every bit a fair coin
    table = _sign_table(dtype, bits.device)
    # an embedding look-up (a row gather) is the fastest unpacking on a CPU, several times faster
    # than drawing Gaussian numbers
    signs = torch.nn.functional.embedding(bits.view(torch.uint8).long(), table)
    return signs.reshape(n, 64 * words)[:, :d]


@functools.lru_cache(maxsize=16)
def _sign_table(dtype: torch.dtype, device: torch.device) -> Tensor:
    """``table[b, j] = +1`` if bit ``j`` of the byte ``b`` is set, else ``-1`` (shape ``256 x 8``)."""
    b = torch.arange(256, device=device).unsqueeze(1)
    bit = torch.arange(8, device=device)
    return ((b >> bit) & 1).to(dtype).mul_(2).sub_(1)


@timed("random")
def random_factors(
    n: int,
    shape: tuple[int, int],
    rank: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    torch_device: torch.device | str | None = None,
) -> tuple[Tensor, Tensor]:
    """Factors of ``n`` random rank-``k`` matrices ``Z_i = A_i^T B_i`` (``rows x cols``) with ``E[z z^T] = I``.

    ``A_i`` (``k x rows``) holds ``N(0, 1/k)`` entries and ``B_i`` (``k x cols``) ``N(0, 1)`` entries,
    all independent, so ``z_i = vec(Z_i) = (1/sqrt(k)) sum_j vec(a_j b_j^T)`` has
    ``E[z_(pq) z_(p'q')] = sum_j E[A_jp A_jp'] E[B_jq B_jq'] = delta_pp' delta_qq'``: identity second
    moment, like a dense Gaussian row, from ``k (rows + cols)`` random numbers instead of
    ``rows cols``. (Fourth moments: :func:`hybridlab.zo.directions`.)

    Args:
        n: number of matrices (>= 1).
        shape: ``(rows, cols)`` of each matrix (both >= 1).
        rank: ``k`` (>= 1).
        generator: source of randomness; the numbers are drawn on its torch device.
        dtype: floating dtype (default: torch's default dtype).
        torch_device: where the result lives (default: the generator's device).

    Returns:
        ``(A, B)`` of shapes ``(n, k, rows)`` and ``(n, k, cols)``.
    """
    n = checks.count(n, "n", what="number of rows")
    rank = checks.count(rank, "rank", what="rank k of each random matrix")
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2):
        raise ValueError(f"`shape` must be (rows, cols), got {shape!r}")
    rows = checks.count(shape[0], "shape[0]", what="rows")
    cols = checks.count(shape[1], "shape[1]", what="columns")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating dtype, got {dtype}")
    draw_on = generator.device if generator is not None else torch_device
    F = torch.randn(n, rank, rows + cols, generator=generator, dtype=dtype, device=draw_on)
    if torch_device is not None:
        F = F.to(torch_device)
    A, B = F[..., :rows], F[..., rows:]
    return (A * (1.0 / math.sqrt(rank)) if rank > 1 else A), B


def expand_factors(A: Tensor, B: Tensor, d: int) -> Tensor:
    """The dense rows ``vec(A_i^T B_i)[:d]`` (shape ``(n, d)``) of :func:`random_factors`'s factors.

    ``rows * cols`` may exceed ``d`` (a matrix shape that does not divide ``d``): the first ``d``
    entries of each row-major ``vec`` are kept, which keeps ``E[z z^T] = I_d``.
    """
    n, _, rows = A.shape
    cols = B.shape[-1]
    if rows * cols < d:
        raise ValueError(f"factors of {rows} x {cols} matrices cannot give rows of length d = {d}: "
                         f"choose a shape with rows * cols >= d")
    return (A.mT @ B).reshape(n, rows * cols)[:, :d]
