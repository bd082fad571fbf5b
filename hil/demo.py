"""`kestrel-hil demo`: one end-to-end pass over a real (pseudo-)serial link.

The flight program and the ground decoder run as separate processes, each on
its own end of the paced link; the bench scores what the ground decoded
against the scene simulator's truth.
"""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from .radio import PacedLink
from .report import PassReport, score
from .scene import SceneSimulator
from .sim_source import scene_url

log = logging.getLogger(__name__)


def _program(module: str, config_path: str | None, *args: str) -> list[str]:
    # -P: the working directory is not put on sys.path, so a source checkout
    # there (its kernels uncompiled) cannot shadow the installed package.
    command = [sys.executable, "-P", "-m", module]
    if config_path:
        command += ["--config", config_path]
    return command + list(args)


def _stop(process: subprocess.Popen, timeout: float) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def _wait_for_line(process: subprocess.Popen, marker: str, timeout: float) -> bool:
    """Read the process's stdout until a line with `marker`; False if it ended or time ran out."""
    found = threading.Event()

    def watch():
        for line in process.stdout:
            if marker in line:
                found.set()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    watcher.join(timeout)
    return found.is_set()


def run_demo(config, config_path: str | None, out_dir: Path | None, frames_dir: Path | None,
             capture_path: Path | None, duration_s: float | None = None) -> PassReport:
    hil = config.hil
    duration = duration_s if duration_s is not None else hil.duration_s
    frame_count = max(1, math.ceil(duration * config.sensor.frame_rate_hz))
    if frames_dir is not None:
        available = len(list(Path(frames_dir).glob("*.npy")))
        if available == 0:
            raise FileNotFoundError(f"no .npy frames in {frames_dir}")
        frame_count = min(frame_count, available)
    with contextlib.ExitStack() as stack:
        if out_dir is None:
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kestrel-hil-")))
        out_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("detections.jsonl", "alerts.jsonl", "archive.sqlite", "archive.sqlite-wal", "archive.sqlite-shm", "summary.json"):
            (out_dir / stale).unlink(missing_ok=True)
        capture = stack.enter_context(open(capture_path, "wb")) if capture_path else None
        link = stack.enter_context(PacedLink(config.link.baud, capture=capture))
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        ground = subprocess.Popen(_program("ground", config_path, "listen", "--port", link.ground_port,
                                           "--out", str(out_dir)),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        ready = _wait_for_line(ground, "listening", timeout=60)
        if not ready:
            _stop(ground, 5)
            raise RuntimeError(f"kestrel-ground did not start: {ground.stderr.read().strip()[-500:]}")
        flight_args = ["--port", link.flight_port, "--max-frames", str(frame_count)]
        if frames_dir is not None:
            flight_args += ["--frames", str(frames_dir)]
        else:
            flight_args += ["--source", scene_url(config.scene)]
        print(f"kestrel-hil: link {link.flight_port} <-> {link.ground_port} at {config.link.baud} baud; "
              f"{frame_count} frames at {config.sensor.frame_rate_hz:g} Hz", flush=True)
        flight = subprocess.Popen(_program("flight", config_path, *flight_args),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        try:
            flight_out, flight_err = flight.communicate(timeout=duration * 3 + 60)
        except subprocess.TimeoutExpired:
            _stop(flight, 15)
            flight_out, flight_err = flight.communicate()
        # Let the last octets cross the paced link before stopping the ground.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and time.monotonic() - link.last_activity < hil.drain_s:
            time.sleep(0.1)
        _stop(ground, 15)
        ground_out, ground_err = ground.communicate()
        if flight.returncode != 0:
            log.error("kestrel-flight exited %s: %s", flight.returncode, flight_err.strip()[-2000:])
        if ground.returncode != 0:
            log.error("kestrel-ground exited %s: %s", ground.returncode, ground_err.strip()[-2000:])
        truth = None
        snr_classes = ()
        if frames_dir is None:
            simulator = SceneSimulator(config.scene)
            truth = lambda index: simulator.frame(index)[1]  # noqa: E731
            snr_classes = tuple(config.scene.snr_values)
        report = score(out_dir, frame_count, link.counters.bytes_down, hil, truth, snr_classes)
        report.checks.insert(0, ("flight program exit", flight.returncode == 0, f"status {flight.returncode}"))
        report.checks.insert(1, ("ground decoder exit", ground.returncode == 0, f"status {ground.returncode}"))
        report.checks.append(("no bad frames on a clean link", report.ground.get("sync", {}).get("frames_bad", 1) == 0,
                              f"{report.ground.get('sync', {}).get('frames_bad')} bad"))
        report.passed = all(ok for _, ok, _ in report.checks)
        (out_dir / "report.json").write_text(report.to_json())
        if ground_out.strip():
            print("ground: " + ground_out.strip().replace("\n", "\nground: "))
        return report
