# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Bit-level hot loops of the ground frame synchroniser (CCSDS 131.0-B).

Positions are bit offsets from the first bit (MSB) of the buffer. The public
wrapper ``ground.frame_sync`` checks every range before calling in, which is
what makes the unchecked directives above safe; ``ground.frame_sync_ref`` is
the plain twin these loops are tested against.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t


cdef extern from *:
    """
    static inline int kestrel_popcount32(uint32_t x) { return __builtin_popcount(x); }
    """
    int kestrel_popcount32(uint32_t x) noexcept nogil


cdef inline uint64_t load40(const uint8_t* buf, Py_ssize_t nbytes, Py_ssize_t i) noexcept nogil:
    """Octets i..i+4 big-endian in the low 40 bits; octets past the end read as zero."""
    cdef uint64_t v = 0
    cdef Py_ssize_t k
    for k in range(5):
        v <<= 8
        if i + k < nbytes:
            v |= buf[i + k]
    return v


cdef inline uint32_t window32(const uint8_t* buf, Py_ssize_t nbytes, Py_ssize_t bit) noexcept nogil:
    cdef Py_ssize_t byte = bit >> 3
    cdef int shift = <int>(bit & 7)
    return <uint32_t>(load40(buf, nbytes, byte) >> (8 - shift))


def marker_distance(const uint8_t[::1] buf, Py_ssize_t bit, uint32_t marker):
    """Bits that differ between ``marker`` and the 32 bits at ``bit``."""
    return kestrel_popcount32(window32(&buf[0], buf.shape[0], bit) ^ marker)


def search_marker(const uint8_t[::1] buf, Py_ssize_t start_bit, Py_ssize_t stop_bit, uint32_t marker,
                  int max_errors, bint allow_inverted):
    """First bit position in [start_bit, stop_bit) whose 32 bits match ``marker`` within
    ``max_errors`` bit errors, or its complement when ``allow_inverted``.

    Returns (position, inverted), position -1 when none. The caller guarantees
    stop_bit + 31 <= 8 * len(buf).
    """
    cdef const uint8_t* data = &buf[0]
    cdef Py_ssize_t nbytes = buf.shape[0]
    cdef Py_ssize_t byte, bit, found = -1
    cdef int shift, d
    cdef bint inverted = False
    cdef uint64_t v
    if start_bit >= stop_bit:
        return -1, False
    with nogil:
        byte = start_bit >> 3
        while byte * 8 < stop_bit:
            v = load40(data, nbytes, byte)
            for shift in range(8):
                bit = byte * 8 + shift
                if bit < start_bit:
                    continue
                if bit >= stop_bit:
                    break
                d = kestrel_popcount32(<uint32_t>(v >> (8 - shift)) ^ marker)
                if d <= max_errors:
                    found = bit
                    break
                if allow_inverted and 32 - d <= max_errors:
                    found = bit
                    inverted = True
                    break
            if found >= 0:
                break
            byte += 1
    return found, inverted


def extract_into(const uint8_t[::1] buf, Py_ssize_t bit, uint8_t[::1] out, bint invert,
                 const uint8_t[::1] sequence):
    """Copy len(out) octets starting at ``bit`` into ``out``, complemented when
    ``invert``, XORed with ``sequence`` (empty: no randomizer, else len(out) octets).

    The caller guarantees the bits exist: bit + 8 * len(out) <= 8 * len(buf).
    """
    cdef const uint8_t* data = &buf[0]
    cdef uint8_t* target = &out[0]
    cdef Py_ssize_t n = out.shape[0]
    cdef Py_ssize_t first = bit >> 3
    cdef int shift = <int>(bit & 7)
    cdef Py_ssize_t k
    cdef uint8_t flip = 0xFF if invert else 0
    cdef bint randomized = sequence.shape[0] > 0
    cdef const uint8_t* seq = &sequence[0] if randomized else NULL
    with nogil:
        if shift == 0:
            for k in range(n):
                target[k] = data[first + k] ^ flip
        else:
            # bit + 8n <= 8 * len(buf) with shift > 0 puts octet first + n inside buf.
            for k in range(n):
                target[k] = <uint8_t>(((data[first + k] << shift) | (data[first + k + 1] >> (8 - shift))) ^ flip)
        if randomized:
            for k in range(n):
                target[k] ^= seq[k]
