"""Chapter 5's computations (hybridlab.experiments.training): the recipe written out, the probe that
measures a black-box layer during training, the spectrum of a change, Adam on ZO estimates."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from hybridlab import experiments as ex
from hybridlab import recipes
from hybridlab.layer import BlackBoxLinear

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_layer_settings_are_the_recipes():
    assert set(ex.LAYER_SETTINGS) == set(recipes._LAYER_SETTINGS)


@pytest.mark.parametrize("method", ["surrogate", "static"])
def test_recipe_run_gives_the_numbers_of_recipes_run(method: str):
    """Same arguments, same numbers; read-out noise sets the ZO step in both (the settings' mu)."""
    kw = dict(seed=1, quick=True, device_options={"noise": 0.01})
    mine = ex.recipe_run("vision", "slm", method, **kw)
    theirs = recipes.run("vision", "slm", method, use_cuda=False, **kw)
    assert mine["settings"]["mu"] == theirs["settings"]["mu"] == pytest.approx(0.03)
    for key in ("accuracy", "queries", "reconfigurations"):
        assert mine[key] == theirs[key], key
    assert mine["history"].val_loss == theirs["history"]["val_loss"]
    assert isinstance(mine["layer"], BlackBoxLinear) and mine["layer"].method == method


def test_recipe_run_refuses_text():
    with pytest.raises(ValueError, match="classification"):
        ex.recipe_run("text", "slm", "surrogate", quick=True)


def _one_step(method: str, **options):
    """One training step of a lone 8x6 black box with a probe; returns (probe, layer, x, T, A)."""
    g = torch.Generator().manual_seed(0)
    layer = BlackBoxLinear(8, 6, "slm", method=method, seed=0, dtype=F64, gain=1.5, **options)
    probe = ex.TrainingProbe(layer)
    x = torch.randn(5, 8, generator=g, dtype=F64, requires_grad=True)
    T = torch.randn(5, 6, generator=g, dtype=F64)
    (layer(x) * T).sum().backward()
    A = layer.physical.transfer_matrix(layer.w.detach())
    return probe, layer, x, T, A


def test_probe_measures_what_exact_backpropagation_gives():
    probe, layer, x, T, A = _one_step("static", rank=3, samples=4)
    assert probe.steps == [1] and len(probe.input_cosine) == len(probe.zo_cosine) == 1
    # the first step's surrogate is the identity fit of a noiseless device: the best rank-3 matrix
    assert probe.tracking_ratio[0] == pytest.approx(1.0, abs=1e-9)
    v = 1.5 * T  # dL/dy: the loss sum(out * T) with out = gain * y + bias
    assert probe.input_cosine[0] == pytest.approx(ex.cosine(x.grad, v @ A), abs=1e-12)
    true_w = ex.oracle_gradient(layer.physical, layer.w, x.detach(), v)
    assert probe.zo_cosine[0] == pytest.approx(ex.cosine(layer.w.grad, true_w), abs=1e-12)
    assert torch.equal(probe.first_matrix, probe.last_matrix)


def test_probe_reads_one_for_the_oracle_and_a_full_rank_surrogate():
    probe, *_ = _one_step("oracle")
    assert probe.input_cosine[0] == pytest.approx(1.0, abs=1e-12) and probe.zo_cosine[0] == pytest.approx(1.0)
    assert probe.tracking_ratio == []  # no surrogate
    probe, *_ = _one_step("static", rank=6)
    assert probe.input_cosine[0] == pytest.approx(1.0, abs=1e-9)


def test_probe_measures_every_kth_training_step_and_ignores_evaluation():
    layer = BlackBoxLinear(8, 6, "mrr", method="surrogate", rank=2, sketch=4, samples=2, seed=0, dtype=F64)
    probe = ex.TrainingProbe(layer, every=2)
    opt = torch.optim.SGD(layer.parameters(), lr=1e-2)
    x = torch.randn(4, 8, dtype=F64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    for _ in range(5):
        opt.zero_grad()
        layer(x).pow(2).sum().backward()
        opt.step()
    with torch.no_grad():
        layer(x)
    layer.eval()
    layer(x)
    assert probe.steps == [1, 3, 5] and len(probe.tracking_ratio) == len(probe.zo_cosine) == 3
    probe.remove()
    layer.train()
    layer(x).sum().backward()
    assert probe.steps == [1, 3, 5]
    with pytest.raises(ValueError, match="every"):
        ex.TrainingProbe(layer, every=0)
    with pytest.raises(TypeError, match="BlackBoxLinear"):
        ex.TrainingProbe(nn.Linear(2, 2))


def test_change_spectrum_of_a_low_rank_change():
    g = torch.Generator().manual_seed(0)
    A0 = torch.randn(20, 16, generator=g, dtype=F64)
    dA = torch.randn(20, 2, generator=g, dtype=F64) @ torch.randn(2, 16, generator=g, dtype=F64)
    out = ex.change_spectrum(A0, A0 + dA, rank=2)
    assert out["energy_top_r"] == pytest.approx(1.0) and out["rank_90"] <= 2
    assert out["singular_values"][0] == 1.0 and out["singular_values"][2] < 1e-12
    assert out["relative_change"] == pytest.approx(float(dA.norm() / A0.norm()))
    assert 0.1 < out["gaussian_top_r"] < 0.5  # a Gaussian 20x16 matrix is far from rank 2
    full = ex.change_spectrum(A0, A0 + torch.randn(20, 16, generator=g, dtype=F64), rank=2)
    assert full["energy_top_r"] < 0.5 and full["rank_90"] > 8


def test_training_measurements_labels_variants_and_checks_them():
    variants = (("surrogate, ksl", "surrogate", {"upkeep": "ksl"}), "oracle")
    traces = ex.training_measurements("vision", ("slm",), variants, quick=True)
    assert [t.method for t in traces] == ["surrogate, ksl", "oracle"]
    ksl, oracle = traces
    assert ksl.settings["upkeep"] == "ksl" and len(ksl.tracking_ratio) == len(ksl.steps) > 0
    assert min(oracle.input_cosine) > 1 - 1e-9 and min(oracle.zo_cosine) > 1 - 1e-9
    assert ksl.zo_cosine_predicted == pytest.approx(math.sqrt(10 / (10 + 4096 + 1)))
    row = ksl.row()
    assert row["method"] == "surrogate, ksl" and 0 < row["zo_cosine"] < 0.2 and row["tracking_ratio"] >= 1
    with pytest.raises(ValueError, match="triple"):
        ex.training_measurements("vision", ("slm",), (("surrogate", {"upkeep": "ksl"}),), quick=True)


def test_adam_on_zo_is_seeded_and_exact_gradients_scale_per_coordinate():
    a = ex.adam_on_zo("slm", d=8, batch=8, samples=4, steps=30, seed=3)
    b = ex.adam_on_zo("slm", d=8, batch=8, samples=4, steps=30, seed=3)
    assert a == b
    assert a["exact"]["rms_vs_gradient"] == pytest.approx(1.0) and a["exact"]["estimate_cosine"] == pytest.approx(1.0)
    assert a["zo"]["rms_spread"] < a["exact"]["rms_spread"]
    assert a["predicted_cosine"] == pytest.approx(math.sqrt(4 / (4 + 64 + 1)))
