"""The simulated radio: two pseudo-terminals joined by a relay that keeps a line rate.

A pty passes bytes as fast as the kernel copies them and ignores its baud
setting, so the relay meters each direction to `baud` at 10 bits an octet
(8N1). It reads from one side only as fast as the line would carry the
octets; when the flight program writes faster, the pty fills and its writes
block, as with a radio that holds off its host. Both ends are real serial
ports to pyserial.
"""
from __future__ import annotations

import fcntl
import os
import select
import struct
import termios
import threading
import time
import tty
from dataclasses import dataclass
from typing import BinaryIO


@dataclass
class RelayCounters:
    bytes_down: int = 0   # flight -> ground
    bytes_up: int = 0     # ground -> flight


class _Pty:
    def __init__(self):
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.path = os.ttyname(self._slave)

    def close(self):
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


def _waiting(fd: int) -> int:
    """Octets waiting to be read from a pty master."""
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


class _Meter:
    """Octets a direction may pass now, from a line rate; a little burst is allowed."""

    def __init__(self, octets_per_second: float, clock):
        self.rate = octets_per_second
        self._clock = clock
        self._start = clock()
        self.passed = 0
        self.drained = True     # the source ran dry at the last read: the line idles from then on

    def allowance(self) -> int:
        return int((self._clock() - self._start) * self.rate) - self.passed

    def seconds_until(self, octets: int) -> float:
        return max(0.0, (self.passed + octets) / self.rate - (self._clock() - self._start))


class PtyRelay:
    """Two pseudo-terminals (`flight_port`, `ground_port`) and a thread that relays between them
    (`_run`, until `_stop` is set). Subclasses say how the line behaves."""

    THREAD_NAME = "relay"

    def __init__(self, clock):
        self._clock = clock
        self._flight = _Pty()
        self._ground = _Pty()
        self.flight_port = self._flight.path
        self.ground_port = self._ground.path
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_activity = clock()

    def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self._flight.close()
        self._ground.close()

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


class PacedLink(PtyRelay):
    """`flight_port` and `ground_port` are device paths; start() runs the relay thread."""

    THREAD_NAME = "paced-link"

    def __init__(self, baud: int = 115200, capture: BinaryIO | None = None, clock=time.monotonic):
        if baud <= 0:
            raise ValueError(f"baud must be positive, got {baud}")
        super().__init__(clock)
        self.baud = baud
        self.capture = capture
        self.counters = RelayCounters()

    def _run(self) -> None:
        octets_per_second = self.baud / 10.0
        down = _Meter(octets_per_second, self._clock)
        up = _Meter(octets_per_second, self._clock)
        routes = ((self._flight.master, self._ground.master, down, "bytes_down"),
                  (self._ground.master, self._flight.master, up, "bytes_up"))
        while not self._stop.is_set():
            waits = []
            readable_fds = []
            for src, _dst, meter, _name in routes:
                if meter.allowance() >= 1:
                    readable_fds.append(src)
                else:
                    waits.append(meter.seconds_until(1))
            timeout = min(waits + [0.05])
            if not readable_fds:
                time.sleep(max(timeout, 0.0005))
                continue
            try:
                ready, _, _ = select.select(readable_fds, [], [], timeout)
            except (OSError, ValueError):
                return
            for src, dst, meter, name in routes:
                if src not in ready:
                    continue
                # Idle time earns no credit: a line cannot send yesterday's slots. But time the relay
                # itself was late while octets waited in the pty is no idle line: a UART keeps sending
                # from its driver's buffer, so that time is caught up (else a busy machine makes the
                # line slower than its baud, and the backlog hides in the pty, unseen by the writer).
                if meter.drained:
                    meter.passed = max(meter.passed, int((self._clock() - meter._start) * meter.rate) - 64)
                budget = min(meter.allowance(), 4096)
                if budget < 1:
                    continue
                try:
                    data = os.read(src, budget)
                except OSError:
                    # EIO: nobody holds the other end open right now.
                    time.sleep(0.01)
                    continue
                if not data:
                    continue
                meter.drained = _waiting(src) == 0
                meter.passed += len(data)
                setattr(self.counters, name, getattr(self.counters, name) + len(data))
                self.last_activity = self._clock()
                if name == "bytes_down" and self.capture is not None:
                    self.capture.write(data)
                view = memoryview(data)
                while view:
                    try:
                        written = os.write(dst, view)
                    except BlockingIOError:
                        time.sleep(0.001)
                        continue
                    except OSError:
                        break
                    view = view[written:]
