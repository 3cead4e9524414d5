"""One entry point for the command line and the chapters: ``load_task("vision"|"audio"|"text")``.

Each task has an embedded default that works offline; a real dataset is used when a local folder
is given (``data_dir``) or when ``download=True`` and the download succeeds. A failed download
warns (:class:`~hybridlab.data.bundle.DataFallbackWarning`) and falls back to the default; a
``data_dir`` that does not hold the data is an error, since the user asked for it explicitly.

The offline defaults come in two variants: ``"easy"`` (the original tasks) and ``"hard"``
(distorted digits; spoken digits recorded through a room, a microphone and a telephone line),
on which a linear model falls clearly behind the network.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable

from .audio import load_fsdd
from .bundle import DataFallbackWarning, Dataset
from .download import DataUnavailable
from .espeak import load_espeak_digits
from .hard_audio import load_hard_spoken_digits
from .hard_vision import load_hard_digits
from .text import TextCorpus, load_text_corpus
from .vision import load_digits_dataset, load_mnist

PathLike = str | os.PathLike[str] | None
QUICK_MNIST = (6000, 1000)  # train / test examples kept in quick mode
QUICK_FSDD = (600, 150)
VARIANTS = ("easy", "hard")


def _fallback(what: str, err: Exception) -> None:
    message = f"{err}\nUsing the embedded default {what} instead."
    warnings.warn(message, DataFallbackWarning, stacklevel=3)


def _vision(data_dir: PathLike, download: bool, quick: bool, seed: int, variant: str) -> Dataset:
    if variant == "hard":
        return load_hard_digits(quick=quick, seed=seed)
    if data_dir is not None or download:
        try:
            data = load_mnist(data_dir, download=download)
            return data.subsample(*QUICK_MNIST, seed=seed) if quick else data
        except DataUnavailable as err:
            _fallback("sklearn digits", err)
    return load_digits_dataset(seed=seed)


def _audio(data_dir: PathLike, download: bool, quick: bool, seed: int, variant: str) -> Dataset:
    if variant == "hard":
        return load_hard_spoken_digits(quick=quick, seed=seed)
    if data_dir is not None:
        data = load_fsdd(data_dir)
        return data.subsample(*QUICK_FSDD, seed=seed) if quick else data
    if download:
        _fallback(
            "eSpeak spoken digits",
            DataUnavailable(
                "hybridlab does not download the Free Spoken Digit Dataset: clone "
                "https://github.com/Jakobovski/free-spoken-digit-dataset and pass its "
                "'recordings' folder as data_dir=... (command line: --data-dir)."
            ),
        )
    return load_espeak_digits(quick=quick, seed=seed)


def _text(data_dir: PathLike, download: bool, quick: bool, seed: int, variant: str) -> TextCorpus:
    if data_dir is not None or download:
        try:
            return load_text_corpus(data_dir, download=download)
        except DataUnavailable as err:
            _fallback("pydoc topics corpus", err)
    return load_text_corpus()


#: ``loader(data_dir, download, quick, seed, variant)`` per task
TASKS: dict[str, Callable[[PathLike, bool, bool, int, str], Dataset | TextCorpus]] = {
    "vision": _vision,
    "audio": _audio,
    "text": _text,
}


def load_task(
    task: str,
    *,
    data_dir: PathLike = None,
    download: bool = False,
    quick: bool = False,
    seed: int = 0,
    variant: str = "easy",
) -> Dataset | TextCorpus:
    """The dataset of a task.

    ========  ===================================  =====================================
    task      default (offline)                    ``data_dir`` / ``download=True``
    ========  ===================================  =====================================
    vision    ``sklearn-digits`` (8x8)             ``mnist`` (IDX files; downloadable)
    audio     ``espeak-digits`` (synthesised)      ``fsdd`` (folder of wav files only)
    text      ``pydoc-topics``                     ``tiny-shakespeare`` / ``text-file``
    ========  ===================================  =====================================

    Args:
        task: ``"vision"``, ``"audio"`` or ``"text"``.
        data_dir: a local folder (or, for text, a file) with the real dataset.
        download: try to download the real dataset; on failure warn and use the default.
        quick: a smaller dataset for tests (eSpeak: 260 utterances; MNIST and FSDD: a seeded
            subset; digits and text are unchanged).
        seed: seeds every split, subset and synthesis.
        variant: ``"easy"`` (the default, above) or ``"hard"``: the offline task made to behave
            like real data (vision: :func:`~hybridlab.data.hard_vision.load_hard_digits`;
            audio: :func:`~hybridlab.data.hard_audio.load_hard_spoken_digits`). Text has no
            hard variant, and ``"hard"`` cannot be combined with ``data_dir`` or ``download``
            (a real dataset is what it is).

    Raises:
        ValueError: unknown task or variant, or a combination that does not exist.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(TASKS)}")
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    if variant == "hard" and task == "text":
        raise ValueError("the text task has no hard variant; use variant='easy'")
    if variant == "hard" and (data_dir is not None or download):
        raise ValueError(
            "variant='hard' builds the offline task; a real dataset (data_dir or download) has "
            "no variants: leave variant='easy' with data_dir/download"
        )
    return TASKS[task](data_dir, download, quick, seed, variant)
