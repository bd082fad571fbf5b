"""Flight: CADUs from packets on one core (multiplexer, frame header, FECF,
Reed-Solomon depth 5, randomizer), in Mbit/s of CADUs out.

Peer in the same run: spacepackets building the same transfer frames
(TmTransferFrame.pack, FECF included) from the same data fields, frame
building alone, no coding.

    cd /work/main && /work/venv/bin/python -m pytest -m perf -s tests/perf/test_perf_flight_link.py
"""
import cProfile
import io
import pstats

import numpy as np
import pytest

from kestrel.link.config import LinkConfig
from kestrel.link.config import build_channel_coder, frame_layout
from flight.multiplexer import MasterChannelMultiplexer
from kestrel.link.spacepacket import PusTm
from kestrel.link.tmframe import TmFrame
from tests.support import median_seconds

pytestmark = pytest.mark.perf

LINK = LinkConfig(frame_length=1115, reed_solomon=True, interleave_depth=5)
PACKETS = 20000
REPEATS = 3


def make_packets(seed: int = 3) -> list[bytes]:
    rng = np.random.default_rng(seed)
    payload = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    packets = []
    for seq in range(PACKETS):
        size = int(rng.integers(100, 2000))
        packets.append(PusTm(apid=300, service=128, subtype=1, data=payload[:size], time=bytes(6),
                             sequence_count=seq % 16384).pack())
    return packets


def build_cadus(packets: list[bytes]) -> list[bytes]:
    layout, coder = frame_layout(LINK), build_channel_coder(LINK)
    mux = MasterChannelMultiplexer(LINK.spacecraft_id, layout, (0, 1), max_pending_octets=1 << 16)
    cadus = []
    for packet in packets:
        if not mux.push(0, packet):
            raise AssertionError("queue bound reached: the benchmark drains after every packet")
        while (frame := mux.next_frame()) is not None:
            cadus.append(coder.encode(frame))
    while (frame := mux.next_frame(flush=True)) is not None:
        cadus.append(coder.encode(frame))
    return cadus


def peer_frames(fields: list[TmFrame]) -> list[bytes]:
    """The same frames built by the peer; it takes the FECF as given, so it is
    computed with the CRC library the peer itself uses (fastcrc)."""
    from fastcrc import crc16
    from spacepackets.ccsds.tm_frame import (MasterChannelId, TmFramePrimaryHeader, TmTransferFrame,
                                             TransferFrameDataFieldStatus)
    out = []
    for f in fields:
        status = TransferFrameDataFieldStatus(False, False, False, 0b11, f.first_header_pointer)
        header = TmFramePrimaryHeader(MasterChannelId(0, f.spacecraft_id), f.virtual_channel_id, False,
                                      f.master_channel_frame_count, f.virtual_channel_frame_count, status)
        body = TmTransferFrame(LINK.frame_length - 2, header, None, f.data, None, None).pack()
        out.append(body + crc16.ibm_3740(body).to_bytes(2, "big"))
    return out


def test_flight_cadu_building_throughput():
    packets = make_packets()
    cadus = build_cadus(packets)
    coder = build_channel_coder(LINK)
    layout = frame_layout(LINK)
    frames = []
    for cadu in cadus:
        coded = coder.derandomize(cadu[4:])
        frames.append(TmFrame.unpack(coded[:LINK.frame_length], layout))
    # The peer builds byte-identical frames: the comparison is like for like.
    assert peer_frames(frames[:50]) == [f.pack(layout) for f in frames[:50]]

    octets = sum(map(len, cadus))
    ours = median_seconds(build_cadus, packets, repeats=REPEATS)
    peer = median_seconds(peer_frames, frames, repeats=REPEATS)
    mbit = lambda seconds: octets * 8 / seconds / 1e6  # noqa: E731
    print()
    print(f"{len(packets)} packets of 113..2013 octets -> {len(cadus)} CADUs of {len(cadus[0])} octets "
          f"({octets / 1e6:.1f} MB), RS depth {LINK.interleave_depth}, randomized")
    print("| path | median s | Mbit/s of CADUs | ratio to peer |")
    print("|---|---|---|---|")
    print(f"| kestrel flight: multiplexer, header, FECF, RS encode, randomizer | {ours:.2f} | {mbit(ours):.0f} "
          f"| {peer / ours:.2f} |")
    print(f"| spacepackets TmTransferFrame.pack, same frames, no coding (peer) | {peer:.2f} | {mbit(peer):.0f} "
          f"| 1.00 |")
    profile = cProfile.Profile()
    profile.enable()
    build_cadus(packets[: PACKETS // 4])
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(8)
    print(out.getvalue())
    assert mbit(ours) >= 50
