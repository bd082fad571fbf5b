"""The bench's paced link: a line that carries `baud` (8N1) and no more, and no less while octets wait."""
import os
import select
import threading
import time

import serial

from hil.radio import PacedLink


def receive(path: str, octets: int, timeout: float) -> list[tuple[float, int]]:
    """(arrival time, count) of each chunk read at the ground end until `octets` came."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    got, chunks, deadline = 0, [], time.monotonic() + timeout
    try:
        while got < octets and time.monotonic() < deadline:
            if select.select([fd], [], [], 0.05)[0]:
                n = len(os.read(fd, 65536))
                chunks.append((time.monotonic(), n))
                got += n
    finally:
        os.close(fd)
    return chunks


def send_and_time(link: PacedLink, octets: int, idle_first: float = 0.0) -> tuple[float, int]:
    """Seconds from the write to the last octet at the ground, and the octets that came."""
    result = []
    reader = threading.Thread(target=lambda: result.append(receive(link.ground_port, octets, 20)))
    reader.start()
    port = serial.Serial(link.flight_port, link.baud, timeout=1)
    time.sleep(0.2 + idle_first)
    started = time.monotonic()
    port.write(bytes(octets))
    reader.join()
    port.close()
    chunks = result[0]
    return chunks[-1][0] - started, sum(n for _, n in chunks)


def test_the_line_runs_at_its_baud_and_idle_time_earns_no_credit():
    with PacedLink(38400) as link:
        # 7680 octets at 3840 octets/s: 2 s, however long the line was idle before.
        seconds, octets = send_and_time(link, 7680, idle_first=1.0)
    assert octets == 7680
    assert 1.95 <= seconds <= 2.1, seconds


def test_a_relay_that_is_late_catches_up_while_octets_wait(monkeypatch):
    """The relay's thread loses the CPU for 100 ms at a time (a busy machine): the octets waiting in the
    pty still leave at the line rate on average, as a UART's driver would send them."""
    real_select = select.select
    late = {"n": 0}

    def starved_select(*args):
        if threading.current_thread().name == "paced-link":
            late["n"] += 1
            if late["n"] % 20 == 0:
                time.sleep(0.1)
        return real_select(*args)

    monkeypatch.setattr(select, "select", starved_select)
    with PacedLink(38400) as link:
        seconds, octets = send_and_time(link, 7680)
    assert octets == 7680 and late["n"] >= 20
    assert seconds <= 2.15, seconds
