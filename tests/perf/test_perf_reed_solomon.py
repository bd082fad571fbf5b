"""RS(255,223) decode and encode speed against libfec, measured in the same run.

Run: cd /work/main && . .venv/bin/activate && pytest tests/perf/test_perf_reed_solomon.py -m perf -s

Throughput counts frame (information) bits, 223 bytes per codeword, on one
core. Ours, two ways: the raw kernel (flight.kernels.reed_solomon, one call
per depth-8 codeblock of 2040 + 256 bytes, dual-basis conversion included,
GIL released, no checks) and the public API as a user calls it
(kestrel.link.reed_solomon.ReedSolomonCodec.encode/decode on bytes: checks,
a fresh bytes result, and for decode a DecodeResult). decode_into, the
ground's allocation-free path, is shown too.

libfec is called per codeword through ctypes on de-interleaved codewords
(it is spared the interleaving we do). Two libfec figures:
  MEASURED   the loop as called: ctypes call and, for decode, the copy of
             the received codeword that its in-place correction needs;
  ESTIMATED  MEASURED minus the same loop with an empty ctypes call in place
             of libfec: an estimate of the C library alone, not a measurement.
Each block is checked before anything is timed: our decode gives back the
frame with the expected corrections, libfec corrects the same codewords to
the same symbols, and its parity equals ours.
Times are CPU time of the calling thread (tests/perf/timing.py), medians over
alternated repeats, because the machine is shared.
"""
import ctypes
import ctypes.util

import numpy as np
import pytest

from kestrel.link.reed_solomon import ReedSolomonCodec
from tests.perf.timing import alternated_medians

pytestmark = pytest.mark.perf

REPEATS = 41
BLOCKS = 64
DEPTH = 8
DATA, PARITY = 223, 32


def load_libfec():
    for name in (ctypes.util.find_library("fec"), "libfec.so.0"):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                pass
    pytest.skip("libfec not installed (Debian package libfec0): no peer to compare with")


def mbit_per_s(frame_bytes: int, seconds: float) -> float:
    return frame_bytes * 8 / seconds / 1e6


def make_blocks(codec, errors, rng):
    """(frames, clean codeblocks, received codeblocks with `errors` symbol errors per codeword)."""
    frames, clean, received = [], [], []
    for _ in range(BLOCKS):
        frame = rng.integers(0, 256, codec.data_length, dtype=np.uint8).tobytes()
        block = np.frombuffer(codec.encode(frame), dtype=np.uint8)
        damaged = block.copy()
        for i in range(codec.depth):
            positions = rng.choice(255, errors, replace=False)
            damaged[positions * codec.depth + i] ^= rng.integers(1, 256, errors, dtype=np.uint8)
        frames.append(frame)
        clean.append(block.tobytes())
        received.append(damaged.tobytes())
    return frames, clean, received


def codewords(block: bytes) -> list[bytes]:
    """The DEPTH codewords of a codeblock, de-interleaved for libfec."""
    return [block[i::DEPTH] for i in range(DEPTH)]


