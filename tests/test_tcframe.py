"""TC Transfer Frames, CCSDS 232.0-B: the header bit by bit as the standard lays it out, the FECF against
crcmod's CCITT check value, and every refusal with its reason."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from kestrel.link.crc import crc16_ccitt
from kestrel.link.errors import FrameRejected, Rejection
from kestrel.link.tcframe import MAX_FRAME_LENGTH, FrameType, TcFrame, TcFrameLayout

LAYOUT = TcFrameLayout(spacecraft_id=42, virtual_channels=frozenset({0, 1}))
SEGMENTED = TcFrameLayout(spacecraft_id=42, virtual_channels=frozenset({0, 1}), segment_header=True)


def hand_built(version, bypass, control, spare, scid, vcid, seq, data, length=None) -> bytes:
    """232.0-B 4.1.2: 2+1+1+2+10 | 6+10 | 8 bits, then the data field and the CRC-16 over all before it."""
    length = length if length is not None else 5 + len(data) + 2
    word = (version << 38 | bypass << 37 | control << 36 | spare << 34 | scid << 24 | vcid << 18
            | (length - 1) << 8 | seq)
    body = word.to_bytes(5, "big") + data
    return body + crc16_ccitt(body).to_bytes(2, "big")


def test_crc_is_ccitt_false():
    assert crc16_ccitt(b"123456789") == 0x29B1


@given(st.sampled_from(list(FrameType)), st.integers(0, 1), st.integers(0, 255), st.binary(min_size=1, max_size=200))
def test_pack_is_the_standards_layout_and_round_trips(frame_type, vcid, seq, data):
    frame = TcFrame(vcid, seq, data, frame_type)
    raw = frame.pack(LAYOUT)
    assert raw == hand_built(0, frame_type.bypass, frame_type.control_command, 0, 42, vcid, seq, data)
    assert TcFrame.unpack(raw, LAYOUT) == frame


def test_segment_header_on_ad_and_bd_not_on_bc():
    ad = TcFrame(1, 3, b"pkt", FrameType.AD, map_id=5)
    raw = ad.pack(SEGMENTED)
    assert raw[5] == 0b11_000101 and raw[6:9] == b"pkt"
    assert TcFrame.unpack(raw, SEGMENTED) == ad
    bc = TcFrame(1, 0, b"\x00", FrameType.BC)
    assert bc.pack(SEGMENTED)[5:6] == b"\x00"
    assert TcFrame.unpack(bc.pack(SEGMENTED), SEGMENTED) == bc


def test_segmented_data_is_refused():
    raw = hand_built(0, 0, 0, 0, 42, 0, 0, bytes([0b01_000000]) + b"part")
    with pytest.raises(FrameRejected) as info:
        TcFrame.unpack(raw, SEGMENTED)
    assert info.value.reason == Rejection.SEGMENT


def rejection(raw, layout=LAYOUT) -> Rejection:
    with pytest.raises(FrameRejected) as info:
        TcFrame.unpack(raw, layout)
    return info.value.reason


@pytest.mark.parametrize("fields, reason", [
    (dict(version=1), Rejection.VERSION), (dict(version=3), Rejection.VERSION),
    (dict(spare=1), Rejection.SPARE), (dict(spare=2), Rejection.SPARE),
    (dict(scid=43), Rejection.SPACECRAFT_ID), (dict(scid=0), Rejection.SPACECRAFT_ID),
    (dict(vcid=2), Rejection.VIRTUAL_CHANNEL), (dict(vcid=63), Rejection.VIRTUAL_CHANNEL),
    (dict(bypass=0, control=1), Rejection.FRAME_TYPE),
])
def test_header_checks(fields, reason):
    values = dict(version=0, bypass=0, control=0, spare=0, scid=42, vcid=0, seq=0, data=b"command")
    values.update(fields)
    assert rejection(hand_built(**values)) == reason


def test_fecf_checked():
    raw = bytearray(TcFrame(0, 0, b"command").pack(LAYOUT))
    for bit in range(8 * len(raw)):
        broken = bytearray(raw)
        broken[bit >> 3] ^= 0x80 >> (bit & 7)
        with pytest.raises(FrameRejected):      # any flipped bit: never a frame
            TcFrame.unpack(bytes(broken), LAYOUT)
    raw[-1] ^= 1
    assert rejection(bytes(raw)) == Rejection.FECF


@pytest.mark.parametrize("delta", [-1, +1])
def test_length_field_off_by_one(delta):
    data = b"command"
    raw = hand_built(0, 0, 0, 0, 42, 0, 0, data, length=5 + len(data) + 2 + delta)
    assert rejection(raw) in (Rejection.FRAME_LENGTH, Rejection.FRAME_TRUNCATED)


def test_length_zero_max_and_truncated():
    assert rejection(hand_built(0, 0, 0, 0, 42, 0, 0, b"x", length=1)) == Rejection.FRAME_LENGTH
    assert rejection(hand_built(0, 0, 0, 0, 42, 0, 0, b"x", length=MAX_FRAME_LENGTH)) == Rejection.FRAME_TRUNCATED
    full = TcFrame(0, 0, bytes(MAX_FRAME_LENGTH - 7)).pack(LAYOUT)
    assert len(full) == MAX_FRAME_LENGTH and TcFrame.unpack(full, LAYOUT).data == bytes(MAX_FRAME_LENGTH - 7)
    for cut in (0, 1, 4, 5, len(full) - 1):
        assert rejection(full[:cut]) == Rejection.FRAME_TRUNCATED
    with pytest.raises(ValueError):
        TcFrame(0, 0, bytes(MAX_FRAME_LENGTH - 6)).pack(LAYOUT)
    with pytest.raises(ValueError):
        TcFrame(0, 0, b"").pack(LAYOUT)


@given(st.binary(max_size=80))
def test_only_frame_rejected_escapes(raw):
    try:
        TcFrame.unpack(raw, LAYOUT)
    except FrameRejected:
        pass


@given(st.binary(min_size=3, max_size=80), st.booleans())
def test_only_frame_rejected_escapes_past_the_fecf(body, fix_length):
    """Structured fuzz: random headers with the length made consistent (or not) and the CRC fixed up."""
    raw = bytearray(body)
    if fix_length and len(raw) >= 4:
        total = len(raw) + 2
        raw[2] = (raw[2] & 0xFC) | ((total - 1) >> 8 & 0x03)
        raw[3] = (total - 1) & 0xFF
    raw += crc16_ccitt(bytes(raw)).to_bytes(2, "big")
    for layout in (LAYOUT, SEGMENTED):
        try:
            frame = TcFrame.unpack(bytes(raw), layout)
        except FrameRejected:
            continue
        assert frame.pack(layout) == bytes(raw)
