"""Packets through the VC packetizer, the priority multiplexer and the ground reassembler.

Reference: the packets themselves. Whatever the sizes and the flush pattern,
the ground gets back exactly the packets that went in, in order.
"""
import pytest
from hypothesis import given, settings, strategies as st

from kestrel.link.errors import ConfigurationError
from kestrel.link.spacepacket import IDLE_APID, PRIMARY_HEADER, SpacePacket
from kestrel.link.tmframe import FHP_IDLE_DATA, FHP_NO_PACKET_START, FrameLayout, TmFrame
from flight.multiplexer import MasterChannelMultiplexer
from ground.reassembly import VirtualChannelReassembler


def packet(apid: int, seq: int, size: int) -> bytes:
    return SpacePacket(apid, seq % 16384, bytes([seq % 251]) * size).pack()


def reassemble(frames, layout):
    channels, out = {}, []
    for raw in frames:
        frame = TmFrame.unpack(raw, layout)
        r = channels.setdefault(frame.virtual_channel_id, VirtualChannelReassembler(frame.virtual_channel_id))
        out += [p for p in r.feed(frame) if PRIMARY_HEADER.parse(p).apid != IDLE_APID]
    return out, channels


@given(st.lists(st.tuples(st.integers(1, 700), st.booleans()), min_size=1, max_size=60),
       st.integers(16, 300))
@settings(max_examples=150, deadline=None)
def test_any_packets_any_flushes_come_back_whole(items, frame_length):
    layout = FrameLayout(frame_length)
    mux = MasterChannelMultiplexer(7, layout, (0,))
    sent, frames = [], []
    for seq, (size, flush_now) in enumerate(items):
        p = packet(10, seq, size)
        sent.append(p)
        assert mux.push(0, p)
        while (f := mux.next_frame(flush=flush_now)) is not None:
            frames.append(f)
    while (f := mux.next_frame(flush=True)) is not None:
        frames.append(f)
    assert not mux.has_data()
    received, channels = reassemble(frames, layout)
    assert received == sent
    assert channels[0].counters.packets_lost == 0


def test_first_header_pointer_values():
    layout = FrameLayout(6 + 20 + 2)
    mux = MasterChannelMultiplexer(1, layout, (0,))
    mux.push(0, packet(3, 0, 40))  # 46 octets: spans three 20-octet data fields
    frames = [TmFrame.unpack(mux.next_frame(flush=True), layout) for _ in range(3)]
    assert [f.first_header_pointer for f in frames] == [0, FHP_NO_PACKET_START, 6]
    assert mux.next_frame(flush=True) is None
    idle = TmFrame.unpack(mux.idle_frame(), layout)
    assert (idle.virtual_channel_id, idle.first_header_pointer) == (7, FHP_IDLE_DATA)
    # Frame counts: master counts every frame, each VC its own.
    assert [f.master_channel_frame_count for f in frames] + [idle.master_channel_frame_count] == [0, 1, 2, 3]


def test_alert_channel_goes_out_in_the_very_next_frame():
    layout = FrameLayout(100)
    mux = MasterChannelMultiplexer(1, layout, (0, 1))
    for i in range(20):
        mux.push(1, packet(20, i, 300))     # a backlog of imagery on VC 1
    first = TmFrame.unpack(mux.next_frame(), layout)
    assert first.virtual_channel_id == 1
    mux.push(0, packet(5, 0, 30))           # an alert arrives
    nxt = TmFrame.unpack(mux.next_frame(flush=True), layout)
    assert nxt.virtual_channel_id == 0


def test_queue_is_bounded_and_counts_refusals():
    mux = MasterChannelMultiplexer(1, FrameLayout(100), (0,), max_pending_octets=1000)
    accepted = [mux.push(0, packet(1, i, 94)) for i in range(12)]
    assert accepted == [True] * 10 + [False] * 2
    assert mux.channels[0].packets_refused == 2


def test_frame_gap_drops_the_partial_packet_and_resyncs():
    layout = FrameLayout(6 + 20 + 2)
    mux = MasterChannelMultiplexer(1, layout, (0,))
    sent = [packet(3, i, 25) for i in range(6)]
    for p in sent:
        mux.push(0, p)
    frames = []
    while (f := mux.next_frame(flush=True)) is not None:
        frames.append(f)
    del frames[2]  # lose one frame on the link
    received, channels = reassemble(frames, layout)
    counters = channels[0].counters
    assert counters.frame_gaps == 1 and counters.frames_lost == 1
    assert counters.packets_lost >= 1
    assert all(p in sent for p in received)
    assert received == [p for p in sent if p in received]
    assert len(received) >= 4


def test_bad_multiplexer_configurations_are_refused():
    with pytest.raises(ConfigurationError, match="reserved"):
        MasterChannelMultiplexer(1, FrameLayout(100), (0, 7))
    with pytest.raises(ConfigurationError, match="distinct"):
        MasterChannelMultiplexer(1, FrameLayout(100), (0, 0))
    with pytest.raises(ConfigurationError, match="spacecraft"):
        MasterChannelMultiplexer(5000, FrameLayout(100), (0,))
    with pytest.raises(ConfigurationError, match="not configured"):
        MasterChannelMultiplexer(1, FrameLayout(100), (0,)).push(3, b"x" * 10)


def test_a_part_filled_report_frame_does_not_wait_behind_a_backlog_of_imagery():
    """The store offers packets in priority order: a detection report (VC 0, a frame and a half), then a
    backlog of chips (VC 2). The report's part-filled second frame goes out next, not after the backlog
    (it waited for the drain at the end of a pass while a chip sequence kept the link full)."""
    from dataclasses import replace

    from flight.downlink import Downlink
    from tests.test_flight_to_ground import CapturePort
    from kestrel.link.config import LinkConfig, frame_layout

    link = replace(LinkConfig(), reed_solomon=False, randomize=False, baud=20_000_000)
    field = frame_layout(link).data_field_length
    items = iter([(0, packet(101, 0, field + field // 2))] + [(2, packet(120, i, 2 * field)) for i in range(30)])
    port = CapturePort()
    downlink = Downlink(link, port, source=lambda: next(items, None))
    downlink.start()
    assert downlink.stop(5)
    cadu = downlink.coder.cadu_length
    frames = [TmFrame.unpack(bytes(port.data[i + 4:i + cadu]), downlink.layout)
              for i in range(0, len(port.data), cadu)]
    vcids = [f.virtual_channel_id for f in frames]
    assert vcids[:2] == [0, 0] and set(vcids[2:]) == {2}
    out, _ = reassemble([bytes(port.data[i + 4:i + cadu]) for i in range(0, len(port.data), cadu)],
                        downlink.layout)
    assert len(out) == 31                   # nothing lost on the way
