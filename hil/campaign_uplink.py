"""A command session with COP-1 on the bench: AD frames through the ground's FOP-1, over the impaired radio.

The ground's `TcSender` (FOP-1 of the command virtual channel) writes its
CLTUs into the radio's uplink (`ImpairedLink.inject_up`); what it needs back
is the CLCW the flight program's FARM-1 puts in the downlink's OCF. The bench
taps the downlink as the ground antenna receives it (after the radio's
errors: the spy log's `down` chunks) and runs its own frame synchroniser on
that copy, so FOP-1 sees only the CLCWs a ground station would have seen.
`pump()` is called from the runner's loop: CLCWs in, the FOP's timer, then
as many queued commands as the window takes.
"""
from __future__ import annotations

import collections
import threading
import time
from pathlib import Path
from typing import TextIO

from ground.sync import FrameSynchronizer
from ground.uplink import TcSender
from kestrel.link.config import build_channel_coder, frame_layout
from kestrel.link.cop1 import Clcw

TAP_CHUNKS = 4096       # downlink chunks waiting for the session; the loop takes them every few ms


class DownlinkTap:
    """Stands as the radio's spy file: writes every line through to `spy`, and keeps the downlink's octets
    for the session. Bounded: chunks beyond TAP_CHUNKS are counted (`overflows`) and not kept."""

    def __init__(self, spy: TextIO):
        self._spy = spy
        self._lock = threading.Lock()
        self._chunks: collections.deque[bytes] = collections.deque()
        self.overflows = 0

    def write(self, line: str) -> int:
        self._spy.write(line)
        _t, direction, octets = line.split(" ", 2)
        if direction == "down":
            with self._lock:
                if len(self._chunks) < TAP_CHUNKS:
                    self._chunks.append(bytes.fromhex(octets))
                else:
                    self.overflows += 1
        return len(line)

    def take(self) -> bytes:
        with self._lock:
            chunks, self._chunks = self._chunks, collections.deque()
        return b"".join(chunks)


class CopSession:
    """FOP-1 of the command VC fed by the tapped downlink; `send(packet)` queues a TC packet for an AD frame."""

    def __init__(self, config, tap: DownlinkTap, inject, state_dir: Path, clock=time.monotonic):
        if not config.link.ocf:
            raise ValueError("a COP-1 session needs link.ocf = true: FOP-1 starts from the CLCW in the OCF")
        self.tap = tap
        self.sender = TcSender(config.link, config.uplink, inject, state_dir, clock)
        g = config.ground
        self.sync = FrameSynchronizer(frame_layout(config.link), build_channel_coder(config.link),
                                      search_errors=g.sync_search_errors, lock_errors=g.sync_lock_errors,
                                      flywheel=g.sync_flywheel, slip_window_bits=g.sync_slip_window_bits,
                                      allow_inverted=g.sync_allow_inverted)
        self.queue: collections.deque[bytes] = collections.deque()
        self.clcws = 0
        self.alerts: list[str] = []
        self.sent = 0

    def send(self, packet: bytes) -> None:
        self.sender.check_size(packet)
        self.queue.append(packet)

    def pump(self) -> None:
        for frame in self.sync.feed(self.tap.take()):
            if frame.ocf is None:
                continue
            try:
                clcw = Clcw.unpack(frame.ocf)
            except ValueError:
                continue
            self.clcws += 1
            self.sender.clcw(clcw)
        fop = self.sender.fop
        fop.poll()
        if fop.alert_reason is not None:
            # The FOP gave up (transmission limit) and purged what it had outstanding: recorded, and those
            # commands count as not verified (never sent twice blind). Queued ones go once it initiates again.
            self.alerts.append(fop.alert_reason)
            fop.alert_reason = None
        while self.queue and self.sender.start_ad() and fop.ready:
            if fop.transmit_ad(self.queue[0]) is None:
                break
            self.queue.popleft()
            self.sent += 1

    @property
    def idle(self) -> bool:
        """Nothing queued and nothing outstanding: every AD frame sent was acknowledged."""
        return not self.queue and self.sender.fop.outstanding == 0

    def counters(self) -> dict:
        c = self.sender.fop.counters
        return {"queued": len(self.queue), "sent": self.sent, "outstanding": self.sender.fop.outstanding,
                "clcws_seen": self.clcws, "fop_state": self.sender.fop.state.name, "alert_reasons": list(self.alerts),
                "tap_overflows": self.tap.overflows,
                **{k: getattr(c, k) for k in c.__dataclass_fields__}}
