"""The ground decoder against hostile streams: random, truncated, bit-slipped,
inverted and corrupted, with and without Reed-Solomon, at several interleaving depths.

The property: no exception, no hang, bounded memory, and the octet accounting
bytes_read == bytes in accepted CADUs + bytes skipped + bytes buffered holds
after every read. Reference: the frames the flight side sent; whatever comes
out must be one of them, in order. The default run is a short hypothesis
property; `-m slow` runs a longer seeded campaign.
"""
import os
import random
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from hil.config import KestrelConfig
from kestrel.link.config import LinkConfig
from kestrel.link.config import build_channel_coder, frame_layout
from flight.multiplexer import MasterChannelMultiplexer
from kestrel.link.spacepacket import PusTm
from ground.decoder import GroundDecoder
from tests.support import NullArchive

LINKS = (
    LinkConfig(frame_length=128, reed_solomon=False),
    LinkConfig(frame_length=128, fecf=False, randomize=False, reed_solomon=False),
    LinkConfig(frame_length=223, reed_solomon=True, interleave_depth=1),
    LinkConfig(frame_length=2 * 150, reed_solomon=True, interleave_depth=2, ocf=True),
    LinkConfig(frame_length=5 * 120, reed_solomon=True, interleave_depth=5, randomize=False),
    LinkConfig(frame_length=8 * 60, reed_solomon=True, interleave_depth=8),
)


class RecordingArchive(NullArchive):
    """Keeps only which packets arrived."""

    def __init__(self):
        self.packets = []

    def packet(self, received_at, identity, time_status, service, subtype, length):
        self.packets.append((identity.apid, identity.sequence_count, length))
        return len(self.packets)


def clean_stream(link, frames: int, rnd: random.Random) -> tuple[bytes, list[bytes]]:
    layout, coder = frame_layout(link), build_channel_coder(link)
    mux = MasterChannelMultiplexer(link.spacecraft_id, layout, tuple(link.vc_priority),
                                   ocf_source=lambda: b"\x01\x02\x03\x04")
    out, packets, seq = [], [], 0
    counts = {}
    while len(out) < frames:
        apid = 200 + seq % 3
        counts[apid] = counts.get(apid, -1) + 1
        packet = PusTm(apid=apid, service=128, subtype=1, data=rnd.randbytes(rnd.randint(0, 400)),
                       time=bytes(6), sequence_count=counts[apid] % 16384).pack()
        packets.append(packet)
        # One APID stays on one virtual channel, so its packets stay in order.
        mux.push(link.vc_priority[apid % 2], packet)
        seq += 1
        while len(out) < frames and (f := mux.next_frame(flush=rnd.random() < 0.2)) is not None:
            out.append(coder.encode(f))
    return b"".join(out), packets


def damage(stream: bytes, rnd: random.Random, kinds: list[str]) -> bytes:
    bits = np.unpackbits(np.frombuffer(stream, np.uint8))
    for kind in kinds:
        n = len(bits)
        if n < 64:
            break
        at = rnd.randrange(n)
        if kind == "flip":           # scattered bit errors
            idx = np.array([rnd.randrange(n) for _ in range(rnd.randint(1, 200))])
            bits[idx] ^= 1
        elif kind == "burst":        # a burst of garbage over a stretch
            length = min(rnd.randint(8, 8000), n - at)
            bits[at:at + length] = np.frombuffer(rnd.randbytes(length), np.uint8) & 1
        elif kind == "slip":         # bits lost or inserted
            k = rnd.randint(1, 40)
            if rnd.random() < 0.5:
                bits = np.concatenate([bits[:at], bits[at + k:]])
            else:
                bits = np.concatenate([bits[:at], np.frombuffer(rnd.randbytes(k), np.uint8) & 1, bits[at:]])
        elif kind == "invert":       # a BPSK phase flip from here on
            bits[at:] ^= 1
        elif kind == "truncate":
            bits = bits[:at]
        elif kind == "insert":       # random octets, marker look-alikes among them
            junk = rnd.randbytes(rnd.randint(0, 600))
            if rnd.random() < 0.5:
                junk += bytes.fromhex("1ACFFC1D")[:rnd.randint(1, 4)]
            bits = np.concatenate([bits[:at], np.unpackbits(np.frombuffer(junk, np.uint8)), bits[at:]])
    return np.packbits(bits).tobytes()


