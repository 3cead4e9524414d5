"""hybridlab.timing: exclusive sections that partition a step (a fake clock: nothing is timed)."""

from __future__ import annotations

import pytest

from hybridlab import timing
from hybridlab.timing import SectionTimer, timed


class FakeClock:
    """Advances by one second at every reading."""

    def __init__(self):
        self.now = 0.0
        self.reads = 0

    def __call__(self):
        self.now += 1.0
        self.reads += 1
        return self.now


@timed("random")
def draw():
    return 1


@timed("device")
def query():
    return draw() + 1  # random numbers drawn inside a device call count as random, not twice


def test_sections_are_exclusive_and_add_up():
    clock = FakeClock()
    syncs = []
    with SectionTimer(clock=clock, synchronize=lambda: syncs.append(1)) as timer:
        with timer.section("rest"):  # reads 1 .. 6
            assert query() == 2  # device enters at 2, random at 3 and leaves at 4, device leaves at 5
    assert timer.totals == {"random": 1.0, "device": 2.0, "rest": 2.0}
    assert sum(timer.totals.values()) == 6.0 - 1.0  # the outer section's wall time, exactly
    assert len(syncs) == clock.reads == 6


def test_inactive_timer_costs_nothing_and_timers_nest():
    assert timing._active is None and query() == 2
    with SectionTimer(clock=FakeClock()) as outer:
        with SectionTimer(clock=FakeClock()) as inner:
            assert timing._active is inner
            query()
        assert timing._active is outer
    assert timing._active is None
    assert outer.totals == {} and set(inner.totals) == {"device", "random"}


def test_an_exception_still_closes_the_section():
    with SectionTimer(clock=FakeClock()) as timer:
        with pytest.raises(ZeroDivisionError):
            with timer.section("rest"):
                raise ZeroDivisionError
    assert timer.totals == {"rest": 1.0} and timer._stack == []
