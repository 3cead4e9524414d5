"""Experiments of chapter 4, "Dynamical low-rank approximation": the integrator, sketches, tracking."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..devices import Device, make_device
from ..layer import BlackBoxLinear
from ..lowrank import LowRank, eckart_young_error, truncated_svd
from ..sketch import random_rows
from ..surrogate import ksl_step, sketched_transpose, surrogate_error
from ._common import DTYPE, Grid, _counts, _generator, _progress


# =============================================================================================
# chapter 4: dynamical low-rank approximation
# =============================================================================================
def _skew(n: int, g: torch.Generator) -> Tensor:
    G = torch.randn(n, n, generator=g, dtype=DTYPE) / math.sqrt(n)
    return G - G.mT


def rank_r_path(d_out: int, d_in: int, sigmas: Sequence[float], steps: int, h: float, seed: int = 0,
                eps: float = 0.0) -> list[Tensor]:
    """Matrices ``A(t_k) = Q_U(t) U0 diag(sigmas) V0^T Q_V(t)^T + eps E(t)``, ``t_k = k h``.

    ``Q_U(t) = exp(t K_U)`` and ``Q_V(t) = exp(t K_V)`` rotate the singular vectors smoothly
    (``K`` random skew-symmetric); the singular values stay ``sigmas``. With ``eps = 0`` every
    matrix has rank exactly ``len(sigmas)``; ``eps > 0`` adds a smooth full-rank perturbation
    ``E(t) = E0 + t E1`` (unit Frobenius norm at ``t = 0``).
    """
    g = _generator(seed)
    r = len(sigmas)
    U0 = torch.linalg.qr(torch.randn(d_out, r, generator=g, dtype=DTYPE)).Q
    V0 = torch.linalg.qr(torch.randn(d_in, r, generator=g, dtype=DTYPE)).Q
    KU, KV = _skew(d_out, g), _skew(d_in, g)
    E0 = torch.randn(d_out, d_in, generator=g, dtype=DTYPE)
    E1 = torch.randn(d_out, d_in, generator=g, dtype=DTYPE)
    E0, E1 = E0 / E0.norm(), E1 / E1.norm()
    core = torch.diag(torch.tensor([float(s) for s in sigmas], dtype=DTYPE))
    path = []
    for k in range(steps + 1):
        t = k * h
        U = torch.linalg.matrix_exp(t * KU) @ U0
        V = torch.linalg.matrix_exp(t * KV) @ V0
        path.append(U @ core @ V.mT + eps * (E0 + t * E1))
    return path


def naive_dlra_step(U0: Tensor, S0: Tensor, V0: Tensor, dA: Tensor) -> LowRank:
    """A *naive* factor update: one explicit Euler step of the Koch-Lubich equations, re-orthonormalised.

    This is the comparison baseline of chapter 4, not part of the method. From
    ``U' = (I - U U^T) A' V S^{-1}``, ``V' = (I - V V^T) A'^T U S^{-T}``, ``S' = U^T A' V``::

        U1 = U0 + (I - U0 U0^T) dA V0 S0^{-1},   V1 = V0 + (I - V0 V0^T) dA^T U0 S0^{-T},
        S1 = S0 + U0^T dA V0,                      then QR of U1 and V1.

    It needs ``S^{-1}``: small singular values make it unstable, which the projector-splitting
    integrator (:func:`hybridlab.surrogate.ksl_step`) avoids.
    """
    S_inv = torch.linalg.inv(S0)
    dAV, dAtU = dA @ V0, dA.mT @ U0
    S1 = S0 + U0.mT @ dAV
    U1 = U0 + (dAV - U0 @ (U0.mT @ dAV)) @ S_inv
    V1 = V0 + (dAtU - V0 @ (V0.mT @ dAtU)) @ S_inv.mT
    QU, RU = torch.linalg.qr(U1)
    QV, RV = torch.linalg.qr(V1)
    return LowRank(QU, RU @ S1 @ RV.mT, QV)


def integrator_errors(path: Sequence[Tensor], r: int, method: str = "ksl") -> np.ndarray:
    """Relative error ``||A_k - U_k S_k V_k^T||_F / ||A_k||_F`` along a path of matrices.

    Starts from the truncated SVD of ``path[0]`` and takes one step per increment
    ``dA = A_{k+1} - A_k``: ``method='ksl'`` (:func:`hybridlab.surrogate.ksl_step`) or ``'naive'``
    (:func:`naive_dlra_step`). Non-finite errors (a blown-up naive step) are reported as ``inf``.
    """
    step = {"ksl": ksl_step, "naive": naive_dlra_step}[method]
    U, S, V = truncated_svd(path[0], r)
    errors = [surrogate_error(path[0], U, S, V)]
    for A0, A1 in zip(path[:-1], path[1:]):
        U, S, V = step(U, S, V, A1 - A0)
        if not (torch.isfinite(U).all() and torch.isfinite(S).all() and torch.isfinite(V).all()):
            errors.extend([math.inf] * (len(path) - len(errors)))
            break
        errors.append(surrogate_error(A1, U, S, V))
    return np.array(errors)


def small_singular_value_study(sigma_mins: Sequence[float], d: int = 48, r: int = 6, steps: int = 20,
                               h: float = 0.02, eps: float = 0.0, seed: int = 0) -> dict[str, np.ndarray]:
    """Final relative error of KSL and of the naive update as the smallest singular value shrinks.

    For each ``sigma_min``, a path :func:`rank_r_path` with singular values geometrically spaced
    from 1 to ``sigma_min`` (plus ``eps`` full-rank perturbation) is integrated with both
    methods; the floor is the Eckart-Young error at the last step.

    Returns:
        ``{"sigma_min", "ksl", "naive", "floor"}`` arrays.
    """
    out: dict[str, list[float]] = {"ksl": [], "naive": [], "floor": []}
    for smin in sigma_mins:
        sig = np.geomspace(1.0, float(smin), r)
        path = rank_r_path(d, d, sig, steps, h, seed=seed, eps=eps)
        out["ksl"].append(integrator_errors(path, r, "ksl")[-1])
        out["naive"].append(integrator_errors(path, r, "naive")[-1])
        A = path[-1]
        out["floor"].append(eckart_young_error(A, r) / float(A.norm()))
    return {"sigma_min": np.array([float(s) for s in sigma_mins]), **{k: np.array(v) for k, v in out.items()}}


def sketch_error(d_in: int = 128, d_out: int = 64, r: int = 8, sketches: Sequence[int] = (8, 16, 32, 64, 128),
                 kinds: Sequence[str] = ("gaussian", "rademacher", "orthogonal"), trials: int = 20,
                 seed: int = 0) -> Grid:
    """Relative error of the sketched transposed product ``(1/s) Z^T (dA Z^T)^T U1`` vs ``dA^T U1``.

    Calls :func:`hybridlab.surrogate.sketch_matrix` and :func:`~hybridlab.surrogate.sketched_transpose`
    for a random ``dA`` and a random orthonormal ``U1`` (``d_out x r``).

    Returns:
        A :class:`Grid` with axes ``kind, s, trial``.
    """
    g = _generator(seed)
    dA = torch.randn(d_out, d_in, generator=g, dtype=DTYPE)
    U1 = torch.linalg.qr(torch.randn(d_out, r, generator=g, dtype=DTYPE)).Q
    exact = dA.mT @ U1
    values = np.zeros((len(kinds), len(sketches), trials))
    for i, kind in enumerate(kinds):
        for j, s in enumerate(sketches):
            for t in range(trials):
                Z = random_rows(int(s), d_in, kind, generator=g, dtype=DTYPE)
                est = sketched_transpose(Z, dA @ Z.mT)(U1)
                values[i, j, t] = float((est - exact).norm() / exact.norm())
    return Grid({"kind": list(kinds), "s": [int(s) for s in sketches], "trial": list(range(trials))}, values)


def accumulated_sketch_error(d_in: int = 128, d_out: int = 64, r: int = 8, s: int = 16, steps: int = 100,
                             correlation: float = 0.8, modes: Sequence[str] = ("fresh", "fixed", "rotate 10"),
                             kind: str = "gaussian", seed: int = 0) -> dict[str, np.ndarray]:
    """Error of the sketched products ``dA_t^T U`` summed over steps, for fresh, fixed or rotating sketches.

    The increments are correlated from step to step, as in training:
    ``dA_t = correlation * D + sqrt(1 - correlation^2) * E_t`` (``D`` fixed, ``E_t`` fresh, both
    Gaussian). Each step estimates ``dA_t^T U`` with :func:`~hybridlab.surrogate.sketched_transpose`
    on a sketch that is drawn anew every step (``'fresh'``), once (``'fixed'``, what cached queries
    imply) or every ``k`` steps (``'rotate k'``).

    Returns:
        ``{mode: e}`` with ``e[t] = ||sum_{k<=t} (estimate_k - exact_k)||_F / ||sum_{k<=t} exact_k||_F``.
    """
    g = _generator(seed)
    D = torch.randn(d_out, d_in, generator=g, dtype=DTYPE)
    U = torch.linalg.qr(torch.randn(d_out, r, generator=g, dtype=DTYPE)).Q
    E = torch.randn(steps, d_out, d_in, generator=g, dtype=DTYPE)
    c = float(correlation)
    dAs = c * D + math.sqrt(max(0.0, 1.0 - c * c)) * E
    out = {}
    for mode in modes:
        period = {"fresh": 1, "fixed": steps + 1}.get(mode)
        if period is None:
            if not mode.startswith("rotate "):
                raise ValueError(f"mode must be 'fresh', 'fixed' or 'rotate k', got {mode!r}")
            period = int(mode.split()[1])
        sg = _generator(seed + 1)
        err_sum = torch.zeros(d_in, r, dtype=DTYPE)
        exact_sum = torch.zeros(d_in, r, dtype=DTYPE)
        rel = []
        for t in range(steps):
            if t % period == 0:
                Z = random_rows(s, d_in, kind, generator=sg, dtype=DTYPE)
            exact = dAs[t].mT @ U
            err_sum += sketched_transpose(Z, dAs[t] @ Z.mT)(U) - exact
            exact_sum += exact
            rel.append(float(err_sum.norm() / exact_sum.norm()))
        out[mode] = np.array(rel)
    return out


# ---------------------------------------------------------------------------------------------
# tracking a training-like trajectory
# ---------------------------------------------------------------------------------------------
@dataclass
class Trajectory:
    """Device parameters ``W[0..T]`` along a training-like run, and the true matrices there.

    Attributes:
        device: device name; ``options`` are its extra options (seed included).
        d_in, d_out: layer size.
        W: ``(T + 1, p)`` parameters at every step.
        A: the true transfer matrices ``A(W[k])`` (diagnostics only: the black-box methods
            never see them).
        X: the training batch pushed through the device at ``W[k]``, ``(T + 1, batch, d_in)``
            (what the forward upkeep sees; ``None`` when the trajectory has no batches).
    """

    device: str
    d_in: int
    d_out: int
    W: Tensor
    A: list[Tensor]
    options: dict[str, Any] = field(default_factory=dict)
    X: Tensor | None = None
    _floors: dict[int, np.ndarray] = field(default_factory=dict, repr=False)

    @property
    def steps(self) -> int:
        """Number of optimizer steps ``T``."""
        return len(self.A) - 1

    def make_device(self) -> Device:
        """A fresh device of the same kind and seed (counters at zero, not configured)."""
        return make_device(self.device, self.d_in, self.d_out, dtype=DTYPE, **self.options)

    def floors(self, r: int) -> np.ndarray:
        """Eckart-Young errors ``eps_r`` of ``A[k]`` for every step (cached)."""
        if r not in self._floors:
            self._floors[r] = np.array([eckart_young_error(A, r) for A in self.A])
        return self._floors[r]

    def step_sizes(self) -> np.ndarray:
        """Relative change ``||A_{k+1} - A_k||_F / ||A_k||_F`` of every step."""
        return np.array([float((a1 - a0).norm() / a0.norm()) for a0, a1 in zip(self.A[:-1], self.A[1:])])


def _low_rank_plus_noise(d_out: int, d_in: int, rank: int, decay: float, noise: float,
                         g: torch.Generator) -> Tensor:
    U = torch.linalg.qr(torch.randn(d_out, rank, generator=g, dtype=DTYPE)).Q
    V = torch.linalg.qr(torch.randn(d_in, rank, generator=g, dtype=DTYPE)).Q
    M = U @ torch.diag(decay ** torch.arange(rank, dtype=DTYPE)) @ V.mT
    N = torch.randn(d_out, d_in, generator=g, dtype=DTYPE)
    return M + noise * float(M.norm()) / float(N.norm()) * N


def regression_trajectory(device: str = "ideal", d_in: int = 128, d_out: int = 128, rank: int = 8,
                          steps: int = 150, lr: float | None = None, batch: int = 32, angle: float = 0.3,
                          decay: float = 0.7, noise: float = 0.05, seed: int = 0) -> Trajectory:
    """A training-like trajectory: SGD on a least-squares task that moves the device to a nearby map.

    The device starts at a matrix ``A_0`` of effective rank ``rank`` (singular values
    ``decay**k`` plus a full-rank part of relative size ``noise``), as after pre-training. It is
    trained by SGD on batches ``X`` (``batch x d_in``, Gaussian) to reproduce ``y = T x`` with a
    target ``T = exp(angle K_U) A_0 exp(angle K_V)^T`` whose singular vectors are rotated by about
    ``angle`` radians (``K`` random skew-symmetric): fine-tuning to a related task, so the matrix
    stays close to rank ``rank`` while its subspaces turn. ``angle`` of order 1 moves it to an
    unrelated map through matrices of higher rank. The gradient is taken through the simulator
    (oracle): this only *generates* the path; the surrogate methods see queries only.

    Supported devices: ``'ideal'`` (``w = A``) and ``'slm'`` (``w = arccos(sqrt(d_in) A)``).
    The default learning rate moves the matrix by about 0.5 % per step (``2e-3`` for the ideal
    device, ``4e-3 d_in`` for the SLM, whose phases act on ``A`` through ``sin(phi) / sqrt(d_in)``).
    """
    if device not in ("ideal", "slm"):
        raise ValueError(f"regression_trajectory supports device 'ideal' or 'slm', got {device!r}")
    lr = (2e-3 if device == "ideal" else 4e-3 * d_in) if lr is None else float(lr)
    g = _generator(seed)
    dev = make_device(device, d_in, d_out, seed=seed, dtype=DTYPE)
    A0 = _low_rank_plus_noise(d_out, d_in, rank, decay, noise, g)
    QU = torch.linalg.matrix_exp(angle * _skew(d_out, g))
    QV = torch.linalg.matrix_exp(angle * _skew(d_in, g))
    T = QU @ A0 @ QV.mT
    scale = 0.8 / math.sqrt(d_in) / float(torch.maximum(A0.abs().max(), T.abs().max()))
    A0, T = A0 * scale, T * scale  # entries inside the SLM's range [-1, 1] / sqrt(d_in)
    w = A0.reshape(-1).clone() if device == "ideal" else torch.arccos(A0 * math.sqrt(d_in)).reshape(-1)
    W, batches = [w.clone()], []
    for _ in range(steps):
        X = torch.randn(batch, d_in, generator=g, dtype=DTYPE)
        batches.append(X)
        wr = w.clone().requires_grad_(True)
        loss = (X @ (dev.transfer_matrix(wr) - T).mT).square().sum(1).mean()
        (grad,) = torch.autograd.grad(loss, wr)
        w = (w - lr * grad).detach()
        W.append(w.clone())
    Ws = torch.stack(W)
    batches.append(torch.randn(batch, d_in, generator=g, dtype=DTYPE))  # the batch at the last W
    with torch.no_grad():
        A = [dev.transfer_matrix(wk).clone() for wk in Ws]
    return Trajectory(device, d_in, d_out, Ws, A, options={"seed": seed}, X=torch.stack(batches))


@dataclass
class TrackResult:
    """Tracking ratio of one method along a :class:`Trajectory`, and what it cost.

    ``ratio[k]`` is ``||A_k - U S V^T||_F / eps_r(A_k)`` after step ``k`` (``k = 1..T``);
    ``queries`` and ``reconfigurations`` count the surrogate upkeep only (not the initial fit,
    not the forward pass or the zero-order estimate that training also needs).
    """

    label: str
    ratio: np.ndarray
    queries: int
    reconfigurations: int
    fit_queries: int
    steps: int

    @property
    def queries_per_step(self) -> float:
        return self.queries / self.steps

    @property
    def reconfigurations_per_step(self) -> float:
        return self.reconfigurations / self.steps


def track(traj: Trajectory, method: str = "surrogate", *, rank: int = 8, sketch: int = 16,
          sketch_kind: str = "gaussian", upkeep: str = "ksl", rebuild_every: int | None = None, seed: int = 0,
          label: str | None = None) -> TrackResult:
    """Follow a trajectory with one surrogate method and measure its tracking ratio at every step.

    Methods:

    * ``'explicit'`` -- :func:`hybridlab.surrogate.ksl_step` with the true increments ``dA``
      (needs the matrices: an oracle, zero queries);
    * ``'surrogate'`` (implicit KSL, optionally ``upkeep``/``sketch_kind``/``rebuild_every``),
      ``'static'`` and ``'rebuild'`` -- a :class:`~hybridlab.layer.BlackBoxLinear` on a fresh device
      whose parameters are set to ``W[k]`` step by step (:meth:`~hybridlab.layer.BlackBoxLinear.sync`
      performs the update from queries). With ``upkeep='forward'`` the layer then reads the
      trajectory's batch ``X[k]`` as a training forward pass would (those queries are the forward
      pass's, not the upkeep's, and are not counted).

    Before every update the device is moved to a perturbed ``W[k-1]``, where the zero-order
    sampler of a real training step leaves it (chapter 3), so reconfigurations are counted as in
    training.
    """
    T, r = traj.steps, rank
    floors = traj.floors(r)
    ratios = np.zeros(T)
    if method == "explicit":
        U, S, V = truncated_svd(traj.A[0], r)
        for k in range(1, T + 1):
            U, S, V = ksl_step(U, S, V, traj.A[k] - traj.A[k - 1])
            ratios[k - 1] = surrogate_error(traj.A[k], U, S, V) * float(traj.A[k].norm()) / floors[k]
        return TrackResult(label or "explicit KSL (oracle)", ratios, 0, 0, 0, T)

    dev = traj.make_device()
    layer = BlackBoxLinear(traj.d_in, traj.d_out, dev, method=method, rank=r, sketch=sketch,
                           sketch_kind=sketch_kind, upkeep=upkeep, rebuild_every=rebuild_every, seed=seed,
                           dtype=DTYPE)
    g = _generator(seed + 12345)
    with torch.no_grad():
        layer.w.copy_(traj.W[0])
    layer.sync()
    fit_queries = dev.queries
    queries = reconfigs = 0
    for k in range(1, T + 1):
        dev.configure(traj.W[k - 1] + 1e-3 * torch.randn(dev.p, generator=g, dtype=DTYPE))  # ZO sampler
        c0 = _counts(dev)
        with torch.no_grad():
            layer.w.copy_(traj.W[k])
        layer.sync()
        c1 = _counts(dev)
        queries += c1[0] - c0[0]
        reconfigs += c1[1] - c0[1]
        if layer.surrogate.upkeep == "forward":
            if traj.X is None:
                raise ValueError("the forward upkeep needs the trajectory's batches (Trajectory.X)")
            with torch.no_grad():
                layer.train()(traj.X[k])
        ratios[k - 1] = surrogate_error(traj.A[k], layer.U, layer.S, layer.V) * float(traj.A[k].norm()) / floors[k]
    if label is None:
        label = {"surrogate": "implicit KSL" if upkeep == "ksl" else f"{upkeep} upkeep", "static": "static",
                 "rebuild": f"rebuild every {rebuild_every}"}[method]
    return TrackResult(label, ratios, queries, reconfigs, fit_queries, T)


def matched_rebuild_period(d_in: int, rank: int, sketch: int) -> int:
    """Rebuild period ``k`` whose average cost ``d_in / k`` matches implicit KSL's ``2r + 2s`` queries.

    ``max(1, round(d_in / (2r + 2s)))``: 1 means a full re-read every step is already cheaper
    (the cross-over ``2r + 2s >= d_in``).
    """
    return max(1, round(d_in / (2 * rank + 2 * sketch)))


def tracking_sweep(traj: Trajectory, rank: int, sketches: Sequence[int],
                   variants: Sequence[str] = ("gaussian", "orthogonal", "cached"), seed: int = 0,
                   progress: bool = False) -> dict[int, dict[str, TrackResult]]:
    """Implicit KSL for each sketch size ``s`` (and variant), plus periodic rebuild at the same budget.

    Variants: a sketch kind (``'gaussian'``, ``'rademacher'``, ``'orthogonal'``) or ``'cached'``
    (Gaussian sketch, cached queries, hence a fixed sketch). For each ``s`` the rebuild period is
    :func:`matched_rebuild_period`.

    Returns:
        ``{s: {label: TrackResult}}``.
    """
    jobs = [(s, v) for s in sketches for v in (*variants, "rebuild")]
    out: dict[int, dict[str, TrackResult]] = {int(s): {} for s in sketches}
    for s, v in _progress(jobs, len(jobs), progress, "tracking"):
        if v == "rebuild":
            k = matched_rebuild_period(traj.d_in, rank, s)
            res = track(traj, "rebuild", rank=rank, rebuild_every=k, seed=seed,
                        label=f"periodic rebuild (every {k}, same queries)")
        elif v == "cached":
            res = track(traj, "surrogate", rank=rank, sketch=s, upkeep="cached", seed=seed,
                        label="implicit KSL, cached (fixed sketch)")
        else:
            res = track(traj, "surrogate", rank=rank, sketch=s, sketch_kind=v, seed=seed,
                        label=f"implicit KSL ({v} sketch)")
        out[int(s)][res.label] = res
    return out


def tracking_table(device: str = "ideal", d_in: int = 128, d_out: int = 128, rank: int = 8, sketch: int = 16,
                   steps: int = 150, lr: float | None = None, batch: int = 32, angle: float = 0.3,
                   seed: int = 0) -> list[dict[str, Any]]:
    """The chapter-4 table: every surrogate method on one trajectory, with its cost per step.

    Trajectory: :func:`regression_trajectory`. Methods: explicit KSL (oracle), implicit KSL
    (reference: fresh Gaussian sketch, no cache), implicit KSL with cached queries (fixed
    sketch), implicit KSL with an orthogonal sketch, static surrogate, periodic rebuild at the
    same query budget (:func:`matched_rebuild_period`), and a full re-read every step.

    Returns:
        Rows ``{"method", "queries_per_step", "reconfigurations_per_step", "mean_ratio",
        "final_ratio"}``.
    """
    traj = regression_trajectory(device, d_in, d_out, rank=rank, steps=steps, lr=lr, batch=batch, angle=angle,
                                 seed=seed)
    k = matched_rebuild_period(d_in, rank, sketch)
    runs = [
        track(traj, "explicit", rank=rank),
        track(traj, "surrogate", rank=rank, sketch=sketch, seed=seed, label="implicit KSL (reference)"),
        track(traj, "surrogate", rank=rank, sketch=sketch, upkeep="cached", seed=seed,
              label="implicit KSL, cached queries (fixed sketch)"),
        track(traj, "surrogate", rank=rank, sketch=sketch, sketch_kind="orthogonal", seed=seed,
              label="implicit KSL, orthogonal sketch"),
        track(traj, "static", rank=rank, seed=seed, label="static surrogate"),
        track(traj, "rebuild", rank=rank, rebuild_every=k, seed=seed, label=f"periodic rebuild every {k}"),
        track(traj, "rebuild", rank=rank, rebuild_every=1, seed=seed, label="full re-read every step"),
    ]
    return [{"method": res.label, "queries_per_step": res.queries_per_step,
             "reconfigurations_per_step": res.reconfigurations_per_step,
             "mean_ratio": float(np.mean(res.ratio)), "final_ratio": float(res.ratio[-1])} for res in runs]
