"""TM Transfer Frames, CCSDS 132.0-B-3: fixed length, primary header, data field, OCF, FECF."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

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
# Master and virtual channel frame counts are 8 bits and wrap (132.0-B-3 4.1.2.4, 4.1.2.5).
FRAME_COUNT_MODULUS: Final = 256

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




class PrimaryHeader(NamedTuple):
    """The fields of TM_PRIMARY_HEADER, read without construct on the hot paths."""

    spacecraft_id: int
    virtual_channel_id: int
    ocf_flag: bool
    master_channel_frame_count: int
    virtual_channel_frame_count: int
    secondary_header_flag: bool
    synch_flag: bool
    packet_order_flag: bool
    segment_length_id: int
    first_header_pointer: int


def parse_primary_header(raw) -> PrimaryHeader | None:
    """The primary header at the start of ``raw`` (at least 6 octets); None when the
    version number is not 0.

    TM_PRIMARY_HEADER stays the definition: tests/test_frame_sync.py proves
    this reads every header exactly as its parse does. Construct costs tens of
    microseconds a frame, more than the rest of the ground path together.
    """
    word = int.from_bytes(raw[:PRIMARY_HEADER_LENGTH], "big")
    if word >> 46:
        return None
    return PrimaryHeader(
        (word >> 36) & 0x3FF, (word >> 33) & 0x7, bool((word >> 32) & 1), (word >> 24) & 0xFF,
        (word >> 16) & 0xFF, bool((word >> 15) & 1), bool((word >> 14) & 1), bool((word >> 13) & 1),
        (word >> 11) & 0x3, word & 0x7FF)


def build_primary_header(spacecraft_id: int, virtual_channel_id: int, ocf_flag: bool,
                         master_channel_frame_count: int, virtual_channel_frame_count: int,
                         first_header_pointer: int, synch_flag: bool = False,
                         packet_order_flag: bool = False) -> bytes:
    """TM_PRIMARY_HEADER.build of these fields (no secondary header, segment length id
    '11'), by integer arithmetic; tests/test_frame_sync.py proves the two equal."""
    for name, value, top in (("spacecraft_id", spacecraft_id, MAX_SPACECRAFT_ID),
                             ("virtual_channel_id", virtual_channel_id, 7),
                             ("master_channel_frame_count", master_channel_frame_count, 0xFF),
                             ("virtual_channel_frame_count", virtual_channel_frame_count, 0xFF),
                             ("first_header_pointer", first_header_pointer, 0x7FF)):
        if not 0 <= value <= top:
            raise ValueError(f"{name} must be 0..{top}, got {value}")
    word = ((spacecraft_id << 36) | (virtual_channel_id << 33) | (bool(ocf_flag) << 32)
            | (master_channel_frame_count << 24) | (virtual_channel_frame_count << 16)
            | (bool(synch_flag) << 14) | (bool(packet_order_flag) << 13) | (0b11 << 11)
            | first_header_pointer)
    return word.to_bytes(PRIMARY_HEADER_LENGTH, "big")


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
        # '11' is the only segment length id allowed when synch_flag is 0.
        header = build_primary_header(
            self.spacecraft_id, self.virtual_channel_id, layout.has_ocf, self.master_channel_frame_count,
            self.virtual_channel_frame_count, self.first_header_pointer, self.synch_flag,
            self.packet_order_flag)
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
        header = parse_primary_header(raw)
        if header is None:
            raise MalformedError(f"TM frame version {raw[0] >> 6} is not 0")
        if header.ocf_flag != layout.has_ocf:
            raise MalformedError(f"TM frame OCF flag {header.ocf_flag} does not match the configured layout")
        return cls.from_header(header, raw, layout)

    @classmethod
    def from_header(cls, header: PrimaryHeader, raw, layout: FrameLayout) -> "TmFrame":
        """The frame ``raw`` whose header has been parsed and checked already."""
        start = PRIMARY_HEADER_LENGTH
        end = start + layout.data_field_length
        return cls(header.spacecraft_id, header.virtual_channel_id, header.master_channel_frame_count,
                   header.virtual_channel_frame_count, header.first_header_pointer, bytes(raw[start:end]),
                   bytes(raw[end:end + OCF_LENGTH]) if layout.has_ocf else None,
                   header.synch_flag, header.packet_order_flag)
