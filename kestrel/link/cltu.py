"""Communications Link Transmission Units, CCSDS 231.0-B: the TC synchronization and channel coding layer.

A CLTU is the start sequence EB90, one or more BCH(63,56) codeblocks and the
tail sequence C5C5C5C5C5C5C579. A codeblock is 7 information octets and one
octet holding the complements of the 7 parity bits of the modified BCH code
(g(x) = x^7 + x^6 + x^2 + 1) followed by a filler bit 0. The last
codeblock's information is padded with 0x55 fill. The optional TC randomizer
(h(x) = x^8 + x^6 + x^4 + x^3 + x^2 + x + 1, from all ones) is XORed over
the transfer frame before it is coded, so the fill stays clear.

g(x) = (x + 1)(x^6 + x + 1): the code has minimum distance 4, so a decoder
corrects any single bit error in a codeblock and detects any double one
(231.0-B's SEC mode). The filler bit is not covered by the code and is
ignored. The tail is an uncorrectable codeblock; so is the tail with one
bit in error. A decoder ends the CLTU on an uncorrectable codeblock within
`TAIL_TOLERANCE` bits of the tail. Any other uncorrectable codeblock
abandons the CLTU: nothing decoded from it is delivered (231.0-B would hand
over what came before it and let the frame checks catch it; we give the
frame layer no partial frames at all). LDPC codes (231.0-B section 4) are
not implemented.

`CltuDecoder` takes the receive direction of a serial line in pieces of any
size and hands over the data of each whole CLTU, with counters for which
octets_read == octets_in_cltus + octets_skipped + buffered always holds.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

START_SEQUENCE: Final = b"\xEB\x90"
TAIL_SEQUENCE: Final = bytes.fromhex("C5C5C5C5C5C5C579")
FILL: Final = 0x55
INFO_OCTETS: Final = 7
CODEBLOCK_OCTETS: Final = 8
# g(x) = x^7 + x^6 + x^2 + 1, without its x^7 term: what the parity register XORs in.
_G_LOW: Final = 0b1000101
_G: Final = 0b11000101
# An uncorrectable codeblock this close to the tail ends the CLTU; farther, it abandons it.
TAIL_TOLERANCE: Final = 2
RANDOMIZER_PERIOD: Final = 255


def _parity_register_table() -> tuple[int, ...]:
    """The 7-bit parity register after shifting in one octet, for every (register, octet) pair as r << 8 | o."""
    table = []
    for register in range(128):
        for octet in range(256):
            r = register
            for bit in range(7, -1, -1):
                feedback = ((r >> 6) & 1) ^ ((octet >> bit) & 1)
                r = (r << 1) & 0x7F
                if feedback:
                    r ^= _G_LOW
            table.append(r)
    return tuple(table)


_REGISTER = _parity_register_table()


def bch_remainder(info) -> int:
    """info(x) * x^7 mod g(x) over 7 information octets: the parity bits, uncomplemented."""
    r = 0
    for octet in info:
        r = _REGISTER[(r << 8) | octet]
    return r


def parity_octet(info) -> int:
    """The codeblock's last octet: complemented parity bits, then the filler bit 0."""
    return ((~bch_remainder(info)) & 0x7F) << 1


def _single_error_syndromes() -> dict[int, int]:
    """Syndrome -> the bit (0 = first information bit .. 62 = last parity bit) whose error gives it."""
    syndromes = {}
    for position in range(63):
        # x^(62 - position) mod g(x)
        value = 1 << (62 - position)
        for degree in range(62, 6, -1):
            if value >> degree & 1:
                value ^= _G << (degree - 7)
        syndromes[value] = position
    return syndromes


_SYNDROMES: Final = _single_error_syndromes()
assert len(_SYNDROMES) == 63, "x^i mod g(x) must be distinct for a single error to be located"


class Codeblock(enum.IntEnum):
    CLEAN = 0
    CORRECTED = 1
    UNCORRECTABLE = 2


def decode_codeblock(block) -> tuple[bytes, Codeblock]:
    """The 7 information octets of an 8-octet codeblock, a single bit error corrected.

    UNCORRECTABLE (two or more bits in error, or the tail): the octets returned are the received ones.
    """
    info = bytes(block[:INFO_OCTETS])
    syndrome = bch_remainder(info) ^ ((~(block[INFO_OCTETS] >> 1)) & 0x7F)
    if not syndrome:
        return info, Codeblock.CLEAN
    position = _SYNDROMES.get(syndrome)
    if position is None:
        return info, Codeblock.UNCORRECTABLE
    if position < 8 * INFO_OCTETS:      # an error among the parity bits leaves the information as it came
        fixed = bytearray(info)
        fixed[position >> 3] ^= 0x80 >> (position & 7)
        info = bytes(fixed)
    return info, Codeblock.CORRECTED


def _randomizer_period() -> bytes:
    """255 octets: eight periods of the 255-bit sequence, so that it repeats on an octet boundary."""
    bits = [1] * 8
    while len(bits) < RANDOMIZER_PERIOD:
        n = len(bits) - 8
        bits.append(bits[n + 6] ^ bits[n + 4] ^ bits[n + 3] ^ bits[n + 2] ^ bits[n + 1] ^ bits[n])
    out = bytearray(RANDOMIZER_PERIOD)
    for i in range(8 * RANDOMIZER_PERIOD):
        if bits[i % RANDOMIZER_PERIOD]:
            out[i >> 3] |= 0x80 >> (i & 7)
    return bytes(out)


_RANDOMIZER_OCTETS: Final = _randomizer_period()


