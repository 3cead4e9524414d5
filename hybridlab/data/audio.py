"""Spoken digits: the Free Spoken Digit Dataset (FSDD) from a local folder, and log-mel features.

FSDD recordings are wav files named ``{digit}_{speaker}_{index}.wav`` (8 kHz mono); by
convention indices 0-4 form the test set and 5-49 the training set. The offline default, spoken
digits synthesised with eSpeak NG, lives in :mod:`hybridlab.data.espeak` and shares the features
defined here: every recording is brought to 8 kHz mono, normalised to unit RMS, centred in a
1-second window (padded or cropped), and turned into a log-mel spectrogram computed with torch
only.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .bundle import Dataset

SAMPLE_RATE = 8000
CLIP_SAMPLES = SAMPLE_RATE  # one second
FSDD_PATTERN = re.compile(r"^(?P<digit>[0-9])_(?P<speaker>[A-Za-z0-9-]+)_(?P<index>[0-9]+)\.wav$")
FSDD_EXPECTED = "{digit}_{speaker}_{index}.wav, e.g. 7_jackson_32.wav"
FSDD_TEST_MAX_INDEX = 4  # indices 0..4 -> test, 5..49 -> train


# ----------------------------------------------------------------------------- file names


@dataclass(frozen=True)
class FsddRecording:
    """One FSDD file and the fields parsed from its name."""

    path: Path
    digit: int
    speaker: str
    index: int


def parse_fsdd_name(name: str) -> tuple[int, str, int]:
    """Parse ``"{digit}_{speaker}_{index}.wav"`` into ``(digit, speaker, index)``.

    Raises:
        ValueError: the name does not follow the pattern.
    """
    m = FSDD_PATTERN.match(Path(name).name)
    if m is None:
        raise ValueError(f"{name!r} is not an FSDD file name; expected {FSDD_EXPECTED}")
    return int(m["digit"]), m["speaker"], int(m["index"])


def list_fsdd(folder: str | os.PathLike[str]) -> list[FsddRecording]:
    """All FSDD recordings in ``folder`` (or its ``recordings/`` subfolder), sorted by name.

    Files that do not end in ``.wav`` are ignored; a ``.wav`` file with a malformed name is an
    error, because a folder given as FSDD should hold FSDD recordings only.

    Raises:
        FileNotFoundError: the folder does not exist or holds no ``.wav`` files.
        ValueError: some ``.wav`` names are malformed (the first few are listed).
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"FSDD folder {folder} does not exist")
    wavs = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".wav" and p.is_file())
    if not wavs and (folder / "recordings").is_dir():
        return list_fsdd(folder / "recordings")
    if not wavs:
        raise FileNotFoundError(
            f"no .wav files in {folder}; expected Free Spoken Digit Dataset recordings named "
            f"{FSDD_EXPECTED} (the 'recordings' folder of the FSDD repository)"
        )
    good, bad = [], []
    for p in wavs:
        m = FSDD_PATTERN.match(p.name)
        if m is None:
            bad.append(p.name)
        else:
            good.append(FsddRecording(p, int(m["digit"]), m["speaker"], int(m["index"])))
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5]) + (" ..." if len(bad) > 5 else "")
        raise ValueError(
            f"{len(bad)} of {len(wavs)} .wav files in {folder} are not named {FSDD_EXPECTED}: "
            f"{shown}. Rename or remove them, or point to a folder of FSDD recordings only."
        )
    return good


def fsdd_split(recordings: Sequence[FsddRecording], test_max_index: int = FSDD_TEST_MAX_INDEX):
    """The conventional split: ``index <= test_max_index`` is test, the rest is train.

    Returns:
        ``(train, test)`` lists of recordings.
    """
    train = [r for r in recordings if r.index > test_max_index]
    test = [r for r in recordings if r.index <= test_max_index]
    return train, test


# ----------------------------------------------------------------------------- waveforms


