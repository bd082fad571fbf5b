"""The flight executive's real output decoded by the ground decoder, in process.

The port is a real pyserial port (a pseudo-terminal pair read by a thread) or
a capture buffer; the sensor is the scene simulator or recorded .npy frames.
"""
import dataclasses
import json
import os
import random
import sqlite3
import threading

import numpy as np
import pytest
import serial

from hil.config import KestrelConfig
from flight.downlink import Downlink
from flight.executive import Executive
from flight.store import ProductClass
from kestrel.products import HOUSEKEEPING_REPORT
from ground.archive import GroundArchive
from ground.cli import image_assembler
from ground.decoder import GroundDecoder
from hil.scene import SceneConfig, SceneSimulator, write_npy_frames
from hil.sim_source import scene_url


class CapturePort:
    """Collects what the downlink writes (a radio that takes everything at once)."""

    def __init__(self):
        self.data = bytearray()

    def write(self, chunk):
        self.data += chunk
        return len(chunk)

    def flush(self):
        pass


class PtyPair:
    """A pseudo-terminal: the program writes to `path` with pyserial; a thread collects it all."""

    def __init__(self):
        self._master, self._slave = os.openpty()
        self.path = os.ttyname(self._slave)
        self.received = bytearray()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        while not self._done.is_set():
            try:
                self.received.extend(os.read(self._master, 65536))
            except OSError:
                return

    def close(self, expect: int | None = None, timeout: float = 5.0) -> bytes:
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (expect is None or len(self.received) < expect):
            time.sleep(0.05)
            if expect is None:
                break
        self._done.set()
        os.close(self._slave)
        os.close(self._master)
        return bytes(self.received)


def small_config(**link) -> KestrelConfig:
    base = KestrelConfig()
    scene = SceneConfig(width=96, height=80, kind="clear", seed=5, n_targets=3, snr_values=(20.0,))
    return dataclasses.replace(
        base,
        scene=scene,
        sensor=dataclasses.replace(base.sensor, source=scene_url(scene), frame_rate_hz=200.0, max_frames=12),
        # A fast line: these tests are about content, not pacing.
        link=dataclasses.replace(base.link, **{"baud": 20_000_000, **link}),
    )


def fly(config, sensor=None) -> tuple[bytes, Executive]:
    port = CapturePort()
    downlink = Downlink(config.link, port)
    executive = Executive(config, downlink, threading.Event(), sensor=sensor)
    downlink.start()
    executive.run()
    assert downlink.stop(10)
    return bytes(port.data), executive


def decode(config, stream: bytes, out):
    archive = GroundArchive(out)
    decoder = GroundDecoder(config, archive, images=image_assembler(config, archive))
    for i in range(0, len(stream), 777):  # the ground reads in arbitrary pieces
        decoder.feed(stream[i:i + 777])
    summary = decoder.finish()
    archive.close()
    return summary


