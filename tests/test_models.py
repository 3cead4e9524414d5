"""The task models: shapes, the replaceable Linear layers, a few training steps, seeding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hybridlab.data import Dataset
from hybridlab.data.text import make_corpus
from hybridlab.layer import BlackBoxLinear, replace_linear
from hybridlab.models import (
    DEFAULT_BLACK_BOX,
    MODEL_DEFAULTS,
    AudioCNN,
    CharTransformer,
    DigitsCNN,
    build_model,
    replaceable,
)
from hybridlab.train import make_optimizer

TEXT = "the quick brown fox jumps over the lazy dog. " * 20


def fake_dataset(shape: tuple[int, ...], n: int = 40, n_classes: int = 10, seed: int = 0) -> Dataset:
    g = torch.Generator().manual_seed(seed)
    return Dataset(name="fake", X_train=torch.randn(n, *shape, generator=g),
                   y_train=torch.randint(0, n_classes, (n,), generator=g),
                   X_test=torch.randn(n // 2, *shape, generator=g),
                   y_test=torch.randint(0, n_classes, (n // 2,), generator=g), n_classes=n_classes)


DATA = {"vision": fake_dataset((1, 8, 8)), "audio": fake_dataset((1, 32, 64)), "text": make_corpus("fox", TEXT)}


def batch(task: str, n: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    data = DATA[task]
    if task == "text":
        return data.batch("train", 16, n, torch.Generator().manual_seed(0))
    return data.X_train[:n], data.y_train[:n]


def loss_of(task: str, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    logits = model(x)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 16, 12)])
def test_digits_cnn_shapes(shape):
    model = DigitsCNN(shape[0], 10, width=32)
    assert model(torch.randn(5, *shape)).shape == (5, 10)


@pytest.mark.parametrize("shape", [(1, 32, 64), (1, 20, 50), (2, 16, 64)])
def test_audio_cnn_shapes(shape):
    model = AudioCNN(shape[0] * shape[1], 7, width=32)
    assert model(torch.randn(4, *shape)).shape == (4, 7)


def test_char_transformer_shapes_and_causality():
    model = CharTransformer(20, block_size=16, width=32, n_layer=2, n_head=4)
    idx = torch.randint(0, 20, (3, 16), generator=torch.Generator().manual_seed(0))
    logits = model(idx)
    assert logits.shape == (3, 16, 20)
    changed = idx.clone()
    changed[:, 10] = (changed[:, 10] + 1) % 20
    assert torch.allclose(model(changed)[:, :10], logits[:, :10], atol=1e-6)  # no look-ahead
    assert not torch.allclose(model(changed)[:, 10:], logits[:, 10:])
    assert model(idx[:, :5]).shape == (3, 5, 20)
    with pytest.raises(ValueError, match="block_size"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="divisible"):
        CharTransformer(20, width=30, n_head=4)


@pytest.mark.parametrize("task", ["vision", "audio", "text"])
def test_default_black_box_is_a_square_replaceable_linear(task):
    model = build_model(task, DATA[task], seed=0)
    names = replaceable(model)
    assert DEFAULT_BLACK_BOX[task] in names
    assert all(isinstance(model.get_submodule(n), nn.Linear) for n in names)
    hidden = model.get_submodule(DEFAULT_BLACK_BOX[task])
    width = MODEL_DEFAULTS[task]["width"]
    assert (hidden.in_features, hidden.out_features) == (width, width)
    x, _ = batch(task)
    before = model(x)
    layer = replace_linear(model, DEFAULT_BLACK_BOX[task], "ideal", rank=4, samples=2, sketch=8)
    assert isinstance(model.get_submodule(DEFAULT_BLACK_BOX[task]), BlackBoxLinear)
    assert DEFAULT_BLACK_BOX[task] not in replaceable(model)  # no longer an nn.Linear
    assert model(x).shape == before.shape
    assert layer.physical.queries > 0


def test_replaceable_names_of_the_models():
    assert replaceable(build_model("vision", DATA["vision"])) == ["embed", "hidden", "head"]
    assert replaceable(build_model("audio", DATA["audio"])) == ["embed", "hidden", "head"]
    names = replaceable(build_model("text", DATA["text"], n_layer=1))
    assert names == ["blocks.0.attn.qkv", "blocks.0.attn.proj", "blocks.0.mlp.0", "blocks.0.mlp.2", "head"]


@pytest.mark.parametrize("task", ["vision", "audio", "text"])
@pytest.mark.parametrize("method", ["digital", "surrogate"])
def test_models_train_a_few_steps(task, method):
    model = build_model(task, DATA[task], seed=1, width=32)
    if method != "digital":
        replace_linear(model, DEFAULT_BLACK_BOX[task], "slm", method=method, rank=4, samples=4, sketch=8, seed=1)
    opt = make_optimizer(model, lr=3e-3, lr_device=1e-2)
    x, y = batch(task, 8)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_of(task, model, x, y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]  # it fits a fixed batch


@pytest.mark.parametrize("task", ["vision", "audio", "text"])
def test_build_model_is_seeded_and_leaves_the_global_rng_alone(task):
    state = torch.random.get_rng_state()
    a, b, c = (build_model(task, DATA[task], seed=s) for s in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), state)
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name
    assert any(not torch.equal(pa, pc) for pa, pc in zip(a.parameters(), c.parameters()))


def test_build_model_sizes_and_errors():
    model = build_model("vision", DATA["vision"], width=16, channels=8)
    assert model.hidden.in_features == 16
    assert build_model("text", DATA["text"], block_size=8).block_size == 8
    assert build_model("audio", fake_dataset((1, 16, 40), n_classes=4)).head.out_features == 4
    with pytest.raises(ValueError, match="unknown task"):
        build_model("speech", DATA["audio"])
    with pytest.raises(ValueError, match="n_layer"):
        build_model("vision", DATA["vision"], n_layer=2)
