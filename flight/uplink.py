"""The receive direction of the radio port: CLTUs in, a bounded queue of PUS-C telecommands out.

    radio -> serial -> CLTU (231.0-B: BCH, derandomize) -> TC frame (232.0-B: length, version, spare,
    FECF, SCID, VCID) -> SDLS (355.0-B-2, where an SA protects the VC) -> FARM-1 (232.1-B-2)
    -> PUS-C TC packets -> the executive's command handler

`UplinkPath` is that chain without a thread or a port: `cltu(data)` takes the
data of one CLTU and gives the packets it carries, or raises FrameRejected,
the one exception that leaves it (tests/test_uplink.py fuzzes it to prove
so). `CommandReceiver` runs the chain on a reader thread, started and
stopped explicitly, on whichever port the downlink holds (it reopens a lost
one), counts every rejection by its reason, and queues the packets for the
executive, which takes them between cycles. The queue is bounded: FARM-1
sees it full (its wait state) and the ground retransmits later.

`uplink.mode = "bare_tc"` keeps the bench's older uplink: PUS-C TC packets
back to back on the line (TcStreamParser), with no frames, COP-1 or security.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import serial

from kestrel.link.cltu import FILL, CltuDecoder, CltuRejection, randomize
from kestrel.link.config import tc_frame_layout
from kestrel.link.errors import FrameRejected, LinkError, Rejection
from kestrel.link.sdls import SecurityAssociations
from kestrel.link.spacepacket import packet_length
from kestrel.link.tcframe import (MAX_FRAME_LENGTH, PRIMARY_HEADER_LENGTH, FrameType, TcFrame, frame_length)
from kestrel.link.telecommand import MIN_TC_PACKET_LENGTH, PusTc, TcStreamParser

from .farm import Farm1

log = logging.getLogger(__name__)

# Commands waiting for the executive; beyond this FARM-1 waits (and a bare-TC flood is dropped, counted).
QUEUE_DEPTH = 64
READ_SIZE = 4096
# The line has been quiet this long: a CLTU without its tail (or a partly received bare packet) is given up.
QUIET_S = 0.5

_CLTU_REJECTIONS = {CltuRejection.UNCORRECTABLE: Rejection.BCH_UNCORRECTABLE,
                    CltuRejection.TOO_LONG: Rejection.CLTU_TOO_LONG,
                    CltuRejection.UNTERMINATED: Rejection.CLTU_UNTERMINATED}


@dataclass
class UplinkCounters:
    octets_read: int = 0
    commands_received: int = 0
    commands_dropped: int = 0      # the queue was full
    read_errors: int = 0           # reads of a port that was down (the downlink reopens it)
    frames_accepted: int = 0       # TC frames through every check (control frames included)
    bits_corrected: int = 0        # BCH single-bit corrections
    rejections: Counter = field(default_factory=Counter)    # Rejection -> count

    @property
    def frames_rejected(self) -> int:
        return sum(self.rejections.values())


class _ControlBudget:
    """Clear control frames a virtual channel may take: a token bucket of `rate` a second, `rate` deep."""

    def __init__(self, rate: float, clock):
        self.rate = rate
        self._clock = clock
        self._tokens = rate
        self._at = clock()

    def take(self) -> bool:
        now = self._clock()
        self._tokens = min(self.rate, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


class UplinkPath:
    """CLTU data -> TC frame -> SDLS -> FARM-1 -> TC packets; `room()`: the queue behind it can take one more."""

    def __init__(self, link, uplink, associations: SecurityAssociations | None = None, room=lambda: True,
                 clock=time.monotonic):
        self.layout = tc_frame_layout(link, uplink)
        self.randomized = uplink.randomize
        self.associations = associations if associations is not None else SecurityAssociations()
        self.farms = {v: Farm1(v, uplink.farm_window, room) for v in uplink.virtual_channels}
        self._control = {v: _ControlBudget(uplink.control_frames_per_s, clock) for v in uplink.virtual_channels}
        self._report_order = tuple(uplink.virtual_channels)
        self._next_report = 0

    @property
    def authenticated(self) -> bool:
        return bool(self.associations)

    def clcw(self) -> bytes:
        """The CLCW for the next TM frame's OCF: each virtual channel's in turn."""
        farm = self.farms[self._report_order[self._next_report]]
        self._next_report = (self._next_report + 1) % len(self._report_order)
        return farm.clcw().pack()

    def buffer_released(self) -> None:
        for farm in self.farms.values():
            farm.buffer_released()

    def cltu(self, data: bytes) -> list[PusTc]:
        """The TC packets in one CLTU's data; FrameRejected when any check refuses it."""
        raw = self._frame_octets(data)
        frame = TcFrame.unpack(raw, self.layout)
        vcid = frame.virtual_channel_id
        segment = raw[PRIMARY_HEADER_LENGTH:PRIMARY_HEADER_LENGTH + 1] if (
            self.layout.segment_header and frame.frame_type != FrameType.BC) else b""
        clear = self.associations.open(vcid, bytes(raw[:PRIMARY_HEADER_LENGTH]), segment, frame.data)
        if (frame.frame_type == FrameType.BC and vcid not in self.associations.protected_vcids
                and not self._control[vcid].take()):
            raise FrameRejected(Rejection.CONTROL_RATE, f"more than {self._control[vcid].rate:g} clear control "
                                f"frames a second on virtual channel {vcid}")
        if not self.farms[vcid].frame(frame.frame_type, frame.sequence_number, clear):
            return []
        return packets(clear)

    def _frame_octets(self, data: bytes) -> bytes:
        """The frame in a CLTU's data: derandomized, the fill after it checked and taken off."""
        if len(data) < PRIMARY_HEADER_LENGTH:
            raise FrameRejected(Rejection.FRAME_TRUNCATED, f"a CLTU of {len(data)} octets cannot hold a frame header")
        header = randomize(data[:PRIMARY_HEADER_LENGTH]) if self.randomized else data[:PRIMARY_HEADER_LENGTH]
        total = frame_length(header)
        if total > len(data):
            raise FrameRejected(Rejection.FRAME_TRUNCATED, f"the frame states {total} octets, the CLTU carries "
                                f"{len(data)}")
        fill = data[total:]
        if len(fill) >= 7:
            raise FrameRejected(Rejection.FRAME_LENGTH, f"the frame states {total} octets, the CLTU carries "
                                f"{len(fill)} more: a frame length error")
        if fill.strip(bytes([FILL])):
            raise FrameRejected(Rejection.FRAME_FILL, f"the CLTU's fill after the frame is {fill.hex()}, not 0x55")
        return randomize(data[:total]) if self.randomized else bytes(data[:total])


