"""A radio that behaves like one: the bench's impaired link between two serial endpoints.

`ImpairedLink` joins two pseudo-terminals (real serial ports to pyserial) with
a relay thread, as `hil.radio.PacedLink` does, and puts a `LinkProfile`
between them, in this order per direction:

host writes -> modem FIFO (bounded: overflow counted, octets discarded; or,
with `fifo_octets = 0`, the host is held off as a UART with flow control
would) -> the line at `baud` (8N1, 10 bits an octet; the baud may follow what
the flight program set on its port) -> outage (octets sent into an outage
are lost) -> byte drops -> bit errors (independent at `ber`, plus
Gilbert-Elliott bursts) -> latency -> the far end.

Every random draw comes from one `random.Random(seed)` per direction, so a
profile and a seed give the same errors every run. A spy log (one line per
chunk: monotonic seconds since start, direction, octets in hex) records
both directions as delivered.
"""
from __future__ import annotations

import collections
import math
import os
import random
import select
import termios
import threading
import time
from dataclasses import dataclass, field, fields
from typing import TextIO

from .radio import PtyRelay, _waiting

DOWN, UP = "down", "up"     # flight -> ground, ground -> flight


@dataclass(frozen=True)
class LinkProfile:
    """What the simulated radio does to the octets; every rate is per bit or per octet on the line."""
    baud: int = 115200             # 0: follow the baud the flight program set on its port (termios)
    ber: float = 0.0               # independent bit errors (the Gilbert-Elliott good state's rate)
    burst_ber: float = 0.0         # bit error rate inside a burst (the bad state)
    burst_start: float = 0.0       # probability per bit of entering a burst (good -> bad)
    burst_bits: float = 0.0        # mean burst length in bits (bad -> good with probability 1/burst_bits)
    drop: float = 0.0              # probability an octet is lost on the line
    fifo_octets: int = 0           # the modem's buffer; 0: no buffer, the host is held off at the line rate
    latency_s: float = 0.0         # from the end of the line to the far end
    outages: tuple[tuple[float, float], ...] = ()   # ((start_s, end_s), ...) from the link's start: cut
    half_duplex: bool = False      # one direction at a time; turning the line round costs turnaround_s
    turnaround_s: float = 0.0
    seed: int = 1

    def __post_init__(self):
        def check(name, ok, what):
            if not ok:
                raise ValueError(f"link.{name} must be {what}, got {getattr(self, name)!r}")
        check("baud", isinstance(self.baud, int) and 0 <= self.baud <= 10_000_000, "0..10000000")
        for name in ("ber", "burst_ber", "burst_start", "drop"):
            value = getattr(self, name)
            check(name, isinstance(value, (int, float)) and 0.0 <= value <= 1.0, "a probability 0..1")
        check("burst_bits", self.burst_bits == 0 or self.burst_bits >= 1, "0 or >= 1")
        check("burst_bits", not (self.burst_start > 0 and self.burst_bits < 1), ">= 1 when burst_start > 0")
        check("fifo_octets", isinstance(self.fifo_octets, int) and self.fifo_octets >= 0, ">= 0")
        check("latency_s", 0 <= self.latency_s <= 60, "0..60")
        check("turnaround_s", 0 <= self.turnaround_s <= 10, "0..10")
        for outage in self.outages:
            check("outages", len(outage) == 2 and 0 <= outage[0] < outage[1], "pairs [start_s, end_s], start < end")

    def in_outage(self, t: float) -> bool:
        return any(start <= t < end for start, end in self.outages)


@dataclass
class DirectionCounters:
    octets_in: int = 0             # taken from the sending host
    octets_passed: int = 0         # delivered to the far end
    octets_on_line: int = 0        # sent on the line (delivered, dropped or lost in an outage)
    bits_flipped: int = 0
    octets_dropped: int = 0        # lost on the line by `drop`
    fifo_overflows: int = 0        # octets the full FIFO discarded
    outage_octets: int = 0         # sent on the line while it was cut
    burst_bits: int = 0            # bits sent in the Gilbert-Elliott bad state


@dataclass
class LinkCounters:
    down: DirectionCounters = field(default_factory=DirectionCounters)
    up: DirectionCounters = field(default_factory=DirectionCounters)
    outage_seconds: float = 0.0    # time the link spent cut, so far
    baud: int = 0                  # the line rate in use

    def as_dict(self) -> dict:
        out = {name: {f.name: getattr(getattr(self, name), f.name) for f in fields(DirectionCounters)}
               for name in (DOWN, UP)}
        out["outage_seconds"] = round(self.outage_seconds, 3)
        out["baud"] = self.baud
        return out


def _gap(rng: random.Random, p: float) -> float:
    """Trials before the next success at probability p (geometric, from 0); inf if p is 0."""
    if p <= 0.0:
        return math.inf
    if p >= 1.0:
        return 0
    return math.floor(math.log(1.0 - rng.random()) / math.log1p(-p))


