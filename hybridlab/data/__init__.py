"""Datasets, offline first: every task has an embedded default; real datasets are optional.

* vision: scikit-learn's 8x8 digits; MNIST from local IDX files or a checksummed download.
* audio: spoken digits synthesised with eSpeak NG; the Free Spoken Digit Dataset from a folder.
* text: CPython's pydoc topics; Tiny Shakespeare or any UTF-8 text file.

``load_task(task, data_dir=..., download=..., quick=..., seed=..., variant=...)`` picks one for
a task; ``variant="hard"`` gives the offline vision and audio tasks made to behave like real
data (:mod:`hybridlab.data.hard_vision`, :mod:`hybridlab.data.hard_audio`).
``validation_split(dataset, fraction, seed)`` carves a validation set out of the training split,
holding out whole groups (speakers, source images) where the dataset has them.
"""

from .audio import load_fsdd, log_mel, mel_filterbank, parse_fsdd_name, read_wav
from .bundle import DataFallbackWarning, Dataset, validation_split
from .download import ChecksumError, DataUnavailable, cache_dir, fetch
from .espeak import EspeakConfig, load_espeak_digits
from .hard_audio import HardAudioConfig, load_hard_spoken_digits
from .hard_vision import HardVisionConfig, load_hard_digits
from .tasks import TASKS, VARIANTS, load_task
from .text import TextCorpus, get_batch, load_text_corpus
from .vision import load_digits_dataset, load_mnist

__all__ = [
    "TASKS",
    "VARIANTS",
    "ChecksumError",
    "DataFallbackWarning",
    "DataUnavailable",
    "Dataset",
    "EspeakConfig",
    "HardAudioConfig",
    "HardVisionConfig",
    "TextCorpus",
    "cache_dir",
    "fetch",
    "get_batch",
    "load_digits_dataset",
    "load_espeak_digits",
    "load_hard_digits",
    "load_hard_spoken_digits",
    "load_fsdd",
    "load_mnist",
    "load_task",
    "load_text_corpus",
    "log_mel",
    "mel_filterbank",
    "parse_fsdd_name",
    "read_wav",
    "validation_split",
]
