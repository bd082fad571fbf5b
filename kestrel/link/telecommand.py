"""PUS-C telecommand packets (ECSS-E-ST-70-41C 7.4.4.1) and the bench's bare-packet uplink.

A TC packet is a Space Packet (PRIMARY_HEADER, type TC, secondary header
flag set) whose data field starts with the TC secondary header and ends with
the CRC-16 packet error control, which every TC of this mission carries.
`PUS_TC` declares the whole packet, checksum included; `PusTc.pack` builds
with it, `PusTc.unpack_declared` parses with it, and `PusTc.unpack` is the
fast integer parse that tests hold equal to it, errors included.

`TcStreamParser` takes the bench's uplink (bare TC packets on a serial line,
split anyhow) and hands over whole, valid packets, skipping what is not one.
"""
from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Final

import construct as cs

from .crc import crc16_ccitt
from .errors import ChecksumMismatch, LinkError, MalformedError, TruncatedError
from .spacepacket import (CRC_LENGTH, IDLE_APID, MAX_DATA_FIELD_LENGTH, MAX_SEQUENCE_COUNT, PRIMARY_HEADER,
                          PRIMARY_HEADER_LENGTH, PUS_VERSION, SEQ_UNSEGMENTED, packet_length)


class Ack(enum.IntFlag):
    """The TC's acknowledgement flags: which successful stages to report (failures are always reported).

    ECSS numbers bits from the most significant, so its "bit 3" (acceptance) is our 1.
    """

    ACCEPTANCE = 1
    START = 2
    PROGRESS = 4
    COMPLETION = 8
    ALL = 15


PUS_TC_SECONDARY_HEADER_LENGTH: Final = 5
MIN_TC_PACKET_LENGTH: Final = PRIMARY_HEADER_LENGTH + PUS_TC_SECONDARY_HEADER_LENGTH + CRC_LENGTH
MAX_APPLICATION_DATA: Final = MAX_DATA_FIELD_LENGTH - PUS_TC_SECONDARY_HEADER_LENGTH - CRC_LENGTH
# The bench's uplink refuses longer packets by default: a TC transfer frame
# (232.0-B) carries at most 1019 data octets, and the bench mirrors the link.
MAX_TC_PACKET_LENGTH: Final = 1024

PUS_TC_SECONDARY_HEADER = cs.Struct(
    "flags" / cs.BitStruct(
        "pus_version" / cs.Const(PUS_VERSION, cs.BitsInteger(4)),
        "ack_flags" / cs.BitsInteger(4),
    ),
    "service" / cs.Int8ub,
    "subtype" / cs.Int8ub,
    "source_id" / cs.Int16ub,
)

PUS_TC = cs.Struct(
    "packet" / cs.RawCopy(cs.Struct(
        "header" / PRIMARY_HEADER,
        "is_tc" / cs.Check(cs.this.header.is_telecommand & cs.this.header.has_secondary_header),
        "not_idle" / cs.Check(cs.this.header.apid != IDLE_APID),
        "secondary" / PUS_TC_SECONDARY_HEADER,
        "data" / cs.Bytes(cs.this.header.data_length + 1 - PUS_TC_SECONDARY_HEADER_LENGTH - CRC_LENGTH),
    )),
    "crc" / cs.Checksum(cs.Int16ub, crc16_ccitt, cs.this.packet.data),
)


def _framed(raw) -> bytes:
    """The packet's octets once its length holds: the check both parsers make first."""
    if len(raw) < MIN_TC_PACKET_LENGTH:
        raise TruncatedError("PUS TC packet", MIN_TC_PACKET_LENGTH, len(raw))
    total = packet_length(raw)
    if len(raw) < total:
        raise TruncatedError("PUS TC packet", total, len(raw))
    if total < MIN_TC_PACKET_LENGTH:
        raise MalformedError(f"PUS TC packet length {total} is shorter than its headers ({MIN_TC_PACKET_LENGTH})")
    return bytes(raw[:total])


