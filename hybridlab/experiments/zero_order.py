"""Experiments of chapter 3, "Zero-order optimization": smoothing, finite differences, ZO cosines."""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..devices import Device
from ..zo import zo_gradient
from ._common import DTYPE, Grid, _configured, _counts, _generator, _progress


# =============================================================================================
# chapter 3: zero-order estimates
# =============================================================================================
def oracle_gradient(device: Device, w: Tensor, X: Tensor, V: Tensor, intensity: bool = False) -> Tensor:
    """Exact ``d/dw <f(X; w), V>_F`` by autograd through the simulator (teaching only).

    With ``intensity=True`` the read-out is ``|A x|^2`` (see :func:`intensity_query_at`).
    """
    w = w.detach().to(device.dtype).clone().requires_grad_(True)
    Y = X.to(device.dtype) @ device.transfer_matrix(w).mT
    if intensity:
        Y = Y.square()
    (grad,) = torch.autograd.grad((Y * V.to(Y.dtype)).sum(), w)
    return grad


def intensity_query_at(device: Device) -> Callable[[Tensor, Tensor], Tensor]:
    """A ``query_at(W, X)`` for intensity detection: the device's outputs squared, ``|A(w) x|^2``.

    Such a device is *not* linear in ``x``: the compressed-batch identity does not hold for it.
    """

    def query_at(W: Tensor, X: Tensor) -> Tensor:
        return device.query_batch(W, X).square()

    return query_at


def cosine(a: Tensor, b: Tensor) -> float:
    """Cosine similarity of two vectors."""
    a, b = a.reshape(-1).to(DTYPE), b.reshape(-1).to(DTYPE)
    return float(a @ b / (torch.linalg.vector_norm(a) * torch.linalg.vector_norm(b)).clamp_min(1e-300))


