"""The dataset bundle shared by the vision and audio tasks, and a fallback warning.

A :class:`Dataset` holds a fixed train/test split of a classification task as tensors.
Data know nothing of devices: tensors are created where torch puts them by default, and the
training code moves them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import torch


class DataFallbackWarning(UserWarning):
    """A real dataset was asked for but unavailable; the embedded default is used instead."""


@dataclass(frozen=True)
class Dataset:
    """A classification dataset with a fixed split.

    Attributes:
        name: short identifier of the source, e.g. ``"sklearn-digits"``, ``"fsdd"``.
        X_train, X_test: float32 inputs, shape ``(n, channels, height, width)``.
        y_train, y_test: int64 class labels, shape ``(n,)``.
        n_classes: number of classes.
        meta: free-form provenance (split rule, feature settings, normalisation statistics, ...).

    Unpacking gives the four tensors: ``X_train, y_train, X_test, y_test = dataset``.
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.X_train) != len(self.y_train) or len(self.X_test) != len(self.y_test):
            raise ValueError(
                f"{self.name}: inputs and labels differ in length "
                f"(train {len(self.X_train)} vs {len(self.y_train)}, "
                f"test {len(self.X_test)} vs {len(self.y_test)})"
            )

    def __iter__(self) -> Iterator[torch.Tensor]:
        return iter((self.X_train, self.y_train, self.X_test, self.y_test))

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input, without the batch dimension."""
        return tuple(self.X_train.shape[1:])

    def summary(self) -> dict[str, Any]:
        """Name, sizes and shapes, for printing."""
        return {
            "name": self.name,
            "n_train": len(self.y_train),
            "n_test": len(self.y_test),
            "input_shape": self.input_shape,
            "n_classes": self.n_classes,
        }

    def describe(self) -> str:
        """One line, e.g. ``sklearn-digits: 1347 train / 450 test, 10 classes, input (1, 8, 8)``."""
        s = self.summary()
        return (
            f"{s['name']}: {s['n_train']} train / {s['n_test']} test, "
            f"{s['n_classes']} classes, input {s['input_shape']}"
        )

    def subsample(self, n_train: int, n_test: int, *, seed: int = 0) -> Dataset:
        """A seeded random subset with at most ``n_train`` / ``n_test`` examples (order kept)."""
        g = torch.Generator().manual_seed(seed)

        def pick(n_total: int, n: int) -> torch.Tensor:
            if n >= n_total:
                return torch.arange(n_total)
            return torch.randperm(n_total, generator=g)[:n].sort().values

        i = pick(len(self.y_train), n_train)
        j = pick(len(self.y_test), n_test)
        meta = {**self.meta, "subsampled": {"n_train": len(i), "n_test": len(j), "seed": seed}}
        return replace(
            self,
            X_train=self.X_train[i],
            y_train=self.y_train[i],
            X_test=self.X_test[j],
            y_test=self.y_test[j],
            meta=meta,
        )
