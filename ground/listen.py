"""Serial input that keeps every octet: the radio port of `kestrel-ground listen`.

pyserial's handlers, as shipped, lose octets at both ends of a pass:

* at the start, `open()` empties the input buffer (posix ``tcflush``; the
  socket:// handler reads and drops what waits; rfc2217:// also asks the
  server to purge its own buffer), so a source that talks as soon as it is
  connected loses its first kilobytes;
* at the end, `read()` collects octets until it has `size` of them or the
  timeout ends, and raises when the far end goes away in between (socket://
  "socket disconnected", a device or pty that hangs up), dropping the octets
  already collected in that call; rfc2217:// raises as soon as its reader
  thread has ended, with received octets still queued.

`open_link` lets pyserial resolve the URL (any URL still works: a device, a
pty, socket://, rfc2217://, loop://, spy://...) and opens the port as a
subclass of the class pyserial chose, which

* keeps what arrived before it was opened, unless `flush_on_open`;
* for the handlers whose read drops octets (posix serial ports and ptys,
  socket://, rfc2217://), receives once per wait on the handler's own
  descriptor or queue, returns the octets received before a disconnect, and
  raises `LinkLost` on the next read, when nothing received is left.
  Handlers that replace these reads (spy://, the poll and VTIME variants)
  keep their own.

`ListenPass` reads such a port into the decoder until the pass ends, and
with `reconnect` reopens a network source that went away, counting each gap.
Its counters account for every octet: `octets_read` is exactly what was fed
to the decoder, so it equals the synchroniser's `bytes_read`.
"""
from __future__ import annotations

import errno
import functools
import logging
import os
import queue
import select
import threading
import time
from dataclasses import asdict, dataclass, field, fields

import serial
from serial import rfc2217, serialposix
from serial.serialutil import PortNotOpenError, SerialException, Timeout
from serial.urlhandler import protocol_socket

from kestrel.link.port import PortError

from .decoder import GroundSummary

log = logging.getLogger("kestrel-ground")

RECONNECTABLE_SCHEMES = ("socket", "rfc2217")
# An OSError with one of these numbers means "nothing to read yet", not a failure (PEP 475 and non-blocking I/O).
_RETRY = (errno.EAGAIN, errno.EALREADY, errno.EWOULDBLOCK, errno.EINPROGRESS, errno.EINTR)


class LinkLost(PortError, SerialException):
    """The far end closed or the port failed. Raised by `read` only once every
    octet received before the loss was returned; a SerialException, as
    pyserial's users expect of a read."""


# --- the port ---------------------------------------------------------------------------------------------

class _KeepOnOpen:
    """Opening does not empty the input buffer unless `flush_on_open` is set."""

    flush_on_open = False
    _opening = False

    def open(self):
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False

    def reset_input_buffer(self):
        if self._opening and not self.flush_on_open:
            return
        super().reset_input_buffer()

    def _reset_input_buffer(self):     # the posix handler's open() flushes through this one
        if self._opening and not self.flush_on_open:
            return
        super()._reset_input_buffer()


class _ReadKeepsOctets(_KeepOnOpen):
    """pyserial's read contract (up to `size` octets, fewer when the timeout ends), except that a
    loss of the link returns what was received first and raises `LinkLost` on the next read.

    Subclasses supply `_receive(size, wait)`: at most `size` octets from one wait of at most
    `wait` seconds (None: no limit); b'' when none came; None when cancel_read() ended the
    wait; LinkLost when the link is gone."""

    _lost: LinkLost | None = None

    def open(self):
        self._lost = None
        super().open()

    def read(self, size=1):
        if not self.is_open:
            raise PortNotOpenError()
        if self._lost is not None:
            raise LinkLost(str(self._lost))
        data = bytearray()
        timeout = Timeout(self._timeout)
        while len(data) < size:
            try:
                chunk = self._receive(size - len(data), timeout.time_left())
            except LinkLost as exc:
                if not data:
                    raise
                self._lost = exc       # the octets in hand go out first
                break
            if chunk is None:
                break                  # cancel_read()
            data += chunk
            if timeout.expired():
                break
        return bytes(data)


class _SocketReceive(_ReadKeepsOctets):
    """socket://: one recv on the handler's socket per wait."""

    def _receive(self, size, wait):
        try:
            ready, _, _ = select.select([self._socket], [], [], wait)
            if not ready:
                return b""
            chunk = self._socket.recv(size)
        except OSError as exc:
            if exc.errno in _RETRY:
                return b""
            raise LinkLost(f"read failed: {exc}") from None
        if not chunk:
            raise LinkLost("socket disconnected")
        return chunk


