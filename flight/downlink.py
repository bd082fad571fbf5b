"""The downlink: packets in from the executive, CADUs out to the radio port.

The executive never waits on the radio: it hands packets to the multiplexer
(bounded per virtual channel; a refused packet is counted) and a writer
thread, started and stopped explicitly, turns them into CADUs as fast as the
port takes them. When stopping, what is queued is flushed, within a bound.
"""
from __future__ import annotations

import logging
import threading
import time

import serial

from kestrel.link.config import build_channel_coder, frame_layout

from .multiplexer import MasterChannelMultiplexer

log = logging.getLogger(__name__)


class Downlink:
    def __init__(self, link_config, port, clock=time.monotonic):
        self.config = link_config
        self.port = port
        self._clock = clock
        self.layout = frame_layout(link_config)
        self.mux = MasterChannelMultiplexer(link_config.spacecraft_id, self.layout,
                                            tuple(link_config.vc_priority),
                                            max_pending_octets=link_config.max_pending_octets)
        self.coder = build_channel_coder(link_config)
        self._cadu_seconds = self.coder.cadu_length * 10 / link_config.baud  # 8N1: 10 bits an octet
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.bytes_sent = 0
        self.cadus_sent = 0
        self.packets_sent = 0
        self.packets_dropped = 0
        self.write_errors = 0
        self.failure: Exception | None = None

    # --- executive side ---------------------------------------------------
    def submit(self, vcid: int, packet: bytes) -> bool:
        with self._wake:
            accepted = self.mux.push(vcid, packet)
            if accepted:
                self.packets_sent += 1
            else:
                self.packets_dropped += 1
            self._wake.notify()
        return accepted

    def queued_octets(self) -> int:
        with self._wake:
            return sum(c.pending_octets for c in self.mux.channels.values())

    # --- writer -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="downlink-writer", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout: float) -> bool:
        """Stop after sending what is queued; False if the port did not take it all in time."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(flush_timeout)
            drained = not self._thread.is_alive()
        else:
            drained = not self.mux.has_data()
        drained = drained and self.failure is None
        if self.failure is None and not drained:
            log.error("downlink: %d octets still queued after %.1f s; giving up", self.queued_octets(), flush_timeout)
        return drained

    def _next_cadu(self) -> bytes | None:
        with self._wake:
            while True:
                frame = self.mux.next_frame(flush=True)
                if frame is not None:
                    return self.coder.encode(frame)
                if self._stopping:
                    return None
                if self.config.continuous:
                    return self.coder.encode(self.mux.idle_frame())
                self._wake.wait(0.5)

    def _run(self) -> None:
        try:
            self._write_until_stopped()
        except Exception as exc:  # noqa: BLE001 - reported through stop() and the log, never silent
            self.failure = exc
            log.exception("downlink writer failed")

    def _write_until_stopped(self) -> None:
        # The port (a pty, a socket, a USB radio) may buffer far more than the
        # line sends in a moment. Writing ahead of the line rate would move
        # the queue into that buffer, where an alert can no longer overtake
        # imagery; so the writer keeps at most `lead` CADUs ahead of the line.
        lead = self.config.line_lead_cadus * self._cadu_seconds
        line_free_at = self._clock()
        while True:
            cadu = self._next_cadu()
            if cadu is None:
                break
            try:
                self.port.write(cadu)
            except (serial.SerialException, OSError) as exc:
                self.write_errors += 1
                log.error("downlink: write failed: %s", exc)
                time.sleep(0.1)
                continue
            self.bytes_sent += len(cadu)
            self.cadus_sent += 1
            line_free_at = max(line_free_at, self._clock()) + self._cadu_seconds
            delay = line_free_at - lead - self._clock()
            if delay > 0:
                time.sleep(delay)
        try:
            self.port.flush()
        except (serial.SerialException, OSError):
            pass
