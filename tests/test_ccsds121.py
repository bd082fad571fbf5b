"""CCSDS 121.0-B-3 kernel against its plain-Python twin, round trips and bad input.

Reference: kestrel.codecs.ccsds121_ref (exhaustive option costing, bits as
strings). The standard's own vectors are in test_ccsds121_conformance.py,
libaec interop in test_ccsds121_libaec.py.
"""
import ctypes
import mmap
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from kestrel.codecs import ccsds121
from kestrel.codecs.ccsds121 import CompressedDataError, decode, encode
from kestrel.codecs.ccsds121_ref import decode_ref, encode_ref

MODES = ("constant", "walk", "noise", "sparse", "extremes", "steps", "texture")


def make_samples(mode: str, count: int, bits: int, signed: bool, seed: int) -> np.ndarray:
    """Deterministic samples that reach every code option: zero runs (constant,
    sparse, steps), second extension and small k (walk), large k and no
    compression (noise), the mapping's range edges (extremes), and k jumping
    between neighbouring blocks with spikes that overflow a packed store of
    fundamental sequences (texture)."""
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if mode == "constant":
        x = np.full(count, rng.integers(lo, hi, endpoint=True))
    elif mode == "walk":
        x = rng.integers(lo, hi, endpoint=True) + np.cumsum(rng.integers(-2, 3, count))
    elif mode == "noise":
        x = rng.integers(lo, hi, count, endpoint=True)
    elif mode == "sparse":
        x = np.full(count, rng.integers(lo, hi, endpoint=True))
        hits = rng.random(count) < 0.02
        x[hits] = rng.integers(lo, hi, int(hits.sum()), endpoint=True)
    elif mode == "extremes":
        x = rng.choice(np.array([lo, lo + 1, hi - 1, hi, (lo + hi) // 2]), count)
    elif mode == "texture":
        scale = np.repeat(2.0 ** rng.integers(0, bits, max(1, count // 24) + 1), 24)[:count]
        x = (lo + hi) // 2 + np.cumsum(rng.normal(0, 1, count) * scale).astype(np.int64) // 4
        spikes = rng.random(count) < 0.01
        x[spikes] = rng.integers(lo, hi, int(spikes.sum()), endpoint=True)
    else:
        x = np.repeat(rng.integers(lo, hi, max(1, count // 40) + 1, endpoint=True), 40)[:count]
    return np.clip(x, lo, hi).astype(ccsds121.output_dtype_for(bits, signed))


@st.composite
def cases(draw, max_count=260):
    bits = draw(st.integers(1, 32))
    signed = draw(st.booleans())
    options = dict(
        bits=bits,
        block_size=draw(st.sampled_from(ccsds121.BLOCK_SIZES)),
        rsi=draw(st.sampled_from([1, 2, 3, 5, 64, 4096])),
        preprocess=draw(st.booleans()),
        restricted=bits <= 4 and draw(st.booleans()),
        signed=signed,
        pad_rsi=draw(st.booleans()),
    )
    samples = make_samples(draw(st.sampled_from(MODES)), draw(st.integers(0, max_count)), bits, signed,
                           draw(st.integers(0, 2**32 - 1)))
    return samples, options


@settings(max_examples=150, deadline=None)
@given(cases())
def test_kernel_encoder_equals_reference(case):
    samples, options = case
    assert encode(samples, **options) == encode_ref(samples, **options)


@settings(max_examples=150, deadline=None)
@given(cases())
def test_kernel_decoder_equals_reference_and_round_trips(case):
    samples, options = case
    stream = encode_ref(samples, **options)
    ours = decode(stream, samples.size, **options)
    ref = decode_ref(stream, samples.size, **options)
    np.testing.assert_array_equal(ours, samples, strict=True)
    np.testing.assert_array_equal(ref, samples, strict=True)


@settings(max_examples=60, deadline=None)
@given(cases(max_count=2000))
def test_round_trip_longer_streams(case):
    samples, options = case
    np.testing.assert_array_equal(decode(encode(samples, **options), samples.size, **options), samples,
                                  strict=True)


def test_known_stream_of_one_zero_run():
    # 32 equal 8-bit samples, J=16, one interval: ID 000, flag 0, ref 0x2A,
    # FS(1) for two zero blocks (ref block included) -> 0000 0001 0101 0010 + pad.
    stream = encode(np.full(32, 42, np.uint8), 8, block_size=16, rsi=2)
    assert stream == bytes([0b00000010, 0b10100100])
    np.testing.assert_array_equal(decode(stream, 32, 8, block_size=16, rsi=2), np.full(32, 42, np.uint8))


def test_remainder_of_segment_code_for_long_zero_run():
    samples = np.full(70 * 16, 5, np.uint16)
    # The 64 blocks of the first segment are zero after the reference: one
    # ROS code (0000 0, ref 000000000101, 00001); the last 6 blocks end the
    # interval: another ROS (0000 0 00001).
    stream = encode(samples, 12, block_size=16, rsi=70)
    assert stream == encode_ref(samples, 12, block_size=16, rsi=70)
    assert stream == int("0000" "0" "000000000101" "00001" "0000" "0" "00001", 2).to_bytes(4, "big")
    np.testing.assert_array_equal(decode(stream, samples.size, 12, block_size=16, rsi=70), samples)


def test_output_dtype_follows_width_and_sign():
    for bits, signed, dtype in [(8, False, np.uint8), (9, False, np.uint16), (17, True, np.int32),
                                (3, True, np.int8), (16, True, np.int16), (32, False, np.uint32)]:
        assert decode(encode(np.zeros(5, np.int64), bits, signed=signed), 5, bits, signed=signed).dtype == dtype


def test_accepts_any_integer_container_and_byte_order():
    values = np.arange(300) * 37 % 4096
    reference = encode(values.astype(np.uint16), 12)
    for dtype in (np.int64, np.uint32, ">u2", ">i4", np.int16):
        assert encode(values.astype(dtype), 12) == reference
    assert encode(values.reshape(15, 20).astype(np.uint16), 12) == reference


@pytest.mark.parametrize("kwargs, message", [
    (dict(bits=0), "bits"), (dict(bits=33), "bits"), (dict(bits=12, block_size=12), "block_size"),
    (dict(bits=12, rsi=0), "rsi"), (dict(bits=12, rsi=4097), "rsi"),
    (dict(bits=5, restricted=True), "restricted"),
])
def test_bad_parameters_are_rejected(kwargs, message):
    with pytest.raises(ValueError, match=message):
        encode(np.zeros(16, np.uint16), **kwargs)
    with pytest.raises(ValueError, match=message):
        decode(b"\x00" * 8, 16, **kwargs)


@pytest.mark.parametrize("samples, bits, signed", [
    (np.array([0, 4096], np.uint16), 12, False), (np.array([-1, 0]), 12, False),
    (np.array([2048], np.int16), 12, True), (np.array([-2049], np.int32), 12, True),
    (np.array([1 << 32], np.uint64), 32, False), (np.array([0.5]), 8, False),
])
def test_samples_out_of_range_are_rejected(samples, bits, signed):
    with pytest.raises(ValueError, match="samples"):
        encode(samples, bits, signed=signed)


def test_bad_count_is_rejected():
    with pytest.raises(ValueError, match="count"):
        decode(b"\x00", -1, 8)


def test_truncated_streams_raise_compressed_data_error():
    rng = np.random.default_rng(3)
    samples = rng.integers(0, 1 << 14, 4000).astype(np.uint16)
    stream = encode(samples, 14, block_size=32, rsi=16)
    for cut in list(range(0, 64)) + list(range(64, len(stream), 97)):
        with pytest.raises(CompressedDataError, match="truncated"):
            decode(stream[:cut], samples.size, 14, block_size=32, rsi=16)
        with pytest.raises(CompressedDataError):
            decode_ref(stream[:cut], samples.size, 14, block_size=32, rsi=16)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.integers(1, 32), st.sampled_from(ccsds121.BLOCK_SIZES),
       st.integers(1, 3000), st.booleans(), st.booleans())
def test_garbage_gives_samples_or_compressed_data_error(garbage, bits, block_size, count, preprocess, pad):
    options = dict(block_size=block_size, rsi=3, preprocess=preprocess, pad_rsi=pad)
    try:
        out = decode(garbage, count, bits, **options)
    except CompressedDataError:
        return
    assert out.shape == (count,)
    assert int(out.max()) < (1 << bits)


def test_long_zero_prefix_garbage_is_bounded():
    # A fundamental sequence of 8 million zeros must end in an error, not a hang or a wild read.
    with pytest.raises(CompressedDataError, match="truncated"):
        decode(bytes(1 << 20), 10, 16, preprocess=False)
    with pytest.raises(CompressedDataError):
        decode(b"\x1f" + bytes(1 << 20), 100, 8)


def test_empty_input_gives_empty_stream():
    assert encode(np.zeros(0, np.uint8), 8) == b""
    assert decode(b"", 0, 8).size == 0


# The kernel has a fast path for n <= 26 bits and a general one; these draw
# long enough streams at every block size to cross interval and segment
# boundaries, so every packed-store width and fallback of the fast path meets
# the reference.
@settings(max_examples=80, deadline=None)
@given(st.integers(3, 26), st.sampled_from(ccsds121.BLOCK_SIZES), st.sampled_from([1, 2, 5, 64, 128]),
       st.sampled_from(["texture", "walk", "noise", "sparse"]), st.integers(200, 3000), st.booleans(),
       st.booleans(), st.integers(0, 2**32 - 1))
def test_fast_path_equals_reference_on_long_streams(bits, block_size, rsi, mode, count, signed, preprocess,
                                                    seed):
    samples = make_samples(mode, count, bits, signed, seed)
    options = dict(block_size=block_size, rsi=rsi, signed=signed, preprocess=preprocess)
    stream = encode(samples, bits, **options)
    assert stream == encode_ref(samples, bits, **options)
    np.testing.assert_array_equal(decode(stream, count, bits, **options), samples, strict=True)


def test_encode_into_caller_buffer_matches_bytes_and_reuses_it():
    rng = np.random.default_rng(11)
    first = rng.integers(0, 1 << 14, 5000).astype(np.uint16)
    second = np.full(5000, 77, np.uint16)
    size = ccsds121.max_encoded_size(5000, 14, block_size=32, rsi=64)
    buffer = bytearray(size)
    view = encode(first, 14, block_size=32, rsi=64, out=buffer)
    assert isinstance(view, memoryview) and bytes(view) == encode(first, 14, block_size=32, rsi=64)
    assert view.obj is buffer
    view = encode(second, 14, block_size=32, rsi=64, out=buffer)
    assert bytes(view) == encode(second, 14, block_size=32, rsi=64) and len(view) < 100
    array_out = np.zeros(size, np.uint8)
    assert bytes(encode(first, 14, block_size=32, rsi=64, out=array_out)) == bytes(encode(
        first, 14, block_size=32, rsi=64))


def test_encode_into_rejects_small_read_only_or_strided_buffers():
    samples = np.arange(1000, dtype=np.uint16)
    size = ccsds121.max_encoded_size(1000, 12)
    with pytest.raises(ValueError, match=f"out holds {size - 1} bytes.*{size}"):
        encode(samples, 12, out=bytearray(size - 1))
    with pytest.raises(ValueError, match="writable"):
        encode(samples, 12, out=bytes(size))
    with pytest.raises(ValueError, match="contiguous"):
        encode(samples, 12, out=np.zeros(2 * size, np.uint8)[::2])
    with pytest.raises(TypeError, match="buffer"):
        encode(samples, 12, out=[0] * size)


def test_decode_into_caller_array():
    samples = make_samples("texture", 3000, 14, False, 5).reshape(30, 100)
    stream = encode(samples, 14, block_size=16)
    out = np.full((30, 100), 9, np.uint16)
    assert decode(stream, samples.size, 14, block_size=16, out=out) is out
    np.testing.assert_array_equal(out, samples)
    read_only = np.zeros(3000, np.uint16)
    read_only.flags.writeable = False
    for bad in (np.zeros(3000, np.int16), np.zeros(2999, np.uint16), np.zeros((100, 30), np.uint16).T,
                read_only):
        with pytest.raises(ValueError, match="out"):
            decode(stream, samples.size, 14, block_size=16, out=bad)


def test_decode_reads_any_contiguous_buffer_in_place():
    samples = make_samples("walk", 4000, 12, False, 2)
    stream = encode(samples, 12)
    for data in (bytearray(stream), memoryview(stream), np.frombuffer(stream, np.uint8),
                 np.frombuffer(stream + b"\0", np.uint8)[:-1]):
        np.testing.assert_array_equal(decode(data, samples.size, 12), samples)


@settings(max_examples=100, deadline=None)
@given(cases(max_count=1500))
def test_every_stream_is_at_least_the_minimum_coded_size(case):
    samples, options = case
    id_len, _ = ccsds121.code_parameters(options["bits"], options["restricted"])
    needed = ccsds121.min_coded_bits(samples.size, options["bits"], options["block_size"], options["rsi"],
                                     id_len, options["preprocess"])
    assert len(encode(samples, **options)) * 8 >= needed


def test_absurd_count_is_refused_before_allocating():
    # 10**13 uint16 samples would be 20 TB: the count must be refused from the
    # stream length alone.
    with pytest.raises(CompressedDataError, match="truncated: 10000000000000 samples need at least"):
        decode(b"\x00" * 64, 10**13, 14)
    with pytest.raises(CompressedDataError, match="truncated"):
        decode(b"", 1, 8)


def test_count_cap_admits_the_most_compressible_streams():
    # Constant data at J=64 and the longest interval is as dense as the code
    # gets (one remainder-of-segment code per 4096 samples); the cap must let
    # it through, and one more interval than the stream can hold must not.
    for preprocess in (True, False):
        samples = np.full(64 * 4096 * 3, 0 if not preprocess else 1234, np.uint16)
        options = dict(block_size=64, rsi=4096, preprocess=preprocess)
        stream = encode(samples, 14, **options)
        np.testing.assert_array_equal(decode(stream, samples.size, 14, **options), samples)
        with pytest.raises(CompressedDataError, match="truncated"):
            decode(stream, 100 * samples.size, 14, **options)


def test_long_garbage_is_decoded_or_refused_in_place():
    # Longer than the decoder's in-place margin: failures and truncation found
    # mid-stream and in the padded tail both come back as CompressedDataError.
    rng = np.random.default_rng(8)
    for trial in range(40):
        garbage = rng.integers(0, 256, int(rng.integers(1000, 5000)), dtype=np.uint8).tobytes()
        if trial % 4 == 0:
            garbage = bytes(len(garbage) - 5) + garbage[-5:]
        try:
            out = decode(garbage, 6000, 16, block_size=int(rng.choice([8, 16, 32, 64])), rsi=7)
        except CompressedDataError:
            continue
        assert out.shape == (6000,)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs mmap/mprotect guard pages")
def test_decoder_never_reads_past_the_callers_buffer():
    # The stream ends exactly where a PROT_NONE page begins: a read past its
    # end kills the process instead of passing unnoticed.
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    page = mmap.PAGESIZE
    samples = make_samples("texture", 20000, 14, False, 4)
    streams = [encode(samples, 14, block_size=J) for J in ccsds121.BLOCK_SIZES]
    streams += [s[:cut] for s in streams[:1] for cut in (0, 1, 700, 1023, 1024, 1025, len(s) // 2)]
    streams.append(bytes(3000))
    for stream in streams:
        pages = -(-len(stream) // page) + 1
        region = mmap.mmap(-1, pages * page)
        base = ctypes.addressof(ctypes.c_char.from_buffer(region))
        assert libc.mprotect(base + (pages - 1) * page, page, 0) == 0, ctypes.get_errno()
        start = (pages - 1) * page - len(stream)
        region[start:start + len(stream)] = stream
        view = memoryview(region)[start:start + len(stream)]
        for J in ccsds121.BLOCK_SIZES:
            try:
                decode(view, samples.size, 14, block_size=J)
            except CompressedDataError:
                pass
        del view
        assert libc.mprotect(base + (pages - 1) * page, page, 3) == 0
        region.close()
