"""Zero-order (ZO) gradient estimates from device queries (ALGORITHMS.md section 3).

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

Cost model (ALGORITHMS.md section 2): one *query* is one input vector pushed through the device,
one *configuration* is one parameter vector written to it. With ``M`` samples and a batch of
``n`` inputs:

* ``zo_gradient``, forward: ``M + 1`` configurations, ``(M + 1) n`` queries;
* ``zo_gradient``, forward with ``f0 = f(X; w)`` given: ``M`` configurations, ``M n`` queries;
* ``zo_gradient``, central: ``2 M`` configurations, ``2 M n`` queries;
* ``compressed=True``: same configurations, ``n`` replaced by ``d_out`` in the query counts;
* ``zo_input_gradient``: no reconfiguration, ``(M + 1) n`` queries (``M n`` with ``f0``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from . import checks
from .sketch import random_rows

__all__ = ["KINDS", "SCHEMES", "directions", "zo_gradient", "zo_input_gradient"]

KINDS: tuple[str, ...] = ("gaussian", "rademacher")
"""Valid values of ``kind`` (distribution of the random directions)."""

SCHEMES: tuple[str, ...] = ("forward", "central")
"""Valid values of ``scheme`` (finite-difference scheme)."""

QueryAt = Callable[[Tensor, Tensor], Tensor]
Query = Callable[[Tensor], Tensor]


# --------------------------------------------------------------------------- validation helpers


def _check_batch(X: Tensor, V: Tensor, f0: Tensor | None) -> tuple[Tensor, Tensor, Tensor | None]:
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
        checks.finite(f0, "f0", "the forward pass (`f0`)")
    return X, V, f0


def _check_output(Y: Tensor, expected: tuple[int, ...], who: str) -> Tensor:
    if not isinstance(Y, Tensor):
        raise TypeError(f"{who} must return a torch.Tensor of shape {expected}, got {type(Y).__name__}")
    if tuple(Y.shape) != expected:
        raise ValueError(f"{who} returned shape {tuple(Y.shape)}, expected {expected}")
    return checks.finite(Y, "output", who)


def _check_settings(samples: int, mu: float, kind: str) -> tuple[int, float]:
    M = checks.count(samples, "samples", what="number of random directions M")
    mu = checks.positive_number(mu, "mu", "the finite-difference step; typical values are 1e-4 (noise-free) "
                                "to 1e-2 (noisy read-out)")
    checks.choice(kind, "kind", KINDS)
    return M, mu


# --------------------------------------------------------------------------- directions


def directions(
    M: int,
    p: int,
    kind: str = "gaussian",
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
    torch_device: torch.device | str | None = None,
) -> Tensor:
    """Draw ``M`` random perturbation directions in ``R^p``, with ``E[u u^T] = I_p``.

    The rows come from :func:`hybridlab.sketch.random_rows`, the package's one source of random
    probes.

    Args:
        M: number of directions (>= 1).
        p: dimension (>= 1).
        kind: ``'gaussian'`` (entries N(0, 1)) or ``'rademacher'`` (entries +-1 with
            probability 1/2 each; ``||u||^2 = p`` exactly, lower variance of the estimate).
        generator: source of randomness; numbers are drawn on the generator's device and then
            moved to ``torch_device``. ``None`` uses the global generator.
        dtype: floating dtype of the result (default: torch's default dtype).
        torch_device: where the result lives (default: the generator's device).

    Returns:
        Tensor of shape (M, p).

    Cost: none (no query).
    """
    M = checks.count(M, "M", what="number of random directions")
    p = checks.count(p, "p", what="number of parameters")
    checks.choice(kind, "kind", KINDS)
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
) -> Tensor:
    r"""Zero-order estimate of ``dL/dw`` from device queries (ALGORITHMS.md section 3).

    With upstream errors ``V = dL/dY`` the scalar ``phi(w) = <f(X; w), V>_F`` has gradient
    exactly ``dL/dw``. With directions ``u_1..u_M`` (rows of ``U``, ``E[u u^T] = I``):

    * forward:  ``g = 1/(M mu) sum_i <f(X; w + mu u_i) - f(X; w), V>_F u_i``
      (bias O(mu) per sample);
    * central:  ``g = 1/(2 M mu) sum_i <f(X; w + mu u_i) - f(X; w - mu u_i), V>_F u_i``
      (bias O(mu^2)).

    The variance of ``g`` grows like ``p / M``; the cosine with the true gradient is about
    ``sqrt(M / (M + p))`` for Gaussian directions.

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
        kind: ``'gaussian'`` or ``'rademacher'`` (see :func:`directions`).
        scheme: ``'forward'`` or ``'central'``.
        f0: ``f(X; w)`` if already known (shape (n, d_out)); saves one configuration and ``n``
            queries in the forward scheme. Must be a query at exactly ``w``.
        compressed: query ``C = V^T X`` instead of ``X`` (requires ``linear_in_x``).
        linear_in_x: whether the device is linear in its input (``device.linear_in_x``).
        generator: randomness for the directions (ignored when ``U`` is given).
        U: precomputed directions, shape (samples, p) (shared directions for comparisons).

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
    X, V, f0 = _check_batch(X, V, f0)
    p = w.shape[0]
    n, d_out = V.shape
    if compressed and not linear_in_x:
        raise ValueError(
            "compressed batch needs a device linear in x (sum_b <A x_b, v_b> = trace(A C^T) only holds "
            "for y = A x); this device is not (linear_in_x=False): use compressed=False"
        )
    if U is None:
        U = directions(M, p, kind, generator=generator, dtype=w.dtype, torch_device=w.device)
    else:
        U = checks.tensor(U, "U", 2, f"(samples, p) = ({M}, {p})")
        if tuple(U.shape) != (M, p):
            raise ValueError(f"`U` must have shape (samples, p) = ({M}, {p}), got {tuple(U.shape)}")
        U = U.to(dtype=w.dtype, device=w.device)

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

    if scheme == "central":
        W = torch.cat([torch.add(w, U, alpha=mu), torch.add(w, U, alpha=-mu)])  # (2M, p)
    elif f0 is None:
        W = torch.cat([w.unsqueeze(0), torch.add(w, U, alpha=mu)])  # (M + 1, p): w first
    else:
        W = torch.add(w, U, alpha=mu)  # (M, p): w + mu u_i

    Y = _check_output(query_at(W, inputs), (W.shape[0], k, d_out), "query_at")
    s = phi(Y)  # (m,)

    if scheme == "central":
        diff = (s[:M] - s[M:]) / (2.0 * mu)
    elif f0 is None:
        diff = (s[1:] - s[0]) / mu
    else:
        s0 = (f0.to(s.dtype) * V.to(s.dtype)).sum()  # <f0, V>_F = trace(A C^T) when compressed
        diff = (s - s0) / mu
    return (diff.to(U.dtype) @ U) / M


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
        kind: ``'gaussian'`` or ``'rademacher'``.
        generator: randomness for the directions.
        f0: ``f(X)`` at the current parameters if already known, shape (n, d_out).

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

    U = directions(M * n, d_in, kind, generator=generator, dtype=X.dtype, torch_device=X.device).reshape(M, n, d_in)
    Xp = (X + mu * U).reshape(M * n, d_in)  # row i*n + b is x_b + mu u_ib
    inputs = Xp if f0 is not None else torch.cat([X, Xp])
    Y = _check_output(query(inputs), (inputs.shape[0], d_out), "query")
    if f0 is None:
        f0, Y = Y[:n], Y[n:]
    Yp = Y.reshape(M, n, d_out)
    diff = ((Yp - f0.to(Yp.dtype)) * V.to(Yp.dtype)).sum(-1) / mu  # (M, n)
    return (diff.to(U.dtype).unsqueeze(-1) * U).sum(0) / M
