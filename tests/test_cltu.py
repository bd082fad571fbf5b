"""CLTU, CCSDS 231.0-B: BCH(63,56) against a long-division twin, every single error corrected and every
double error detected (exhaustive over codeblocks), the TC randomizer against the standard's printed
sequence, and the stream decoder over any split of the line."""
import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kestrel.link.cltu import (CODEBLOCK_OCTETS, FILL, START_SEQUENCE, TAIL_SEQUENCE, CltuDecoder, CltuRejection,
                               Codeblock, decode_codeblock, encode_cltu, parity_octet, randomize,
                               randomizer_sequence)


def twin_parity(info: bytes) -> int:
    """231.0-B 3.3: the 7 parity bits are the remainder of info(x)·x^7 divided by x^7+x^6+x^2+1 — here by
    polynomial long division on one big integer (not the table the module uses), complemented, then the
    filler bit 0."""
    value = int.from_bytes(info, "big") << 7
    for degree in range(62, 6, -1):
        if value >> degree & 1:
            value ^= 0b11000101 << (degree - 7)
    return ((~value) & 0x7F) << 1


def codeword(info: bytes) -> bytes:
    return info + bytes([twin_parity(info)])


def flip(block: bytes, *bits: int) -> bytes:
    out = bytearray(block)
    for bit in bits:
        out[bit >> 3] ^= 0x80 >> (bit & 7)
    return bytes(out)


INFOS = [bytes(7), b"\xff" * 7, bytes(range(1, 8)), b"\x55" * 7, b"\xeb\x90\x00\x01\x02\x03\x04"] + [
    random.Random(seed).randbytes(7) for seed in range(5)]


def test_parity_of_all_zero_information_is_the_complement_of_zero():
    # Zero information has zero parity; the codeblock carries its complement: 1111111 then the filler 0.
    assert parity_octet(bytes(7)) == 0xFE


@given(st.binary(min_size=7, max_size=7))
def test_parity_equals_long_division(info):
    assert parity_octet(info) == twin_parity(info)


def test_tail_sequence_is_uncorrectable_and_stays_so_with_one_error():
    assert decode_codeblock(TAIL_SEQUENCE)[1] == Codeblock.UNCORRECTABLE
    for bit in range(63):
        assert decode_codeblock(flip(TAIL_SEQUENCE, bit))[1] == Codeblock.UNCORRECTABLE


@pytest.mark.parametrize("info", INFOS)
def test_every_single_bit_error_is_corrected(info):
    block = codeword(info)
    assert decode_codeblock(block) == (info, Codeblock.CLEAN)
    for bit in range(63):
        assert decode_codeblock(flip(block, bit)) == (info, Codeblock.CORRECTED), bit
    # The filler bit is outside the code: ignored.
    assert decode_codeblock(flip(block, 63)) == (info, Codeblock.CLEAN)


@pytest.mark.parametrize("info", INFOS)
def test_every_double_bit_error_is_detected(info):
    block = codeword(info)
    for a, b in itertools.combinations(range(63), 2):
        assert decode_codeblock(flip(block, a, b))[1] == Codeblock.UNCORRECTABLE, (a, b)


def test_randomizer_sequence_is_the_standards():
    # 231.0-B (TC randomizer): the first 40 bits of the sequence, as printed in the standard.
    printed = "1111 1111 0011 1001 1001 1110 0101 1010 0110 1000".replace(" ", "")
    assert randomizer_sequence(5) == int(printed, 2).to_bytes(5, "big")
    period = randomizer_sequence(255 * 2)
    bits = "".join(f"{o:08b}" for o in period)
    assert bits[:255] == bits[255:510]          # period 255 bits
    assert len(set(bits[i:i + 8] for i in range(255))) == 255   # every nonzero 8-bit state once: maximal length


def test_cltu_layout():
    frame = bytes(range(10))
    cltu = encode_cltu(frame)
    assert cltu[:2] == START_SEQUENCE and cltu[-8:] == TAIL_SEQUENCE
    blocks = [cltu[2 + i:10 + i] for i in range(0, len(cltu) - 10, 8)]
    assert [b[:7] for b in blocks] == [frame[:7], frame[7:] + bytes([FILL]) * 4]
    assert all(b == codeword(b[:7]) for b in blocks)


@given(st.binary(min_size=1, max_size=300), st.booleans())
def test_round_trip(frame, randomized):
    results = CltuDecoder().feed(encode_cltu(frame, randomized))
    assert len(results) == 1 and results[0].rejection is None
    data = results[0].data
    assert len(data) == len(frame) + (-len(frame) % 7)
    if randomized:
        assert randomize(data[:len(frame)]) == frame
        assert data[len(frame):] == bytes([FILL]) * (len(data) - len(frame))   # fill is not randomized
    else:
        assert data[:len(frame)] == frame


def check_invariant(decoder):
    c = decoder.counters
    assert c.octets_read == c.octets_in_cltus + c.octets_skipped + decoder.buffered


@settings(max_examples=60)
@given(st.lists(st.binary(min_size=1, max_size=40), min_size=1, max_size=5), st.binary(max_size=30),
       st.data())
