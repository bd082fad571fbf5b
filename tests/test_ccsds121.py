"""CCSDS 121.0-B-3 kernel against its plain-Python twin, round trips and bad input.

Reference: flight.codecs.ccsds121_ref (exhaustive option costing, bits as
strings). The standard's own vectors are in test_ccsds121_conformance.py,
libaec interop in test_ccsds121_libaec.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flight.codecs import ccsds121
from flight.codecs.ccsds121 import CompressedDataError, decode, encode
from flight.codecs.ccsds121_ref import decode_ref, encode_ref

MODES = ("constant", "walk", "noise", "sparse", "extremes", "steps")


def make_samples(mode: str, count: int, bits: int, signed: bool, seed: int) -> np.ndarray:
    """Deterministic samples that reach every code option: zero runs (constant,
    sparse, steps), second extension and small k (walk), large k and no
    compression (noise), and the mapping's range edges (extremes)."""
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