def run_decoder(link, stream: bytes, rnd: random.Random, sent_packets: list[bytes]):
    config = KestrelConfig(link=link)
    archive = RecordingArchive()
    decoder = GroundDecoder(config, archive, wallclock=lambda: 0.0)
    sync = decoder.sync
    cadu_length = sync.coder.cadu_length
    pos = 0
    while pos < len(stream):
        n = rnd.choice((1, 7, 100, 1000, 4096, 65536))
        decoder.feed(stream[pos:pos + n])
        pos += n
        c = sync.counters
        assert c.bytes_read == c.bytes_in_frames + c.bytes_skipped + sync.buffered
        # Bounded: at most two CADUs and a slip window wait for their look-ahead.
        assert len(sync._buffer) <= 2 * cadu_length + 16 + n
        for channel in decoder.channels.values():
            assert len(channel._partial) <= 65542 + link.frame_length
    summary = decoder.finish()
    s = summary.sync
    assert s["bytes_read"] == len(stream) == s["bytes_in_frames"] + s["bytes_skipped"]
    if link.fecf or link.reed_solomon:
        # FECF and packet CRC together let a damaged packet through about once in 2**32.
        sent: dict[int, list] = {}
        for p in sent_packets:
            sent.setdefault(((p[0] << 8) | p[1]) & 0x7FF, []).append((((p[2] << 8) | p[3]) & 0x3FFF, len(p)))
        position: dict[int, int] = {}
        for apid, count, length in archive.packets:
            # In order within each APID (virtual channels interleave APIDs), each one sent.
            position[apid] = sent[apid].index((count, length), position.get(apid, 0)) + 1
    return decoder, summary


@pytest.mark.parametrize("link", LINKS, ids=lambda l: f"rs{int(l.reed_solomon)}-i{l.interleave_depth}-fecf{int(l.fecf)}")
def test_clean_streams_decode_every_packet(link):
    rnd = random.Random(1)
    stream, packets = clean_stream(link, 40, rnd)
    decoder, summary = run_decoder(link, stream, rnd, packets)
    assert summary.sync["frames_good"] == 40 and summary.sync["bytes_skipped"] == 0
    assert summary.packets["packet_crc_errors"] == 0 and summary.packets["sequence_gaps"] == 0


kinds = st.lists(st.sampled_from(["flip", "burst", "slip", "invert", "truncate", "insert"]), max_size=6)


@given(st.sampled_from(range(len(LINKS))), st.integers(0, 2**32 - 1), kinds)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_hostile_streams_never_raise_and_account_for_every_octet(link_index, seed, damage_kinds):
    link = LINKS[link_index]
    rnd = random.Random(seed)
    stream, packets = clean_stream(link, rnd.randint(0, 12), rnd)
    stream = damage(stream, rnd, damage_kinds)
    started = time.monotonic()
    run_decoder(link, stream, rnd, packets)
    assert time.monotonic() - started < 20


@given(st.sampled_from(range(len(LINKS))), st.binary(max_size=5000))
@settings(max_examples=60, deadline=None)
def test_pure_noise_never_raises(link_index, noise):
    run_decoder(LINKS[link_index], noise, random.Random(len(noise)), [])


@pytest.mark.slow
def test_fuzz_campaign():
    """Seeded campaign: KESTREL_FUZZ_SECONDS (default 120) of damaged streams over every link."""
    budget = float(os.environ.get("KESTREL_FUZZ_SECONDS", "120"))
    master = random.Random(int(os.environ.get("KESTREL_FUZZ_SEED", "20240611")))
    deadline = time.monotonic() + budget
    runs = 0
    while time.monotonic() < deadline:
        seed = master.getrandbits(32)
        rnd = random.Random(seed)
        link = LINKS[rnd.randrange(len(LINKS))]
        stream, packets = clean_stream(link, rnd.randint(0, 60), rnd)
        chosen = [rnd.choice(["flip", "burst", "slip", "invert", "truncate", "insert"])
                  for _ in range(rnd.randint(0, 10))]
        stream = damage(stream, rnd, chosen)
        if rnd.random() < 0.1:
            stream += rnd.randbytes(rnd.randint(0, 100000))
        try:
            run_decoder(link, stream, rnd, packets)
        except AssertionError as exc:
            raise AssertionError(f"seed {seed}, link {link}, damage {chosen}: {exc}") from exc
        runs += 1
    assert runs > 0
