"""Training and evaluation loops, metric history and hardware budgets.

One loop serves every method: with a :class:`~hybridlab.layer.BlackBoxLinear` in the model the
backward pass uses the surrogate and the zero-order estimate, with an ``nn.Linear`` it is the
digital baseline. The device parameters ``w`` get their own learning rate (they are phases,
not weights).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layer import BlackBoxLinear

__all__ = ["History", "black_box_layers", "hardware_budget", "make_optimizer", "accuracy",
           "train_classifier", "bits_per_char", "train_language_model"]


@dataclass
class History:
    """What a training run measured: per-evaluation metrics, losses and the hardware spent."""

    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    reconfigurations: list[int] = field(default_factory=list)
    metric_name: str = "accuracy"
    seconds: float = 0.0

    @property
    def final(self) -> float:
        """The metric at the last evaluation."""
        return self.metric[-1]

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("steps", "train_loss", "metric", "queries", "reconfigurations",
                                              "metric_name", "seconds")}


def black_box_layers(model: nn.Module) -> list[BlackBoxLinear]:
    """All black-box layers of ``model``."""
    return [m for m in model.modules() if isinstance(m, BlackBoxLinear)]


def hardware_budget(model: nn.Module) -> dict[str, int]:
    """Total device queries and reconfigurations spent so far by the model's black-box layers."""
    layers = black_box_layers(model)
    return {"queries": sum(m.physical.queries for m in layers),
            "reconfigurations": sum(m.physical.reconfigurations for m in layers)}


def make_optimizer(model: nn.Module, lr: float = 3e-3, lr_device: float | None = None,
                   weight_decay: float = 0.0) -> torch.optim.Optimizer:
    """Adam with the device parameters ``w`` in their own group (learning rate ``lr_device``)."""
    device_params = [m.w for m in black_box_layers(model)]
    ids = {id(p) for p in device_params}
    rest = [p for p in model.parameters() if id(p) not in ids and p.requires_grad]
    groups = [{"params": rest, "weight_decay": weight_decay}]
    if device_params:
        groups.append({"params": device_params, "lr": lr if lr_device is None else lr_device, "weight_decay": 0.0})
    return torch.optim.AdamW(groups, lr=lr)


@torch.no_grad()
def accuracy(model: nn.Module, X: Tensor, y: Tensor, batch_size: int = 512) -> float:
    """Classification accuracy of ``model`` on ``(X, y)`` (eval mode, batched)."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = 0
    for i in range(0, len(X), batch_size):
        correct += (model(X[i:i + batch_size].to(dev)).argmax(-1) == y[i:i + batch_size].to(dev)).sum().item()
    model.train(was_training)
    return correct / len(X)


def _progress(total: int, enabled: bool, desc: str):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False)


def train_classifier(model: nn.Module, X_train: Tensor, y_train: Tensor, X_test: Tensor, y_test: Tensor, *,
                     epochs: int = 10, batch_size: int = 64, lr: float = 3e-3, lr_device: float | None = None,
                     weight_decay: float = 0.0, seed: int = 0, evals_per_epoch: int = 1, progress: bool = True,
                     desc: str = "train") -> History:
    """Train a classifier with cross-entropy; evaluate test accuracy ``evals_per_epoch`` times an epoch."""
    dev = next(model.parameters()).device
    opt = make_optimizer(model, lr, lr_device, weight_decay)
    g = torch.Generator().manual_seed(seed)
    n = len(X_train)
    steps_per_epoch = math.ceil(n / batch_size)
    eval_at = {round(steps_per_epoch * (k + 1) / evals_per_epoch) for k in range(evals_per_epoch)}
    hist = History(metric_name="accuracy")
    bar = _progress(epochs * steps_per_epoch, progress, desc)
    t0, step = time.perf_counter(), 0
    model.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=g)
        running = []
        for b in range(steps_per_epoch):
            idx = order[b * batch_size:(b + 1) * batch_size]
            xb, yb = X_train[idx].to(dev), y_train[idx].to(dev)
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(xb), yb)
            loss.backward()
            opt.step()
            step += 1
            running.append(loss.item())
            if bar is not None:
                bar.update(1)
            if b + 1 in eval_at:
                _record(hist, model, step, sum(running) / len(running), accuracy(model, X_test, y_test))
                running = []
    if bar is not None:
        bar.close()
    hist.seconds = time.perf_counter() - t0
    return hist


def _record(hist: History, model: nn.Module, step: int, loss: float, metric: float) -> None:
    budget = hardware_budget(model)
    hist.steps.append(step)
    hist.train_loss.append(loss)
    hist.metric.append(metric)
    hist.queries.append(budget["queries"])
    hist.reconfigurations.append(budget["reconfigurations"])


@torch.no_grad()
def bits_per_char(model: nn.Module, batches: Callable[[], tuple[Tensor, Tensor]], n_batches: int) -> float:
    """Mean cross-entropy in bits per character over ``n_batches`` batches from ``batches()``."""
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    total = 0.0
    for _ in range(n_batches):
        x, y = batches()
        logits = model(x.to(dev))
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.to(dev).reshape(-1)).item()
    model.train(was_training)
    return total / n_batches / math.log(2)


def train_language_model(model: nn.Module, train_batches: Callable[[], tuple[Tensor, Tensor]],
                         val_batches: Callable[[], tuple[Tensor, Tensor]], *, steps: int = 1000,
                         lr: float = 3e-3, lr_device: float | None = None, weight_decay: float = 0.0,
                         eval_every: int = 100, eval_batches: int = 10, progress: bool = True,
                         desc: str = "train") -> History:
    """Train a next-character model; the metric is validation bits per character (lower is better).

    ``train_batches()`` and ``val_batches()`` return ``(x, y)`` token batches; make them seeded so
    that the run is reproducible (see :mod:`hybridlab.data`).
    """
    dev = next(model.parameters()).device
    opt = make_optimizer(model, lr, lr_device, weight_decay)
    hist = History(metric_name="bits_per_char")
    bar = _progress(steps, progress, desc)
    t0 = time.perf_counter()
    model.train()
    running = []
    for step in range(1, steps + 1):
        x, y = train_batches()
        opt.zero_grad(set_to_none=True)
        logits = model(x.to(dev))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.to(dev).reshape(-1))
        loss.backward()
        opt.step()
        running.append(loss.item())
        if bar is not None:
            bar.update(1)
        if step % eval_every == 0 or step == steps:
            _record(hist, model, step, sum(running) / len(running) / math.log(2),
                    bits_per_char(model, val_batches, eval_batches))
            running = []
    if bar is not None:
        bar.close()
    hist.seconds = time.perf_counter() - t0
    return hist
