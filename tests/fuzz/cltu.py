"""CLTU decoding (231.0-B): CltuDecoder fed a line of CLTUs, noise and bit errors in pieces of any size.

The decoder refuses by returning a CltuResult with a rejection; it raises nothing. The property:
no exception at all; after every piece octets_read == octets_in_cltus + octets_skipped + buffered;
every result carries data or a rejection, never both, the data a whole number of codeblocks' information
within max_data; and where the reference says what must come out, it does:
  - a CLTU whose codeblocks hold at most one bit error each (the filler bit aside), on a line with no
    other damage and noise without a start sequence, is delivered with exactly the frame and its fill;
  - one whose worst codeblock holds exactly two such errors delivers nothing (no partial frame).
"""
from __future__ import annotations

from kestrel.link.cltu import (CODEBLOCK_OCTETS, FILL, INFO_OCTETS, START_SEQUENCE, CltuDecoder, encode_cltu,
                               randomize)

from .common import Draw, PropertyViolation, mutate

MAX_DATA = 1024 + 6          # what the flight's CommandReceiver gives its decoder
FILLER_BIT = 8 * CODEBLOCK_OCTETS - 1   # the codeblock's last bit: not covered by the code


def _noise(draw: Draw) -> bytes:
    return draw.bytes(draw.int(12)) if draw.chance(1, 3) else b""


class Harness:
    name = "cltu"

    def one_input(self, data: bytes) -> None:
        draw = Draw(data)
        sent = []               # (frame data as the decoder must give it, worst codeblock's error count)
        line = bytearray(_noise(draw))
        for _ in range(1 + draw.int(3)):
            length = 1 + draw.int(160) if not draw.chance(1, 16) else 1 + draw.int(MAX_DATA + 20)
            frame = draw.bytes(length)
            randomized = draw.bool()
            cltu = bytearray(encode_cltu(frame, randomized))
            worst = 0
            blocks = (len(cltu) - len(START_SEQUENCE) - 8) // CODEBLOCK_OCTETS
            for b in range(blocks if draw.chance(1, 3) else 0):
                errors = draw.choice((0, 0, 0, 1, 1, 2, 3))
                counted = set()
                for _ in range(errors):
                    bit = draw.int(8 * CODEBLOCK_OCTETS)
                    cltu[len(START_SEQUENCE) + b * CODEBLOCK_OCTETS + bit // 8] ^= 0x80 >> (bit % 8)
                    if bit != FILLER_BIT:
                        counted ^= {bit}
                worst = max(worst, len(counted))
            padded = (randomize(frame) if randomized else frame) + bytes([FILL]) * (-len(frame) % INFO_OCTETS)
            sent.append((padded, worst))
            line += cltu + _noise(draw)
        pristine = bytes(line)
        damaged = mutate(line, draw, 3) if draw.chance(1, 4) else 0
        decoder = CltuDecoder(MAX_DATA)
        results = []
        at = 0
        while at < len(line):
            n = 1 + draw.int(64) if not draw.chance(1, 4) else len(line)
            results += decoder.feed(bytes(line[at:at + n]))
            at += n
            self._check_counters(decoder)
        results += decoder.flush()
        self._check_counters(decoder)
        if decoder.buffered:
            raise PropertyViolation(f"{decoder.buffered} octets still held after flush")
        for result in results:
            if (result.data is None) == (result.rejection is None):
                raise PropertyViolation(f"a result with data {result.data!r} and rejection {result.rejection}")
            if result.data is not None and (len(result.data) % INFO_OCTETS or len(result.data) > MAX_DATA):
                raise PropertyViolation(f"{len(result.data)} octets delivered: not whole codeblocks within {MAX_DATA}")
        delivered = [r.data for r in results if r.data is not None]
        self._check_reference(pristine, damaged, sent, delivered)

    @staticmethod
    def _check_counters(decoder: CltuDecoder) -> None:
        c = decoder.counters
        if c.octets_read != c.octets_in_cltus + c.octets_skipped + decoder.buffered:
            raise PropertyViolation(f"octets read {c.octets_read} != in CLTUs {c.octets_in_cltus} + skipped "
                                    f"{c.octets_skipped} + buffered {decoder.buffered}")

    @staticmethod
    def _check_reference(pristine: bytes, damaged: int, sent, delivered) -> None:
        # A start sequence in the noise may begin a CLTU of its own that swallows the real one's start:
        # the reference holds only for lines where no start sequence sits outside a CLTU.
        if damaged or pristine.count(START_SEQUENCE) != len(sent):
            return
        if any(len(data) > MAX_DATA for data, _ in sent):
            return
        if any(worst > 2 for _, worst in sent):
            return
        expected = [data for data, worst in sent if worst <= 1]
        if delivered != expected:
            raise PropertyViolation(f"delivered {len(delivered)} CLTUs {[d[:8].hex() for d in delivered]}, the "
                                    f"reference {len(expected)} {[d[:8].hex() for d in expected]}")
