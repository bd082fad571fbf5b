"""Rate groups: one tick source divided among groups of callables (F Prime's
RateGroupDriver and ActiveRateGroup, in one thread).

A `TickSource` waits for ticks at a fixed base rate on the monotonic clock. Tick
n is due at start + n * period, computed from n rather than by adding periods,
so the schedule never drifts, and a wall-clock step (NTP, an operator, a GPS
fix) cannot move it: wall time is never read here. When the work of a tick
runs past the next tick's slot, the missed ticks are skipped, not run in a
burst, and counted.

A `RateGroupDriver` runs each `RateGroup` on the ticks its divisor (and
offset) selects, e.g. at 10 Hz: sensing every tick, housekeeping every 10th,
health every 100th. Per group it counts runs, overruns (a run longer than the
group's period: the culprit) and cycle slips (runs of the group lost because
the loop was late: the victims). A group whose slot was skipped runs on the
next tick that is run, late, so a slow member can delay a low-rate group such
as health but never starve it.

Members are called in the driver's thread, in the order given. An exception
from a member is a defect or a fault its component should have caught: it
propagates and stops the run (the program restarts) rather than being hidden.
"""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from typing import Callable, Sequence

from kestrel.settings import ConfigurationError


def divisor_for(period_s: float, base_rate_hz: float) -> int:
    """The tick divisor nearest a wanted period (at least 1): 1.0 s at 10 Hz is 10."""
    if not (period_s > 0 and base_rate_hz > 0):
        raise ConfigurationError(f"a rate group period and base rate must be > 0, got {period_s!r} s at {base_rate_hz!r} Hz")
    return max(1, round(period_s * base_rate_hz))


class ManualClock:
    """A monotonic clock that moves only when told: for accelerated runs (tests, the bench).

    Pass `clock=manual, wait=manual.sleep` to a TickSource: waiting for a tick
    then jumps time to it instead of sleeping. `cost(seconds)` is how a
    simulated member spends time.
    """

    def __init__(self, start: float = 1000.0):
        self.now = float(start)

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        self.now += max(0.0, seconds)
        return False   # like threading.Event.wait: False means "not stopped"

    cost = sleep