def to_float_mono(data: np.ndarray, *, name: str = "audio") -> np.ndarray:
    """Convert wav samples (int16/int32/uint8/float, mono or multi-channel) to float32 mono."""
    if data.dtype == np.uint8:
        x = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        x = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    elif np.issubdtype(data.dtype, np.floating):
        x = data.astype(np.float32)
    else:
        raise ValueError(f"{name}: unsupported sample type {data.dtype}")
    if x.ndim == 2:
        x = x.mean(axis=1)  # (samples, channels) -> mono
    elif x.ndim != 1:
        raise ValueError(f"{name}: expected 1-D or (samples, channels) audio, got {x.shape}")
    return x


def resample(x: np.ndarray, rate: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling (scipy.signal.resample_poly) from ``rate`` to ``target`` Hz."""
    if rate == target:
        return x.astype(np.float32, copy=False)
    from scipy.signal import resample_poly

    g = math.gcd(int(rate), int(target))
    return resample_poly(x, target // g, int(rate) // g).astype(np.float32)


def read_wav(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Read a wav file as float32 mono at ``sample_rate`` Hz (resampled when needed).

    Raises:
        ValueError: the file cannot be read as wav audio or holds no samples.
    """
    from scipy.io import wavfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", wavfile.WavFileWarning)  # unknown chunks, e.g. LIST
            rate, data = wavfile.read(path)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"cannot read {path} as a wav file: {err}") from err
    if data.size == 0:
        raise ValueError(f"{path} holds no audio samples")
    return resample(to_float_mono(data, name=str(path)), rate, sample_rate)


def fit_clip(x: np.ndarray, n: int = CLIP_SAMPLES) -> np.ndarray:
    """Centre ``x`` in ``n`` samples: zero-pad both sides, or crop the middle."""
    if len(x) >= n:
        start = (len(x) - n) // 2
        return x[start : start + n]
    out = np.zeros(n, dtype=np.float32)
    start = (n - len(x)) // 2
    out[start : start + len(x)] = x
    return out