class _DescriptorReceive(_ReadKeepsOctets):
    """A posix device or pty: one os.read on the handler's descriptor per wait."""

    def _receive(self, size, wait):
        try:
            ready, _, _ = select.select([self.fd, self.pipe_abort_read_r], [], [], wait)
            if self.pipe_abort_read_r in ready:
                os.read(self.pipe_abort_read_r, 1000)
                return None
            if not ready:
                return b""
            chunk = os.read(self.fd, size)
        except OSError as exc:
            if exc.errno in _RETRY:
                return b""
            # EIO: the other side of a pty closed, or a USB radio went away.
            raise LinkLost(f"read failed: {exc}") from None
        if not chunk:
            raise LinkLost("device reports readiness to read but returned no data (device disconnected?)")
        return chunk


class _Rfc2217Receive(_ReadKeepsOctets):
    """rfc2217://: the handler's reader thread queues each received octet, then None at the end;
    all that it queued is delivered before the loss is reported."""

    def _receive(self, size, wait):
        buffer = self._read_buffer
        while True:
            try:
                first = buffer.get(True, 1.0 if wait is None else wait)
                break
            except queue.Empty:
                if self._thread is None or not self._thread.is_alive():
                    raise LinkLost("connection failed (reader thread ended)") from None
                if wait is not None:
                    return b""
        if first is None:
            raise LinkLost("connection closed")
        data = bytearray(first)
        while len(data) < size:
            try:
                item = buffer.get_nowait()
            except queue.Empty:
                break
            if item is None:
                buffer.put(None)       # reported on the next call, after these octets
                break
            data += item
        return bytes(data)


# The handler reads we have read and replace: (pyserial class, our receiver).
_RECEIVERS = (
    (protocol_socket.Serial, _SocketReceive),
    (serialposix.Serial, _DescriptorReceive),
    (rfc2217.Serial, _Rfc2217Receive),
)


@functools.cache
def keeping_class(klass: type) -> type:
    """`klass` (a pyserial class) that keeps every octet: see the module's docstring."""
    mixin = next((receiver for base, receiver in _RECEIVERS
                  if issubclass(klass, base) and klass.read is base.read), _KeepOnOpen)
    return type(f"Keeping{klass.__name__}", (mixin, klass), {"__module__": __name__, "__doc__": klass.__doc__})


def open_link(url: str, baud: int, *, timeout: float, flush_on_open: bool = False) -> serial.SerialBase:
    """The port a pyserial URL names, open, keeping every octet; PortError if it cannot be opened."""
    if not url:
        raise PortError("no radio port given (use --port URL)")
    try:
        # pyserial resolves the URL (handler, hwgrep search, spy wrapping) into a closed port;
        # we open it as our subclass of the class it chose.
        port = serial.serial_for_url(url, baudrate=baud, timeout=timeout, do_not_open=True)
        port.__class__ = keeping_class(type(port))
        port.flush_on_open = flush_on_open
        port.open()
    except (SerialException, ValueError, OSError) as exc:
        raise PortError(f"cannot open port {url!r}: {exc}") from None
    return port


def reconnectable(url: str) -> bool:
    return "://" in url and url.split("://", 1)[0].lower() in RECONNECTABLE_SCHEMES


# --- the pass ---------------------------------------------------------------------------------------------

@dataclass
class LinkCounters:
    """The link during one pass. `octets_read` is exactly what reached the decoder."""

    octets_read: int = 0
    connections: int = 0          # opens that succeeded, the first included
    reconnects: int = 0           # opens after a loss (--reconnect)
    gaps: int = 0                 # losses while reconnecting: each ends at a reopen or at the end of the pass
    gap_seconds: float = 0.0      # total time without a link, from each loss to its reopen or the end
    reopen_failures: int = 0      # attempts to reopen that failed
    ended_by: str = ""            # why the pass ended: stopped, duration, idle, or the loss of the link


@dataclass
class PassSummary(GroundSummary):
    """The decoder's summary of a live pass, with the link's counters (summary.json's `link`)."""

    link: dict = field(default_factory=dict)

    @classmethod
    def of(cls, summary: GroundSummary, link: LinkCounters) -> PassSummary:
        return cls(**{f.name: getattr(summary, f.name) for f in fields(summary)}, link=asdict(link))

    def lines(self) -> list[str]:
        k = self.link
        return super().lines() + [
            f"link: octets read {k['octets_read']}, connections {k['connections']}, reconnects {k['reconnects']}, "
            f"gaps {k['gaps']} ({k['gap_seconds']:.1f} s), ended by {k['ended_by']}"]


