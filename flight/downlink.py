"""The downlink: packets in from the executive, CADUs out to the radio port.

The executive never waits on the radio: it hands packets to the multiplexer
(bounded per virtual channel; a refused packet is counted) and a writer
thread, started and stopped explicitly, turns them into CADUs as fast as the
port takes them. When stopping, what is queued is flushed, within a bound.

A failed write (a socket peer that closed, a USB radio that vanished) starts
an outage, not an error a write: the writer logs it once, closes the port,
and reopens it through `reopen` (a callable that opens the port, such as
kestrel.link.port.open_port with the URL bound) after waits that double from
`reconnect.initial_s` up to `reconnect.max_s`. When a write goes through
again the outage ends, logged once with its length. Meanwhile nothing leaves
the multiplexer: its bounded queues decide what waits (alerts and detections
before imagery) and what they hold goes out after the reconnect. The CADU
whose write failed is sent again, whole, before anything else: the old peer
got at most a fragment of it, which a ground decoder skips as it resyncs.
The executive reads the counters and turns outages into events.
"""
from __future__ import annotations

import logging
import threading
import time

import serial

from kestrel.link.config import build_channel_coder, frame_layout
from kestrel.link.port import PortError, ReconnectConfig

from .multiplexer import MasterChannelMultiplexer

log = logging.getLogger(__name__)