def test_any_split_of_the_line_gives_the_one_shot_result(frames, noise, data):
    line = b"".join(noise + encode_cltu(f) for f in frames) + noise
    one_shot = CltuDecoder()
    expected = one_shot.feed(line) + one_shot.flush()
    decoder = CltuDecoder()
    got, at = [], 0
    while at < len(line):
        size = data.draw(st.integers(1, 64))
        got += decoder.feed(line[at:at + size])
        check_invariant(decoder)
        at += size
    got += decoder.flush()
    check_invariant(decoder)
    assert got == expected
    if 0xEB not in noise:       # noise without a start sequence's first octet cannot start a false CLTU
        assert [r.data[:len(f)] for r, f in zip(got, frames)] == frames and len(got) == len(frames)


def test_start_sequence_split_across_reads():
    cltu = encode_cltu(b"command")
    decoder = CltuDecoder()
    assert decoder.feed(b"\x00\x13" + cltu[:1]) == []
    results = decoder.feed(cltu[1:])
    assert [r.data[:7] for r in results] == [b"command"]
    check_invariant(decoder)


def test_single_errors_in_every_codeblock_are_corrected_in_the_stream():
    frame = bytes(range(40))
    cltu = bytearray(encode_cltu(frame))
    for i in range(6):
        cltu[2 + 8 * i + i] ^= 0x10
    result, = CltuDecoder().feed(bytes(cltu))
    assert result.data[:40] == frame and result.corrected == 6


def test_a_double_error_abandons_the_cltu_and_delivers_nothing():
    frame = bytes(range(40))
    cltu = encode_cltu(frame)
    broken = flip(cltu, 8 * (2 + 16) + 3, 8 * (2 + 16) + 40)      # the third codeblock
    decoder = CltuDecoder()
    results = decoder.feed(broken + cltu)
    assert results[0] == type(results[0])(None, CltuRejection.UNCORRECTABLE)
    assert results[1].data[:40] == frame       # the next CLTU on the line is found again
    assert len(results) == 2
    check_invariant(decoder)


def test_a_tail_with_one_error_still_ends_the_cltu():
    cltu = encode_cltu(b"abcdefg")
    broken = flip(cltu, 8 * (len(cltu) - 8) + 5)
    result, = CltuDecoder().feed(broken)
    assert result.data == b"abcdefg"


def test_unterminated_and_overlong_cltus():
    decoder = CltuDecoder(max_data=14)
    cltu = encode_cltu(bytes(30))
    assert [r.rejection for r in decoder.feed(cltu)] == [CltuRejection.TOO_LONG]
    check_invariant(decoder)
    assert decoder.feed(encode_cltu(bytes(7))[:-8]) == []
    assert [r.rejection for r in decoder.flush()] == [CltuRejection.UNTERMINATED]
    check_invariant(decoder)
    assert decoder.buffered == 0


def test_encode_refuses_nothing():
    with pytest.raises(ValueError):
        encode_cltu(b"")
    assert len(encode_cltu(b"x")) == 2 + CODEBLOCK_OCTETS + 8


# Vectors from YAMCS's BchCltuGeneratorTest (yamcs/yamcs, yamcs-core/src/test/java/org/yamcs/tctm/ccsds/error/),
# which takes them from SpacePyLibrary's UnitTest/testData.py: two independent ground systems' CLTUs.
PEER_CODEBLOCKS = ["22F600FF00421A12", "8CC00E010D19065A", "301B0009008200 54".replace(" ", ""),
                   "10E4C1555555553E"]
PEER_FRAME = bytes.fromhex("22F6002300820 00F001DFF000000000F001EFF000000000F001FFF000000000FAC8F0068".replace(" ", ""))
PEER_CLTU = bytes.fromhex(
    "EB9022F600230082 00240F001DFF0000 0034000F001EFF00 0010 00000F001FFF 00D80000000FAC8F"
    "0090 6855555555 5555 06 C5C5C5C5C5C5C579".replace(" ", ""))


@pytest.mark.parametrize("block", PEER_CODEBLOCKS)
def test_codeblocks_of_the_peers(block):
    raw = bytes.fromhex(block)
    assert parity_octet(raw[:7]) == raw[7]
    assert decode_codeblock(raw) == (raw[:7], Codeblock.CLEAN)


def test_cltu_of_the_peers():
    assert encode_cltu(PEER_FRAME) == PEER_CLTU
    result, = CltuDecoder().feed(PEER_CLTU)
    assert result.data[:len(PEER_FRAME)] == PEER_FRAME


def test_peer_frame_passes_our_frame_checks():
    """The same frame is a BD frame of spacecraft 758, VC 0: our header reading and FECF agree with it."""
    from kestrel.link.tcframe import FrameType, TcFrame, TcFrameLayout

    frame = TcFrame.unpack(PEER_FRAME, TcFrameLayout(758))
    assert frame.frame_type == FrameType.BD and frame.virtual_channel_id == 0 and len(frame.data) == 36 - 7
    assert frame.pack(TcFrameLayout(758)) == PEER_FRAME
