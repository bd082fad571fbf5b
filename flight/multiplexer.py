"""Packets into frames: per-virtual-channel packetizers and the master-channel multiplexer.

Packets are laid end to end in each virtual channel's frame data fields and
span frames as needed; the first header pointer marks where the first packet
starts in each frame (132.0-B-3 4.1.2.7). The multiplexer serves virtual
channels by fixed priority, so a frame of a higher channel (alerts) goes out
before any waiting frame of a lower one (imagery).
"""
from __future__ import annotations

from collections import deque
from kestrel.link.errors import ConfigurationError
from kestrel.link.spacepacket import PRIMARY_HEADER_LENGTH, idle_packet
from kestrel.link.tmframe import (FHP_IDLE_DATA, FHP_NO_PACKET_START, FRAME_COUNT_MODULUS, IDLE_VCID, FrameLayout,
                                  TmFrame)


class VirtualChannelPacketizer:
    """Holds one virtual channel's packets until they fill frames; bounded."""

    def __init__(self, vcid: int, data_field_length: int, max_pending_octets: int):
        self.vcid = vcid
        self.data_field_length = data_field_length
        self.max_pending_octets = max_pending_octets
        self._pending = bytearray()
        self._starts: deque[int] = deque()  # offsets of packet starts in _pending
        # Octets at the head of _pending that are the spill of a flush's idle
        # packet: they alone are not worth a frame.
        self._idle_tail = 0
        self.frame_count = 0
        self.packets_accepted = 0
        self.packets_refused = 0

    @property
    def pending_octets(self) -> int:
        return len(self._pending)

    def push(self, packet: bytes) -> bool:
        """Queue a packet; False (and counted) when it would exceed the bound."""
        if len(self._pending) + len(packet) > self.max_pending_octets:
            self.packets_refused += 1
            return False
        self._starts.append(len(self._pending))
        self._pending += packet
        self.packets_accepted += 1
        return True

    def has_full_frame(self) -> bool:
        return len(self._pending) >= self.data_field_length

    def has_packet_data(self) -> bool:
        return len(self._pending) > self._idle_tail

    def take(self, flush: bool = False) -> tuple[bytes, int] | None:
        """The next frame data field and its first header pointer, or None if none is ready.

        With `flush`, a partly filled field is completed with an idle packet,
        which may spill a few octets into the next frame when less than a
        minimal packet's room is left.
        """
        size = self.data_field_length
        padded = False
        if len(self._pending) < size:
            if not (flush and self.has_packet_data()):
                return None
            room = size - len(self._pending)
            self._starts.append(len(self._pending))
            self._pending += idle_packet(max(room, PRIMARY_HEADER_LENGTH + 1))
            padded = True
        first = FHP_NO_PACKET_START
        if self._starts and self._starts[0] < size:
            first = self._starts[0]
        while self._starts and self._starts[0] < size:
            self._starts.popleft()
        self._starts = deque(s - size for s in self._starts)
        data = bytes(self._pending[:size])
        del self._pending[:size]
        self._idle_tail = len(self._pending) if padded else max(0, self._idle_tail - size)
        return data, first


class MasterChannelMultiplexer:
    """Builds the frames of one master channel from its virtual channels by priority."""

    def __init__(self, spacecraft_id: int, layout: FrameLayout, vc_priority: tuple[int, ...],
                 max_pending_octets: int = 256 * 1024, ocf_source=None):
        if not 0 <= spacecraft_id <= 0x3FF:
            raise ConfigurationError(f"spacecraft id must be 0..1023, got {spacecraft_id}")
        if len(set(vc_priority)) != len(vc_priority) or not all(0 <= v <= 7 for v in vc_priority):
            raise ConfigurationError(f"virtual channel priority must list distinct ids 0..7, got {vc_priority}")
        if IDLE_VCID in vc_priority:
            raise ConfigurationError(f"virtual channel {IDLE_VCID} is reserved for idle frames")
        self.spacecraft_id = spacecraft_id
        self.layout = layout
        self.ocf_source = ocf_source  # callable returning 4 octets (the CLCW), when layout has an OCF
        self.channels = {v: VirtualChannelPacketizer(v, layout.data_field_length, max_pending_octets)
                         for v in vc_priority}
        self._order = tuple(vc_priority)
        self._master_count = 0
        self._idle_vc_count = 0
        self.frames_sent = 0
        self.idle_frames_sent = 0

    def push(self, vcid: int, packet: bytes) -> bool:
        try:
            channel = self.channels[vcid]
        except KeyError:
            raise ConfigurationError(f"virtual channel {vcid} is not configured") from None
        return channel.push(packet)

    def has_data(self) -> bool:
        return any(c.has_packet_data() for c in self.channels.values())

    def partly_filled_ahead_of(self, vcid: int) -> bool:
        """Whether a channel of higher priority than `vcid` holds packet data short of a whole frame."""
        for ahead in self._order:
            if ahead == vcid:
                return False
            if self.channels[ahead].has_packet_data():
                return True
        return False

    def next_frame(self, flush: bool = False) -> bytes | None:
        """The next frame to send, from the highest-priority channel that has one;
        None when nothing is waiting.

        Without `flush` only full data fields go out. With it, a channel's
        partly filled field goes out too (completed with idle data): priority
        decides before fullness, so a waiting alert never sits behind a full
        frame of imagery.
        """
        for vcid in self._order:
            channel = self.channels[vcid]
            taken = channel.take(flush=flush)
            if taken is None:
                continue
            data, first = taken
            frame = self._frame(vcid, channel.frame_count, first, data)
            channel.frame_count = (channel.frame_count + 1) % FRAME_COUNT_MODULUS
            return frame
        return None

    def idle_frame(self) -> bytes:
        """An OID frame keeping a continuous downlink in lock when nothing waits."""
        frame = self._frame(IDLE_VCID, self._idle_vc_count, FHP_IDLE_DATA,
                            b"\x55" * self.layout.data_field_length)
        self._idle_vc_count = (self._idle_vc_count + 1) % FRAME_COUNT_MODULUS
        self.idle_frames_sent += 1
        return frame

    def _frame(self, vcid: int, vc_count: int, first_header_pointer: int, data: bytes) -> bytes:
        ocf = None
        if self.layout.has_ocf:
            # Until COP-1 supplies a CLCW, the field is sent as zeros.
            ocf = self.ocf_source() if self.ocf_source is not None else bytes(4)
        raw = TmFrame(self.spacecraft_id, vcid, self._master_count, vc_count,
                      first_header_pointer, data, ocf).pack(self.layout)
        self._master_count = (self._master_count + 1) % FRAME_COUNT_MODULUS
        self.frames_sent += 1
        return raw