class JitterMeter:
    """Lateness of tick starts (seconds after due), the last `capacity` kept: bounded."""

    def __init__(self, capacity: int = 4096):
        self.samples: deque[float] = deque(maxlen=capacity)

    def add(self, lateness_s: float) -> None:
        self.samples.append(lateness_s)

    def percentile(self, q: float) -> float:
        """Nearest-rank percentile (0 < q <= 100) of the kept samples; 0.0 when none."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]

    def summary(self) -> dict:
        return {"jitter_p50_s": self.percentile(50), "jitter_p99_s": self.percentile(99),
                "jitter_max_s": max(self.samples, default=0.0), "jitter_samples": len(self.samples)}


class TickSource:
    """Ticks at `rate_hz` on a monotonic `clock`; `wait(seconds)` sleeps between them.

    Pass the program's `stop.wait` as `wait` so a stop ends the wait at once
    (a true return value means "stopped"); `time.sleep` works too, stopping
    within a period. Counters: `ticks` (returned), `ticks_missed` (skipped
    because the work before them ran late).
    """

    def __init__(self, rate_hz: float, clock: Callable[[], float] = time.monotonic,
                 wait: Callable[[float], object] = time.sleep, jitter: JitterMeter | None = None):
        if not (rate_hz > 0 and math.isfinite(rate_hz)):
            raise ConfigurationError(f"tick rate must be a finite number > 0 Hz, got {rate_hz!r}")
        self.rate_hz = float(rate_hz)
        self.period_s = 1.0 / self.rate_hz
        self.clock = clock
        self.wait = wait
        self.jitter = jitter if jitter is not None else JitterMeter()
        self.ticks = 0
        self.ticks_missed = 0
        self.index = -1          # index of the last tick returned
        self.start: float | None = None

    def due(self, index: int) -> float:
        return self.start + index * self.period_s

    def next(self) -> int | None:
        """Wait for the next tick and return its index; None if `wait` reported a stop."""
        if self.start is None:
            self.start = self.clock()     # tick 0 is now
            self.index = -1
        index = self.index + 1
        while True:
            now = self.clock()
            late_by = math.floor((now - self.start) / self.period_s) - index
            if late_by > 0:
                # Ticks whose slots have passed are skipped, not run in a burst; the
                # current slot runs, late by less than a period.
                self.ticks_missed += late_by
                index += late_by
            if now >= self.due(index):
                break
            if self.wait(self.due(index) - now):
                return None
        self.jitter.add(now - self.due(index))
        self.index = index
        self.ticks += 1
        return index


class RateGroup:
    """Members run in order every `divisor`-th tick, on ticks where index % divisor == offset.

    Counters: runs, overruns (a run longer than the group's period), slips
    (scheduled runs lost because the loop was late), last_duration_s,
    max_duration_s.
    """

    def __init__(self, name: str, divisor: int, members: Sequence[Callable[[], object]], offset: int = 0):
        if not isinstance(divisor, int) or divisor < 1:
            raise ConfigurationError(f"rate group {name!r}: divisor must be an integer >= 1, got {divisor!r}")
        if not isinstance(offset, int) or not 0 <= offset < divisor:
            raise ConfigurationError(f"rate group {name!r}: offset must be 0..{divisor - 1}, got {offset!r}")
        self.name = name
        self.divisor = divisor
        self.offset = offset
        self.members = tuple(members)
        self.runs = 0
        self.overruns = 0
        self.slips = 0
        self.last_duration_s = 0.0
        self.max_duration_s = 0.0
        self._next_slot = offset

    def due(self, index: int) -> bool:
        """Whether tick `index` runs this group; counts the slots lost since its last run."""
        if index < self._next_slot:
            return False
        latest = index - (index - self.offset) % self.divisor   # the newest slot at or before index
        self.slips += (latest - self._next_slot) // self.divisor  # slots passed without a run
        self._next_slot = latest + self.divisor
        return True

    def run(self, clock: Callable[[], float], period_s: float) -> float:
        started = clock()
        for member in self.members:
            member()
        elapsed = clock() - started
        self.runs += 1
        self.last_duration_s = elapsed
        self.max_duration_s = max(self.max_duration_s, elapsed)
        if elapsed > period_s:
            self.overruns += 1
        return elapsed

    def retime(self, divisor: int, index: int) -> None:
        """A new divisor from tick `index` on (a housekeeping period changed by command)."""
        if not isinstance(divisor, int) or divisor < 1:
            raise ConfigurationError(f"rate group {self.name!r}: divisor must be an integer >= 1, got {divisor!r}")
        self.divisor = divisor
        # Its slots from now on: index + divisor, and every divisor-th tick after.
        self.offset = (index + divisor) % divisor
        self._next_slot = index + divisor

    def counters(self) -> dict:
        return {"runs": self.runs, "overruns": self.overruns, "slips": self.slips,
                "last_duration_s": self.last_duration_s, "max_duration_s": self.max_duration_s}


class RateGroupDriver:
    """Divides the ticks of one TickSource among rate groups, in the calling thread."""

    def __init__(self, ticks: TickSource, groups: Sequence[RateGroup]):
        names = [g.name for g in groups]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"rate group names must be unique, got {names}")
        self.ticks = ticks
        self.groups = tuple(groups)
        self.ticks_run = 0     # a heartbeat: the health monitor watches it from another thread

    def dispatch(self, index: int) -> None:
        """Run every group due at tick `index`, in the order given."""
        for group in self.groups:
            if group.due(index):
                group.run(self.ticks.clock, group.divisor * self.ticks.period_s)
        self.ticks_run += 1

    def run(self, stop: threading.Event, max_ticks: int | None = None) -> None:
        """Tick until `stop` is set, or until `ticks_run` reaches `max_ticks` (skipped ticks not counted)."""
        while not stop.is_set() and (max_ticks is None or self.ticks_run < max_ticks):
            index = self.ticks.next()
            if index is None or stop.is_set():
                break
            self.dispatch(index)

    def counters(self) -> dict:
        """For housekeeping: the tick source's and each group's counters, flat."""
        values = {"ticks": self.ticks.ticks, "ticks_missed": self.ticks.ticks_missed, **self.ticks.jitter.summary()}
        for group in self.groups:
            values.update({f"{group.name}_{key}": value for key, value in group.counters().items()})
        return values
