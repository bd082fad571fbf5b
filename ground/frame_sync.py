"""The frame synchroniser's bit-level primitives, checked here once, then run by
the kernel (flight.kernels.frame_sync) without the GIL.

Positions are bit offsets from the most significant bit of the buffer's
first octet, so a stream that slipped by any number of bits is as easy to
read as an aligned one. ``ground.frame_sync_ref`` is the plain twin.
"""
from __future__ import annotations

from flight.kernels import frame_sync as _kernel
from kestrel.link.coding import ASM_BITS as MARKER_BITS

_NO_SEQUENCE = b""


def _check_marker(marker: int) -> None:
    if not 0 <= marker <= 0xFFFFFFFF:
        raise ValueError(f"marker must be a 32-bit value, got {marker!r}")


def _check_bits(buf, bit: int, length_bits: int, what: str) -> None:
    available = 8 * len(buf)
    if bit < 0 or bit + length_bits > available:
        raise ValueError(f"{what} needs bits {bit}..{bit + length_bits} of a {available}-bit buffer")


def marker_distance(buf, bit: int, marker: int) -> int:
    """How many of the 32 bits at ``bit`` differ from ``marker`` (32 - that for an inverted one)."""
    _check_marker(marker)
    _check_bits(buf, bit, MARKER_BITS, "marker_distance")
    return _kernel.marker_distance(buf, bit, marker)


def search_marker(buf, start_bit: int, stop_bit: int, marker: int, max_errors: int,
                  allow_inverted: bool) -> tuple[int, bool]:
    """First bit position in [start_bit, stop_bit) where ``marker`` (or, with
    ``allow_inverted``, its complement) sits within ``max_errors`` bit errors.

    Returns (position, inverted); position is -1 when there is none. Positions
    whose 32 bits run past the buffer are not examined.
    """
    _check_marker(marker)
    if not 0 <= max_errors < 16:
        # 16 or more would let a marker and its complement match the same bits.
        raise ValueError(f"max_errors must be 0..15, got {max_errors}")
    if start_bit < 0:
        raise ValueError(f"start_bit must be >= 0, got {start_bit}")
    stop_bit = min(stop_bit, 8 * len(buf) - MARKER_BITS + 1)
    if start_bit >= stop_bit:
        return -1, False
    return _kernel.search_marker(buf, start_bit, stop_bit, marker, max_errors, allow_inverted)


def extract_into(buf, bit: int, out, invert: bool = False, sequence=None) -> None:
    """Fill ``out`` with the octets starting at bit ``bit`` of ``buf``, complemented
    when ``invert`` (a BPSK phase flip) and XORed with ``sequence`` (the
    pseudo-randomizer, as long as ``out``) when given."""
    length = len(out)
    if length == 0:
        raise ValueError("out must hold at least one octet")
    _check_bits(buf, bit, 8 * length, "extract_into")
    if sequence is None:
        sequence = _NO_SEQUENCE
    elif len(sequence) != length:
        raise ValueError(f"sequence must be {length} octets like out, got {len(sequence)}")
    _kernel.extract_into(buf, bit, out, invert, sequence)
