"""ccsdspy, a real peer, reads the packet streams our ground recovers from our downlink.

The packets are made by the flight side (spacepacket + products formats),
framed and coded by the flight multiplexer and channel coder, and recovered by
our frame synchroniser and reassembler. ccsdspy's validate() must find nothing
wrong with a clean stream and must report the sequence gap that a frame lost
on the link leaves; its FixedLength reader must read our housekeeping fields.
"""
import io
import logging

import numpy as np
import pytest

from kestrel import products
from kestrel.link.config import LinkConfig
from kestrel.link.config import build_channel_coder, frame_layout
from flight.multiplexer import MasterChannelMultiplexer
from kestrel.link.spacepacket import IDLE_APID, PusTm
from ground.reassembly import VirtualChannelReassembler
from ground.sync import FrameSynchronizer

ccsdspy = pytest.importorskip("ccsdspy", reason="ccsdspy (test peer) is not installed")
from ccsdspy.utils import validate  # noqa: E402

LINK = LinkConfig(frame_length=5 * 100, reed_solomon=True, interleave_depth=5)
TIME_LENGTH = 6
HK_COUNT = 40


# The housekeeping fields' wire types, read from the declaration: (ccsdspy type, bits).
HK_TYPES = {sc.name: {">L": ("uint", 32), ">d": ("float", 64)}[sc.subcon.fmtstr]
            for sc in products.HOUSEKEEPING_REPORT.subcons if sc.name in products.HOUSEKEEPING_FIELDS}


def housekeeping_values(i: int) -> dict:
    return {name: (i * 1000 + k) & 0xFFFFFFFF if HK_TYPES[name][0] == "uint" else i * 1000.5 - k
            for k, name in enumerate(products.HOUSEKEEPING_FIELDS)}


def flight_cadus() -> list[bytes]:
    layout, coder = frame_layout(LINK), build_channel_coder(LINK)
    mux = MasterChannelMultiplexer(LINK.spacecraft_id, layout, (0,))
    cadus = []
    for i in range(HK_COUNT):
        data = products.HOUSEKEEPING_REPORT.build(housekeeping_values(i))
        packet = PusTm(apid=products.APID_HOUSEKEEPING, service=products.SERVICE_HOUSEKEEPING,
                       subtype=products.SUBTYPE_HK_REPORT, data=data,
                       time=(1000 + i).to_bytes(4, "big") + bytes(2), sequence_count=i,
                       message_type_counter=i)
        mux.push(0, packet.pack())
        while (frame := mux.next_frame(flush=i == HK_COUNT - 1)) is not None:
            cadus.append(coder.encode(frame))
    return cadus


def ground_packets(cadus: list[bytes]) -> bytes:
    """The packet stream our ground recovers, idle packets left out."""
    sync = FrameSynchronizer(frame_layout(LINK), build_channel_coder(LINK))
    channel = VirtualChannelReassembler(0)
    frames = sync.feed(b"".join(cadus)) + sync.finish()
    packets = [p for f in frames for p in channel.feed(f)]
    return b"".join(p for p in packets if ((p[0] << 8 | p[1]) & 0x7FF) != IDLE_APID)


def warnings_of(stream: bytes) -> list[str]:
    records = validate(io.BytesIO(stream), valid_apids=[products.APID_HOUSEKEEPING])
    return [r.getMessage() for r in records if r.levelno >= logging.WARNING]


def test_clean_stream_validates():
    stream = ground_packets(flight_cadus())
    assert len(stream) > HK_COUNT * 60   # every housekeeping packet came through
    assert warnings_of(stream) == []


def test_a_frame_lost_on_the_link_shows_as_a_sequence_gap():
    cadus = flight_cadus()
    del cadus[len(cadus) // 2]
    messages = warnings_of(ground_packets(cadus))
    assert any("Missing packets" in m for m in messages), messages


def test_ccsdspy_reads_our_housekeeping_fields():
    fields = [
        ccsdspy.PacketField(name="pus_flags", data_type="uint", bit_length=8),
        ccsdspy.PacketField(name="service", data_type="uint", bit_length=8),
        ccsdspy.PacketField(name="subtype", data_type="uint", bit_length=8),
        ccsdspy.PacketField(name="message_type_counter", data_type="uint", bit_length=16),
        ccsdspy.PacketField(name="destination_id", data_type="uint", bit_length=16),
        ccsdspy.PacketField(name="time_coarse", data_type="uint", bit_length=32),
        ccsdspy.PacketField(name="time_fine", data_type="uint", bit_length=16),
        ccsdspy.PacketField(name="structure_id", data_type="uint", bit_length=16),
    ] + [ccsdspy.PacketField(name=name, data_type=HK_TYPES[name][0], bit_length=HK_TYPES[name][1])
         for name in products.HOUSEKEEPING_FIELDS] + [
        ccsdspy.PacketField(name="crc", data_type="uint", bit_length=16),
    ]
    decoded = ccsdspy.FixedLength(fields).load(io.BytesIO(ground_packets(flight_cadus())), include_primary_header=True)
    assert decoded["CCSDS_APID"].tolist() == [products.APID_HOUSEKEEPING] * HK_COUNT
    assert decoded["CCSDS_SEQUENCE_COUNT"].tolist() == list(range(HK_COUNT))
    assert decoded["pus_flags"].tolist() == [0x20] * HK_COUNT  # PUS version 2
    assert decoded["service"].tolist() == [products.SERVICE_HOUSEKEEPING] * HK_COUNT
    assert decoded["time_coarse"].tolist() == list(range(1000, 1000 + HK_COUNT))
    for name in products.HOUSEKEEPING_FIELDS:
        assert np.array_equal(decoded[name], [housekeeping_values(i)[name] for i in range(HK_COUNT)])
