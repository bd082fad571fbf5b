"""Frame synchronisation on hostile streams: garbage, cuts, bit flips, any read sizes.

Reference: the one-shot decode of the clean stream. The counters must account
for every octet read.
"""
import random

from hypothesis import given, settings, strategies as st

from kestrel.link.config import LinkConfig
from kestrel.link.config import build_channel_coder, frame_layout
from kestrel.link.coding import ASM, pseudo_randomizer_sequence
from flight.multiplexer import MasterChannelMultiplexer
from kestrel.link.spacepacket import SpacePacket
from ground.sync import FrameSynchronizer

LINK = LinkConfig(frame_length=128, reed_solomon=False)


def cadus(count: int, seed: int = 0):
    rnd = random.Random(seed)
    layout = frame_layout(LINK)
    coder = build_channel_coder(LINK)
    mux = MasterChannelMultiplexer(LINK.spacecraft_id, layout, (0,))
    out = []
    seq = 0
    while len(out) < count:
        mux.push(0, SpacePacket(9, seq, rnd.randbytes(rnd.randint(1, 300))).pack())
        seq += 1
        while len(out) < count and (f := mux.next_frame()) is not None:
            out.append(coder.encode(f))
    return out


def synchronizer():
    return FrameSynchronizer(frame_layout(LINK), build_channel_coder(LINK))


def accounted(sync):
    c = sync.counters
    return c.bytes_read == c.bytes_in_frames + c.bytes_skipped + sync.buffered


def test_randomizer_first_octets():
    # 131.0-B: the sequence starts 1111 1111 0100 1000 0000 1110 1100 0000.
    assert pseudo_randomizer_sequence(4).tobytes() == bytes.fromhex("FF480EC0")
    # The first 16 octets as published with the standard.
    assert pseudo_randomizer_sequence(16).tobytes() == bytes.fromhex("FF480EC09A0D70BC8E2C93ADA7B746CE")


def test_randomizer_period_is_255_bits():
    seq = pseudo_randomizer_sequence(255 * 2)
    bits = __import__("numpy").unpackbits(seq)
    assert (bits[:255] == bits[255:510]).all()
    assert not (bits[:127] == bits[127:254]).all()


def test_clean_stream_all_frames():
    stream = b"".join(cadus(50))
    sync = synchronizer()
    frames = sync.feed(stream)
    assert len(frames) == 50
    assert [f.master_channel_frame_count for f in frames] == list(range(50))
    assert sync.counters.bytes_skipped == 0 and accounted(sync)


@given(st.lists(st.integers(1, 600), min_size=1, max_size=200), st.integers(0, 2**16))
@settings(max_examples=60, deadline=None)
def test_split_reads_give_the_one_shot_result(sizes, seed):
    items = cadus(20, seed)
    rnd = random.Random(seed)
    # Garbage between frames, including marker look-alikes.
    stream = b"".join(rnd.randbytes(rnd.randint(0, 40)) + (ASM[:rnd.randint(0, 4)] if rnd.random() < 0.3 else b"") + c
                      for c in items)
    one_shot = [f.master_channel_frame_count for f in synchronizer().feed(stream)]
    assert one_shot == list(range(20))
    sync = synchronizer()
    got, pos, i = [], 0, 0
    while pos < len(stream):
        n = sizes[i % len(sizes)]
        got += [f.master_channel_frame_count for f in sync.feed(stream[pos:pos + n])]
        pos += n
        i += 1
    assert got == one_shot
    assert accounted(sync)


def test_bad_crc_counted_and_skipped_and_cut_stream():
    items = cadus(10, 3)
    damaged = bytearray(items[4])
    damaged[40] ^= 0x10
    items[4] = bytes(damaged)
    stream = b"".join(items)
    cut = stream[: len(stream) - 50]  # the last frame is cut in the middle
    sync = synchronizer()
    frames = sync.feed(cut)
    assert [f.master_channel_frame_count for f in frames] == [0, 1, 2, 3, 5, 6, 7, 8]
    assert sync.counters.frames_bad >= 1
    assert accounted(sync)
    sync.finish()
    c = sync.counters
    assert c.bytes_read == c.bytes_in_frames + c.bytes_skipped
    assert c.bytes_skipped == len(items[4]) + len(items[9]) - 50


@given(st.binary(max_size=3000))
@settings(max_examples=100)
def test_random_bytes_never_raise(noise):
    sync = synchronizer()
    sync.feed(noise)
    assert accounted(sync)


def test_flipped_bits_everywhere_never_raise_and_clean_frames_survive():
    stream = bytearray(b"".join(cadus(200, 7)))
    rnd = random.Random(11)
    for _ in range(60):
        stream[rnd.randrange(len(stream))] ^= 1 << rnd.randrange(8)
    sync = synchronizer()
    frames = sync.feed(bytes(stream))
    # Each flip spoils at most one frame; the rest come through.
    assert 140 <= len(frames) < 200
    assert accounted(sync)


