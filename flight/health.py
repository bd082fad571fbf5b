"""Health: the systemd watchdog is fed only while every component shows progress (F Prime's Health).

Each component bumps a heartbeat counter in its own loop, once per cycle and
also when it waits idle (the downlink writer each time its queue wait times
out). `HealthMonitor.check()`, run from a slow rate group, reads them all: a
counter that has not moved since the last check belongs to a stalled
component (a sensor that delivers nothing, a writer stuck in a blocked port).
A counter, not a ping answered in the monitor's thread: only the component's
own thread can prove that thread is moving.

While all move, the monitor sends WATCHDOG=1. A stall is reported once as it
is seen, and once more if it ends; one that lasts `grace_s` asks for a clean
restart (`on_restart(reason)`: the program stops, flushes and exits with
EXIT_RESTART, which systemd's Restart=on-failure restarts). If the thread that
runs the monitor is the one stuck, nothing feeds the watchdog and systemd
kills and restarts the program after WatchdogSec: the backstop. Running the
health group on its own thread (an explicit RateGroupDriver) lets the monitor
see a stuck executive loop as a stall too, and restart cleanly.

`SdNotify` is sd_notify(3) in a few lines: datagrams to $NOTIFY_SOCKET.
"""
from __future__ import annotations

import math
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

from kestrel.cli import EXIT_RESTART  # noqa: F401 - restarted by systemd's Restart=on-failure
from kestrel.settings import ConfigurationError, Settings, setting


@dataclass(frozen=True)
class HealthConfig(Settings):
    period_s: float = setting(5.0, "seconds between health checks; under a systemd watchdog at most half "
                              "its WatchdogSec", above=0, high=3600)
    grace_s: float = setting(10.0, "a component stalled this long has the program restart; under a systemd "
                             "watchdog it must be shorter than WatchdogSec less one check period", above=0, high=86400)


def watchdog_timeout_s(environ: Mapping[str, str] = os.environ) -> float | None:
    """systemd's watchdog timeout (WATCHDOG_USEC) if it is meant for this process, else None."""
    usec = environ.get("WATCHDOG_USEC")
    if usec is None:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None    # set for another process (our parent, say): not ours to feed
    try:
        value = int(usec)
    except ValueError:
        value = 0
    if value <= 0:
        raise ConfigurationError(f"WATCHDOG_USEC must be a positive number of microseconds, got {usec!r}")
    return value / 1e6


class SdNotify:
    """Notifications to systemd; every call a no-op (False) when NOTIFY_SOCKET is unset.

    Counters: sent, send_errors (a failed send is counted, never raised:
    a watchdog that is not fed will tell).
    """

    def __init__(self, environ: Mapping[str, str] = os.environ):
        address = environ.get("NOTIFY_SOCKET") or None
        if address is not None and address[0] not in "/@":
            raise ConfigurationError(f"NOTIFY_SOCKET must be a path or an abstract socket name (@...), got {address!r}")
        # "@name" is Linux's abstract namespace, spelled with a leading NUL.
        self.address = None if address is None else "\0" + address[1:] if address[0] == "@" else address
        self.watchdog_timeout_s = watchdog_timeout_s(environ)
        self.sent = 0
        self.send_errors = 0
        self.last_error: str | None = None
        self._socket = None
        if self.address is not None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.setblocking(False)   # the health group never waits on systemd

    @property
    def ping_period_s(self) -> float | None:
        """How often to send WATCHDOG=1: half the timeout, as sd_watchdog_enabled(3) advises."""
        return None if self.watchdog_timeout_s is None else self.watchdog_timeout_s / 2

    def notify(self, *assignments: str) -> bool:
        if self._socket is None:
            return False
        try:
            self._socket.sendto("\n".join(assignments).encode("utf8", "replace"), self.address)
        except OSError as exc:
            self.send_errors += 1
            self.last_error = str(exc)
            return False
        self.sent += 1
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([_status(status)] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def status(self, text: str) -> bool:
        return self.notify(_status(text))

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([_status(status)] if status else []))

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def _status(text: str) -> str:
    return "STATUS=" + " ".join(text.splitlines())   # a newline would end the assignment


