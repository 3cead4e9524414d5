"""Acoustic effects that make clean synthetic speech sound recorded: room, microphone, noise, line.

Each function takes a ``numpy.random.Generator`` (or fixed parameters) and returns float32
samples, so a seeded generator gives the same audio every time. Sample rate: 8 kHz throughout.

* :func:`speed_perturb` -- play faster or slower (tempo, pitch and formants move together, like
  a longer or shorter vocal tract: a new speaker from the same voice);
* :func:`room_impulse_response` / :func:`reverberate` -- a synthetic room: a direct path plus an
  exponentially decaying noise tail with reverberation time RT60 and a direct-to-reverberant
  ratio (the standard statistical model of late reverberation);
* :func:`colouring_filter` -- a microphone and channel frequency response: a smooth random
  equaliser (FIR from scipy's ``firwin2``);
* :func:`coloured_noise`, :func:`hum`, :func:`babble` -- background noise: white, pink, brown,
  mains hum, and babble made of other utterances;
* :func:`mix_at_snr` -- add noise at a given signal-to-noise ratio measured over the speech;
* :func:`telephone_band` -- the 300-3400 Hz band of an 8 kHz telephone line (Butterworth);
* :func:`mu_law` -- the 8-bit G.711 mu-law codec of that line (encode, quantise, decode).
"""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from functools import lru_cache

import numpy as np
from scipy import signal

from .audio import SAMPLE_RATE

NOISE_KINDS = ("white", "pink", "brown", "hum", "babble")
TELEPHONE_BAND = (300.0, 3400.0)  # Hz


