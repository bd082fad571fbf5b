"""kestrel-ground listen keeps every octet, at both ends of a pass (issue 9, item 1).

The sources are real: a TCP server on 127.0.0.1 in a thread, a pyserial
RFC 2217 server (PortManager) on the same, pseudo-terminals from the kernel.
The reference is what the source sent: a real downlink stream built by the
flight side, whose content is known (one detection report per frame, the
'started' and 'stopping' events), and the octet count of what was sent.
"""
import dataclasses
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tty

import pytest
import serial
from serial import rfc2217

from ground.config import GroundConfig
from ground.listen import LinkLost, ListenPass, keeping_class, open_link
from kestrel.link.port import ReconnectConfig
from kestrel.settings import ConfigurationError
from tests.test_flight_to_ground import fly, small_config

FRAMES = 40
# Half a CADU of noise after the last frame: the stream does not end on a frame boundary,
# and a pass that drops its last read shows up in the octet count even when no frame is lost.
TAIL = bytes(range(128))


@pytest.fixture(scope="module")
def downlink():
    """(stream, detections): a real downlink of FRAMES frames (reports, events, housekeeping, imagery)."""
    base = small_config()
    config = dataclasses.replace(base, sensor=dataclasses.replace(base.sensor, max_frames=FRAMES))
    stream, executive = fly(config)
    return stream + TAIL, executive.counters.detections_total


def ground_config(tmp_path, **ground) -> str:
    path = tmp_path / "ground.toml"
    def toml(value):
        if isinstance(value, dict):
            return "{" + ", ".join(f"{k} = {toml(v)}" for k, v in value.items()) + "}"
        return json.dumps(value)

    lines = ["[link]", "baud = 20000000", "[ground]"] + [f"{k} = {toml(v)}" for k, v in ground.items()]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def ground_listen(tmp_path, url, *extra, timeout=30, **ground):
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "ground", "--config", ground_config(tmp_path, **ground),
                             "listen", "--port", url, "--out", str(out), *extra],
                            capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "summary.json").read_text()), result.stderr


def assert_whole_pass(summary, sent: int, detections: int):
    """Every octet sent was read and decoded: all reports, both events, the octet accounts closed."""
    s, p, link = summary["sync"], summary["packets"], summary["link"]
    assert link["octets_read"] == s["bytes_read"] == sent
    assert s["bytes_in_frames"] + s["bytes_skipped"] == s["bytes_read"]
    assert s["bytes_skipped"] == len(TAIL) and s["frames_bad"] == 0
    assert p["detection_reports"] == FRAMES and p["detections"] == detections
    assert p["events"] == 4               # 'started', 'uplink unauthenticated' and the mode in the first kilobytes, 'stopping' in the last


class Server:
    """A TCP server on 127.0.0.1: each connection is sent one part at once, then closed.

    After each part the listening socket closes too; with more parts to send it opens
    again on the same port `pause` seconds later: a radio server that restarts."""

    def __init__(self, parts, pause: float = 0.0):
        self.parts = list(parts)
        self.pause = pause
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"socket://127.0.0.1:{self.port}"
        self.sent = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        for i, part in enumerate(self.parts):
            connection, _ = self.listener.accept()
            with connection:
                connection.sendall(part)      # at once: the source does not wait for the ground
            self.sent.append(len(part))
            self.listener.close()
            if i + 1 < len(self.parts):
                time.sleep(self.pause)
                self.listener = socket.create_server(("127.0.0.1", self.port))

    def close(self):
        self.thread.join(5)
        self.listener.close()


# --- the port: pyserial's handlers with nothing dropped ------------------------------------------------

@pytest.mark.parametrize("read_size", [1, 4096, 65536])
def test_socket_read_returns_every_octet_then_reports_the_loss(read_size):
    data = os.urandom(150_001)
    server = Server([data])
    port = open_link(server.url, 115200, timeout=0.1)
    received = bytearray()
    with pytest.raises(LinkLost, match="socket disconnected"):
        while True:
            received += port.read(read_size)
    assert bytes(received) == data
    with pytest.raises(LinkLost):          # and it stays lost
        port.read(read_size)
    assert isinstance(LinkLost("x"), serial.SerialException)
    port.close()
    server.close()


