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
