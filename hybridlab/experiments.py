"""The computations behind the figures and tables of chapters 1-8 of the book.

Each function here runs one experiment a chapter shows and returns plain numbers (numpy arrays,
lists of dicts, a :class:`Grid`); :mod:`hybridlab.plots` draws them. The algorithms themselves
live in :mod:`hybridlab.lowrank`, :mod:`hybridlab.surrogate`, :mod:`hybridlab.zo`,
:mod:`hybridlab.layer` and :mod:`hybridlab.devices`: this module only *calls* them, so what the
book measures is exactly what the package does. Two deliberate exceptions are comparison
baselines the package does not contain: :func:`naive_dlra_step` (the naive factor update that
the projector-splitting integrator improves on) and the ``|A x|^2`` intensity read-out of
:func:`intensity_query_at` (a device that is *not* linear in ``x``).

Everything is seeded (same arguments, same numbers) and runs in float64 unless said otherwise.

Chapter by chapter:

* 1 -- :func:`sample_image`, :func:`train_digits_mlp`, :func:`device_matrix`,
  :func:`rank_errors`, :func:`rank_approximations`, :func:`query_fits`;
* 2 -- :func:`mrr_response`, :func:`entry_samples`, :func:`nonideality_effect`,
  :func:`step_cost`;
* 3 -- :func:`oracle_gradient`, :func:`intensity_query_at`, :func:`cosine`,
  :func:`gaussian_smoothing_1d`, :func:`scalar_query_at`, :func:`finite_difference_errors`,
  :func:`zo_cosine_grid`, :func:`compressed_batch_check`, :func:`upstream_error_check`;
* 4 -- :func:`rank_r_path`, :func:`naive_dlra_step`, :func:`integrator_errors`,
  :func:`small_singular_value_study`, :func:`sketch_error`, :func:`accumulated_sketch_error`,
  :func:`regression_trajectory`,
  :func:`track`, :func:`tracking_sweep`, :func:`tracking_table`;
* 6-8 -- :func:`compare_devices` (every training run is one call of :func:`hybridlab.cli.run`),
  :func:`comparison_rows`, :func:`check_targets`, :func:`settings_table`,
  :func:`surrogate_update_cost`, :func:`measured_update_cost`, :func:`rerun_command`.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from .devices import Device, make_device
from .layer import BlackBoxLinear
from .lowrank import LowRank, eckart_young_error, fit_identity, fit_randomized, truncated_svd
from .surrogate import ksl_step, sketch_matrix, sketched_transpose, surrogate_error, tracking_ratio
from .zo import zo_gradient

__all__ = [
    "Grid",
    # chapter 1
    "sample_image",
    "train_digits_mlp",
    "device_matrix",
    "rank_errors",
    "rank_approximations",
    "query_fits",
    # chapter 2
    "mrr_response",
    "entry_samples",
    "nonideality_effect",
    "step_cost",
    # chapter 3
    "oracle_gradient",
    "intensity_query_at",
    "cosine",
    "gaussian_smoothing_1d",
    "scalar_query_at",
    "finite_difference_errors",
    "zo_cosine_grid",
    "compressed_batch_check",
    "upstream_error_check",
    # chapter 4
    "rank_r_path",
    "naive_dlra_step",
    "integrator_errors",
    "small_singular_value_study",
    "sketch_error",
    "accumulated_sketch_error",
    "Trajectory",
    "regression_trajectory",
    "TrackResult",
    "track",
    "matched_rebuild_period",
    "tracking_sweep",
    "tracking_table",
    # chapters 6-8
    "CHAPTER_DEVICES",
    "CHAPTER_METHODS",
    "TARGETS",
    "compare_devices",
    "comparison_rows",
    "check_targets",
    "settings_table",
    "surrogate_update_cost",
    "measured_update_cost",
    "rerun_command",
]

DTYPE = torch.float64


# =============================================================================================
# a small container for results on a grid
# =============================================================================================
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


# =============================================================================================
# chapter 1: rank-r approximation
# =============================================================================================
def sample_image(name: str = "china.jpg", size: tuple[int, int] = (128, 192)) -> Tensor:
    """A photograph bundled with scikit-learn (offline), as a grey-scale matrix in ``[0, 1]``.

    Args:
        name: ``'china.jpg'`` or ``'flower.jpg'`` (:func:`sklearn.datasets.load_sample_image`).
        size: ``(rows, columns)`` after resizing.

    Returns:
        float64 tensor of shape ``size``.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_image

    rows, cols = size
    img = Image.fromarray(load_sample_image(name)).convert("L").resize((cols, rows), Image.LANCZOS)
    return torch.tensor(np.asarray(img, dtype=np.float64) / 255.0)


