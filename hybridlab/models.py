"""Small networks for the three tasks, each with a hidden Linear that a device can replace.

* vision -- :class:`DigitsCNN` on images ``(1, 8, 8)`` (sklearn digits) or ``(1, 28, 28)`` (MNIST);
  default black box ``hidden`` (``width x width``);
* audio -- :class:`AudioCNN` on log-mel features ``(1, n_mels, frames)``; default black box
  ``hidden`` (``width x width``);
* text -- :class:`CharTransformer` on character ids ``(batch, time)``; default black box
  ``blocks.0.attn.proj`` (``width x width``).

Every model is ordinary PyTorch and knows nothing of devices: the hybrid network is made by
:func:`hybridlab.layer.replace_linear` on one of the names :func:`replaceable` lists
(:data:`DEFAULT_BLACK_BOX` gives the one the book uses). The two CNNs end in the same head,

    features -> embed (Linear) -> ReLU -> hidden (Linear, width x width) -> ReLU -> head (Linear)

so the black box sits between a trained feature extractor and a trained classifier, and the
surrogate's ``dL/dx`` is what trains everything before it. In the transformer the default black
box is the attention output projection of the first block (a square ``width x width`` matrix
writing into the residual stream): the surrogate carries the gradient into that attention layer,
while the residual stream carries it around the black box.

>>> from hybridlab.data import load_task
>>> data = load_task("vision")
>>> model = build_model("vision", data, seed=0)
>>> replaceable(model)
['embed', 'hidden', 'head']
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DEFAULT_BLACK_BOX", "MODEL_DEFAULTS", "AudioCNN", "CharMLP", "CharTransformer", "DigitsCNN", "InputMLP",
           "build_model", "replaceable"]

#: name of the Linear that becomes the black box by default, per task
DEFAULT_BLACK_BOX: dict[str, str] = {"vision": "hidden", "audio": "hidden", "text": "blocks.0.attn.proj"}

#: frames the spectrogram is pooled to when the audio model has no convolutions (``channels=0``)
AUDIO_INPUT_FRAMES = 8

#: default model sizes per task (keyword arguments of :func:`build_model`); ``channels=0`` (vision,
#: audio) builds :class:`InputMLP` and ``n_layer=0`` (text) :class:`CharMLP`: the networks without a
#: digital layer before their ``embed``
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "vision": {"width": 64, "channels": 32},
    "audio": {"width": 64, "channels": 64},
    "text": {"width": 64, "n_layer": 2, "n_head": 4, "block_size": 32},
}


def replaceable(model: nn.Module) -> list[str]:
    """Names of the ``nn.Linear`` layers of ``model`` (each can become a black box)."""
    return [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]


class _Head(nn.Module):
    """``embed -> ReLU -> hidden -> ReLU -> head``: the shared classifier of the two CNNs."""

    def __init__(self, n_features: int, width: int, n_classes: int) -> None:
        super().__init__()
        self.embed = nn.Linear(n_features, width)
        self.hidden = nn.Linear(width, width)  # the default black box
        self.head = nn.Linear(width, n_classes)

    def classify(self, features: Tensor) -> Tensor:
        h = F.relu(self.embed(features.flatten(1)))
        h = F.relu(self.hidden(h))
        return self.head(h)


class DigitsCNN(_Head):
    """Two 3x3 convolutions, adaptive average pooling to 4x4, then the shared head.

    Works for any image size (8x8 sklearn digits, 28x28 MNIST, ...): the pooling fixes the
    number of features at ``channels * 16``.

    Args:
        in_channels: image channels.
        n_classes: number of classes.
        width: size of the square ``hidden`` Linear (the black box).
        channels: convolution channels.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 10, *, width: int = 64, channels: int = 32) -> None:
        super().__init__(channels * 16, width, n_classes)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, channels // 2, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels // 2, channels, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(4),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(batch, n_classes)`` for images ``(batch, in_channels, height, width)``."""
        return self.classify(self.features(x))


