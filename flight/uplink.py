"""The receive direction of the radio port: bare PUS-C TC packets in, a bounded queue of commands out.

The bench's uplink (and, until the uplink issue puts CLTUs, TC frames, COP-1
and SDLS in front of it, the only one): TC packets back to back on the
serial line, found by TcStreamParser, which skips anything that is not a
whole packet with a valid CRC. A reader thread, started and stopped
explicitly, reads whichever port the downlink holds (it reopens a lost
one), so commands never wait on image work; the executive takes them from
the queue between cycles. The queue is bounded: a flood is counted and
dropped, not stored.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import serial

from kestrel.link.telecommand import PusTc, TcStreamParser

log = logging.getLogger(__name__)

# Commands waiting for the executive; beyond this a flood is dropped (counted).
QUEUE_DEPTH = 64
READ_SIZE = 4096
# The line has been quiet this long: a partly received false header is given up.
QUIET_S = 0.5


@dataclass
class UplinkCounters:
    octets_read: int = 0
    commands_received: int = 0
    commands_dropped: int = 0      # the queue was full
    read_errors: int = 0           # reads of a port that was down (the downlink reopens it)


class CommandReceiver:
    """`port()` gives the port to read now (the downlink's); `clock` times the line's quiet spells."""

    def __init__(self, port, clock=time.monotonic, depth: int = QUEUE_DEPTH):
        self._port = port
        self._clock = clock
        self.parser = TcStreamParser()
        self.counters = UplinkCounters()
        self._queue: deque[PusTc] = deque()
        self._depth = depth
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.heartbeat = 0

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="uplink-reader", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)

    def take(self) -> list[PusTc]:
        """The commands received since the last call, in order."""
        with self._lock:
            taken = list(self._queue)
            self._queue.clear()
        return taken

    def feed(self, chunk: bytes) -> None:
        """Octets from the line (the reader's, or a test's)."""
        self.counters.octets_read += len(chunk)
        self._queue_all(self.parser.feed(chunk))

    def _queue_all(self, packets) -> None:
        with self._lock:
            for packet in packets:
                if len(self._queue) >= self._depth:
                    self.counters.commands_dropped += 1
                    continue
                self._queue.append(packet)
                self.counters.commands_received += 1

    def _run(self) -> None:
        last_octet = self._clock()
        while not self._stop.is_set():
            self.heartbeat += 1
            port = self._port()
            if port is None:
                self._stop.wait(0.1)
                continue
            try:
                chunk = port.read(READ_SIZE)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                # A port being reopened by the downlink, or closed at the end: try again shortly.
                self.counters.read_errors += 1
                log.debug("uplink: read failed: %s", exc)
                self._stop.wait(0.1)
                continue
            now = self._clock()
            if chunk:
                self.feed(chunk)
                last_octet = now
            elif self.parser.buffered and now - last_octet >= QUIET_S:
                self._queue_all(self.parser.flush())
