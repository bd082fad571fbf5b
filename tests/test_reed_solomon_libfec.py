"""Interop with libfec (Phil Karn's FEC library), the peer CCSDS RS implementation.

libfec's ``encode_rs_ccsds`` / ``decode_rs_ccsds`` work on one codeword in the
dual basis, with ``pad`` leading virtual-fill symbols not passed. We
de-interleave our codeblocks for it and interleave its codewords for us. The
library is the Debian package ``libfec0``; the tests skip when it is absent.
"""
import ctypes
import ctypes.util

import numpy as np
import pytest

from kestrel.link.reed_solomon import DEPTHS, ReedSolomonCodec


def load_libfec():
    for name in (ctypes.util.find_library("fec"), "libfec.so.0", "libfec.so"):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        if hasattr(lib, "decode_rs_ccsds"):
            return lib
    return None


LIBFEC = load_libfec()
pytestmark = pytest.mark.skipif(
    LIBFEC is None, reason="libfec not installed (Debian package libfec0): no peer to test against")


class LibFec:
    """ctypes view of libfec's CCSDS codec, one codeword at a time."""

    def __init__(self, lib):
        self.encode_rs_ccsds = lib.encode_rs_ccsds
        self.encode_rs_ccsds.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]
        self.encode_rs_ccsds.restype = None
        self.decode_rs_ccsds = lib.decode_rs_ccsds
        self.decode_rs_ccsds.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        self.decode_rs_ccsds.restype = ctypes.c_int
        self.taltab = bytes((ctypes.c_ubyte * 256).in_dll(lib, "Taltab"))
        self.tal1tab = bytes((ctypes.c_ubyte * 256).in_dll(lib, "Tal1tab"))

    def parity(self, data: bytes, pad: int) -> bytes:
        out = (ctypes.c_ubyte * 32)()
        self.encode_rs_ccsds(data, out, pad)
        return bytes(out)

    def decode(self, codeword: bytes, pad: int) -> tuple[bytes, int]:
        buffer = (ctypes.c_ubyte * len(codeword)).from_buffer_copy(codeword)
        result = self.decode_rs_ccsds(buffer, None, 0, pad)
        return bytes(buffer), result

    def encode_codeblock(self, frame: bytes, depth: int, pad: int) -> bytes:
        data = np.frombuffer(frame, dtype=np.uint8)
        parity = np.zeros((32, depth), dtype=np.uint8)
        for i in range(depth):
            parity[:, i] = np.frombuffer(self.parity(data[i::depth].tobytes(), pad), dtype=np.uint8)
        return frame + parity.tobytes()


@pytest.fixture(scope="module")
def libfec():
    return LibFec(LIBFEC)


def corrupt(rng, codeblock, depth, symbols, errors_per_codeword):
    block = np.frombuffer(codeblock, dtype=np.uint8).copy()
    for i in range(depth):
        positions = rng.choice(symbols, errors_per_codeword, replace=False)
        block[positions * depth + i] ^= rng.integers(1, 256, errors_per_codeword, dtype=np.uint8)
    return block.tobytes()


def test_dual_basis_tables_equal_libfec(libfec):
    from kestrel.link import reed_solomon_ref as ref

    assert ref.TO_DUAL.tobytes() == libfec.taltab
    assert ref.FROM_DUAL.tobytes() == libfec.tal1tab


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("fill", [0, 1, 95, 222])
def test_our_codeblocks_equal_libfec_byte_for_byte(libfec, depth, fill):
    rng = np.random.default_rng(depth * 7 + fill)
    codec = ReedSolomonCodec(depth, fill)
    for _ in range(5):
        frame = rng.integers(0, 256, codec.data_length, dtype=np.uint8).tobytes()
        assert codec.encode(frame) == libfec.encode_codeblock(frame, depth, fill)


@pytest.mark.parametrize("depth", DEPTHS)
@pytest.mark.parametrize("fill", [0, 60, 200])
def test_libfec_decodes_ours_and_we_decode_libfecs(libfec, depth, fill):
    rng = np.random.default_rng(depth * 31 + fill)
    codec = ReedSolomonCodec(depth, fill)
    symbols = 255 - fill
    for errors in (0, 1, 5, 12, 16):
        frame = rng.integers(0, 256, codec.data_length, dtype=np.uint8).tobytes()
        ours = codec.encode(frame)
        theirs = libfec.encode_codeblock(frame, depth, fill)
        received_ours = corrupt(rng, ours, depth, symbols, errors)
        received_theirs = corrupt(rng, theirs, depth, symbols, errors)
        # libfec corrects what we encoded (codeword by codeword) ...
        block = np.frombuffer(received_ours, dtype=np.uint8)
        for i in range(depth):
            corrected, count = libfec.decode(block[i::depth].tobytes(), fill)
            assert count == errors
            assert corrected == ours[i::depth]
        # ... and we correct what libfec encoded.
        result = codec.decode(received_theirs)
        assert result.data == frame and result.corrected == (errors,) * depth


@pytest.mark.parametrize("fill", [0, 150])
def test_same_verdict_as_libfec_on_random_damage(libfec, fill):
    """Damage from 0 to 40 symbols per codeword: counts and data agree with libfec.

    Beyond 16 symbols both must flag the codeword (libfec returns a negative
    count) and leave it as received; neither may "correct" into other data.
    """
    rng = np.random.default_rng(1234 + fill)
    codec = ReedSolomonCodec(1, fill)
    symbols = 255 - fill
    counts = np.empty(1, dtype=np.int32)
    out = bytearray(codec.codeblock_length)
    for case in range(1500):
        errors = case % 41
        codeword = codec.encode(rng.integers(0, 256, codec.data_length, dtype=np.uint8).tobytes())
        received = corrupt(rng, codeword, 1, symbols, errors)
        codec.decode_into(received, out, counts)
        their_data, their_count = libfec.decode(received, fill)
        if errors <= 16:
            assert counts[0] == their_count == errors
            assert bytes(out) == their_data == codeword
        else:
            assert counts[0] == -1 and their_count < 0, (errors, their_count)
            assert bytes(out) == their_data == received


@pytest.mark.slow
def test_never_miscorrects_where_libfec_flags_long_campaign(libfec):
    rng = np.random.default_rng(77)
    for fill in (0, 100, 222):
        codec = ReedSolomonCodec(1, fill)
        symbols = 255 - fill
        out = bytearray(codec.data_length)
        counts = np.empty(1, dtype=np.int32)
        for case in range(30_000):
            errors = 17 + case % min(40, symbols - 16)
            codeword = codec.encode(rng.integers(0, 256, codec.data_length, dtype=np.uint8).tobytes())
            received = corrupt(rng, codeword, 1, symbols, errors)
            codec.decode_into(received, out, counts)
            _, their_count = libfec.decode(received, fill)
            assert counts[0] == -1 and their_count < 0
            assert out == received[:codec.data_length]