class InputMLP(_Head):
    """The shared head straight on the input: no digital layer before ``embed``.

    With ``embed`` as the black box the device is the first thing the input meets, so no trainable
    layer before it can make up for a device that does not learn: the configuration of the task
    chapters in which the device carries the computation. Images are flattened as they are;
    spectrograms are average-pooled over time to ``frames`` frames first (a fixed, untrained
    operation), so that the device sees ``n_mels x frames`` numbers.

    Args:
        input_shape: shape of one example, ``(channels, height, width)``.
        n_classes: number of classes.
        width: output width of ``embed`` (the black box) and of ``hidden``.
        frames: if given, pool the last axis to this many frames first (audio).
    """

    def __init__(self, input_shape: tuple[int, ...], n_classes: int = 10, *, width: int = 64,
                 frames: int | None = None) -> None:
        shape = list(input_shape)
        if frames is not None:
            shape[-1] = frames
        super().__init__(math.prod(shape), width, n_classes)
        self.pool = nn.AdaptiveAvgPool1d(frames) if frames is not None else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(batch, n_classes)`` for inputs ``(batch, *input_shape)``."""
        return self.classify(self.pool(x.flatten(1, -2)) if not isinstance(self.pool, nn.Identity) else x)


class AudioCNN(_Head):
    """A time-delay network: 1-D convolutions over frames, with the mel bins as channels.

    Input ``(batch, 1, n_mels, frames)`` log-mel features (any channel count: channels and mel
    bins are stacked). Three convolutions (kernel 5, 3, 3; max pooling by 2 after the first two)
    and adaptive average pooling to 4 time steps, then the shared head.

    Args:
        n_mels: mel bins times input channels.
        n_classes: number of classes.
        width: size of the square ``hidden`` Linear (the black box).
        channels: convolution channels.
    """

    def __init__(self, n_mels: int = 32, n_classes: int = 10, *, width: int = 64, channels: int = 64) -> None:
        super().__init__(channels * 4, width, n_classes)
        self.features = nn.Sequential(
            nn.Conv1d(n_mels, channels, 5, padding=2), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(), nn.MaxPool1d(2),
            nn.Conv1d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool1d(4),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(batch, n_classes)`` for features ``(batch, channels, n_mels, frames)``."""
        return self.classify(self.features(x.flatten(1, -2)))


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention; ``proj`` is the square output projection."""

    def __init__(self, width: int, n_head: int) -> None:
        super().__init__()
        if width % n_head:
            raise ValueError(f"width {width} must be divisible by n_head {n_head}")
        self.n_head = n_head
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: ``x + attn(ln(x))``, then ``x + mlp(ln(x))``."""

    def __init__(self, width: int, n_head: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, n_head)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class CharTransformer(nn.Module):
    """A small decoder-only character transformer (nanoGPT style, no dropout, untied head).

    Token and position embeddings, ``n_layer`` pre-LayerNorm blocks, a final LayerNorm and a
    linear head. Linear layers are named ``blocks.{i}.attn.qkv``, ``blocks.{i}.attn.proj``
    (square), ``blocks.{i}.mlp.0`` / ``blocks.{i}.mlp.2`` and ``head``.

    Args:
        vocab_size: number of characters.
        block_size: longest context (input length).
        width: embedding width.
        n_layer: number of blocks.
        n_head: attention heads (must divide ``width``).
    """

    def __init__(self, vocab_size: int, *, block_size: int = 64, width: int = 64, n_layer: int = 2,
                 n_head: int = 4) -> None:
        super().__init__()
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, width)
        self.pos = nn.Embedding(block_size, width)
        self.blocks = nn.ModuleList(Block(width, n_head) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the projections into the residual stream
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(self, idx: Tensor) -> Tensor:
        """Logits ``(batch, time, vocab_size)`` for character ids ``(batch, time)``."""
        T = idx.shape[1]
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}")
        x = self.tok(idx) + self.pos(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


class CharMLP(nn.Module):
    """A character model without attention: an MLP over the one-hot codes of the last ``context`` characters.

    ``embed`` (``context * vocab_size -> width``) reads the raw one-hot codes, then a ReLU and a linear
    ``head``. As the black box, ``embed`` is the first thing the text meets: no digital layer before it
    can make up for a device that does not learn (the task chapters' configuration in which the device
    carries the computation). Logits come at every position, like :class:`CharTransformer`, so the
    same training loop serves both.

    Args:
        vocab_size: number of characters.
        block_size: longest input (positions that get a prediction).
        width: output width of ``embed``.
        context: characters seen before each prediction (the earliest positions see zero padding).
    """

    def __init__(self, vocab_size: int, *, block_size: int = 32, width: int = 64, context: int = 8) -> None:
        super().__init__()
        self.vocab_size, self.block_size, self.context = vocab_size, block_size, context
        self.embed = nn.Linear(context * vocab_size, width)
        self.head = nn.Linear(width, vocab_size)

    def forward(self, idx: Tensor) -> Tensor:
        """Logits ``(batch, time, vocab_size)`` for character ids ``(batch, time)``."""
        B, T = idx.shape
        if T > self.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.block_size}")
        onehot = F.one_hot(idx, self.vocab_size).to(self.head.weight.dtype)  # (B, T, V)
        padded = F.pad(onehot, (0, 0, self.context - 1, 0))  # zeros before the first character
        windows = padded.unfold(1, self.context, 1)  # (B, T, V, context): the last `context` characters
        x = windows.permute(0, 1, 3, 2).reshape(B, T, self.context * self.vocab_size)
        return self.head(F.relu(self.embed(x)))


def build_model(task: str, data: Any, *, seed: int = 0, **sizes: Any) -> nn.Module:
    """The model of ``task`` sized for ``data``, initialised from ``seed``.

    Args:
        task: ``"vision"``, ``"audio"`` or ``"text"``.
        data: the task's :class:`~hybridlab.data.Dataset` (input shape and class count are read
            from it) or, for text, its :class:`~hybridlab.data.TextCorpus` (vocabulary size).
        seed: seeds the initial weights (the global random state is left untouched).
        sizes: overrides of :data:`MODEL_DEFAULTS` ``[task]``, e.g. ``width=128``.

    Raises:
        ValueError: unknown task, or a size the model does not take.
    """
    if task not in MODEL_DEFAULTS:
        raise ValueError(f"unknown task {task!r}; choose one of {', '.join(MODEL_DEFAULTS)}")
    unknown = set(sizes) - set(MODEL_DEFAULTS[task])
    if unknown:
        raise ValueError(f"{task} model sizes are {', '.join(MODEL_DEFAULTS[task])}; got {', '.join(sorted(unknown))}")
    kw = {**MODEL_DEFAULTS[task], **sizes}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if task in ("vision", "audio") and kw["channels"] == 0:  # no digital feature extractor
            return InputMLP(tuple(data.input_shape), data.n_classes, width=kw["width"],
                            frames=AUDIO_INPUT_FRAMES if task == "audio" else None)
        if task == "vision":
            return DigitsCNN(data.input_shape[0], data.n_classes, **kw)
        if task == "audio":
            channels, n_mels = data.input_shape[0], data.input_shape[1]
            return AudioCNN(channels * n_mels, data.n_classes, **kw)
        if kw["n_layer"] == 0:  # no attention: the MLP over the last characters
            return CharMLP(data.vocab_size, block_size=kw["block_size"], width=kw["width"])
        return CharTransformer(data.vocab_size, **kw)