class HealthMonitor:
    """Feeds the watchdog while every component's heartbeat moves; reports stalls; asks for a restart.

    components: name -> a callable returning that component's heartbeat count.
    on_event(name, stalled_s, alive): alive False when a stall is first seen,
    True when that component moves again. on_restart(reason): once, when a
    stall has lasted config.grace_s. Counters: checks, watchdogs_sent,
    stalls, recoveries, restart_reason (None until a restart is asked for).
    """

    def __init__(self, components: Mapping[str, Callable[[], int]], notifier: SdNotify,
                 clock: Callable[[], float] = time.monotonic,
                 on_event: Callable[[str, float, bool], None] | None = None,
                 on_restart: Callable[[str], None] | None = None, config: HealthConfig = HealthConfig()):
        timeout = notifier.watchdog_timeout_s
        # The period the health group must run at: the configured one, faster if systemd's watchdog needs it.
        self.period_s = min(config.period_s, notifier.ping_period_s or math.inf)
        if timeout is not None and config.grace_s + self.period_s >= timeout:
            raise ConfigurationError(
                f"health.grace_s {config.grace_s:g} s plus a check period {self.period_s:g} s must be shorter than "
                f"systemd's watchdog {timeout:g} s, or systemd kills the program before it can restart cleanly")
        self.components = dict(components)
        self.notifier = notifier
        self.clock = clock
        self.on_event = on_event
        self.on_restart = on_restart
        self.config = config
        self.checks = 0
        self.watchdogs_sent = 0
        self.stalls = 0
        self.recoveries = 0
        self.restart_reason: str | None = None
        now = clock()
        # name -> [last count, when it last moved, stall reported]
        self._seen = {name: [beat(), now, False] for name, beat in self.components.items()}
        self._stalled: dict[str, float] = {}
        self._status = None

    def stalled(self) -> dict[str, float]:
        """Components stalled at the last check, with how long (s)."""
        return dict(self._stalled)

    def check(self) -> bool:
        """One health check (a rate group member); True if all moved and the watchdog was fed."""
        now = self.clock()
        self.checks += 1
        self._stalled = {}
        for name, beat in self.components.items():
            seen = self._seen[name]
            count = beat()
            if count != seen[0]:
                if seen[2]:
                    self.recoveries += 1
                    self._event(name, now - seen[1], True)
                self._seen[name] = [count, now, False]
                continue
            self._stalled[name] = now - seen[1]
            if not seen[2]:
                seen[2] = True
                self.stalls += 1
                self._event(name, now - seen[1], False)
        if not self._stalled:
            self._say(f"all {len(self.components)} components alive")
            self.watchdogs_sent += self.notifier.watchdog()
            return True
        self._say("stalled: " + ", ".join(sorted(self._stalled)))
        name, stalled_s = max(self._stalled.items(), key=lambda item: item[1])
        if stalled_s >= self.config.grace_s and self.restart_reason is None:
            self.restart_reason = f"{name} stalled for {stalled_s:.1f} s"
            self._say("restarting: " + self.restart_reason)
            if self.on_restart is not None:
                self.on_restart(self.restart_reason)
        return False

    def _event(self, name: str, stalled_s: float, alive: bool) -> None:
        if self.on_event is not None:
            self.on_event(name, stalled_s, alive)

    def _say(self, status: str) -> None:
        if self.restart_reason is not None and not status.startswith("restarting"):
            return                     # the last word stays: why we are going down
        if status != self._status:     # STATUS only when it changes: the socket is not a log
            self._status = status
            self.notifier.status(status)


class HealthThread:
    """Runs a monitor's check every period on its own thread (started and stopped explicitly), so that a
    loop stuck in a call (a sensor read that never returns) is seen as a stall like any other."""

    def __init__(self, monitor: HealthMonitor):
        self.monitor = monitor
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="health", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)

    def _run(self) -> None:
        while not self._stop.wait(self.monitor.period_s):
            self.monitor.check()