@pytest.mark.parametrize("link", [
    {"reed_solomon": False},
    {"reed_solomon": True, "interleave_depth": 1, "frame_length": 223},
    {"reed_solomon": True, "interleave_depth": 5, "frame_length": 1000, "randomize": False},
    {"continuous": True, "baud": 2_000_000, "ocf": True},
])
def test_every_frame_report_and_housekeeping_arrive(tmp_path, link):
    config = small_config(**link)
    stream, executive = fly(config)
    summary = decode(config, stream, tmp_path)
    assert summary.sync["frames_bad"] == 0 and summary.sync["bytes_skipped"] == 0
    assert summary.packets["detection_reports"] == 12
    # A transparent radio needs a continuous stream: idle frames fill the gaps.
    assert (summary.packets["idle_frames"] > 0) == config.link.continuous
    assert summary.packets["detections"] == executive.counters.detections_total
    assert summary.packets["events"] == 4   # started, uplink unauthenticated, mode BOOT -> OBSERVE, stopping
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    frames = [r[0] for r in db.execute("SELECT frame_index FROM detection_reports ORDER BY id")]
    last_hk = db.execute("SELECT frames_processed, detections_total FROM housekeeping ORDER BY id DESC").fetchone()
    events = [r[0] for r in db.execute("SELECT text FROM events ORDER BY id")]
    assert frames == list(range(12))
    assert last_hk == (12, executive.counters.detections_total)
    assert "started" in events[0] and "uplink unauthenticated" in events[1]
    assert "mode BOOT -> OBSERVE (start" in events[2] and "stopping after 12 frames" in events[3]
    rows = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    assert len(rows) == executive.counters.detections_total
    assert {"frame_index", "frame_time", "x", "y", "flux", "snr"} <= set(rows[0])
    # Imagery: the first frame's quick-look, and chips, all whole and equal to what was sent.
    images = db.execute("SELECT kind, status, path, x0, y0, frame_index, max_error FROM images").fetchall()
    assert summary.images["images_complete"] == len(images) == executive.counters.images_sent
    quicklooks = [r for r in images if r[0] == "quicklook"]
    assert len(quicklooks) == 1 and quicklooks[0][1] == "complete"
    sim = SceneSimulator(config.scene)
    for kind, status, path, x0, y0, frame_index, max_error in images:
        image = np.load(path)
        truth = sim.frame(frame_index)[0][y0:y0 + image.shape[0], x0:x0 + image.shape[1]].astype(int)
        assert np.abs(image.astype(int) - truth).max() <= max_error
        assert (max_error == 0) == (kind in ("chip", "track_chip"))


def test_detections_match_the_simulated_targets(tmp_path):
    config = small_config()
    stream, _ = fly(config)
    decode(config, stream, tmp_path)
    rows = [json.loads(line) for line in (tmp_path / "detections.jsonl").read_text().splitlines()]
    sim = SceneSimulator(config.scene)
    hits = total = 0
    for index in range(12):
        truth = sim.frame(index)[1]
        found = [(r["x"], r["y"]) for r in rows if r["frame_index"] == index]
        for t in truth:
            total += 1
            hits += any((x - t["x"]) ** 2 + (y - t["y"]) ** 2 < 1.5 ** 2 for x, y in found)
    # Bright (SNR 20) targets in a clear scene: the detector misses few.
    assert total > 0 and hits / total >= 0.8


def test_damaged_capture_decodes_without_exception_and_counts_drops(tmp_path):
    # Uncoded, so that every flipped bit costs its frame (Reed-Solomon would correct them).
    config = small_config(reed_solomon=False)
    stream, _ = fly(config)
    damaged = bytearray(stream)
    rnd = random.Random(2)
    for _ in range(25):
        damaged[rnd.randrange(len(damaged))] ^= 1 << rnd.randrange(8)
    garbage_at = len(damaged) // 2
    damaged[garbage_at:garbage_at] = rnd.randbytes(500)
    summary = decode(config, bytes(damaged), tmp_path)
    s = summary.sync
    assert s["frames_bad"] > 0
    assert s["bytes_read"] == s["bytes_in_frames"] + s["bytes_skipped"]
    assert s["bytes_skipped"] >= 500
    assert summary.packets["detection_reports"] < 12 or s["frames_bad"] > 0


def test_recorded_npy_frames_with_one_bad_file(tmp_path):
    frames_dir = tmp_path / "frames"
    write_npy_frames(SceneSimulator(SceneConfig(width=64, height=64, kind="clear")), 5, frames_dir)
    np.save(frames_dir / "frame_000002.npy", np.zeros((64, 64), np.float32))  # wrong dtype
    base = small_config()
    config = dataclasses.replace(base, sensor=dataclasses.replace(
        base.sensor, source=f"npy:{frames_dir}", max_frames=0))
    stream, executive = fly(config)
    assert executive.counters.frames_processed == 4 and executive.counters.frames_failed == 1
    summary = decode(config, stream, tmp_path)
    assert summary.packets["detection_reports"] == 4
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    texts = [r[0] for r in db.execute("SELECT text FROM events")]
    assert any("frame_000002.npy" in t and "uint16" in t for t in texts)