def gaussian_smoothing_1d(f: Callable[[np.ndarray], np.ndarray], w: np.ndarray, mu: float,
                          nodes: int = 81) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian smoothing ``f_mu(w) = E f(w + mu u)``, ``u ~ N(0, 1)``, and its derivative.

    Computed by Gauss-Hermite quadrature; the derivative is ``E[(f(w + mu u) - f(w)) u] / mu``,
    the expectation the zero-order estimator samples.

    Returns:
        ``(f_mu(w), f_mu'(w))`` on the points ``w``.
    """
    x, h = np.polynomial.hermite.hermgauss(nodes)
    u = math.sqrt(2.0) * x  # nodes for N(0, 1) with weights h / sqrt(pi)
    wts = h / math.sqrt(math.pi)
    W = np.asarray(w, dtype=float)[:, None] + mu * u[None, :]
    F = f(W)
    smooth = F @ wts
    deriv = ((F - f(np.asarray(w, dtype=float))[:, None]) * u[None, :]) @ wts / mu
    return smooth, deriv


def scalar_query_at(f: Callable[[Tensor], Tensor], noise: float = 0.0,
                    generator: torch.Generator | None = None) -> Callable[[Tensor, Tensor], Tensor]:
    """A scalar function ``f(w)`` dressed as a device for :func:`hybridlab.zo.zo_gradient`.

    ``query_at(W, X)`` returns ``f(W_i) + noise * N(0, 1)`` with shape ``(m, 1, 1)`` (one output
    for one dummy input), so ``zo_gradient(query_at, w, ones(1, 1), ones(1, 1), ...)`` is a finite
    difference of ``f`` itself.
    """

    def query_at(W: Tensor, X: Tensor) -> Tensor:
        y = f(W).reshape(-1, 1, 1).to(W.dtype)
        if noise > 0:
            y = y + noise * torch.randn(y.shape, generator=generator, dtype=y.dtype)
        return y

    return query_at


def finite_difference_errors(f: Callable[[Tensor], Tensor], df: Callable[[Tensor], Tensor], w: float,
                             steps: Sequence[float], noise: float = 0.0, scheme: str = "forward",
                             trials: int = 20, seed: int = 0) -> np.ndarray:
    """Mean absolute error of a one-dimensional finite difference of ``f`` at ``w``, for each step.

    The difference is :func:`hybridlab.zo.zo_gradient` with the single direction ``u = 1``
    (``(f(w + h) - f(w)) / h`` forward, ``(f(w + h) - f(w - h)) / (2 h)`` central) on
    :func:`scalar_query_at` with absolute read-out noise ``noise``.
    """
    g = _generator(seed)
    query_at = scalar_query_at(f, noise, g)
    w_t = torch.tensor([float(w)], dtype=DTYPE)
    exact = float(df(w_t).reshape(-1)[0])
    one = torch.ones(1, 1, dtype=DTYPE)
    out = []
    for h in steps:
        est = [float(zo_gradient(query_at, w_t, one, one, samples=1, mu=float(h), U=one, scheme=scheme)[0])
               for _ in range(trials)]
        out.append(float(np.mean(np.abs(np.array(est) - exact))))
    return np.array(out)


def zo_cosine_grid(
    device: str = "slm",
    d_in: int = 16,
    d_out: int = 16,
    batch: int = 16,
    samples: Sequence[int] = (1, 4, 16, 64, 256),
    mus: Sequence[float] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    noises: Sequence[float] = (0.0, 0.01),
    kinds: Sequence[str] = ("gaussian",),
    schemes: Sequence[str] = ("forward",),
    trials: int = 8,
    seed: int = 0,
    progress: bool = False,
) -> Grid:
    """Cosine similarity between :func:`hybridlab.zo.zo_gradient` and the oracle gradient.

    One device instance per read-out noise level (same seed, same fabrication), random inputs
    ``X`` (``batch x d_in``) and upstream errors ``V``; the oracle is :func:`oracle_gradient`.

    Returns:
        A :class:`Grid` with axes ``noise, kind, scheme, M, mu, trial``.
    """
    g = _generator(seed)
    X = torch.randn(batch, d_in, generator=g, dtype=DTYPE)
    V = torch.randn(batch, d_out, generator=g, dtype=DTYPE)
    shape = (len(noises), len(kinds), len(schemes), len(samples), len(mus), trials)
    values = np.zeros(shape)
    combos = list(itertools.product(enumerate(noises), enumerate(kinds), enumerate(schemes),
                                    enumerate(samples), enumerate(mus)))
    devices = {}
    for (i, noise), (j, kind), (k, scheme), (m, M), (n, mu) in _progress(combos, len(combos), progress,
                                                                         "ZO grid"):
        if noise not in devices:
            dev = _configured(device, d_in, d_out, seed, noise=noise)
            devices[noise] = (dev, oracle_gradient(dev, dev.w, X, V))
        dev, oracle = devices[noise]
        w = dev.init_params()
        dg = _generator(1000 * seed + 7 * m + n)
        for t in range(trials):
            est = zo_gradient(dev.query_batch, w, X, V, samples=int(M), mu=float(mu), kind=kind,
                              scheme=scheme, generator=dg)
            values[i, j, k, m, n, t] = cosine(est, oracle)
    axes = {"noise": [float(x) for x in noises], "kind": list(kinds), "scheme": list(schemes),
            "M": [int(x) for x in samples], "mu": [float(x) for x in mus], "trial": list(range(trials))}
    return Grid(axes, values)


def compressed_batch_check(device: str = "slm", d_in: int = 16, d_out: int = 8, batch: int = 64,
                           samples: int = 64, mu: float = 1e-4, seed: int = 0) -> list[dict[str, Any]]:
    """The compressed-batch trick on a linear device and on an intensity (``|A x|^2``) device.

    Both variants of :func:`hybridlab.zo.zo_gradient` (``compressed=False/True``) use the same
    random directions. For the intensity device the compressed variant is forced (by claiming
    ``linear_in_x=True``) to show what goes wrong; :func:`~hybridlab.zo.zo_gradient` refuses it
    when told the truth.

    Returns:
        One row per (read-out, variant): ``{"readout", "variant", "queries",
        "reconfigurations", "cosine"}``.
    """
    dev = _configured(device, d_in, d_out, seed)
    w = dev.w.clone()
    g = _generator(seed)
    X = torch.randn(batch, d_in, generator=g, dtype=DTYPE)
    V = torch.randn(batch, d_out, generator=g, dtype=DTYPE)
    U = torch.randn(samples, dev.p, generator=g, dtype=DTYPE)
    rows = []
    for readout in ("linear, y = A x", "intensity, y = (A x)^2"):
        intensity = readout.startswith("intensity")
        oracle = oracle_gradient(dev, w, X, V, intensity=intensity)
        query_at = intensity_query_at(dev) if intensity else dev.query_batch
        for compressed in (False, True):
            c0 = _counts(dev)
            est = zo_gradient(query_at, w, X, V, samples=samples, mu=mu, U=U, compressed=compressed,
                              linear_in_x=True)
            c1 = _counts(dev)
            rows.append({"readout": readout, "variant": "compressed C = V^T X" if compressed else "batch X",
                         "queries": c1[0] - c0[0], "reconfigurations": c1[1] - c0[1],
                         "cosine": cosine(est, oracle)})
            dev.configure(w)
    return rows


def upstream_error_check(device: str = "mzi", d_in: int = 8, d_out: int = 8, batch: int = 32, classes: int = 4,
                         samples: int = 256, mu: float = 1e-4, seed: int = 0) -> dict[str, float]:
    """``dL/dw`` equals the gradient of the layer-local scalar ``<f(X; w), V>`` with ``V = dL/dY``.

    A tiny network ``device -> tanh -> Linear -> cross-entropy``. Returns the relative difference
    between the two autograd gradients, and the cosine to ``dL/dw`` of two zero-order estimates
    with the same directions: the hybrid estimator (:func:`hybridlab.zo.zo_gradient` with ``V``)
    and a zero-order estimate of the loss itself (each sample re-runs the digital head).
    """
    dev = _configured(device, d_in, d_out, seed)
    w = dev.w.clone()
    g = _generator(seed)
    X = torch.randn(batch, d_in, generator=g, dtype=DTYPE)
    labels = torch.randint(0, classes, (batch,), generator=g)
    head = nn.Linear(d_out, classes).to(DTYPE)
    with torch.no_grad():
        head.weight.copy_(torch.randn(classes, d_out, generator=g, dtype=DTYPE))
        head.bias.zero_()

    def loss_of(Y: Tensor) -> Tensor:  # (..., batch, d_out) -> (...,) summed cross-entropy
        logits = head(torch.tanh(Y))
        ce = nn.functional.cross_entropy(logits.reshape(-1, classes), labels.repeat(logits[..., 0, 0].numel()),
                                         reduction="none")
        return ce.reshape(logits.shape[:-1]).sum(-1)

    # exact dL/dw and V = dL/dY by autograd through the simulator
    wr = w.clone().requires_grad_(True)
    Y = X @ dev.transfer_matrix(wr).mT
    Y.retain_grad()
    loss_of(Y).backward()
    dL_dw, V = wr.grad.clone(), Y.grad.clone()
    local = oracle_gradient(dev, w, X, V)

    U = torch.randn(samples, dev.p, generator=g, dtype=DTYPE)
    hybrid = zo_gradient(dev.query_batch, w, X, V, samples=samples, mu=mu, U=U)

    def loss_query_at(W: Tensor, Xq: Tensor) -> Tensor:  # the loss itself as a 1x1 "output" per config
        return loss_of(dev.query_batch(W, X)).reshape(-1, 1, 1).detach()

    one = torch.ones(1, 1, dtype=DTYPE)
    direct = zo_gradient(loss_query_at, w, one, one, samples=samples, mu=mu, U=U)
    return {"relative difference dL/dw vs grad <f, V>": float((dL_dw - local).norm() / dL_dw.norm()),
            "cosine, hybrid estimator (uses V)": cosine(hybrid, dL_dw),
            "cosine, zero-order on the loss": cosine(direct, dL_dw)}


def scheme_means(device: str = "slm", d_in: int = 8, d_out: int = 8, batch: int = 8, mu: float = 1.0,
                 chunks: int = 40, chunk_samples: int = 50, seed: int = 0) -> dict[str, Any]:
    """Mean and standard error of forward and central ZO estimates at a (large) step ``mu``.

    Each scheme averages ``chunks * chunk_samples`` Gaussian directions, in ``chunks`` calls of
    :func:`hybridlab.zo.zo_gradient` with ``chunk_samples`` directions each (their own directions
    per scheme, independent). The mean of a scheme is the mean of its chunk estimates and its
    standard error per coordinate is their standard deviation over ``sqrt(chunks)``.

    Returns:
        ``{"oracle": dL/dw (p,), "forward": {"mean", "se", "spread", "slope", "slope_se"}, "central":
        {...}, "z": (p,), "smoothing": exp(-mu^2 / 2)}`` with ``z = (mean_forward - mean_central) /
        sqrt(se_f^2 + se_c^2)`` per coordinate, ``spread`` the mean variance of one chunk estimate over
        the coordinates, and ``slope`` the mean projected on the oracle gradient, ``m.o / o.o``, with
        its standard error from the chunks' own projections (the errors of the coordinates are
        correlated: along the gradient they are larger).
        For an SLM, ``A_ij = cos(w_ij) / sqrt(d_in)`` and ``E cos(w + mu u) = exp(-mu^2/2) cos w``, so the
        smoothed gradient that both schemes estimate is exactly ``exp(-mu^2/2)`` times the oracle's.
    """
    dev = _configured(device, d_in, d_out, seed)
    w = dev.w.clone()
    g = _generator(seed)
    X = torch.randn(batch, d_in, generator=g, dtype=DTYPE)
    V = torch.randn(batch, d_out, generator=g, dtype=DTYPE)
    out: dict[str, Any] = {"oracle": oracle_gradient(dev, w, X, V), "smoothing": math.exp(-mu ** 2 / 2)}
    for k, scheme in enumerate(("forward", "central")):
        dg = _generator(1000 * seed + k + 1)
        est = torch.stack([zo_gradient(dev.query_batch, w, X, V, samples=chunk_samples, mu=mu, scheme=scheme,
                                       generator=dg) for _ in range(chunks)])
        slopes = est @ out["oracle"] / (out["oracle"] @ out["oracle"])
        out[scheme] = {"mean": est.mean(0), "se": est.std(0) / math.sqrt(chunks),
                       "spread": float(est.var(0).mean()), "slope": float(slopes.mean()),
                       "slope_se": float(slopes.std() / math.sqrt(chunks))}
        dev.configure(w)
    f, c = out["forward"], out["central"]
    out["z"] = (f["mean"] - c["mean"]) / (f["se"].square() + c["se"].square()).sqrt()
    return out
