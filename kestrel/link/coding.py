"""TM synchronization and channel coding, CCSDS 131.0-B: ASM, pseudo-randomizer, Reed-Solomon.

A CADU is the attached sync marker followed by the (randomized) transfer
frame and, with Reed-Solomon, its check symbols. The randomizer covers the
frame and the check symbols, never the marker.
"""
from __future__ import annotations

from typing import Final

import numpy as np

ASM: Final = bytes.fromhex("1ACFFC1D")
ASM_BITS: Final = 8 * len(ASM)
# Reed-Solomon (255,223) E=16 (131.0-B 4): the codec is kestrel.link.reed_solomon.
RS_DATA_SYMBOLS: Final = 223
RS_PARITY_SYMBOLS: Final = 32
RS_CORRECTABLE_SYMBOLS: Final = 16
RS_DEPTHS: Final = (1, 2, 3, 4, 5, 8)
RANDOMIZER_PERIOD_BITS: Final = 255


def pseudo_randomizer_sequence(length: int) -> np.ndarray:
    """The 131.0-B pseudo-random sequence, h(x) = x^8+x^7+x^5+x^3+1, from all ones.

    It repeats every 255 bits; we generate one period bit by bit and tile it.
    """
    bits = [1] * 8
    while len(bits) < RANDOMIZER_PERIOD_BITS + 8:
        n = len(bits) - 8
        bits.append(bits[n + 7] ^ bits[n + 5] ^ bits[n + 3] ^ bits[n])
    period = np.array(bits[:RANDOMIZER_PERIOD_BITS], dtype=np.uint8)
    reps = -(-length * 8 // RANDOMIZER_PERIOD_BITS)
    stream = np.tile(period, reps)[: length * 8]
    return np.packbits(stream)


class ChannelCoder:
    """Turns transfer frames into CADUs and back (flight builds, ground undoes)."""

    def __init__(self, frame_length: int, randomize: bool = True, reed_solomon=None):
        """`reed_solomon`: a codec with data_length, codeblock_length, encode(), decode(), or None."""
        if reed_solomon is not None and reed_solomon.data_length != frame_length:
            raise ValueError(f"Reed-Solomon codec carries {reed_solomon.data_length}-octet frames, "
                             f"the layout has {frame_length}")
        self.frame_length = frame_length
        self.reed_solomon = reed_solomon
        self.coded_length = reed_solomon.codeblock_length if reed_solomon else frame_length
        self.cadu_length = len(ASM) + self.coded_length
        self._sequence = pseudo_randomizer_sequence(self.coded_length) if randomize else None

    @property
    def randomizer_sequence(self) -> bytes | None:
        """The pseudo-random octets XORed over a coded frame; None without randomizer."""
        return None if self._sequence is None else self._sequence.tobytes()

    def derandomize(self, coded: bytes) -> bytes:
        if self._sequence is None:
            return bytes(coded)
        return (np.frombuffer(coded, np.uint8) ^ self._sequence).tobytes()

    def encode(self, frame: bytes) -> bytes:
        if len(frame) != self.frame_length:
            raise ValueError(f"frame must be {self.frame_length} octets, got {len(frame)}")
        coded = self.reed_solomon.encode(frame) if self.reed_solomon else frame
        # The randomizer is its own inverse.
        return ASM + self.derandomize(coded)
