"""CCSDS Space Packets (133.0-B-2) with the PUS-C TM secondary header (ECSS-E-ST-70-41C).

The formats are declared once here; the flight program builds with them and
the ground parses with them. `pack()`/`unpack()` are thin over the
declarations: they only fill the fields that follow from the others (lengths,
CRC) and turn construct's errors into ours.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Final, NamedTuple

import construct as cs

from .crc import crc16_ccitt
from .errors import ChecksumMismatch, MalformedError, TruncatedError

MAX_APID: Final = 0x7FF
IDLE_APID: Final = 0x7FF
MAX_SEQUENCE_COUNT: Final = 0x3FFF
PRIMARY_HEADER_LENGTH: Final = 6
# 133.0-B-2 4.1.3.5: the data field is 1..65536 octets.
MAX_DATA_FIELD_LENGTH: Final = 65536
MAX_PACKET_LENGTH: Final = PRIMARY_HEADER_LENGTH + MAX_DATA_FIELD_LENGTH
PUS_VERSION: Final = 2
PUS_TM_FIXED_HEADER_LENGTH: Final = 7  # secondary header without the time field
CRC_LENGTH: Final = 2

SEQ_CONTINUATION, SEQ_FIRST, SEQ_LAST, SEQ_UNSEGMENTED = 0, 1, 2, 3

PRIMARY_HEADER = cs.BitStruct(
    "version" / cs.Const(0, cs.BitsInteger(3)),
    "is_telecommand" / cs.Flag,
    "has_secondary_header" / cs.Flag,
    "apid" / cs.BitsInteger(11),
    "sequence_flags" / cs.BitsInteger(2),
    "sequence_count" / cs.BitsInteger(14),
    # Octets in the data field minus one.
    "data_length" / cs.BitsInteger(16),
)


def pus_tm_secondary_header(time_length: int) -> cs.Construct:
    """PUS-C TM secondary header (ECSS-E-ST-70-41C 7.4.3.1), time field of `time_length` octets."""
    return cs.Struct(
        "flags" / cs.BitStruct(
            "pus_version" / cs.Const(PUS_VERSION, cs.BitsInteger(4)),
            "time_reference_status" / cs.BitsInteger(4),
        ),
        "service" / cs.Int8ub,
        "subtype" / cs.Int8ub,
        "message_type_counter" / cs.Int16ub,
        "destination_id" / cs.Int16ub,
        "time" / cs.Bytes(time_length),
    )


def packet_length(header_bytes: bytes) -> int:
    """Total length of the packet whose primary header starts `header_bytes`."""
    return PRIMARY_HEADER_LENGTH + ((header_bytes[4] << 8) | header_bytes[5]) + 1


class PacketKey(NamedTuple):
    """What identifies a packet in its stream: the fields of PRIMARY_HEADER the ground keys on."""

    apid: int
    sequence_count: int


def packet_key(header_bytes) -> PacketKey:
    """APID and sequence count of the packet whose primary header starts `header_bytes` (>= 4 octets).

    Read by hand, as the ground does this per packet; PRIMARY_HEADER stays
    the definition and tests hold the two equal.
    """
    return PacketKey(((header_bytes[0] << 8) | header_bytes[1]) & MAX_APID,
                     ((header_bytes[2] << 8) | header_bytes[3]) & MAX_SEQUENCE_COUNT)


@dataclass(frozen=True)
class SpacePacket:
    """A Space Packet without interpreting its data field (idle packets, foreign APIDs)."""

    apid: int
    sequence_count: int
    data: bytes
    sequence_flags: int = SEQ_UNSEGMENTED
    is_telecommand: bool = False
    has_secondary_header: bool = False

    def __post_init__(self):
        if not 0 <= self.apid <= MAX_APID:
            raise ValueError(f"APID must be 0..{MAX_APID}, got {self.apid}")
        if not 0 <= self.sequence_count <= MAX_SEQUENCE_COUNT:
            raise ValueError(f"sequence count must be 0..{MAX_SEQUENCE_COUNT}, got {self.sequence_count}")
        if not 1 <= len(self.data) <= MAX_DATA_FIELD_LENGTH:
            raise ValueError(f"data field must be 1..{MAX_DATA_FIELD_LENGTH} octets, got {len(self.data)}")

    def pack(self) -> bytes:
        header = PRIMARY_HEADER.build(dict(
            is_telecommand=self.is_telecommand, has_secondary_header=self.has_secondary_header,
            apid=self.apid, sequence_flags=self.sequence_flags,
            sequence_count=self.sequence_count, data_length=len(self.data) - 1))
        return header + self.data

    @classmethod
    def unpack(cls, raw: bytes) -> "SpacePacket":
        if len(raw) < PRIMARY_HEADER_LENGTH + 1:
            raise TruncatedError("space packet", PRIMARY_HEADER_LENGTH + 1, len(raw))
        try:
            header = PRIMARY_HEADER.parse(raw[:PRIMARY_HEADER_LENGTH])
        except cs.ConstructError as exc:
            raise MalformedError(f"space packet primary header: {exc}") from exc
        total = PRIMARY_HEADER_LENGTH + header.data_length + 1
        if len(raw) < total:
            raise TruncatedError(f"space packet APID {header.apid}", total, len(raw))
        return cls(apid=header.apid, sequence_count=header.sequence_count,
                   data=bytes(raw[PRIMARY_HEADER_LENGTH:total]), sequence_flags=header.sequence_flags,
                   is_telecommand=header.is_telecommand, has_secondary_header=header.has_secondary_header)


def idle_packet(length: int, sequence_count: int = 0) -> bytes:
    """An idle packet (APID 0x7FF) of exactly `length` octets, at least 7."""
    if length < PRIMARY_HEADER_LENGTH + 1:
        raise ValueError(f"an idle packet needs at least {PRIMARY_HEADER_LENGTH + 1} octets, asked {length}")
    # 0x55 rather than zeros: a long run of one value is a poor idle pattern on a link.
    return SpacePacket(IDLE_APID, sequence_count, b"\x55" * (length - PRIMARY_HEADER_LENGTH)).pack()


@dataclass(frozen=True)
class PusTm:
    """A PUS-C telemetry packet: primary header, secondary header, source data, CRC."""

    apid: int
    service: int
    subtype: int
    data: bytes
    time: bytes  # the CUC field as sent, P-field included where configured
    sequence_count: int = 0
    message_type_counter: int = 0
    destination_id: int = 0
    time_reference_status: int = 0
    sequence_flags: int = SEQ_UNSEGMENTED

    def __post_init__(self):
        if not 0 <= self.apid < IDLE_APID:
            raise ValueError(f"TM APID must be 0..{IDLE_APID - 1}, got {self.apid}")
        for name, bound in (("service", 0xFF), ("subtype", 0xFF), ("message_type_counter", 0xFFFF),
                            ("destination_id", 0xFFFF), ("time_reference_status", 0xF),
                            ("sequence_count", MAX_SEQUENCE_COUNT)):
            value = getattr(self, name)
            if not 0 <= value <= bound:
                raise ValueError(f"{name} must be 0..{bound}, got {value}")
        overhead = PUS_TM_FIXED_HEADER_LENGTH + len(self.time) + CRC_LENGTH
        if overhead + len(self.data) > MAX_DATA_FIELD_LENGTH:
            raise ValueError(f"PUS TM source data of {len(self.data)} octets exceeds the "
                             f"{MAX_DATA_FIELD_LENGTH - overhead} a packet can carry")

    def pack(self) -> bytes:
        secondary = pus_tm_secondary_header(len(self.time)).build(dict(
            flags=dict(time_reference_status=self.time_reference_status),
            service=self.service, subtype=self.subtype,
            message_type_counter=self.message_type_counter,
            destination_id=self.destination_id, time=self.time))
        data_field_length = len(secondary) + len(self.data) + CRC_LENGTH
        header = PRIMARY_HEADER.build(dict(
            is_telecommand=False, has_secondary_header=True, apid=self.apid,
            sequence_flags=self.sequence_flags, sequence_count=self.sequence_count,
            data_length=data_field_length - 1))
        body = header + secondary + self.data
        return body + crc16_ccitt(body).to_bytes(2, "big")

    @staticmethod
    def _checked_bytes(raw: bytes, time_length: int) -> bytes:
        """The packet's octets once its length and packet error control hold."""
        minimum = PRIMARY_HEADER_LENGTH + PUS_TM_FIXED_HEADER_LENGTH + time_length + CRC_LENGTH
        if len(raw) < minimum:
            raise TruncatedError("PUS TM packet", minimum, len(raw))
        total = packet_length(raw)
        if len(raw) < total:
            raise TruncatedError("PUS TM packet", total, len(raw))
        if total < minimum:
            raise MalformedError(f"PUS TM packet length {total} is shorter than its headers ({minimum})")
        raw = bytes(raw[:total])
        if packet_key(raw).apid == IDLE_APID:
            raise MalformedError("an idle packet (APID 0x7FF) is not a PUS TM packet")
        expected = (raw[-2] << 8) | raw[-1]
        computed = crc16_ccitt(raw[:-2])
        if expected != computed:
            raise ChecksumMismatch("PUS TM packet error control", expected, computed)
        return raw

    @classmethod
    def unpack(cls, raw: bytes, time_length: int) -> "PusTm":
        """Parse one whole packet; `time_length` is the configured CUC field length.

        The fields are read with integer arithmetic: construct costs tens of
        microseconds a packet, which the ground cannot afford at link rate.
        The declarations above stay the definition; `unpack_declared` reads
        with them, and tests prove the two agree on any input, errors included.
        """
        raw = cls._checked_bytes(raw, time_length)
        word = int.from_bytes(raw[:4], "big")
        if word >> 29:
            raise MalformedError(f"PUS TM header: packet version {word >> 29} is not 0")
        if (word >> 28) & 1 or not (word >> 27) & 1:
            raise MalformedError("not a TM packet with a secondary header")
        flags = raw[6]
        if flags >> 4 != PUS_VERSION:
            raise MalformedError(f"PUS TM header: PUS version {flags >> 4} is not {PUS_VERSION}")
        start = PRIMARY_HEADER_LENGTH + PUS_TM_FIXED_HEADER_LENGTH
        return cls(apid=(word >> 16) & MAX_APID, service=raw[7], subtype=raw[8],
                   data=raw[start + time_length:-2], time=raw[start:start + time_length],
                   sequence_count=word & MAX_SEQUENCE_COUNT, message_type_counter=(raw[9] << 8) | raw[10],
                   destination_id=(raw[11] << 8) | raw[12], time_reference_status=flags & 0xF,
                   sequence_flags=(word >> 14) & 0x3)

    @classmethod
    def unpack_declared(cls, raw: bytes, time_length: int) -> "PusTm":
        """`unpack` done by the construct declarations: the reference the fast path is held to."""
        raw = cls._checked_bytes(raw, time_length)
        try:
            header = PRIMARY_HEADER.parse(raw)
            if header.is_telecommand or not header.has_secondary_header:
                raise MalformedError("not a TM packet with a secondary header")
            secondary = pus_tm_secondary_header(time_length).parse(raw[PRIMARY_HEADER_LENGTH:])
        except cs.ConstructError as exc:
            raise MalformedError(f"PUS TM header: {exc}") from exc
        start = PRIMARY_HEADER_LENGTH + PUS_TM_FIXED_HEADER_LENGTH + time_length
        return cls(apid=header.apid, service=secondary.service, subtype=secondary.subtype,
                   data=raw[start:-2], time=secondary.time, sequence_count=header.sequence_count,
                   message_type_counter=secondary.message_type_counter,
                   destination_id=secondary.destination_id,
                   time_reference_status=secondary.flags.time_reference_status,
                   sequence_flags=header.sequence_flags)
