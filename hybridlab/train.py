"""Training and evaluation loops, metric history and hardware budgets.

One loop serves every method: with a :class:`~hybridlab.layer.BlackBoxLinear` in the model the
backward pass uses the surrogate and the zero-order estimate, with an ``nn.Linear`` it is the
digital baseline. The training recipe is written out here as ordinary arguments:

* the device parameters ``w`` get their own learning rate (they are phases, not weights): a given
  ``lr_device``, or one set from what the layer measures, ``device_step / sensitivity``
  (:func:`device_rates`), so that every device kind changes its matrix by the same relative amount
  per step;
* the last ``anneal`` fraction of the run trains at a tenth of both learning rates, so that the
  device settles and the network adapts to its final matrix;
* ``gain_scale`` rescales the black box's calibrated output gain before training
  (:func:`calibrate_gain`);
* with ``select_best`` the state with the lowest validation loss is kept (the device's counters
  keep running) and restored at the end;
* with a :class:`~hybridlab.checkpoint.Checkpoint` the whole training state is saved after every
  few epochs or steps, and a run continues from it where it stopped, with the same numbers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import Checkpoint
from .layer import BlackBoxLinear

__all__ = ["History", "black_box_layers", "hardware_budget", "make_optimizer", "calibrate_gain", "device_rates",
           "anneal_split", "accuracy", "evaluate", "train_classifier", "bits_per_char", "windows",
           "train_language_model"]


@dataclass
class History:
    """What a training run measured: per-evaluation metrics, losses and the hardware spent."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)  # loss on the evaluation split (selects the kept state)
    queries: list[int] = field(default_factory=list)
    reconfigurations: list[int] = field(default_factory=list)
    metric_name: str = "accuracy"
    seconds: float = 0.0
    best_step: int | None = None  # the step whose state was kept (select_best), else None

    @property
    def final(self) -> float:
        """The metric at the last evaluation."""
        return self.metric[-1]

    @property
    def best(self) -> float:
        """The metric of the kept state: at ``best_step``, or the last one."""
        return self.final if self.best_step is None else self.metric[self.steps.index(self.best_step)]

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("steps", "train_loss", "metric", "val_loss", "queries",
                                              "reconfigurations", "metric_name", "seconds", "best_step")}


def black_box_layers(model: nn.Module) -> list[BlackBoxLinear]:
    """All black-box layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, BlackBoxLinear)]


def hardware_budget(model: nn.Module) -> dict[str, int]:
    """Total device queries and reconfigurations spent so far by the model's black-box layers."""
    layers = black_box_layers(model)
    return {"queries": sum(m.physical.queries for m in layers),
            "reconfigurations": sum(m.physical.reconfigurations for m in layers)}


def make_optimizer(model: nn.Module, lr: float = 3e-3, lr_device: float | Mapping[BlackBoxLinear, float] | None = None,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """AdamW with the device parameters ``w`` of each black box in a group of their own.

    ``lr_device`` is one learning rate for every device, or one per layer (``{layer: lr}``, e.g.
    from :func:`device_rates`); ``None`` uses ``lr``. Device parameters get no weight decay.
    """
    layers = [m for m in black_box_layers(model) if m.w.requires_grad]
    ids = {id(m.w) for m in layers}
    rest = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    groups: list[dict[str, Any]] = [{"params": rest, "weight_decay": weight_decay}]
    for m in layers:
        rate = lr_device.get(m, lr) if isinstance(lr_device, Mapping) else (lr if lr_device is None else lr_device)
        groups.append({"params": [m.w], "lr": rate, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr)


def _anneal(opt: torch.optim.Optimizer) -> None:
    """Divide every group's learning rate by ten (the annealing phase)."""
    for group in opt.param_groups:
        group["lr"] /= 10


@torch.no_grad()
def device_rates(model: nn.Module, x: Tensor, step: float) -> dict[BlackBoxLinear, float]:
    """A learning rate per black box, ``step / sensitivity``, measured on the inputs that ``x`` sends it.

    Adam moves every parameter by about its learning rate per step, so a device whose outputs change
    by a relative ``kappa`` per unit parameter step (:meth:`~hybridlab.layer.BlackBoxLinear.sensitivity`)
    changes its matrix by about ``lr * kappa`` per step. ``lr = step / kappa`` gives every device kind
    the same relative change per step: a ring near resonance and an SLM pixel move their matrices
    alike, whatever the width. Costs one forward pass of ``x`` and the sensitivity's queries.
    """
    step = float(step)
    if not step > 0:
        raise ValueError(f"`step` (relative change of the device's outputs per step) must be > 0, got {step}")
    layers = black_box_layers(model)
    seen: dict[BlackBoxLinear, Tensor] = {}
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.setdefault(m, args[0].detach())) for m in layers]
    was_training = model.training
    try:
        model.eval()
        model(x)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return {m: step / m.sensitivity(seen[m].reshape(-1, m.d_in)) for m in layers if m in seen}