def test_stock_pyserial_socket_port_loses_octets():
    """The peer behaviour the fix answers, measured: the same server, pyserial's own socket:// port."""
    data = os.urandom(150_001)
    server = Server([data])
    port = serial.serial_for_url(server.url, timeout=0.1)
    received = bytearray()
    with pytest.raises(serial.SerialException, match="socket disconnected"):
        while True:
            received += port.read(65536)
    port.close()
    server.close()
    assert len(received) < len(data)


def rfc2217_server(payload: bytes, client_open: threading.Event):
    """A pyserial RFC 2217 server (PortManager over loop://) that answers the client's
    negotiation, sends `payload` once `client_open` is set and closes at once."""
    listener = socket.create_server(("127.0.0.1", 0))

    class Connection:
        def __init__(self, sock):
            self.sock = sock

        def write(self, data):
            self.sock.sendall(data)

    def serve():
        sock, _ = listener.accept()
        sock.settimeout(0.05)
        manager = rfc2217.PortManager(serial.serial_for_url("loop://"), Connection(sock))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not client_open.is_set():
            try:
                data = sock.recv(4096)
            except socket.timeout:
                continue
            if not data:
                break
            for _ in manager.filter(data):
                pass
        sock.sendall(b"".join(manager.escape(payload)))
        sock.close()
        listener.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return f"rfc2217://127.0.0.1:{listener.getsockname()[1]}", thread


@pytest.mark.filterwarnings("ignore:set(Daemon|Name)\\(\\) is deprecated:DeprecationWarning")   # pyserial's own
def test_rfc2217_read_delivers_what_was_queued_before_the_loss():
    # pyserial's rfc2217 read raises once its reader thread has ended, with the octets still queued.
    data = os.urandom(50_001)
    client_open = threading.Event()
    url, thread = rfc2217_server(data, client_open)
    port = open_link(url, 115200, timeout=0.1)
    client_open.set()
    received = bytearray()
    with pytest.raises(LinkLost):
        while True:
            received += port.read(65536)
    port.close()
    thread.join(5)
    assert bytes(received) == data


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


@pytest.fixture
def pty():
    master, slave = os.openpty()
    tty.setraw(slave)
    yield master, os.ttyname(slave)
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


@pytest.mark.parametrize("flush_on_open", [False, True])
def test_opening_a_pty_keeps_what_waits_unless_flush_on_open(pty, flush_on_open):
    master, path = pty
    early = os.urandom(3000)
    os.write(master, early)
    port = open_link(path, 115200, timeout=0.2, flush_on_open=flush_on_open)
    os.write(master, b"after")
    received = bytearray()
    while chunk := port.read(4096):
        received += chunk
    port.close()
    assert bytes(received) == (b"" if flush_on_open else early) + b"after"


def test_pty_hang_up_is_a_loss_after_the_octets_read():
    master, slave = os.openpty()
    tty.setraw(slave)
    port = open_link(os.ttyname(slave), 115200, timeout=0.2)
    os.write(master, b"last words")
    assert port.read(100) == b"last words"
    os.close(master)
    with pytest.raises(LinkLost):
        port.read(100)
    port.close()
    os.close(slave)


def test_other_urls_open_through_pyserial_and_keep_their_read():
    port = open_link("loop://", 115200, timeout=0.1)
    port.write(b"echo")
    assert port.read(4) == b"echo"
    port.close()
    # A handler that replaces pyserial's read keeps its own (here the spy wrapper's, which logs).
    spy = type(serial.serial_for_url("spy://loop://", do_not_open=True))
    assert keeping_class(spy).read is spy.read


def test_reconnect_settings_are_checked():
    with pytest.raises(ConfigurationError, match=r"reconnect max_s \(1\) must be at least initial_s \(5\)"):
        ReconnectConfig(initial_s=5.0, max_s=1.0)
    with pytest.raises(ValueError, match="network source"):
        ListenPass("/dev/ttyUSB0", 115200, GroundConfig(), reconnect=True)


