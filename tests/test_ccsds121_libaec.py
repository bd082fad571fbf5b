"""CCSDS 121 interop with libaec, the real peer, through imagecodecs.

libaec decodes what we write and we decode what it writes, over
hypothesis-drawn widths, block sizes, intervals, flags and data; our stream
is never longer than libaec's (we cost every option exactly, it searches k
heuristically and breaks ties differently).

imagecodecs passes samples to libaec as native little-endian words: 1 byte
for n <= 8, 2 for n <= 16, 4 above (3 with DATA_3BYTE), and never sets
AEC_DATA_MSB itself; an integer flag value reaches libaec unchanged.
"""
import numpy as np
import pytest
from hypothesis import given, settings

from kestrel.codecs import ccsds121
from kestrel.codecs.ccsds121 import decode, encode
from tests.test_ccsds121 import cases, make_samples

imagecodecs = pytest.importorskip("imagecodecs")
FLAG = imagecodecs.AEC.FLAG
AEC_DATA_MSB = 4  # libaec.h; imagecodecs' enum leaves it out


def libaec_flags(options) -> int:
    flags = 0
    if options["preprocess"]:
        flags |= FLAG.DATA_PREPROCESS
    if options["signed"]:
        flags |= FLAG.DATA_SIGNED
    if options["restricted"]:
        flags |= FLAG.RESTRICTED
    if options["pad_rsi"]:
        flags |= FLAG.PAD_RSI
    return int(flags)


def libaec_input(samples, options):
    """Samples as libaec reads them: it emits the reference sample (and, without
    preprocessing, every sample) as the raw word, so signed values must go in
    as their n-bit pattern, not sign-extended."""
    if options["signed"]:
        mask = (1 << options["bits"]) - 1
        return (samples.astype(np.int64) & mask).astype(f"u{samples.itemsize}")
    return samples


def libaec_decode(stream, count, options):
    # libaec may write up to the end of the last interval (ROS, padded block).
    interval = options["rsi"] * options["block_size"]
    room = -(-max(count, 1) // interval) * interval
    out = np.zeros(room, ccsds121.output_dtype_for(options["bits"], options["signed"]))
    imagecodecs.aec_decode(stream, bitspersample=options["bits"], flags=libaec_flags(options),
                           blocksize=options["block_size"], rsi=options["rsi"], out=out)
    return out[:count]


def comparable(values, options):
    # libaec does not sign-extend samples it decoded without preprocessing.
    if options["signed"] and not options["preprocess"]:
        return values.astype(np.int64) & ((1 << options["bits"]) - 1)
    return values


def libaec_encode(samples, options):
    return imagecodecs.aec_encode(libaec_input(samples, options), bitspersample=options["bits"],
                                  flags=libaec_flags(options), blocksize=options["block_size"],
                                  rsi=options["rsi"])


nonempty_cases = cases(max_count=3000).filter(lambda case: case[0].size > 0)


@settings(max_examples=150, deadline=None)
@given(nonempty_cases)
def test_libaec_decodes_our_streams(case):
    samples, options = case
    ours = encode(samples, **options)
    np.testing.assert_array_equal(comparable(libaec_decode(ours, samples.size, options), options),
                                  comparable(samples, options))


@settings(max_examples=150, deadline=None)
@given(nonempty_cases)
def test_we_decode_libaec_streams_and_are_never_longer(case):
    samples, options = case
    theirs = libaec_encode(samples, options)
    np.testing.assert_array_equal(decode(theirs, samples.size, **options), samples, strict=True)
    assert len(encode(samples, **options)) <= len(theirs)


@pytest.mark.parametrize("bits", [17, 20, 24])
def test_three_byte_samples(bits):
    samples = make_samples("walk", 1000, bits, False, seed=bits)
    packed = samples.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].copy()
    flags = int(FLAG.DATA_PREPROCESS | FLAG.DATA_3BYTE)
    theirs = imagecodecs.aec_encode(packed.tobytes(), bitspersample=bits, flags=flags, blocksize=16, rsi=32)
    np.testing.assert_array_equal(decode(theirs, samples.size, bits, block_size=16, rsi=32), samples)
    out = bytearray(samples.size * 3)  # a uint8 array would make imagecodecs refuse bits > 8
    imagecodecs.aec_decode(encode(samples, bits, block_size=16, rsi=32), bitspersample=bits, flags=flags,
                           blocksize=16, rsi=32, out=out)
    assert bytes(out) == packed.tobytes()


@pytest.mark.parametrize("bits, dtype", [(12, ">u2"), (16, ">u2"), (32, ">u4")])
def test_most_significant_byte_first_samples(bits, dtype):
    samples = make_samples("noise", 777, bits, False, seed=bits).astype(dtype)
    flags = int(FLAG.DATA_PREPROCESS) | AEC_DATA_MSB
    theirs = imagecodecs.aec_encode(samples.tobytes(), bitspersample=bits, flags=flags, blocksize=32, rsi=8)
    assert decode(theirs, samples.size, bits, block_size=32, rsi=8).tolist() == samples.tolist()
    assert len(encode(samples, bits, block_size=32, rsi=8)) <= len(theirs)


@pytest.mark.parametrize("mode", ["walk", "sparse", "steps", "extremes"])
@pytest.mark.parametrize("bits, restricted", [(1, True), (2, True), (3, True), (4, True), (2, False), (8, False)])
def test_low_entropy_options_interoperate(mode, bits, restricted):
    options = dict(bits=bits, block_size=8, rsi=100, preprocess=True, restricted=restricted, signed=False,
                   pad_rsi=False)
    samples = make_samples(mode, 5000, bits, False, seed=bits)
    ours = encode(samples, **options)
    theirs = libaec_encode(samples, options)
    np.testing.assert_array_equal(libaec_decode(ours, samples.size, options), samples)
    np.testing.assert_array_equal(decode(theirs, samples.size, **options), samples)
    assert len(ours) <= len(theirs)
