"""Character-level text corpora for a small language model.

The offline default is the English text of CPython's bundled ``pydoc_data.topics`` (about 465 k
characters). A local text file (e.g. Tiny Shakespeare's ``input.txt``) is used when given, and
Tiny Shakespeare can be downloaded into the cache with ``download=True``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .download import fetch

TINY_SHAKESPEARE_URL = (
    "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
)
# 1,115,394 bytes; the same sum is pinned by many projects that use this file.
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"


def pydoc_topics_text() -> str:
    """The text of CPython's ``pydoc_data.topics``: every help topic, sorted by name."""
    from pydoc_data.topics import topics

    return "\n".join(topics[key] for key in sorted(topics))


def read_text_file(source: str | os.PathLike[str]) -> tuple[str, Path]:
    """Read a UTF-8 text file, or the ``input.txt`` in a folder.

    Returns:
        ``(text, path)``.

    Raises:
        FileNotFoundError: the path, or the folder's ``input.txt``, does not exist.
        ValueError: the file cannot be read, is not UTF-8 text, or is empty.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "input.txt").is_file():
            raise FileNotFoundError(
                f"no input.txt in {path}; pass a .txt file or a folder holding input.txt"
            )
        path = path / "input.txt"
    if not path.exists():
        raise FileNotFoundError(f"text corpus {path} does not exist")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text ({err}); convert it to UTF-8") from err
    except OSError as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not text.strip():
        raise ValueError(f"{path} is empty; a character-level corpus needs some text")
    return text, path


def get_batch(
    ids: torch.Tensor, block: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows for next-character prediction.

    Args:
        ids: 1-D LongTensor of character ids.
        block: window length.
        batch_size: number of windows.
        generator: a seeded ``torch.Generator`` (same seed -> same batches).

    Returns:
        ``(x, y)`` of shape ``(batch_size, block)`` with ``y[:, t] = ids[start + t + 1]``.
    """
    if ids.ndim != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if block < 1 or len(ids) <= block:
        raise ValueError(f"need 1 <= block < len(ids); got block={block}, len(ids)={len(ids)}")
    starts = torch.randint(0, len(ids) - block, (batch_size,), generator=generator)
    index = starts[:, None] + torch.arange(block)
    return ids[index], ids[index + 1]


@dataclass(frozen=True)
class TextCorpus:
    """A character-level corpus: vocabulary, encoded train/validation ids, batch sampling.

    The split is by position: the first ``1 - val_fraction`` of the text trains, the rest
    validates.
    """

    name: str
    text: str
    chars: tuple[str, ...]
    train: torch.Tensor
    val: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        """Vocabulary size."""
        return len(self.chars)

    vocab_size = n_classes

    def encode(self, s: str) -> torch.Tensor:
        """Character ids of ``s`` (every character must be in the vocabulary)."""
        index = {c: i for i, c in enumerate(self.chars)}
        try:
            return torch.tensor([index[c] for c in s], dtype=torch.long)
        except KeyError as err:
            raise ValueError(
                f"character {err.args[0]!r} is not in the {self.name} vocabulary"
            ) from None

    def decode(self, ids: torch.Tensor | list[int]) -> str:
        """The text of a sequence of ids."""
        return "".join(self.chars[int(i)] for i in ids)

    def batch(
        self, split: str, block: int, batch_size: int, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:func:`get_batch` on the ``"train"`` or ``"val"`` ids."""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return get_batch(self.train if split == "train" else self.val, block, batch_size, generator)

    def summary(self) -> dict[str, Any]:
        """Name and sizes, for printing."""
        return {
            "name": self.name,
            "n_chars": len(self.text),
            "n_train": len(self.train),
            "n_val": len(self.val),
            "vocab_size": self.n_classes,
        }

    def describe(self) -> str:
        """One line such as ``pydoc-topics: 465048 characters (418543 train / 46505 val), ...``."""
        s = self.summary()
        return (
            f"{s['name']}: {s['n_chars']} characters ({s['n_train']} train / {s['n_val']} val), "
            f"vocabulary {s['vocab_size']}"
        )


def make_corpus(
    name: str, text: str, *, val_fraction: float = 0.1, meta: dict | None = None
) -> TextCorpus:
    """A :class:`TextCorpus` of ``text``: sorted unique characters, split by position."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    if len(text) < 2:
        raise ValueError(f"{name}: a corpus needs at least two characters")
    chars = tuple(sorted(set(text)))
    index = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([index[c] for c in text], dtype=torch.long)
    n_train = min(len(ids) - 1, max(1, int(round((1.0 - val_fraction) * len(ids)))))
    return TextCorpus(
        name=name,
        text=text,
        chars=chars,
        train=ids[:n_train],
        val=ids[n_train:],
        meta={**(meta or {}), "split": f"by position, first {n_train} characters train"},
    )


def load_text_corpus(
    source: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    val_fraction: float = 0.1,
) -> TextCorpus:
    """A character-level corpus from a file, a folder holding ``input.txt``, or the default.

    Args:
        source: a UTF-8 ``.txt`` file or a folder with ``input.txt``. ``None``: the pydoc
            topics, or Tiny Shakespeare when ``download`` is true.
        download: fetch Tiny Shakespeare into the cache (checksummed). Raises
            :class:`~hybridlab.data.download.DataUnavailable` when offline.
        val_fraction: the last fraction of the text, used for validation.

    Returns:
        A :class:`TextCorpus` named ``"pydoc-topics"``, ``"tiny-shakespeare"`` (a file starting
        with Tiny Shakespeare's first line) or ``"text-file"``.
    """
    if source is None and not download:
        return make_corpus(
            "pydoc-topics", pydoc_topics_text(), val_fraction=val_fraction,
            meta={"source": "pydoc_data.topics"},
        )
    if source is None:
        source = fetch(
            TINY_SHAKESPEARE_URL, sha256=TINY_SHAKESPEARE_SHA256, fname="input.txt",
            subdir="tinyshakespeare",
        )
    text, path = read_text_file(source)
    name = "tiny-shakespeare" if text.startswith("First Citizen:") else "text-file"
    return make_corpus(name, text, val_fraction=val_fraction, meta={"source": str(path)})
