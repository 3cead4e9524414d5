"""The dataset bundle shared by the vision and audio tasks, a validation split, a fallback warning.

A :class:`Dataset` holds a fixed train/test split of a classification task as tensors, and
optionally a group id per example (the speaker of an utterance, the source image of an augmented
copy) so that a validation split can hold out whole groups: :func:`validation_split`.
Data know nothing of devices: tensors are created where torch puts them by default, and the
training code moves them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
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
        groups_train, groups_test: optional int64 group ids, shape ``(n,)``: examples that share
            an id come from one source (a speaker, a source image) and must stay on one side of
            any split. Ids are comparable across the two splits (a split without leakage has no
            id in common). ``None`` when examples are independent.

    Unpacking gives the four tensors: ``X_train, y_train, X_test, y_test = dataset``.
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int
    meta: dict[str, Any] = field(default_factory=dict)
    groups_train: torch.Tensor | None = None
    groups_test: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if len(self.X_train) != len(self.y_train) or len(self.X_test) != len(self.y_test):
            raise ValueError(
                f"{self.name}: inputs and labels differ in length "
                f"(train {len(self.X_train)} vs {len(self.y_train)}, "
                f"test {len(self.X_test)} vs {len(self.y_test)})"
            )
        for split, groups, y in (("train", self.groups_train, self.y_train),
                                 ("test", self.groups_test, self.y_test)):  # fmt: skip
            if groups is not None and tuple(groups.shape) != (len(y),):
                raise ValueError(
                    f"{self.name}: groups_{split} must have shape ({len(y)},) like y_{split}, "
                    f"got {tuple(groups.shape)}"
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
            groups_train=None if self.groups_train is None else self.groups_train[i],
            groups_test=None if self.groups_test is None else self.groups_test[j],
        )


def validation_split(
    dataset: Dataset, fraction: float = 0.2, seed: int = 0
) -> tuple[Dataset, Dataset]:
    """Carve a seeded validation set out of the training split; the test split is never touched.

    * With ``groups_train``, whole groups are held out (no speaker or source image on both
      sides). When every group holds a single class (e.g. augmented copies of one image), the
      groups are split stratified by that class; otherwise (e.g. a speaker saying every digit,
      or too few groups per class to stratify) scikit-learn's ``GroupShuffleSplit`` holds out
      ``fraction`` of the groups.
    * Without groups, the examples are split stratified by class (``train_test_split``).

    Args:
        dataset: the dataset whose training split is divided.
        fraction: the share of training examples (or of groups) that validates, in (0, 1).
        seed: seeds the split (same seed -> same split).

    Returns:
        ``(train, val)``: ``train`` keeps the remaining training examples and the original test
        split (read it once, at the end); ``val`` has the same training examples and the
        held-out ones as its test split, so ``train_classifier(model, *val)`` trains and
        validates without reading the test split. Order within each part is kept.

    Raises:
        ValueError: ``fraction`` outside (0, 1), or too few examples or groups to split.
    """
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    y = dataset.y_train.numpy()
    index = np.arange(len(y))
    if dataset.groups_train is None:
        n_held = max(round(fraction * len(y)), len(np.unique(y)))  # at least one example per class
        keep, held = train_test_split(index, test_size=n_held, random_state=seed, stratify=y)
        rule = f"stratified by class, fraction={fraction}, seed={seed}"
    else:
        groups = dataset.groups_train.numpy()
        ids, first, inverse = np.unique(groups, return_index=True, return_inverse=True)
        if len(ids) < 2:
            raise ValueError(f"{dataset.name}: a split by group needs at least two groups")
        held = None
        if np.all(y == y[first][inverse]):  # every group holds one class: stratify the groups
            try:
                n_held = max(round(fraction * len(ids)), len(np.unique(y[first])))  # a group per class at least
                _, held_ids = train_test_split(ids, test_size=n_held, random_state=seed, stratify=y[first])
                held = index[np.isin(groups, held_ids)]
                keep = index[~np.isin(groups, held_ids)]
                rule = f"whole groups, stratified by class, fraction={fraction}, seed={seed}"
            except ValueError:  # too few groups per class to stratify
                held = None
        if held is None:
            splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            keep, held = next(splitter.split(index, y, groups))
            rule = f"whole groups (GroupShuffleSplit), fraction={fraction}, seed={seed}"
    keep, held = torch.from_numpy(np.sort(keep)), torch.from_numpy(np.sort(held))
    g = dataset.groups_train
    info = {"rule": rule, "n_train": len(keep), "n_val": len(held)}
    train = replace(
        dataset,
        X_train=dataset.X_train[keep],
        y_train=dataset.y_train[keep],
        groups_train=None if g is None else g[keep],
        meta={**dataset.meta, "validation": {**info, "role": "train (test split untouched)"}},
    )
    val = replace(
        train,
        X_test=dataset.X_train[held],
        y_test=dataset.y_train[held],
        groups_test=None if g is None else g[held],
        meta={**dataset.meta, "validation": {**info, "role": "val (test split = validation)"}},
    )
    return train, val