def test_decode_speed_against_libfec():
    lib = load_libfec()
    decode_rs_ccsds = lib.decode_rs_ccsds
    decode_rs_ccsds.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    decode_rs_ccsds.restype = ctypes.c_int
    memmove = ctypes.memmove
    codec = ReedSolomonCodec(DEPTH)
    kernel = codec._kernel
    rng = np.random.default_rng(2024)
    out = bytearray(codec.data_length)
    counts = np.empty(DEPTH, dtype=np.int32)
    frame_bytes = BLOCKS * codec.data_length
    rows = []
    for errors in (0, 4, 8, 16):
        frames, clean, blocks = make_blocks(codec, errors, rng)
        received = [(ctypes.c_ubyte * 255).from_buffer_copy(c) for b in blocks for c in codewords(b)]
        work = (ctypes.c_ubyte * 255)()

        for frame, good, block in zip(frames, clean, blocks):
            result = codec.decode(block)
            assert result.data == frame and result.corrected == (errors,) * DEPTH
            kernel.decode_into(block, out, counts)
            assert bytes(out) == frame and counts.tolist() == [errors] * DEPTH
            for codeword, want in zip(codewords(block), codewords(good)):
                memmove(work, codeword, 255)
                assert decode_rs_ccsds(work, None, 0, 0) == errors and bytes(work) == want

        def ours_kernel():
            for block in blocks:
                kernel.decode_into(block, out, counts)

        def ours_api_bytes():
            for block in blocks:
                codec.decode(block)

        def ours_api_into():
            for block in blocks:
                codec.decode_into(block, out, counts)

        def libfec():
            for codeword in received:
                memmove(work, codeword, 255)  # libfec corrects in place: fresh copy each time
                decode_rs_ccsds(work, None, 0, 0)

        def libfec_call_overhead():
            for codeword in received:
                memmove(work, codeword, 255)
                memmove(work, None, 0)

        t_kernel, t_bytes, t_into, t_libfec, t_overhead = alternated_medians(
            ours_kernel, ours_api_bytes, ours_api_into, libfec, libfec_call_overhead, repeats=REPEATS)
        t_libfec_est = max(t_libfec - t_overhead, 1e-9)
        rows.append((errors, *(mbit_per_s(frame_bytes, t) for t in (t_kernel, t_bytes, t_into, t_libfec,
                                                                     t_libfec_est)),
                     t_libfec / t_bytes, t_libfec_est / t_kernel))
    print("\n\nRS(255,223) decode, depth 8, one core, Mbit/s of frame data (medians of %d)" % REPEATS)
    print("| errors/codeword | ours kernel | ours API decode(bytes) | ours API decode_into "
          "| libfec MEASURED (ctypes, as called) | libfec ESTIMATED (ctypes overhead subtracted) "
          "| API bytes / libfec MEASURED | kernel / libfec ESTIMATED |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| %d | %.0f | %.0f | %.0f | %.0f | %.0f | %.2fx | %.2fx |" % row)
    for errors, *_, ratio in rows:
        assert ratio > 1.0, f"kernel slower than the libfec estimate at {errors} errors per codeword"


def test_encode_speed_against_libfec():
    lib = load_libfec()
    encode_rs_ccsds = lib.encode_rs_ccsds
    encode_rs_ccsds.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    encode_rs_ccsds.restype = None
    memmove = ctypes.memmove
    codec = ReedSolomonCodec(DEPTH)
    kernel = codec._kernel
    rng = np.random.default_rng(7)
    frames = [rng.integers(0, 256, codec.data_length, dtype=np.uint8).tobytes() for _ in range(BLOCKS)]
    pieces = [(ctypes.c_ubyte * DATA).from_buffer_copy(c) for f in frames for c in codewords(f)]
    parity = (ctypes.c_ubyte * PARITY)()
    out = bytearray(codec.codeblock_length)
    frame_bytes = BLOCKS * codec.data_length

    for k, frame in enumerate(frames):
        block = codec.encode(frame)
        kernel.encode_into(frame, out)
        assert bytes(out) == block and block[:codec.data_length] == frame
        result = codec.decode(block)
        assert result.data == frame and result.corrected == (0,) * DEPTH
        ours = codewords(block[codec.data_length:])
        for i in range(DEPTH):
            encode_rs_ccsds(pieces[k * DEPTH + i], parity, 0)
            assert bytes(parity) == ours[i]

    def ours_kernel():
        for frame in frames:
            kernel.encode_into(frame, out)

    def ours_api_bytes():
        for frame in frames:
            codec.encode(frame)

    def libfec():
        for piece in pieces:
            encode_rs_ccsds(piece, parity, 0)

    def libfec_call_overhead():
        for piece in pieces:
            memmove(parity, piece, 0)

    t_kernel, t_bytes, t_libfec, t_overhead = alternated_medians(ours_kernel, ours_api_bytes, libfec,
                                                                 libfec_call_overhead, repeats=REPEATS)
    t_libfec_est = max(t_libfec - t_overhead, 1e-9)
    print("\n\nRS(255,223) encode, depth 8, one core, Mbit/s of frame data (medians of %d)" % REPEATS)
    print("| ours kernel | ours API encode(bytes) | libfec MEASURED (ctypes, as called) "
          "| libfec ESTIMATED (ctypes overhead subtracted) | API bytes / libfec MEASURED "
          "| kernel / libfec ESTIMATED |")
    print("|---:|---:|---:|---:|---:|---:|")
    print("| %.0f | %.0f | %.0f | %.0f | %.2fx | %.2fx |" % (
        *(mbit_per_s(frame_bytes, t) for t in (t_kernel, t_bytes, t_libfec, t_libfec_est)),
        t_libfec / t_bytes, t_libfec_est / t_kernel))
    assert t_kernel < t_libfec_est
    assert mbit_per_s(frame_bytes, t_bytes) > 50  # flight needs >= 50 Mbit/s of CADUs, through the API