class Channel:
    """Byte drops and bit errors of one direction, drawn as gaps between events, so clean octets cost nothing.

    Gilbert-Elliott: the state lasts a geometric number of bits (mean 1/burst_start in the good state,
    burst_bits in the bad one); within a state errors fall independently at that state's rate. The
    geometric draws are memoryless, so a draw cut short by a state change or a chunk's end is redrawn.
    """

    def __init__(self, profile: LinkProfile, rng: random.Random, counters: DirectionCounters):
        self.p = profile
        self.rng = rng
        self.counters = counters
        self.bad = False
        self._state_left = _gap(rng, profile.burst_start) + 1 if profile.burst_start > 0 else math.inf

    def apply(self, data: bytes) -> bytes:
        if self.p.drop > 0:
            data = self._drop(data)
        if self.p.ber <= 0 and self.p.burst_start <= 0:
            return data
        out = bytearray(data)
        total = len(out) * 8
        pos = 0
        while pos < total:
            span = min(self._state_left, total - pos)
            rate = self.p.burst_ber if self.bad else self.p.ber
            at = pos + _gap(self.rng, rate)
            while at < pos + span:
                out[at >> 3] ^= 0x80 >> (at & 7)
                self.counters.bits_flipped += 1
                at += 1 + _gap(self.rng, rate)
            if self.bad:
                self.counters.burst_bits += int(span)
            pos += span
            self._state_left -= span
            if self._state_left <= 0:
                self.bad = not self.bad
                p = 1.0 / self.p.burst_bits if self.bad else self.p.burst_start
                self._state_left = _gap(self.rng, p) + 1
        return bytes(out)

    def _drop(self, data: bytes) -> bytes:
        kept = bytearray()
        at = 0
        while at < len(data):
            gap = _gap(self.rng, self.p.drop)
            end = min(len(data), at + gap) if gap != math.inf else len(data)
            kept += data[at:end]
            if end < len(data):
                self.counters.octets_dropped += 1
            at = end + 1
        return bytes(kept)


_BAUDS = {getattr(termios, name): int(name[1:]) for name in dir(termios)
          if name.startswith("B") and name[1:].isdigit() and int(name[1:]) > 0}


def port_baud(fd: int) -> int:
    """The output baud a terminal was set to (what pyserial set on the port), 0 if unknown."""
    try:
        return _BAUDS.get(termios.tcgetattr(fd)[5], 0)
    except termios.error:
        return 0


class _Direction:
    def __init__(self, name, src, dst, profile, counters, spy, start):
        self.name, self.src, self.dst = name, src, dst
        self.counters = counters
        self.channel = Channel(profile, random.Random(f"{profile.seed}:{name}"), counters)
        self.fifo = bytearray()
        self.fifo_octets = profile.fifo_octets
        self.delayed: collections.deque = collections.deque()   # (due, octets)
        self.pending = b""           # delivered but not yet taken by the far end's pty
        self.passed = 0.0            # line slots used since `start`, in octets
        self.start = start
        self.spy = spy
        self.drained = True          # the host's pty was empty at the last read


