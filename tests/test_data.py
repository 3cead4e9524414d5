"""Tests of hybridlab.data. None touches the network: downloads go to a local fake downloader,
a closed port on 127.0.0.1 (offline), or a throw-away HTTP server on 127.0.0.1."""

from __future__ import annotations

import gzip
import hashlib
import http.server
import socket
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from scipy.io import wavfile

import hybridlab.data as data
from hybridlab.data import audio, download, espeak, text, vision
from hybridlab.data.bundle import DataFallbackWarning


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Every test uses one throw-away cache (shared, so eSpeak audio is synthesised once)."""
    monkeypatch.setenv(download.CACHE_ENV, str(tmp_path_factory.getbasetemp() / "cache"))


def closed_port_url(name: str = "file.bin") -> str:
    """A URL on 127.0.0.1 where nothing listens: connecting fails at once, like offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


# ----------------------------------------------------------------------------- downloads


def test_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("HYBRIDLAB_CACHE", str(tmp_path / "c"))
    assert data.cache_dir() == tmp_path / "c" and (tmp_path / "c").is_dir()
    monkeypatch.delenv("HYBRIDLAB_CACHE")
    assert data.cache_dir(create=False) == Path.home() / ".cache" / "hybridlab"


def test_fetch_writes_verified_file_and_then_uses_cache(tmp_path):
    calls = []

    def fake(url, path):
        calls.append(url)
        Path(path).write_bytes(b"good data")

    kw = dict(sha256=sha(b"good data"), fname="f.bin", cache=tmp_path, downloader=fake)
    path = data.fetch("http://x/f.bin", **kw)
    assert path.read_bytes() == b"good data"
    assert data.fetch("http://x/f.bin", **kw) == path and len(calls) == 1  # cached
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.bin"]


def test_checksum_mismatch_removes_file_and_names_hashes(tmp_path):
    def fake(url, path):
        return Path(path).write_bytes(b"corrupt")
    good = sha(b"good data")
    with pytest.raises(data.ChecksumError) as info:
        data.fetch("http://x/f.bin", sha256=good, fname="f.bin", cache=tmp_path, downloader=fake)
    msg = str(info.value)
    assert "f.bin" in msg and good in msg and sha(b"corrupt") in msg and "removed" in msg
    assert list(tmp_path.iterdir()) == []  # neither the final file nor a .part file


def test_corrupt_cached_file_is_downloaded_again(tmp_path):
    (tmp_path / "f.bin").write_bytes(b"stale")
    def fake(url, path):
        return Path(path).write_bytes(b"good data")
    with pytest.warns(UserWarning, match="downloading it again"):
        path = data.fetch(
            "u", sha256=sha(b"good data"), fname="f.bin", cache=tmp_path, downloader=fake
        )
    assert path.read_bytes() == b"good data"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, ConnectionResetError])
def test_interrupted_download_leaves_no_file(tmp_path, interrupt):
    def dies_midway(url, path):
        with open(path, "wb") as f:
            f.write(b"half of the fi")
            f.flush()
            raise interrupt("connection lost")

    expected = KeyboardInterrupt if interrupt is KeyboardInterrupt else data.DataUnavailable
    with pytest.raises(expected):
        data.fetch("u", sha256=sha(b"x"), fname="f.bin", cache=tmp_path, downloader=dies_midway)
    assert list(tmp_path.iterdir()) == []


def test_offline_raises_data_unavailable_with_instructions(tmp_path):
    url = closed_port_url("input.txt")
    with pytest.raises(data.DataUnavailable) as info:
        data.fetch(url, sha256=sha(b"x"), fname="input.txt", subdir="t", cache=tmp_path)
    msg = str(info.value)
    assert "offline" in msg and str(tmp_path / "t" / "input.txt") in msg and "--data-dir" in msg
    assert list((tmp_path / "t").iterdir()) == []


def test_download_through_local_http_server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "input.txt").write_bytes(b"First Citizen:\nhello world\n")
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/input.txt"
        bad_mirror = closed_port_url()
        path = data.fetch(
            [bad_mirror, url], sha256=sha((served / "input.txt").read_bytes()), fname="input.txt",
            cache=tmp_path / "cache",
        )
    finally:
        server.shutdown()
        server.server_close()
    assert path.read_bytes() == (served / "input.txt").read_bytes()


