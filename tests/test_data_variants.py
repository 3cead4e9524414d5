"""Tests of the hard task variants, the acoustic effects, group ids and the validation split.

Everything runs offline on the quick variants (a few seconds each)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import hybridlab.data as data
from hybridlab.data import acoustics, download, hard_audio, hard_vision
from hybridlab.data.audio import SAMPLE_RATE


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """One throw-away cache for every test here (the quick eSpeak audio is synthesised once)."""
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "cache"))


def same(a: data.Dataset, b: data.Dataset) -> bool:
    tensors = lambda d: (*d, d.groups_train, d.groups_test)  # noqa: E731
    return all(torch.equal(x, y) for x, y in zip(tensors(a), tensors(b)))


# ----------------------------------------------------------------------------- acoustic effects


def test_room_impulse_response_has_requested_drr_and_decay():
    rng = np.random.default_rng(0)
    h = acoustics.room_impulse_response(0.5, 6.0, rng)
    assert h[0] == 1.0 and len(h) == round(0.504 * SAMPLE_RATE)
    tail = h[1:].astype(np.float64)
    assert abs(10 * np.log10(1.0 / np.sum(tail**2)) - 6.0) < 1e-3  # direct / reverberant energy
    early, late = tail[32:800], tail[-800:]  # -60 dB over 0.5 s: the last 0.1 s is far quieter
    assert np.mean(late**2) < 1e-4 * np.mean(early**2)
    assert np.array_equal(h, acoustics.room_impulse_response(0.5, 6.0, np.random.default_rng(0)))


@pytest.mark.parametrize("exponent", [0.0, 1.0, 2.0])
def test_coloured_noise_has_its_spectral_slope(exponent):
    x = acoustics.coloured_noise(1 << 15, exponent, np.random.default_rng(1))
    assert abs(np.sqrt(np.mean(x.astype(np.float64) ** 2)) - 1.0) < 1e-5
    power = np.abs(np.fft.rfft(x)) ** 2
    f = np.fft.rfftfreq(len(x))
    keep = (f > 0.005) & (f < 0.4)
    slope = np.polyfit(np.log(f[keep]), np.log(power[keep]), 1)[0]
    assert abs(slope + exponent) < 0.1


def test_telephone_band_passes_speech_band_only():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    gain = {}
    for f in (100.0, 1000.0, 3900.0):
        y = acoustics.telephone_band(np.sin(2 * np.pi * f * t).astype(np.float32))
        gain[f] = np.sqrt(2 * np.mean(y[2000:] ** 2))
    assert 0.9 < gain[1000.0] < 1.1 and gain[100.0] < 0.05 and gain[3900.0] < 0.1


def test_mix_at_snr_measures_snr_over_the_speech():
    rng = np.random.default_rng(2)
    speech = np.zeros(8000, np.float32)
    speech[2000:4000] = rng.standard_normal(2000)
    noise = rng.standard_normal(8000).astype(np.float32)
    mixed = acoustics.mix_at_snr(speech, noise, 10.0, slice(2000, 4000))
    added = (mixed - speech).astype(np.float64)
    snr = 10 * np.log10(np.mean(speech[2000:4000].astype(np.float64) ** 2) / np.mean(added**2))
    assert abs(snr - 10.0) < 1e-3


def test_mu_law_codec_has_256_levels_and_small_relative_error():
    x = np.linspace(-1, 1, 10001).astype(np.float32)
    y = acoustics.mu_law(x)
    assert len(np.unique(y)) <= 256 and np.all(np.abs(y) <= 1.0)
    loud = np.abs(x) > 0.01
    assert np.max(np.abs(y[loud] - x[loud]) / np.abs(x[loud])) < 0.07


def test_speed_perturb_babble_hum_and_colouring():
    x = np.random.default_rng(3).standard_normal(4000).astype(np.float32)
    assert len(acoustics.speed_perturb(x, 1.25)) == 3200 and len(acoustics.speed_perturb(x, 0.8)) == 5000
    with pytest.raises(ValueError, match="positive"):
        acoustics.speed_perturb(x, 0.0)
    rng = np.random.default_rng(4)
    b = acoustics.babble(8000, [x[:1000], x[1000:3000]], rng)
    h = acoustics.hum(8000, rng)
    for noise in (b, h):
        assert noise.shape == (8000,) and abs(np.sqrt(np.mean(noise.astype(np.float64) ** 2)) - 1) < 1e-4
    taps = acoustics.colouring_filter(rng, max_db=6.0)
    response = 20 * np.log10(np.abs(np.fft.rfft(taps, 512)) + 1e-12)
    assert taps.shape == (63,) and response.max() < 7.0 and response.min() > -15.0
    assert acoustics.apply_fir(x, taps).shape == x.shape


# ----------------------------------------------------------------------------- hard audio


def test_hard_audio_is_deterministic_cached_and_voice_disjoint(tmp_path):
    a = data.load_task("audio", variant="hard", quick=True, seed=0)
    b = data.load_task("audio", variant="hard", quick=True, seed=0)  # from the feature cache
    fresh = hard_audio.load_hard_spoken_digits(quick=True, seed=0, cache=tmp_path)
    assert same(a, b) and same(a, fresh)
    assert a.name == "espeak-digits-hard" and a.X_train.shape[1:] == (1, 32, 64)
    n = hard_audio.HardAudioConfig.quick()
    assert len(a.y_train) + len(a.y_test) == len(n.voices) * 10 == 320
    assert torch.isfinite(a.X_train).all() and abs(float(a.X_train.mean())) < 1e-3
    train_voices, test_voices = set(a.groups_train.tolist()), set(a.groups_test.tolist())
    assert not train_voices & test_voices and len(test_voices) == round(0.2 * len(n.voices))
    assert [n.voices[v] for v in sorted(test_voices)] == a.meta["test_voices"]
    assert torch.equal(torch.bincount(a.y_test), torch.full((10,), len(a.y_test) // 10))
    other = data.load_task("audio", variant="hard", quick=True, seed=1)
    assert not torch.equal(a.X_train[:10], other.X_train[:10])


def test_hard_audio_effects_stay_in_their_ranges():
    ds = data.load_task("audio", variant="hard", quick=True, seed=0)
    cfg, e = hard_audio.HardAudioConfig.quick(), ds.meta["effects"]
    for key, (lo, hi) in {"speed": cfg.speed_range, "rt60": cfg.rt60_range, "drr_db": cfg.drr_range,
                          "snr_db": cfg.snr_range, "level_db": cfg.level_range}.items():  # fmt: skip
        assert lo <= float(e[key].min()) and float(e[key].max()) <= hi
    assert set(e["noise"]) == set(acoustics.NOISE_KINDS)
    start, length = e["start_s"], e["length_s"]
    assert float((start + length).max()) <= 1.0 and float(start.std()) > 0.1  # not centred
    assert float(length.min()) < 0.35 and float(length.max()) > 0.6  # variable length


def test_recording_chain_places_speech_off_centre_with_noise_around_it():
    speech = np.sin(np.arange(2400) * 0.3).astype(np.float32)  # 0.3 s
    cfg = hard_audio.HardAudioConfig(noise_kinds=("pink",), snr_range=(20.0, 20.0))
    clip, drawn = hard_audio.record(speech, np.random.default_rng(5), cfg, [])
    again, _ = hard_audio.record(speech, np.random.default_rng(5), cfg, [])
    assert clip.shape == (SAMPLE_RATE,) and np.array_equal(clip, again)
    start = int(drawn["start_s"] * SAMPLE_RATE)
    assert 10 < start != (SAMPLE_RATE - len(speech)) // 2  # off centre, silence before it
    assert np.all(clip[:start] != 0)  # the leading silence holds background noise
    assert np.abs(clip).max() <= 1.0


# ----------------------------------------------------------------------------- hard vision


def test_hard_vision_is_deterministic_and_has_no_leakage():
    a = data.load_task("vision", variant="hard", quick=True, seed=0)
    b = data.load_task("vision", variant="hard", quick=True, seed=0)
    assert same(a, b) and a.name == "sklearn-digits-hard"
    assert a.X_train.shape[1:] == (1, 16, 16) and len(a.y_train) == 1347 and len(a.y_test) == 450
    assert 0.0 <= float(a.X_train.min()) and float(a.X_train.max()) <= 1.0
    assert not set(a.groups_train.tolist()) & set(a.groups_test.tolist())
    from sklearn.datasets import load_digits

    target = torch.from_numpy(load_digits().target)
    assert torch.equal(a.y_train, target[a.groups_train]) and torch.equal(a.y_test, target[a.groups_test])
    easy = data.load_task("vision", seed=0)  # the same source images on each side as the easy task
    assert set(a.groups_train.tolist()) == set(easy.groups_train.tolist())
    assert not torch.equal(a.X_train, data.load_task("vision", variant="hard", quick=True, seed=1).X_train)


def test_hard_vision_copies_differ_and_stay_with_their_source():
    cfg = hard_vision.HardVisionConfig(train_copies=3, test_copies=2)
    ds = hard_vision.load_hard_digits(config=cfg, seed=0)
    assert len(ds.y_train) == 3 * 1347 and len(ds.y_test) == 2 * 450
    assert torch.equal(ds.groups_train[0:3], ds.groups_train[0].repeat(3))
    assert not torch.equal(ds.X_train[0], ds.X_train[1])  # two copies of one image differ
    # the digit moves: the centre of mass spreads over the canvas
    rows = torch.arange(16.0)[:, None]
    mass = ds.X_train[:, 0]
    centre = (mass * rows).sum((1, 2)) / mass.sum((1, 2))
    assert float(centre.std()) > 0.5


# ----------------------------------------------------------------------------- groups and splits


def test_dataset_checks_group_shapes_and_subsample_keeps_them():
    ds = data.load_task("vision", variant="hard", quick=True, seed=0)
    with pytest.raises(ValueError, match="groups_train must have shape"):
        data.Dataset("x", ds.X_train, ds.y_train, ds.X_test, ds.y_test, 10,
                     groups_train=ds.groups_train[:-1])  # fmt: skip
    sub = ds.subsample(200, 50, seed=3)
    from sklearn.datasets import load_digits

    target = torch.from_numpy(load_digits().target)
    assert torch.equal(sub.y_train, target[sub.groups_train]) and len(sub.groups_test) == 50


def test_validation_split_holds_out_whole_source_images_stratified():
    ds = hard_vision.load_hard_digits(config=hard_vision.HardVisionConfig(train_copies=2), seed=0)
    train, val = data.validation_split(ds, 0.2, seed=0)
    assert train.X_test is ds.X_test and train.y_test is ds.y_test  # test split untouched
    assert torch.equal(val.X_train, train.X_train) and len(val.y_train) + len(val.y_test) == len(ds.y_train)
    assert not set(val.groups_train.tolist()) & set(val.groups_test.tolist())
    assert abs(len(val.y_test) / len(ds.y_train) - 0.2) < 0.01
    counts = torch.bincount(val.y_test, minlength=10).double()
    expected = torch.bincount(ds.y_train, minlength=10).double() * len(val.y_test) / len(ds.y_train)
    assert torch.all((counts - expected).abs() <= 2.0 * 2)  # stratified up to a group of 2 copies
    again, other = data.validation_split(ds, 0.2, seed=0)[1], data.validation_split(ds, 0.2, seed=1)[1]
    assert torch.equal(again.groups_test, val.groups_test) and not torch.equal(other.groups_test, val.groups_test)


def test_validation_split_by_speaker_and_without_groups():
    audio = data.load_task("audio", variant="hard", quick=True, seed=0)
    _, val = data.validation_split(audio, 0.25, seed=0)
    held = set(val.groups_test.tolist())
    assert held and not held & set(val.groups_train.tolist())
    assert held <= set(audio.groups_train.tolist())  # validation speakers come from training only
    assert "GroupShuffleSplit" in val.meta["validation"]["rule"]

    vision = data.load_task("vision", seed=0)
    plain = data.Dataset("plain", *vision, n_classes=10)  # no groups: stratified by class
    _, pval = data.validation_split(plain, 0.2, seed=0)
    assert pval.groups_test is None and "stratified by class" in pval.meta["validation"]["rule"]
    counts = torch.bincount(pval.y_test, minlength=10).double()
    assert torch.all((counts - torch.bincount(plain.y_train).double() * 0.2).abs() <= 1.0)
    with pytest.raises(ValueError, match="fraction"):
        data.validation_split(plain, 1.0)


def test_load_task_variants():
    assert data.VARIANTS == ("easy", "hard")
    assert same(data.load_task("vision", variant="easy"), data.load_task("vision"))
    with pytest.raises(ValueError, match="unknown variant"):
        data.load_task("vision", variant="medium")
    with pytest.raises(ValueError, match="text task has no hard variant"):
        data.load_task("text", variant="hard")
    with pytest.raises(ValueError, match="real dataset"):
        data.load_task("audio", variant="hard", data_dir="/nonexistent")


def test_easy_tasks_carry_group_ids():
    from sklearn.datasets import load_digits

    vision = data.load_task("vision", seed=2)
    target = torch.from_numpy(load_digits().target)
    assert torch.equal(vision.y_train, target[vision.groups_train])  # group = source image index
    assert len(set(vision.groups_train.tolist()) | set(vision.groups_test.tolist())) == 1797
    audio = data.load_task("audio", quick=True, seed=0)
    voices, is_test = audio.meta["voice_ids"], audio.meta["is_test"]
    assert np.array_equal(audio.groups_train.numpy(), voices[~is_test])
    assert np.array_equal(audio.groups_test.numpy(), voices[is_test])


@settings(max_examples=30, deadline=None)
@given(
    n_groups=st.integers(4, 30), per_group=st.integers(1, 5), single_class=st.booleans(),
    fraction=st.floats(0.1, 0.5), seed=st.integers(0, 2**16),
)  # fmt: skip
def test_validation_split_partitions_the_training_split(n_groups, per_group, single_class, fraction, seed):
    rng = np.random.default_rng(seed)
    groups = np.repeat(rng.permutation(1000)[:n_groups], per_group)
    if single_class:  # every group one class, each class in >= 2 groups
        labels = np.repeat(np.arange(n_groups) % 2, per_group)
    else:
        labels = rng.integers(0, 3, size=len(groups))
    X = torch.arange(len(groups), dtype=torch.float32)[:, None]
    ds = data.Dataset("toy", X, torch.from_numpy(labels), X[:2], torch.zeros(2, dtype=torch.long), 3,
                      groups_train=torch.from_numpy(groups))  # fmt: skip
    train, val = data.validation_split(ds, fraction, seed)
    kept, held = val.X_train[:, 0].long(), val.X_test[:, 0].long()
    assert sorted(torch.cat([kept, held]).tolist()) == list(range(len(groups)))  # a partition
    assert len(held) > 0 and len(kept) > 0
    assert not set(groups[held.numpy()]) & set(groups[kept.numpy()])  # whole groups
    assert torch.equal(val.y_test, ds.y_train[held]) and torch.equal(train.X_train, val.X_train)


@pytest.mark.parametrize("task", ["vision", "audio"])
def test_hard_variant_defeats_a_linear_model(task):
    """The point of the hard variants (quick versions): a logistic regression on the features is
    good on the easy task and far worse on the hard one (benchmarks/data_variants.py shows the
    network staying above 95 % on the full hard tasks)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    def linear_accuracy(ds: data.Dataset) -> float:
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=500))
        clf.fit(ds.X_train.flatten(1).numpy(), ds.y_train.numpy())
        return clf.score(ds.X_test.flatten(1).numpy(), ds.y_test.numpy())

    easy = linear_accuracy(data.load_task(task, quick=True, seed=0))
    hard = linear_accuracy(data.load_task(task, variant="hard", quick=True, seed=0))
    assert easy > 0.85 and hard < 0.7 and easy - hard > 0.3, (easy, hard)


def test_benchmark_script_smoke(tmp_path):
    """benchmarks/data_variants.py runs end to end (quick data, 1-2 epochs) and writes its rows."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "data_variants.py"), "--quick", "--tasks", "vision",
           "--seeds", "0", "--json", str(tmp_path / "rows.json")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=True, env=env).stdout
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["task"], r["variant"]) for r in rows] == [("vision", "easy"), ("vision", "hard")]
    for r in rows:
        assert r["net_val_retrained"] == r["net_val"]  # retraining reproduces the chosen model
        assert 0.0 <= r["logreg_test"] <= 1.0 and r["net_epochs"] in (1, 2)
    assert "| vision | hard | 0 | 1x16x16 |" in out and "discriminates" in out
