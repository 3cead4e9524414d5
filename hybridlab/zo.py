"""Zero-order (ZO) gradient estimates from device queries (chapter 3; book/method.md).

A physical layer computes ``y = f(x; w) = A(w) x`` and can only be *queried*: write the
control parameters ``w``, push inputs through, read outputs. Backprop needs

* ``dL/dw`` -- estimated here by :func:`zo_gradient`, a randomized directional finite
  difference of the scalar ``<f(X; w), V>_F`` whose gradient in ``w`` is exactly ``dL/dw``;
* ``dL/dx = A^T v`` -- normally taken from the low-rank surrogate; :func:`zo_input_gradient`
  gives the (costly) zero-order estimate used by the "ZO only" method.

Nothing here imports :mod:`hybridlab.devices`: the functions work on *query callables*,

* ``query_at(W, X) -> Y``: ``W`` (M, p) parameter sets, ``X`` (n, d_in) inputs shared by all
  sets, ``Y`` (M, n, d_out) -- for example ``device.query_batch``;
* ``query(X) -> Y``: ``X`` (n, d_in) at the current configuration, ``Y`` (n, d_out) -- for
  example ``device.query``.

Every estimate is a handful of batched tensor operations (no Python loop over samples), follows
the dtype and device of its inputs, and is reproducible under a ``torch.Generator``.

Cost model (chapter 2; book/method.md, "Cost model"): one *query* is one input vector pushed through the device,
one *configuration* is one parameter vector written to it. With ``M`` samples and a batch of
``n`` inputs:

* ``zo_gradient``, forward: ``M + 1`` configurations, ``(M + 1) n`` queries;
* ``zo_gradient``, forward with ``f0 = f(X; w)`` given: ``M`` configurations, ``M n`` queries;
* ``zo_gradient``, central: ``2 M`` configurations, ``2 M n`` queries;
* ``compressed=True``: same configurations, ``n`` replaced by ``d_out`` in the query counts;
* ``zo_input_gradient``: no reconfiguration, ``(M + 1) n`` queries (``M n`` with ``f0``).

**Directions and their moments.** Every kind of direction has ``E[u u^T] = I``; that alone makes
``E[(u^T h) u] = h``, so the estimate is unbiased to first order in ``mu`` (the ``O(mu)`` term
``(mu/2) E[(u^T H u) u]`` vanishes too, since ``u`` and ``-u`` are equally likely). Its spread is a
fourth moment. For a linear ``phi`` with gradient ``h`` and ``M`` independent directions,
``g = (1/M) sum_i (u_i^T h) u_i`` and

    ``E ||g - h||^2 = (Q - ||h||^2) / M``,   ``Q = E[(u^T h)^2 ||u||^2]``.

* ``'gaussian'``, ``u ~ N(0, I_p)``: ``E[(u^T h)^2 u u^T] = ||h||^2 I + 2 h h^T``, so
  ``Q = (p + 2) ||h||^2``.
* ``'rademacher'`` and ``'packed'`` (the same i.i.d. signs, ``'packed'`` draws 64 per random
  integer): ``||u||^2 = p`` exactly, ``Q = p ||h||^2``.
* ``'lowrank'`` of rank ``k``: the parameters viewed as a ``d1 x d2`` matrix ``H`` (``d1 d2 = p``),
  ``u = (1/sqrt(k)) sum_j vec(a_j b_j^T)`` with ``a_j ~ N(0, I_d1)``, ``b_j ~ N(0, I_d2)``
  (:func:`hybridlab.sketch.random_factors`). For ``k = 1``, ``u^T h = a^T H b`` and
  ``||u||^2 = ||a||^2 ||b||^2``; averaging over ``a`` first (a Gaussian fourth moment with
  ``c = H b``: ``E[(a^T c)^2 ||a||^2] = (d1 + 2) ||c||^2``), then over ``b``
  (``E[||H b||^2 ||b||^2] = (d2 + 2) ||H||_F^2``) gives ``Q_1 = (d1 + 2)(d2 + 2) ||h||^2``.
  For ``k`` terms ``u = (1/sqrt(k)) sum_j u_j`` (independent, symmetric, ``E[u_j u_j^T] = I``), the
  expansion of ``Q`` (a ``1/k^2``-weighted sum over four indices) keeps the ``k`` terms with all
  four equal (``Q_1`` each) and the ``3 k (k - 1)`` ordered pairings of two distinct indices
  (``p ||h||^2`` for one of the three pairings, ``||h||^2`` for the other two), so

      ``Q_k = (p + 2) ||h||^2 + 2 (d1 + d2 + 1) ||h||^2 / k``:

  the Gaussian value plus ``2 (d1 + d2 + 1) / k``, a relative excess of about
  ``2 (d1 + d2) / (k d1 d2)`` (1.6 % for a rank-1 direction over a 256 x 256 matrix), from
  ``k (d1 + d2)`` random numbers instead of ``d1 d2``. ``Q`` depends on ``h`` only through
  ``||h||``, not on its structure as a matrix, so the reshaping of ``w`` matters only through
  ``d1 + d2``: a nearly square one is best. A shape with ``d1 d2 > p`` keeps the first ``p``
  entries of each ``vec`` (``E[u u^T] = I`` still; the ``Q_k`` above becomes an upper bound).

The cosine with the true gradient follows: ``E[g] . h = ||h||^2`` and
``E||g||^2 = ||h||^2 + E||g - h||^2``, so ``cos ~ sqrt(M / (M + Q / ||h||^2 - 1))``, about
``sqrt(M / (M + p))`` for every kind here.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from . import checks
from .sketch import expand_factors, random_factors, random_rows

__all__ = ["KINDS", "SCHEMES", "directions", "matrix_shape", "second_moment_excess", "zo_gradient",
           "zo_input_gradient"]

KINDS: tuple[str, ...] = ("gaussian", "rademacher", "packed", "lowrank")
"""Valid values of ``kind`` (distribution of the random directions; see the module docstring)."""

SCHEMES: tuple[str, ...] = ("forward", "central")
"""Valid values of ``scheme`` (finite-difference scheme)."""

QueryAt = Callable[[Tensor, Tensor], Tensor]
Query = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- validation helpers


def _check_batch(X: Tensor, V: Tensor, f0: Tensor | None,
                 check_finite: bool = True) -> tuple[Tensor, Tensor, Tensor | None]:
    """Check the inputs ``X`` (n, d_in), upstream errors ``V`` (n, d_out) and ``f0 = f(X; w)``."""
    X = checks.tensor(X, "X", 2, "(n, d_in)")
    V = checks.tensor(V, "V", 2, f"(n, d_out) with n = {X.shape[0]} rows like X")
    n, d_out = X.shape[0], V.shape[1]
    if V.shape[0] != n:
        raise ValueError(f"`V` must have shape (n, d_out) = ({n}, d_out), one row per row of X, "
                         f"got {tuple(V.shape)}")
    if f0 is not None:
        f0 = checks.tensor(f0, "f0", 2, f"(n, d_out) = ({n}, {d_out})")
        if tuple(f0.shape) != (n, d_out):
            raise ValueError(f"`f0` must have shape (n, d_out) = ({n}, {d_out}) like V, got {tuple(f0.shape)}")
        if check_finite:
            checks.finite(f0, "f0", "the forward pass (`f0`)")
    return X, V, f0


def _check_output(Y: Tensor, expected: tuple[int, ...], who: str, check_finite: bool = True) -> Tensor:
    if not isinstance(Y, Tensor):
        raise TypeError(f"{who} must return a torch.Tensor of shape {expected}, got {type(Y).__name__}")
    if tuple(Y.shape) != expected:
        raise ValueError(f"{who} returned shape {tuple(Y.shape)}, expected {expected}")
    return checks.finite(Y, "output", who) if check_finite else Y


def _check_settings(samples: int, mu: float, kind: str) -> tuple[int, float]:
    M = checks.count(samples, "samples", what="number of random directions M")
    mu = checks.positive_number(mu, "mu", "the finite-difference step; typical values are 1e-4 (noise-free) "
                                "to 1e-2 (noisy read-out)")
    checks.choice(kind, "kind", KINDS)
    return M, mu


def matrix_shape(p: int, shape: tuple[int, int] | None = None) -> tuple[int, int]:
    """The ``(d1, d2)`` matrix view of ``p`` parameters used by ``'lowrank'`` directions.

    ``shape`` given: checked (``d1 d2 >= p``) and returned. ``None``: the most nearly square shape
    that holds ``p`` entries, ``d1 = ceil(sqrt(p))``, ``d2 = ceil(p / d1)`` (exactly ``n x n``
    when ``p = n^2``), which minimises ``d1 + d2`` and with it the random numbers and the variance
    excess (module docstring).
    """
    p = checks.count(p, "p", what="number of parameters")
    if shape is None:
        d1 = math.isqrt(p - 1) + 1
        return d1, -(-p // d1)
    if not (isinstance(shape, (tuple, list)) and len(shape) == 2):
        raise ValueError(f"`shape` must be a pair (d1, d2) with d1 * d2 >= p = {p}, got {shape!r}")
    d1 = checks.count(shape[0], "shape[0]", what="rows of the parameter matrix")
    d2 = checks.count(shape[1], "shape[1]", what="columns of the parameter matrix")
    if d1 * d2 < p:
        raise ValueError(f"`shape` {d1} x {d2} holds {d1 * d2} entries, fewer than the p = {p} parameters: "
                         "use d1 * d2 >= p (the device's param_shape, or None for a square one)")
    return d1, d2


def second_moment_excess(kind: str, p: int, rank: int = 1, shape: tuple[int, int] | None = None) -> float:
    """``Q / ||h||^2 - 1`` of the module docstring: ``M E||g - h||^2 / ||h||^2`` for a linear ``phi``.

    ``p + 1`` for Gaussian directions, ``p - 1`` for signs, ``p + 1 + 2 (d1 + d2 + 1) / k`` for
    rank-``k`` directions over a ``d1 x d2`` matrix with ``d1 d2 = p`` (an upper bound when
    ``d1 d2 > p``).
    """
    checks.choice(kind, "kind", KINDS)
    p = checks.count(p, "p", what="number of parameters")
    if kind == "gaussian":
        return p + 1.0
    if kind in ("rademacher", "packed"):
        return p - 1.0
    d1, d2 = matrix_shape(p, shape)
    return p + 1.0 + 2.0 * (d1 + d2 + 1) / checks.count(rank, "rank", what="rank k of the directions")


# --------------------------------------------------------------------------- directions


def directions(
    M: int,
    p: int,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    torch_device: torch.device | str | None = None,
    *,
    rank: int = 1,
    shape: tuple[int, int] | None = None,
) -> Tensor:
    """Draw ``M`` random perturbation directions in ``R^p``, with ``E[u u^T] = I_p``.

    The rows come from :mod:`hybridlab.sketch`, the package's one source of random probes. The
    variance each kind gives the estimate is derived in the module docstring
    (:func:`second_moment_excess`).

    Args:
        M: number of directions (>= 1).
        p: dimension (>= 1).
        kind: ``'gaussian'`` (entries N(0, 1)), ``'rademacher'`` (entries +-1 with probability
            1/2 each; ``||u||^2 = p`` exactly, lower variance of the estimate), ``'packed'`` (the
            same signs, 64 per random integer) or ``'lowrank'`` (``vec`` of a random rank-``k``
            ``d1 x d2`` matrix with Gaussian factors).
        generator: source of randomness; numbers are drawn on the generator's device and then
            moved to ``torch_device``. ``None`` uses the global generator.
        dtype: floating dtype of the result (default: torch's default dtype).
        torch_device: where the result lives (default: the generator's device).
        rank: ``k`` of ``'lowrank'`` directions (ignored by the other kinds).
        shape: ``(d1, d2)`` matrix view of the parameters for ``'lowrank'`` (:func:`matrix_shape`;
            default: nearly square). Ignored by the other kinds.

    Returns:
        Tensor of shape (M, p). :func:`zo_gradient` never forms it for ``'lowrank'``: it works on
        the factors.

    Cost: none (no query).
    """
    M = checks.count(M, "M", what="number of random directions")
    p = checks.count(p, "p", what="number of parameters")
    checks.choice(kind, "kind", KINDS)
    if kind == "lowrank":
        A, B = random_factors(M, matrix_shape(p, shape), rank, generator=generator, dtype=dtype,
                              torch_device=torch_device)
        return expand_factors(A, B, p)
    return random_rows(M, p, kind, generator=generator, dtype=dtype, torch_device=torch_device)


# --------------------------------------------------------------------------- dL/dw


def zo_gradient(
    query_at: QueryAt,
    w: Tensor,
    X: Tensor,
    V: Tensor,
    *,
    samples: int,
    mu: float,
    kind: str = "gaussian",
    scheme: str = "forward",
    f0: Tensor | None = None,
    compressed: bool = False,
    linear_in_x: bool = True,
    generator: torch.Generator | None = None,
    U: Tensor | None = None,
    rank: int = 1,
    shape: tuple[int, int] | None = None,
    check_finite: bool = True,
) -> Tensor:
    r"""Zero-order estimate of ``dL/dw`` from device queries (chapter 3).

    With upstream errors ``V = dL/dY`` the scalar ``phi(w) = <f(X; w), V>_F`` has gradient
    exactly ``dL/dw``. With directions ``u_1..u_M`` (rows of ``U``, ``E[u u^T] = I``):

    * forward:  ``g = 1/(M mu) sum_i <f(X; w + mu u_i) - f(X; w), V>_F u_i``
      (bias O(mu) per sample);
    * central:  ``g = 1/(2 M mu) sum_i <f(X; w + mu u_i) - f(X; w - mu u_i), V>_F u_i``
      (bias O(mu^2)).

    The variance of ``g`` grows like ``p / M``; the cosine with the true gradient is about
    ``sqrt(M / (M + p))`` for every kind of direction (module docstring).

    **Low-rank directions** (``kind='lowrank'``, ``U`` not given): the ``M x p`` directions are
    never formed. The perturbed parameters are written straight from the factors,
    ``W_i = w + mu A_i^T B_i`` (one batched matrix product into the ``M`` parameter sets the
    device needs anyway), and the sum over the samples is one product of the factors,
    ``sum_i diff_i A_i^T B_i = (diff * A)^T B`` (``d1 x k M`` by ``k M x d2``).

    **Compressed batch** (``compressed=True``, only for devices linear in ``x``): since
    ``sum_b <A x_b, v_b> = trace(A C^T)`` with ``C = V^T X`` (``d_out x d_in``, row ``j`` is
    ``sum_b V[b, j] x_b``), each scalar is read with the ``d_out`` rows of ``C`` as inputs:
    ``phi = sum_j <f(C_j; w), e_j>`` (the diagonal of ``f(C; w)``). The batch of ``n`` queries
    per configuration shrinks to ``d_out``. A given ``f0 = f(X; w)`` is still reused in this
    mode through the same identity, ``phi(w) = <f0, V>_F`` (exact for a linear-in-x device).

    All configurations are passed to ``query_at`` in **one** batched call.

    Cost (configurations / queries per call), ``n`` = batch size, ``k = d_out`` if
    ``compressed`` else ``n``:

    * forward, ``f0 is None``: ``M + 1`` configurations ``[w, w + mu u_1, ...]``, ``(M + 1) k``
      queries;
    * forward, ``f0`` given (e.g. from the forward pass): ``M`` configurations, ``M k`` queries;
    * central: ``2 M`` configurations ``[w + mu u_i ..., w - mu u_i ...]``, ``2 M k`` queries
      (``f0`` is not needed and ignored).

    Args:
        query_at: ``query_at(W (m, p), X (k, d_in)) -> (m, k, d_out)``, e.g. ``device.query_batch``.
        w: current parameters, shape (p,). The result has its dtype and device.
        X: batch of inputs, shape (n, d_in).
        V: upstream errors ``dL/dY``, shape (n, d_out).
        samples: number of directions ``M`` (>= 1).
        mu: finite-difference step (> 0, finite).
        kind: ``'gaussian'``, ``'rademacher'``, ``'packed'`` or ``'lowrank'`` (:func:`directions`).
        scheme: ``'forward'`` or ``'central'``.
        f0: ``f(X; w)`` if already known (shape (n, d_out)); saves one configuration and ``n``
            queries in the forward scheme. Must be a query at exactly ``w``.
        compressed: query ``C = V^T X`` instead of ``X`` (requires ``linear_in_x``).
        linear_in_x: whether the device is linear in its input (``device.linear_in_x``).
        generator: randomness for the directions (ignored when ``U`` is given).
        U: precomputed directions, shape (samples, p) (shared directions for comparisons).
        rank: ``k`` of ``'lowrank'`` directions.
        shape: ``(d1, d2)`` matrix view of ``w`` for ``'lowrank'`` directions (:func:`matrix_shape`;
            a device's ``param_shape``).
        check_finite: refuse NaN/Inf in ``f0`` and in the query output (one read of a scalar
            each, which waits for a GPU). A :class:`hybridlab.devices.Device` checks its own
            outputs already, so the black-box layer turns this off.

    Returns:
        The estimate ``g``, shape (p,), dtype and device of ``w``.

    Raises:
        ValueError: bad ``samples``/``mu``/``kind``/``scheme``, shape mismatch of
            ``w``/``X``/``V``/``f0``/``U`` or of the query output, compressed batch on a
            device not linear in x, or non-finite (NaN/Inf) device output.
    """
    M, mu = _check_settings(samples, mu, kind)
    checks.choice(scheme, "scheme", SCHEMES)
    w = checks.tensor(w, "w", 1, "(p,)")
    X, V, f0 = _check_batch(X, V, f0, check_finite)
    p = w.shape[0]
    n, d_out = V.shape
    if compressed and not linear_in_x:
        raise ValueError(
            "compressed batch needs a device linear in x (sum_b <A x_b, v_b> = trace(A C^T) only holds "
            "for y = A x); this device is not (linear_in_x=False): use compressed=False"
        )
    factors = None
    if U is not None:
        U = checks.tensor(U, "U", 2, f"(samples, p) = ({M}, {p})")
        if tuple(U.shape) != (M, p):
            raise ValueError(f"`U` must have shape (samples, p) = ({M}, {p}), got {tuple(U.shape)}")
        U = U.to(dtype=w.dtype, device=w.device)
    elif kind == "lowrank":
        factors = random_factors(M, matrix_shape(p, shape), rank, generator=generator, dtype=w.dtype,
                                 torch_device=w.device)
    else:
        U = directions(M, p, kind, generator=generator, dtype=w.dtype, torch_device=w.device)

    # Inputs actually pushed through the device, and the reduction to the scalar phi.
    if compressed:
        inputs = V.transpose(0, 1).to(X.dtype) @ X  # C = V^T X, (d_out, d_in)
        k = d_out

        def phi(Y: Tensor) -> Tensor:  # (m, d_out, d_out) -> (m,): sum_j <f(C_j), e_j>
            return Y.diagonal(dim1=-2, dim2=-1).sum(-1)

    else:
        inputs = X
        k = n

        def phi(Y: Tensor) -> Tensor:  # (m, n, d_out) -> (m,): <f(X), V>_F, as one matrix-vector product
            return Y.reshape(Y.shape[0], -1) @ V.to(Y.dtype).reshape(-1)

    def perturbed(alpha: float) -> Tensor:  # (M, p): w + alpha u_i
        if factors is None:
            return torch.add(w, U, alpha=alpha)
        return _perturb_with_factors(w, *factors, alpha)

    if scheme == "central":
        W = torch.cat([perturbed(mu), perturbed(-mu)])  # (2M, p)
    elif f0 is None:
        W = torch.cat([w.unsqueeze(0), perturbed(mu)])  # (M + 1, p): w first
    else:
        W = perturbed(mu)  # (M, p): w + mu u_i

    Y = _check_output(query_at(W, inputs), (W.shape[0], k, d_out), "query_at", check_finite)
    s = phi(Y)  # (m,)

    if scheme == "central":
        diff = (s[:M] - s[M:]) / (2.0 * mu)
    elif f0 is None:
        diff = (s[1:] - s[0]) / mu
    else:
        s0 = (f0.to(s.dtype) * V.to(s.dtype)).sum()  # <f0, V>_F = trace(A C^T) when compressed
        diff = (s - s0) / mu
    if factors is None:
        return (diff.to(U.dtype) @ U) / M
    A, B = factors  # sum_i diff_i A_i^T B_i as one (d1 x kM) (kM x d2) product
    G = (A * diff.to(A.dtype)[:, None, None]).flatten(0, 1).mT @ B.flatten(0, 1)
    return G.reshape(-1)[:p] / M


def _perturb_with_factors(w: Tensor, A: Tensor, B: Tensor, alpha: float) -> Tensor:
    """``(M, p)`` parameter sets ``w + alpha vec(A_i^T B_i)[:p]``, written in one batched product."""
    M, _, d1 = A.shape
    d2 = B.shape[-1]
    p = w.shape[0]
    base = w if d1 * d2 == p else torch.cat([w, w.new_zeros(d1 * d2 - p)])
    W = torch.baddbmm(base.view(1, d1, d2).expand(M, d1, d2), A.mT, B, alpha=alpha)
    W = W.view(M, d1 * d2)
    return W if d1 * d2 == p else W[:, :p].contiguous()


# --------------------------------------------------------------------------- dL/dx


def zo_input_gradient(
    query: Query,
    X: Tensor,
    V: Tensor,
    *,
    samples: int,
    mu: float,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
    f0: Tensor | None = None,
    rank: int = 1,
) -> Tensor:
    r"""Zero-order estimate of ``dL/dx = A^T v`` for every row (method "ZO only").

    For each row ``b`` with its own directions ``u_ib`` in ``R^{d_in}`` (``E[u u^T] = I``):

    ``g_b = 1/(M mu) sum_i <f(x_b + mu u_ib) - f(x_b), v_b> u_ib``

    which estimates ``J(x_b)^T v_b`` (``= A^T v_b`` for a device linear in x, unbiased there
    for any ``mu``). The device stays at its current configuration: all perturbed inputs
    (and ``X`` itself when ``f0`` is None) go through ``query`` in **one** call.

    Cost: no reconfiguration; ``(M + 1) n`` queries (``M n`` when ``f0 = f(X)`` is given,
    e.g. from the forward pass). Compare with the surrogate: zero queries.

    Args:
        query: ``query(X (k, d_in)) -> (k, d_out)`` at the current parameters, e.g. ``device.query``.
        X: inputs, shape (n, d_in). The result has its dtype and device.
        V: upstream errors, shape (n, d_out).
        samples: number of directions ``M`` per row (>= 1).
        mu: finite-difference step (> 0, finite).
        kind: any of :data:`KINDS` (``'lowrank'``: each ``u_ib`` the ``vec`` of a nearly square
            random rank-``rank`` matrix, formed densely here).
        generator: randomness for the directions.
        f0: ``f(X)`` at the current parameters if already known, shape (n, d_out).
        rank: ``k`` of ``'lowrank'`` directions.

    Returns:
        Estimate of ``dL/dX``, shape (n, d_in).

    Raises:
        ValueError: bad ``samples``/``mu``/``kind``, shape mismatch of ``X``/``V``/``f0`` or
            of the query output, non-finite (NaN/Inf) device output.
    """
    M, mu = _check_settings(samples, mu, kind)
    X, V, f0 = _check_batch(X, V, f0)
    n, d_in = X.shape
    d_out = V.shape[1]

    U = directions(M * n, d_in, kind, generator=generator, dtype=X.dtype, torch_device=X.device,
                   rank=rank).reshape(M, n, d_in)
    Xp = (X + mu * U).reshape(M * n, d_in)  # row i*n + b is x_b + mu u_ib
    inputs = Xp if f0 is not None else torch.cat([X, Xp])
    Y = _check_output(query(inputs), (inputs.shape[0], d_out), "query")
    if f0 is None:
        f0, Y = Y[:n], Y[n:]
    Yp = Y.reshape(M, n, d_out)
    diff = ((Yp - f0.to(Yp.dtype)) * V.to(Yp.dtype)).sum(-1) / mu  # (M, n)
    return (diff.to(U.dtype).unsqueeze(-1) * U).sum(0) / M