def test_over_a_real_pseudo_terminal(tmp_path):
    """pyserial on both ends of a pty pair: the flight writes, the ground reads."""
    config = small_config()
    pty = PtyPair()
    port = serial.serial_for_url(pty.path, baudrate=115200, timeout=0.1)
    downlink = Downlink(config.link, port)
    executive = Executive(config, downlink, threading.Event())
    downlink.start()
    executive.run()
    assert downlink.stop(10)
    port.close()
    received = pty.close(expect=downlink.bytes_sent)
    assert len(received) == downlink.bytes_sent
    summary = decode(config, bytes(received), tmp_path)
    assert summary.packets["detection_reports"] == 12


def test_housekeeping_declaration_round_trips():
    values = {sc.name: i * 1000 for i, sc in enumerate(HOUSEKEEPING_REPORT.subcons) if sc.name}
    values.pop("structure_id")
    parsed = HOUSEKEEPING_REPORT.parse(HOUSEKEEPING_REPORT.build(values))
    assert {k: parsed[k] for k in values} == values


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGINT"])
def test_signal_stops_the_flight_program_after_flushing(tmp_path, sig):
    """kestrel-flight as a process on a pty: a signal ends it cleanly, and its last words arrive."""
    import signal
    import subprocess
    import sys
    import time

    pty = PtyPair()
    process = subprocess.Popen([sys.executable, "-m", "flight", "--port", pty.path],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Flying before the signal (a loaded machine can take seconds to start it), then a second more.
    deadline = time.monotonic() + 60
    while len(pty.received) < 2000 and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    time.sleep(1.0)
    process.send_signal(getattr(signal, sig))
    assert process.wait(15) == 0, process.stderr.read()
    time.sleep(0.3)
    received = pty.close()
    summary = decode(KestrelConfig(), bytes(received), tmp_path)
    assert summary.packets["detection_reports"] >= 5
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    texts = [r[0] for r in db.execute("SELECT text FROM events ORDER BY id")]
    processed = db.execute("SELECT frames_processed FROM housekeeping ORDER BY id DESC").fetchone()[0]
    assert texts[-1].startswith("kestrel-flight stopping after")
    assert processed == summary.packets["detection_reports"]


def test_a_radio_that_holds_off_loses_nothing_but_what_a_quota_drops(tmp_path, caplog):
    """A radio that holds off: every product waits in the store; quick-looks beyond their class's quota
    are dropped by its rule, with one event (throttled), and everything else arrives once it lets go."""
    import logging

    # A fast line (so the planner keeps full-resolution lossless quick-looks, one every frame or two)
    # and the smallest quick-look quota.
    base = small_config(baud=100_000_000)
    config = dataclasses.replace(
        base, sensor=dataclasses.replace(base.sensor, max_frames=30),
        imaging=dataclasses.replace(base.imaging, quicklook_period_s=0.001, quicklook_max_error=0),
        scheduler=dataclasses.replace(base.scheduler, quicklook_max_binning=1),
        store=dataclasses.replace(base.store, quota_quicklook=1 << 16))

    class StalledPort(CapturePort):
        def __init__(self):
            super().__init__()
            self.open = threading.Event()

        def write(self, chunk):
            self.open.wait(5)      # the radio holds off until the test lets it go
            return super().write(chunk)

    port = StalledPort()
    downlink = Downlink(config.link, port)
    executive = Executive(config, downlink, threading.Event())
    downlink.start()
    with caplog.at_level(logging.INFO):
        executive.run()
    port.open.set()
    assert downlink.stop(20)
    dropped = executive.store.totals[ProductClass.QUICKLOOK].dropped
    assert dropped > 0 and executive.store.total("dropped") == dropped
    drop_events = [r for r in caplog.records if "event 13" in r.getMessage()]
    # 30 frames at 200 Hz last 0.15 s: one event, not one per dropped product.
    assert len(drop_events) == 1 and "quick" in drop_events[0].getMessage().lower()
    summary = decode(config, bytes(port.data), tmp_path)
    assert summary.sync["frames_bad"] == 0
    assert summary.packets["detection_reports"] == 30
    # Every chip arrives whole: the quota took quick-looks only.
    chips = sqlite3.connect(tmp_path / "archive.sqlite").execute(
        "SELECT COUNT(*) FROM images WHERE kind IN ('chip', 'track_chip') AND status = 'complete'").fetchone()[0]
    # A 16x16 lossless chip is far under a segment: one packet each.
    assert chips == executive.store.totals[ProductClass.CHIP].put > 0


def test_ground_listens_on_a_network_socket(tmp_path):
    """kestrel-ground listen on socket:// (an SDR chain or a radio server on the network)."""
    import socket
    import subprocess
    import sys

    config = small_config()
    stream, executive = fly(config)
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    ground_ready, ground_done = threading.Event(), threading.Event()

    def serve():
        connection, _ = server.accept()
        with connection:
            # Opening a port drops what already waits in it: send once the ground says it listens.
            ground_ready.wait(30)
            for i in range(0, len(stream), 1000):
                connection.sendall(stream[i:i + 1000])
            # A radio server stays connected. (pyserial's socket:// read drops the
            # octets of a read that ends in a disconnect; the disconnect itself
            # is tested below: the ground ends its pass cleanly.)
            ground_done.wait(30)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    toml = tmp_path / "k.toml"
    toml.write_text("[link]\nbaud = 20000000\n[scene]\nwidth = 96\nheight = 80\n")
    ground = subprocess.Popen([sys.executable, "-m", "ground", "--config", str(toml), "listen", "--port",
                               f"socket://127.0.0.1:{port}", "--out", str(tmp_path / "out"), "--duration", "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "listening" in ground.stdout.readline()
    ground_ready.set()
    out, err = ground.communicate(timeout=60)
    ground_done.set()
    server.close()
    assert ground.returncode == 0, err
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sync"]["bytes_read"] == len(stream), (summary, err)
    assert summary["packets"]["detection_reports"] == 12, (summary, err)


def test_flight_sends_to_a_network_socket(tmp_path):
    """kestrel-flight on socket:// (a radio server): what the server receives decodes whole."""
    import socket
    import subprocess
    import sys

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    received = bytearray()

    def collect():
        connection, _ = server.accept()
        with connection:
            while chunk := connection.recv(65536):
                received.extend(chunk)

    thread = threading.Thread(target=collect, daemon=True)
    thread.start()
    toml = tmp_path / "k.toml"
    toml.write_text("[link]\nbaud = 20000000\n[scene]\nwidth = 96\nheight = 80\n[sensor]\nframe_rate_hz = 50.0\n")
    result = subprocess.run([sys.executable, "-m", "flight", "--config", str(toml), "--port",
                             f"socket://127.0.0.1:{port}", "--max-frames", "8"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    thread.join(5)
    server.close()
    config = dataclasses.replace(KestrelConfig(), link=dataclasses.replace(KestrelConfig().link, baud=20_000_000))
    summary = decode(config, bytes(received), tmp_path)
    assert summary.packets["detection_reports"] == 8
    assert summary.sync["bytes_skipped"] == 0


def test_ground_listen_ends_cleanly_when_the_peer_disconnects(tmp_path):
    import socket
    import subprocess
    import sys

    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def serve():
        connection, _ = server.accept()
        connection.sendall(b"\x1a\xcf\xfc\x1d" + bytes(500))
        connection.close()

    threading.Thread(target=serve, daemon=True).start()
    result = subprocess.run([sys.executable, "-m", "ground", "listen", "--port", f"socket://127.0.0.1:{port}",
                             "--out", str(tmp_path / "out"), "--duration", "20"],
                            capture_output=True, text=True, timeout=60)
    server.close()
    assert result.returncode == 0, result.stderr
    assert "socket disconnected; ending the pass" in result.stderr
    assert (tmp_path / "out" / "summary.json").exists()
