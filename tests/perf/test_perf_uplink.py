"""The uplink path, measured: TC frames a second through the whole receive chain (CLTU decoding, frame checks,
SDLS, FARM-1, packet checks) with SDLS on and off, and the memory an SA holds.

Every frame is first checked to come out as the command it carries. CPU time of this thread
(tests/perf/timing.py); with SDLS the counter's fsync is I/O wait, so the wall time a frame costs is given
beside it, measured on this machine's disk.
"""
import time
import tracemalloc

import pytest

from flight.uplink import CommandReceiver, UplinkPath
from ground.uplink import TcSender
from kestrel.link.config import LinkConfig, SecurityAssociationConfig, UplinkConfig
from kestrel.link.sdls import SecurityAssociation, associations_from_config, write_counter
from kestrel.link.telecommand import PusTc

from .timing import alternated_medians

pytestmark = pytest.mark.perf
FRAMES = 200
LINK = LinkConfig()
TC = PusTc(50, 8, 1, bytes(40), 1)


def _uplink(tmp_path, protected: bool) -> UplinkConfig:
    if not protected:
        return UplinkConfig()
    key = tmp_path / "k.key"
    key.write_bytes(bytes(range(32)))
    key.chmod(0o600)
    return UplinkConfig(counter_dir=str(tmp_path / "flight"), security_associations=(
        SecurityAssociationConfig(spi=5, vcid=0, key_file=str(key)),))


def _cltus(tmp_path, uplink: UplinkConfig, count: int, first: int) -> list[bytes]:
    wire: list[bytes] = []
    (tmp_path / "ground").mkdir(exist_ok=True)
    if uplink.security_associations and not (tmp_path / "ground" / "sa-5.seq").exists():
        write_counter(tmp_path / "ground", 5, 0)
    sender = TcSender(LINK, uplink, wire.append, tmp_path / "ground", time.monotonic)
    for _ in range(count):
        sender.fop.transmit_bd(TC.pack())
    return wire


def test_frames_per_second_with_and_without_sdls(tmp_path):
    results = {}
    for protected in (False, True):
        directory = tmp_path / ("sdls" if protected else "clear")
        directory.mkdir()
        (directory / "flight").mkdir()
        uplink = _uplink(directory, protected)
        if protected:
            write_counter(directory / "flight", 5, 0)
        batches = [_cltus(directory, uplink, FRAMES, 0) for _ in range(6)]
        associations, problems = associations_from_config(uplink)
        assert problems == []
        receiver = CommandReceiver(lambda: None, depth=FRAMES, path_factory=lambda room: UplinkPath(
            LINK, uplink, associations, room))
        receiver.feed(b"".join(batches.pop(0)))     # in the order sent: SDLS sequence numbers rise
        assert receiver.take() == [TC] * FRAMES and not receiver.counters.rejections   # checked first
        runs = iter(batches)

        def run():
            receiver.feed(b"".join(next(runs)))
            assert len(receiver.take()) == FRAMES

        wall = time.perf_counter()
        cpu, = alternated_medians(run, repeats=4, warm=True)
        wall = (time.perf_counter() - wall) / 5
        results[protected] = (FRAMES / cpu, FRAMES / wall)
    print(f"\nuplink, {len(TC.pack())}-octet TC in a BD frame, one core:")
    for protected, (cpu_rate, wall_rate) in results.items():
        print(f"  SDLS {'on ' if protected else 'off'}: {cpu_rate:8.0f} frames/s CPU, {wall_rate:8.0f} frames/s wall"
              + (" (one fsync'd counter write a frame)" if protected else ""))
    print(f"  SDLS costs {results[False][0] / results[True][0]:.2f}x CPU")


def test_memory_per_security_association(tmp_path):
    key = bytes(range(32))
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    sas = [SecurityAssociation(spi, 0, key) for spi in range(1, 1001)]
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(sas) == 1000
    print(f"\nmemory per SA (Python heap, tracemalloc, 1000 SAs; the OpenSSL key schedule outside it): "
          f"{size / 1000:.0f} bytes")
