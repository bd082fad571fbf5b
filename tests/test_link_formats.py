"""Space Packet, PUS-C TM and TM frame formats: round trips, a real peer (spacepackets), bad input."""
import pytest
from hypothesis import given, settings, strategies as st

from kestrel.link.crc import crc16_ccitt
from kestrel.link.errors import ChecksumMismatch, ConfigurationError, MalformedError, TruncatedError
from kestrel.link.spacepacket import (IDLE_APID, PRIMARY_HEADER, PusTm, SpacePacket, idle_packet, packet_key,
                                      packet_length)
from kestrel.link.tmframe import FrameLayout, TmFrame


def peer(module: str):
    """A module of the peer implementation (spacepackets); only the tests that compare with it skip without it."""
    return pytest.importorskip(module, reason="spacepackets (test peer) is not installed")


@given(st.binary(min_size=6, max_size=6).map(lambda b: bytes([b[0] & 0x1F]) + b[1:]))
def test_packet_key_reads_what_the_declaration_parses(header):
    declared = PRIMARY_HEADER.parse(header)
    assert packet_key(header) == (declared.apid, declared.sequence_count)
    assert packet_length(header) == 6 + declared.data_length + 1


def test_crc16_check_value():
    # CCITT-FALSE check value from the CRC catalogue, as 132.0-B-3 and 133.0-B-2 use it.
    assert crc16_ccitt(b"123456789") == 0x29B1


pus_tm = st.builds(
    PusTm,
    apid=st.integers(0, IDLE_APID - 1),
    service=st.integers(0, 255),
    subtype=st.integers(0, 255),
    data=st.binary(min_size=0, max_size=300),
    time=st.binary(min_size=7, max_size=7),
    sequence_count=st.integers(0, 0x3FFF),
    message_type_counter=st.integers(0, 0xFFFF),
    destination_id=st.integers(0, 0xFFFF),
    time_reference_status=st.integers(0, 15),
)


@given(pus_tm)
@settings(max_examples=200)
def test_pus_tm_round_trip_and_peer_parses_it(packet):
    raw = packet.pack()
    assert PusTm.unpack(raw, 7) == packet
    # The peer reads the same fields and checks our packet error control.
    theirs = peer("spacepackets.ecss.tm").PusTm.unpack(raw, timestamp_len=7)
    assert theirs.apid == packet.apid
    assert theirs.service == packet.service and theirs.message_subtype == packet.subtype
    assert theirs.source_data == packet.data
    assert theirs.seq_count == packet.sequence_count
    assert theirs.pus_tm_sec_header.message_counter == packet.message_type_counter
    assert theirs.pus_tm_sec_header.dest_id == packet.destination_id
    assert theirs.pus_tm_sec_header.spacecraft_time_ref == packet.time_reference_status
    assert theirs.timestamp == packet.time


def test_pus_tm_bad_crc_is_named():
    raw = bytearray(PusTm(apid=5, service=3, subtype=25, data=b"abc", time=bytes(6)).pack())
    raw[10] ^= 0x01
    with pytest.raises(ChecksumMismatch) as info:
        PusTm.unpack(bytes(raw), 6)
    assert info.value.expected != info.value.actual


def test_pus_tm_truncated_and_malformed():
    raw = PusTm(apid=5, service=3, subtype=25, data=b"abcdef", time=bytes(6)).pack()
    with pytest.raises(TruncatedError) as info:
        PusTm.unpack(raw[:-3], 6)
    assert info.value.expected == len(raw)
    # A packet whose declared length is shorter than its headers.
    tiny = SpacePacket(apid=5, sequence_count=0, data=b"\x20\x03\x19", has_secondary_header=True).pack()
    with pytest.raises((MalformedError, TruncatedError)):
        PusTm.unpack(tiny + bytes(20), 6)


def test_idle_packet_is_not_pus():
    with pytest.raises(MalformedError, match="idle"):
        PusTm.unpack(idle_packet(40), 6)


def test_pus_tm_refuses_bad_fields():
    with pytest.raises(ValueError, match="APID"):
        PusTm(apid=0x7FF, service=1, subtype=1, data=b"", time=b"")
    with pytest.raises(ValueError, match="service"):
        PusTm(apid=1, service=256, subtype=1, data=b"", time=b"")
    with pytest.raises(ValueError, match="exceeds"):
        PusTm(apid=1, service=1, subtype=1, data=bytes(65536), time=bytes(6))


def test_largest_packet_round_trips():
    # 133.0-B-2: a data field of 65536 octets is the maximum.
    data = bytes(range(256)) * 255 + bytes(65536 - 7 - 6 - 2 - 256 * 255)
    packet = PusTm(apid=1, service=1, subtype=1, data=data, time=bytes(6))
    raw = packet.pack()
    assert len(raw) == 65542 == packet_length(raw)
    assert PusTm.unpack(raw, 6) == packet


def test_idle_packet():
    raw = idle_packet(7)
    assert len(raw) == 7 and SpacePacket.unpack(raw).apid == IDLE_APID
    with pytest.raises(ValueError):
        idle_packet(6)


frames = st.builds(
    TmFrame,
    spacecraft_id=st.integers(0, 1023),
    virtual_channel_id=st.integers(0, 7),
    master_channel_frame_count=st.integers(0, 255),
    virtual_channel_frame_count=st.integers(0, 255),
    first_header_pointer=st.integers(0, 0x7FF),
    data=st.just(b""),
)


@given(frames, st.integers(20, 400), st.booleans(), st.randoms(use_true_random=False))
@settings(max_examples=150)
def test_tm_frame_round_trip_and_peer_parses_it(frame, length, has_ocf, rnd):
    layout = FrameLayout(length, has_ocf=has_ocf)
    data = rnd.randbytes(layout.data_field_length)
    ocf = rnd.randbytes(4) if has_ocf else None
    frame = TmFrame(frame.spacecraft_id, frame.virtual_channel_id, frame.master_channel_frame_count,
                    frame.virtual_channel_frame_count, frame.first_header_pointer, data, ocf)
    raw = frame.pack(layout)
    assert len(raw) == length
    assert TmFrame.unpack(raw, layout) == frame
    theirs = peer("spacepackets.ccsds.tm_frame").TmTransferFrame.unpack(raw, length, has_error_control_field=True)
    header = theirs.primary_header
    assert header.master_channel_id.spacecraft_id == frame.spacecraft_id
    assert header.vc_id == frame.virtual_channel_id
    assert header.master_ch_frame_count == frame.master_channel_frame_count
    assert header.vc_frame_count == frame.virtual_channel_frame_count
    assert header.frame_datafield_status.first_header_pointer == frame.first_header_pointer
    assert theirs.data_field == data
    assert theirs.op_ctrl_field == ocf


def test_tm_frame_bad_fecf_and_length():
    layout = FrameLayout(64)
    raw = bytearray(TmFrame(1, 0, 0, 0, 0, bytes(layout.data_field_length)).pack(layout))
    raw[30] ^= 0x80
    with pytest.raises(ChecksumMismatch):
        TmFrame.unpack(bytes(raw), layout)
    with pytest.raises(TruncatedError):
        TmFrame.unpack(bytes(raw[:-1]), layout)
    with pytest.raises(ConfigurationError, match="frame length"):
        FrameLayout(4000)