def train_digits_mlp(hidden: int = 128, epochs: int = 20, seed: int = 0) -> dict[str, Any]:
    """Train a one-hidden-layer MLP on scikit-learn's 8x8 digits; return its first weight matrix.

    Uses :func:`hybridlab.data.load_digits_dataset` and :func:`hybridlab.train.train_classifier`.

    Returns:
        ``{"weight": (hidden, 64) trained, "init": (hidden, 64) at initialisation,
        "accuracy": test accuracy}`` (float64 tensors).
    """
    from .data import load_digits_dataset
    from .train import train_classifier

    data = load_digits_dataset(seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    init = model[1].weight.detach().clone()
    hist = train_classifier(model, data.X_train, data.y_train, data.X_test, data.y_test, epochs=epochs,
                            batch_size=64, lr=3e-3, seed=seed, progress=False)
    return {"weight": model[1].weight.detach().to(DTYPE).clone(), "init": init.to(DTYPE), "accuracy": hist.final}


def device_matrix(name: str, d_in: int, d_out: int, seed: int = 0, **options: Any) -> Tensor:
    """Transfer matrix ``A(w)`` of a simulated device at its seeded initial parameters (float64)."""
    return _configured(name, d_in, d_out, seed, **options).true_matrix().clone()


def rank_errors(A: Tensor, ranks: Sequence[int]) -> np.ndarray:
    """Relative Eckart-Young error ``eps_r / ||A||_F`` for each rank (:func:`eckart_young_error`)."""
    norm = float(torch.linalg.matrix_norm(A))
    return np.array([eckart_young_error(A, int(r)) / norm for r in ranks])


def rank_approximations(A: Tensor, ranks: Sequence[int]) -> dict[int, np.ndarray]:
    """Best rank-r approximations ``U S V^T`` (:func:`truncated_svd`) as numpy arrays, by rank."""
    return {int(r): truncated_svd(A, int(r)).matrix().numpy() for r in ranks}


def query_fits(
    A: Tensor,
    r: int,
    sketches: Sequence[int],
    kinds: Sequence[str] = ("gaussian", "orthogonal"),
    oversample: int = 10,
    seeds: Sequence[int] = (0, 1, 2),
) -> list[dict[str, Any]]:
    """Fit a rank-r surrogate of ``A`` from forward products only; count the queries.

    ``A`` is put on an ideal device (so the device's counters count the queries), then fitted

    * with :func:`hybridlab.lowrank.fit_identity` (``d_in`` queries), and
    * with :func:`hybridlab.lowrank.fit_randomized` for each sketch size ``s`` and sketch kind
      (``r + oversample + s`` queries), over several seeds.

    Returns:
        One row per fit: ``{"method", "kind", "sketch", "queries", "ratio", "ratio_std"}`` where
        ``ratio`` is the tracking ratio ``||A - U S V^T||_F / eps_r`` (mean over seeds).
    """
    d_out, d_in = A.shape
    dev = _configured("ideal", d_in, d_out, 0, w=A.reshape(-1).to(DTYPE))
    A = dev.true_matrix()
    q0 = dev.queries
    fit = fit_identity(dev.query, d_in, r, dtype=DTYPE)
    rows = [{"method": "identity", "kind": "identity", "sketch": 0, "queries": dev.queries - q0,
             "ratio": tracking_ratio(A, *fit), "ratio_std": 0.0}]
    for kind in kinds:
        for s in sketches:
            ratios, queries = [], 0
            for seed in seeds:
                q0 = dev.queries
                fit = fit_randomized(dev.query, d_in, r, oversample=oversample, sketch=int(s), kind=kind,
                                     generator=_generator(seed), dtype=DTYPE)
                queries = dev.queries - q0
                ratios.append(tracking_ratio(A, *fit))
            rows.append({"method": "randomized", "kind": kind, "sketch": int(s), "queries": queries,
                         "ratio": float(np.mean(ratios)), "ratio_std": float(np.std(ratios))})
    return rows


# =============================================================================================
# chapter 2: devices
# =============================================================================================
def mrr_response(phi: Tensor, a_values: Sequence[float], r: float = 0.9) -> dict[float, dict[str, np.ndarray]]:
    """Through-port transmission ``T(phi)`` and weight ``2T - 1`` of one ring, for several losses ``a``.

    Calls :meth:`hybridlab.devices.MRR.transmission` and :meth:`~hybridlab.devices.MRR.weight_range`.

    Returns:
        ``{a: {"T": T(phi), "weight": 2 T - 1, "range": (w_min, w_max)}}``.
    """
    from .devices import MRR

    out = {}
    for a in a_values:
        ring = MRR(1, 1, a=float(a), r=r, dtype=DTYPE)
        T = ring.transmission(phi.to(DTYPE)).numpy()
        out[float(a)] = {"T": T, "weight": 2 * T - 1, "range": ring.weight_range()}
    return out


def entry_samples(name: str, d_in: int = 16, d_out: int = 16, draws: int = 20, seed: int = 0,
                  uniform_phases: bool = False) -> np.ndarray:
    """Matrix entries of a device at ``draws`` random parameter vectors (reachable weights).

    With ``uniform_phases`` every parameter is drawn uniformly in ``[0, 2 pi)`` (what the physics
    can reach), otherwise from the device's :meth:`init_params` (its initialisation).
    """
    dev = make_device(name, d_in, d_out, seed=seed, dtype=DTYPE)
    g = _generator(seed)
    out = []
    for _ in range(draws):
        w = 2 * math.pi * torch.rand(dev.p, generator=g, dtype=DTYPE) if uniform_phases else dev.init_params(g)
        out.append(dev.transfer_matrix(w).reshape(-1))
    return torch.cat(out).numpy()


def nonideality_effect(name: str, option: str, values: Sequence[float], d_in: int = 16, d_out: int = 16,
                       seed: int = 0, drift_steps: int = 10, n_inputs: int = 64) -> np.ndarray:
    """Relative change of a device's output caused by one non-ideality, for each strength.

    The device is built with ``option=value`` (all else ideal) and set to the same parameters
    ``w`` as the ideal device. The error is ``||Y - Y_ideal||_F / ||Y_ideal||_F`` for random inputs:

    * ``noise`` (read-out) and ``phase_noise`` (MZI): outputs of :meth:`Device.query`;
    * ``drift``: the matrix after ``drift_steps`` calls of :meth:`Device.advance`;
    * everything else (``bits``, ``crosstalk``, ``fab_error``, ``loss_db``): the transfer matrix.
    """
    ideal = make_device(name, d_in, d_out, seed=seed, dtype=DTYPE)
    w = ideal.init_params()
    X = torch.randn(n_inputs, d_in, generator=_generator(seed + 1), dtype=DTYPE)
    Y0 = X @ ideal.transfer_matrix(w).mT
    errors = []
    for v in values:
        v = int(v) if option == "bits" else float(v)
        dev = _configured(name, d_in, d_out, seed, w=w, **{option: v})
        if option in ("noise", "phase_noise"):
            Y = dev.query(X)
        else:
            if option == "drift":
                dev.advance(drift_steps)
            Y = X @ dev.true_matrix().mT
        errors.append(float(torch.linalg.matrix_norm(Y - Y0) / torch.linalg.matrix_norm(Y0)))
    return np.array(errors)


def step_cost(method: str = "surrogate", device: str = "slm", d_in: int = 32, d_out: int = 32, batch: int = 16,
              *, seed: int = 0, **layer_options: Any) -> dict[str, tuple[int, int]]:
    """Queries and reconfigurations of one training step of a :class:`~hybridlab.layer.BlackBoxLinear`.

    Two SGD steps are run on random data (the input requires a gradient, as if digital layers
    came before the device); the counters are read around each phase of the *second* step.

    Returns:
        ``{"initial fit": (q, c), "surrogate update": (q, c), "forward": (q, c),
        "backward": (q, c), "step total": (q, c)}`` with ``q`` queries and ``c``
        reconfigurations.
    """
    layer = BlackBoxLinear(d_in, d_out, device, method=method, seed=seed, dtype=DTYPE, **layer_options)
    dev = layer.physical
    g = _generator(seed)
    x = torch.randn(batch, d_in, generator=g, dtype=DTYPE).requires_grad_()
    target = torch.randn(batch, d_out, generator=g, dtype=DTYPE)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-2)
    phases: dict[str, tuple[int, int]] = {}

    def delta(c0: tuple[int, int]) -> tuple[int, int]:
        c1 = _counts(dev)
        return c1[0] - c0[0], c1[1] - c0[1]

    for k in range(2):
        opt.zero_grad()
        c = _counts(dev)
        layer.sync()
        phases["initial fit" if k == 0 else "surrogate update"] = delta(c)
        c = _counts(dev)
        y = layer(x)
        fwd = delta(c)
        c = _counts(dev)
        (y - target).pow(2).mean().backward()
        bwd = delta(c)
        opt.step()
        if k == 1:
            phases["forward"], phases["backward"] = fwd, bwd
            phases["step total"] = (phases["surrogate update"][0] + fwd[0] + bwd[0],
                                    phases["surrogate update"][1] + fwd[1] + bwd[1])
    return phases


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
                Z = sketch_matrix(int(s), d_in, kind, generator=g, dtype=DTYPE)
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
                Z = sketch_matrix(s, d_in, kind, generator=sg, dtype=DTYPE)
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
    """

    device: str
    d_in: int
    d_out: int
    W: Tensor
    A: list[Tensor]
    options: dict[str, Any] = field(default_factory=dict)
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
    W = [w.clone()]
    for _ in range(steps):
        X = torch.randn(batch, d_in, generator=g, dtype=DTYPE)
        wr = w.clone().requires_grad_(True)
        loss = (X @ (dev.transfer_matrix(wr) - T).mT).square().sum(1).mean()
        (grad,) = torch.autograd.grad(loss, wr)
        w = (w - lr * grad).detach()
        W.append(w.clone())
    Ws = torch.stack(W)
    with torch.no_grad():
        A = [dev.transfer_matrix(wk).clone() for wk in Ws]
    return Trajectory(device, d_in, d_out, Ws, A, options={"seed": seed})


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
          sketch_kind: str = "gaussian", cache: bool = False, rebuild_every: int | None = None, seed: int = 0,
          label: str | None = None) -> TrackResult:
    """Follow a trajectory with one surrogate method and measure its tracking ratio at every step.

    Methods:

    * ``'explicit'`` -- :func:`hybridlab.surrogate.ksl_step` with the true increments ``dA``
      (needs the matrices: an oracle, zero queries);
    * ``'surrogate'`` (implicit KSL, optionally ``cache``/``sketch_kind``/``rebuild_every``),
      ``'static'`` and ``'rebuild'`` -- a :class:`~hybridlab.layer.BlackBoxLinear` on a fresh device
      whose parameters are set to ``W[k]`` step by step (:meth:`~hybridlab.layer.BlackBoxLinear.sync`
      performs the update from queries).

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
                           sketch_kind=sketch_kind, cache=cache, rebuild_every=rebuild_every, seed=seed,
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
        ratios[k - 1] = surrogate_error(traj.A[k], layer.U, layer.S, layer.V) * float(traj.A[k].norm()) / floors[k]
    if label is None:
        label = {"surrogate": "implicit KSL", "static": "static", "rebuild": f"rebuild every {rebuild_every}"}[method]
    return TrackResult(label, ratios, queries, reconfigs, fit_queries, T)


