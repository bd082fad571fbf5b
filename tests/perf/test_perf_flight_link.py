"""Flight: CADUs from packets on one core (multiplexer, frame header, FECF,
Reed-Solomon depth 5, randomizer), in Mbit/s of CADUs out.

Peer in the same run: spacepackets building the same transfer frames
(TmTransferFrame.pack, FECF included) from the same data fields, frame
building alone, no coding. Checked before timing: the peer's frames are
byte-identical to ours, and the ground decoder takes our CADUs back to every
packet with no error. Times are CPU time of the calling thread
(tests/perf/timing.py), medians of alternated runs.

    cd /work/main && . .venv/bin/activate && pytest tests/perf/test_perf_flight_link.py -m perf -s
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
from ground.decoder import GroundDecoder
from hil.config import KestrelConfig
from tests.perf.timing import alternated_medians
from tests.support import NullArchive

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
    # And what we build is right: the ground takes every CADU back to every packet, error-free.
    ground = GroundDecoder(KestrelConfig(link=LINK), NullArchive(), wallclock=lambda: 0.0)
    ground.feed(b"".join(cadus))
    summary = ground.finish()
    s, p = summary.sync, summary.packets
    assert s["frames_good"] == len(cadus) and s["bytes_skipped"] == 0 and s["symbols_corrected"] == 0
    assert p["packets"] - p["idle_packets"] == PACKETS and p["packet_crc_errors"] == 0 and p["sequence_gaps"] == 0

    octets = sum(map(len, cadus))
    ours, peer = alternated_medians(lambda: build_cadus(packets), lambda: peer_frames(frames),
                                    repeats=REPEATS, warm=False)
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
    print(f"goal >= 50 Mbit/s of CADUs: {mbit(ours):.0f} -> {'met' if mbit(ours) >= 50 else 'NOT MET'}")
    profile = cProfile.Profile()
    profile.enable()
    build_cadus(packets[: PACKETS // 4])
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(8)
    print(out.getvalue())
    assert mbit(ours) >= 50