# --- the synchroniser's states: bit slips, phase flips, marker errors, flywheel, coding ---
# Reference: the frames the flight side built (their master channel counts), and
# the octet accounting bytes_read == in frames + skipped + buffered.

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from kestrel.link.errors import ConfigurationError  # noqa: E402
from kestrel.link.tmframe import FrameLayout  # noqa: E402
from ground.decoder import GroundDecoder  # noqa: E402
from tests.support import NullArchive  # noqa: E402

RS_LINK = LinkConfig(frame_length=1115, reed_solomon=True, interleave_depth=5)


def coded_cadus(link, count, seed=0, packet_size=(1, 300)):
    rnd = random.Random(seed)
    layout = frame_layout(link)
    coder = build_channel_coder(link)
    mux = MasterChannelMultiplexer(link.spacecraft_id, layout, (0,))
    out, seq = [], 0
    while len(out) < count:
        mux.push(0, SpacePacket(9, seq % 16384, rnd.randbytes(rnd.randint(*packet_size))).pack())
        seq += 1
        while len(out) < count and (f := mux.next_frame()) is not None:
            out.append(coder.encode(f))
    return out


def sync_for(link, **options):
    return FrameSynchronizer(frame_layout(link), build_channel_coder(link), **options)


def decode_all(sync, stream, chunk=4096):
    frames = []
    for i in range(0, len(stream), chunk):
        frames += sync.feed(stream[i:i + chunk])
    frames += sync.finish()
    c = sync.counters
    assert c.bytes_read == c.bytes_in_frames + c.bytes_skipped
    return [f.master_channel_frame_count for f in frames]


def as_bits(data: bytes) -> np.ndarray:
    return np.unpackbits(np.frombuffer(data, np.uint8))


def from_bits(bits: np.ndarray) -> bytes:
    return np.packbits(bits).tobytes()  # pads the last octet with zeros


@pytest.mark.parametrize("slip", [-7, -3, -1, 1, 2, 5, 8, 13])
def test_a_bit_slip_is_found_again_and_realigned(slip):
    items = cadus(40, 5)
    bits = as_bits(b"".join(items))
    cut = 8 * sum(map(len, items[:20])) - 40  # inside frame 19, behind its FECF
    if slip > 0:
        bits = np.concatenate([bits[:cut], np.ones(slip, np.uint8), bits[cut:]])
    else:
        bits = np.concatenate([bits[:cut], bits[cut - slip:]])
    sync = synchronizer()
    got = decode_all(sync, from_bits(bits))
    assert got == list(range(19)) + list(range(20, 40))
    assert sync.counters.slips == 1 and sync.counters.locks == 1 and sync.counters.frames_bad == 1


@pytest.mark.parametrize("shift", range(1, 8))
def test_stream_starting_off_octet_is_found(shift):
    bits = np.concatenate([np.zeros(shift, np.uint8), as_bits(b"".join(cadus(10, 2)))])
    assert decode_all(synchronizer(), from_bits(bits)) == list(range(10))


def test_inverted_stream_and_a_phase_flip_mid_stream():
    items = cadus(30, 9)
    inverted = bytes(b ^ 0xFF for b in b"".join(items))
    sync = synchronizer()
    assert decode_all(sync, inverted) == list(range(30))
    assert sync.counters.inversions == 1
    # A phase flip at a frame boundary and another inside frame 20.
    bits = as_bits(b"".join(items))
    first = 8 * sum(map(len, items[:10]))
    second = 8 * sum(map(len, items[:20])) + 200
    bits[first:second] ^= 1
    sync = synchronizer()
    got = decode_all(sync, from_bits(bits))
    assert got == [i for i in range(30) if i != 20]
    assert sync.counters.inversions == 2


