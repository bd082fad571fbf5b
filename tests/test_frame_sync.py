"""Frame-sync kernel against its numpy twin, and the hand-written hot-path parsers
against the construct declarations they stand in for.

References: ground.frame_sync_ref (the twin), TM_PRIMARY_HEADER and
PusTm.unpack (the declared formats), crcmod (kestrel.link.crc, the CRC definition).
"""
import construct as cs
import pytest
from hypothesis import given, settings, strategies as st

from kestrel.link.coding import ASM
from kestrel.link.errors import LinkError
from kestrel.link.spacepacket import PusTm, SpacePacket
from kestrel.link.tmframe import TM_PRIMARY_HEADER, build_primary_header, parse_primary_header
from ground import frame_sync, frame_sync_ref

MARKER = int.from_bytes(ASM, "big")


@st.composite
def buffers_with_markers(draw):
    """Random bytes with markers (exact, damaged, inverted) planted at random bit offsets."""
    size = draw(st.integers(5, 80))
    value = int.from_bytes(draw(st.binary(min_size=size, max_size=size)), "big")
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, 8 * size - 32))
        marker = MARKER
        if draw(st.booleans()):
            marker ^= 0xFFFFFFFF
        for _ in range(draw(st.integers(0, 4))):
            marker ^= 1 << draw(st.integers(0, 31))
        shift = 8 * size - 32 - at
        value = (value & ~(0xFFFFFFFF << shift)) | (marker << shift)
    return value.to_bytes(size, "big")


@given(buffers_with_markers(), st.data())
@settings(max_examples=300, deadline=None)
def test_search_matches_reference(buf, data):
    nbits = 8 * len(buf)
    start = data.draw(st.integers(0, nbits))
    stop = data.draw(st.integers(0, nbits + 40))
    errors = data.draw(st.integers(0, 5))
    inverted = data.draw(st.booleans())
    expected = frame_sync_ref.search_marker(buf, start, min(stop, nbits - 31), MARKER, errors, inverted)
    assert frame_sync.search_marker(buf, start, stop, MARKER, errors, inverted) == expected
    assert frame_sync.search_marker(bytearray(buf), start, stop, MARKER, errors, inverted) == expected


@given(buffers_with_markers(), st.data())
@settings(max_examples=200, deadline=None)
def test_marker_distance_matches_reference(buf, data):
    bit = data.draw(st.integers(0, 8 * len(buf) - 32))
    assert frame_sync.marker_distance(buf, bit, MARKER) == frame_sync_ref.marker_distance(buf, bit, MARKER)


@given(st.binary(min_size=2, max_size=300), st.data())
@settings(max_examples=300, deadline=None)
def test_extract_matches_reference(buf, data):
    length = data.draw(st.integers(1, len(buf) - 1))
    bit = data.draw(st.integers(0, 8 * (len(buf) - length)))
    invert = data.draw(st.booleans())
    sequence = data.draw(st.one_of(st.none(), st.binary(min_size=length, max_size=length)))
    out = bytearray(length)
    frame_sync.extract_into(buf, bit, out, invert, sequence)
    assert bytes(out) == frame_sync_ref.extract(buf, bit, length, invert, sequence)


def test_search_finds_a_marker_at_every_bit_offset():
    for shift in range(16):
        value = (MARKER << (64 - 32 - shift))
        buf = value.to_bytes(8, "big")
        assert frame_sync.search_marker(buf, 0, 64, MARKER, 0, False) == (shift, False)
        flipped = bytes(b ^ 0xFF for b in buf)
        assert frame_sync.search_marker(flipped, 0, 64, MARKER, 0, True) == (shift, True)
        assert frame_sync.search_marker(flipped, 0, 64, MARKER, 0, False) == (-1, False)


def test_primitives_refuse_bad_arguments():
    buf = bytes(16)
    with pytest.raises(ValueError, match="bits 100..132"):
        frame_sync.marker_distance(buf, 100, MARKER)
    with pytest.raises(ValueError, match="max_errors"):
        frame_sync.search_marker(buf, 0, 64, MARKER, 16, True)
    with pytest.raises(ValueError, match="32-bit"):
        frame_sync.search_marker(buf, 0, 64, 1 << 32, 0, True)
    with pytest.raises(ValueError, match="sequence must be 4"):
        frame_sync.extract_into(buf, 0, bytearray(4), False, bytes(3))
    with pytest.raises(ValueError, match="extract_into needs"):
        frame_sync.extract_into(buf, 1, bytearray(16))
    with pytest.raises(ValueError, match="at least one"):
        frame_sync.extract_into(buf, 0, bytearray())
    assert frame_sync.search_marker(buf, 10, 5, MARKER, 0, True) == (-1, False)


