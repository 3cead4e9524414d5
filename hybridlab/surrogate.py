"""Keeping a low-rank surrogate current: the projector-splitting (KSL) integrator.

Chapter 4 of the book (and book/method.md, "Keeping the surrogate current"). The device matrix
moves by ``dA = A(w_new) - A(w_old)`` after every optimizer step; the surrogate ``A ~ U0 S0 V0^T``
is updated with one K-step, one S-step and one L-step (Lubich & Oseledets, BIT 2014)::

    K-step:  K  = U0 S0 + dA V0             ;  QR:  K = U1 S_hat
    S-step:  S~ = S_hat - U1^T (dA V0)
    L-step:  L  = V0 S~^T + dA^T U1         ;  QR:  L = V1 S1^T
    result:  U1 S1 V1^T

:func:`projector_splitting_step` is the only place these steps are written. It takes ``dA V0``
as a tensor and ``dA^T U1`` as a callable, because ``U1`` is known only after the K-step:

* explicit (:func:`ksl_step`): both products from ``dA`` itself (teaching, tests);
* implicit (the device never exposes ``dA``): ``dA V0 = f(V0^T; w_new) - f(V0^T; w_old)`` from
  ``2r`` queries, and ``dA^T U1 ~ (1/s) Z^T (Y U1)`` from a sketch ``Z`` (``s x d_in``) with
  ``Y = f(Z; w_new) - f(Z; w_old)`` (:func:`hybridlab.sketch.random_rows`, :func:`sketched_transpose`).

No step inverts ``S``, so the update is robust to tiny (even zero) singular values.

This module works on tensors and callables only; it does not import :mod:`hybridlab.devices`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .lowrank import LowRank, check_rank, eckart_young_error

__all__ = [
    "projector_splitting_step",
    "ksl_step",
    "sketched_transpose",
    "forward_upkeep",
    "tracking_ratio",
    "surrogate_error",
]

def _check_factors(U0: Tensor, S0: Tensor, V0: Tensor) -> tuple[int, int, int]:
    for name, T in (("U0", U0), ("S0", S0), ("V0", V0)):
        if not isinstance(T, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(T).__name__}")
        if T.ndim != 2:
            raise ValueError(f"{name} must be a 2-D matrix, got shape {tuple(T.shape)}")
    d_out, r = U0.shape
    d_in = V0.shape[0]
    if V0.shape[1] != r or S0.shape != (r, r):
        raise ValueError(
            f"factor shapes do not fit together: U0 {tuple(U0.shape)}, S0 {tuple(S0.shape)}, "
            f"V0 {tuple(V0.shape)}; expected U0 (d_out, r), S0 (r, r), V0 (d_in, r)"
        )
    return d_out, d_in, r


def projector_splitting_step(
    U0: Tensor,
    S0: Tensor,
    V0: Tensor,
    dA_V0: Tensor,
    dAt_times: Callable[[Tensor], Tensor],
) -> LowRank:
    """One KSL step of the projector-splitting integrator (chapter 4).

    Computes, without ever inverting ``S``::

        K  = U0 S0 + dA V0       ;  K = U1 S_hat        (reduced QR)
        S~ = S_hat - U1^T (dA V0)
        L  = V0 S~^T + dA^T U1   ;  L = V1 S1^T         (reduced QR, S1 = R^T)

    If ``A(t)`` stays of rank r along the step and ``U0 S0 V0^T`` is exact, ``U1 S1 V1^T`` is
    exact up to round-off (Lubich & Oseledets 2014).

    Args:
        U0: ``(d_out, r)``, orthonormal columns.
        S0: ``(r, r)`` core.
        V0: ``(d_in, r)``, orthonormal columns.
        dA_V0: ``(d_out, r)``, the product ``dA @ V0`` (implicitly: ``f(V0^T; w_new) -
            f(V0^T; w_old)`` transposed).
        dAt_times: callable ``U1 (d_out, r) -> dA^T U1 (d_in, r)``; exact (``dA.T @ U1``) or a
            sketch estimate (:func:`sketched_transpose`).

    Returns:
        ``LowRank(U1, S1, V1)`` in the dtype and device of ``U0``. ``S1`` is a general
        (not diagonal) ``r x r`` matrix.
    """
    d_out, d_in, r = _check_factors(U0, S0, V0)
    if not isinstance(dA_V0, Tensor) or dA_V0.shape != (d_out, r):
        shape = tuple(dA_V0.shape) if isinstance(dA_V0, Tensor) else type(dA_V0).__name__
        raise ValueError(f"dA_V0 must have shape (d_out, r) = ({d_out}, {r}), got {shape}")
    if not callable(dAt_times):
        raise TypeError(
            f"dAt_times must be a callable U1 (d_out, r) -> dA^T U1 (d_in, r), got {type(dAt_times).__name__}"
        )
    dA_V0 = dA_V0.to(U0)
    # K-step
    K = U0 @ S0.to(U0) + dA_V0
    U1, S_hat = torch.linalg.qr(K)
    # S-step
    S_tilde = S_hat - U1.mT @ dA_V0
    # L-step
    dAt_U1 = dAt_times(U1)
    if not isinstance(dAt_U1, Tensor) or dAt_U1.shape != (d_in, r):
        shape = tuple(dAt_U1.shape) if isinstance(dAt_U1, Tensor) else type(dAt_U1).__name__
        raise ValueError(f"dAt_times(U1) must return dA^T U1 of shape (d_in, r) = ({d_in}, {r}), got {shape}")
    L = V0.to(U0) @ S_tilde.mT + dAt_U1.to(U0)
    V1, R = torch.linalg.qr(L)
    return LowRank(U1, R.mT, V1)


def ksl_step(U0: Tensor, S0: Tensor, V0: Tensor, dA: Tensor) -> LowRank:
    """Explicit KSL step: :func:`projector_splitting_step` with ``dA`` known.

    Args:
        U0, S0, V0: current factors (see :func:`projector_splitting_step`).
        dA: ``(d_out, d_in)`` increment ``A(t1) - A(t0)``.

    Returns:
        ``LowRank(U1, S1, V1)``.
    """
    d_out, d_in, _ = _check_factors(U0, S0, V0)
    if not isinstance(dA, Tensor) or dA.shape != (d_out, d_in):
        shape = tuple(dA.shape) if isinstance(dA, Tensor) else type(dA).__name__
        raise ValueError(f"dA must have shape (d_out, d_in) = ({d_out}, {d_in}), got {shape}")
    dA = dA.to(U0)
    return projector_splitting_step(U0, S0, V0, dA @ V0.to(U0), lambda U1: dA.mT @ U1)


def sketched_transpose(Z: Tensor, dA_Zt: Tensor) -> Callable[[Tensor], Tensor]:
    """Sketch estimate of the transposed product: ``U1 -> (1/s) Z^T (dA_Zt^T U1) ~ dA^T U1``.

    Since ``E[z z^T] = I``, ``E[(1/s) Z^T Z] = I`` and the estimate is unbiased, with relative
    error ~ ``sqrt(d_in / s)`` (zero for an orthogonal sketch with ``s`` a multiple of ``d_in``).

    Args:
        Z: ``(s, d_in)`` sketch (:func:`hybridlab.sketch.random_rows`).
        dA_Zt: ``(d_out, s)`` the product ``dA Z^T``; from queries, ``Y^T`` with
            ``Y = f(Z; w_new) - f(Z; w_old)`` (``s x d_out``).

    Returns:
        A callable for the ``dAt_times`` argument of :func:`projector_splitting_step`.
    """
    if not isinstance(Z, Tensor) or Z.ndim != 2:
        raise ValueError(f"Z must be a 2-D sketch (s, d_in), got {getattr(Z, 'shape', type(Z).__name__)}")
    s = Z.shape[0]
    if not isinstance(dA_Zt, Tensor) or dA_Zt.ndim != 2 or dA_Zt.shape[1] != s:
        shape = tuple(dA_Zt.shape) if isinstance(dA_Zt, Tensor) else type(dA_Zt).__name__
        raise ValueError(
            f"dA_Zt must be dA Z^T of shape (d_out, s) = (d_out, {s}), got {shape} "
            "(if you have Y = f(Z; w_new) - f(Z; w_old) of shape (s, d_out), pass Y.T)"
        )

    def dAt_times(U1: Tensor) -> Tensor:
        Zc = Z.to(U1)
        return Zc.mT @ (dA_Zt.to(U1).mT @ U1) / s

    return dAt_times


def forward_upkeep(U0: Tensor, S0: Tensor, V0: Tensor, X: Tensor, Y: Tensor, ridge: float = 1e-2) -> LowRank:
    """Keep the surrogate current from pairs the forward pass read anyway: no query, no reconfiguration.

    Every training step pushes its batch ``X`` (``B x d_in``) through the device at the current
    parameters and reads ``Y = X A^T``. The surrogate predicts ``X A_hat^T`` with
    ``A_hat = U0 S0 V0^T``; the residual ``R = Y - X A_hat^T`` is what the device does differently
    on these inputs. The smallest correction (in Frobenius norm, with a ridge ``lam``) that makes
    the surrogate agree with the batch is::

        Delta = R^T X (X^T X + lam I)^-1  =  R^T (X X^T + lam I)^-1 X,   lam = ridge * ||X||_F^2 / d_in

    (the two forms are equal; the cheaper one is used: ``B x B`` when ``B <= d_in``, else
    ``d_in x d_in``). It corrects the surrogate only in the span of the batch's inputs and leaves the
    rest as it was (a block Kaczmarz step for a moving matrix). The corrected matrix
    ``A_hat + Delta`` has rank up to ``r + B``; one projector-splitting step with the increment
    ``Delta`` (:func:`projector_splitting_step`, fed with the exact products ``Delta V0`` and
    ``Delta^T U1`` of the factored ``Delta``) brings it back to rank ``r``.

    Cost: ``O(B d (r + min(B, d)) + min(B, d)^3)`` with ``d = max(d_in, d_out)``: linear in the
    layer's width for a fixed batch and rank, no full-matrix SVD.

    Args:
        U0, S0, V0: current factors (``d_out x r``, ``r x r``, ``d_in x r``).
        X: the batch's inputs ``(B, d_in)``.
        Y: the device's outputs for them at the current parameters ``(B, d_out)``, read-out noise
            included.
        ridge: ``lam`` relative to the mean squared input per coordinate (> 0).

    Returns:
        ``LowRank(U1, S1, V1)``.
    """
    d_out, d_in, r = _check_factors(U0, S0, V0)
    if not (isinstance(X, Tensor) and X.ndim == 2 and X.shape[1] == d_in):
        raise ValueError(f"X must be a batch of inputs (B, d_in) = (B, {d_in}), got {getattr(X, 'shape', X)}")
    if not (isinstance(Y, Tensor) and tuple(Y.shape) == (X.shape[0], d_out)):
        raise ValueError(f"Y must be the outputs (B, d_out) = ({X.shape[0]}, {d_out}), got {getattr(Y, 'shape', Y)}")
    X, Y = X.to(U0), Y.to(U0)
    B = X.shape[0]
    R = Y - ((X @ V0) @ S0.mT) @ U0.mT  # residual of the surrogate on the batch, (B, d_out)
    # lam stays a tensor and the solves skip their error checks: nothing is read back to the host
    # (G is symmetric positive definite, lam > 0 for any nonzero batch)
    if B <= d_in:  # Delta = C D^T with C = R^T (X X^T + lam I)^-1, D = X^T
        G = X @ X.mT
        G.diagonal().add_(_ridge(G, ridge, d_in))
        C, D = _spd_solve(G, R).mT, X.mT
    else:  # Delta = C D^T with C = R^T X, D = (X^T X + lam I)^-1
        C = R.mT @ X
        G = X.mT @ X
        G.diagonal().add_(_ridge(G, ridge, d_in))
        D = _spd_solve(G, torch.eye(d_in, dtype=X.dtype, device=X.device))
    return projector_splitting_step(U0, S0, V0, C @ (D.mT @ V0), lambda U1: D @ (C.mT @ U1))


def _ridge(G: Tensor, ridge: float, d_in: int) -> Tensor:
    """``lam = ridge ||X||_F^2 / d_in`` from the Gram matrix (``tr(G) = ||X||_F^2``), as a tensor.

    At least the dtype's machine epsilon, so that an all-zero batch gives a zero correction.
    """
    return (G.diagonal().sum() * (ridge / d_in)).clamp_min(torch.finfo(G.dtype).eps)


def _spd_solve(G: Tensor, R: Tensor) -> Tensor:
    """``G^-1 R`` for a symmetric positive definite ``G`` (Cholesky, no error check read back to the host)."""
    L, _ = torch.linalg.cholesky_ex(G)
    return torch.cholesky_solve(R, L)


def _residual(A: Tensor, U: Tensor, S: Tensor, V: Tensor) -> float:
    if not isinstance(A, Tensor) or A.ndim != 2:
        raise ValueError(f"A must be a 2-D matrix (d_out, d_in), got {getattr(A, 'shape', type(A).__name__)}")
    d_out, d_in, _ = _check_factors(U, S, V)
    if A.shape != (d_out, d_in):
        raise ValueError(f"A has shape {tuple(A.shape)} but the factors describe a ({d_out}, {d_in}) matrix")
    return float(torch.linalg.matrix_norm(A - (U @ S @ V.mT).to(A)))


def tracking_ratio(A: Tensor, U: Tensor, S: Tensor, V: Tensor) -> float:
    """``||A - U S V^T||_F / eckart_young_error(A, r)``: 1 is the best any rank-r surrogate can do.

    Args:
        A: ``(d_out, d_in)`` the true matrix.
        U, S, V: rank-r factors.

    Returns:
        The ratio (>= 1 up to round-off). If ``A`` has rank <= r the floor is 0 and the ratio is
        ``inf`` (or 1.0 if the residual is exactly 0); use :func:`surrogate_error` then.
    """
    res = _residual(A, U, S, V)
    r = check_rank(U.shape[1], *A.shape)
    floor = eckart_young_error(A, r)
    if floor == 0.0:
        return 1.0 if res == 0.0 else math.inf
    return res / floor


def surrogate_error(A: Tensor, U: Tensor, S: Tensor, V: Tensor) -> float:
    """Relative error ``||A - U S V^T||_F / ||A||_F`` of the surrogate.

    Args:
        A: ``(d_out, d_in)`` the true matrix (nonzero).
        U, S, V: rank-r factors.
    """
    res = _residual(A, U, S, V)
    norm = float(torch.linalg.matrix_norm(A))
    if norm == 0.0:
        return 0.0 if res == 0.0 else math.inf
    return res / norm