def test_marker_bit_errors_within_and_beyond_the_lock_tolerance():
    items = [bytearray(c) for c in cadus(30, 4)]
    for i in range(1, 29):
        for bit in random.Random(i).sample(range(32), 3 if i < 15 else 9):
            items[i][bit // 8] ^= 0x80 >> (bit % 8)
    sync = synchronizer()
    assert decode_all(sync, b"".join(items)) == list(range(30))
    # Up to lock_errors the marker holds; beyond, the flywheel keeps the lock
    # because each frame checks out.
    assert sync.counters.markers_flywheeled == 14
    assert sync.counters.locks == 1 and sync.counters.false_markers == 0


def test_search_tolerance_finds_a_damaged_first_marker():
    items = [bytearray(c) for c in cadus(5, 4)]
    items[0][0] ^= 0x01
    assert decode_all(synchronizer(), b"".join(items)) == list(range(5))
    assert decode_all(sync_for(LINK, search_errors=0), b"".join(items)) == list(range(1, 5))


def test_flywheel_loses_lock_after_too_many_missing_markers():
    items = cadus(30, 6)
    garbage = bytes(len(items[0]) * 5 + 17)  # zeros: no marker, no frame
    stream = b"".join(items[:10]) + garbage + b"".join(items[10:])
    sync = synchronizer()
    assert decode_all(sync, stream) == list(range(30))
    c = sync.counters
    assert c.locks == 2 and c.locks_lost == 1
    assert c.bytes_skipped == len(garbage)


def test_reed_solomon_corrects_symbol_errors_and_flags_what_it_cannot():
    items = [bytearray(c) for c in coded_cadus(RS_LINK, 12, 1)]
    rng = np.random.default_rng(3)
    injected = 0
    for i, cadu in enumerate(items):
        errors = 17 if i == 6 else 6   # frame 6: one codeword beyond the limit
        for codeword in range(5):
            count = errors if codeword == 2 else 6
            symbols = rng.choice(255, count, replace=False)
            for s in symbols:
                cadu[4 + s * 5 + codeword] ^= int(rng.integers(1, 256))
            injected += count if i != 6 else 0
    sync = sync_for(RS_LINK)
    got = decode_all(sync, b"".join(items), chunk=1000)
    assert got == [i for i in range(12) if i != 6]
    c = sync.counters
    assert c.codewords_uncorrectable == 1 and c.frames_bad == 1
    # Frame 6's four good codewords were corrected too, though the frame is dropped.
    assert c.symbols_corrected == injected + 4 * 6
    assert c.crc_failures == 0


@pytest.mark.parametrize("depth", [1, 2, 3, 4, 5, 8])
def test_every_interleaving_depth_with_slips_and_flips(depth):
    link = LinkConfig(frame_length=depth * 100, reed_solomon=True, interleave_depth=depth)
    items = coded_cadus(link, 12, depth)
    bits = as_bits(b"".join(items))
    cut = 8 * sum(map(len, items[:6])) + 3
    bits = np.concatenate([bits[:cut], np.zeros(3, np.uint8), bits[cut:]])
    bits[cut:] ^= 1
    sync = sync_for(link)
    got = decode_all(sync, from_bits(bits), chunk=333)
    assert got == list(range(12))
    assert sync.counters.inversions == 1


def test_a_link_without_checks_needs_the_next_marker_to_lock():
    link = LinkConfig(frame_length=128, fecf=False, reed_solomon=False)
    items = coded_cadus(link, 10, 2)
    rnd = random.Random(1)
    stream = rnd.randbytes(50) + ASM + rnd.randbytes(300) + b"".join(items)
    sync = sync_for(link)
    assert decode_all(sync, stream) == list(range(10))
    assert sync.counters.false_markers == 1


def test_bad_synchronizer_configurations_are_refused():
    with pytest.raises(ConfigurationError, match="coder carries 128"):
        FrameSynchronizer(FrameLayout(100), build_channel_coder(LINK))
    with pytest.raises(ConfigurationError, match="must not exceed lock_errors"):
        sync_for(LINK, search_errors=4, lock_errors=2)
    with pytest.raises(ConfigurationError, match="flywheel"):
        sync_for(LINK, flywheel=-1)


def test_ground_refuses_an_unusable_virtual_channel_and_counts_foreign_ones():
    from hil.config import KestrelConfig
    with pytest.raises(ConfigurationError, match="vc_priority"):
        GroundDecoder(KestrelConfig(link=LinkConfig(vc_priority=(0, 7))), NullArchive())
    with pytest.raises(ConfigurationError, match="frame_length 1000 does not fit"):
        LinkConfig(frame_length=1000, reed_solomon=True, interleave_depth=3)
    config = KestrelConfig(link=LinkConfig(frame_length=128, vc_priority=(0, 1, 2), reed_solomon=False))
    layout, coder = frame_layout(config.link), build_channel_coder(config.link)
    mux = MasterChannelMultiplexer(config.link.spacecraft_id, layout, (0, 3))
    for i in range(5):
        mux.push(3, SpacePacket(9, i, bytes(200)).pack())
    stream = b"".join(coder.encode(f) for f in iter(lambda: mux.next_frame(flush=True), None))
    stream += coder.encode(mux.idle_frame())
    decoder = GroundDecoder(config, NullArchive())
    decoder.feed(stream)
    summary = decoder.finish()
    assert summary.packets["frames_unknown_vc"] == 9 and summary.packets["idle_frames"] == 1
    assert summary.packets["packets"] == 0 and set(decoder.channels) == {0, 1, 2}