# --- hand-written header code against the construct declarations ----------------

@given(st.binary(min_size=6, max_size=6))
@settings(max_examples=500)
def test_frame_header_parse_equals_construct(raw):
    try:
        declared = TM_PRIMARY_HEADER.parse(raw)
    except cs.ConstructError:
        declared = None
    fast = parse_primary_header(raw)
    if declared is None:
        assert fast is None
        return
    assert fast is not None
    assert fast._asdict() == {k: v for k, v in declared.items() if k not in ("_io", "version")}


@given(st.integers(0, 1023), st.integers(0, 7), st.booleans(), st.integers(0, 255), st.integers(0, 255),
       st.integers(0, 0x7FF), st.booleans(), st.booleans())
@settings(max_examples=300)
def test_frame_header_build_equals_construct(scid, vcid, ocf, mc, vc, fhp, synch, order):
    declared = TM_PRIMARY_HEADER.build(dict(
        spacecraft_id=scid, virtual_channel_id=vcid, ocf_flag=ocf, master_channel_frame_count=mc,
        virtual_channel_frame_count=vc, secondary_header_flag=False, synch_flag=synch,
        packet_order_flag=order, segment_length_id=0b11, first_header_pointer=fhp))
    assert build_primary_header(scid, vcid, ocf, mc, vc, fhp, synch, order) == declared


def test_frame_header_build_refuses_out_of_range():
    with pytest.raises(ValueError, match="spacecraft_id"):
        build_primary_header(1024, 0, False, 0, 0, 0)
    with pytest.raises(ValueError, match="first_header_pointer"):
        build_primary_header(1, 0, False, 0, 0, 0x800)


def _pus_reference(raw, time_length):
    try:
        return PusTm.unpack_declared(raw, time_length)
    except LinkError as exc:
        return type(exc)


def _pus_fast(raw, time_length):
    try:
        return PusTm.unpack(raw, time_length)
    except LinkError as exc:
        return type(exc)


pus_packets = st.builds(
    PusTm, apid=st.integers(0, 0x7FE), service=st.integers(0, 255), subtype=st.integers(0, 255),
    data=st.binary(max_size=40), time=st.binary(min_size=6, max_size=6),
    sequence_count=st.integers(0, 0x3FFF), message_type_counter=st.integers(0, 0xFFFF),
    destination_id=st.integers(0, 0xFFFF), time_reference_status=st.integers(0, 15),
    sequence_flags=st.integers(0, 3))


@given(pus_packets, st.lists(st.tuples(st.integers(0, 80), st.integers(1, 255)), max_size=3),
       st.integers(0, 10), st.sampled_from([6, 7]))
@settings(max_examples=400)
def test_pus_tm_fast_parse_equals_declared_parse(packet, damage, cut, time_length):
    raw = bytearray(packet.pack())
    for at, xor in damage:
        if at < len(raw):
            raw[at] ^= xor
    raw = bytes(raw[:len(raw) - cut])
    assert _pus_fast(raw, time_length) == _pus_reference(raw, time_length)


@given(st.binary(max_size=60), st.sampled_from([0, 6]))
@settings(max_examples=300)
def test_pus_tm_fast_parse_equals_declared_parse_on_noise(raw, time_length):
    assert _pus_fast(raw, time_length) == _pus_reference(raw, time_length)


def test_pus_tm_fast_parse_names_the_wrong_version_and_type():
    # A telecommand and a packet without secondary header: valid CRC, wrong kind.
    from kestrel.link.crc import crc16_ccitt
    for packet in (SpacePacket(5, 0, bytes(20), is_telecommand=True, has_secondary_header=True),
                   SpacePacket(5, 0, bytes(20))):
        body = packet.pack()[:-2]
        raw = body + crc16_ccitt(body).to_bytes(2, "big")
        result = _pus_fast(raw, 6)
        assert result == _pus_reference(raw, 6) and not isinstance(result, PusTm)