def matched_rebuild_period(d_in: int, rank: int, sketch: int) -> int:
    """Rebuild period ``k`` whose average cost ``d_in / k`` matches implicit KSL's ``2r + 2s`` queries.

    ``max(1, round(d_in / (2r + 2s)))``: 1 means a full re-read every step is already cheaper
    (the cross-over ``2r + 2s >= d_in``).
    """
    return max(1, round(d_in / (2 * rank + 2 * sketch)))


def tracking_sweep(traj: Trajectory, rank: int, sketches: Sequence[int],
                   variants: Sequence[str] = ("gaussian", "orthogonal", "cache"), seed: int = 0,
                   progress: bool = False) -> dict[int, dict[str, TrackResult]]:
    """Implicit KSL for each sketch size ``s`` (and variant), plus periodic rebuild at the same budget.

    Variants: a sketch kind (``'gaussian'``, ``'rademacher'``, ``'orthogonal'``) or ``'cache'``
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
        elif v == "cache":
            res = track(traj, "surrogate", rank=rank, sketch=s, cache=True, seed=seed,
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
        track(traj, "surrogate", rank=rank, sketch=sketch, cache=True, seed=seed,
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


# =============================================================================================
# chapters 6-8: one task, every device kind, against the digital network
# =============================================================================================
# Every training run goes through hybridlab.cli.run with the committed DEFAULTS: the chapters and
# the command line compute the same numbers.

#: the device kinds chapters 6-8 train, in table order (``ideal`` last: the sanity row)
CHAPTER_DEVICES: tuple[str, ...] = ("slm", "mrr", "mzi", "ideal")
#: the method and the competitor it must beat
CHAPTER_METHODS: tuple[str, ...] = ("surrogate", "static")
#: Targets of the surrogate method per task: ``("points", m)`` -- mean test accuracy at least
#: ``m`` percentage points below digital; ``("ratio", q)`` -- mean bits per character at most
#: ``q`` times digital.
TARGETS: dict[str, tuple[str, float]] = {"vision": ("points", 1.5), "audio": ("points", 2.0), "text": ("ratio", 1.05)}

#: One line per training setting, for the settings tables of chapters 6-8.
SETTING_MEANINGS: dict[str, str] = {
    "width": "model width = size of the square black-box matrix",
    "channels": "convolution channels",
    "n_layer": "transformer blocks",
    "n_head": "attention heads",
    "block_size": "context length (characters)",
    "epochs": "passes over the training set",
    "steps": "optimizer steps",
    "batch_size": "examples (text: sequences) per step",
    "lr": "learning rate of the digital parameters (AdamW)",
    "lr_device": "learning rate of the device parameters w",
    "anneal": "last fraction of training at lr/10 (both rates)",
    "rank": "surrogate rank r",
    "samples": "zero-order samples M per step",
    "mu": "zero-order finite-difference step",
    "sketch": "sketch size s of the implicit surrogate update",
    "sketch_kind": "distribution of the sketch rows",
    "compressed": "compressed-batch ZO estimate (d_out queries per sample)",
    "gain": "initial device gain relative to the calibrated one",
    "rebuild_every": "full re-read every k steps (None: never)",
    "n_train": "training examples kept, at most (quick runs)",
    "n_test": "test examples kept, at most (quick runs)",
    "n_val": "validation characters scored (quick runs)",
}


def _comparison_plan(devices: Sequence[str], methods: Sequence[str] | Mapping[str, Sequence[str]]
                     ) -> list[tuple[str, str]]:
    """``[(device, method), ...]`` in table order; ``methods`` may be given per device."""
    devices = list(devices)
    if not devices:
        raise ValueError("devices is empty: give at least one device kind")
    if len(set(devices)) != len(devices):
        raise ValueError(f"devices repeat: {devices}")
    if isinstance(methods, Mapping):
        missing, extra = set(devices) - set(methods), set(methods) - set(devices)
        if missing or extra:
            raise ValueError(f"methods given per device must name exactly the devices {devices}; "
                             f"missing {sorted(missing)}, extra {sorted(extra)}")
        per_device = {d: list(methods[d]) for d in devices}
    else:
        if isinstance(methods, str):
            raise ValueError(f"methods must be a sequence of names, got the string {methods!r}")
        per_device = {d: list(methods) for d in devices}
    plan = []
    for d in devices:
        for m in per_device[d]:
            if m == "digital":
                raise ValueError("'digital' is trained once per seed anyway; leave it out of methods")
            if (d, m) in plan:
                raise ValueError(f"method {m!r} repeats for device {d!r}")
            plan.append((d, m))
    if not plan:
        raise ValueError("no (device, method) run to train: give at least one method")
    return plan


def compare_devices(task: str, devices: Sequence[str] = CHAPTER_DEVICES,
                    methods: Sequence[str] | Mapping[str, Sequence[str]] = CHAPTER_METHODS,
                    seeds: Sequence[int] = (0, 1, 2), *, quick: bool = False, data: Any = None,
                    data_dir: str | None = None, data_seed: int = 0, progress: bool = False,
                    workers: int = 1, **run_options: Any) -> list[dict[str, Any]]:
    """Train the digital network and every (device, method) of a task, for every seed.

    Every run is one call of :func:`hybridlab.cli.run` (the committed per-task ``DEFAULTS``, the
    same as ``python -m hybridlab train``); the digital network (a plain ``nn.Linear``) is trained
    once per seed. The data are loaded once (:func:`hybridlab.cli.load_data`) unless ``data`` is
    given, and shared by all runs.

    Args:
        task: ``"vision"``, ``"audio"`` or ``"text"``.
        devices: device kinds, in table order.
        methods: methods trained on every device, or ``{device: methods}`` to train some devices
            with fewer methods (every device must be named). ``"digital"`` is not a method here.
        seeds: training seeds; each seed trains digital once and every (device, method) once.
        quick: tiny runs (:data:`hybridlab.cli.QUICK`).
        data: an already loaded dataset of the task (default: load it).
        data_dir: the real dataset's folder (MNIST, FSDD, a text file), as ``--data-dir``.
        data_seed: seed of the data split and synthesis (fixed across training seeds).
        progress: one tqdm bar over all runs.
        workers: ``1`` trains the runs one after the other in this process (with PyTorch's
            default threads, exactly as ``python -m hybridlab train``). ``n > 1`` trains ``n`` runs
            at a time in fresh worker processes with one PyTorch thread each (on a small CPU this
            gets more runs done per minute than one run on all cores); such a run is repeated
            exactly by ``python -m hybridlab train ... --threads 1``.
        run_options: more keyword arguments of :func:`hybridlab.cli.run` (``device_options``,
            ``layer``, setting overrides such as ``epochs``); they apply to every run.

    Returns:
        The result dictionaries of :func:`hybridlab.cli.run`, seed by seed: digital first, then
        the (device, method) runs in table order.

    Raises:
        ValueError: an unknown task, device or method, no seeds, repeated runs or fewer than one
            worker -- before any training starts.
    """
    from . import cli

    plan = _comparison_plan(devices, methods)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds repeat: {seeds}")
    if int(workers) < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    for device, method in plan:  # validate every name before the first (long) run
        cli.settings(task, device, method, quick=quick)
    if data is None:
        data = cli.load_data(task, data_dir=data_dir, quick=quick, data_seed=data_seed)
    jobs = [job for seed in seeds for job in [(seed, "ideal", "digital"), *((seed, d, m) for d, m in plan)]]
    options = {"data_seed": data_seed, "data_dir": data_dir, "quick": quick, **run_options}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"{task} runs")

    def done(seed: int, device: str, method: str) -> None:
        if bar is not None:
            bar.set_postfix_str(f"seed {seed} {method}" + ("" if method == "digital" else f" {device}"))
            bar.update(1)

    try:
        if int(workers) == 1:
            results = []
            for seed, device, method in jobs:
                results.append(cli.run(task, device, method, seed=seed, data=data, **options))
                done(seed, device, method)
            return results
        return _run_in_workers(task, jobs, data, options, int(workers), done)
    finally:
        if bar is not None:
            bar.close()


_WORKER_DATA: Any = None


def _worker_init(data: Any) -> None:
    global _WORKER_DATA
    torch.set_num_threads(1)
    _WORKER_DATA = data


def _worker_run(task: str, device: str, method: str, seed: int, options: dict[str, Any]) -> dict[str, Any]:
    from . import cli

    return cli.run(task, device, method, seed=seed, data=_WORKER_DATA, **options)


def _run_in_workers(task: str, jobs: list[tuple[int, str, str]], data: Any, options: dict[str, Any], workers: int,
                    done: Callable[[int, str, str], None]) -> list[dict[str, Any]]:
    """The jobs of :func:`compare_devices` in ``workers`` spawned processes; results in job order."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # the short digital runs last, so that the workers finish at about the same time
    order = sorted(range(len(jobs)), key=lambda i: jobs[i][2] == "digital")
    results: list[Any] = [None] * len(jobs)
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch has started threads
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_worker_init, initargs=(data,)) as pool:
        futures = {pool.submit(_worker_run, task, jobs[i][1], jobs[i][2], jobs[i][0], options): i for i in order}
        try:
            for future in as_completed(futures):
                i = futures[future]
                results[i] = future.result()
                done(*jobs[i])
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return results


