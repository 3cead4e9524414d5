"""Argument checks shared by the whole package: one rule per kind of value.

Every public function of :mod:`hybridlab` validates its arguments with these helpers, so the same
value is accepted or refused everywhere with the same message: a count is a Python or NumPy
integer (never a bool, never a float such as ``10.0``), a step is a positive finite number, a
choice is one of a listed set. Each error names the argument, what it holds and what to do.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

__all__ = ["integer", "count", "positive_number", "nonnegative_number", "choice", "tensor", "finite"]


def _number(value: Any, name: str, expected: str) -> float:
    if not isinstance(value, bool):
        try:
            return float(value)
        except (TypeError, ValueError):
            pass
    raise TypeError(f"`{name}` must be {expected}, got {value!r}")


def integer(value: Any, name: str, what: str = "") -> int:
    """``value`` as an ``int``: Python, NumPy and torch integers are accepted, bools and floats not.

    Raises:
        TypeError: not an integer (``what`` says what the number counts).
    """
    try:
        if isinstance(value, bool):
            raise TypeError
        return operator.index(value)
    except TypeError:
        meaning = f" ({what})" if what else ""
        raise TypeError(f"`{name}`{meaning} must be an integer, got {value!r}") from None


def count(value: Any, name: str, minimum: int = 1, what: str = "") -> int:
    """``value`` as an ``int >= minimum`` (see :func:`integer` for what counts as an integer).

    Args:
        value: the value to check.
        name: the argument's name, for the message.
        minimum: the smallest allowed value.
        what: what the number counts (for example ``"ZO samples M"``), for the message.

    Raises:
        TypeError: not an integer.
        ValueError: below ``minimum``.
    """
    n = integer(value, name, what)
    if n < minimum:
        meaning = f" ({what})" if what else ""
        raise ValueError(f"`{name}`{meaning} must be an integer >= {minimum}, got {n}")
    return n


def positive_number(value: Any, name: str, hint: str = "") -> float:
    """``value`` as a finite ``float > 0``.

    Raises:
        TypeError: not a number.
        ValueError: not finite, or not positive (``hint`` is appended to the message).
    """
    v = _number(value, name, "a positive finite number")
    if not math.isfinite(v) or v <= 0.0:
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}" + (f"; {hint}" if hint else ""))
    return v


def nonnegative_number(value: Any, name: str, maximum: float | None = None) -> float:
    """``value`` as a finite ``float >= 0`` (and ``<= maximum`` when given).

    Raises:
        TypeError: not a number.
        ValueError: not finite, negative or above ``maximum``.
    """
    v = _number(value, name, "a finite number >= 0")
    if not math.isfinite(v) or v < 0.0:
        raise ValueError(f"`{name}` must be a finite number >= 0, got {value!r}")
    if maximum is not None and v > maximum:
        raise ValueError(f"`{name}` must be <= {maximum}, got {value!r}")
    return v


def choice(value: Any, name: str, options: Sequence[Any]) -> Any:
    """``value`` if it is one of ``options``.

    Raises:
        ValueError: listing the valid options.
    """
    if value not in options:
        raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(map(repr, options))}")
    return value


def tensor(value: Any, name: str, ndim: int, expected: str) -> Tensor:
    """``value`` if it is a tensor with ``ndim`` dimensions (``expected`` describes the shape).

    Raises:
        TypeError: not a tensor.
        ValueError: wrong number of dimensions.
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor of shape {expected}, got {type(value).__name__}")
    if value.dim() != ndim:
        raise ValueError(f"`{name}` must have shape {expected}, got shape {tuple(value.shape)}")
    return value


def finite(value: Tensor, name: str, who: str) -> Tensor:
    """``value`` if every entry is finite (cheap: a finite sum means finite entries).

    Raises:
        ValueError: naming ``who`` produced the NaN/Inf, how many entries, and what to check.
    """
    if not bool(torch.isfinite(value.sum())) and not bool(torch.isfinite(value).all()):
        bad = int((~torch.isfinite(value)).sum())
        raise ValueError(
            f"{who} returned non-finite values in `{name}` ({bad} of {value.numel()} entries are NaN/Inf): "
            "the device returned NaN/Inf; check its parameters, input scale and non-idealities"
        )
    return value