def randomizer_sequence(length: int) -> bytes:
    """The 231.0-B TC pseudo-random sequence: h(x) = x^8+x^6+x^4+x^3+x^2+x+1 from all ones, 255-bit period."""
    return (_RANDOMIZER_OCTETS * (length // RANDOMIZER_PERIOD + 1))[:length]


def randomize(data) -> bytes:
    """XOR with the TC pseudo-random sequence from its start (its own inverse)."""
    n = len(data)
    return (int.from_bytes(data, "big") ^ int.from_bytes(randomizer_sequence(n), "big")).to_bytes(n, "big")


def encode_cltu(frame, randomized: bool = False) -> bytes:
    """One transfer frame as a CLTU (randomized first when the link randomizes)."""
    if not frame:
        raise ValueError("a CLTU carries at least one octet")
    data = randomize(frame) if randomized else bytes(frame)
    data += bytes([FILL]) * (-len(data) % INFO_OCTETS)
    out = bytearray(START_SEQUENCE)
    for at in range(0, len(data), INFO_OCTETS):
        info = data[at:at + INFO_OCTETS]
        out += info
        out.append(parity_octet(info))
    out += TAIL_SEQUENCE
    return bytes(out)


# --- the receive direction ------------------------------------------------------------------------

class CltuRejection(str, enum.Enum):
    """Why a started CLTU delivered nothing."""

    UNCORRECTABLE = "bch_uncorrectable"   # a codeblock with 2+ errors that is not the tail
    TOO_LONG = "cltu_too_long"            # more codeblocks than the longest frame needs
    UNTERMINATED = "cltu_unterminated"    # the line went quiet before the tail


@dataclass
class CltuCounters:
    """octets_read == octets_in_cltus + octets_skipped + CltuDecoder.buffered, always."""

    octets_read: int = 0
    octets_in_cltus: int = 0       # start sequence, codeblocks and tail of CLTUs delivered
    octets_skipped: int = 0        # between CLTUs, and CLTUs abandoned
    cltus: int = 0
    codeblocks: int = 0
    bits_corrected: int = 0
    rejected: int = 0


@dataclass(frozen=True)
class CltuResult:
    """A CLTU's data (None when it was abandoned, with the reason)."""

    data: bytes | None
    rejection: CltuRejection | None = None
    corrected: int = 0


class CltuDecoder:
    """Whole CLTUs out of a byte stream in pieces of any size.

    `max_data` bounds the data of one CLTU (the longest frame plus its fill): a start
    sequence in noise never makes the decoder hold more than that.
    """

    def __init__(self, max_data: int = 1024 + INFO_OCTETS):
        if max_data < INFO_OCTETS:
            raise ValueError(f"max_data must be at least {INFO_OCTETS}, got {max_data}")
        self.max_data = max_data
        self.counters = CltuCounters()
        self._buffer = bytearray()
        self._in_cltu = False
        self._data = bytearray()
        self._cltu_octets = 0          # octets of the current CLTU consumed from the buffer
        self._corrected = 0

    @property
    def buffered(self) -> int:
        """Octets read and not yet counted: the buffer and the CLTU being decoded."""
        return len(self._buffer) + self._cltu_octets

    def feed(self, chunk) -> list[CltuResult]:
        self.counters.octets_read += len(chunk)
        self._buffer += chunk
        results: list[CltuResult] = []
        self._scan(results)
        return results

    def flush(self) -> list[CltuResult]:
        """The line is quiet: a CLTU without its tail is abandoned; what is held is skipped."""
        results: list[CltuResult] = []
        if self._in_cltu:
            results.append(self._abandon(CltuRejection.UNTERMINATED))
        self.counters.octets_skipped += len(self._buffer)
        self._buffer.clear()
        return results

    def _abandon(self, why: CltuRejection) -> CltuResult:
        c = self.counters
        c.rejected += 1
        c.octets_skipped += self._cltu_octets
        self._reset()
        return CltuResult(None, why)

    def _reset(self) -> None:
        self._in_cltu = False
        self._data = bytearray()
        self._cltu_octets = 0
        self._corrected = 0

    def _scan(self, results: list[CltuResult]) -> None:
        buf, c = self._buffer, self.counters
        at = 0
        while True:
            if not self._in_cltu:
                found = buf.find(START_SEQUENCE, at)
                if found < 0:
                    # Keep a last 0xEB: it may be the first half of a start sequence.
                    end = len(buf) - (1 if len(buf) > at and buf[-1] == START_SEQUENCE[0] else 0)
                    c.octets_skipped += end - at
                    del buf[:end]
                    return
                c.octets_skipped += found - at
                at = found + len(START_SEQUENCE)
                self._in_cltu = True
                self._cltu_octets = len(START_SEQUENCE)
                continue
            if len(buf) - at < CODEBLOCK_OCTETS:
                del buf[:at]
                return
            block = buf[at:at + CODEBLOCK_OCTETS]
            info, status = decode_codeblock(block)
            if status == Codeblock.UNCORRECTABLE:
                distance = (int.from_bytes(block, "big") ^ int.from_bytes(TAIL_SEQUENCE, "big")).bit_count()
                if distance <= TAIL_TOLERANCE and self._data:
                    at += CODEBLOCK_OCTETS
                    c.octets_in_cltus += self._cltu_octets + CODEBLOCK_OCTETS
                    c.cltus += 1
                    results.append(CltuResult(bytes(self._data), None, self._corrected))
                    self._reset()
                else:
                    # The search starts again at this codeblock: a new start sequence may begin in it.
                    results.append(self._abandon(CltuRejection.UNCORRECTABLE))
                continue
            c.codeblocks += 1
            if status == Codeblock.CORRECTED:
                c.bits_corrected += 1
                self._corrected += 1
            at += CODEBLOCK_OCTETS
            self._cltu_octets += CODEBLOCK_OCTETS
            self._data += info
            if len(self._data) > self.max_data:
                results.append(self._abandon(CltuRejection.TOO_LONG))