def _run_key(result: dict[str, Any]) -> tuple[str, str | None]:
    return ("digital", None) if result["method"] == "digital" else (result["method"], result["device"])


def metric_scale(metric: str) -> float:
    """Factor from a result's metric to the number the tables show (accuracy in %, bits as is)."""
    return 100.0 if metric == "accuracy" else 1.0


def comparison_rows(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per run kind (digital, then each (method, device)) with mean and spread over seeds.

    Args:
        results: result dictionaries of :func:`hybridlab.cli.run` (e.g. from
            :func:`compare_devices`), all of one task.

    Returns:
        Rows ``{"run", "method", "device", "seeds", "values", "mean", "std", "gap", "ratio",
        "queries", "reconfigurations", "steps", "seconds"}``, digital first, then in order of first
        appearance. ``values`` are the metrics of the seeds (in the order given; accuracy in %,
        bits per character as is), ``mean`` and ``std`` their ``np.mean`` and ``np.std`` (the
        population formula, ``ddof=0``). ``gap`` is ``mean`` minus digital's mean, ``ratio`` is
        ``mean`` over digital's mean (both ``None`` without a digital run). ``queries``,
        ``reconfigurations`` (device totals of one run: training and evaluation), ``steps``
        (optimizer steps of one run) and ``seconds`` (wall time of one run) are means over the
        seeds; ``device`` is ``"—"`` for digital.
    """
    if not results:
        raise ValueError("no results to summarise")
    tasks = {r["task"] for r in results}
    if len(tasks) != 1:
        raise ValueError(f"results of several tasks {sorted(tasks)}: summarise one task at a time")
    metric = results[0]["metric"]
    scale = metric_scale(metric)
    groups: dict[tuple[str, str | None], list[dict[str, Any]]] = {}
    for key in [("digital", None)] + [_run_key(r) for r in results]:
        groups.setdefault(key, [])
    for r in results:
        groups[_run_key(r)].append(r)
    if not groups[("digital", None)]:
        del groups[("digital", None)]
    base = None
    if ("digital", None) in groups:
        base = float(np.mean([r[metric] * scale for r in groups[("digital", None)]]))
    rows = []
    for (method, device), runs in groups.items():
        values = np.array([r[metric] * scale for r in runs], dtype=float)
        mean = float(values.mean())
        rows.append({
            "run": method if device is None else f"{method} {device}",
            "method": method, "device": "—" if device is None else device,
            "seeds": len(runs), "values": values.tolist(),
            "mean": mean, "std": float(values.std()),
            "gap": mean - base if base is not None else None,
            "ratio": mean / base if base else None,
            "queries": float(np.mean([r["queries"] for r in runs])),
            "reconfigurations": float(np.mean([r["reconfigurations"] for r in runs])),
            "steps": float(np.mean([r["history"]["steps"][-1] if r["history"]["steps"] else 0 for r in runs])),
            "seconds": float(np.mean([r["seconds"] for r in runs])),
        })  # fmt: skip
    return rows


def check_targets(rows: Sequence[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """The surrogate rows of :func:`comparison_rows` against :data:`TARGETS` and the static rows.

    Returns:
        One dict per device with a surrogate row: ``{"device", "surrogate", "static", "digital",
        "threshold", "meets_target", "beats_static"}`` (means in table units; ``static`` and
        ``beats_static`` are ``None`` when that device has no static row). For accuracy
        the threshold is ``digital - margin`` and the surrogate must reach it; for bits per
        character it is ``digital * q`` and the surrogate must stay at or below it. "Beats" means
        strictly better on the mean (higher accuracy, fewer bits).
    """
    if task not in TARGETS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TARGETS)}")
    kind, margin = TARGETS[task]
    by = {(r["method"], r["device"]): r for r in rows}
    if ("digital", "—") not in by:
        raise ValueError("the rows have no digital row to compare with")
    digital = by[("digital", "—")]["mean"]
    threshold = digital - margin if kind == "points" else digital * margin
    out = []
    for r in rows:
        if r["method"] != "surrogate":
            continue
        static = by.get(("static", r["device"]))
        higher_is_better = kind == "points"
        meets = r["mean"] >= threshold if higher_is_better else r["mean"] <= threshold
        beats = None
        if static is not None:
            beats = r["mean"] > static["mean"] if higher_is_better else r["mean"] < static["mean"]
        out.append({"device": r["device"], "surrogate": r["mean"],
                    "static": static["mean"] if static is not None else None, "digital": digital,
                    "threshold": threshold, "meets_target": bool(meets), "beats_static": beats})
    return out


def settings_table(task: str, devices: Sequence[str] = CHAPTER_DEVICES, method: str = "surrogate", *,
                   quick: bool = False) -> list[dict[str, Any]]:
    """The resolved training settings (:func:`hybridlab.cli.settings`) of a task, one row each.

    A setting that differs between devices (``lr_device``) is written ``"slm 0.07, mrr 0.01, ..."``.

    Returns:
        Rows ``{"setting", "value", "meaning"}`` in the order of :func:`hybridlab.cli.settings`;
        ``value`` is the setting itself (a number, string, bool or ``None``) or, when it differs
        between devices, that string.
    """
    from . import cli

    per_device = {d: cli.settings(task, d, method, quick=quick) for d in devices}
    if not per_device:
        raise ValueError("devices is empty: give at least one device kind")
    first = per_device[devices[0]]
    rows = []
    for key in first:
        values = [per_device[d][key] for d in devices]
        if all(v == values[0] for v in values):
            value = values[0]
        else:
            value = ", ".join(f"{d} {v:g}" if isinstance(v, float) else f"{d} {v}" for d, v in zip(devices, values))
        rows.append({"setting": key, "value": value, "meaning": SETTING_MEANINGS.get(key, "")})
    return rows


def surrogate_update_cost(task: str, data: Any, *, layer: str | None = None, quick: bool = False,
                          **overrides: Any) -> dict[str, Any]:
    """Queries of one implicit surrogate update against one full re-read of the black box.

    The black box is the model's Linear ``layer`` (default
    :data:`hybridlab.models.DEFAULT_BLACK_BOX`); its sizes are read from the model built for
    ``data``, rank and sketch size from :func:`hybridlab.cli.settings` (``overrides`` as there).

    Returns:
        ``{"layer", "d_in", "d_out", "rank", "sketch", "implicit_queries" (2r + 2s),
        "reread_queries" (d_in), "implicit_cheaper" (2r + 2s < d_in), "largest_cheaper_sketch"}``;
        the last is the largest sketch size ``s`` for which the implicit update is still cheaper
        than a re-read at this rank (``< 1``: none is).
    """
    from . import cli
    from .models import DEFAULT_BLACK_BOX, MODEL_DEFAULTS, build_model

    s = cli.settings(task, quick=quick, **overrides)
    name = layer or DEFAULT_BLACK_BOX[task]
    model = build_model(task, data, **{k: s[k] for k in MODEL_DEFAULTS[task]})
    linear = dict(model.named_modules()).get(name)
    if not isinstance(linear, nn.Linear):
        raise ValueError(f"{name!r} is not a Linear of the {task} model")
    r, sk, d_in = int(s["rank"]), int(s["sketch"]), int(linear.in_features)
    implicit = 2 * r + 2 * sk
    return {"layer": name, "d_in": d_in, "d_out": int(linear.out_features), "rank": r, "sketch": sk,
            "implicit_queries": implicit, "reread_queries": d_in, "implicit_cheaper": implicit < d_in,
            "largest_cheaper_sketch": math.ceil(d_in / 2 - r) - 1}


def measured_update_cost(results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """What keeping the surrogate current cost per step, measured on the device counters.

    ``surrogate`` and ``static`` train the same network with the same seed and the same ZO
    estimate; they differ only in the surrogate update. The difference of their totals divided
    by the optimizer steps is the update's cost per step.

    Returns:
        One row per (device, seed) that has both a surrogate and a static run:
        ``{"device", "seed", "steps", "queries_per_step", "reconfigurations_per_step"}``.
    """
    runs = {(r["method"], r["device"], r["seed"]): r for r in results}
    out = []
    for (method, device, seed), sur in runs.items():
        sta = runs.get(("static", device, seed))
        if method != "surrogate" or sta is None:
            continue
        steps = sur["history"]["steps"][-1]
        if steps != sta["history"]["steps"][-1]:
            raise ValueError(f"surrogate and static on {device}, seed {seed}, ran different step counts")
        out.append({"device": device, "seed": seed, "steps": steps,
                    "queries_per_step": (sur["queries"] - sta["queries"]) / steps,
                    "reconfigurations_per_step": (sur["reconfigurations"] - sta["reconfigurations"]) / steps})
    return out


def rerun_command(result: dict[str, Any], out: str = "r.json", threads: bool = False) -> str:
    """The ``python -m hybridlab train ...`` command line that repeats the run of ``result``.

    Built from ``result["args"]`` (what :func:`hybridlab.cli.run` was called with). ``threads``
    adds ``--threads`` with the run's PyTorch thread count (``result["torch_threads"]``): the
    floating-point sums, so the last digits of the result, depend on it.

    Raises:
        ValueError: the run used a device option the command line cannot set (only ``noise``
            and ``bits`` can).
    """
    import shlex

    from .cli import TRAINING_OPTIONS

    args = dict(result["args"])
    parts = ["python", "-m", "hybridlab", "train", "--task", args["task"]]
    if args["method"] != "digital":
        parts += ["--device", args["device"]]
    parts += ["--method", args["method"], "--seed", str(args["seed"])]
    if args.get("data_seed", 0):
        parts += ["--data-seed", str(args["data_seed"])]
    if args.get("data_dir"):
        parts += ["--data-dir", str(args["data_dir"])]
    if args.get("download"):
        parts.append("--download")
    if args.get("quick"):
        parts.append("--quick")
    if args.get("layer"):
        parts += ["--layer", args["layer"]]
    for key in sorted(set(TRAINING_OPTIONS) & set(args)):
        value = args[key]
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if key == "compressed":
            parts.append(flag if value else "--no-compressed")
        else:
            parts += [flag, str(value)]
    options = dict(args.get("device_options") or {})
    unsupported = set(options) - {"noise", "bits"}
    if unsupported:
        raise ValueError(f"device options {sorted(unsupported)} cannot be set on the command line "
                         f"(only noise and bits)")
    for key in ("noise", "bits"):
        if key in options:
            parts += [f"--{key}", str(options[key])]
    if threads:
        parts += ["--threads", str(result["torch_threads"])]
    parts += ["--out", out]
    return " ".join(shlex.quote(p) for p in parts)