class Downlink:
    def __init__(self, link_config, port, clock=time.monotonic, *, reopen=None,
                 reconnect: ReconnectConfig = ReconnectConfig(), source=None):
        self.config = link_config
        self.port = port
        self._reopen = reopen
        # Where packets come from when the multiplexer has no whole frame: (vcid, packet) or None
        # (the scheduler over the store). Asked at the last moment, so an alert stored now rides
        # the next frame rather than waiting behind what was handed over earlier.
        self._source = source
        self._urgent = None
        self._urgent_vcids: set[int] = set()    # channels holding urgent packets not yet framed
        self._clock = clock
        self._reconnect_initial = reconnect.initial_s
        self._reconnect_max = reconnect.max_s
        self.layout = frame_layout(link_config)
        self.mux = MasterChannelMultiplexer(link_config.spacecraft_id, self.layout,
                                            tuple(link_config.vc_priority),
                                            max_pending_octets=link_config.max_pending_octets)
        self.coder = build_channel_coder(link_config)
        self._cadu_seconds = self.coder.cadu_length * 10 / link_config.baud  # 8N1: 10 bits an octet
        self._wake = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        # The port changes hands on a reopen; close() and the writer agree through this lock.
        self._port_lock = threading.Lock()
        self._closed = False
        # Set to cut a wait between reopen attempts short (stop: one more try; abandon: give up).
        self._interrupt = threading.Event()
        self._abandoned = False
        self._backoff = reconnect.initial_s
        self._up_since = clock()
        self._reopen_failures_before = 0
        self.heartbeat = 0   # a turn of the writer, sending or waiting: the health monitor's proof it moves
        self.bytes_sent = 0
        self.cadus_sent = 0
        self.packets_sent = 0
        self.packets_dropped = 0
        self.write_errors = 0            # writes the port refused (each one in an outage)
        self.link_outages = 0            # outages begun
        self.link_reconnects = 0         # outages ended: a write went through again
        self.reopen_failures = 0         # attempts to reopen the port that failed
        self.cadus_interrupted = 0       # CADUs whose write an outage cut; each is sent again, whole
        self.link_error: str | None = None   # what started the latest outage
        self.down_since: float | None = None  # clock() when the current outage began; None while up
        self.last_outage_s = 0.0
        self._down_total = 0.0
        self.failure: Exception | None = None

    # --- executive side ---------------------------------------------------
    def set_source(self, source, urgent=None) -> None:
        """`urgent()`: like source, alerts, events and command reports only; asked before every frame."""
        with self._wake:
            self._source = source
            self._urgent = urgent
            self._wake.notify()

    def notify(self) -> None:
        """Something new waits in the source: the writer looks at once rather than at its next timeout."""
        with self._wake:
            self._wake.notify()

    def queued_octets(self) -> int:
        with self._wake:
            return sum(c.pending_octets for c in self.mux.channels.values())

    def link_down_s(self) -> float:
        """Seconds the link has been down in all, the current outage included."""
        since = self.down_since
        return self._down_total + (self._clock() - since if since is not None else 0.0)

    # --- writer -------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="downlink-writer", daemon=True)
        self._thread.start()

    def stop(self, flush_timeout: float) -> bool:
        """Stop after sending what is queued, within `flush_timeout`.

        What the source (the store) still holds then stays there for the next pass: a narrow link
        is no failure. False only when the port itself would not take what was handed to it: a
        write that does not return, or a port down when the time ran out.
        """
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._interrupt.set()   # a writer waiting to reopen the port tries once more now
        if self._thread is None:
            return self.failure is None and not self.mux.has_data()
        self._thread.join(flush_timeout)
        if self._thread.is_alive():
            with self._wake:
                self._abandoned = True     # take nothing more from the source; finish the frame in hand
                self._wake.notify()
            self._interrupt.set()
            self._thread.join(self.config.line_lead_cadus * self._cadu_seconds + 1.0)
        stuck = self._thread.is_alive()
        if stuck or self.down_since is not None:
            since = self.down_since
            down = f" (the radio port has been down for {self._clock() - since:.1f} s)" if since is not None else ""
            log.error("downlink: %d octets still queued after %.1f s; giving up%s", self.queued_octets(),
                      flush_timeout, down)
        return self.failure is None and not stuck and self.down_since is None

    def close(self) -> None:
        """Close the port (whichever one the writer holds now); call after stop()."""
        with self._port_lock:
            self._closed = True
            port, self.port = self.port, None
        if port is not None:
            _close_quietly(port)

    def _pull(self) -> bytes | None:
        """Packets from the source into the multiplexer until a whole frame is ready; that frame, or None.

        The source gives packets in priority order, so once it offers a lower channel's packet nothing
        more is coming for a higher channel now: that channel's part-filled frame goes out first.
        Otherwise the tail of a detection report would wait behind a whole backlog of imagery (at the end
        of a pass, until the drain at stop)."""
        while (item := self._source()) is not None:
            vcid, packet = item
            starved = self.mux.partly_filled_ahead_of(vcid)
            if self.mux.push(vcid, packet):
                self.packets_sent += 1
            else:
                self.packets_dropped += 1
            frame = self.mux.next_frame(flush=starved)
            if frame is not None:
                return frame
        return None

    def _pull_urgent(self) -> bytes | None:
        """Urgent products ride the very next frame: pulled first, and the frames that carry them sent
        part-filled ahead of any whole frame of a lower virtual channel, until none of them is left (a
        burst of alerts fills more than one frame)."""
        while (item := self._urgent()) is not None:
            vcid, packet = item
            if self.mux.push(vcid, packet):
                self.packets_sent += 1
                self._urgent_vcids.add(vcid)
            else:
                self.packets_dropped += 1
        self._urgent_vcids = {v for v in self._urgent_vcids if self.mux.channels[v].has_packet_data()}
        return self.mux.next_frame(flush=True) if self._urgent_vcids else None

    def _next_cadu(self) -> bytes | None:
        with self._wake:
            while True:
                frame = None
                if self._urgent is not None and not self._abandoned:
                    frame = self._pull_urgent()
                if frame is None:
                    frame = self.mux.next_frame(flush=False)
                if frame is None and self._source is not None and not self._abandoned:
                    frame = self._pull()
                if frame is None:
                    frame = self.mux.next_frame(flush=True)
                if frame is not None:
                    return self.coder.encode(frame)
                if self._stopping:
                    return None
                if self.config.continuous:
                    return self.coder.encode(self.mux.idle_frame())
                self._wake.wait(0.5)
                self.heartbeat += 1

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
        cadu = None
        while True:
            if cadu is None:
                cadu = self._next_cadu()
                if cadu is None:
                    break
            port = self.port
            if port is None:
                return       # close() took the port: the program is ending
            try:
                port.write(cadu)
            except (serial.SerialException, OSError) as exc:
                self.write_errors += 1
                if not self._recover(exc):
                    return   # given up while the port was down: what waits stays unsent, and stop() said so
                line_free_at = self._clock()
                continue     # the same CADU again, on the reopened port
            if self.down_since is not None:
                self._restored()
            self.bytes_sent += len(cadu)
            self.cadus_sent += 1
            self.heartbeat += 1
            cadu = None
            line_free_at = max(line_free_at, self._clock()) + self._cadu_seconds
            delay = line_free_at - lead - self._clock()
            if delay > 0:
                time.sleep(delay)
        port = self.port
        if port is not None:
            try:
                port.flush()
            except (serial.SerialException, OSError):
                pass

    # --- outages ------------------------------------------------------------
    def _recover(self, exc: Exception) -> bool:
        """After a failed write: wait, reopen the port; False if given up (stop() abandoned the queue)."""
        if self.down_since is None:
            now = self._clock()
            # A link that drops again soon after it came back keeps its longer
            # wait: a peer that accepts and closes at once gets no faster retries.
            if now - self._up_since >= self._reconnect_max:
                self._backoff = self._reconnect_initial
            self.down_since = now
            self.link_outages += 1
            self.cadus_interrupted += 1
            self._reopen_failures_before = self.reopen_failures
            self.link_error = str(exc) or type(exc).__name__
            log.warning("downlink: radio port lost (%s); reopening it every %g..%g s, queued data waits",
                        self.link_error, self._reconnect_initial, self._reconnect_max)
        else:
            log.debug("downlink: radio port still down: %s", exc)
        while True:
            delay = self._backoff
            self._backoff = min(delay * 2, self._reconnect_max)
            if self._interrupt.wait(delay) and not self._abandoned:
                self._interrupt.clear()   # stop() asked for one more try now; later waits are whole again
            if self._abandoned:
                return False
            if self._reopen is None:
                return True               # no way to reopen: try the same port again
            with self._port_lock:
                old, self.port = self.port, None
            if old is not None:
                _close_quietly(old)
            try:
                port = self._reopen()
            except (PortError, serial.SerialException, OSError) as reopen_error:
                self.reopen_failures += 1
                log.debug("downlink: reopening the radio port failed: %s", reopen_error)
                continue
            with self._port_lock:
                if self._closed:
                    _close_quietly(port)
                    return False
                self.port = port
            return True

    def _restored(self) -> None:
        now = self._clock()
        self.last_outage_s = now - self.down_since
        self._down_total += self.last_outage_s
        self.down_since = None
        self._up_since = now
        self.link_reconnects += 1
        log.warning("downlink: radio port back after %.1f s down (%d failed attempts to reopen it); "
                    "queued data follows", self.last_outage_s, self.reopen_failures - self._reopen_failures_before)


def _close_quietly(port) -> None:
    try:
        port.close()
    except (serial.SerialException, OSError) as exc:
        log.debug("downlink: closing the radio port: %s", exc)