def normalise_rms(x: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    """Scale to unit root-mean-square (silence stays silence)."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return (x / (rms + eps)).astype(np.float32) if rms > eps else x.astype(np.float32)


def clips(waves: Sequence[np.ndarray], n: int = CLIP_SAMPLES) -> torch.Tensor:
    """Stack waveforms into an ``(n_waves, n)`` float32 tensor of unit-RMS, centred clips."""
    return torch.from_numpy(np.stack([normalise_rms(fit_clip(w, n)) for w in waves]))


# ----------------------------------------------------------------------------- features


def mel_filterbank(
    n_fft: int, sample_rate: int, n_mels: int, f_min: float = 0.0, f_max: float | None = None
) -> torch.Tensor:
    """Triangular mel filters (HTK mel scale), shape ``(n_mels, n_fft // 2 + 1)``."""
    f_max = sample_rate / 2 if f_max is None else f_max

    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0.0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    edges = mel_to_hz(
        torch.linspace(
            float(hz_to_mel(torch.tensor(f_min))), float(hz_to_mel(torch.tensor(f_max))), n_mels + 2
        ).double()
    )
    lo, mid, hi = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (freqs - lo) / (mid - lo)
    falling = (hi - freqs) / (hi - mid)
    return torch.clamp(torch.minimum(rising, falling), min=0.0).float()


def log_mel(
    waves: torch.Tensor,
    *,
    sample_rate: int = SAMPLE_RATE,
    n_mels: int = 32,
    n_frames: int = 64,
    n_fft: int = 256,
    eps: float = 1e-6,
    chunk: int = 512,
) -> torch.Tensor:
    """Log-mel spectrograms of equal-length waveforms, computed with ``torch.stft``.

    The hop is ``samples // n_frames`` (125 samples = 15.6 ms for 1 s at 8 kHz), the window a
    Hann window of ``n_fft`` samples (32 ms), and the frame axis is cropped or zero-padded to
    exactly ``n_frames``.

    Args:
        waves: ``(n, samples)`` float tensor.

    Returns:
        ``(n, 1, n_mels, n_frames)`` float32 tensor of ``log(mel power + eps)``.
    """
    if waves.ndim != 2:
        raise ValueError(f"log_mel expects (n, samples) waveforms, got shape {tuple(waves.shape)}")
    waves = waves.float()
    hop = max(1, waves.shape[1] // n_frames)
    window = torch.hann_window(n_fft, device=waves.device)
    fbank = mel_filterbank(n_fft, sample_rate, n_mels).to(waves.device)
    out = []
    for part in waves.split(chunk):
        spec = torch.stft(part, n_fft, hop_length=hop, window=window, return_complex=True)
        mel = fbank @ spec.abs().square()  # (chunk, n_mels, frames)
        mel = mel[..., :n_frames]
        if mel.shape[-1] < n_frames:
            mel = torch.nn.functional.pad(mel, (0, n_frames - mel.shape[-1]))
        out.append(torch.log(mel + eps))
    return torch.cat(out)[:, None] if out else waves.new_zeros(0, 1, n_mels, n_frames)


def standardise_features(
    train: torch.Tensor, *others: torch.Tensor
) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    """Standardise each mel band with the training mean and standard deviation.

    Args:
        train: ``(n, 1, n_mels, n_frames)`` features that define the statistics.
        others: further feature tensors (e.g. test) transformed with the same statistics.

    Returns:
        ``([train, *others] standardised, {"mean": ..., "std": ...})`` with statistics of
        shape ``(1, 1, n_mels, 1)``.
    """
    mean = train.mean(dim=(0, 1, 3), keepdim=True)
    std = train.std(dim=(0, 1, 3), keepdim=True).clamp_min(1e-6)
    return [(t - mean) / std for t in (train, *others)], {"mean": mean, "std": std}


def features_dataset(
    name: str,
    train_waves: Sequence[np.ndarray],
    y_train: Sequence[int],
    test_waves: Sequence[np.ndarray],
    y_test: Sequence[int],
    *,
    n_mels: int = 32,
    n_frames: int = 64,
    meta: dict | None = None,
) -> Dataset:
    """Turn 8 kHz waveforms into a standardised log-mel :class:`Dataset` of spoken digits."""
    X_train = log_mel(clips(train_waves), n_mels=n_mels, n_frames=n_frames)
    X_test = log_mel(clips(test_waves), n_mels=n_mels, n_frames=n_frames)
    (X_train, X_test), stats = standardise_features(X_train, X_test)
    feature_meta = {
        "sample_rate": SAMPLE_RATE,
        "clip_samples": CLIP_SAMPLES,
        "n_fft": 256,
        "hop_length": CLIP_SAMPLES // n_frames,
        "n_mels": n_mels,
        "n_frames": n_frames,
        "standardisation": stats,
    }
    return Dataset(
        name=name,
        X_train=X_train.contiguous(),
        y_train=torch.as_tensor(np.asarray(y_train, dtype=np.int64)),
        X_test=X_test.contiguous(),
        y_test=torch.as_tensor(np.asarray(y_test, dtype=np.int64)),
        n_classes=10,
        meta={**(meta or {}), "features": feature_meta},
    )


def load_fsdd(
    folder: str | os.PathLike[str],
    *,
    n_mels: int = 32,
    n_frames: int = 64,
    test_max_index: int = FSDD_TEST_MAX_INDEX,
) -> Dataset:
    """The Free Spoken Digit Dataset from a local folder of wav files, as log-mel features.

    Any sample rate, sample type and channel count is accepted (resampled to 8 kHz mono).
    FSDD cannot be downloaded by hybridlab: clone or unpack it and pass its ``recordings``
    folder.

    Returns:
        A :class:`Dataset` named ``"fsdd"``, ``X`` of shape ``(n, 1, n_mels, n_frames)``.
    """
    recordings = list_fsdd(folder)
    train, test = fsdd_split(recordings, test_max_index)
    if not train or not test:
        raise ValueError(
            f"the FSDD split of {folder} is empty on one side ({len(train)} train, {len(test)} "
            f"test): indices 0-{test_max_index} are test, the others train"
        )
    meta = {
        "source": str(Path(folder).expanduser()),
        "split": f"index 0-{test_max_index} test, >{test_max_index} train",
        "speakers": sorted({r.speaker for r in recordings}),
    }
    return features_dataset(
        "fsdd",
        [read_wav(r.path) for r in train],
        [r.digit for r in train],
        [read_wav(r.path) for r in test],
        [r.digit for r in test],
        n_mels=n_mels,
        n_frames=n_frames,
        meta=meta,
    )
