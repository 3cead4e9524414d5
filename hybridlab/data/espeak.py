"""Spoken digits synthesised with eSpeak NG: the offline default for the audio task.

The eSpeak NG library and its voice data ship in PyPI's ``espeakng-loader`` wheel; we call it
through ctypes. Each of the ten digit words is spoken by many voices (8 English accents x 13
voice variants = 104 voices) at seeded random speaking rates, pitches and pitch ranges, resampled
to 8 kHz, placed in a 1-second clip, and mixed with seeded Gaussian noise at a random SNR. The
split holds out whole voices: no test voice is heard in training.

Determinism. eSpeak keeps state between utterances (the wave generator's phase, its random
generator, and libc's ``rand()``), so the same call twice in one process gives slightly
different samples. We therefore load the library afresh for every utterance (``dlopen`` ->
synthesise -> ``dlclose``) and seed both generators: an utterance then depends only on its text
and settings, whatever was synthesised before (about 4 ms per utterance). This relies on the
library really being unloaded, i.e. not also loaded by other code in the same process.

The clean 8 kHz speech is cached (``espeak-digits/<key>.npz`` in the cache folder, keyed by
every generation setting) so the synthesis runs once; noise, split and features are recomputed
on load (they are fast and seeded).
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from .audio import CLIP_SAMPLES, SAMPLE_RATE, features_dataset, fit_clip, resample
from .bundle import Dataset
from .download import cache_dir

GENERATOR_VERSION = 1  # bump when the synthesis or its post-processing changes
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
ACCENTS = (
    "en",  # British English
    "en-us",
    "en-029",  # Caribbean
    "en-gb-scotland",
    "en-gb-x-rp",  # received pronunciation
    "en-gb-x-gbclan",  # Lancaster
    "en-gb-x-gbcwmd",  # West Midlands
    "en-us-nyc",
)
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5")
VOICES = tuple(f"{a}+{v}" for a in ACCENTS for v in VARIANTS)  # 104 voices
QUICK_VOICES = VOICES[::4]  # 26 voices spread over all accents and variants

# eSpeak API constants (speak_lib.h)
_AUDIO_OUTPUT_SYNCHRONOUS = 0x02
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH, _RANGE = 1, 3, 4
_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)
_LOCK = threading.Lock()  # eSpeak's state is global to the process


def _loader():
    try:
        import espeakng_loader
    except ImportError as err:
        raise ImportError(
            "spoken-digit synthesis needs the eSpeak NG library from PyPI: "
            "pip install espeakng-loader (or use a folder of FSDD recordings)"
        ) from err
    return espeakng_loader


class Espeak:
    """Synthesise speech with eSpeak NG through ctypes.

    Args:
        library_path: the ``libespeak-ng`` shared library (default: espeakng-loader's).
        data_path: the ``espeak-ng-data`` folder (default: espeakng-loader's).
    """

    def __init__(self, library_path: str | None = None, data_path: str | None = None) -> None:
        if library_path is None or data_path is None:
            loader = _loader()
            library_path = library_path or loader.get_library_path()
            data_path = data_path or loader.get_data_path()
        self.library_path = library_path
        # espeak_Initialize wants the folder that *contains* espeak-ng-data
        self._home = str(Path(data_path).parent).encode()
        self._chunks: list[np.ndarray] = []
        self._callback = _SynthCallback(self._collect)  # keep a reference while in use
        try:
            self._libc = ctypes.CDLL(None)
        except OSError:  # e.g. Windows: no libc rand to seed
            self._libc = None
        self.sample_rate, self.version = self._probe()

    def _collect(self, wav, n: int, _events) -> int:
        if n > 0 and wav:
            self._chunks.append(np.ctypeslib.as_array(wav, shape=(n,)).copy())
        return 0  # 0 = continue synthesis

    def _open(self) -> ctypes.CDLL:
        lib = ctypes.CDLL(self.library_path)
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
            ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p,
        ]  # fmt: skip
        lib.espeak_Info.restype = ctypes.c_char_p
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, self._home, 0)
        if rate <= 0:
            self._close(lib)
            raise RuntimeError(
                f"eSpeak NG failed to initialise from {self._home.decode()} (code {rate}); "
                "reinstall espeakng-loader"
            )
        lib.espeak_SetSynthCallback(self._callback)
        self._rate = int(rate)
        return lib

    @staticmethod
    def _close(lib: ctypes.CDLL) -> None:
        import _ctypes

        try:
            lib.espeak_Terminate()
        finally:
            _ctypes.dlclose(lib._handle)

    def _probe(self) -> tuple[int, str]:
        with _LOCK:
            lib = self._open()
            try:
                version = lib.espeak_Info(None).decode()
            finally:
                self._close(lib)
        return self._rate, version

    def synthesize(
        self, text: str, *, voice: str = "en", rate: int = 175, pitch: int = 50,
        pitch_range: int = 50, seed: int = 0,
    ) -> np.ndarray:  # fmt: skip
        """Speak ``text``; return int16 samples at :attr:`sample_rate` Hz (22050).

        Args:
            voice: an eSpeak voice, e.g. ``"en-us+f2"`` (language + variant).
            rate: speaking rate in words per minute (80..450).
            pitch, pitch_range: base pitch and intonation range, 0..100 (50 = voice default).
            seed: seed of eSpeak's random generators (breath noise).
        """
        with _LOCK:
            lib = self._open()
            try:
                if lib.espeak_SetVoiceByName(voice.encode()) != 0:
                    raise ValueError(f"eSpeak NG has no voice {voice!r}")
                for param, value in ((_RATE, rate), (_PITCH, pitch), (_RANGE, pitch_range)):
                    lib.espeak_SetParameter(param, int(value), 0)
                if hasattr(lib, "espeak_ng_SetRandSeed"):
                    lib.espeak_ng_SetRandSeed(ctypes.c_long(seed))
                if self._libc is not None:
                    self._libc.srand(ctypes.c_uint(seed))
                self._chunks = []
                data = text.encode("utf-8") + b"\0"
                err = lib.espeak_Synth(
                    data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
                )
                if err != 0:
                    raise RuntimeError(f"espeak_Synth failed on {text!r} with code {err}")
                lib.espeak_Synchronize()
                chunks, self._chunks = self._chunks, []
            finally:
                self._close(lib)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int16)


def trim_silence(x: np.ndarray, threshold: float = 0.02) -> np.ndarray:
    """Drop leading and trailing samples quieter than ``threshold`` x the peak."""
    level = np.abs(x)
    loud = np.flatnonzero(level > threshold * level.max()) if len(x) else []
    return x[loud[0] : loud[-1] + 1] if len(loud) else x[:0]


@dataclass(frozen=True)
class EspeakConfig:
    """What to synthesise: every word x every voice x ``settings_per_voice`` random settings.

    Rates (words per minute), pitches and pitch ranges (0..100) are drawn uniformly from the
    integer ranges, with ``seed``.
    """

    voices: tuple[str, ...] = VOICES
    settings_per_voice: int = 3
    words: tuple[str, ...] = DIGIT_WORDS
    rate_range: tuple[int, int] = (110, 230)
    pitch_range: tuple[int, int] = (20, 80)
    intonation_range: tuple[int, int] = (20, 80)
    seed: int = 0

    @classmethod
    def quick(cls, seed: int = 0) -> "EspeakConfig":
        """A small configuration for tests: 26 voices x 1 setting x 10 words = 260 utterances."""
        return cls(voices=QUICK_VOICES, settings_per_voice=1, seed=seed)

    @property
    def n_utterances(self) -> int:
        return len(self.voices) * self.settings_per_voice * len(self.words)

    def key(self, espeak_version: str) -> str:
        """A short hash of every setting that changes the synthesised audio."""
        blob = json.dumps(
            {**asdict(self), "espeak": espeak_version, "generator": GENERATOR_VERSION},
            sort_keys=True,
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class SpokenDigits:
    """Clean synthesised utterances at 8 kHz, before noise and features.

    ``waves[i]`` is float32 speech (silence trimmed) of ``words[labels[i]]`` spoken by
    ``config.voices[voice_ids[i]]`` with ``rates[i]``, ``pitches[i]``, ``ranges[i]``.
    """

    config: EspeakConfig
    waves: list[np.ndarray]
    labels: np.ndarray
    voice_ids: np.ndarray
    rates: np.ndarray
    pitches: np.ndarray
    ranges: np.ndarray
    meta: dict = field(default_factory=dict)


def synthesize_digits(config: EspeakConfig, espeak: Espeak | None = None) -> SpokenDigits:
    """Synthesise every (voice, setting, word) of ``config`` (no cache, no noise)."""
    espeak = espeak or Espeak()
    rng = np.random.default_rng(config.seed)
    n_settings = len(config.voices) * config.settings_per_voice
    draws = {
        name: rng.integers(lo, hi, endpoint=True, size=n_settings)
        for name, (lo, hi) in (
            ("rate", config.rate_range),
            ("pitch", config.pitch_range),
            ("range", config.intonation_range),
        )
    }
    waves, labels, voice_ids, rates, pitches, ranges = [], [], [], [], [], []
    start = time.perf_counter()
    for s in range(n_settings):
        v = s // config.settings_per_voice
        rate, pitch, rng_ = (int(draws[k][s]) for k in ("rate", "pitch", "range"))
        for label, word in enumerate(config.words):
            raw = espeak.synthesize(
                word, voice=config.voices[v], rate=rate, pitch=pitch, pitch_range=rng_,
                seed=config.seed,
            )  # fmt: skip
            speech = trim_silence(raw.astype(np.float32) / 32768.0)
            if len(speech) == 0:
                raise RuntimeError(f"eSpeak produced silence for {word!r} ({config.voices[v]})")
            waves.append(resample(speech, espeak.sample_rate, SAMPLE_RATE))
            labels.append(label)
            voice_ids.append(v)
            rates.append(rate)
            pitches.append(pitch)
            ranges.append(rng_)
    meta = {"espeak_version": espeak.version, "seconds": time.perf_counter() - start}
    as_int = lambda a: np.asarray(a, dtype=np.int64)  # noqa: E731
    return SpokenDigits(
        config, waves, as_int(labels), as_int(voice_ids), as_int(rates), as_int(pitches),
        as_int(ranges), meta,
    )  # fmt: skip


def _quantise(x: np.ndarray) -> np.ndarray:
    """float in [-1, 1] -> int16, the storage format of the cache."""
    return np.round(np.clip(x, -1.0, 1.0) * 32767).astype(np.int16)


def _save(path: Path, digits: SpokenDigits) -> None:
    """Write the utterances as one int16 array plus offsets, atomically."""
    lengths = np.array([len(w) for w in digits.waves], dtype=np.int64)
    pcm = np.concatenate(digits.waves) if digits.waves else np.zeros(0, np.float32)
    buf = io.BytesIO()
    np.savez_compressed(
        buf,
        pcm=_quantise(pcm),
        lengths=lengths,
        labels=digits.labels,
        voice_ids=digits.voice_ids,
        rates=digits.rates,
        pitches=digits.pitches,
        ranges=digits.ranges,
        config=json.dumps(asdict(digits.config)),
    )
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        tmp.write_bytes(buf.getvalue())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path, config: EspeakConfig) -> SpokenDigits:
    with np.load(path) as f:
        pcm = f["pcm"].astype(np.float32) / 32767.0
        offsets = np.cumsum(f["lengths"])[:-1]
        arrays = {k: f[k] for k in ("labels", "voice_ids", "rates", "pitches", "ranges")}
    return SpokenDigits(config, list(np.split(pcm, offsets)), meta={"cache": str(path)}, **arrays)


def spoken_digits(
    config: EspeakConfig, *, cache: bool | str | os.PathLike[str] = True
) -> SpokenDigits:
    """Clean utterances for ``config``: from the cache when present, else synthesised (and cached).

    Args:
        cache: ``True`` for the default cache folder, a folder, or ``False`` for no cache.
    """
    espeak = Espeak()
    if cache is False:
        digits = synthesize_digits(config, espeak)
        digits.waves = [_quantise(w).astype(np.float32) / 32767 for w in digits.waves]
        return digits  # quantised like a cached copy, so both paths give the same numbers
    folder = (cache_dir() if cache is True else Path(cache)) / "espeak-digits"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{config.key(espeak.version)}.npz"
    if path.exists():
        try:
            return _load(path, config)
        except (OSError, ValueError, KeyError):
            path.unlink(missing_ok=True)  # unreadable cache: synthesise again
    digits = synthesize_digits(config, espeak)
    _save(path, digits)
    loaded = _load(path, config)
    loaded.meta.update(digits.meta)
    return loaded


def add_noise(
    clips: np.ndarray, snr_db: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Add white Gaussian noise to each row of ``clips`` at the given SNRs (dB, per row).

    The signal power is measured over the speech, i.e. the non-zero samples of the clip.
    """
    out = np.empty_like(clips)
    for i, (x, snr) in enumerate(zip(clips, snr_db)):
        speech = x[x != 0]
        power = float(np.mean(np.square(speech))) if len(speech) else 0.0
        sigma = np.sqrt(power / 10.0 ** (snr / 10.0))
        out[i] = x + sigma * rng.standard_normal(len(x)).astype(np.float32)
    return out


def voice_split(n_voices: int, test_fraction: float, seed: int) -> np.ndarray:
    """Indices of the held-out test voices: a seeded ``test_fraction`` of all voices (>= 1)."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if n_voices < 2:
        raise ValueError("a split by voice needs at least two voices")
    n_test = min(n_voices - 1, max(1, round(test_fraction * n_voices)))
    return np.sort(np.random.default_rng(seed).permutation(n_voices)[:n_test])


def load_espeak_digits(
    *,
    quick: bool = False,
    seed: int = 0,
    test_fraction: float = 0.2,
    snr_db: tuple[float, float] = (5.0, 25.0),
    n_mels: int = 32,
    n_frames: int = 64,
    config: EspeakConfig | None = None,
    cache: bool | str | os.PathLike[str] = True,
) -> Dataset:
    """Synthesised spoken digits as standardised log-mel features (the offline audio default).

    Args:
        quick: the small configuration (:meth:`EspeakConfig.quick`, 260 utterances) instead of
            the default (104 voices x 3 settings x 10 words = 3120 utterances).
        seed: seeds the settings, the noise and the voice split.
        test_fraction: fraction of *voices* held out for the test set.
        snr_db: range of the per-utterance signal-to-noise ratio (uniform, in dB).
        config: overrides ``quick`` and ``seed`` for the synthesis.
        cache: see :func:`spoken_digits`.

    Returns:
        A :class:`Dataset` named ``"espeak-digits"`` with ``X`` of shape
        ``(n, 1, n_mels, n_frames)``; its group ids are voice indices into ``config.voices``.
    """
    start = time.perf_counter()
    config = config or (EspeakConfig.quick(seed) if quick else EspeakConfig(seed=seed))
    digits = spoken_digits(config, cache=cache)
    rng = np.random.default_rng([seed, 1])  # noise stream, independent of the settings stream
    clips = np.stack([fit_clip(w, CLIP_SAMPLES) for w in digits.waves])
    snrs = rng.uniform(*snr_db, size=len(clips))
    noisy = add_noise(clips, snrs, rng)
    test_voices = voice_split(len(config.voices), test_fraction, seed)
    is_test = np.isin(digits.voice_ids, test_voices)
    meta = {
        "source": "eSpeak NG via espeakng-loader",
        "config": asdict(config),
        "split": f"by voice: {len(test_voices)} of {len(config.voices)} voices held out",
        "test_voices": [config.voices[v] for v in test_voices],
        "snr_db": snrs,
        "voice_ids": digits.voice_ids,
        "is_test": is_test,
        **digits.meta,
    }
    dataset = features_dataset(
        "espeak-digits",
        list(noisy[~is_test]),
        digits.labels[~is_test],
        list(noisy[is_test]),
        digits.labels[is_test],
        n_mels=n_mels,
        n_frames=n_frames,
        meta=meta,
    )
    dataset.meta["load_seconds"] = time.perf_counter() - start
    return replace(
        dataset,
        groups_train=torch.from_numpy(digits.voice_ids[~is_test]),
        groups_test=torch.from_numpy(digits.voice_ids[is_test]),
    )