def _snapshot(model: nn.Module) -> dict[str, Tensor]:
    """A copy of the model's state without the physical devices' (their counters keep running)."""
    return {k: v.clone() if isinstance(v, Tensor) else v for k, v in model.state_dict().items() if ".physical." not in
            f".{k}"}


def _restore(model: nn.Module, snapshot: dict[str, Tensor]) -> None:
    model.load_state_dict(snapshot, strict=False)


@torch.no_grad()
def calibrate_gain(model: nn.Module, x: Tensor, scale: float) -> None:
    """Calibrate the black boxes' gains on ``x`` (one forward pass), then multiply them by ``scale``.

    A :class:`~hybridlab.layer.BlackBoxLinear` sets its gain at its first forward pass so that its
    output has the root-mean-square of its input; ``scale`` sets it relative to that (the
    transformer of the text task needs 0.1, or the device output swamps its residual stream).
    ``scale == 1`` does nothing: the layer calibrates itself on the first training batch.
    """
    if scale == 1.0 or not black_box_layers(model):
        return
    model(x)
    for layer in black_box_layers(model):
        layer.gain.mul_(scale)


def anneal_split(total: int, anneal: float) -> tuple[int, int]:
    """``(main, annealed)``: the last ``anneal`` fraction of ``total`` epochs or steps (rounded).

    At least one epoch or step stays in the main phase.
    """
    if not 0.0 <= anneal < 1.0:
        raise ValueError(f"`anneal` must be in [0, 1), got {anneal}")
    tail = min(total - 1, round(anneal * total)) if total > 1 else 0
    return total - tail, tail


