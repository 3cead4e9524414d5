"""Experiments of chapter 1, "Rank-r approximation": how the error falls with rank, fits from queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..lowrank import eckart_young_error, fit_identity, fit_randomized, truncated_svd
from ..surrogate import tracking_ratio
from ._common import DTYPE, _configured, _generator


# =============================================================================================
# chapter 1: rank-r approximation
# =============================================================================================
def sample_image(name: str = "china.jpg", size: tuple[int, int] = (128, 192)) -> Tensor:
    """A photograph bundled with scikit-learn (offline), as a grey-scale matrix in ``[0, 1]``.

    Args:
        name: ``'china.jpg'`` or ``'flower.jpg'`` (:func:`sklearn.datasets.load_sample_image`).
        size: ``(rows, columns)`` after resizing.

    Returns:
        float64 tensor of shape ``size``.
    """
    from PIL import Image
    from sklearn.datasets import load_sample_image

    rows, cols = size
    img = Image.fromarray(load_sample_image(name)).convert("L").resize((cols, rows), Image.LANCZOS)
    return torch.tensor(np.asarray(img, dtype=np.float64) / 255.0)


def train_digits_mlp(hidden: int = 128, epochs: int = 20, seed: int = 0) -> dict[str, Any]:
    """Train a one-hidden-layer MLP on scikit-learn's 8x8 digits; return its first weight matrix.

    Uses :func:`hybridlab.data.load_digits_dataset` and :func:`hybridlab.train.train_classifier`.

    Returns:
        ``{"weight": (hidden, 64) trained, "init": (hidden, 64) at initialisation,
        "accuracy": test accuracy}`` (float64 tensors).
    """
    from ..data import load_digits_dataset
    from ..train import train_classifier

    data = load_digits_dataset(seed=seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    init = model[1].weight.detach().clone()
    hist = train_classifier(model, data.X_train, data.y_train, data.X_test, data.y_test, epochs=epochs,
                            batch_size=64, lr=3e-3, seed=seed, progress=False)
    return {"weight": model[1].weight.detach().to(DTYPE).clone(), "init": init.to(DTYPE), "accuracy": hist.final}


def device_matrix(name: str, d_in: int, d_out: int, seed: int = 0, **options: Any) -> Tensor:
    """Transfer matrix ``A(w)`` of a simulated device at its seeded initial parameters (float64)."""
    return _configured(name, d_in, d_out, seed, **options).true_matrix().clone()


def rank_errors(A: Tensor, ranks: Sequence[int]) -> np.ndarray:
    """Relative Eckart-Young error ``eps_r / ||A||_F`` for each rank (:func:`eckart_young_error`)."""
    norm = float(torch.linalg.matrix_norm(A))
    return np.array([eckart_young_error(A, int(r)) / norm for r in ranks])


def rank_approximations(A: Tensor, ranks: Sequence[int]) -> dict[int, np.ndarray]:
    """Best rank-r approximations ``U S V^T`` (:func:`truncated_svd`) as numpy arrays, by rank."""
    return {int(r): truncated_svd(A, int(r)).matrix().numpy() for r in ranks}


def query_fits(
    A: Tensor,
    r: int,
    sketches: Sequence[int],
    kinds: Sequence[str] = ("gaussian", "orthogonal"),
    oversample: int = 10,
    seeds: Sequence[int] = (0, 1, 2),
) -> list[dict[str, Any]]:
    """Fit a rank-r surrogate of ``A`` from forward products only; count the queries.

    ``A`` is put on an ideal device (so the device's counters count the queries), then fitted

    * with :func:`hybridlab.lowrank.fit_identity` (``d_in`` queries), and
    * with :func:`hybridlab.lowrank.fit_randomized` for each sketch size ``s`` and sketch kind
      (``r + oversample + s`` queries), over several seeds.

    Returns:
        One row per fit: ``{"method", "kind", "sketch", "queries", "ratio", "ratio_std"}`` where
        ``ratio`` is the tracking ratio ``||A - U S V^T||_F / eps_r`` (mean over seeds).
    """
    d_out, d_in = A.shape
    dev = _configured("ideal", d_in, d_out, 0, w=A.reshape(-1).to(DTYPE))
    A = dev.true_matrix()
    q0 = dev.queries
    fit = fit_identity(dev.query, d_in, r, dtype=DTYPE)
    rows = [{"method": "identity", "kind": "identity", "sketch": 0, "queries": dev.queries - q0,
             "ratio": tracking_ratio(A, *fit), "ratio_std": 0.0}]
    for kind in kinds:
        for s in sketches:
            ratios, queries = [], 0
            for seed in seeds:
                q0 = dev.queries
                fit = fit_randomized(dev.query, d_in, r, oversample=oversample, sketch=int(s), kind=kind,
                                     generator=_generator(seed), dtype=DTYPE)
                queries = dev.queries - q0
                ratios.append(tracking_ratio(A, *fit))
            rows.append({"method": "randomized", "kind": kind, "sketch": int(s), "queries": queries,
                         "ratio": float(np.mean(ratios)), "ratio_std": float(np.std(ratios))})
    return rows
