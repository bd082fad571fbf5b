"""The impaired radio: error statistics against their binomial bounds, and the line over real ptys.

References: the binomial distribution (errors at a set BER, drops at a set rate), the geometric
distribution of gaps between independent errors (what bursts must differ from), and the wall clock
for the line rate and the outages.
"""
import math
import os
import random
import select
import threading
import time

import pytest
import serial

from hil.impairments import Channel, DirectionCounters, ImpairedLink, LinkProfile, port_baud


def flipped_positions(before: bytes, after: bytes) -> list[int]:
    positions = []
    for i, (a, b) in enumerate(zip(before, after)):
        x = a ^ b
        for bit in range(8):
            if x & (0x80 >> bit):
                positions.append(i * 8 + bit)
    return positions


def run_channel(profile: LinkProfile, octets: int, chunk: int = 1000):
    counters = DirectionCounters()
    channel = Channel(profile, random.Random(profile.seed), counters)
    data = random.Random(99).randbytes(octets)
    out = b"".join(channel.apply(data[i:i + chunk]) for i in range(0, octets, chunk))
    return data, out, counters


@pytest.mark.parametrize("ber", [1e-3, 1e-4])
def test_realised_ber_within_binomial_bounds_of_the_set_ber(ber):
    octets = 2_000_000 if ber < 1e-3 else 250_000
    data, out, counters = run_channel(LinkProfile(ber=ber, seed=5), octets)
    flips = flipped_positions(data, out)
    assert len(flips) == counters.bits_flipped
    bits = octets * 8
    expected = bits * ber
    sd = math.sqrt(bits * ber * (1 - ber))
    # 4.5 sigma either side: about 10 % at 1e-3 and 25 % at 1e-4; a BER off by 2x is 20+ sigma out.
    assert abs(len(flips) - expected) <= 4.5 * sd, (len(flips), expected)
    assert abs(len(flips) - 2 * expected) > 10 * sd and abs(len(flips) - expected / 2) > 10 * sd


def test_the_same_seed_gives_the_same_errors_and_another_seed_others():
    a = run_channel(LinkProfile(ber=1e-3, seed=3), 20000)[1]
    b = run_channel(LinkProfile(ber=1e-3, seed=3), 20000)[1]
    c = run_channel(LinkProfile(ber=1e-3, seed=4), 20000)[1]
    assert a == b != c


def gaps(positions):
    return [b - a for a, b in zip(positions, positions[1:])]


def test_gilbert_elliott_errors_cluster_where_independent_ones_do_not():
    octets = 200_000
    ge = LinkProfile(ber=1e-6, burst_ber=0.05, burst_start=2e-5, burst_bits=400, seed=11)
    data, out, counters = run_channel(ge, octets)
    burst_flips = flipped_positions(data, out)
    realised = len(burst_flips) / (octets * 8)
    # The mean: bursts occupy about burst_bits * burst_start of the bits, each at burst_ber.
    occupancy = counters.burst_bits / (octets * 8)
    assert 0.5 * 400 * 2e-5 < occupancy < 1.5 * 400 * 2e-5
    assert 0.5 * occupancy * 0.05 < realised < 1.5 * occupancy * 0.05
    data2, out2, _ = run_channel(LinkProfile(ber=realised, seed=11), octets)
    independent_flips = flipped_positions(data2, out2)
    assert len(independent_flips) > 100
    # Independent errors at this BER are ~1/BER apart (a geometric gap); burst errors ~1/burst_ber.
    close = 64
    burst_close = sum(g <= close for g in gaps(burst_flips)) / len(gaps(burst_flips))
    independent_close = sum(g <= close for g in gaps(independent_flips)) / len(gaps(independent_flips))
    expected_independent = 1 - (1 - realised) ** close
    assert independent_close < 3 * expected_independent + 0.02
    assert burst_close > 0.8 and burst_close > 10 * independent_close


def test_drops_at_the_set_rate_and_counted():
    data, out, counters = run_channel(LinkProfile(drop=1e-3, seed=2), 500_000)
    n = 500_000
    assert len(out) == n - counters.octets_dropped
    sd = math.sqrt(n * 1e-3)
    assert abs(counters.octets_dropped - n * 1e-3) <= 4.5 * sd


@pytest.mark.parametrize("bad", [dict(ber=1.5), dict(drop=-0.1), dict(burst_start=1e-3), dict(baud=-1),
                                 dict(fifo_octets=-4), dict(outages=((2.0, 1.0),)), dict(latency_s=100)])
def test_profile_refuses_out_of_range_values_by_name(bad):
    with pytest.raises(ValueError, match=next(iter(bad))):
        LinkProfile(**bad)