@dataclass(frozen=True)
class PusTc:
    """A PUS-C telecommand packet: primary header, secondary header, application data, CRC."""

    apid: int
    service: int
    subtype: int
    data: bytes = b""
    sequence_count: int = 0
    source_id: int = 0
    ack_flags: int = Ack.ALL
    sequence_flags: int = SEQ_UNSEGMENTED

    def __post_init__(self):
        if not 0 <= self.apid < IDLE_APID:
            raise ValueError(f"TC APID must be 0..{IDLE_APID - 1}, got {self.apid}")
        for name, bound in (("service", 0xFF), ("subtype", 0xFF), ("source_id", 0xFFFF), ("ack_flags", 0xF),
                            ("sequence_count", MAX_SEQUENCE_COUNT), ("sequence_flags", 3)):
            value = getattr(self, name)
            if not 0 <= value <= bound:
                raise ValueError(f"{name} must be 0..{bound}, got {value}")
        if len(self.data) > MAX_APPLICATION_DATA:
            raise ValueError(f"TC application data of {len(self.data)} octets exceeds the "
                             f"{MAX_APPLICATION_DATA} a packet can carry")

    def pack(self) -> bytes:
        data_field = PUS_TC_SECONDARY_HEADER_LENGTH + len(self.data) + CRC_LENGTH
        return PUS_TC.build(dict(packet=dict(value=dict(
            header=dict(is_telecommand=True, has_secondary_header=True, apid=self.apid,
                        sequence_flags=self.sequence_flags, sequence_count=self.sequence_count,
                        data_length=data_field - 1),
            secondary=dict(flags=dict(ack_flags=self.ack_flags), service=self.service, subtype=self.subtype,
                           source_id=self.source_id),
            data=bytes(self.data)))))

    @classmethod
    def unpack(cls, raw) -> "PusTc":
        """Parse one whole packet (octets after it are ignored).

        Integer arithmetic, as for PusTm: PUS_TC stays the definition,
        `unpack_declared` reads with it, and tests prove the two agree on
        any input, the kind of error and its numbers included. The checks
        run in the declaration's order.
        """
        raw = _framed(raw)
        word = int.from_bytes(raw[:4], "big")
        if word >> 29:
            raise MalformedError(f"PUS TC header: packet version {word >> 29} is not 0")
        if not (word >> 28) & 1 or not (word >> 27) & 1:
            raise MalformedError("not a TC packet with a secondary header")
        apid = (word >> 16) & 0x7FF
        if apid == IDLE_APID:
            raise MalformedError("an idle packet (APID 0x7FF) is not a telecommand")
        flags = raw[6]
        if flags >> 4 != PUS_VERSION:
            raise MalformedError(f"PUS TC header: PUS version {flags >> 4} is not {PUS_VERSION}")
        expected = (raw[-2] << 8) | raw[-1]
        computed = crc16_ccitt(raw[:-2])
        if expected != computed:
            raise ChecksumMismatch("PUS TC packet error control", expected, computed)
        return cls(apid=apid, service=raw[7], subtype=raw[8], data=raw[11:-2],
                   sequence_count=word & MAX_SEQUENCE_COUNT, source_id=(raw[9] << 8) | raw[10],
                   ack_flags=flags & 0xF, sequence_flags=(word >> 14) & 0x3)

    @classmethod
    def unpack_declared(cls, raw) -> "PusTc":
        """`unpack` done by the PUS_TC declaration: the reference the fast path is held to."""
        raw = _framed(raw)
        try:
            parsed = PUS_TC.parse(raw)
        except cs.ChecksumError:
            # construct names the two values only in its message: take them where it did.
            raise ChecksumMismatch("PUS TC packet error control", int.from_bytes(raw[-2:], "big"),
                                   crc16_ccitt(raw[:-2])) from None
        except cs.ConstructError as exc:
            raise MalformedError(f"PUS TC header: {exc}") from exc
        header, secondary = parsed.packet.value.header, parsed.packet.value.secondary
        return cls(apid=header.apid, service=secondary.service, subtype=secondary.subtype,
                   data=parsed.packet.value.data, sequence_count=header.sequence_count,
                   source_id=secondary.source_id, ack_flags=secondary.flags.ack_flags,
                   sequence_flags=header.sequence_flags)


