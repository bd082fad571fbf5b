"""Reed-Solomon (255,223) codec: kernel against its numpy twin, and the standard's facts.

References: the plain twin ``kestrel.link.reed_solomon_ref`` (hypothesis
tests), CCSDS 131.0-B (generator roots, dual-basis table entries). Interop with
libfec, the peer implementation, is in tests/test_reed_solomon_libfec.py.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.kernels.reed_solomon import ReedSolomonKernel
from kestrel.link import reed_solomon_ref as ref
from kestrel.link.reed_solomon import DEPTHS, DecodeResult, ReedSolomonCodec

FILLS = (0, 1, 33, 111, 200, 222)


def random_frame(rng, codec):
    return rng.integers(0, 256, codec.data_length, dtype=np.uint8).tobytes()


def corrupt(rng, codeblock, codec, errors_per_codeword):
    """Flip ``errors_per_codeword`` distinct symbols (any non-zero XOR) of every codeword."""
    block = np.frombuffer(codeblock, dtype=np.uint8).copy()
    symbols = 255 - codec.virtual_fill
    for i in range(codec.depth):
        count = min(errors_per_codeword, symbols)
        positions = rng.choice(symbols, count, replace=False)
        block[positions * codec.depth + i] ^= rng.integers(1, 256, count, dtype=np.uint8)
    return block.tobytes()


# --- facts from the standard -------------------------------------------------

def test_generator_has_the_ccsds_roots():
    g = ref.GENERATOR
    assert len(g) == 33 and g[32] == 1
    for j in range(112, 144):
        assert ref.poly_eval(g, ref.gf_pow_alpha(11 * j)) == 0
    # alpha^(11*111) is not a root: the root range is exactly 112..143
    assert ref.poly_eval(g, ref.gf_pow_alpha(11 * 111)) != 0
    # CCSDS g(x) is palindromic (roots symmetric about beta^127.5)
    assert g == g[::-1]


def test_dual_basis_tables_match_the_standard_annex():
    # First entries of the dual -> conventional table printed in CCSDS 131.0-B.
    assert ref.FROM_DUAL[:8].tolist() == [0x00, 0xCC, 0xAC, 0x60, 0x79, 0xB5, 0xD5, 0x19]
    assert sorted(ref.TO_DUAL.tolist()) == list(range(256))
    assert all(ref.FROM_DUAL[ref.TO_DUAL[v]] == v for v in range(256))
    to_dual, from_dual = ReedSolomonKernel(1).dual_basis_tables()
    assert to_dual == ref.TO_DUAL.tobytes() and from_dual == ref.FROM_DUAL.tobytes()


# --- kernel against the twin (hypothesis) -----------------------------------

geometry = st.tuples(st.sampled_from(DEPTHS), st.one_of(st.sampled_from(FILLS), st.integers(0, 222)))


@settings(max_examples=60, deadline=None)
@given(geometry, st.data())
def test_encode_matches_reference(geo, data):
    depth, fill = geo
    codec = ReedSolomonCodec(depth, fill)
    frame = data.draw(st.binary(min_size=codec.data_length, max_size=codec.data_length))
    codeblock = codec.encode(frame)
    assert codeblock == ref.encode_codeblock(frame, depth, fill)
    assert codeblock[:codec.data_length] == frame
    assert len(codeblock) == codec.codeblock_length


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(geometry, st.integers(0, 2**32 - 1), st.lists(st.integers(0, 24), min_size=8, max_size=8))
def test_decode_matches_reference(geo, seed, error_counts):
    depth, fill = geo
    rng = np.random.default_rng(seed)
    codec = ReedSolomonCodec(depth, fill)
    codeblock = codec.encode(random_frame(rng, codec))
    block = np.frombuffer(codeblock, dtype=np.uint8).copy()
    symbols = 255 - fill
    for i in range(depth):
        count = min(error_counts[i], symbols)
        positions = rng.choice(symbols, count, replace=False)
        block[positions * depth + i] ^= rng.integers(1, 256, count, dtype=np.uint8)
    received = block.tobytes()
    counts = codec.decode_into(received, bytearray(codec.data_length))
    result = codec.decode(received)
    ref_data, ref_counts = ref.decode_codeblock(received, depth, fill)
    assert tuple(counts.tolist()) == ref_counts
    assert result.data == ref_data
    for i in range(depth):
        if error_counts[i] <= 16:
            assert ref_counts[i] == min(error_counts[i], symbols)


# --- correction and failure -------------------------------------------------

@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("fill", [0, 50, 222])
def test_corrects_up_to_sixteen_symbols_per_codeword(depth, fill):
    rng = np.random.default_rng(depth * 1000 + fill)
    codec = ReedSolomonCodec(depth, fill)
    for errors in (0, 1, 2, 7, 15, 16):
        frame = random_frame(rng, codec)
        received = corrupt(rng, codec.encode(frame), codec, errors)
        result = codec.decode(received)
        assert result == DecodeResult(frame, (errors,) * depth, ())
        assert not result.uncorrectable


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("fill", [0, 150])
def test_beyond_sixteen_symbols_is_flagged_and_left_as_received(depth, fill):
    rng = np.random.default_rng(7 + depth + fill)
    codec = ReedSolomonCodec(depth, fill)
    cases = 400 // depth
    for case in range(cases):
        errors = 17 + case % 30
        received = corrupt(rng, codec.encode(random_frame(rng, codec)), codec, errors)
        result = codec.decode(received)
        assert result.uncorrectable
        assert result.uncorrectable_codewords == tuple(range(depth))
        assert result.corrected == (0,) * depth
        assert result.data == received[:codec.data_length]


def test_one_bad_codeword_does_not_spoil_the_others():
    rng = np.random.default_rng(11)
    codec = ReedSolomonCodec(4)
    frame = random_frame(rng, codec)
    block = np.frombuffer(codec.encode(frame), dtype=np.uint8).copy()
    block[np.arange(20) * 4 + 2] ^= 0x5A  # 20 errors in codeword 2
    block[np.arange(5) * 4 + 0] ^= 0x01  # 5 errors in codeword 0
    result = codec.decode(block.tobytes())
    assert result.corrected == (5, 0, 0, 0)
    assert result.uncorrectable_codewords == (2,)
    expected = np.frombuffer(frame, dtype=np.uint8).copy()
    expected[2::4] = block[: codec.data_length][2::4]
    assert result.data == expected.tobytes()


@pytest.mark.parametrize("depth", DEPTHS)
def test_interleaving_corrects_a_burst_of_sixteen_times_depth_bytes(depth):
    rng = np.random.default_rng(depth)
    codec = ReedSolomonCodec(depth)
    frame = random_frame(rng, codec)
    block = np.frombuffer(codec.encode(frame), dtype=np.uint8).copy()
    start = 100
    block[start:start + 16 * depth] ^= 0xFF
    result = codec.decode(block.tobytes())
    assert result.data == frame and result.corrected == (16,) * depth


def test_errors_only_in_parity_are_counted():
    codec = ReedSolomonCodec(2, 10)
    frame = bytes(i % 251 for i in range(codec.data_length))
    block = bytearray(codec.encode(frame))
    for k in range(3):
        block[codec.data_length + 2 * k + 1] ^= 0x80
    assert codec.decode(bytes(block)) == DecodeResult(frame, (0, 3), ())


def test_decode_into_in_place_corrects_data_and_parity():
    rng = np.random.default_rng(5)
    codec = ReedSolomonCodec(3, 20)
    codeblock = codec.encode(random_frame(rng, codec))
    buffer = bytearray(corrupt(rng, codeblock, codec, 9))
    counts = np.full(3, 99, dtype=np.int32)
    returned = codec.decode_into(buffer, buffer, counts)
    assert returned is counts and counts.tolist() == [9, 9, 9]
    assert bytes(buffer) == codeblock


def test_decode_into_leaves_failed_codeword_as_received_in_place():
    rng = np.random.default_rng(6)
    codec = ReedSolomonCodec(1)
    received = corrupt(rng, codec.encode(random_frame(rng, codec)), codec, 30)
    buffer = bytearray(received)
    assert codec.decode_into(buffer, buffer).tolist() == [-1]
    assert bytes(buffer) == received


def test_accepts_bytearray_memoryview_and_numpy():
    codec = ReedSolomonCodec(1)
    frame = bytes(range(223))
    codeblock = codec.encode(np.frombuffer(frame, dtype=np.uint8))
    assert codec.encode(bytearray(frame)) == codeblock == codec.encode(memoryview(frame))
    for form in (bytearray(codeblock), memoryview(codeblock), np.frombuffer(codeblock, dtype=np.uint8)):
        assert codec.decode(form).data == frame
    out = bytearray(codec.codeblock_length)
    codec.encode_into(frame, out)
    assert bytes(out) == codeblock


def test_concurrent_decoders_share_one_codec_safely():
    """The kernel drops the GIL and keeps no per-call state in the codec."""
    from concurrent.futures import ThreadPoolExecutor

    codec = ReedSolomonCodec(5, 3)
    rng = np.random.default_rng(8)
    frames = [random_frame(rng, codec) for _ in range(16)]
    received = [corrupt(rng, codec.encode(f), codec, 3 + k % 14) for k, f in enumerate(frames)]

    def decode_many(k):
        return all(codec.decode(received[k]).data == frames[k] for _ in range(50))

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert all(pool.map(decode_many, range(16)))


def test_geometry_lengths():
    codec = ReedSolomonCodec(5, 23)
    assert codec.data_length == 5 * 200
    assert codec.codeblock_length == 5 * 232
    assert ReedSolomonCodec(8).codeblock_length == 2040


# --- bad arguments -----------------------------------------------------------

@pytest.mark.parametrize("depth", [0, 6, 7, 9, -1, True, 1.0, "1"])
def test_bad_depth_is_a_value_error(depth):
    with pytest.raises(ValueError, match="interleaving depth"):
        ReedSolomonCodec(depth)


@pytest.mark.parametrize("fill", [-1, 223, 255, 2.0, False])
def test_bad_virtual_fill_is_a_value_error(fill):
    with pytest.raises(ValueError, match="virtual fill"):
        ReedSolomonCodec(1, fill)


def test_kernel_rejects_bad_geometry_itself():
    with pytest.raises(ValueError, match="interleaving depth"):
        ReedSolomonKernel(6)
    with pytest.raises(ValueError, match="virtual fill"):
        ReedSolomonKernel(1, 223)


def test_wrong_lengths_are_value_errors_naming_expected_and_actual():
    codec = ReedSolomonCodec(2)
    with pytest.raises(ValueError, match="data must be 446 bytes.*got 445"):
        codec.encode(bytes(445))
    with pytest.raises(ValueError, match="codeblock must be 510 bytes.*got 511"):
        codec.decode(bytes(511))
    with pytest.raises(ValueError, match="out must be 446 or 510 bytes.*got 447"):
        codec.decode_into(bytes(510), bytearray(447))
    with pytest.raises(ValueError, match="out must be 510 bytes"):
        codec.encode_into(bytes(446), bytearray(446))


def test_bad_buffers_are_rejected():
    codec = ReedSolomonCodec(2)
    with pytest.raises(TypeError, match="bytes-like"):
        codec.decode("x" * 510)
    with pytest.raises(ValueError, match="writable"):
        codec.decode_into(bytes(510), bytes(446))
    with pytest.raises(ValueError, match="C-contiguous"):
        codec.decode(np.zeros(1020, dtype=np.uint8)[::2])
    with pytest.raises(ValueError, match="counts"):
        codec.decode_into(bytes(510), bytearray(446), np.zeros(2, dtype=np.int64))
    with pytest.raises(ValueError, match="counts"):
        codec.decode_into(bytes(510), bytearray(446), np.zeros(3, dtype=np.int32))
    buffer = bytearray(1000)
    view = memoryview(buffer)
    with pytest.raises(ValueError, match="not overlap"):
        codec.decode_into(view[:510], view[10:456])


def test_kernel_checks_lengths_even_when_called_directly():
    kernel = ReedSolomonKernel(1)
    with pytest.raises(ValueError, match="data length must be 223"):
        kernel.encode_into(bytes(10), bytearray(255))
    with pytest.raises(ValueError, match="codeblock length must be 255"):
        kernel.decode_into(bytes(254), bytearray(223), np.zeros(1, dtype=np.int32))
    with pytest.raises(ValueError, match="counts length must be 1"):
        kernel.decode_into(bytes(255), bytearray(223), np.zeros(2, dtype=np.int32))


# --- long campaign -----------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("fill", [0, 100, 200])
def test_never_miscorrects_many_random_overloads(fill):
    rng = np.random.default_rng(fill + 99)
    codec = ReedSolomonCodec(8, fill)
    counts = np.empty(8, dtype=np.int32)
    out = bytearray(codec.data_length)
    for case in range(20_000):
        received = corrupt(rng, codec.encode(random_frame(rng, codec)), codec, 17 + case % 40)
        codec.decode_into(received, out, counts)
        assert (counts == -1).all()
        assert out == received[:codec.data_length]
