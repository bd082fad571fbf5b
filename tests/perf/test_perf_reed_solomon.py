"""RS(255,223) decode and encode speed against libfec, measured in the same run.

Run: cd /work/main && /work/venv/bin/python -m pytest tests/perf/test_perf_reed_solomon.py -m perf -s

Throughput counts frame (information) bits, 223 - fill bytes per codeword,
for both sides, on one core. Ours: one kernel call per whole codeblock
(depth 8, 2040 bytes, dual-basis conversion included), GIL released.
libfec is called per codeword through ctypes; the same loop with an empty
ctypes call in place of the decoder is timed too, and subtracted, so the
"libfec C" column estimates the library itself and the ratio is the strict one.
Times are medians over repeats because the machine is shared.
"""
import ctypes
import ctypes.util
import time

import numpy as np
import pytest

from kestrel.link.reed_solomon import ReedSolomonCodec

pytestmark = pytest.mark.perf

REPEATS = 15
BLOCKS = 64
DEPTH = 8


def load_libfec():
    for name in (ctypes.util.find_library("fec"), "libfec.so.0"):
        if name:
            try:
                return ctypes.CDLL(name)
            except OSError:
                pass
    pytest.skip("libfec not installed (Debian package libfec0): no peer to compare with")


def median_seconds(*runs) -> list[float]:
    """Median time of each run; rounds alternate the runs so load spikes hit all alike."""
    for run in runs:
        run()  # warm caches and tables
    times = [[] for _ in runs]
    for _ in range(REPEATS):
        for run, series in zip(runs, times):
            start = time.perf_counter()
            run()
            series.append(time.perf_counter() - start)
    return [float(np.median(series)) for series in times]


def mbit_per_s(frame_bytes: int, seconds: float) -> float:
    return frame_bytes * 8 / seconds / 1e6


def make_blocks(codec, errors, rng):
    blocks = []
    for _ in range(BLOCKS):
        frame = rng.integers(0, 256, codec.data_length, dtype=np.uint8).tobytes()
        block = np.frombuffer(codec.encode(frame), dtype=np.uint8).copy()
        for i in range(codec.depth):
            positions = rng.choice(255, errors, replace=False)
            block[positions * codec.depth + i] ^= rng.integers(1, 256, errors, dtype=np.uint8)
        blocks.append(block.tobytes())
    return blocks


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
        blocks = make_blocks(codec, errors, rng)
        codewords = [(ctypes.c_ubyte * 255).from_buffer_copy(b[i::DEPTH]) for b in blocks for i in range(DEPTH)]
        work = (ctypes.c_ubyte * 255)()

        def ours_kernel():
            for block in blocks:
                kernel.decode_into(block, out, counts)

        def ours_api():
            for block in blocks:
                codec.decode_into(block, out, counts)

        def libfec():
            for codeword in codewords:
                memmove(work, codeword, 255)  # libfec corrects in place: fresh copy each time
                decode_rs_ccsds(work, None, 0, 0)

        def libfec_call_overhead():
            for codeword in codewords:
                memmove(work, codeword, 255)
                memmove(work, None, 0)

        codec.decode_into(blocks[0], out, counts)
        assert counts.tolist() == [errors] * DEPTH
        t_kernel, t_api, t_libfec, t_overhead = median_seconds(ours_kernel, ours_api, libfec, libfec_call_overhead)
        t_libfec_c = max(t_libfec - t_overhead, 1e-9)
        rows.append((errors, mbit_per_s(frame_bytes, t_kernel), mbit_per_s(frame_bytes, t_api),
                     mbit_per_s(frame_bytes, t_libfec), mbit_per_s(frame_bytes, t_libfec_c),
                     t_libfec_c / t_kernel))
    print("\n\nRS(255,223) decode, depth 8 codeblock per call, single core, Mbit/s of frame data (medians)")
    print("| errors/codeword | ours kernel | ours API | libfec via ctypes | libfec C (est.) | ratio kernel / libfec C |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print("| %d | %.0f | %.0f | %.0f | %.0f | %.2fx |" % row)
    for errors, *_, ratio in rows:
        assert ratio > 1.0, f"slower than libfec at {errors} errors per codeword"


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
    # libfec takes contiguous codewords: it is spared the interleaving we do.
    pieces = [(ctypes.c_ubyte * 223).from_buffer_copy(f[i * 223:(i + 1) * 223]) for f in frames for i in range(DEPTH)]
    parity = (ctypes.c_ubyte * 32)()
    out = bytearray(codec.codeblock_length)
    frame_bytes = BLOCKS * codec.data_length

    def ours_kernel():
        for frame in frames:
            kernel.encode_into(frame, out)

    def ours_api():
        for frame in frames:
            codec.encode_into(frame, out)

    def libfec():
        for piece in pieces:
            encode_rs_ccsds(piece, parity, 0)

    def libfec_call_overhead():
        for piece in pieces:
            memmove(parity, piece, 0)

    t_kernel, t_api, t_libfec, t_overhead = median_seconds(ours_kernel, ours_api, libfec, libfec_call_overhead)
    t_libfec_c = max(t_libfec - t_overhead, 1e-9)
    print("\n\nRS(255,223) encode, depth 8 codeblock per call, single core, Mbit/s of frame data (medians)")
    print("| ours kernel | ours API | libfec via ctypes | libfec C (est.) | ratio kernel / libfec C |")
    print("|---:|---:|---:|---:|---:|")
    print("| %.0f | %.0f | %.0f | %.0f | %.2fx |" % (
        mbit_per_s(frame_bytes, t_kernel), mbit_per_s(frame_bytes, t_api), mbit_per_s(frame_bytes, t_libfec),
        mbit_per_s(frame_bytes, t_libfec_c), t_libfec_c / t_kernel))
    assert t_kernel < t_libfec_c
    assert mbit_per_s(frame_bytes, t_kernel) > 50  # flight needs >= 50 Mbit/s of CADUs
