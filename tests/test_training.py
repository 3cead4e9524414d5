"""Sanity: a small MLP on scikit-learn's digits trains through each device with the method."""

from __future__ import annotations

import time

import pytest
import torch
from torch import nn

from hybridlab.data import load_digits_dataset
from hybridlab.layer import replace_linear
from hybridlab.train import hardware_budget, train_classifier


def mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(),
                         nn.Linear(64, 10))


@pytest.mark.parametrize("device", ["ideal", "slm", "mrr", "mzi"])
def test_digits_mlp_with_black_box_layer_reaches_90_percent(device):
    data = load_digits_dataset(seed=0)
    torch.manual_seed(0)
    model = mlp()
    replace_linear(model, "3", device, method="surrogate", rank=8, samples=10, sketch=32, mu=1e-2, seed=0)
    t0 = time.process_time()
    hist = train_classifier(model, data.X_train, data.y_train, data.X_test, data.y_test, epochs=10,
                            batch_size=32, lr=3e-3, lr_device=1e-2, seed=0, progress=False)
    cpu_seconds = time.process_time() - t0
    assert hist.final >= 0.90, f"{device}: test accuracy {hist.final:.3f} < 0.90 (history {hist.metric})"
    assert cpu_seconds < 60, f"{device}: {cpu_seconds:.0f} s of CPU, more than a minute"
    budget = hardware_budget(model)
    assert budget["queries"] > 0 and budget["reconfigurations"] > 0
    assert hist.queries[-1] == budget["queries"]


# --------------------------------------------------------------------------- the recipe's pieces
def test_sensitivity_of_the_ideal_device_is_the_closed_form():
    """A = w: a step delta*u changes the outputs by delta * X U^T exactly, so kappa = mean ||X U_i^T|| / ||X W^T||."""
    from hybridlab.layer import BlackBoxLinear
    from hybridlab.sketch import random_rows

    layer = BlackBoxLinear(6, 5, "ideal", rank=2, seed=4, dtype=torch.float64)
    x = torch.randn(9, 6, dtype=torch.float64)
    kappa = layer.sensitivity(x, delta=0.3, samples=3)
    u = random_rows(3, 30, "rademacher", generator=torch.Generator().manual_seed(4 + 3), dtype=torch.float64)
    W = layer.w.detach().reshape(5, 6)
    want = torch.stack([(x @ ui.reshape(5, 6).T).norm() for ui in u]).mean() / (x @ W.T).norm()
    assert kappa == pytest.approx(float(want), rel=1e-10)
    assert layer.physical.reconfigurations >= 1 and torch.equal(layer.physical.w, layer.w.detach())


def test_sensitivity_of_a_coarsely_quantised_device_takes_a_step_it_resolves():
    """2-bit ring phases near resonance all sit on one level: a 0.01 rad step moves no output, so the
    step grows tenfold until one does; a device that never responds is a clear error, not a zero."""
    from hybridlab.layer import BlackBoxLinear

    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    writes = {}
    for bits in (None, 2):
        layer = BlackBoxLinear(8, 8, "mrr", rank=2, seed=0, device_options={"bits": bits} if bits else None)
        assert layer.sensitivity(x, delta=1e-2, samples=2) > 0
        assert torch.equal(layer.physical.w, layer.w.detach())
        writes[bits] = layer.physical.reconfigurations
    assert writes[2] > writes[None]  # the quantised ring needed larger steps: more parameter sets written
    with pytest.raises(ValueError, match="lr_device"):
        BlackBoxLinear(8, 8, "mrr", rank=2, seed=0, device_options={"bits": 1}).sensitivity(x)


def test_device_rates_give_every_device_the_same_relative_change_per_step():
    from hybridlab.train import black_box_layers, device_rates

    x = torch.randn(32, 64)
    for device in ("slm", "mrr"):
        torch.manual_seed(0)
        model = mlp()
        replace_linear(model, "3", device, rank=4, samples=2, seed=0)
        layer = black_box_layers(model)[0]
        rates = device_rates(model, x, 0.05)
        h = torch.relu(model[1](x.flatten(1)))  # what reaches the black box
        assert rates[layer] * layer.sensitivity(h) == pytest.approx(0.05, rel=1e-6)


def test_select_best_keeps_the_state_with_the_lowest_validation_loss():
    from hybridlab.train import evaluate

    data = load_digits_dataset(seed=0).subsample(300, 150, seed=0)
    torch.manual_seed(0)
    model = mlp()
    hist = train_classifier(model, data.X_train, data.y_train, data.X_test, data.y_test, epochs=6, lr=3e-2,
                            select_best=True, seed=0, progress=False)
    best = hist.steps[min(range(len(hist.val_loss)), key=hist.val_loss.__getitem__)]
    assert hist.best_step == best
    accuracy, loss = evaluate(model, data.X_test, data.y_test)
    assert loss == pytest.approx(min(hist.val_loss), rel=1e-6) and accuracy == hist.best
