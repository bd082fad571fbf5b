"""The payload's modes and what may move it between them.

    BOOT -> SAFE -> STANDBY -> OBSERVE, and back down from any of them.

BOOT lasts until the program has checked its configuration, store and
sensor; it then enters SAFE, or STANDBY when `flight.start_mode` says so. In
SAFE the payload takes commands and reports housekeeping but runs no
detection and sends no imagery; in STANDBY the sensor is read and the
detector's background model kept warm, without products; OBSERVE is the
mission. A command may move one step up or any number down; a fault or the
watchdog moves it to SAFE. Each transition is an event (reported through the
callback the executive gives).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Mode(enum.IntEnum):
    BOOT = 0
    SAFE = 1
    STANDBY = 2
    OBSERVE = 3


class Cause(enum.Enum):
    COMMAND = "command"
    FAULT = "fault"
    WATCHDOG = "watchdog"
    START = "start"


class ModeRefused(ValueError):
    """A transition the rules do not allow; the message says which and why."""


@dataclass
class ModeCounters:
    transitions: int = 0
    refused: int = 0
    to_safe_by_fault: int = 0


class ModeMachine:
    """Holds the mode; `on_change(old, new, cause, reason)` reports each transition."""

    def __init__(self, on_change):
        self.mode = Mode.BOOT
        self.counters = ModeCounters()
        self._on_change = on_change

    def allowed(self, target: Mode, cause: Cause) -> str | None:
        """None when the move is allowed, else why not."""
        if target == self.mode:
            return f"already in {self.mode.name}"
        if target == Mode.BOOT:
            return "BOOT is entered only by starting the program"
        if cause in (Cause.FAULT, Cause.WATCHDOG):
            return None if target == Mode.SAFE else f"a {cause.value} moves the payload to SAFE only"
        if cause == Cause.START:
            return None if self.mode == Mode.BOOT else "the program has started already"
        if self.mode == Mode.BOOT:
            return "the program is still starting"
        if target > self.mode + 1:
            return f"{self.mode.name} -> {target.name} skips a mode: go up one step at a time"
        return None

    def enter(self, target: Mode, cause: Cause, reason: str = "") -> None:
        """Move to `target`; ModeRefused (counted) when the rules say no."""
        refusal = self.allowed(target, cause)
        if refusal is not None:
            self.counters.refused += 1
            raise ModeRefused(f"mode {self.mode.name} -> {target.name} refused: {refusal}")
        old, self.mode = self.mode, target
        self.counters.transitions += 1
        if target == Mode.SAFE and cause in (Cause.FAULT, Cause.WATCHDOG):
            self.counters.to_safe_by_fault += 1
        self._on_change(old, target, cause, reason)

    def fault(self, reason: str) -> None:
        """A fault: to SAFE unless already there (or still booting, where it stays until started)."""
        if self.mode not in (Mode.SAFE, Mode.BOOT):
            self.enter(Mode.SAFE, Cause.FAULT, reason)

    @property
    def observing(self) -> bool:
        return self.mode == Mode.OBSERVE

    @property
    def sensing(self) -> bool:
        return self.mode in (Mode.STANDBY, Mode.OBSERVE)
