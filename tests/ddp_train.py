"""``python -m hybridlab`` that also saves what it trained: a helper of tests/test_parallel_cli.py.

Run as a script, by itself or under ``torchrun`` (every rank then saves its own copies)::

    HYBRIDLAB_SAVE_DIR=out python tests/ddp_train.py train --task vision --quick ...
    HYBRIDLAB_SAVE_DIR=out torchrun --standalone --nproc-per-node 2 tests/ddp_train.py train ...

Everything runs through the real command line (:func:`hybridlab.cli.main`, what ``python -m
hybridlab`` calls). The additions: after each training run (the hybrid network, then the digital
baseline of ``--with-digital``) every process writes its model's state, the kept best state that
the test split is then read with, to ``$HYBRIDLAB_SAVE_DIR/rank<RANK>_<n>.pt``; with
``HYBRIDLAB_FLOAT64=1`` the model, the device and the data are in float64.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import os
import sys
from pathlib import Path

import torch

from hybridlab import recipes
from hybridlab.cli import main
from hybridlab.data import Dataset

_runs = itertools.count()


def _saving(train):
    @functools.wraps(train)
    def wrapper(model, *args, **kwargs):
        history = train(model, *args, **kwargs)
        state = getattr(model, "module", model).state_dict()  # DDP's module, or the model itself
        path = Path(os.environ["HYBRIDLAB_SAVE_DIR"]) / f"rank{os.environ.get('RANK', '0')}_{next(_runs)}.pt"
        torch.save({k: v for k, v in state.items() if isinstance(v, torch.Tensor)}, path)
        return history

    return wrapper


def _in_float64(load):
    @functools.wraps(load)
    def wrapper(*args, **kwargs):
        data = load(*args, **kwargs)
        if isinstance(data, Dataset):  # (text is token ids)
            data = dataclasses.replace(data, X_train=data.X_train.double(), X_test=data.X_test.double())
        return data

    return wrapper


if __name__ == "__main__":
    recipes.train_classifier = _saving(recipes.train_classifier)
    recipes.train_language_model = _saving(recipes.train_language_model)
    if os.environ.get("HYBRIDLAB_FLOAT64"):
        torch.set_default_dtype(torch.float64)
        recipes.load_data = _in_float64(recipes.load_data)
    sys.exit(main(sys.argv[1:]))
