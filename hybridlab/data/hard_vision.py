"""The hard vision task: scikit-learn's 8x8 digits redrawn as distorted, shifted, noisy images.

The easy task is the 8x8 digits themselves: centred, size-normalised, clean; a logistic
regression on the pixels is almost as good as a network. Here each source image is redrawn
several times on a larger canvas, each copy with its own random

1. geometry: rotation, anisotropic scale, shear and a translation anywhere on the canvas, plus
   an elastic deformation (a smoothed random displacement field, Simard et al. 2003), all
   applied in one resampling of a smooth (cubic-spline) upsampling of the 8x8 image;
2. stroke thickness: the smooth image is turned into strokes by a soft threshold whose level
   sets how thick the strokes are;
3. clutter: a few faint straight strokes (line segments) behind the digit;
4. photometry: ink and paper intensities (contrast), an illumination gradient, a slight blur and
   Gaussian pixel noise.

The split is the easy task's (stratified by class, seeded) applied to the *source* images:
training copies come from training images only and test copies from test images only; the group
id of a copy is the index of its source image in ``load_digits()``. Every copy is drawn from a
generator seeded with ``(seed, source index, copy)``, so the same seed gives the same images
bit for bit, whatever else is generated. Pixels lie in [0, 1].
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from scipy import ndimage

from .bundle import Dataset


@dataclass(frozen=True)
class HardVisionConfig:
    """Canvas, copies and the ranges of every distortion (uniform draws).

    Attributes:
        size: side of the square canvas, pixels.
        digit_size: side of the undistorted digit on the canvas, pixels (the 8x8 source is
            stretched to it).
        train_copies, test_copies: distorted copies of each training / test source image.
        rotation_deg: rotation range, +-degrees.
        scale_range: scale factor of each axis (drawn independently: aspect ratio changes too).
        shear: shear range, +-(x shift per y pixel).
        shift_fraction: the digit's centre lies within +-shift_fraction x (size - digit_size)
            pixels of the canvas centre on each axis (1.0: it may touch the border).
        elastic_alpha, elastic_sigma: elastic displacement amplitude (pixels) and smoothness
            (Gaussian sigma, pixels).
        threshold_range: level of the soft threshold (low: thick strokes, high: thin).
        n_clutter: the number of faint strokes behind the digit (inclusive range).
        clutter_range: their intensity relative to full ink.
        ink_range, paper_range: intensity of the strokes and of the background.
        gradient: the largest illumination change across the canvas.
        blur_range: Gaussian blur sigma, pixels.
        noise_range: Gaussian pixel-noise standard deviation.
        test_fraction: fraction of source images held out for testing.
    """

    size: int = 16
    digit_size: int = 12
    train_copies: int = 8
    test_copies: int = 2
    rotation_deg: float = 8.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    shear: float = 0.1
    shift_fraction: float = 1.0
    elastic_alpha: float = 0.75
    elastic_sigma: float = 3.0
    threshold_range: tuple[float, float] = (0.3, 0.45)
    n_clutter: tuple[int, int] = (0, 1)
    clutter_range: tuple[float, float] = (0.15, 0.35)
    ink_range: tuple[float, float] = (0.75, 1.0)
    paper_range: tuple[float, float] = (0.0, 0.15)
    gradient: float = 0.03
    blur_range: tuple[float, float] = (0.0, 0.3)
    noise_range: tuple[float, float] = (0.01, 0.03)
    test_fraction: float = 0.25

    @classmethod
    def quick(cls) -> HardVisionConfig:
        """One copy of each source image (1347 train / 450 test images) for tests."""
        return cls(train_copies=1, test_copies=1)


def soft_threshold(x: np.ndarray, level: float, width: float = 0.08) -> np.ndarray:
    """A logistic step at ``level``: turns a smooth grey image into strokes of a chosen thickness."""
    return 1.0 / (1.0 + np.exp(-(x - level) / width))


def draw_line(canvas: np.ndarray, p0, p1, width: float) -> np.ndarray:
    """An anti-aliased straight stroke from ``p0`` to ``p1`` (row, col), ``width`` pixels wide,
    as a mask in [0, 1] of the canvas's shape."""
    rows, cols = np.indices(canvas.shape, dtype=np.float64)
    p0, p1 = np.asarray(p0, float), np.asarray(p1, float)
    d = p1 - p0
    t = np.clip(((rows - p0[0]) * d[0] + (cols - p0[1]) * d[1]) / max(d @ d, 1e-9), 0.0, 1.0)
    dist = np.hypot(rows - (p0[0] + t * d[0]), cols - (p0[1] + t * d[1]))
    return np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)