class Receiver:
    """Reads the ground end in a thread: (arrival time, octets) per chunk."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.chunks: list[tuple[float, bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stop.is_set():
            if select.select([self.fd], [], [], 0.02)[0]:
                self.chunks.append((time.monotonic(), os.read(self.fd, 65536)))

    def close(self):
        self.stop.set()
        self.thread.join()
        os.close(self.fd)

    @property
    def octets(self) -> int:
        return sum(len(c) for _, c in self.chunks)


def write_for(port: serial.Serial, seconds: float, block: int = 256):
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        port.write(bytes(block))


def test_a_clean_line_delivers_its_baud_within_one_percent():
    with ImpairedLink(LinkProfile(baud=57600)) as link:
        rx = Receiver(link.ground_port)
        port = serial.Serial(link.flight_port, 57600, timeout=1, write_timeout=5)
        writer = threading.Thread(target=write_for, args=(port, 3.6))
        writer.start()
        time.sleep(0.5)
        first = rx.octets
        t0 = time.monotonic()
        time.sleep(3.0)
        rate = (rx.octets - first) / (time.monotonic() - t0)
        writer.join()
        port.close()
        rx.close()
    assert abs(rate - 5760) <= 0.01 * 5760, rate
    assert link.counters.down.bits_flipped == link.counters.down.octets_dropped == 0


def test_the_fifo_overflows_when_the_writer_outpaces_the_line_and_every_octet_is_accounted():
    with ImpairedLink(LinkProfile(baud=9600, fifo_octets=2048)) as link:
        rx = Receiver(link.ground_port)
        port = serial.Serial(link.flight_port, 9600, timeout=1)
        port.write(bytes(20000))       # 20 kB at once into a 2 kB modem buffer on a 960 octet/s line
        port.flush()
        time.sleep(0.6)
        c = link.counters.down
        assert c.octets_in == 20000, c
        assert c.fifo_overflows >= 20000 - 2048 - 0.6 * 960 * 1.1
        deadline = time.monotonic() + 5
        while rx.octets < c.octets_in - c.fifo_overflows and time.monotonic() < deadline:
            time.sleep(0.05)
        port.close()
        rx.close()
    assert rx.octets == c.octets_passed == c.octets_in - c.fifo_overflows


def test_an_outage_has_no_octets_and_its_seconds_are_counted():
    profile = LinkProfile(baud=38400, outages=((0.8, 1.8),))
    with ImpairedLink(profile) as link:
        rx = Receiver(link.ground_port)
        port = serial.Serial(link.flight_port, 38400, timeout=1, write_timeout=30)   # the outage holds writes off; a loaded machine adds seconds
        write_for(port, 2.6)
        time.sleep(0.1)
        port.close()
        rx.close()
    start = link.started_at
    times = [t - start for t, _ in rx.chunks]
    inside = [t for t in times if 0.82 < t < 1.78]
    assert not inside, inside[:5]
    assert any(t < 0.8 for t in times) and any(t > 1.8 for t in times)
    assert link.counters.down.outage_octets > 0.9 * 3840
    assert 0.95 <= link.counters.outage_seconds <= 1.05


def test_latency_delays_delivery_and_the_spy_log_holds_both_directions(tmp_path):
    log = tmp_path / "spy.log"
    with open(log, "w") as spy, ImpairedLink(LinkProfile(baud=115200, latency_s=0.3), spy=spy) as link:
        rx = Receiver(link.ground_port)
        port = serial.Serial(link.flight_port, 115200, timeout=1)
        time.sleep(0.1)
        sent = time.monotonic()
        port.write(b"down-octets")
        link.inject_up(b"up-octets")
        got_up = port.read(9)
        up_delay = time.monotonic() - sent
        time.sleep(0.5)
        port.close()
        rx.close()
    assert got_up == b"up-octets" and 0.28 <= up_delay <= 0.5
    assert b"".join(c for _, c in rx.chunks) == b"down-octets"
    assert 0.28 <= rx.chunks[0][0] - sent <= 0.5
    lines = [line.split() for line in log.read_text().splitlines()]
    assert {(d, bytes.fromhex(h)) for _, d, h in lines} == {("down", b"down-octets"), ("up", b"up-octets")}
    assert all(float(t) >= 0.3 for t, _, _ in lines)


def test_the_line_follows_the_baud_the_flight_program_set():
    with ImpairedLink(LinkProfile(baud=0)) as link:
        port = serial.Serial(link.flight_port, 19200, timeout=1)
        time.sleep(0.4)
        assert link.counters.baud == 19200 == port_baud(port.fileno())
        port.close()


def test_half_duplex_turns_the_line_round_and_both_directions_arrive():
    profile = LinkProfile(baud=38400, half_duplex=True, turnaround_s=0.05)
    with ImpairedLink(profile) as link:
        rx = Receiver(link.ground_port)
        port = serial.Serial(link.flight_port, 38400, timeout=2)
        port.write(bytes(1920))            # 0.5 s of line
        time.sleep(0.05)
        link.inject_up(b"x" * 384)          # 0.1 s, waits for the line to turn round
        started = time.monotonic()
        got = port.read(384)
        took = time.monotonic() - started
        time.sleep(0.1)
        port.close()
        rx.close()
    assert got == b"x" * 384 and rx.octets == 1920
    assert took >= 0.45 + 0.05 + 0.1 - 0.05, took