def test_offline_text_and_vision_fall_back_to_embedded_defaults(monkeypatch):
    monkeypatch.setattr(text, "TINY_SHAKESPEARE_URL", closed_port_url("input.txt"))
    with pytest.warns(DataFallbackWarning, match="could not download input.txt"):
        corpus = data.load_task("text", download=True)
    assert corpus.name == "pydoc-topics"

    monkeypatch.setattr(vision, "MNIST_MIRRORS", (closed_port_url("") ,))
    with pytest.warns(DataFallbackWarning, match="offline"):
        digits = data.load_task("vision", download=True)
    assert digits.name == "sklearn-digits"

    with pytest.warns(DataFallbackWarning, match="does not download the Free Spoken Digit"):
        spoken = data.load_task("audio", download=True, quick=True)
    assert spoken.name == "espeak-digits"


# ----------------------------------------------------------------------------- vision


def test_digits_split_is_deterministic_and_stratified():
    a, b = data.load_digits_dataset(seed=3), data.load_digits_dataset(seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = data.load_digits_dataset(seed=4)
    assert not torch.equal(a.y_test, c.y_test)
    assert a.name == "sklearn-digits" and a.n_classes == 10
    assert a.X_train.shape[1:] == (1, 8, 8) and a.X_train.dtype == torch.float32
    assert len(a.y_train) + len(a.y_test) == 1797 and len(a.y_test) == 450
    assert 0.0 <= float(a.X_train.min()) and float(a.X_train.max()) <= 1.0
    overall = torch.bincount(torch.cat([a.y_train, a.y_test])).double()
    assert torch.all((torch.bincount(a.y_test) - overall * 0.25).abs() <= 1.0)
    s = data.load_digits_dataset(standardise=True)
    assert abs(float(s.X_train.mean())) < 1e-5 and abs(float(s.X_train.std()) - 1) < 1e-3


def write_idx(path: Path, array: np.ndarray, gz: bool) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    blob = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(blob) if gz else blob)


def test_mnist_from_local_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    sizes, gzipped = (6, 6, 4, 4), (True, False, True, False)
    for (stem, _), n, gz in zip(vision.MNIST_FILES.values(), sizes, gzipped):
        shape = (n, 28, 28) if "images" in stem else (n,)
        write_idx(tmp_path / (stem + (".gz" if gz else "")), rng.integers(0, 10, shape), gz)
    ds = data.load_mnist(tmp_path)
    assert ds.name == "mnist" and ds.X_train.shape == (6, 1, 28, 28) and ds.y_test.shape == (4,)
    assert float(ds.X_train.max()) <= 1.0
    assert data.load_task("vision", data_dir=tmp_path).name == "mnist"

    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x09")
    with pytest.raises(ValueError, match="truncated"):
        data.load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        data.load_mnist(tmp_path / "nowhere")


# ----------------------------------------------------------------------------- FSDD


def write_wav(path: Path, rate: int, seconds: float, *, dtype=np.int16, channels: int = 1) -> None:
    t = np.arange(int(rate * seconds)) / rate
    x = 0.5 * np.sin(2 * np.pi * 440 * t)
    if channels > 1:
        x = np.stack([x] * channels, axis=1)
    if dtype in (np.int16, np.int32):
        x = (x * np.iinfo(dtype).max).astype(dtype)
    elif dtype == np.uint8:
        x = (x * 127 + 128).astype(np.uint8)
    else:
        x = x.astype(dtype)
    wavfile.write(path, rate, x)


@pytest.fixture
def fsdd_folder(tmp_path) -> Path:
    folder = tmp_path / "recordings"
    folder.mkdir()
    for digit in range(10):
        for speaker in ("jackson", "theo"):
            for index in (0, 4, 5, 49):
                write_wav(folder / f"{digit}_{speaker}_{index}.wav", 8000, 0.3)
    (folder / "README.md").write_text("not a recording")  # ignored: not .wav
    return folder


def test_parse_fsdd_names():
    assert data.parse_fsdd_name("7_jackson_32.wav") == (7, "jackson", 32)
    assert data.parse_fsdd_name("/some/dir/0_theo_0.wav") == (0, "theo", 0)
    bad_names = ("10_a_1.wav", "7-jackson-32.wav", "7_jackson.wav", "7_a_x.wav", "7_a_3.mp3")
    for bad in bad_names:
        with pytest.raises(ValueError, match=r"expected \{digit\}_\{speaker\}_\{index\}\.wav"):
            data.parse_fsdd_name(bad)


@given(st.integers(0, 9), st.from_regex(r"[A-Za-z0-9]{1,12}", fullmatch=True), st.integers(0, 99))
def test_parse_fsdd_name_round_trip(digit, speaker, index):
    assert data.parse_fsdd_name(f"{digit}_{speaker}_{index}.wav") == (digit, speaker, index)


