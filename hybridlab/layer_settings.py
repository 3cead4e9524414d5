"""The settings of a black-box layer (:class:`hybridlab.layer.BlackBoxLinear`), one dataclass per concern.

:class:`ZOSettings` says how ``dL/dw`` is estimated from queries (chapter 3), :class:`SurrogateSettings`
how the low-rank surrogate behind ``dL/dx`` is fitted and kept current (chapters 1, 4, 6). Both check
their values when made, so a wrong setting fails where it is written, not in the middle of training.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from . import checks
from .sketch import KINDS as SKETCH_KINDS
from .zo import KINDS as ZO_KINDS
from .zo import SCHEMES

__all__ = ["UPKEEPS", "SurrogateSettings", "ZOSettings"]

UPKEEPS: tuple[str, ...] = ("ksl", "cached", "rebuild", "none", "forward")
"""How the surrogate is kept current after the device parameters moved (:class:`SurrogateSettings`)."""


@dataclass(frozen=True)
class ZOSettings:
    """How the layer estimates ``dL/dw`` from queries (chapter 3, :func:`hybridlab.zo.zo_gradient`).

    Attributes:
        samples: number of random directions ``M``.
        mu: finite-difference step.
        directions: ``'gaussian'``, ``'rademacher'``, ``'packed'`` (Rademacher signs, 64 per random
            integer) or ``'lowrank'`` (rank-``direction_rank`` matrices over the device's
            ``param_shape``, ``k (d1 + d2)`` random numbers per direction instead of ``p``); see
            :mod:`hybridlab.zo` for their variance.
        direction_rank: ``k`` of ``'lowrank'`` directions.
        scheme: ``'forward'`` or ``'central'`` differences.
        compressed: the compressed-batch estimate (``d_out`` queries per sample instead of the
            batch; devices linear in x only).
    """

    samples: int = 10
    mu: float = 1e-3
    directions: str = "gaussian"
    scheme: str = "forward"
    compressed: bool = False
    direction_rank: int = 1

    def __post_init__(self) -> None:
        checks.count(self.samples, "samples", what="ZO samples M")
        checks.positive_number(self.mu, "mu", "the ZO finite-difference step")
        checks.choice(self.directions, "directions", ZO_KINDS)
        checks.choice(self.scheme, "scheme", SCHEMES)
        checks.choice(self.compressed, "compressed", (True, False))
        checks.count(self.direction_rank, "direction_rank", what="rank k of 'lowrank' ZO directions")


@dataclass(frozen=True)
class SurrogateSettings:
    """The low-rank surrogate ``U S V^T`` behind ``dL/dx`` and how it is kept current (chapters 1, 4).

    Attributes:
        rank: surrogate rank ``r``.
        sketch: sketch size ``s`` of the implicit projector-splitting update.
        sketch_kind: ``'gaussian'``, ``'rademacher'`` or ``'orthogonal'`` sketch rows.
        init: initial fit, ``'identity'`` (``d_in`` queries) or ``'randomized'``.
        upkeep: how the surrogate follows the device after every optimizer step:

            * ``'ksl'`` -- the reference implicit projector-splitting step: ``2r + 2s`` queries,
              at the old and at the new parameters (one extra reconfiguration);
            * ``'cached'`` -- the same step with the queries at the old parameters kept from the
              previous step and a fixed sketch: ``2r + s`` queries, no reconfiguration back;
            * ``'rebuild'`` -- a full re-read (``d_in`` queries) every ``rebuild_every`` steps;
            * ``'none'`` -- the initial fit is kept (a static surrogate);
            * ``'forward'`` -- a projector-splitting step fed by the forward pass's own pairs
              ``(X, Y = A(w) X)``: the ridge correction of :func:`hybridlab.surrogate.forward_upkeep`.
              No query and no reconfiguration beyond what training spends anyway.
        rebuild_every: re-read the whole matrix every this many steps: the period of the
            ``'rebuild'`` upkeep (default 10), and an optional periodic reset for the others.
        ridge: the ``'forward'`` upkeep's ridge, relative to the mean squared input.
    """

    rank: int = 16
    sketch: int = 64
    sketch_kind: str = "gaussian"
    init: str = "identity"
    upkeep: str = "ksl"
    rebuild_every: int | None = None
    ridge: float = 1e-2

    def __post_init__(self) -> None:
        checks.count(self.rank, "rank", what="surrogate rank r")
        checks.count(self.sketch, "sketch", what="sketch size s")
        checks.choice(self.sketch_kind, "sketch_kind", SKETCH_KINDS)
        checks.choice(self.init, "init", ("identity", "randomized"))
        checks.choice(self.upkeep, "upkeep", UPKEEPS)
        if self.rebuild_every is not None:
            checks.count(self.rebuild_every, "rebuild_every", what="steps between full re-reads; None: never")
        checks.positive_number(self.ridge, "ridge", "the forward upkeep's relative ridge, e.g. 1e-2")


def _settings(cls: type, given: Any, options: dict[str, Any]) -> Any:
    """``given`` (an instance of ``cls`` or None) with the matching keyword ``options`` applied."""
    base = cls() if given is None else given
    if not isinstance(base, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(base).__name__}")
    mine = {k: options.pop(k) for k in [f.name for f in fields(cls)] if k in options}
    return replace(base, **mine) if mine else base
