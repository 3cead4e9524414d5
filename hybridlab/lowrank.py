"""Rank-r approximation of a matrix and learning it from products (chapter 1; book/method.md, "Low-rank surrogate").

A surrogate of a device matrix ``A`` (``d_out x d_in``) is kept as ``A ~ U S V^T`` with
``U`` (``d_out x r``, orthonormal columns), ``S`` (``r x r``) and ``V`` (``d_in x r``, orthonormal
columns). This module fits such a factorisation, either from ``A`` itself (:func:`truncated_svd`)
or from forward products only, through a ``query`` callable ``X (n, d_in) -> (n, d_out)``
(row-wise ``y = A x``, e.g. ``device.query``):

* :func:`fit_identity` reads the whole matrix with the ``d_in`` identity rows (``d_in`` queries);
* :func:`fit_randomized` uses a randomized range finder (Halko, Martinsson & Tropp 2011) for the
  column space and a row-space sketch (chapter 1) for the row space
  (``r + oversample + sketch`` queries).

The floor for every rank-r surrogate is the Eckart-Young error :func:`eckart_young_error`.

This module works on tensors and callables only; it does not import :mod:`hybridlab.devices`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from . import checks
from .sketch import random_rows

__all__ = [
    "LowRank",
    "Query",
    "check_rank",
    "truncated_svd",
    "eckart_young_error",
    "fit_identity",
    "fit_randomized",
]

Query = Callable[[Tensor], Tensor]
"""A forward-only black box: ``X (n, d_in) -> Y (n, d_out)`` with ``Y = X A^T``."""


class LowRank(NamedTuple):
    """Factors of a rank-r surrogate ``A ~ U @ S @ V.T``.

    A plain tuple ``(U, S, V)``: it unpacks like one (``U, S, V = fit_identity(...)``).

    Attributes:
        U: ``(d_out, r)`` with orthonormal columns.
        S: ``(r, r)`` core (diagonal after an SVD, a general matrix after a KSL step).
        V: ``(d_in, r)`` with orthonormal columns.
    """

    U: Tensor
    S: Tensor
    V: Tensor

    @property
    def rank(self) -> int:
        """The rank r of the factorisation (number of columns of U)."""
        return self.U.shape[-1]

    def matrix(self) -> Tensor:
        """The full ``(d_out, d_in)`` matrix ``U @ S @ V.T``."""
        return self.U @ self.S @ self.V.mT


def check_rank(r: int, d_out: int, d_in: int) -> int:
    """Return ``r`` if it is a valid rank for a ``d_out x d_in`` matrix, else raise.

    Args:
        r: requested rank.
        d_out: number of rows of the matrix.
        d_in: number of columns of the matrix.

    Raises:
        TypeError: if ``r`` is not an integer.
        ValueError: if ``r < 1`` or ``r > min(d_out, d_in)``.
    """
    r = checks.integer(r, "rank r")
    hi = min(d_out, d_in)
    if not 1 <= r <= hi:
        raise ValueError(
            f"rank r={r} is out of range for a {d_out} x {d_in} matrix: "
            f"choose 1 <= r <= min(d_out, d_in) = {hi}"
        )
    return r


def _check_matrix(A: Tensor, name: str = "A") -> None:
    if not isinstance(A, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(A).__name__}")
    if A.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix (d_out, d_in), got shape {tuple(A.shape)}")
    if not A.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float32 or float64), got {A.dtype}")


def truncated_svd(A: Tensor, r: int) -> LowRank:
    """Best rank-r approximation of ``A`` (Eckart-Young): the r leading singular triplets.

    Args:
        A: ``(d_out, d_in)`` matrix.
        r: rank, ``1 <= r <= min(d_out, d_in)``.

    Returns:
        ``LowRank(U, S, V)`` with ``U`` ``(d_out, r)``, ``S`` ``(r, r)`` diagonal with the
        singular values in decreasing order, ``V`` ``(d_in, r)``; ``A ~ U @ S @ V.T``.
        Same dtype and device as ``A``.
    """
    _check_matrix(A)
    r = check_rank(r, *A.shape)
    U, sigma, Vh = torch.linalg.svd(A, full_matrices=False)
    return LowRank(U[:, :r], torch.diag(sigma[:r]), Vh[:r].mT)


def eckart_young_error(A: Tensor, r: int) -> float:
    """Frobenius error of the best rank-r approximation: ``sqrt(sum_{k>r} sigma_k^2)``.

    No rank-r matrix ``Y`` has ``||A - Y||_F`` below this value.

    Args:
        A: ``(d_out, d_in)`` matrix.
        r: rank, ``1 <= r <= min(d_out, d_in)``.

    Returns:
        The error as a Python float.
    """
    _check_matrix(A)
    r = check_rank(r, *A.shape)
    sigma = torch.linalg.svdvals(A)
    return float(torch.linalg.vector_norm(sigma[r:]))


def _probe_dtype_device(
    dtype: torch.dtype | None, torch_device: torch.device | str | None, generator: torch.Generator | None = None
) -> tuple[torch.dtype, torch.device]:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if torch_device is None:
        torch_device = generator.device if generator is not None else torch.get_default_device()
    return dtype, torch.device(torch_device)


def _call_query(query: Query, X: Tensor, d_out: int | None = None) -> Tensor:
    if not callable(query):
        raise TypeError(f"query must be a callable X (n, d_in) -> (n, d_out), got {type(query).__name__}")
    Y = query(X)
    if not isinstance(Y, Tensor) or Y.ndim != 2 or Y.shape[0] != X.shape[0]:
        shape = tuple(Y.shape) if isinstance(Y, Tensor) else type(Y).__name__
        raise ValueError(
            f"query returned {shape} for an input of shape {tuple(X.shape)}; "
            f"it must return a tensor of shape (n, d_out) = ({X.shape[0]}, d_out)"
        )
    if d_out is not None and Y.shape[1] != d_out:
        raise ValueError(f"query returned {Y.shape[1]} outputs per row, earlier calls returned {d_out}")
    return Y


def fit_identity(
    query: Query,
    d_in: int,
    r: int,
    *,
    dtype: torch.dtype | None = None,
    torch_device: torch.device | str | None = None,
) -> LowRank:
    """Read the full matrix with the ``d_in`` identity rows, then truncate its SVD to rank r.

    Cost: ``d_in`` queries. Exact (the Eckart-Young optimum) up to read-out noise.

    Args:
        query: callable ``X (n, d_in) -> (n, d_out)``, row-wise ``y = A x``.
        d_in: input width of the black box.
        r: rank, ``1 <= r <= min(d_out, d_in)``.
        dtype: dtype of the probe inputs (default: ``torch.get_default_dtype()``).
        torch_device: where the probe inputs live (default: torch's default device).

    Returns:
        ``LowRank(U, S, V)`` (see :func:`truncated_svd`).
    """
    d_in = checks.count(d_in, "d_in", what="the device's input width")
    dtype, torch_device = _probe_dtype_device(dtype, torch_device)
    I = torch.eye(d_in, dtype=dtype, device=torch_device)
    A = _call_query(query, I).mT  # row j of query(I) is A e_j: the j-th column of A
    return truncated_svd(A, r)


def fit_randomized(
    query: Query,
    d_in: int,
    r: int,
    *,
    oversample: int = 10,
    sketch: int = 64,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    torch_device: torch.device | str | None = None,
) -> LowRank:
    """Fit a rank-r surrogate from forward products only (randomized range finder + sketch).

    1. Column space (Halko et al. 2011): ``k = r + oversample`` random test inputs ``Omega``
       (``k x d_in``), ``F = query(Omega)`` (= ``(A Omega^T)^T``), ``Q = orth(F^T)``
       (``d_out x k``). For a matrix of rank <= k, ``range(Q) = range(A)`` exactly.
    2. Row space (the sketch of chapters 1 and 4): ``Z`` (``s x d_in``, rows with
       ``E[z z^T] = I``), ``F_Z = query(Z)`` (= ``Z A^T``), and
       ``Q^T A ~ (1/s) (Q^T F_Z^T) Z``. Unbiased, relative error ~ ``sqrt(d_in / s)``;
       exact for ``kind='orthogonal'`` with ``s`` a multiple of ``d_in``.
    3. SVD of the small ``k x d_in`` matrix ``B = Q^T A``; keep the r leading triplets:
       ``U = Q U_B[:, :r]``, ``S = diag(sigma_B[:r])``, ``V = V_B[:, :r]``.

    Cost: ``k + s`` queries (``k`` is capped at ``min(d_in, d_out)``).

    Args:
        query: callable ``X (n, d_in) -> (n, d_out)``, row-wise ``y = A x``.
        d_in: input width of the black box.
        r: rank, ``1 <= r <= min(d_out, d_in)``.
        oversample: extra range-finder columns (>= 0).
        sketch: number s of sketch rows for the row space (>= 1).
        kind: distribution of the test inputs and sketch rows: ``'gaussian'``, ``'rademacher'``
            or ``'orthogonal'`` (see :func:`hybridlab.sketch.random_rows`).
        generator: torch.Generator for reproducibility (its device is used if ``torch_device`` is None).
        dtype: dtype of the probe inputs (default: ``torch.get_default_dtype()``).
        torch_device: where the probe inputs live.

    Returns:
        ``LowRank(U, S, V)`` with ``S`` diagonal.
    """
    d_in = checks.count(d_in, "d_in", what="the device's input width")
    oversample = checks.count(oversample, "oversample", minimum=0, what="extra range-finder columns")
    sketch = checks.count(sketch, "sketch", what="the number s of sketch rows")
    dtype, torch_device = _probe_dtype_device(dtype, torch_device, generator)
    r = check_rank(r, d_in, d_in)  # fail before any query (d_out is known after the first one)
    k = min(r + oversample, d_in)
    Omega = random_rows(k, d_in, kind, generator=generator, dtype=dtype, torch_device=torch_device)
    F = _call_query(query, Omega)  # (k, d_out) = (A Omega^T)^T
    d_out = F.shape[1]
    r = check_rank(r, d_out, d_in)
    Q = torch.linalg.qr(F.mT).Q  # (d_out, min(k, d_out)), orthonormal basis of range(A Omega^T)
    Z = random_rows(sketch, d_in, kind, generator=generator, dtype=dtype, torch_device=torch_device)
    F_Z = _call_query(query, Z, d_out).to(Q.dtype)  # (s, d_out) = Z A^T
    B = (Q.mT @ F_Z.mT) @ Z.to(Q.dtype) / sketch  # (k, d_in) ~ Q^T A
    U_B, sigma, Vh = torch.linalg.svd(B, full_matrices=False)
    return LowRank(Q @ U_B[:, :r], torch.diag(sigma[:r]), Vh[:r].mT)
