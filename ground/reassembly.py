"""Packets out of a virtual channel's frames, using the first header pointer.

A frame-count gap means lost frames: the packet being assembled is dropped
(counted), and assembly restarts at the next frame where a packet begins.
"""
from __future__ import annotations

from dataclasses import dataclass

from kestrel.link.errors import ConfigurationError
from kestrel.link.spacepacket import MAX_PACKET_LENGTH, PRIMARY_HEADER_LENGTH, packet_length
from kestrel.link.tmframe import FHP_IDLE_DATA, FHP_NO_PACKET_START, FRAME_COUNT_MODULUS, TmFrame


@dataclass
class ReassemblyCounters:
    frames: int = 0
    frame_gaps: int = 0
    frames_lost: int = 0
    packets: int = 0
    packets_lost: int = 0       # partial packets dropped at a gap or inconsistency
    bad_pointers: int = 0


class VirtualChannelReassembler:
    def __init__(self, vcid: int):
        if isinstance(vcid, bool) or not isinstance(vcid, int) or not 0 <= vcid <= 7:
            raise ConfigurationError(f"virtual channel id must be 0..7, got {vcid!r}")
        self.vcid = vcid
        self.counters = ReassemblyCounters()
        self._expected_count: int | None = None
        self._partial = bytearray()
        self._in_sync = False

    def _drop_partial(self) -> None:
        if self._partial:
            self.counters.packets_lost += 1
        self._partial.clear()

    def _extract(self) -> list[bytes]:
        packets = []
        buf = self._partial
        size = len(buf)
        start = 0
        while size - start >= PRIMARY_HEADER_LENGTH:
            end = start + packet_length(buf[start:start + PRIMARY_HEADER_LENGTH])
            if end > size:
                break
            packets.append(bytes(buf[start:end]))
            start = end
        if start:
            del buf[:start]
        self.counters.packets += len(packets)
        return packets

    def feed(self, frame: TmFrame) -> list[bytes]:
        c = self.counters
        c.frames += 1
        count = frame.virtual_channel_frame_count
        if self._expected_count is not None and count != self._expected_count:
            c.frame_gaps += 1
            c.frames_lost += (count - self._expected_count) % FRAME_COUNT_MODULUS
            self._drop_partial()
            self._in_sync = False
        self._expected_count = (count + 1) % FRAME_COUNT_MODULUS
        pointer = frame.first_header_pointer
        data = frame.data
        if pointer == FHP_IDLE_DATA:
            return []
        if pointer == FHP_NO_PACKET_START:
            if self._in_sync:
                self._partial += data
                if len(self._partial) > MAX_PACKET_LENGTH:
                    self._drop_partial()
                    self._in_sync = False
                return self._extract()
            return []
        if pointer >= len(data):
            c.bad_pointers += 1
            self._drop_partial()
            self._in_sync = False
            return []
        packets: list[bytes] = []
        if self._in_sync:
            self._partial += data[:pointer]
            packets = self._extract()
            # What precedes the pointer must complete the packet in progress exactly.
            self._drop_partial()
        self._partial = bytearray(data[pointer:])
        self._in_sync = True
        return packets + self._extract()
