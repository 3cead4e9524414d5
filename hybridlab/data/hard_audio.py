"""The hard audio task: synthesised spoken digits that sound recorded, not synthesised.

The easy task (:func:`~hybridlab.data.espeak.load_espeak_digits`) centres clean eSpeak speech in
a 1-second clip and adds white noise; a logistic regression on its log-mel features is almost as
good as a network. Real recordings differ in ways a linear model cannot absorb. Here every
utterance goes through the chain of a real recording (:mod:`hybridlab.data.acoustics`):

1. eSpeak NG speech: more voices than the easy task (8 English accents x 28 voice variants), a
   wider range of speaking rates, pitches and intonation;
2. speed perturbation (tempo, pitch and formants together, a different vocal-tract length);
3. a synthetic room (random reverberation time and direct-to-reverberant ratio);
4. a random place in the clip: variable leading and trailing silence, not centred;
5. background noise at a random SNR: white, pink, brown, mains hum or babble of other
   utterances (from the same side of the split, so no test voice leaks into training);
6. a microphone and channel colouring (random smooth equaliser);
7. the telephone line: 300-3400 Hz band-pass at 8 kHz and an 8-bit mu-law codec at a random level.

The features are those of the easy task (unit-RMS clip, 32 log-mel bands x 64 frames,
standardised per band with training statistics), so the same models run on both. The split
holds out whole voices; the group id of each example is its voice.

Every random choice is seeded: an utterance's effects come from a generator seeded with
``(seed, index)``, so the same seed gives the same data bit for bit. The clean speech is cached
by :func:`~hybridlab.data.espeak.spoken_digits`; the finished features are cached too
(``hard-audio/<key>.pt`` in the cache folder).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from . import acoustics
from .audio import CLIP_SAMPLES, features_dataset
from .bundle import Dataset
from .download import cache_dir
from .espeak import ACCENTS, Espeak, EspeakConfig, spoken_digits, voice_split

HARD_AUDIO_VERSION = 1  # bump when the effects chain changes (invalidates the feature cache)

#: eSpeak voice variants of the hard task: the 13 standard ones and 15 named voices
HARD_VARIANTS = (
    "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "f1", "f2", "f3", "f4", "f5",
    "Andy", "Annie", "aunty", "belinda", "caleb", "ed", "grandma", "grandpa", "klatt3",
    "linda", "max", "michel", "quincy", "steph", "travis",
)  # fmt: skip
HARD_VOICES = tuple(f"{a}+{v}" for a in ACCENTS for v in HARD_VARIANTS)  # 224 voices
QUICK_HARD_VOICES = HARD_VOICES[::7]  # 32 voices spread over accents and variants


@dataclass(frozen=True)
class HardAudioConfig:
    """The ranges of every effect (uniform draws unless said otherwise).

    Attributes:
        voices: eSpeak voices (accent + variant); each is one group (speaker).
        settings_per_voice: random (rate, pitch, intonation) settings per voice; each speaks
            all ten digits.
        rate_range: speaking rate, words per minute.
        pitch_range, intonation_range: eSpeak base pitch and pitch range, 0..100.
        speed_range: speed-perturbation factor (> 1: faster and higher).
        rt60_range: reverberation time, seconds.
        drr_range: direct-to-reverberant ratio, dB.
        colouring_db: the microphone/channel equaliser's gains lie in +-colouring_db dB.
        snr_range: signal-to-noise ratio of the background noise, dB (over the speech).
        noise_kinds: the background noises, drawn with equal probability.
        babble_talkers: the number of other utterances in babble noise (inclusive range).
        level_range: peak level before the mu-law codec, dB full scale.
        test_fraction: fraction of voices held out for the test split.
    """

    voices: tuple[str, ...] = HARD_VOICES
    settings_per_voice: int = 3
    rate_range: tuple[int, int] = (100, 240)
    pitch_range: tuple[int, int] = (0, 100)
    intonation_range: tuple[int, int] = (0, 100)
    speed_range: tuple[float, float] = (0.9, 1.1)
    rt60_range: tuple[float, float] = (0.1, 0.4)
    drr_range: tuple[float, float] = (5.0, 20.0)
    colouring_db: float = 6.0
    snr_range: tuple[float, float] = (20.0, 40.0)
    noise_kinds: tuple[str, ...] = acoustics.NOISE_KINDS
    babble_talkers: tuple[int, int] = (3, 6)
    level_range: tuple[float, float] = (-20.0, -1.0)
    test_fraction: float = 0.2

    @classmethod
    def quick(cls) -> HardAudioConfig:
        """A small configuration for tests: 32 voices x 1 setting x 10 digits = 320 clips."""
        return cls(voices=QUICK_HARD_VOICES, settings_per_voice=1)

    def speech(self, seed: int) -> EspeakConfig:
        """The eSpeak synthesis behind this configuration."""
        return EspeakConfig(
            voices=self.voices, settings_per_voice=self.settings_per_voice,
            rate_range=self.rate_range, pitch_range=self.pitch_range,
            intonation_range=self.intonation_range, seed=seed,
        )  # fmt: skip

    def key(self, seed: int, espeak_version: str, n_mels: int, n_frames: int) -> str:
        """A short hash of everything that changes the finished features."""
        blob = json.dumps(
            {**asdict(self), "seed": seed, "espeak": espeak_version, "n_mels": n_mels,
             "n_frames": n_frames, "version": HARD_AUDIO_VERSION},
            sort_keys=True,
        )  # fmt: skip
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def place(x: np.ndarray, start: int, n: int = CLIP_SAMPLES) -> np.ndarray:
    """Put ``x`` at sample ``start`` of an ``n``-sample silent clip (the end is cut if too long)."""
    out = np.zeros(n, dtype=np.float32)
    part = x[: max(0, n - start)]
    out[start : start + len(part)] = part
    return out


def record(
    speech: np.ndarray,
    rng: np.random.Generator,
    config: HardAudioConfig,
    talkers: list[np.ndarray],
) -> tuple[np.ndarray, dict[str, float | str]]:
    """Turn one clean utterance into a 1-second recording; return it and what was drawn.

    Args:
        speech: clean 8 kHz speech (silence trimmed).
        rng: the utterance's own generator.
        talkers: candidate utterances for babble noise (other speakers, same split).
    """
    n = CLIP_SAMPLES
    drawn: dict[str, float | str] = {
        "speed": rng.uniform(*config.speed_range),
        "rt60": rng.uniform(*config.rt60_range),
        "drr_db": rng.uniform(*config.drr_range),
        "snr_db": rng.uniform(*config.snr_range),
        "noise": str(rng.choice(config.noise_kinds)),
        "level_db": rng.uniform(*config.level_range),
    }
    x = acoustics.speed_perturb(speech, drawn["speed"])
    if len(x) > n:  # too slow for the clip: keep the middle second of the word
        cut = (len(x) - n) // 2
        x = x[cut : cut + n]
    start = int(rng.integers(0, n - len(x) + 1))
    drawn["start_s"], drawn["length_s"] = start / n, len(x) / n
    rir = acoustics.room_impulse_response(drawn["rt60"], drawn["drr_db"], rng)
    clip = place(acoustics.reverberate(x, rir), start, n)
    kind = drawn["noise"]
    if kind == "babble":
        k = int(rng.integers(config.babble_talkers[0], config.babble_talkers[1] + 1))
        chosen = rng.choice(len(talkers), size=min(k, len(talkers)), replace=False)
        noise = acoustics.babble(n, [talkers[i] for i in chosen], rng)
    elif kind == "hum":
        noise = acoustics.hum(n, rng)
    else:
        exponent = {"white": 0.0, "pink": 1.0, "brown": 2.0}[kind]
        noise = acoustics.coloured_noise(n, exponent, rng)
    clip = acoustics.mix_at_snr(clip, noise, drawn["snr_db"], slice(start, start + len(x)))
    clip = acoustics.apply_fir(clip, acoustics.colouring_filter(rng, max_db=config.colouring_db))
    clip = acoustics.telephone_band(clip)
    peak = float(np.abs(clip).max()) + 1e-12
    clip = acoustics.mu_law(clip * (10.0 ** (drawn["level_db"] / 20.0) / peak))
    return clip, drawn


def _build(config: HardAudioConfig, seed: int, n_mels: int, n_frames: int, cache) -> Dataset:
    digits = spoken_digits(config.speech(seed), cache=cache)
    test_voices = voice_split(len(config.voices), config.test_fraction, seed)
    is_test = np.isin(digits.voice_ids, test_voices)
    clips, drawn = [], []
    for i, speech in enumerate(digits.waves):
        rng = np.random.default_rng([seed, 9, i])
        same_side = np.flatnonzero(
            (is_test == is_test[i]) & (digits.voice_ids != digits.voice_ids[i])
        )
        # babble talkers: a seeded handful of other speakers' utterances from the same split
        if len(same_side) == 0:
            raise ValueError("babble needs a second voice on each side of the split; add voices")
        chosen = rng.choice(same_side, size=min(8, len(same_side)), replace=False)
        pool = [digits.waves[j] for j in chosen]
        clip, d = record(speech, rng, config, pool)
        clips.append(clip)
        drawn.append(d)
    meta = {
        "source": "eSpeak NG via espeakng-loader, recorded through hybridlab.data.acoustics",
        "config": asdict(config),
        "seed": seed,
        "split": f"by voice: {len(test_voices)} of {len(config.voices)} voices held out",
        "test_voices": [config.voices[v] for v in test_voices],
        "effects": {
            k: [d[k] for d in drawn] if k == "noise" else torch.tensor([d[k] for d in drawn])
            for k in drawn[0]
        },  # per clip, in the order of generation (voice by voice); see is_test
        "voice_ids": torch.from_numpy(digits.voice_ids),
        "is_test": torch.from_numpy(is_test),
        "espeak_version": Espeak().version,
    }
    clips_arr = np.stack(clips)
    dataset = features_dataset(
        "espeak-digits-hard",
        list(clips_arr[~is_test]),
        digits.labels[~is_test],
        list(clips_arr[is_test]),
        digits.labels[is_test],
        n_mels=n_mels,
        n_frames=n_frames,
        meta=meta,
    )
    return replace(
        dataset,
        groups_train=torch.from_numpy(digits.voice_ids[~is_test]),
        groups_test=torch.from_numpy(digits.voice_ids[is_test]),
    )


def load_hard_spoken_digits(
    *,
    quick: bool = False,
    seed: int = 0,
    n_mels: int = 32,
    n_frames: int = 64,
    config: HardAudioConfig | None = None,
    cache: bool | str | os.PathLike[str] = True,
) -> Dataset:
    """The hard audio task: recorded-sounding spoken digits as standardised log-mel features.

    Args:
        quick: the small configuration (:meth:`HardAudioConfig.quick`, 320 clips) instead of
            the default (224 voices x 3 settings x 10 digits = 6720 clips).
        seed: seeds the synthesis settings, every effect and the voice split.
        config: overrides ``quick``.
        cache: ``True`` for the default cache folder, a folder, or ``False`` for no cache (the
            features are then computed afresh; the numbers are the same either way).

    Returns:
        A :class:`Dataset` named ``"espeak-digits-hard"`` with ``X`` of shape
        ``(n, 1, n_mels, n_frames)`` and voice indices (into ``config.voices``) as group ids.
    """
    start = time.perf_counter()
    config = config or (HardAudioConfig.quick() if quick else HardAudioConfig())
    if cache is False:
        dataset = _build(config, seed, n_mels, n_frames, cache=False)
    else:
        folder = (cache_dir() if cache is True else Path(cache)) / "hard-audio"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{config.key(seed, Espeak().version, n_mels, n_frames)}.pt"
        dataset = _load(path)
        if dataset is None:
            dataset = _build(config, seed, n_mels, n_frames, cache=cache)
            _save(path, dataset)
    dataset.meta["load_seconds"] = time.perf_counter() - start
    return dataset


def _save(path: Path, dataset: Dataset) -> None:
    """Write the dataset with ``torch.save``, atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        torch.save(asdict(dataset), tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _load(path: Path) -> Dataset | None:
    """The cached dataset, or ``None`` when absent or unreadable (then it is rebuilt)."""
    if not path.exists():
        return None
    try:
        fields = torch.load(path, weights_only=True)  # tensors, lists, dicts, numbers only
        return Dataset(**fields)
    except Exception:  # noqa: BLE001 -- any unreadable cache file is rebuilt
        path.unlink(missing_ok=True)
        return None
