"""Frame synchronisation: find CADUs in a byte stream, undo the channel coding, check the frame.

A candidate starts at an attached sync marker; it is accepted only when the
frame behind it passes its FECF (and Reed-Solomon, where used). A failed
candidate is counted and the search goes on one octet later, so a false
marker in garbage never costs a real frame. Every octet read ends up in
exactly one of: accepted CADUs, skipped, or still buffered.
"""
from __future__ import annotations

from dataclasses import dataclass

from flight.link.coding import ASM, ChannelCoder
from flight.link.errors import LinkError
from flight.link.tmframe import FrameLayout, TmFrame


@dataclass
class SyncCounters:
    bytes_read: int = 0
    bytes_in_frames: int = 0
    bytes_skipped: int = 0
    frames_good: int = 0
    frames_bad: int = 0          # a marker whose frame failed its checks
    codewords_uncorrectable: int = 0
    symbols_corrected: int = 0


class FrameSynchronizer:
    def __init__(self, layout: FrameLayout, coder: ChannelCoder):
        self.layout = layout
        self.coder = coder
        self.counters = SyncCounters()
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[TmFrame]:
        c = self.counters
        c.bytes_read += len(chunk)
        self._buffer += chunk
        buf = self._buffer
        frames: list[TmFrame] = []
        cadu_length = self.coder.cadu_length
        pos = 0
        while True:
            at = buf.find(ASM, pos)
            if at < 0:
                # Keep a tail that could be the start of a marker.
                keep_from = max(pos, len(buf) - (len(ASM) - 1))
                c.bytes_skipped += keep_from - pos
                pos = keep_from
                break
            c.bytes_skipped += at - pos
            pos = at
            if len(buf) - pos < cadu_length:
                break
            frame = self._check(bytes(buf[pos + len(ASM): pos + cadu_length]))
            if frame is None:
                c.frames_bad += 1
                c.bytes_skipped += 1
                pos += 1
                continue
            frames.append(frame)
            c.frames_good += 1
            c.bytes_in_frames += cadu_length
            pos += cadu_length
        del buf[:pos]
        return frames

    def _check(self, coded: bytes) -> TmFrame | None:
        data = self.coder.derandomize(coded)
        if self.coder.reed_solomon is not None:
            result = self.coder.reed_solomon.decode(data)
            if result.uncorrectable:
                self.counters.codewords_uncorrectable += 1
                return None
            self.counters.symbols_corrected += sum(result.corrected)
            data = result.data
        try:
            return TmFrame.unpack(data, self.layout)
        except LinkError:
            return None

    def finish(self) -> None:
        """End of stream: whatever is still buffered was never a whole frame."""
        self.counters.bytes_skipped += len(self._buffer)
        self._buffer.clear()
