"""Experiments of chapter 5, "Training a hybrid network": the recipe written out, Adam on zero-order
estimates, and what the surrogate and the zero-order estimate measure during real training.

* :func:`recipe_run` -- the training recipe of :func:`hybridlab.recipes.run` for the classification
  tasks, written out step by step (the chapter shows it, and checks that it gives the same numbers);
* :class:`TrainingProbe` -- hooks on a black-box layer that compare, at every training step, what
  the layer uses with what exact backpropagation through the simulator would give: the tracking
  ratio of its surrogate, the cosine of its ``dL/dx`` with ``A^T v``, the cosine of its zero-order
  ``dL/dw`` with the true one. The simulator is read only to *measure*; training never sees it;
* :func:`training_measurements` -- those measurements along real training runs, per device kind
  and method, with the singular values of the accumulated change of the device matrix;
* :func:`change_spectrum` -- how close to low rank a change of the matrix is;
* :func:`adam_on_zo` -- what Adam's per-coordinate scaling does with zero-order estimates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .. import recipes
from ..data.bundle import validation_split
from ..layer import BlackBoxLinear, replace_linear
from ..models import DEFAULT_BLACK_BOX, MODEL_DEFAULTS, build_model
from ..surrogate import tracking_ratio
from ..train import accuracy, device_rates, hardware_budget, train_classifier
from ..zo import second_moment_excess, zo_gradient
from ._common import DTYPE, _configured, _generator
from .zero_order import cosine, oracle_gradient

#: the settings of :data:`hybridlab.recipes.DEFAULTS` that configure the black-box layer
LAYER_SETTINGS: tuple[str, ...] = ("rank", "samples", "mu", "sketch", "sketch_kind", "compressed", "upkeep",
                                   "rebuild_every", "directions", "direction_rank")


# =============================================================================================
# the recipe, written out
# =============================================================================================
def recipe_run(task: str = "vision", device: str = "slm", method: str = "surrogate", *, seed: int = 0,
               data_seed: int = 0, data: Any = None, quick: bool = False,
               device_options: dict[str, Any] | None = None,
               instrument: Callable[[nn.Module, BlackBoxLinear | None], None] | None = None,
               **overrides: Any) -> dict[str, Any]:
    """One training run of :func:`hybridlab.recipes.run` (vision, audio), each step of the recipe in view.

    1. the settings: :func:`hybridlab.recipes.settings` (per-task defaults, ``quick``, ``overrides``; read-out
       noise in ``device_options`` sets the ZO step ``mu``);
    2. the task's network with one Linear replaced by a black box (``digital``: left as it is);
    3. a validation part carved out of the training data (:func:`hybridlab.data.bundle.validation_split`),
       which chooses the state to keep; the test split is not touched;
    4. the device learning rate: ``lr_device``, or ``device_step / sensitivity``
       (:func:`hybridlab.train.device_rates`);
    5. :func:`hybridlab.train.train_classifier`: AdamW with the device parameters in a group of their
       own, the gain calibration, the annealing phase, the best state on validation restored;
    6. the test split read once.

    ``instrument(model, layer)`` is called before training (to attach a :class:`TrainingProbe`). Runs
    on the CPU. Returns ``{"accuracy", "val_accuracy", "queries", "reconfigurations", "history",
    "settings", "lr_device", "model", "layer"}``; with the same arguments :func:`hybridlab.recipes.run`
    (``use_cuda=False``) returns the same numbers.
    """
    if task not in ("vision", "audio"):
        raise ValueError(f"recipe_run writes out the classification recipe (vision, audio), got task {task!r}")
    cfg = recipes.settings(task, device, method, quick=quick, device_options=device_options, **overrides)  # 1
    if data is None:
        data = recipes.load_data(task, quick=quick, data_seed=data_seed)
    model = build_model(task, data, seed=seed, **{k: cfg[k] for k in MODEL_DEFAULTS[task]})   # 2
    layer = None
    if method != "digital":
        options = {k: cfg[k] for k in LAYER_SETTINGS}
        if method in ("static", "rebuild", "frozen"):  # the surrogate method with an upkeep of their own
            options.pop("upkeep")
        layer = replace_linear(model, DEFAULT_BLACK_BOX[task], device, method=method, seed=seed,
                               device_options=device_options or None, **options)
    held, fit = validation_split(data, cfg["val_fraction"], seed=data_seed)                     # 3
    X, y, X_val, y_val = fit
    rates = cfg["lr_device"]                                                                    # 4
    if rates is None and cfg.get("device_step") is not None:
        rates = device_rates(model, X[: cfg["batch_size"]], cfg["device_step"])
    if instrument is not None:
        instrument(model, layer)
    hist = train_classifier(model, X, y, X_val, y_val, epochs=cfg["epochs"], batch_size=cfg["batch_size"],  # 5
                            lr=cfg["lr"], lr_device=rates, anneal=cfg["anneal"], gain_scale=cfg["gain"],
                            select_best=True, seed=seed, progress=False)
    test = accuracy(model, held.X_test, held.y_test)                                           # 6
    return {"accuracy": test, "val_accuracy": hist.best, **hardware_budget(model), "history": hist,
            "settings": cfg, "lr_device": rates, "model": model, "layer": layer}


# =============================================================================================
# measurements during training
# =============================================================================================
class TrainingProbe:
    """Hooks on a :class:`~hybridlab.layer.BlackBoxLinear` that measure every ``every``-th training step.

    At a measured step (a training forward pass with autograd on):

    * after the forward pass (the surrogate is then up to date with ``w``): the device matrix
      ``A = A(w)`` from the simulator (fabrication errors included, read-out noise not) and the
      **tracking ratio** ``||A - U S V^T||_F / eps_r(A)`` (methods with a surrogate);
    * in the backward pass: ``v = dL/dy`` of the device output ``y = A x`` (the gain times the
      gradient at the layer's output), the ``dL/dx`` the layer returned, compared with the true
      ``v A`` (**input cosine**, over the whole batch), and the ``dL/dw`` it returned (the zero-order
      estimate) compared with the true ``dL/dw`` by autograd through the simulator (**ZO cosine**).

    ``A`` is also kept at the first and the last measured step (:attr:`first_matrix`,
    :attr:`last_matrix`). The hooks change nothing the layer computes. Call :meth:`remove` to detach.
    """

    def __init__(self, layer: BlackBoxLinear, every: int = 1) -> None:
        if not isinstance(layer, BlackBoxLinear):
            raise TypeError(f"TrainingProbe measures a BlackBoxLinear, got {type(layer).__name__}")
        if int(every) < 1:
            raise ValueError(f"`every` (measure every k-th step) must be >= 1, got {every}")
        self.layer, self.every = layer, int(every)
        self.steps: list[int] = []
        self.tracking_ratio: list[float] = []
        self.input_cosine: list[float] = []
        self.zo_cosine: list[float] = []
        self.first_matrix: Tensor | None = None
        self.last_matrix: Tensor | None = None
        self._count = 0
        self._now: dict[str, Tensor] | None = None
        self._handles = [layer.register_forward_pre_hook(self._before), layer.register_forward_hook(self._after),
                         layer.w.register_hook(self._on_w_grad)]

    def remove(self) -> None:
        """Detach the hooks."""
        for h in self._handles:
            h.remove()

    def _measuring(self) -> bool:
        return self.layer.training and torch.is_grad_enabled()

    def _before(self, layer: BlackBoxLinear, args: tuple) -> None:
        self._now = None
        if not self._measuring():
            return
        self._count += 1
        if (self._count - 1) % self.every:
            return
        x = args[0]
        self._now = {"x": x.detach().reshape(-1, layer.d_in).to(layer.w.dtype)}
        if x.requires_grad:
            x.register_hook(self._on_x_grad)

    def _after(self, layer: BlackBoxLinear, args: tuple, out: Tensor) -> None:
        if self._now is None:
            return
        with torch.no_grad():
            A = layer.physical.transfer_matrix(layer.w.detach()).to(DTYPE)
        self._now["A"] = A
        self.steps.append(self._count)
        if self.first_matrix is None:
            self.first_matrix = A.clone()
        self.last_matrix = A.clone()
        if layer.U.shape[1] > 0:
            self.tracking_ratio.append(tracking_ratio(A, layer.U.to(DTYPE), layer.S.to(DTYPE), layer.V.to(DTYPE)))
        now = self._now
        out.register_hook(lambda g: now.update(v=(g.detach() * layer.gain.detach()).reshape(-1, layer.d_out)))

    def _on_x_grad(self, grad: Tensor) -> None:
        now = self._now
        if now is None or "v" not in now:
            return
        true = now["v"].to(DTYPE) @ now["A"]
        self.input_cosine.append(cosine(grad.detach().reshape(true.shape), true))

    def _on_w_grad(self, grad: Tensor) -> None:
        now = self._now
        if now is None or "v" not in now:
            return
        with torch.enable_grad():
            w = self.layer.w.detach().to(DTYPE).requires_grad_(True)
            Y = now["x"].to(DTYPE) @ self.layer.physical.transfer_matrix(w).to(DTYPE).mT
            (true,) = torch.autograd.grad((Y * now["v"].to(DTYPE)).sum(), w)
        self.zo_cosine.append(cosine(grad.detach(), true))


def change_spectrum(A0: Tensor, A1: Tensor, rank: int) -> dict[str, Any]:
    """How close to low rank the change ``dA = A1 - A0`` is.

    Returns ``{"singular_values": sigma_k(dA) / sigma_1(dA), "energy_top_r": the share of
    ||dA||_F^2 in the first ``rank`` singular values, "rank_90": the number of singular values that
    hold 90 % of it, "gaussian_top_r": the same share for a Gaussian matrix of the same shape (seed 0;
    the reference for "no structure"), "relative_change": ||dA||_F / ||A0||_F}``.
    """
    dA = (A1 - A0).to(DTYPE)
    s = torch.linalg.svdvals(dA).cpu().numpy()
    energy = np.cumsum(s ** 2) / np.sum(s ** 2)
    G = torch.randn(dA.shape, generator=_generator(0), dtype=DTYPE)
    g = torch.linalg.svdvals(G).numpy()
    return {"singular_values": s / s[0], "energy_top_r": float(energy[rank - 1]),
            "rank_90": int(np.searchsorted(energy, 0.9) + 1),
            "gaussian_top_r": float(np.sum(g[:rank] ** 2) / np.sum(g ** 2)),
            "relative_change": float(torch.linalg.matrix_norm(dA) / torch.linalg.matrix_norm(A0.to(DTYPE)))}


@dataclass
class TrainingTrace:
    """What :func:`training_measurements` measured along one training run."""

    device: str
    method: str
    seed: int
    steps: list[int]
    tracking_ratio: list[float]
    input_cosine: list[float]
    zo_cosine: list[float]
    zo_cosine_predicted: float     # sqrt(M / (M + p + 1)): the cosine of chapter 3 for a fixed gradient
    change: dict[str, Any]         # change_spectrum of A(first step) -> A(last step)
    accuracy: float
    queries: int
    reconfigurations: int
    rank: int
    p: int
    settings: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        """The means over the run (a table row)."""
        mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
        return {"device": self.device, "method": self.method, "seed": self.seed, "accuracy": self.accuracy,
                "tracking_ratio": mean(self.tracking_ratio), "input_cosine": mean(self.input_cosine),
                "zo_cosine": mean(self.zo_cosine), "zo_cosine_predicted": self.zo_cosine_predicted,
                "energy_top_r": self.change["energy_top_r"], "gaussian_top_r": self.change["gaussian_top_r"],
                "rank_90": self.change["rank_90"], "relative_change": self.change["relative_change"],
                "queries": self.queries, "reconfigurations": self.reconfigurations}


def training_measurements(task: str = "vision", devices: Sequence[str] = ("slm", "mrr"),
                          methods: Sequence[str | tuple[str, str, dict[str, Any]]] = ("surrogate", "static"), *,
                          seed: int = 0, quick: bool = False, every: int = 1, data: Any = None,
                          device_options: dict[str, Any] | None = None, **overrides: Any) -> list[TrainingTrace]:
    """Train with :func:`recipe_run` once per (device, method) with a :class:`TrainingProbe` attached.

    ``methods`` holds method names (:data:`hybridlab.layer.METHODS`) or ``(label, method, settings)``
    triples for a variant with settings of its own, for example ``("surrogate, ksl", "surrogate",
    {"upkeep": "ksl"})``; ``overrides`` apply to every run. Returns one :class:`TrainingTrace` per
    run, in the order ``devices x methods``; its ``method`` is the label.
    """
    variants = [(m, m, {}) if isinstance(m, str) else tuple(m) for m in methods]
    for variant in variants:
        if len(variant) != 3 or not isinstance(variant[2], dict):
            raise ValueError(f"a method is a name or a (label, method, settings) triple, got {variant!r}")
    if data is None:
        data = recipes.load_data(task, quick=quick)
    traces = []
    for device in devices:
        for label, method, settings in variants:
            probes: list[TrainingProbe] = []

            def attach(model: nn.Module, layer: BlackBoxLinear, probes: list[TrainingProbe] = probes) -> None:
                probes.append(TrainingProbe(layer, every))

            out = recipe_run(task, device, method, seed=seed, data=data, quick=quick, device_options=device_options,
                             instrument=attach, **{**overrides, **settings})
            probe, layer = probes[0], out["layer"]
            probe.remove()
            M = layer.zo.samples
            traces.append(TrainingTrace(
                device=device, method=label, seed=seed, steps=probe.steps, tracking_ratio=probe.tracking_ratio,
                input_cosine=probe.input_cosine, zo_cosine=probe.zo_cosine,
                zo_cosine_predicted=math.sqrt(M / (M + second_moment_excess("gaussian", layer.physical.p))),
                change=change_spectrum(probe.first_matrix, probe.last_matrix, layer.surrogate.rank),
                accuracy=out["accuracy"], queries=out["queries"], reconfigurations=out["reconfigurations"],
                rank=layer.surrogate.rank, p=layer.physical.p, settings=out["settings"]))
    return traces


# =============================================================================================
# Adam on zero-order estimates
# =============================================================================================
def adam_on_zo(device: str = "slm", d: int = 16, batch: int = 16, samples: int = 10, steps: int = 200,
               mu: float = 1e-2, betas: tuple[float, float] = (0.9, 0.999), seed: int = 0) -> dict[str, Any]:
    """What Adam's per-coordinate scaling does with zero-order estimates of a fixed gradient.

    At fixed parameters ``w``, inputs ``X`` and upstream errors ``V`` of a ``d x d`` device, the
    true gradient ``h = dL/dw`` is fixed; ``steps`` successive zero-order estimates ``g_t``
    (:func:`hybridlab.zo.zo_gradient`, ``samples`` fresh Gaussian directions each) are fed to
    ``torch.optim.Adam`` (``lr = 1``, on a separate tensor, so ``w`` and ``h`` stay fixed), and so is
    the exact ``h`` for comparison. Measured at the end:

    * ``rms_spread``: the coefficient of variation over the coordinates of Adam's denominator
      ``sqrt(v_i)`` (``v`` its second-moment average): how unequally Adam scales the coordinates;
    * ``rms_vs_gradient``: the correlation over the coordinates of ``sqrt(v_i)`` with ``|h_i|``;
    * ``step_size``: the median over coordinates of ``|step_i| / lr`` of the last step;
    * ``step_cosine``: the cosine of Adam's last step with ``-h``; ``estimate_cosine``: the mean
      cosine of one estimate ``g_t`` with ``h``; ``momentum_cosine``: the cosine of Adam's first
      moment ``m`` with ``h``.

    Returns ``{"zo": {...}, "exact": {...}, "p", "predicted_cosine"}``.
    """
    dev = _configured(device, d, d, seed)
    w = dev.w.clone()
    g = _generator(seed)
    X = torch.randn(batch, d, generator=g, dtype=DTYPE)
    V = torch.randn(batch, d, generator=g, dtype=DTYPE)
    h = oracle_gradient(dev, w, X, V)
    directions = _generator(seed + 1)
    out: dict[str, Any] = {"p": dev.p, "predicted_cosine": math.sqrt(samples / (samples + dev.p + 1))}
    for name in ("zo", "exact"):
        x = torch.zeros(dev.p, dtype=DTYPE, requires_grad=True)
        opt = torch.optim.Adam([x], lr=1.0, betas=betas)
        cosines = []
        before = x.detach().clone()
        for _ in range(steps):
            grad = zo_gradient(dev.query_batch, w, X, V, samples=samples, mu=mu, generator=directions) \
                if name == "zo" else h
            cosines.append(cosine(grad, h))
            x.grad = grad.clone()
            before = x.detach().clone()
            opt.step()
        state = opt.state[x]
        step = x.detach() - before
        rms = state["exp_avg_sq"].sqrt()
        out[name] = {"rms_spread": float(rms.std() / rms.mean()),
                     "rms_vs_gradient": float(np.corrcoef(rms.numpy(), h.abs().numpy())[0, 1]),
                     "step_size": float(step.abs().median()), "step_cosine": cosine(step, -h),
                     "estimate_cosine": float(np.mean(cosines)), "momentum_cosine": cosine(state["exp_avg"], h),
                     "gradient_spread": float(h.abs().std() / h.abs().mean())}
        dev.configure(w)
    return out