def test_fsdd_folder_split_0_4_test_5_49_train(fsdd_folder):
    recordings = audio.list_fsdd(fsdd_folder.parent)  # finds the recordings/ subfolder
    train, test = audio.fsdd_split(recordings)
    assert {r.index for r in test} == {0, 4} and {r.index for r in train} == {5, 49}
    ds = data.load_fsdd(fsdd_folder, n_mels=32, n_frames=64)
    assert ds.name == "fsdd" and len(ds.y_train) == 40 and len(ds.y_test) == 40
    assert ds.X_train.shape == (40, 1, 32, 64) and torch.isfinite(ds.X_train).all()
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), 4))
    assert ds.meta["speakers"] == ["jackson", "theo"]
    assert data.load_task("audio", data_dir=fsdd_folder).name == "fsdd"


def test_fsdd_rejects_malformed_names(fsdd_folder):
    write_wav(fsdd_folder / "seven_jackson_3.wav", 8000, 0.1)
    write_wav(fsdd_folder / "7_jackson.wav", 8000, 0.1)
    with pytest.raises(ValueError) as info:
        data.load_fsdd(fsdd_folder)
    msg = str(info.value)
    assert "2 of 82" in msg and "'seven_jackson_3.wav'" in msg and "'7_jackson.wav'" in msg
    assert "{digit}_{speaker}_{index}.wav" in msg


def test_fsdd_empty_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no .wav files"):
        data.load_fsdd(tmp_path)


@pytest.mark.parametrize(
    "rate, dtype, channels",
    [(8000, np.int16, 1), (16000, np.int16, 1), (44100, np.int16, 2), (22050, np.float32, 1),
     (11025, np.uint8, 1), (48000, np.int32, 2)],
)
def test_read_wav_resamples_to_8khz_mono(tmp_path, rate, dtype, channels):
    path = tmp_path / "1_a_1.wav"
    write_wav(path, rate, 1.0, dtype=dtype, channels=channels)
    x = data.read_wav(path)
    assert x.dtype == np.float32 and x.shape == (8000,)
    assert 0.4 < np.abs(x[100:-100]).max() < 0.6  # amplitude 0.5 kept through scaling/resampling


def test_read_wav_rejects_non_wav(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"not a wav file at all")
    with pytest.raises(ValueError, match="cannot read .*x.wav"):
        data.read_wav(tmp_path / "x.wav")


# ----------------------------------------------------------------------------- features


def test_log_mel_shape_and_finiteness():
    g = torch.Generator().manual_seed(0)
    waves = torch.cat([torch.randn(3, 8000, generator=g), torch.zeros(1, 8000)])
    feats = data.log_mel(waves, n_mels=32, n_frames=64)
    assert feats.shape == (4, 1, 32, 64) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all()
    fb = data.mel_filterbank(256, 8000, 40)
    assert fb.shape == (40, 129) and bool((fb.sum(dim=1) > 0).all())  # no empty filter
    assert data.log_mel(waves[:, :5000], n_mels=40, n_frames=50).shape == (4, 1, 40, 50)


def test_fit_clip_centres_pads_and_crops():
    assert np.array_equal(audio.fit_clip(np.ones(4, np.float32), 8), [0, 0, 1, 1, 1, 1, 0, 0])
    assert np.array_equal(audio.fit_clip(np.arange(10, dtype=np.float32), 4), [3, 4, 5, 6])


# ----------------------------------------------------------------------------- eSpeak


TINY = espeak.EspeakConfig(voices=("en+m1", "en-us+f2", "en-gb-scotland+m3"), settings_per_voice=1)


def test_espeak_synthesis_is_deterministic_and_order_independent():
    synth = espeak.Espeak()
    assert synth.sample_rate == 22050
    first = synth.synthesize("seven", voice="en-us+m3", rate=150, pitch=40)
    synth.synthesize("four", voice="en+f2", rate=200, pitch=70)  # state must not carry over
    again = synth.synthesize("seven", voice="en-us+m3", rate=150, pitch=40)
    assert first.dtype == np.int16 and len(first) > 2000 and np.array_equal(first, again)
    with pytest.raises(ValueError, match="no voice"):
        synth.synthesize("one", voice="xx-nonexistent")


def test_espeak_digits_same_seed_same_numbers(tmp_path):
    a = espeak.spoken_digits(TINY, cache=False)
    b = espeak.spoken_digits(TINY, cache=False)
    assert len(a.waves) == TINY.n_utterances == 30
    assert all(np.array_equal(x, y) for x, y in zip(a.waves, b.waves))
    assert np.array_equal(a.rates, b.rates) and np.array_equal(a.labels, np.tile(np.arange(10), 3))
    cached = espeak.spoken_digits(TINY, cache=tmp_path)  # synthesised, written, read back
    assert all(np.array_equal(x, y) for x, y in zip(a.waves, cached.waves))

    d1 = data.load_espeak_digits(config=TINY, cache=tmp_path, test_fraction=0.34)
    d2 = data.load_espeak_digits(config=TINY, cache=tmp_path, test_fraction=0.34)
    assert all(torch.equal(x, y) for x, y in zip(d1, d2))
    assert len(d1.y_test) == 10 and len(d1.meta["test_voices"]) == 1  # one voice held out
    other = espeak.EspeakConfig(voices=TINY.voices, settings_per_voice=1, seed=1)
    d3 = data.load_espeak_digits(config=other, seed=1, cache=tmp_path, test_fraction=0.34)
    assert not torch.equal(d1.X_train[:5], d3.X_train[:5])