class ListenPass:
    """Reads a radio port into a decoder's `feed` until the pass ends: `stop` is set, `duration` seconds
    passed, `idle_exit_s` went by without an octet, or the link was lost (without `reconnect`).

    With `reconnect`, a lost link is reopened after reconnect.initial_s, doubling the wait
    up to reconnect.max_s; each gap is logged and counted. `ground` is the GroundConfig
    (read_size, read_timeout_s, flush_on_open, idle_exit_s, reconnect_*). `open()` makes
    the first connection (PortError when it cannot): what the source sends from then on
    waits in the port until `run(feed)` reads it; run returns the counters.

    Stopping, the duration and the idle limit end the pass at once; a lost link ends it
    only after the port returned every octet it received.
    """

    def __init__(self, url: str, baud: int, ground, *, reconnect: bool = False,
                 duration: float | None = None, stop: threading.Event | None = None, clock=time.monotonic):
        if reconnect and not reconnectable(url):
            schemes = ", ".join(s + "://" for s in RECONNECTABLE_SCHEMES)
            raise ValueError(f"--reconnect reopens a network source ({schemes}), not {url!r}")
        self.url = url
        self.baud = baud
        self.ground = ground
        self.reconnect = reconnect
        self.duration = duration
        self.stop = stop if stop is not None else threading.Event()
        self._clock = clock
        self.counters = LinkCounters()
        self.port = None
        self._started = self._last_octet = clock()

    def _open(self):
        port = open_link(self.url, self.baud, timeout=self.ground.read_timeout_s,
                         flush_on_open=self.ground.flush_on_open)
        self.counters.connections += 1
        return port

    def open(self) -> None:
        self.port = self._open()
        self._started = self._last_octet = self._clock()

    def close(self) -> None:
        if self.port is not None:
            self.port.close()
            self.port = None

    def _end_reason(self, now: float) -> str:
        """Why the pass must end now, or '' to go on."""
        if self.stop.is_set():
            return "stopped"
        if self.duration is not None and now - self._started >= self.duration:
            return "duration"
        idle = self.ground.idle_exit_s
        if idle and now - self._last_octet >= idle:
            return "idle"
        return ""

    def _until_end(self, now: float) -> float | None:
        """Seconds until the duration or the idle limit ends the pass (None: neither applies)."""
        limits = []
        if self.duration is not None:
            limits.append(self._started + self.duration - now)
        if self.ground.idle_exit_s:
            limits.append(self._last_octet + self.ground.idle_exit_s - now)
        return max(0.0, min(limits)) if limits else None

    def run(self, feed) -> LinkCounters:
        if self.port is None:
            self.open()
        c = self.counters
        read_size = self.ground.read_size
        on_this_link = 0
        try:
            while not (reason := self._end_reason(self._clock())):
                try:
                    chunk = self.port.read(read_size)
                except LinkLost as exc:
                    self.close()
                    if not self.reconnect:
                        log.warning("port %s: %s; ending the pass (%d octets read, every one fed to the decoder)",
                                    self.url, exc, c.octets_read)
                        reason = f"link lost: {exc}"
                        break
                    log.warning("port %s: %s after %d octets; reconnecting", self.url, exc, on_this_link)
                    reason = self._reopen()
                    on_this_link = 0
                    if reason:
                        break
                    continue
                if chunk:
                    feed(chunk)
                    c.octets_read += len(chunk)
                    on_this_link += len(chunk)
                    self._last_octet = self._clock()
        finally:
            self.close()
        c.ended_by = reason
        return c

    def _reopen(self) -> str:
        """Reopen the port after a loss; '' once it is open, else why the pass ended meanwhile."""
        c = self.counters
        lost_at = self._clock()
        delay = self.ground.reconnect.initial_s
        c.gaps += 1
        while True:
            now = self._clock()
            left = self._until_end(now)
            self.stop.wait(delay if left is None else min(delay, left))
            if reason := self._end_reason(self._clock()):
                gap = self._clock() - lost_at
                c.gap_seconds += gap
                log.warning("port %s: the pass ends (%s) %.1f s into gap %d, the link still lost",
                            self.url, reason, gap, c.gaps)
                return reason
            try:
                self.port = self._open()
            except PortError as exc:
                c.reopen_failures += 1
                delay = min(2 * delay, self.ground.reconnect.max_s)
                log.info("%s; next attempt in %.1f s", exc, delay)
                continue
            gap = self._clock() - lost_at
            c.gap_seconds += gap
            c.reconnects += 1
            log.warning("port %s: link restored after a gap of %.2f s (gap %d, %d failed attempts so far)",
                        self.url, gap, c.gaps, c.reopen_failures)
            return ""