def distort(image: np.ndarray, rng: np.random.Generator, config: HardVisionConfig) -> np.ndarray:
    """One distorted ``(size, size)`` float32 copy of an 8x8 image with pixels in [0, 1]."""
    n, d = config.size, config.digit_size
    # geometry: canvas pixel -> source pixel, p = M (u - centre - shift - elastic) + source centre
    angle = np.deg2rad(rng.uniform(-config.rotation_deg, config.rotation_deg))
    scale = rng.uniform(*config.scale_range, size=2) * d / 8.0  # canvas pixels per source pixel
    shear = rng.uniform(-config.shear, config.shear)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    forward = rotation @ np.array([[1.0, shear], [0.0, 1.0]]) @ np.diag(scale)
    inverse = np.linalg.inv(forward)
    room = config.shift_fraction * (n - d) / 2.0
    centre = (n - 1) / 2.0 + rng.uniform(-room, room, size=2)
    u = np.indices((n, n), dtype=np.float64).reshape(2, -1)
    field = rng.uniform(-1.0, 1.0, size=(2, n, n))
    smooth_field = np.stack([ndimage.gaussian_filter(f, config.elastic_sigma) for f in field])
    elastic = config.elastic_alpha * smooth_field / np.abs(smooth_field).max()  # <= alpha pixels
    coords = inverse @ (u + elastic.reshape(2, -1) - centre[:, None]) + 3.5
    smooth = ndimage.map_coordinates(image, coords, order=3, mode="constant", cval=0.0)
    strokes = soft_threshold(smooth.reshape(n, n), rng.uniform(*config.threshold_range))
    # clutter: faint strokes behind the digit
    clutter = np.zeros((n, n))
    for _ in range(int(rng.integers(config.n_clutter[0], config.n_clutter[1] + 1))):
        p0, p1 = rng.uniform(0, n - 1, size=(2, 2))
        line = draw_line(clutter, p0, p1, rng.uniform(0.7, 1.5)) * rng.uniform(*config.clutter_range)
        clutter = np.maximum(clutter, line)
    strokes = np.maximum(strokes, clutter)
    # photometry: paper, ink, illumination gradient, blur, noise
    paper, ink = rng.uniform(*config.paper_range), rng.uniform(*config.ink_range)
    tilt = rng.uniform(-config.gradient, config.gradient, size=2) / n
    light = (u - (n - 1) / 2.0).T @ tilt
    img = paper + (ink - paper) * strokes + light.reshape(n, n)
    img = ndimage.gaussian_filter(img, rng.uniform(*config.blur_range))
    img = img + rng.normal(0.0, rng.uniform(*config.noise_range), size=(n, n))
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def load_hard_digits(
    *, quick: bool = False, seed: int = 0, config: HardVisionConfig | None = None
) -> Dataset:
    """The hard vision task: distorted copies of scikit-learn's digits on a larger canvas.

    Args:
        quick: one copy per source image (:meth:`HardVisionConfig.quick`) instead of the default
            8 per training and 2 per test image (10776 train / 900 test images of 16x16).
        seed: seeds the split of the source images and every distortion.
        config: overrides ``quick``.

    Returns:
        A :class:`Dataset` named ``"sklearn-digits-hard"`` with ``X`` of shape
        ``(n, 1, size, size)`` in [0, 1] and the source images' indices as group ids.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    start = time.perf_counter()
    config = config or (HardVisionConfig.quick() if quick else HardVisionConfig())
    digits = load_digits()
    images, labels = digits.images / 16.0, digits.target.astype(np.int64)
    source = np.arange(len(labels))
    train_src, test_src = train_test_split(
        source, test_size=config.test_fraction, random_state=seed, stratify=labels
    )

    def copies(sources: np.ndarray, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        xs = [
            distort(images[s], np.random.default_rng([seed, 11, int(s), c]), config)
            for s in sources
            for c in range(k)
        ]
        groups = np.repeat(sources, k)
        return (
            torch.from_numpy(np.stack(xs)[:, None]),
            torch.from_numpy(labels[groups]),
            torch.from_numpy(groups.astype(np.int64)),
        )

    X_train, y_train, g_train = copies(np.sort(train_src), config.train_copies)
    X_test, y_test, g_test = copies(np.sort(test_src), config.test_copies)
    meta = {
        "source": "sklearn.datasets.load_digits, redrawn by hybridlab.data.hard_vision",
        "config": asdict(config),
        "split": f"source images stratified, test_fraction={config.test_fraction}, seed={seed}",
        "load_seconds": time.perf_counter() - start,
    }
    return Dataset(
        name="sklearn-digits-hard",
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        n_classes=10,
        meta=meta,
        groups_train=g_train,
        groups_test=g_test,
    )
