"""TM Transfer Frames, CCSDS 132.0-B-3: fixed length, primary header, data field, OCF, FECF."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import construct as cs

from .crc import crc16_ccitt
from .errors import ChecksumMismatch, ConfigurationError, MalformedError, TruncatedError

PRIMARY_HEADER_LENGTH: Final = 6
OCF_LENGTH: Final = 4
FECF_LENGTH: Final = 2
MAX_FRAME_LENGTH: Final = 2048  # 132.0-B-3 4.1.1
MAX_SPACECRAFT_ID: Final = 0x3FF
# First header pointer values with a meaning of their own (132.0-B-3 4.1.2.7).
FHP_NO_PACKET_START: Final = 0x7FF
FHP_IDLE_DATA: Final = 0x7FE
IDLE_VCID: Final = 7

TM_PRIMARY_HEADER = cs.BitStruct(
    "version" / cs.Const(0, cs.BitsInteger(2)),
    "spacecraft_id" / cs.BitsInteger(10),
    "virtual_channel_id" / cs.BitsInteger(3),
    "ocf_flag" / cs.Flag,
    "master_channel_frame_count" / cs.BitsInteger(8),
    "virtual_channel_frame_count" / cs.BitsInteger(8),
    "secondary_header_flag" / cs.Flag,
    "synch_flag" / cs.Flag,
    "packet_order_flag" / cs.Flag,
    "segment_length_id" / cs.BitsInteger(2),
    "first_header_pointer" / cs.BitsInteger(11),
)


@dataclass(frozen=True)
class FrameLayout:
    """The fixed shape of every frame on one physical channel."""

    frame_length: int
    has_ocf: bool = False
    has_fecf: bool = True

    def __post_init__(self):
        minimum = PRIMARY_HEADER_LENGTH + 1 + self.has_ocf * OCF_LENGTH + self.has_fecf * FECF_LENGTH
        if not minimum <= self.frame_length <= MAX_FRAME_LENGTH:
            raise ConfigurationError(
                f"TM frame length must be {minimum}..{MAX_FRAME_LENGTH} octets, got {self.frame_length}")

    @property
    def data_field_length(self) -> int:
        return (self.frame_length - PRIMARY_HEADER_LENGTH
                - self.has_ocf * OCF_LENGTH - self.has_fecf * FECF_LENGTH)


@dataclass(frozen=True)
class TmFrame:
    spacecraft_id: int
    virtual_channel_id: int
    master_channel_frame_count: int
    virtual_channel_frame_count: int
    first_header_pointer: int
    data: bytes
    ocf: bytes | None = None
    synch_flag: bool = False
    packet_order_flag: bool = False

    def pack(self, layout: FrameLayout) -> bytes:
        if len(self.data) != layout.data_field_length:
            raise ValueError(f"frame data field must be {layout.data_field_length} octets, got {len(self.data)}")
        if layout.has_ocf != (self.ocf is not None) or (self.ocf is not None and len(self.ocf) != OCF_LENGTH):
            raise ValueError("OCF presence or length does not match the frame layout")
        header = TM_PRIMARY_HEADER.build(dict(
            spacecraft_id=self.spacecraft_id, virtual_channel_id=self.virtual_channel_id,
            ocf_flag=layout.has_ocf, master_channel_frame_count=self.master_channel_frame_count,
            virtual_channel_frame_count=self.virtual_channel_frame_count,
            secondary_header_flag=False, synch_flag=self.synch_flag,
            packet_order_flag=self.packet_order_flag,
            # '11' is the only value allowed when synch_flag is 0.
            segment_length_id=0b11, first_header_pointer=self.first_header_pointer))
        body = header + self.data + (self.ocf or b"")
        if layout.has_fecf:
            body += crc16_ccitt(body).to_bytes(2, "big")
        return body

    @classmethod
    def unpack(cls, raw: bytes, layout: FrameLayout) -> "TmFrame":
        if len(raw) != layout.frame_length:
            raise TruncatedError("TM transfer frame", layout.frame_length, len(raw))
        raw = bytes(raw)
        if layout.has_fecf:
            expected = int.from_bytes(raw[-2:], "big")
            computed = crc16_ccitt(raw[:-2])
            if expected != computed:
                raise ChecksumMismatch("TM frame FECF", expected, computed)
        try:
            header = TM_PRIMARY_HEADER.parse(raw)
        except cs.ConstructError as exc:
            raise MalformedError(f"TM frame header: {exc}") from exc
        if header.ocf_flag != layout.has_ocf:
            raise MalformedError(f"TM frame OCF flag {header.ocf_flag} does not match the configured layout")
        start = PRIMARY_HEADER_LENGTH
        end = start + layout.data_field_length
        return cls(spacecraft_id=header.spacecraft_id, virtual_channel_id=header.virtual_channel_id,
                   master_channel_frame_count=header.master_channel_frame_count,
                   virtual_channel_frame_count=header.virtual_channel_frame_count,
                   first_header_pointer=header.first_header_pointer, data=raw[start:end],
                   ocf=raw[end:end + OCF_LENGTH] if layout.has_ocf else None,
                   synch_flag=header.synch_flag, packet_order_flag=header.packet_order_flag)
