"""What the four harnesses share: choices read from the fuzzer's bytes, and mutations of a valid input."""
from __future__ import annotations


class PropertyViolation(AssertionError):
    """The parser gave a wrong value, or let a wrong kind of refusal out: a defect, not a rejection."""


class Draw:
    """Choices taken from the fuzzer's bytes front to back; once they run out every choice is 0.

    So any byte string is a valid script, and a fuzzer that changes one byte changes one choice:
    coverage-guided mutation then steers the structure, not only the octets.
    """

    def __init__(self, data: bytes):
        self._data = data
        self._at = 0

    @property
    def exhausted(self) -> bool:
        return self._at >= len(self._data)

    def int(self, bound: int) -> int:
        """0..bound-1 (bound >= 1), from as few octets as the bound needs."""
        if bound <= 1:
            return 0
        octets = (bound - 1).bit_length() + 7 >> 3
        raw = self._data[self._at:self._at + octets]
        self._at += octets
        return int.from_bytes(raw, "big") % bound

    def bool(self) -> bool:
        return bool(self.int(2))

    def chance(self, numerator: int, denominator: int) -> bool:
        return self.int(denominator) < numerator

    def bytes(self, n: int) -> bytes:
        raw = self._data[self._at:self._at + n]
        self._at += n
        return raw + bytes(n - len(raw))

    def choice(self, options):
        return options[self.int(len(options))]


def mutate(buf: bytearray, draw: Draw, at_most: int = 4) -> int:
    """Apply 0..at_most mutations chosen by `draw` to `buf` in place; the number applied."""
    count = draw.int(at_most + 1)
    for _ in range(count):
        kind = draw.int(7)
        n = len(buf)
        at = draw.int(n + 1)
        if kind == 0 and n:                          # one bit flipped
            at = min(at, n - 1)
            buf[at] ^= 1 << draw.int(8)
        elif kind == 1 and n:                        # one octet replaced
            buf[min(at, n - 1)] = draw.int(256)
        elif kind == 2:                              # octets inserted
            buf[at:at] = draw.bytes(1 + draw.int(8))
        elif kind == 3 and n:                        # octets deleted
            del buf[at:at + 1 + draw.int(8)]
        elif kind == 4:                              # cut short
            del buf[at:]
        elif kind == 5 and n:                        # a run of the input repeated
            length = 1 + draw.int(16)
            buf[at:at] = buf[at:at + length]
        elif kind == 6 and n:                        # an interesting value written over
            value = draw.choice((b"\x00", b"\xff", b"\x7f", b"\x80", b"\x00\x00", b"\xff\xff", b"\x03\xff"))
            buf[at:at + len(value)] = value
    return count

