"""TC Transfer Frames, CCSDS 232.0-B: primary header, optional segment header, data field, FECF.

`TC_FRAME` declares the whole frame once (the FECF as a construct Checksum);
`TcFrame.pack` builds with it and `TcFrame.unpack` parses with it, then makes
the checks the declaration cannot know: this spacecraft's id, the virtual
channels in use, the frame type. Every refusal is a FrameRejected with its
reason, checked in this order: length, version, spare, FECF, spacecraft id,
virtual channel, frame type, segment header.

The frame types (232.0-B 4.1.2.3): AD (bypass 0, control 0: sequence
controlled, through FARM-1), BD (bypass 1, control 0: expedited, past the
FARM's sequence check) and BC (bypass 1, control 1: COP-1 control commands,
which carry no segment header). Bypass 0 with control 1 is no type.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

import construct as cs

from .crc import crc16_ccitt
from .errors import FrameRejected, Rejection

PRIMARY_HEADER_LENGTH: Final = 5
SEGMENT_HEADER_LENGTH: Final = 1
FECF_LENGTH: Final = 2
MAX_FRAME_LENGTH: Final = 1024          # 232.0-B 4.1.2.7: the length field counts to 1023 (+1)
MAX_SPACECRAFT_ID: Final = 0x3FF
MAX_VCID: Final = 0x3F
SEQUENCE_MODULUS: Final = 256
# 232.0-B 4.1.3.2.2: sequence flags of a segment header carrying a whole packet (or packets).
SEGMENT_UNSEGMENTED: Final = 0b11

TC_PRIMARY_HEADER = cs.BitStruct(
    "version" / cs.BitsInteger(2),
    "bypass" / cs.Flag,
    "control_command" / cs.Flag,
    "spare" / cs.BitsInteger(2),
    "spacecraft_id" / cs.BitsInteger(10),
    "virtual_channel_id" / cs.BitsInteger(6),
    "frame_length" / cs.BitsInteger(10),       # octets in the frame, less one
    "sequence_number" / cs.BitsInteger(8),
)

TC_SEGMENT_HEADER = cs.BitStruct(
    "sequence_flags" / cs.BitsInteger(2),
    "map_id" / cs.BitsInteger(6),
)


def _frame(fecf: bool) -> cs.Construct:
    body = cs.Struct(
        "header" / TC_PRIMARY_HEADER,
        "data" / cs.Bytes(cs.this.header.frame_length + 1 - PRIMARY_HEADER_LENGTH - FECF_LENGTH * fecf),
    )
    if not fecf:
        return cs.Struct("frame" / cs.RawCopy(body))
    return cs.Struct("frame" / cs.RawCopy(body), "fecf" / cs.Checksum(cs.Int16ub, crc16_ccitt, cs.this.frame.data))


TC_FRAME: Final = _frame(fecf=True)
TC_FRAME_NO_FECF: Final = _frame(fecf=False)


class FrameType(enum.Enum):
    AD = (False, False)
    BD = (True, False)
    BC = (True, True)

    @property
    def bypass(self) -> bool:
        return self.value[0]

    @property
    def control_command(self) -> bool:
        return self.value[1]


@dataclass(frozen=True)
class TcFrameLayout:
    """What both ends agree on: the spacecraft, the virtual channels in use, whether a segment header
    and the FECF are present."""

    spacecraft_id: int
    virtual_channels: frozenset[int] = frozenset({0})
    segment_header: bool = False
    fecf: bool = True

    def overhead(self, frame_type: FrameType) -> int:
        segment = self.segment_header and frame_type != FrameType.BC
        return PRIMARY_HEADER_LENGTH + SEGMENT_HEADER_LENGTH * segment + FECF_LENGTH * self.fecf


@dataclass(frozen=True)
class TcFrame:
    """One TC transfer frame. `data` is the frame data field after the segment header (with SDLS: the
    security header, the protected data and the trailer)."""

    virtual_channel_id: int
    sequence_number: int
    data: bytes
    frame_type: FrameType = FrameType.AD
    map_id: int = 0

    def pack(self, layout: TcFrameLayout) -> bytes:
        segment = b""
        if layout.segment_header and self.frame_type != FrameType.BC:
            segment = TC_SEGMENT_HEADER.build(dict(sequence_flags=SEGMENT_UNSEGMENTED, map_id=self.map_id))
        data = segment + bytes(self.data)
        length = PRIMARY_HEADER_LENGTH + len(data) + FECF_LENGTH * layout.fecf
        if not len(self.data) or length > MAX_FRAME_LENGTH:
            raise ValueError(f"a TC frame is {layout.overhead(self.frame_type) + 1}..{MAX_FRAME_LENGTH} octets, "
                             f"this one would be {length}")
        header = dict(version=0, bypass=self.frame_type.bypass, control_command=self.frame_type.control_command,
                      spare=0, spacecraft_id=layout.spacecraft_id, virtual_channel_id=self.virtual_channel_id,
                      frame_length=length - 1, sequence_number=self.sequence_number)
        declaration = TC_FRAME if layout.fecf else TC_FRAME_NO_FECF
        return declaration.build(dict(frame=dict(value=dict(header=header, data=data))))

    @classmethod
    def unpack(cls, raw, layout: TcFrameLayout) -> "TcFrame":
        """Parse one whole frame: `raw` is exactly its octets (the receiver takes the CLTU's fill off)."""
        check_length(raw, layout)
        declaration = TC_FRAME if layout.fecf else TC_FRAME_NO_FECF
        header = TC_PRIMARY_HEADER.parse(raw)
        if header.version != 0:
            raise FrameRejected(Rejection.VERSION, f"TC frame version {header.version}, expected 0")
        if header.spare != 0:
            raise FrameRejected(Rejection.SPARE, f"TC frame spare bits {header.spare:02b}, expected 00")
        try:
            parsed = declaration.parse(raw)
        except cs.ChecksumError:
            raise FrameRejected(Rejection.FECF, f"FECF 0x{int.from_bytes(raw[-2:], 'big'):04X}, computed "
                                f"0x{crc16_ccitt(bytes(raw[:-2])):04X}") from None
        if header.spacecraft_id != layout.spacecraft_id:
            raise FrameRejected(Rejection.SPACECRAFT_ID, f"spacecraft id {header.spacecraft_id}, this is "
                                f"{layout.spacecraft_id}")
        if header.virtual_channel_id not in layout.virtual_channels:
            raise FrameRejected(Rejection.VIRTUAL_CHANNEL, f"virtual channel {header.virtual_channel_id} is not "
                                f"in use (in use: {sorted(layout.virtual_channels)})")
        if not header.bypass and header.control_command:
            raise FrameRejected(Rejection.FRAME_TYPE, "bypass 0 with control command 1 is no frame type")
        frame_type = FrameType((header.bypass, header.control_command))
        data = parsed.frame.value.data
        map_id = 0
        if layout.segment_header and frame_type != FrameType.BC:
            segment = TC_SEGMENT_HEADER.parse(data[:1])
            if segment.sequence_flags != SEGMENT_UNSEGMENTED:
                raise FrameRejected(Rejection.SEGMENT, f"segment sequence flags {segment.sequence_flags:02b}: only "
                                    "unsegmented data (11) is accepted")
            data, map_id = data[1:], segment.map_id
        return cls(header.virtual_channel_id, header.sequence_number, bytes(data), frame_type, map_id)


def frame_length(raw) -> int:
    """The frame's length as its header states it (at least 2 octets of header given)."""
    return (((raw[2] & 0x03) << 8) | raw[3]) + 1


def check_length(raw, layout: TcFrameLayout) -> int:
    """The stated length, once it is possible (holds the headers and one data octet) and equals len(raw)."""
    if len(raw) < PRIMARY_HEADER_LENGTH:
        raise FrameRejected(Rejection.FRAME_TRUNCATED, f"{len(raw)} octets cannot hold a TC frame header "
                            f"({PRIMARY_HEADER_LENGTH})")
    stated = frame_length(raw)
    # The smallest frame: the headers (no segment header on BC), the FECF and one data octet. The segment
    # header counts: without it a frame of headers alone passed, its data field empty (found by fuzzing).
    control = raw[0] & 0x30 == 0x30      # bypass and control command set: a BC frame
    minimum = layout.overhead(FrameType.BC if control else FrameType.BD) + 1
    if stated < minimum:
        raise FrameRejected(Rejection.FRAME_LENGTH, f"stated length {stated} is shorter than the smallest "
                            f"frame ({minimum})")
    if stated != len(raw):
        raise FrameRejected(Rejection.FRAME_LENGTH if stated < len(raw) else Rejection.FRAME_TRUNCATED,
                            f"stated length {stated}, {len(raw)} octets came")
    return stated
