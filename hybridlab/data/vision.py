"""Images: scikit-learn's bundled 8x8 digits (the offline default) and MNIST (optional).

MNIST is read from the four standard IDX files (``train-images-idx3-ubyte`` etc., gzipped or
not) in a local folder, or downloaded into the cache with ``download=True`` and checked against
the published SHA-256 sums below.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np
import torch

from .bundle import Dataset
from .download import DataUnavailable, cache_dir, fetch

# SHA-256 of the gzipped MNIST files as published (identical on both mirrors; the same sums are
# pinned by TensorFlow Datasets, torchvision users and many other projects).
MNIST_FILES: dict[str, tuple[str, str]] = {
    "train_images": (
        "train-images-idx3-ubyte",
        "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    ),
    "train_labels": (
        "train-labels-idx1-ubyte",
        "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    ),
    "test_images": (
        "t10k-images-idx3-ubyte",
        "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    ),
    "test_labels": (
        "t10k-labels-idx1-ubyte",
        "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    ),
}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def _standardise_images(
    X_train: np.ndarray, X_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """Subtract the train mean and divide by the train standard deviation (one scalar each)."""
    mean, std = float(X_train.mean()), float(X_train.std())
    return (X_train - mean) / std, (X_test - mean) / std, {"mean": mean, "std": std}


def load_digits_dataset(
    seed: int = 0, test_fraction: float = 0.25, *, standardise: bool = False
) -> Dataset:
    """scikit-learn's bundled handwritten digits (1797 images of 8x8 pixels, 10 classes).

    The split is stratified by class and fixed by ``seed``. Pixels (0..16) are scaled to [0, 1],
    or, with ``standardise=True``, standardised with the training mean and standard deviation.

    Returns:
        A :class:`Dataset` named ``"sklearn-digits"`` with ``X`` of shape ``(n, 1, 8, 8)``; its
        group ids are the images' indices in ``load_digits()``.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    digits = load_digits()
    X = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    y = digits.target.astype(np.int64)
    source = np.arange(len(y), dtype=np.int64)  # group id: the index of the source image
    X_train, X_test, y_train, y_test, g_train, g_test = train_test_split(
        X, y, source, test_size=test_fraction, random_state=seed, stratify=y
    )
    meta: dict[str, object] = {
        "source": "sklearn.datasets.load_digits",
        "split": f"stratified, test_fraction={test_fraction}, seed={seed}",
        "scaling": "pixels / 16",
    }
    if standardise:
        X_train, X_test, meta["standardisation"] = _standardise_images(X_train, X_test)
    return Dataset(
        name="sklearn-digits",
        X_train=torch.from_numpy(np.ascontiguousarray(X_train, dtype=np.float32)),
        y_train=torch.from_numpy(y_train),
        X_test=torch.from_numpy(np.ascontiguousarray(X_test, dtype=np.float32)),
        y_test=torch.from_numpy(y_test),
        n_classes=10,
        meta=meta,
        groups_train=torch.from_numpy(g_train),
        groups_test=torch.from_numpy(g_test),
    )


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped (``.gz``) or raw, into a numpy array."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as err:
        raise ValueError(f"cannot read IDX file {path}: {err}") from err
    dtypes = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in dtypes:
        raise ValueError(f"{path} is not an IDX file (bad magic number {data[:4]!r})")
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[data[2]])
    offset = 4 + 4 * ndim
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    if len(data) != expected:
        raise ValueError(
            f"{path}: header says shape {shape} ({expected} bytes) but the file has "
            f"{len(data)} bytes; the file is truncated or corrupt"
        )
    return np.frombuffer(data, dtype=dtype, offset=offset).reshape(shape)


def find_mnist_files(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Locate the four MNIST IDX files in ``folder`` (or its ``MNIST/raw`` or ``raw`` subfolder).

    Accepts ``train-images-idx3-ubyte`` and ``train-images.idx3-ubyte`` spellings, with or
    without ``.gz``.

    Raises:
        FileNotFoundError: listing the files that are missing.
    """
    folder = Path(folder).expanduser()
    places = [folder, folder / "MNIST" / "raw", folder / "raw"]
    found: dict[str, Path] = {}
    for key, (stem, _) in MNIST_FILES.items():
        dotted = stem.replace("-idx", ".idx")
        names = [stem, stem + ".gz", dotted, dotted + ".gz"]
        for place in places:
            hit = next((place / n for n in names if (place / n).is_file()), None)
            if hit is not None:
                found[key] = hit
                break
    missing = [MNIST_FILES[k][0] for k in MNIST_FILES if k not in found]
    if missing:
        raise FileNotFoundError(
            f"MNIST files not found in {folder}: missing {', '.join(missing)} (.gz or raw). "
            f"Put the four IDX files there, or call load_mnist(download=True) when online."
        )
    return found


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    standardise: bool = False,
) -> Dataset:
    """MNIST (60000 train / 10000 test images of 28x28 pixels), scaled to [0, 1].

    Args:
        data_dir: folder holding the four IDX files. Default: the cache folder ``mnist/``.
        download: download missing files into the cache (checked against :data:`MNIST_FILES`).
        standardise: standardise with the training mean and standard deviation.

    Raises:
        FileNotFoundError: ``data_dir`` was given and lacks some of the files.
        DataUnavailable: no ``data_dir``, the cache lacks the files and they cannot be downloaded.
    """
    if data_dir is not None:
        files = find_mnist_files(data_dir)
    else:
        folder = cache_dir() / "mnist"
        try:
            files = find_mnist_files(folder)
        except FileNotFoundError as err:
            if not download:
                raise DataUnavailable(
                    f"{err}\nPass data_dir=... (command line: --data-dir) or download=True."
                ) from None
            files = {
                key: fetch(
                    [m + stem + ".gz" for m in MNIST_MIRRORS],
                    sha256=sha,
                    fname=stem + ".gz",
                    subdir="mnist",
                )
                for key, (stem, sha) in MNIST_FILES.items()
            }
    arrays = {key: read_idx(path) for key, path in files.items()}
    X_train = (arrays["train_images"].astype(np.float32) / 255.0)[:, None]
    X_test = (arrays["test_images"].astype(np.float32) / 255.0)[:, None]
    meta: dict[str, object] = {
        "source": {k: str(p) for k, p in files.items()},
        "split": "standard MNIST train/test",
        "scaling": "pixels / 255",
    }
    if standardise:
        X_train, X_test, meta["standardisation"] = _standardise_images(X_train, X_test)
    return Dataset(
        name="mnist",
        X_train=torch.from_numpy(np.ascontiguousarray(X_train)),
        y_train=torch.from_numpy(arrays["train_labels"].astype(np.int64)),
        X_test=torch.from_numpy(np.ascontiguousarray(X_test)),
        y_test=torch.from_numpy(arrays["test_labels"].astype(np.int64)),
        n_classes=10,
        meta=meta,
    )
