"""Ground end to end: a 50 MB capture of CADUs at interleaving depth 5, with random
symbol errors, from frame sync to checked packets, on one core.

Peer in the same run: spacepackets' TmTransferFrame.unpack over the same
frames (frame parsing alone, no sync, no coding, no packets). The archive is a
null object: SQLite writes are not what this measures. Checked before timing:
every frame decoded, every injected symbol error corrected, every packet out
with a good CRC and no sequence gap; the peer reads the same data fields.
Times are CPU time of the calling thread (tests/perf/timing.py), medians of
alternated runs.

    cd /work/main && . .venv/bin/activate && pytest tests/perf/test_perf_ground.py -m perf -s
"""
import cProfile
import io
import os
import pstats

import numpy as np
import pytest

from hil.config import KestrelConfig
from kestrel.link.config import LinkConfig
from kestrel.link.config import build_channel_coder, frame_layout
from flight.multiplexer import MasterChannelMultiplexer
from kestrel.link.spacepacket import PusTm
from ground.decoder import GroundDecoder
from tests.perf.timing import alternated_medians
from tests.support import NullArchive

pytestmark = pytest.mark.perf

LINK = LinkConfig(frame_length=1115, reed_solomon=True, interleave_depth=5)
CAPTURE_OCTETS = int(os.environ.get("KESTREL_PERF_CAPTURE_MB", "50")) * 1_000_000
ERRORS_PER_CODEWORD = 4
REPEATS = 3
CHUNK = 1 << 16
# A CUC time in 2033 (4 coarse, 2 fine octets from 1958): the ground converts every packet time.
PACKET_TIME = (2_364_000_000).to_bytes(4, "big") + bytes(2)


def build_capture(seed: int = 7) -> tuple[bytes, list[bytes], int]:
    """CADUs made by the flight builders, then symbol errors in every codeword."""
    rng = np.random.default_rng(seed)
    layout, coder = frame_layout(LINK), build_channel_coder(LINK)
    mux = MasterChannelMultiplexer(LINK.spacecraft_id, layout, (0,), max_pending_octets=1 << 20)
    payload = rng.integers(0, 256, 1 << 16, dtype=np.uint8).tobytes()
    cadus, frames, packets, seq = [], [], 0, 0
    target = CAPTURE_OCTETS // coder.cadu_length + 1
    while len(cadus) < target:
        size = int(rng.integers(100, 2000))
        start = int(rng.integers(0, len(payload) - size))
        mux.push(0, PusTm(apid=300, service=128, subtype=1, data=payload[start:start + size],
                          time=PACKET_TIME, sequence_count=seq % 16384).pack())
        seq += 1
        while (frame := mux.next_frame()) is not None:
            frames.append(frame)
            cadus.append(coder.encode(frame))
    packets = seq
    block = np.frombuffer(b"".join(cadus), np.uint8).reshape(len(cadus), -1).copy()
    n = len(cadus)
    depth = LINK.interleave_depth
    # ERRORS_PER_CODEWORD distinct symbol positions in each codeword of each CADU.
    positions = np.argsort(rng.random((n, depth, 255)), axis=2)[:, :, :ERRORS_PER_CODEWORD]
    columns = 4 + positions * depth + np.arange(depth)[None, :, None]
    rows = np.broadcast_to(np.arange(n)[:, None, None], columns.shape)
    block[rows, columns] ^= rng.integers(1, 256, columns.shape, dtype=np.uint8)
    return block.tobytes(), frames, packets


def decode(capture: bytes) -> dict:
    decoder = GroundDecoder(KestrelConfig(link=LINK), NullArchive(), wallclock=lambda: 0.0)
    view = memoryview(capture)
    for i in range(0, len(capture), CHUNK):
        decoder.feed(view[i:i + CHUNK])
    return decoder.finish()


def peer_fields(frames: list[bytes]) -> list[bytes]:
    from spacepackets.ccsds.tm_frame import TmTransferFrame
    return [TmTransferFrame.unpack(raw, LINK.frame_length, has_error_control_field=True).data_field
            for raw in frames]


def peer_unpack(frames: list[bytes]) -> None:
    from spacepackets.ccsds.tm_frame import TmTransferFrame
    for raw in frames:
        TmTransferFrame.unpack(raw, LINK.frame_length, has_error_control_field=True)


def test_ground_end_to_end_throughput():
    capture, frames, packets = build_capture()
    summary = decode(capture)
    s, p = summary.sync, summary.packets
    assert s["frames_good"] == len(frames) and s["codewords_uncorrectable"] == 0
    assert s["symbols_corrected"] == len(frames) * LINK.interleave_depth * ERRORS_PER_CODEWORD
    assert p["packets"] >= packets - 2 and p["packet_crc_errors"] == 0 and p["sequence_gaps"] == 0
    assert peer_fields(frames[:50]) == [frame[6:-2] for frame in frames[:50]]  # no OCF: header 6, FECF 2

    peer_frames = frames[: max(1, len(frames) // 10)]  # the peer is slow: a tenth, scaled
    ours, peer = alternated_medians(lambda: decode(capture), lambda: peer_unpack(peer_frames),
                                    repeats=REPEATS, warm=False)
    peer *= len(frames) / len(peer_frames)
    mbit = lambda seconds: len(capture) * 8 / seconds / 1e6  # noqa: E731
    print()
    print(f"capture: {len(capture) / 1e6:.1f} MB, {len(frames)} CADUs of {len(capture) // len(frames)} octets, "
          f"{ERRORS_PER_CODEWORD} symbol errors per codeword, depth {LINK.interleave_depth}, {p['packets']} packets")
    print("| path | median s | Mbit/s of CADUs | ratio to peer |")
    print("|---|---|---|---|")
    print(f"| kestrel ground: sync, derandomize, RS, FECF, VC, packets, PUS CRC | {ours:.2f} | {mbit(ours):.0f} "
          f"| {peer / ours:.2f} |")
    print(f"| spacepackets TmTransferFrame.unpack alone (peer) | {peer:.2f} | {mbit(peer):.0f} | 1.00 |")

    print(f"goal >= 100 Mbit/s of CADUs: {mbit(ours):.0f} -> {'met' if mbit(ours) >= 100 else 'NOT MET'}")
    profile = cProfile.Profile()
    profile.enable()
    decode(capture[: len(capture) // 5])
    profile.disable()
    out = io.StringIO()
    pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(8)
    print(out.getvalue())
    assert mbit(ours) >= 100
