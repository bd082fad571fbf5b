"""Frame synchronisation: find CADUs in a bit stream, undo the channel coding, check the frame.

The synchroniser has the classic states of a hardware frame synchroniser
(CCSDS 131.0-B annex on frame synchronisation):

* search: every bit position is tried for the attached sync marker, and for
  its complement (a BPSK phase flip, after which the data are inverted back),
  with ``search_errors`` bit errors allowed;
* check: a candidate marker is confirmed when the frame behind it passes its
  checks (Reed-Solomon, FECF), or, on a link that has neither, when the next
  marker follows exactly one CADU later; otherwise it was a false marker and
  the search goes on one bit later;
* lock: the next marker is expected exactly one CADU after the last one and
  is accepted with ``lock_errors`` bit errors; a marker a few bits off
  (``slip_window_bits``) is a slip and re-aligns the lock at once; a missing
  marker is bridged by the flywheel for ``flywheel`` CADUs while a search
  runs in between, then the lock is dropped.

In lock a frame that fails its checks costs exactly one CADU: the
synchroniser does not hunt for markers inside it.

Accounting is by octet: every octet read ends up in exactly one of accepted
CADUs (``bytes_in_frames``), dropped (``bytes_skipped``: garbage, false
markers, frames that failed their checks) or still buffered. A CADU that
starts inside an octet owns the octet its marker starts in; its last,
shared octet belongs to the next CADU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kestrel.link.coding import ASM, ASM_BITS as MARKER_BITS, ChannelCoder
from kestrel.link.crc import crc16_ccitt
from kestrel.link.errors import ConfigurationError
from kestrel.link.tmframe import FrameLayout, TmFrame, parse_primary_header

from . import frame_sync

MARKER = int.from_bytes(ASM, "big")
_WAIT = object()


@dataclass
class SyncCounters:
    bytes_read: int = 0
    bytes_in_frames: int = 0       # octets of accepted CADUs
    bytes_skipped: int = 0         # octets dropped: garbage, false markers, bad frames, the tail
    frames_good: int = 0
    frames_bad: int = 0            # CADUs in lock whose frame failed its checks
    false_markers: int = 0         # candidate markers found in search that did not confirm
    codewords_uncorrectable: int = 0
    symbols_corrected: int = 0
    crc_failures: int = 0          # frames whose FECF did not match
    frames_malformed: int = 0      # frames with a header our layout does not allow
    markers_flywheeled: int = 0    # good frames behind a marker beyond the lock tolerance
    slips: int = 0                 # lock re-aligned to a marker a few bits off
    inversions: int = 0            # lock acquired with the other polarity than the last one
    locks: int = 0                 # search/check -> lock transitions
    locks_lost: int = 0            # flywheel exhausted, back to search


class FrameSynchronizer:
    """Bytes in, checked transfer frames out; never raises on what it is fed."""

    def __init__(self, layout: FrameLayout, coder: ChannelCoder, *, search_errors: int = 1,
                 lock_errors: int = 3, flywheel: int = 3, slip_window_bits: int = 16,
                 allow_inverted: bool = True):
        if coder.frame_length != layout.frame_length:
            raise ConfigurationError(f"channel coder carries {coder.frame_length}-octet frames, "
                                     f"the frame layout has {layout.frame_length}")
        for name, value, top in (("search_errors", search_errors, 8), ("lock_errors", lock_errors, 8),
                                 ("flywheel", flywheel, 64), ("slip_window_bits", slip_window_bits, 64)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= top:
                raise ConfigurationError(f"{name} must be an integer 0..{top}, got {value!r}")
        if search_errors > lock_errors:
            raise ConfigurationError(f"search_errors ({search_errors}) must not exceed lock_errors "
                                     f"({lock_errors}): a marker found in search must hold in lock")
        self.layout = layout
        self.coder = coder
        self.search_errors = search_errors
        self.lock_errors = lock_errors
        self.flywheel = flywheel
        self.slip_window_bits = slip_window_bits
        self.allow_inverted = allow_inverted
        self.counters = SyncCounters()

        self._cadu_bits = 8 * coder.cadu_length
        self._codec = coder.reed_solomon
        self._sequence = coder.randomizer_sequence
        self._scratch = bytearray(coder.coded_length)
        self._scratch_view = memoryview(self._scratch)
        self._frame_view = self._scratch_view[:layout.frame_length]
        self._counts = np.zeros(self._codec.depth, dtype=np.int32) if self._codec else None
        # Neither Reed-Solomon nor FECF: a frame cannot vouch for its marker.
        self._verifiable = self._codec is not None or layout.has_fecf
        # Octets already accounted but kept for a backward slip.
        self._keep_back = slip_window_bits // 8 + 1

        self._buffer = bytearray()
        self._pos = 0              # first octet not yet accounted
        self._search_from = 0      # next bit the search examines
        self._expect: int | None = None   # bit where lock or flywheel wants the next marker
        self._misses = 0
        self._inverted = False
        self._hunt_progress = (None, 0)   # (expected bit, bits past it already hunted)

    @property
    def buffered(self) -> int:
        return len(self._buffer) - self._pos

    @property
    def locked(self) -> bool:
        return self._expect is not None

    def feed(self, chunk) -> list[TmFrame]:
        self.counters.bytes_read += len(chunk)
        self._buffer += chunk
        frames: list[TmFrame] = []
        self._run(frames, final=False)
        self._trim()
        return frames

    def finish(self) -> list[TmFrame]:
        """End of stream: decide what the missing look-ahead held back, drop the rest."""
        frames: list[TmFrame] = []
        self._run(frames, final=True)
        self.counters.bytes_skipped += len(self._buffer) - self._pos
        self._buffer.clear()
        self._pos = self._search_from = 0
        self._expect = None
        self._misses = 0
        return frames

    # --- the state machine ----------------------------------------------------
    def _run(self, frames: list, final: bool) -> None:
        nbits = 8 * len(self._buffer)
        cadu_bits = self._cadu_bits
        window = self.slip_window_bits
        while True:
            expect = self._expect
            if expect is not None and self._search_from >= expect:
                if not self._lock_step(expect, nbits, window, frames, final):
                    return
                continue
            stop = expect if expect is not None else nbits
            position, inverted = frame_sync.search_marker(
                self._buffer, self._search_from, stop, MARKER, self.search_errors, self.allow_inverted)
            if position < 0:
                if expect is not None and expect + MARKER_BITS <= nbits:
                    self._search_from = expect
                    self._skip_to(expect // 8)
                    continue
                # Every position whose marker fits has been tried.
                self._search_from = max(self._search_from, min(stop, nbits - MARKER_BITS + 1))
                self._skip_to(self._search_from // 8)
                return
            self._search_from = position
            self._skip_to(position // 8)
            if position + cadu_bits > nbits:
                return
            frame, stats = self._decode(position, inverted)
            if frame is not None:
                confirmed = True if self._verifiable else self._confirmed(position, inverted, nbits, final, True)
                if confirmed is None:
                    return
                if confirmed:
                    self._accept(position, inverted, frame, stats, frames)
                    continue
            confirmed = self._confirmed(position, inverted, nbits, final, False)
            if confirmed is None:
                return  # the next marker is not in yet
            if confirmed:
                self._reject(position, inverted, stats)
                continue
            self.counters.false_markers += 1
            self._search_from = position + 1

    def _lock_step(self, expect: int, nbits: int, window: int, frames: list, final: bool) -> bool:
        """Examine the marker the lock expects; False when more data must come first."""
        cadu_bits = self._cadu_bits
        if expect + cadu_bits > nbits or (not final and expect + window + MARKER_BITS > nbits):
            return False
        inverted = self._inverted
        distance = frame_sync.marker_distance(self._buffer, expect, MARKER)
        marker_held = (MARKER_BITS - distance if inverted else distance) <= self.lock_errors
        frame, stats = self._decode(expect, inverted)
        if frame is not None and (marker_held or self._verifiable):
            if not marker_held:
                self.counters.markers_flywheeled += 1
            self._accept(expect, inverted, frame, stats, frames)
            return True
        if self.allow_inverted and (distance if inverted else MARKER_BITS - distance) <= self.lock_errors:
            slipped = (expect, not inverted)   # a phase flip right at the expected marker
        else:
            slipped = self._slip(expect, nbits, window)
        if self._verifiable:
            # Before a whole CADU is given up, a marker close by or inside it whose
            # frame checks out (a slip, or a frame after inserted garbage) wins.
            found = self._hunt(expect, nbits, slipped, final)
            if found is _WAIT:
                return False
            if found is not None:
                position, found_inverted, found_frame, found_stats = found
                if marker_held:
                    # The CADU the lock vouched for failed: it was cut short or damaged.
                    self.counters.frames_bad += 1
                    self._count(stats)
                # Near this marker or near the next one: the stream slipped.
                if position != expect and min(abs(position - expect),
                                              abs(position - expect - cadu_bits)) <= window:
                    self.counters.slips += 1
                self._accept(position, found_inverted, found_frame, found_stats, frames)
                return True
        if marker_held:
            self._reject(expect, inverted, stats)
            return True
        if slipped is not None:
            position, slipped_inverted = slipped
            if position + cadu_bits > nbits:
                return False
            if position != expect:
                self.counters.slips += 1
            slipped_frame, slipped_stats = self._decode(position, slipped_inverted)
            if slipped_frame is not None:
                self._accept(position, slipped_inverted, slipped_frame, slipped_stats, frames)
            else:
                self._reject(position, slipped_inverted, slipped_stats)
            return True
        # No marker: bridge with the flywheel while a search looks in between.
        self._misses += 1
        if self._misses > self.flywheel:
            self.counters.locks_lost += 1
            self._expect = None
            self._misses = 0
        else:
            self._expect = expect + cadu_bits
        self._search_from = expect + 1
        return True

    def _hunt(self, expect: int, nbits: int, slipped, final: bool):
        """The first marker near or within the CADU at ``expect`` whose frame checks out;
        None when there is none, _WAIT when the stream does not reach far enough yet.

        Candidates already tried for this ``expect`` are not tried again when
        more data comes (``_hunt_progress``), so octet-sized reads cost no more
        than one big one.
        """
        cadu_bits = self._cadu_bits
        tried_offset = self._hunt_progress[1] if self._hunt_progress[0] == expect else 0
        if tried_offset == 0 and slipped is not None:
            position, inverted = slipped
            if position + cadu_bits > nbits:
                return None if final else _WAIT
            frame, stats = self._decode(position, inverted)
            if frame is not None:
                return position, inverted, frame, stats
        start = expect + max(tried_offset, 1)
        stop = expect + cadu_bits
        while start < stop:
            limit = min(stop, nbits - MARKER_BITS + 1)
            position, inverted = frame_sync.search_marker(
                self._buffer, start, limit, MARKER, self.search_errors, self.allow_inverted)
            if position < 0 and limit < stop and not final:
                start = max(start, limit)
                self._hunt_progress = (expect, start - expect)
                return _WAIT
            if position < 0:
                break
            if position + cadu_bits > nbits:
                if final:
                    break
                self._hunt_progress = (expect, position - expect)
                return _WAIT
            frame, stats = self._decode(position, inverted)
            if frame is not None:
                return position, inverted, frame, stats
            start = position + 1
        return None

    def _slip(self, expect: int, nbits: int, window: int):
        low = max(expect - window, 8 * max(self._pos - self._keep_back, 0))
        high = min(expect + window + 1, nbits - MARKER_BITS + 1)
        # Nearest first: the earliest match above and below the expected bit.
        after = frame_sync.search_marker(self._buffer, expect + 1, high, MARKER, self.lock_errors,
                                         self.allow_inverted)
        before = frame_sync.search_marker(self._buffer, low, expect, MARKER, self.lock_errors,
                                          self.allow_inverted)
        candidates = [c for c in (after, before) if c[0] >= 0]
        if not candidates:
            return None
        return min(candidates, key=lambda c: abs(c[0] - expect))

    def _confirmed(self, position: int, inverted: bool, nbits: int, final: bool, at_end: bool):
        """Does the next marker follow one CADU later? None: not enough data yet;
        ``at_end``: the answer when the stream has ended before it."""
        following = position + self._cadu_bits
        if following + MARKER_BITS > nbits:
            return at_end if final else None
        distance = frame_sync.marker_distance(self._buffer, following, MARKER)
        return (MARKER_BITS - distance if inverted else distance) <= self.lock_errors

    # --- one CADU ---------------------------------------------------------------
    def _decode(self, position: int, inverted: bool):
        """The checked frame behind the marker at ``position`` (or None), and what decoding found."""
        frame_sync.extract_into(self._buffer, position + MARKER_BITS, self._scratch, inverted, self._sequence)
        corrected = uncorrectable = 0
        if self._codec is not None:
            counts = self._codec.decode_into(self._scratch, self._scratch, self._counts).tolist()
            for n in counts:
                if n < 0:
                    uncorrectable += 1
                else:
                    corrected += n
            if uncorrectable:
                return None, (corrected, uncorrectable, False, False)
        raw = self._frame_view
        if self.layout.has_fecf:
            if crc16_ccitt(raw[:-2]) != (raw[-2] << 8 | raw[-1]):
                return None, (corrected, 0, True, False)
        header = parse_primary_header(raw)
        if header is None or header.ocf_flag != self.layout.has_ocf:
            return None, (corrected, 0, False, True)
        frame = TmFrame.from_header(header, raw, self.layout)
        return frame, (corrected, 0, False, False)

    def _count(self, stats) -> None:
        c = self.counters
        corrected, uncorrectable, crc_failed, malformed = stats
        c.symbols_corrected += corrected
        c.codewords_uncorrectable += uncorrectable
        c.crc_failures += crc_failed
        c.frames_malformed += malformed

    def _consume(self, position: int, good: bool) -> None:
        """Account the CADU at ``position`` and expect the next one right behind it."""
        c = self.counters
        first = position // 8
        self._skip_to(first)
        end = first + self._cadu_bits // 8
        # After a backward slip the new CADU starts in octets already accounted.
        owned = end - max(self._pos, first)
        if good:
            c.bytes_in_frames += owned
        else:
            c.bytes_skipped += owned
        self._pos = end
        self._search_from = self._expect = position + self._cadu_bits
        self._misses = 0

    def _lock_on(self, inverted: bool) -> None:
        c = self.counters
        if self._expect is None:
            c.locks += 1
        if inverted != self._inverted:
            c.inversions += 1
            self._inverted = inverted

    def _accept(self, position: int, inverted: bool, frame: TmFrame, stats, frames: list) -> None:
        self._lock_on(inverted)
        self._count(stats)
        self.counters.frames_good += 1
        frames.append(frame)
        self._consume(position, good=True)

    def _reject(self, position: int, inverted: bool, stats) -> None:
        self._lock_on(inverted)
        self._count(stats)
        self.counters.frames_bad += 1
        self._consume(position, good=False)

    def _skip_to(self, octet: int) -> None:
        if octet > self._pos:
            self.counters.bytes_skipped += octet - self._pos
            self._pos = octet

    def _trim(self) -> None:
        cut = max(self._pos - self._keep_back, 0)
        if cut:
            del self._buffer[:cut]
            self._pos -= cut
            self._search_from -= 8 * cut
            if self._expect is not None:
                self._expect -= 8 * cut
            if self._hunt_progress[0] is not None:
                self._hunt_progress = (self._hunt_progress[0] - 8 * cut, self._hunt_progress[1])