def speed_perturb(x: np.ndarray, factor: float) -> np.ndarray:
    """Play ``x`` ``factor`` times faster (``factor > 1`` shortens it and raises its pitch).

    Polyphase resampling by the rational approximation of ``1 / factor`` (denominator <= 100).
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    ratio = Fraction(1.0 / factor).limit_denominator(100)
    if ratio == 1:
        return x.astype(np.float32, copy=False)
    return signal.resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def room_impulse_response(
    rt60: float,
    drr_db: float,
    rng: np.random.Generator,
    *,
    sample_rate: int = SAMPLE_RATE,
    predelay_s: float = 0.004,
) -> np.ndarray:
    """A synthetic room impulse response: direct path + exponentially decaying noise.

    The tail is Gaussian noise whose envelope falls by 60 dB in ``rt60`` seconds (energy decay
    ``exp(-13.8 t / rt60)``), starting ``predelay_s`` after the direct path, and scaled so that
    the energy of the direct path over the energy of the tail is ``drr_db`` decibels.

    Args:
        rt60: reverberation time in seconds (0.2-0.4 s: a furnished room; 1 s: a hall).
        drr_db: direct-to-reverberant ratio in dB (high: close microphone; low: far away).
        rng: the random generator of the tail.

    Returns:
        float32 samples, length ``predelay + rt60`` seconds, ``h[0] = 1`` (the direct path).
    """
    if rt60 <= 0:
        raise ValueError(f"rt60 must be positive, got {rt60}")
    delay = round(predelay_s * sample_rate)
    n = delay + round(rt60 * sample_rate)
    t = np.arange(n - delay) / sample_rate
    tail = rng.standard_normal(n - delay) * np.exp(-6.908 * t / rt60)  # amplitude: -60 dB at rt60
    tail *= np.sqrt(10.0 ** (-drr_db / 10.0) / np.sum(tail**2))
    h = np.zeros(n)
    h[0] = 1.0
    h[delay:] += tail
    return h.astype(np.float32)


def reverberate(x: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """Convolve ``x`` with a room impulse response (the output keeps the reverberant tail)."""
    return signal.fftconvolve(x, rir).astype(np.float32)


def colouring_filter(
    rng: np.random.Generator, *, max_db: float = 10.0, n_points: int = 9, n_taps: int = 63
) -> np.ndarray:
    """A random smooth frequency response: FIR taps with gains drawn in ``[-max_db, max_db]``.

    The gains are drawn at ``n_points`` equally spaced frequencies from 0 Hz to Nyquist and
    interpolated linearly (``scipy.signal.firwin2``): tilts, bumps and dips like a cheap
    microphone, a handset or a room's coloration.
    """
    gains_db = rng.uniform(-max_db, max_db, size=n_points)
    freqs = np.linspace(0.0, 1.0, n_points)
    return signal.firwin2(n_taps, freqs, 10.0 ** (gains_db / 20.0)).astype(np.float32)


def apply_fir(x: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """Filter ``x`` with FIR ``taps``, delay-compensated (same length as ``x``)."""
    return signal.fftconvolve(x, taps, mode="same").astype(np.float32)


def coloured_noise(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise with power spectrum ``1 / f**exponent``, unit RMS.

    ``exponent`` 0 is white, 1 pink, 2 brown (red) noise; the DC bin is set to zero.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n)
    f[0] = np.inf  # no DC
    x = np.fft.irfft(spectrum * f ** (-exponent / 2.0), n)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def hum(
    n: int, rng: np.random.Generator, *, sample_rate: int = SAMPLE_RATE, n_harmonics: int = 12
) -> np.ndarray:
    """Mains hum, unit RMS: a 50 or 60 Hz fundamental and harmonics with random amplitudes/phases."""
    f0 = rng.choice([50.0, 60.0])
    t = np.arange(n) / sample_rate
    k = np.arange(1, n_harmonics + 1)[:, None]
    amplitude = rng.uniform(0.2, 1.0, size=(n_harmonics, 1)) / k
    phase = rng.uniform(0.0, 2 * np.pi, size=(n_harmonics, 1))
    x = np.sum(amplitude * np.sin(2 * np.pi * f0 * k * t + phase), axis=0)
    return (x / np.sqrt(np.mean(x**2))).astype(np.float32)


def babble(
    n: int, talkers: Sequence[np.ndarray], rng: np.random.Generator
) -> np.ndarray:
    """Babble, unit RMS: the ``talkers`` (utterances) each repeated at a random offset over ``n``.

    Each utterance is normalised to unit RMS and tiled (with a random gap) to cover the clip, so
    the background talks all the time; with four or more talkers it is unintelligible.
    """
    if not talkers:
        raise ValueError("babble needs at least one talker")
    out = np.zeros(n, dtype=np.float64)
    for w in talkers:
        w = w / (np.sqrt(np.mean(np.square(w, dtype=np.float64))) + 1e-12)
        gap = np.zeros(int(rng.integers(0, len(w) // 2 + 1)))
        period = np.concatenate([w, gap])
        reps = int(np.ceil((n + len(period)) / len(period)))
        tiled = np.tile(period, reps)
        start = int(rng.integers(0, len(period)))
        out += tiled[start : start + n]
    return (out / (np.sqrt(np.mean(out**2)) + 1e-12)).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float, active: slice) -> np.ndarray:
    """``speech + g * noise`` with ``g`` such that the power of ``speech[active]`` over the power
    of ``g * noise`` is ``snr_db`` decibels (silence around the speech does not dilute it)."""
    power = float(np.mean(np.square(speech[active], dtype=np.float64)))
    noise_power = float(np.mean(np.square(noise, dtype=np.float64))) + 1e-20
    gain = np.sqrt(power / noise_power / 10.0 ** (snr_db / 10.0))
    return (speech + gain * noise).astype(np.float32)


def telephone_band(
    x: np.ndarray, band: tuple[float, float] = TELEPHONE_BAND, *, sample_rate: int = SAMPLE_RATE,
    order: int = 4,
) -> np.ndarray:  # fmt: skip
    """Band-limit to ``band`` Hz (default 300-3400 Hz, the telephone band): Butterworth band-pass."""
    return signal.sosfilt(_bandpass(tuple(band), sample_rate, order), x).astype(np.float32)


@lru_cache(maxsize=8)
def _bandpass(band: tuple[float, float], sample_rate: int, order: int) -> np.ndarray:
    return signal.butter(order, band, btype="bandpass", fs=sample_rate, output="sos")


def mu_law(x: np.ndarray, mu: int = 255) -> np.ndarray:
    """The G.711 mu-law codec: compress, quantise to 8 bits, expand (input clipped to [-1, 1])."""
    x = np.clip(x, -1.0, 1.0)
    y = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    q = np.round((y + 1.0) / 2.0 * mu) / mu * 2.0 - 1.0  # 256 levels in [-1, 1]
    return (np.sign(q) * np.expm1(np.abs(q) * np.log1p(mu)) / mu).astype(np.float32)