@torch.no_grad()
def accuracy(model: nn.Module, X: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Classification accuracy of ``model`` on ``(X, y)`` (eval mode, batched)."""
    return evaluate(model, X, y, batch_size)[0]


@torch.no_grad()
def evaluate(model: nn.Module, X: Tensor, y: Tensor, batch_size: int = 512) -> tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` on ``(X, y)`` (eval mode, batched)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct, loss = 0, 0.0
    for i in range(0, len(X), batch_size):
        logits, target = model(X[i:i + batch_size].to(dev)), y[i:i + batch_size].to(dev)
        correct += (logits.argmax(-1) == target).sum().item()
        loss += F.cross_entropy(logits, target, reduction="sum").item()
    model.train(was_training)
    return correct / len(X), loss / len(X)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def train_classifier(model: nn.Module, X_train: Tensor, y_train: Tensor, X_val: Tensor, y_val: Tensor, *,
                     epochs: int = 10, batch_size: int = 64, lr: float = 3e-3,
                     lr_device: float | Mapping[BlackBoxLinear, float] | None = None, weight_decay: float = 0.0,
                     anneal: float = 0.0, gain_scale: float = 1.0, select_best: bool = False, seed: int = 0,
                     evals_per_epoch: int = 1, progress: bool = True, desc: str = "train",
                     split: Callable[[Tensor], tuple[Tensor, float]] | None = None,
                     checkpoint: Checkpoint | None = None) -> History:
    """Train a classifier with cross-entropy; measure accuracy on ``(X_val, y_val)`` ``evals_per_epoch`` times an epoch.

    The last ``anneal`` fraction of the epochs (:func:`anneal_split`) runs at a tenth of both
    learning rates; ``gain_scale`` is applied with :func:`calibrate_gain` on the first
    ``batch_size`` training examples before the first step. With ``select_best`` the state with
    the lowest cross-entropy on ``(X_val, y_val)`` is restored at the end (``History.best_step``): pass a
    validation split there, never the test split, and evaluate the test split once afterwards.

    Data-parallel training (:mod:`hybridlab.parallel`): every process runs this loop with the same
    seed on its DDP-wrapped model, and ``split`` maps each batch's row indices to this process's rows
    and the weight of their mean loss (:func:`hybridlab.parallel.split_batch`).
    With a ``checkpoint`` the whole state is saved after every ``checkpoint.every`` epochs, and a
    saved run is continued (:class:`~hybridlab.checkpoint.Checkpoint`).
    """
    dev = next(model.parameters()).device
    main, _ = anneal_split(epochs, anneal)
    opt = make_optimizer(model, lr, lr_device, weight_decay)
    g = torch.Generator().manual_seed(seed)
    n = len(X_train)
    steps_per_epoch = math.ceil(n / batch_size)
    eval_at = {round(steps_per_epoch * (k + 1) / evals_per_epoch) for k in range(evals_per_epoch)}
    hist = History(metric_name="accuracy")
    best: tuple[float, dict[str, Tensor]] | None = None
    start, step = 0, 0
    saved = checkpoint.load(model, opt, {"batch_order": g}) if checkpoint is not None else None
    if saved is None:
        calibrate_gain(model, X_train[:batch_size].to(dev), gain_scale)
    else:
        hist, best, start, step, _ = _from_loop_state(saved)
    bar = _progress(epochs * steps_per_epoch, progress, desc)
    if bar is not None:
        bar.update(step)
    t0, seconds = time.perf_counter(), hist.seconds
    model.train()
    for epoch in range(start, epochs):
        if epoch == main:  # the annealing phase
            _anneal(opt)
        order = torch.randperm(n, generator=g)
        running = []
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            idx, weight = (idx, 1.0) if split is None else split(idx)  # data parallel: this process's rows
            xb, yb = X_train[idx].to(dev), y_train[idx].to(dev)
            opt.zero_grad(set_to_none=True)
            loss = weight * F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            step += 1
            running.append(loss.item())
            if bar is not None:
                bar.update(1)
            if b + 1 in eval_at:
                metric, val_loss = evaluate(model, X_val, y_val)
                _record(hist, model, step, sum(running) / len(running), metric, val_loss)
                running = []
                if select_best and (best is None or val_loss < best[0]):  # the loss: finer than accuracy
                    best, hist.best_step = (val_loss, _snapshot(model)), step
        if checkpoint is not None and checkpoint.due(epoch + 1, epochs):
            hist.seconds = seconds + time.perf_counter() - t0
            checkpoint.save(model, opt, {"batch_order": g}, _loop_state(hist, best, epoch + 1, step))
    if bar is not None:
        bar.close()
    if best is not None:
        _restore(model, best[1])
    hist.seconds = seconds + time.perf_counter() - t0
    return hist


def _loop_state(hist: History, best: tuple[float, dict[str, Tensor]] | None, position: int, step: int,
                running: list[float] | None = None) -> dict[str, Any]:
    """What a loop needs besides model, optimizer and generators to continue (a checkpoint's ``loop``)."""
    return {"history": hist.as_dict(), "best": None if best is None else {"value": best[0], "state": best[1]},
            "position": position, "step": step, "running": list(running or [])}


def _from_loop_state(loop: dict[str, Any]) -> tuple[History, tuple[float, dict[str, Tensor]] | None, int, int,
                                                    list[float]]:
    """``(history, best, position, step, running)`` from :func:`_loop_state`'s dict."""
    best = None if loop["best"] is None else (loop["best"]["value"], loop["best"]["state"])
    return History(**loop["history"]), best, int(loop["position"]), int(loop["step"]), list(loop["running"])


def _record(hist: History, model: nn.Module, step: int, loss: float, metric: float, val_loss: float) -> None:
    budget = hardware_budget(model)
    hist.steps.append(step)
    hist.train_loss.append(loss)
    hist.metric.append(metric)
    hist.val_loss.append(val_loss)
    hist.queries.append(budget["queries"])
    hist.reconfigurations.append(budget["reconfigurations"])


def windows(ids: Tensor, block: int) -> tuple[Tensor, Tensor]:
    """``(x, y)``: ``ids`` cut into consecutive windows of ``block`` characters and their next characters.

    Every character after the first is a target exactly once.

    Raises:
        ValueError: the text is not longer than ``block``.
    """
    n = (len(ids) - 1) // block
    if n < 1:
        raise ValueError(f"the text has {len(ids)} characters; it needs more than the context "
                         f"length {block}: use a longer text")
    return ids[: n * block].view(n, block), ids[1: n * block + 1].view(n, block)


@torch.no_grad()
def bits_per_char(model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]) -> float:
    """Cross-entropy of next-character predictions in bits per character, over every target of ``batches``.

    ``batches`` yields ``(x, y)`` token tensors of the same shape: a few random batches for a
    quick estimate during training, or :func:`windows` of a whole split (in chunks) for the final
    number.
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    total, count = 0.0, 0
    for x, y in batches:
        logits = model(x.to(dev))
        total += F.cross_entropy(logits.flatten(0, 1), y.to(dev).flatten(), reduction="sum").item()
        count += y.numel()
    model.train(was_training)
    return total / count / math.log(2)


def train_language_model(model: nn.Module, train_batches: Callable[[], tuple[Tensor, Tensor]],
                         val_batches: Callable[[], tuple[Tensor, Tensor]], *, steps: int = 1000,
                         lr: float = 3e-3, lr_device: float | Mapping[BlackBoxLinear, float] | None = None,
                         weight_decay: float = 0.0, anneal: float = 0.0, gain_scale: float = 1.0,
                         calibration: Tensor | None = None, select_best: bool = False, eval_every: int = 100,
                         eval_batches: int = 10, progress: bool = True, desc: str = "train",
                         checkpoint: Checkpoint | None = None) -> History:
    """Train a next-character model; the metric is bits per character on validation batches (lower is better).

    ``train_batches()`` and ``val_batches()`` return ``(x, y)`` token batches; make them seeded so
    that the run is reproducible (see :mod:`hybridlab.data`). The metric is recorded every
    ``eval_every`` steps and at the end of each phase, on ``eval_batches`` validation batches.
    The last ``anneal`` fraction of the steps runs at a tenth of both learning rates; ``gain_scale``
    is applied on the ``calibration`` tokens (required then); with ``select_best`` the state with
    the lowest validation bits per character is restored at the end. With a ``checkpoint`` the whole
    state is saved after every ``checkpoint.every`` steps and a saved run is continued; the
    generators behind ``train_batches`` and ``val_batches`` must then be in ``checkpoint.generators``.
    """
    dev = next(model.parameters()).device
    if gain_scale != 1.0 and calibration is None:
        raise ValueError("`gain_scale` needs `calibration` tokens to calibrate the black box's gain on")
    main, _ = anneal_split(steps, anneal)
    opt = make_optimizer(model, lr, lr_device, weight_decay)
    hist = History(metric_name="bits_per_char")
    best: tuple[float, dict[str, Tensor]] | None = None
    start, running = 0, []
    saved = checkpoint.load(model, opt, {}) if checkpoint is not None else None
    if saved is None:
        if gain_scale != 1.0:
            calibrate_gain(model, calibration.to(dev), gain_scale)
    else:
        hist, best, start, _, running = _from_loop_state(saved)
    bar = _progress(steps, progress, desc)
    if bar is not None:
        bar.update(start)
    t0, seconds = time.perf_counter(), hist.seconds
    model.train()
    for step in range(start + 1, steps + 1):
        if step == main + 1:  # the annealing phase
            _anneal(opt)
        x, y = train_batches()
        opt.zero_grad(set_to_none=True)
        logits = model(x.to(dev))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.to(dev).reshape(-1))
        loss.backward()
        opt.step()
        running.append(loss.item())
        if bar is not None:
            bar.update(1)
        if step % eval_every == 0 or step in (main, steps):
            metric = bits_per_char(model, (val_batches() for _ in range(eval_batches)))
            _record(hist, model, step, sum(running) / len(running) / math.log(2), metric, metric)
            running = []
            if select_best and (best is None or metric < best[0]):
                best, hist.best_step = (metric, _snapshot(model)), step
        if checkpoint is not None and checkpoint.due(step, steps):
            hist.seconds = seconds + time.perf_counter() - t0
            checkpoint.save(model, opt, {}, _loop_state(hist, best, step, step, running))
    if bar is not None:
        bar.close()
    if best is not None:
        _restore(model, best[1])
    hist.seconds = seconds + time.perf_counter() - t0
    return hist