def packets(data: bytes) -> list[PusTc]:
    """The PUS-C TC packets filling a frame's data field back to back; FrameRejected if any is not one."""
    out = []
    at = 0
    while at < len(data):
        rest = data[at:]
        if len(rest) < MIN_TC_PACKET_LENGTH:
            raise FrameRejected(Rejection.PACKET, f"{len(rest)} octets after the packets cannot be a TC packet")
        try:
            packet = PusTc.unpack(rest)
        except LinkError as exc:
            raise FrameRejected(Rejection.PACKET, str(exc)) from None
        out.append(packet)
        at += packet_length(rest)
    return out


class CommandReceiver:
    """`port()` gives the port to read now (the downlink's); `clock` times the line's quiet spells.

    `path`: the UplinkPath of the CLTU uplink, or None for the bench's bare TC packets."""

    def __init__(self, port, clock=time.monotonic, depth: int = QUEUE_DEPTH, path_factory=None):
        self._port = port
        self._clock = clock
        self._queue: deque[PusTc] = deque()
        self._depth = depth
        self.path: UplinkPath | None = path_factory(self._has_room) if path_factory is not None else None
        self.parser = TcStreamParser() if self.path is None else None
        self.cltus = CltuDecoder(MAX_FRAME_LENGTH + 6) if self.path is not None else None
        self.counters = UplinkCounters()
        # The reader thread, the executive (take) and the downlink writer (clcw) share the path's state.
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
        """The commands received since the last call, in order; FARM-1 may take frames again."""
        with self._lock:
            taken = list(self._queue)
            self._queue.clear()
            if taken and self.path is not None:
                self.path.buffer_released()
        return taken

    def clcw(self) -> bytes:
        """Four octets for the TM frame's OCF."""
        with self._lock:
            return self.path.clcw() if self.path is not None else bytes(4)

    def rekey(self, spi: int, key: bytes) -> None:
        """Key rotation: between frames, never under one being checked."""
        with self._lock:
            self.path.associations.by_spi[spi].rekey(key)

    def _has_room(self) -> bool:
        return len(self._queue) < self._depth

    def feed(self, chunk: bytes) -> None:
        """Octets from the line (the reader's, or a test's)."""
        self.counters.octets_read += len(chunk)
        if self.path is None:
            self._queue_all(self.parser.feed(chunk))
        else:
            self._cltus(self.cltus.feed(chunk))

    def flush(self) -> None:
        """The line went quiet: what is held cannot complete."""
        if self.path is None:
            self._queue_all(self.parser.flush())
        else:
            self._cltus(self.cltus.flush())

    @property
    def buffered(self) -> int:
        return self.parser.buffered if self.path is None else self.cltus.buffered

    def _cltus(self, results) -> None:
        c = self.counters
        for result in results:
            if result.data is None:
                c.rejections[_CLTU_REJECTIONS[result.rejection]] += 1
                continue
            c.bits_corrected += result.corrected
            with self._lock:
                try:
                    tcs = self.path.cltu(result.data)
                except FrameRejected as exc:
                    c.rejections[exc.reason] += 1
                    log.info("uplink: frame rejected: %s", exc)
                    continue
                c.frames_accepted += 1
                self._queue_locked(tcs)

    def _queue_all(self, packets_) -> None:
        with self._lock:
            self._queue_locked(packets_)

    def _queue_locked(self, packets_) -> None:
        for packet in packets_:
            if len(self._queue) >= self._depth:
                self.counters.commands_dropped += 1
                if self.path is not None:
                    self.counters.rejections[Rejection.QUEUE_FULL] += 1
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
            elif self.buffered and now - last_octet >= QUIET_S:
                self.flush()
