"""TC Transfer Frame parsing (232.0-B): TcFrame.unpack, and the flight's whole clear path from a CLTU's data.

Inputs start as frames built by TcFrame.pack (the TC_FRAME declaration) carrying real PUS-C TC packets,
then have header fields rewritten through TC_PRIMARY_HEADER and octets mutated, and most get their FECF
recomputed so the checks behind it are reached. The property: only FrameRejected, with a Rejection,
leaves `TcFrame.unpack` and `UplinkPath.cltu` (no SAs: the bench default); a frame unpack accepts packs
back to exactly its octets and agrees with the declaration's parse; an unmutated BD or AD frame gives
back exactly the packets it carried.
"""
from __future__ import annotations

from flight.uplink import UplinkPath
from kestrel.link.cltu import FILL, randomize
from kestrel.link.config import LinkConfig, UplinkConfig
from kestrel.link.crc import crc16_ccitt
from kestrel.link.errors import FrameRejected, Rejection
from kestrel.link.tcframe import (MAX_FRAME_LENGTH, TC_FRAME, TC_FRAME_NO_FECF, TC_PRIMARY_HEADER, FrameType,
                                  TcFrame, TcFrameLayout)
from kestrel.link.telecommand import PusTc

from .common import Draw, PropertyViolation, mutate

LINK = LinkConfig()
VIRTUAL_CHANNELS = (0, 1, 5)
COMMAND_APID = UplinkConfig().command_apid


def packet_pool(seed: int = 13, size: int = 96) -> tuple[tuple[PusTc, bytes], ...]:
    """Valid PUS-C TCs built once through the PUS_TC declaration (building per input would spend the run
    in construct): the command APID and others, our services and unknown ones, empty to long data."""
    import random

    rng = random.Random(seed)
    pool = []
    for i in range(size):
        data = rng.randbytes(rng.choice((0, 0, 2, 5, 11, 24)) if i % 16 else rng.randrange(200, 1000))
        tc = PusTc(rng.choice((COMMAND_APID, COMMAND_APID, rng.randrange(0x7FF))),
                   rng.choice((17, 20, 8, 3, rng.randrange(256))), rng.choice((1, 1, 3, 5, 6, 31, rng.randrange(256))),
                   data, rng.randrange(0x4000), rng.randrange(0x10000), rng.randrange(16))
        pool.append((tc, tc.pack()))
    return tuple(pool)


def draw_packets(draw: Draw, pool, room: int) -> list[tuple[PusTc, bytes]]:
    """1..3 TCs of the pool that fit in `room` octets (at least one, whatever the room)."""
    out, used = [], 0
    for _ in range(1 + draw.int(3)):
        tc, raw = draw.choice(pool)
        if out and used + len(raw) > room:
            break
        out.append((tc, raw))
        used += len(raw)
    return out


def header_rewrite(raw: bytearray, draw: Draw) -> None:
    """Rewrite one to three fields of the primary header through its declaration."""
    fields = dict(TC_PRIMARY_HEADER.parse(bytes(raw[:5])))
    fields.pop("_io", None)
    widths = dict(version=4, bypass=2, control_command=2, spare=4, spacecraft_id=1024, virtual_channel_id=64,
                  frame_length=1024, sequence_number=256)
    for _ in range(1 + draw.int(3)):
        name = draw.choice(tuple(widths))
        value = draw.int(widths[name])
        if name == "frame_length" and draw.bool():
            value = max(0, min(1023, fields[name] + draw.choice((-1, 1, -2, 2))))   # off by one or two
        fields[name] = bool(value) if widths[name] == 2 else value
    raw[:5] = TC_PRIMARY_HEADER.build(fields)


def fix_fecf(raw: bytearray) -> None:
    if len(raw) >= 2:
        raw[-2:] = crc16_ccitt(bytes(raw[:-2])).to_bytes(2, "big")


