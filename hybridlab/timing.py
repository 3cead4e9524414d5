"""Where a training step's time goes: exclusive wall-clock sections, off unless a benchmark turns them on.

The package marks the work that is not ordinary digital computation with :func:`timed`:

* ``"device"`` -- the simulated device (:class:`hybridlab.devices.Device`: ``configure``,
  ``query``, ``query_batch``, ``advance``), the part a physical device would do in hardware;
* ``"random"`` -- the random probes of :mod:`hybridlab.sketch` (ZO directions, sketches);
* ``"upkeep"`` -- keeping the surrogate current (the black-box layer's fit and updates).

While a :class:`SectionTimer` is active, each marked call adds its wall-clock time to its section,
*exclusive* of the marked calls nested inside it (an upkeep's device queries count as ``"device"``,
not twice), and everything else inside :meth:`SectionTimer.section` of the whole step lands in that
outer section. The sections therefore partition the step: they add up to its time exactly. With
no timer active a marked call costs one global lookup.

Example (what ``benchmarks/step_time.py`` does)::

    with SectionTimer() as timer:
        for _ in range(steps):
            with timer.section("rest"):
                train_step()
    timer.totals  # {'rest': ..., 'device': ..., 'random': ..., 'upkeep': ...}, seconds summed over steps
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = ["SECTIONS", "SectionTimer", "timed"]

SECTIONS: tuple[str, ...] = ("device", "random", "upkeep")
"""The sections the package marks (see the module docstring)."""

_active: SectionTimer | None = None

F = TypeVar("F", bound=Callable[..., Any])


class SectionTimer:
    """Exclusive wall-clock time per section while active (``with SectionTimer() as t: ...``).

    Args:
        clock: seconds as a float (default :func:`time.perf_counter`; tests pass a fake clock).
        synchronize: called before every clock reading, e.g. ``torch.cuda.synchronize`` so that
            queued GPU work is charged to the section that queued it (this slows the run down:
            time the whole step without the timer for the headline number).
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 synchronize: Callable[[], None] | None = None) -> None:
        self.clock = clock
        self.synchronize = synchronize
        self.totals: dict[str, float] = {}
        self._stack: list[list[Any]] = []  # [name, start, time spent in nested sections]
        self._previous: SectionTimer | None = None

    def _now(self) -> float:
        if self.synchronize is not None:
            self.synchronize()
        return self.clock()

    @contextlib.contextmanager
    def section(self, name: str) -> Iterator[None]:
        """Charge the time inside to ``name``, less the time of the sections nested inside."""
        frame = [name, self._now(), 0.0]
        self._stack.append(frame)
        try:
            yield
        finally:
            elapsed = self._now() - frame[1]
            self._stack.pop()
            self.totals[name] = self.totals.get(name, 0.0) + elapsed - frame[2]
            if self._stack:
                self._stack[-1][2] += elapsed

    def __enter__(self) -> SectionTimer:
        global _active
        self._previous, _active = _active, self
        return self

    def __exit__(self, *exc: Any) -> None:
        global _active
        _active = self._previous


def timed(name: str) -> Callable[[F], F]:
    """Decorator: charge the calls of a function to section ``name`` while a :class:`SectionTimer` is active."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            timer = _active
            if timer is None:
                return fn(*args, **kwargs)
            with timer.section(name):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
