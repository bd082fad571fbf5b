"""Onboard time: the system clock corrected by a correlation the ground sets.

    onboard = system + offset_s + drift_ppm * 1e-6 * (system - epoch_s)

The ground measures how far the onboard clock is from true time (offset at an
epoch) and how fast that grows (drift), and sends the three values by command;
they live in the parameter store (time.offset_s, time.drift_ppm, time.epoch_s),
so they are validated like any parameter and survive a reboot. Housekeeping
reports them with `report()`.

A step of the system clock (someone or something set it) moves onboard time
with it. We do not undo it: a step may well be a correction, and only the
ground can tell. `check()`, run from a rate group, detects it by comparing
how far the wall clock moved with how far the monotonic clock moved, reports
it and counts it, so the ground knows its correlation needs renewing.
Scheduling never reads the wall clock (flight/rategroups.py), so a step
changes no period.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

from kestrel.settings import Settings, setting

from .parameters import ParameterStore

# adjtime() and NTP slew the clock by at most 500 ppm; allow that much between checks.
MAX_SLEW_PPM = 500.0


@dataclass(frozen=True)
class TimeConfig(Settings):
    jump_tolerance_s: float = setting(0.5, "a wall-clock step larger than this (beyond slewing) is reported as a clock jump",
                                      above=0, high=3600)


class TimeCorrelation:
    """Onboard time from `wallclock`; clock steps detected against `clock` (monotonic).

    `on_jump(step_s)` is called for each step detected (positive: the wall
    clock jumped ahead). Counters: clock_jumps, last_jump_s,
    jumps_since_correlation (steps since the ground last set the correlation).
    """

    def __init__(self, parameters: ParameterStore, wallclock: Callable[[], float] = time.time,
                 clock: Callable[[], float] = time.monotonic, on_jump: Callable[[float], None] | None = None,
                 config: TimeConfig = TimeConfig()):
        self.parameters = parameters
        self.wallclock = wallclock
        self.clock = clock
        self.on_jump = on_jump
        self.config = config
        self.clock_jumps = 0
        self.last_jump_s = 0.0
        self.jumps_since_correlation = 0
        self._last = (clock(), wallclock())

    def correlation(self) -> tuple[float, float, float]:
        """(offset_s, drift_ppm, epoch_s), read as one consistent set."""
        values = self.parameters.values()   # one snapshot: a command setting all three is never seen half done
        return values["time.offset_s"], values["time.drift_ppm"], values["time.epoch_s"]

    def correct(self, system_s: float) -> float:
        offset_s, drift_ppm, epoch_s = self.correlation()
        return system_s + offset_s + drift_ppm * 1e-6 * (system_s - epoch_s)

    def now(self) -> float:
        """Onboard time, Unix seconds: what packets are stamped with."""
        return self.correct(self.wallclock())

    def set(self, offset_s: float, drift_ppm: float = 0.0, epoch_s: float | None = None) -> dict:
        """The ground's new correlation, all three checked and saved together (ParameterError if refused).

        `epoch_s` defaults to the system time now.
        """
        epoch_s = self.wallclock() if epoch_s is None else epoch_s
        stored = self.parameters.set_many({"time.offset_s": offset_s, "time.drift_ppm": drift_ppm,
                                           "time.epoch_s": epoch_s})
        self.jumps_since_correlation = 0
        return stored

    def check(self) -> float | None:
        """The wall-clock step since the last check, if beyond tolerance (reported); else None."""
        mono, wall = self.clock(), self.wallclock()
        last_mono, last_wall = self._last
        self._last = (mono, wall)
        step = (wall - last_wall) - (mono - last_mono)
        if abs(step) <= self.config.jump_tolerance_s + MAX_SLEW_PPM * 1e-6 * (mono - last_mono):
            return None
        self.clock_jumps += 1
        self.jumps_since_correlation += 1
        self.last_jump_s = step
        if self.on_jump is not None:
            self.on_jump(step)
        return step

    def report(self) -> dict:
        """For housekeeping."""
        offset_s, drift_ppm, epoch_s = self.correlation()
        system_s = self.wallclock()
        return {"time_offset_s": offset_s, "time_drift_ppm": drift_ppm, "time_epoch_s": epoch_s,
                "time_correction_s": self.correct(system_s) - system_s, "clock_jumps": self.clock_jumps,
                "last_jump_s": self.last_jump_s, "jumps_since_correlation": self.jumps_since_correlation}
