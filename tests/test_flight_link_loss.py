"""The flight program loses its radio port and carries on; a clock the CUC field cannot hold does not stop it.

Peers are real: a TCP radio server on loopback that drops the connection and
listens again (socket://), a pseudo-terminal that vanishes and comes back
under the same name (a USB radio re-enumerating), and the ground decoder,
which must find the outage events in what arrives after the reconnect.
"""
import dataclasses
import functools
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from flight.downlink import Downlink
from flight.executive import Executive
from flight.telemetry import TelemetryPacketFactory
from ground.archive import GroundArchive
from ground.decoder import GroundDecoder
from hil.config import KestrelConfig
from kestrel import products
from kestrel.products import TIME_STATUS_OUT_OF_RANGE, TIME_STATUS_VALID
from kestrel.link.port import ReconnectConfig, open_port
from kestrel.link.spacepacket import PusTm
from kestrel.link.timecode import CucCodec, CucConfig

SOURCE = "sim://clear?width=64&height=64"


class RadioServer:
    """A radio server on 127.0.0.1 taking one connection at a time and keeping what each delivered."""

    def __init__(self):
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self.connections: list[bytearray] = []
        self._connection = None
        self._start()

    def _start(self):
        self._thread = threading.Thread(target=self._serve, args=(self._listener,), daemon=True)
        self._thread.start()

    def _serve(self, listener):
        try:
            connection, _ = listener.accept()
        except OSError:
            return   # closed before anyone came
        received = bytearray()
        self.connections.append(received)
        self._connection = connection
        while True:
            try:
                chunk = connection.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            received.extend(chunk)

    def wait_for(self, connections: int, octets: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not (len(self.connections) >= connections and len(self.connections[connections - 1]) >= octets):
            assert time.monotonic() < deadline, f"connection {connections} did not bring {octets} octets"
            time.sleep(0.02)

    def drop(self) -> None:
        """The server goes away: its connection closes and nobody listens."""
        self._connection.shutdown(socket.SHUT_RDWR)
        self._connection.close()
        self._listener.close()
        self._thread.join(2)

    def listen(self) -> None:
        """Back on the same port."""
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._start()

    def close(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)   # the flight program closes its end when it stops
        self._listener.close()


def ground_decode(config, stream: bytes, out):
    """The ground decoder over one connection's octets; the archive it filled."""
    archive = GroundArchive(out)
    decoder = GroundDecoder(config, archive)
    for i in range(0, len(stream), 1000):
        decoder.feed(stream[i:i + 1000])
    summary = decoder.finish()
    archive.close()
    return summary, sqlite3.connect(out / "archive.sqlite")


def events(db) -> list[tuple[int, int, str]]:
    return db.execute("SELECT severity, event_id, text FROM events ORDER BY id").fetchall()


def last_housekeeping(db, *names) -> tuple:
    return db.execute(f"SELECT {', '.join(names)} FROM housekeeping ORDER BY id DESC").fetchone()


def frames_reported(db) -> list[int]:
    return [r[0] for r in db.execute("SELECT frame_index FROM detection_reports ORDER BY id")]


def test_flight_program_reconnects_when_its_socket_peer_closes(tmp_path):
    """The issue: a closed peer gave 10 errors a second and no reconnect. Now: one line each way, and data follows."""
    server = RadioServer()
    flight = subprocess.Popen([sys.executable, "-m", "flight", "--port", server.url, "--source", SOURCE,
                               "--max-frames", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        server.wait_for(1, 3000)
        server.drop()
        time.sleep(1.0)
        server.listen()
        _, err = flight.communicate(timeout=30)
    finally:
        if flight.poll() is None:
            flight.kill()
    server.close()
    assert flight.returncode == 0, err
    assert len(server.connections) == 2, err
    lines = err.splitlines()
    lost = [line for line in lines if "radio port lost" in line]
    back = [line for line in lines if "radio port back after" in line]
    assert len(lost) == 1 and len(back) == 1, err
    assert "Connection reset" in lost[0] or "Broken pipe" in lost[0] or "write failed" in lost[0], err
    # Nothing else was said about the port: no error per write, no line per attempt.
    assert sum("radio port" in line or "write failed" in line for line in lines) == 2, err

    config = KestrelConfig()
    before, first = ground_decode(config, bytes(server.connections[0]), tmp_path / "before")
    after, second = ground_decode(config, bytes(server.connections[1]), tmp_path / "after")
    assert after.sync["frames_bad"] == 0 and after.sync["bytes_skipped"] == 0
    said = events(second)
    ids = [event_id for _, event_id, _ in said]
    assert ids.count(products.EVENT_LINK_ERROR) == 1 and ids.count(products.EVENT_LINK_RESTORED) == 1
    assert ids.index(products.EVENT_LINK_ERROR) < ids.index(products.EVENT_LINK_RESTORED)
    restored = next(text for _, event_id, text in said if event_id == products.EVENT_LINK_RESTORED)
    seconds = float(restored.split("after ")[1].split(" s")[0])
    assert 0.5 <= seconds <= 5.0, restored
    assert said[-1][2] == "kestrel-flight stopping after 40 frames"
    assert last_housekeeping(second, "link_outages", "link_reconnects", "cadus_interrupted", "frames_processed") \
        == (1, 1, 1, 40)
    assert last_housekeeping(second, "link_down_s")[0] in (1, 2, 3, 4)
    # What was queued while the port was down came after the reconnect: the frames run on to the
    # last, and only what the dead socket had already taken is missing.
    early, late = frames_reported(first), frames_reported(second)
    assert early == list(range(len(early))) and late[-1] == 39
    assert late == list(range(late[0], 40))
    # What the OS had taken for the dead socket is lost to this pass (a CADU or two, each several packets);
    # it stays in the store, offered and not acknowledged, for the ground to have replayed.
    assert late[0] - len(early) <= 4, (early, late)
    assert before.packets["detection_reports"] == len(early)


def test_a_vanished_serial_device_is_reopened_when_it_comes_back(tmp_path):
    """A USB radio re-enumerating: its name (a link, as /dev/serial/by-id/ has) points to a new device."""
    name = tmp_path / "radio"
    master, slave = os.openpty()
    os.symlink(os.ttyname(slave), name)
    received = [bytearray(), bytearray()]

    def read(fd, into):
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                return
            if not chunk:
                return
            into.extend(chunk)

    reader = threading.Thread(target=read, args=(master, received[0]), daemon=True)
    reader.start()
    flight = subprocess.Popen([sys.executable, "-m", "flight", "--port", str(name), "--source", SOURCE,
                               "--max-frames", "40"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while len(received[0]) < 3000:
            assert time.monotonic() < deadline and flight.poll() is None, flight.stderr.read()
            time.sleep(0.02)
        # The device goes: its node is gone, writes to what the program holds fail.
        os.unlink(name)
        os.close(slave)
        os.close(master)
        reader.join(2)
        time.sleep(1.0)
        master, slave = os.openpty()
        os.symlink(os.ttyname(slave), name)
        reader = threading.Thread(target=read, args=(master, received[1]), daemon=True)
        reader.start()
        _, err = flight.communicate(timeout=30)
    finally:
        if flight.poll() is None:
            flight.kill()
    time.sleep(0.3)
    os.close(slave)
    os.close(master)
    reader.join(2)
    assert flight.returncode == 0, err
    assert sum("radio port lost" in line for line in err.splitlines()) == 1, err
    assert sum("radio port back after" in line for line in err.splitlines()) == 1, err
    _, db = ground_decode(KestrelConfig(), bytes(received[1]), tmp_path / "after")
    ids = [event_id for _, event_id, _ in events(db)]
    assert products.EVENT_LINK_ERROR in ids and products.EVENT_LINK_RESTORED in ids
    assert frames_reported(db)[-1] == 39


def test_queues_stay_bounded_while_the_port_is_down_and_alerts_go_first_after(tmp_path):
    """In process: a long outage against small multiplexer queues. Products wait in the store, not in
    the queues (which the writer fills only as frames go out), none is dropped, and after the
    reconnect the detection reports drain at their budgeted share, ahead of the bulkier imagery."""
    base = KestrelConfig()
    bound = 8192
    config = dataclasses.replace(
        base,
        sensor=dataclasses.replace(base.sensor, source=SOURCE, frame_rate_hz=50.0, max_frames=100),
        imaging=dataclasses.replace(base.imaging, quicklook_period_s=0.2),
        flight=dataclasses.replace(base.flight, reconnect=ReconnectConfig(initial_s=0.2, max_s=0.4)),
        link=dataclasses.replace(base.link, max_pending_octets=bound, baud=400_000))
    server = RadioServer()
    reopen = functools.partial(open_port, server.url, config.link.baud, timeout=0.1, write_timeout=None)
    downlink = Downlink(config.link, reopen(), reopen=reopen, reconnect=config.flight.reconnect)
    executive = Executive(config, downlink, threading.Event())
    peaks = []

    def outage():
        server.wait_for(1, 2000)
        server.drop()
        deadline = time.monotonic() + 1.2
        while time.monotonic() < deadline:
            peaks.append(downlink.queued_octets())
            time.sleep(0.01)
        server.listen()

    thread = threading.Thread(target=outage, daemon=True)
    thread.start()
    downlink.start()
    executive.run()
    thread.join(5)
    assert downlink.stop(10)
    downlink.close()
    server.close()
    vcs = len(config.link.vc_priority)
    assert max(peaks) <= vcs * bound
    assert downlink.packets_dropped == 0 and executive.store.total("dropped") == 0
    assert (downlink.link_outages, downlink.link_reconnects) == (1, 1)
    summary, db = ground_decode(config, bytes(server.connections[1]), tmp_path / "after")
    assert summary.sync["frames_bad"] == 0
    said = events(db)
    ids = [event_id for _, event_id, _ in said]
    assert products.EVENT_LINK_ERROR in ids and products.EVENT_LINK_RESTORED in ids
    assert products.EVENT_QUEUE_OVERFLOW not in ids
    assert all(q <= vcs * bound for (q,) in db.execute("SELECT queue_octets FROM housekeeping"))
    # After the reconnect the classes share the line by budget (octets): the small detection reports
    # far outnumber the kilo-octet image segments among the first packets.
    order = [apid for (apid,) in db.execute("SELECT apid FROM packets ORDER BY id")][:60]
    images = sum(order.count(apid) for apid in products.IMAGE_APIDS)
    assert order.count(products.APID_DETECTIONS) > 2 * images, order
    # The outage's detection reports were kept, up to the bound, and arrived after the reconnect.
    assert len(frames_reported(db)) > 10


# --- the clock ---------------------------------------------------------------

def test_a_clock_before_the_epoch_is_an_event_not_an_exception(tmp_path, caplog):
    """A board that boots with its real-time clock unset: stamps at the field's first instant, flagged."""
    base = KestrelConfig()
    # An agency epoch (2000) that the clock (1990) is before; the ground can still read the stamps.
    link = dataclasses.replace(base.link, baud=20_000_000, time=CucConfig(epoch="2000-01-01T00:00:00"))
    config = dataclasses.replace(base, link=link, sensor=dataclasses.replace(
        base.sensor, source=SOURCE, frame_rate_hz=200.0, max_frames=10))
    server = RadioServer()
    port = open_port(server.url, config.link.baud)
    downlink = Downlink(config.link, port)
    executive = Executive(config, downlink, threading.Event(), wallclock=lambda: 631152000.0)  # 1990-01-01
    downlink.start()
    with caplog.at_level(logging.WARNING, logger="flight.executive"):
        counters = executive.run()
    assert downlink.stop(10)
    downlink.close()
    server.close()
    assert counters.frames_processed == 10
    assert executive.packets.time_errors > 0
    said = [r.getMessage() for r in caplog.records if "before the CUC epoch" in r.getMessage()]
    assert len(said) == 1, [r.getMessage() for r in caplog.records]
    _, db = ground_decode(config, bytes(server.connections[0]), tmp_path / "out")
    time_events = [text for _, event_id, text in events(db) if event_id == products.EVENT_TIME_ERROR]
    assert len(time_events) == 1 and "before the CUC epoch 2000-01-01T00:00:00" in time_events[0]
    assert len(frames_reported(db)) == 10
    (errors,) = last_housekeeping(db, "time_errors")
    assert errors > 0
    # The stamps are the field's first instant, flagged: the ground keeps the field and the flag, and no time.
    assert {t for (t,) in db.execute("SELECT frame_time FROM detection_reports")} == {None}
    stamped = set(db.execute("SELECT time_status, time_field FROM packets WHERE apid = ?", (products.APID_DETECTIONS,)))
    assert stamped == {(TIME_STATUS_OUT_OF_RANGE, bytes(6))}


@pytest.mark.parametrize("clock, limit", [
    (lambda: 0.0, "first"),                       # 1970: no TAI-UTC offset, before the 1958 epoch's counting
    (lambda: 4_200_000_000.0, "last"),            # 2103: past what four coarse octets count from 1958
    (lambda: float("nan"), "first"),
    (lambda: float("inf"), "last"),
])
def test_an_out_of_range_clock_stamps_the_limit_and_flags_it(clock, limit):
    factory = TelemetryPacketFactory(CucCodec(CucConfig()), 0, clock)
    stamp = factory.now()
    assert stamp.status == TIME_STATUS_OUT_OF_RANGE
    assert stamp.ticks == (0 if limit == "first" else factory.max_ticks)
    assert f"CUC field's {limit} instant" in factory.time_error and factory.time_errors == 1
    packet = PusTm.unpack(factory.make(products.APID_EVENTS, 5, 1, b"x"), factory.cuc.length)
    assert packet.time_reference_status == TIME_STATUS_OUT_OF_RANGE
    assert factory.cuc.decode(packet.time) == stamp.ticks


def test_the_clock_coming_back_is_an_event_too(caplog):
    """A clock unset at boot, then set (say by GPS): one event as it goes wrong, one as it comes right."""
    base = KestrelConfig()
    config = dataclasses.replace(base, link=dataclasses.replace(base.link, baud=20_000_000),
                                 sensor=dataclasses.replace(base.sensor, source=SOURCE, frame_rate_hz=200.0,
                                                            max_frames=20))
    calls = []

    def clock():   # the first twenty readings at the Unix epoch, then the real time
        calls.append(None)
        return 0.0 if len(calls) <= 20 else time.time()

    server = RadioServer()
    downlink = Downlink(config.link, open_port(server.url, config.link.baud))
    executive = Executive(config, downlink, threading.Event(), wallclock=clock)
    downlink.start()
    with caplog.at_level(logging.INFO, logger="flight.executive"):
        executive.run()
    assert downlink.stop(10)
    downlink.close()
    server.close()
    said = [r.getMessage() for r in caplog.records if f"event {products.EVENT_TIME_ERROR}:" in r.getMessage()]
    assert len(said) == 2, said
    assert "UTC before 1972" in said[0] and "back in the CUC field's range" in said[1]
    assert executive.packets.time_error is None and executive.packets.now().status == TIME_STATUS_VALID
    # Stamps made while the clock read 1970 (some readings went to the clock-jump check, not to stamps).
    assert executive.housekeeping()["time_errors"] == executive.packets.time_errors >= 10