class Harness:
    name = "tcframe"

    def __init__(self):
        self.pool = packet_pool()
        self.uplinks = {seg: UplinkConfig(virtual_channels=VIRTUAL_CHANNELS, segment_header=seg)
                        for seg in (False, True)}

    def one_input(self, data: bytes) -> None:
        draw = Draw(data)
        segment = draw.bool()
        uplink = self.uplinks[segment]
        layout = TcFrameLayout(LINK.spacecraft_id, frozenset(VIRTUAL_CHANNELS), segment, fecf=not draw.chance(1, 8))
        frame_type = draw.choice((FrameType.BD, FrameType.BD, FrameType.AD, FrameType.BC))
        vcid = draw.choice(VIRTUAL_CHANNELS)
        if frame_type == FrameType.BC:
            tcs = []
            body = draw.choice((b"\x00", b"\x82\x00" + draw.bytes(1), draw.bytes(1 + draw.int(4))))
        else:
            chosen = draw_packets(draw, self.pool, MAX_FRAME_LENGTH - layout.overhead(frame_type))
            tcs = [tc for tc, _ in chosen]
            body = b"".join(raw for _, raw in chosen)
        # AD: N(S) = V(R) of a fresh FARM (0), or any other.
        sequence = 0 if draw.chance(3, 4) else draw.int(256)
        # The MAP id travels only in a segment header.
        map_id = draw.int(64) if segment and frame_type != FrameType.BC else 0
        original = TcFrame(vcid, sequence, body, frame_type, map_id)
        try:
            packed = original.pack(layout)
        except ValueError:
            return                          # more packets than a frame holds: nothing to send
        raw = bytearray(packed)
        rewritten = draw.chance(1, 4)
        if rewritten:
            header_rewrite(raw, draw)
        mutated = mutate(raw, draw, 3) if draw.chance(1, 3) else 0
        if layout.fecf and draw.chance(7, 8):
            fix_fecf(raw)
        raw = bytes(raw)
        pristine = not rewritten and not mutated and raw == packed

        self._unpack(raw, layout, original if pristine else None)
        if layout.fecf:
            self._path(raw, uplink, draw, tcs if pristine and frame_type != FrameType.BC
                       and (frame_type == FrameType.BD or sequence == 0) else None)

    @staticmethod
    def _unpack(raw: bytes, layout: TcFrameLayout, expected: TcFrame | None) -> None:
        try:
            frame = TcFrame.unpack(raw, layout)
        except FrameRejected as exc:
            if not isinstance(exc.reason, Rejection):
                raise PropertyViolation(f"FrameRejected with reason {exc.reason!r}") from exc
            if expected is not None:
                raise PropertyViolation(f"a frame packed by TcFrame.pack refused: {exc}") from exc
            return
        if frame.pack(layout) != raw:
            raise PropertyViolation(f"unpack gave {frame}, which packs to other octets than {raw.hex()}")
        header = (TC_FRAME if layout.fecf else TC_FRAME_NO_FECF).parse(raw).frame.value.header
        if (header.spacecraft_id != layout.spacecraft_id or header.virtual_channel_id != frame.virtual_channel_id
                or header.sequence_number != frame.sequence_number
                or (header.bypass, header.control_command) != frame.frame_type.value):
            raise PropertyViolation(f"unpack gave {frame}, the declaration {header}")
        if expected is not None and frame != expected:
            raise PropertyViolation(f"unpack gave {frame}, packed was {expected}")

    @staticmethod
    def _path(raw: bytes, uplink: UplinkConfig, draw: Draw, expected: list[PusTc] | None) -> None:
        """Through UplinkPath.cltu as the CLTU decoder delivers it: randomized or not, with its fill."""
        path = UplinkPath(LINK, uplink, clock=lambda: 0.0)
        coded = randomize(raw) if uplink.randomize else raw
        fill = bytes([FILL]) * (-len(raw) % 7)
        if draw.chance(1, 8):
            fill = draw.bytes(draw.int(10))           # wrong fill, or too much of it
            expected = None if fill != bytes([FILL]) * (-len(raw) % 7) else expected
        try:
            got = path.cltu(coded + fill)
        except FrameRejected as exc:
            if not isinstance(exc.reason, Rejection):
                raise PropertyViolation(f"FrameRejected with reason {exc.reason!r}") from exc
            if expected is not None:
                raise PropertyViolation(f"a valid frame refused on the path: {exc}") from exc
            return
        if expected is not None and got != expected:
            raise PropertyViolation(f"the path gave {got}, the frame carried {expected}")