class ImpairedLink(PtyRelay):
    """`flight_port` and `ground_port` are device paths; start() runs the relay thread; counters as it runs.

    `spy` is a text file for the spy log; `inject_up(octets)` sends from the ground's radio
    (the bench's uplink) as if the ground host had written them.
    """

    TICK_S = 0.002
    THREAD_NAME = "impaired-link"

    def __init__(self, profile: LinkProfile = LinkProfile(), spy: TextIO | None = None, clock=time.monotonic,
                 fallback_baud: int = 115200):
        super().__init__(clock)
        self.profile = profile
        self.counters = LinkCounters(baud=profile.baud or fallback_baud)
        self._spy = spy
        self._spy_lock = threading.Lock()
        self._injected: collections.deque = collections.deque()
        self.started_at: float | None = None
        self._epoch: float | None = None      # outages count from here (default: the start)
        self.cpu_seconds = 0.0       # the relay thread's own CPU time, at stop

    def set_epoch(self, t: float) -> None:
        """Count the profile's outages from clock time `t` (e.g. when the flight program started)."""
        self._epoch = t

    def inject_up(self, octets: bytes) -> None:
        self._injected.append(bytes(octets))

    def start(self) -> None:
        self.started_at = self._clock()
        super().start()

    def elapsed(self) -> float:
        return self._clock() - self.started_at if self.started_at is not None else 0.0

    def _log(self, t: float, name: str, octets: bytes) -> None:
        if self._spy is not None and octets:
            with self._spy_lock:
                self._spy.write(f"{t:.6f} {name} {octets.hex()}\n")

    def _run(self) -> None:
        cpu_start = time.thread_time()
        try:
            self._relay()
        finally:
            self.cpu_seconds = time.thread_time() - cpu_start

    def _relay(self) -> None:
        p = self.profile
        start = self.started_at
        directions = (
            _Direction(DOWN, self._flight.master, self._ground.master, p, self.counters.down, self._spy, start),
            _Direction(UP, self._ground.master, self._flight.master, p, self.counters.up, self._spy, start))
        talker = None                 # half duplex: the direction holding the line
        turn_until = 0.0
        last = self._clock()
        next_baud_check = 0.0
        while not self._stop.is_set():
            now = self._clock()
            t = now - (self._epoch if self._epoch is not None else start)
            if p.in_outage(t):
                self.counters.outage_seconds += now - last
            last = now
            if p.baud == 0 and now >= next_baud_check:
                next_baud_check = now + 0.25
                self.counters.baud = port_baud(self._flight.master) or self.counters.baud
            rate = self.counters.baud / 10.0
            for d in directions:
                self._intake(d, rate, now)
            if p.half_duplex:
                # The line turns round only when its holder has nothing left to send.
                if talker is None or not self._wants_line(talker):
                    other = next((d for d in directions if d is not talker and self._wants_line(d)), None)
                    if other is not None:
                        if talker is not None:
                            turn_until = now + p.turnaround_s
                        talker = other
            for d in directions:
                if p.half_duplex and (d is not talker or now < turn_until):
                    d.passed = max(d.passed, (now - d.start) * rate)   # a held line earns no credit
                else:
                    self._send(d, rate, now, t)
                self._deliver(d, now)
            self._wait(directions, rate)

    def _wants_line(self, d: _Direction) -> bool:
        """Octets wait to be sent: in the modem's buffer, injected, or held off in the host's pty."""
        if d.fifo or (d.name == UP and self._injected):
            return True
        try:
            return _waiting(d.src) > 0
        except OSError:
            return False

    def _intake(self, d: _Direction, rate: float, now: float) -> None:
        if d.name == UP:
            while self._injected:
                octets = self._injected.popleft()
                d.counters.octets_in += len(octets)
                d.fifo += octets
        if d.fifo_octets:
            room = 65536
        else:
            # No modem buffer: take only what the line can send now, the host waits in its pty. Idle time
            # earns no credit, but time the relay was late while octets waited in the pty is caught up,
            # as a UART's driver keeps sending (hil.radio.PacedLink does the same).
            if d.drained and not d.fifo:
                d.passed = max(d.passed, (now - d.start) * rate - 64)
            room = min(int((now - d.start) * rate - d.passed) - len(d.fifo), 4096)
        if room < 1:
            return
        try:
            if not select.select([d.src], [], [], 0)[0]:
                return
            data = os.read(d.src, room)
        except OSError:
            return          # EIO: nobody holds the other end open right now
        if not data:
            return
        d.drained = _waiting(d.src) == 0
        d.counters.octets_in += len(data)
        self.last_activity = now
        if d.fifo_octets:
            space = max(0, d.fifo_octets - len(d.fifo))
            d.fifo += data[:space]
            d.counters.fifo_overflows += max(0, len(data) - space)
        else:
            d.fifo += data

    def _send(self, d: _Direction, rate: float, now: float, t: float) -> bool:
        if not d.fifo:
            if d.fifo_octets:
                d.passed = max(d.passed, (now - d.start) * rate - 64)   # an idle line earns no credit
            return False
        n = min(int((now - d.start) * rate - d.passed), len(d.fifo), 4096)
        if n < 1:
            return False
        chunk = bytes(d.fifo[:n])
        del d.fifo[:n]
        d.passed += n
        d.counters.octets_on_line += n
        self.last_activity = now
        if self.profile.in_outage(t):
            d.counters.outage_octets += n
            return True
        chunk = d.channel.apply(chunk)
        if chunk:
            d.delayed.append((now + self.profile.latency_s, chunk))
        return True

    def _deliver(self, d: _Direction, now: float) -> bool:
        moved = False
        while d.delayed and d.delayed[0][0] <= now and not d.pending:
            d.pending = d.delayed.popleft()[1]
            self._log(now - d.start, d.name, d.pending)
            d.counters.octets_passed += len(d.pending)
        if d.pending:
            try:
                written = os.write(d.dst, d.pending)
            except BlockingIOError:
                written = 0
            except OSError:
                written = len(d.pending)     # the far end is closed: the radio sends into nothing
            d.pending = d.pending[written:]
            moved = written > 0
        return moved

    def _wait(self, directions, rate: float) -> None:
        """Sleep until there is something to do: octets from a host that the line has credit for, a tick
        while octets wait for the line or the far end, or the next delayed chunk's time."""
        now = self._clock()
        waits = [self.TICK_S * 10]
        readable = []
        for d in directions:
            if d.fifo or d.pending:
                waits.append(self.TICK_S)
            elif d.delayed:
                waits.append(max(0.0, d.delayed[0][0] - now))
            credit = (now - d.start) * rate - d.passed - len(d.fifo)
            if d.fifo_octets or credit >= 1 or d.drained:
                readable.append(d.src)
            else:
                waits.append(max(self.TICK_S, (1 - credit) / rate))
        if self._injected:
            waits.append(0.0)
        timeout = max(0.0, min(waits))
        try:
            if readable:
                select.select(readable, [], [], timeout)
            else:
                time.sleep(timeout)
        except (OSError, ValueError):
            time.sleep(timeout)
