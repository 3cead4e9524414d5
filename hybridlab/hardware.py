"""Hardware time: what the queries and reconfigurations of a run would cost on a real device.

A device is not charged by the floating-point operations of its simulator but by what it is asked
to do: push input vectors through (**queries**) and write new parameters (**reconfigurations**).
:data:`TIMINGS` gives one typical time for each, per device kind, from the literature; they are
orders of magnitude, not the figures of a particular instrument, and every function takes your own.

========  ============  ===================  =================================================
device    per query     per reconfiguration  where the figures come from
========  ============  ===================  =================================================
slm       100 us        10 ms                liquid-crystal SLMs settle in milliseconds and run
                                             at tens to hundreds of frames per second; inputs
                                             from a fast modulator and a camera
                                             (Lazarev et al. 2019)
mrr       1 ns          10 us                thermo-optic ring tuning (microseconds to tens of
                                             microseconds; Liu et al. 2022); inputs modulated
                                             at GHz rates (Tait et al. 2017)
mzi       1 ns          10 us                thermo-optic phase shifters (Liu et al. 2022);
                                             GHz photodetection (Shen et al. 2017)
ideal     1 ns          1 us                 a fast electro-optic device, for comparison
========  ============  ===================  =================================================

On the thermo-optic chips a reconfiguration costs ten thousand queries, so a method that saves
reconfigurations (the cached or forward upkeep, the compressed batch) saves most of the time; on
an SLM, one hundred.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from . import checks

__all__ = ["TIMINGS", "Timing", "hardware_seconds", "pareto_front"]


@dataclass(frozen=True)
class Timing:
    """Seconds per query (one input vector through the device) and per reconfiguration."""

    query: float
    reconfiguration: float
    source: str = ""

    def __post_init__(self) -> None:
        checks.nonnegative_number(self.query, "query")
        checks.nonnegative_number(self.reconfiguration, "reconfiguration")


#: Typical times per device kind (see the module docstring for the sources). Adjust them, or pass
#: your own to :func:`hardware_seconds`.
TIMINGS: dict[str, Timing] = {
    "slm": Timing(100e-6, 10e-3, "lazarev2019"),
    "mrr": Timing(1e-9, 10e-6, "liu2022tops, tait2017"),
    "mzi": Timing(1e-9, 10e-6, "liu2022tops, shen2017"),
    "ideal": Timing(1e-9, 1e-6, "an idealised fast device"),
}


def hardware_seconds(queries: float, reconfigurations: float, device: str,
                     timings: Mapping[str, Timing] | None = None) -> float:
    """Seconds of device time for ``queries`` queries and ``reconfigurations`` reconfigurations.

    Args:
        queries: input vectors pushed through the device.
        reconfigurations: parameter vectors written to it.
        device: a device kind, a key of ``timings``.
        timings: per-kind times (default :data:`TIMINGS`).

    Raises:
        ValueError: unknown device kind, or negative counts.
    """
    timings = TIMINGS if timings is None else timings
    checks.choice(device, "device", tuple(timings))
    t = timings[device]
    q = checks.nonnegative_number(queries, "queries")
    c = checks.nonnegative_number(reconfigurations, "reconfigurations")
    return q * t.query + c * t.reconfiguration


def pareto_front(cost: Sequence[float], value: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats: lower or equal cost and higher value, one strictly.

    Returned in order of increasing cost (ties in cost keep the best value only).
    """
    if len(cost) != len(value):
        raise ValueError(f"cost and value must have the same length, got {len(cost)} and {len(value)}")
    order = sorted(range(len(cost)), key=lambda i: (cost[i], -value[i]))
    front, best = [], float("-inf")
    for i in order:
        if value[i] > best:
            front.append(i)
            best = value[i]
    return front