def test_a_pass_in_process_reconnects_and_counts_the_gap():
    data = os.urandom(20_000)
    server = Server([data[:7777], data[7777:]], pause=0.3)
    fed = bytearray()
    ground = GroundConfig(reconnect=ReconnectConfig(initial_s=0.1, max_s=0.2), idle_exit_s=1.5)
    counters = ListenPass(server.url, 115200, ground, reconnect=True).run(fed.extend)
    server.close()
    assert bytes(fed) == data and counters.octets_read == len(data)
    assert counters.connections == 2 and counters.reconnects == 1
    # The second close opens a gap the pass ends in (idle): both counted, each with its seconds.
    assert counters.gaps == 2 and counters.gap_seconds > 0.3 and counters.ended_by == "idle"


# --- the program: kestrel-ground listen ----------------------------------------------------------------

@pytest.mark.parametrize("read_size", [None, 65536])
def test_listen_decodes_a_source_that_sends_on_connect_and_closes(tmp_path, downlink, read_size):
    stream, detections = downlink
    server = Server([stream])
    settings = {} if read_size is None else {"read_size": read_size}
    summary, stderr = ground_listen(tmp_path, server.url, "--duration", "20", **settings)
    server.close()
    assert server.sent == [len(stream)]
    assert_whole_pass(summary, len(stream), detections)
    assert "socket disconnected; ending the pass" in stderr
    assert summary["link"]["ended_by"] == "link lost: socket disconnected"
    assert summary["link"]["connections"] == 1 and summary["link"]["gaps"] == 0


def test_listen_reconnects_and_reports_the_gap(tmp_path, downlink):
    stream, detections = downlink
    cut = len(stream) // 2 + 77               # inside a CADU: the second connection completes it
    server = Server([stream[:cut], stream[cut:]], pause=0.8)
    summary, stderr = ground_listen(tmp_path, server.url, "--reconnect",
                                    reconnect={"initial_s": 0.2, "max_s": 0.4}, idle_exit_s=2.0)
    server.close()
    assert server.sent == [cut, len(stream) - cut]
    assert_whole_pass(summary, len(stream), detections)
    link = summary["link"]
    assert link["connections"] == 2 and link["reconnects"] == 1
    assert link["gaps"] == 2 and link["reopen_failures"] >= 1 and link["ended_by"] == "idle"
    assert link["gap_seconds"] > 0.5
    assert "link restored after a gap of" in stderr
    assert f"socket disconnected after {cut} octets; reconnecting" in stderr


def test_listen_keeps_what_a_pty_held_before_it_opened(tmp_path, downlink, pty):
    stream, detections = downlink
    master, path = pty
    early = 4096                              # the 'started' event, the first report, the first imagery
    os.write(master, stream[:early])
    out = tmp_path / "out"
    ground = subprocess.Popen([sys.executable, "-m", "ground", "--config", ground_config(tmp_path, idle_exit_s=2.0),
                               "listen", "--port", path, "--out", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert any("listening" in ground.stdout.readline() for _ in range(3))
    # The writes block while the pty is full: the ground reads as they go.
    threading.Thread(target=write_all, args=(master, stream[early:]), daemon=True).start()
    _, stderr = ground.communicate(timeout=30)
    assert ground.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert_whole_pass(summary, len(stream), detections)
    assert summary["link"]["ended_by"] == "idle"


def test_reconnect_is_refused_for_a_device(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ground", "listen", "--port", "/dev/ttyUSB0", "--reconnect",
                             "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--reconnect needs a network port" in result.stderr


def test_listen_refuses_a_zero_read_timeout(tmp_path):
    result = subprocess.run([sys.executable, "-m", "ground", "--config", ground_config(tmp_path, read_timeout_s=0),
                             "listen", "--port", "loop://", "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "read_timeout_s must be > 0" in result.stderr