# --- the bench's uplink: bare packets on a byte stream ------------------------------

@dataclass
class TcStreamCounters:
    """octets_read == octets_in_packets + octets_skipped + what the parser still holds, always."""

    octets_read: int = 0
    octets_in_packets: int = 0
    octets_skipped: int = 0
    packets: int = 0
    candidates_rejected: int = 0   # a plausible header whose packet failed its CRC or its checks


# The octets that can start a TC header: version 0, type TC, secondary header flag set (top bits 00011).
_HEADER_START = re.compile(rb"[\x18-\x1f]")


def _plausible_header(buf, at: int, max_length: int) -> int:
    """The length of the TC packet whose header starts at `at`, or 0 if no TC header can start there."""
    # Version 0, type TC, secondary header flag set: the top five bits are 00011.
    if buf[at] & 0xF8 != 0x18:
        return 0
    length = PRIMARY_HEADER_LENGTH + ((buf[at + 4] << 8) | buf[at + 5]) + 1
    return length if MIN_TC_PACKET_LENGTH <= length <= max_length else 0


class TcStreamParser:
    """Whole, valid TC packets out of a byte stream delivered in pieces of any size.

    Where no packet starts, octets are skipped one at a time until a
    plausible header (version 0, type TC, secondary header, a length within
    bounds) begins a packet that `PusTc.unpack` accepts (its CRC included).
    The buffer holds at most two maximal packets. A plausible header whose
    packet has not all arrived is waited for; `flush()` gives up on it when
    the line has gone quiet, so noise that looks like a long header does not
    hold back a command behind it.
    """

    def __init__(self, max_packet_length: int = MAX_TC_PACKET_LENGTH):
        if not MIN_TC_PACKET_LENGTH <= max_packet_length <= PRIMARY_HEADER_LENGTH + MAX_DATA_FIELD_LENGTH:
            raise ValueError(f"max_packet_length must be {MIN_TC_PACKET_LENGTH}.."
                             f"{PRIMARY_HEADER_LENGTH + MAX_DATA_FIELD_LENGTH}, got {max_packet_length}")
        self.max_packet_length = max_packet_length
        self.counters = TcStreamCounters()
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, chunk) -> list[PusTc]:
        self.counters.octets_read += len(chunk)
        packets: list[PusTc] = []
        view = memoryview(chunk).cast("B")
        step = self.max_packet_length
        # Slices of at most one packet keep the buffer bounded whatever the caller reads at once.
        for start in range(0, len(view), step):
            self._buffer += view[start:start + step]
            self._scan(packets, final=False)
        return packets

    def flush(self) -> list[PusTc]:
        """Take what is held as all there is: packets in it come out, the rest is skipped."""
        packets: list[PusTc] = []
        self._scan(packets, final=True)
        return packets

    def _scan(self, packets: list[PusTc], final: bool) -> None:
        buf, c, limit = self._buffer, self.counters, self.max_packet_length
        at, end = 0, len(buf)
        while end - at >= PRIMARY_HEADER_LENGTH:
            length = _plausible_header(buf, at, limit)
            if not length:
                # Jump to the next octet that could start a header: noise costs a search, not a loop turn.
                found = _HEADER_START.search(buf, at + 1)
                at = found.start() if found else end
                continue
            if end - at < length:
                if not final:
                    break        # wait for the rest of the candidate
                at += 1
                continue
            try:
                packet = PusTc.unpack(buf[at:at + length])
            except LinkError:
                c.candidates_rejected += 1
                at += 1
                continue
            c.octets_skipped += at
            del buf[:at + length]
            at, end = 0, len(buf)
            c.octets_in_packets += length
            c.packets += 1
            packets.append(packet)
        if final:
            at = end        # what is left cannot become a packet
        c.octets_skipped += at
        del buf[:at]
