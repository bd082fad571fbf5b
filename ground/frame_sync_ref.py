"""Plain numpy twin of the frame-sync kernel (flight.kernels.frame_sync).

Slow and obvious on purpose: bits are unpacked one per octet and compared
whole, so a test can hold the kernel to it.
"""
from __future__ import annotations

import numpy as np

from kestrel.link.coding import ASM_BITS as MARKER_BITS


def _bits(buf) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes(buf), dtype=np.uint8))


def _marker_bits(marker: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(marker.to_bytes(4, "big"), dtype=np.uint8))


def marker_distance(buf, bit: int, marker: int) -> int:
    window = _bits(buf)[bit:bit + MARKER_BITS]
    return int(np.count_nonzero(window != _marker_bits(marker)))


def search_marker(buf, start_bit: int, stop_bit: int, marker: int, max_errors: int,
                  allow_inverted: bool) -> tuple[int, bool]:
    bits = _bits(buf)
    want = _marker_bits(marker)
    for position in range(start_bit, stop_bit):
        distance = int(np.count_nonzero(bits[position:position + MARKER_BITS] != want))
        if distance <= max_errors:
            return position, False
        if allow_inverted and MARKER_BITS - distance <= max_errors:
            return position, True
    return -1, False


def extract(buf, bit: int, length: int, invert: bool, sequence) -> bytes:
    bits = _bits(buf)[bit:bit + 8 * length]
    if invert:
        bits = 1 - bits
    out = np.packbits(bits)
    if sequence is not None:
        out ^= np.frombuffer(bytes(sequence), dtype=np.uint8)
    return out.tobytes()