def test_quick_espeak_task():
    ds = data.load_task("audio", quick=True, seed=0)
    assert ds.name == "espeak-digits"
    assert len(ds.y_train) + len(ds.y_test) == espeak.EspeakConfig.quick().n_utterances == 260
    assert ds.X_train.shape[1:] == (1, 32, 64) and torch.isfinite(ds.X_train).all()
    assert abs(float(ds.X_train.mean())) < 1e-3  # standardised with train statistics
    voices, is_test = ds.meta["voice_ids"], ds.meta["is_test"]
    assert not set(voices[is_test]) & set(voices[~is_test])  # test voices are never trained on
    assert torch.equal(torch.bincount(ds.y_test), torch.full((10,), len(ds.y_test) // 10))


# ----------------------------------------------------------------------------- text


def test_text_corpus_from_file_and_folder(tmp_path):
    (tmp_path / "input.txt").write_text("First Citizen:\nBefore we proceed any further.\n")
    corpus = data.load_text_corpus(tmp_path)
    assert corpus.name == "tiny-shakespeare" and corpus.chars == tuple(sorted(set(corpus.text)))
    (tmp_path / "other.txt").write_text("abcabcabcabc")
    other = data.load_task("text", data_dir=tmp_path / "other.txt")
    assert other.name == "text-file" and other.n_classes == 3
    assert other.decode(other.encode("cab")) == "cab"
    with pytest.raises(ValueError, match="not in the text-file vocabulary"):
        other.encode("z")


def test_text_split_by_position():
    corpus = text.make_corpus("t", "0123456789" * 10, val_fraction=0.1)
    assert len(corpus.train) == 90 and len(corpus.val) == 10
    assert corpus.decode(corpus.train) + corpus.decode(corpus.val) == corpus.text


def test_pydoc_default_corpus():
    corpus = data.load_task("text")
    assert corpus.name == "pydoc-topics" and len(corpus.text) > 100_000
    n = len(corpus.text)
    assert len(corpus.train) == round(0.9 * n) and len(corpus.train) + len(corpus.val) == n
    assert corpus.decode(corpus.val[:50]) == corpus.text[len(corpus.train) : len(corpus.train) + 50]


@pytest.mark.parametrize(
    "content, error", [(b"", "empty"), (b"  \n", "empty"), (b"\xff\xfe\xfa", "UTF-8")]
)
def test_bad_text_files(tmp_path, content, error):
    (tmp_path / "bad.txt").write_bytes(content)
    with pytest.raises(ValueError, match=error):
        data.load_text_corpus(tmp_path / "bad.txt")


def test_missing_text_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="input.txt"):
        data.load_text_corpus(tmp_path)


def test_batch_sampler_is_seeded():
    corpus = text.make_corpus("t", "".join(chr(97 + i % 26) for i in range(1000)))
    x1, y1 = corpus.batch("train", 16, 8, torch.Generator().manual_seed(5))
    x2, y2 = corpus.batch("train", 16, 8, torch.Generator().manual_seed(5))
    x3, _ = corpus.batch("train", 16, 8, torch.Generator().manual_seed(6))
    assert torch.equal(x1, x2) and torch.equal(y1, y2) and not torch.equal(x1, x3)
    assert x1.shape == (8, 16) and x1.dtype == torch.long
    assert torch.equal(x1[:, 1:], y1[:, :-1])  # y is x shifted by one character
    with pytest.raises(ValueError, match="block"):
        data.get_batch(corpus.val, len(corpus.val), 2, torch.Generator())


# ----------------------------------------------------------------------------- tasks


def test_load_task_dispatch_and_unknown_task():
    with pytest.raises(ValueError, match="vision, audio, text"):
        data.load_task("speech")
    ds = data.load_task("vision", seed=1)
    X_train, y_train, X_test, y_test = ds
    assert ds.name == "sklearn-digits" and len(X_train) == len(y_train) == 1347
    assert "1347 train / 450 test" in ds.describe()
    sub = ds.subsample(100, 20, seed=0)
    assert sub.summary()["n_train"] == 100 and torch.equal(sub.y_test, ds.subsample(100, 20).y_test)
