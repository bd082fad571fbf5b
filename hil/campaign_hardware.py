"""Real-hardware mode: the same scenarios with the flight program on a board at the far end of a real serial line.

`kestrel-hil run --flight-port URL --ground-port URL`: the bench starts
neither the flight program nor the simulated radio. `--ground-port` is the
bench's end of the real line (a serial device, `socket://`, `rfc2217://`):
the bench opens it and joins it to a pty of its own (`StationLink`), on which
`kestrel-ground listen` runs as in a simulated run; the scenario's commands
are written into the port (BD frames, or AD frames through FOP-1 with
`cop1`), and every octet each way is counted and logged. `--flight-port` is
the board's port as its flight program opens it: the bench prints the
command line to start on the board (the scenario's scene, frame count and
port) and starts the scenario's clock at the board's first octet.

What needs the local process or the simulated radio is skipped, with the
reason in the report: kill_flight and fill_disk (the program is on the
board), cut_link and the link profile's impairments (the line is real), the
flight process's CPU and memory, and the products accounting (the store's
file is on the board).
"""
from __future__ import annotations

import collections
import contextlib
import math
import os
import select
import shlex
import threading
import time
import tty
from dataclasses import dataclass
from pathlib import Path

from ground.listen import open_link

from .campaign import record_end, uplink_octets
from .campaign_series import Sampler
from .campaign_uplink import CopSession, DownlinkTap
from .impairments import DOWN, UP, LinkCounters, LinkProfile
from .scenario import Scenario, command_request
from .sim_source import scene_url

NEEDS_LOCAL = {"kill_flight": "the flight program runs on the board: the bench cannot kill and restart it",
               "fill_disk": "the flight store is on the board's filesystem: the bench cannot fill it",
               "cut_link": "the line is real: the bench has no simulated radio to cut"}


@dataclass(frozen=True)
class HardwarePorts:
    flight: str          # the board's port, as its flight program opens it
    ground: str          # the bench's end of the real line
    board_timeout_s: float = 120.0    # how long to wait for the board's first octet


class StationLink:
    """The bench's end of the real line, shared by the ground station (a pty: `ground_port`) and the bench's
    uplink (`inject_up`). No pacing and no errors: the line is what it is; octets are counted as the
    simulated radio counts them, so the same series and report serve both."""

    THREAD_NAME = "station-link"

    def __init__(self, url: str, baud: int, spy=None, clock=time.monotonic):
        self.port = open_link(url, baud, timeout=0.01)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        self.ground_port = os.ttyname(self._slave)
        self.flight_port = url
        self.profile = LinkProfile(baud=baud)
        self.counters = LinkCounters(baud=baud)
        self._clock = clock
        self._spy = spy
        self._injected: collections.deque[bytes] = collections.deque()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.started_at = clock()
        self.last_activity = clock()
        self.first_octet_at: float | None = None
        self.cpu_seconds = 0.0

    def set_epoch(self, t: float) -> None:
        """Nothing counts from it here: a real line has no scheduled outages."""

    def inject_up(self, octets: bytes) -> None:
        self._injected.append(bytes(octets))

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        self.port.close()
        for fd in (self._master, self._slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _log(self, name: str, octets: bytes) -> None:
        if self._spy is not None:
            self._spy.write(f"{self._clock() - self.started_at:.6f} {name} {octets.hex()}\n")

    def _up(self, octets: bytes) -> None:
        self.port.write(octets)
        self.port.flush()
        self.counters.up.octets_in += len(octets)
        self.counters.up.octets_on_line += len(octets)
        self.counters.up.octets_passed += len(octets)
        self._log(UP, octets)
        self.last_activity = self._clock()

    def _run(self) -> None:
        cpu_start = time.thread_time()
        try:
            while not self._stop.is_set():
                down = self.port.read(4096)     # waits up to the port's 10 ms timeout
                if down:
                    now = self._clock()
                    if self.first_octet_at is None:
                        self.first_octet_at = now
                    self.last_activity = now
                    c = self.counters.down
                    c.octets_in += len(down)
                    c.octets_on_line += len(down)
                    c.octets_passed += len(down)
                    self._log(DOWN, down)
                    os.write(self._master, down)
                if select.select([self._master], [], [], 0)[0]:
                    with contextlib.suppress(OSError):        # EIO: the ground has not opened its pty yet
                        self._up(os.read(self._master, 4096))
                while self._injected:
                    self._up(self._injected.popleft())
        finally:
            self.cpu_seconds = time.thread_time() - cpu_start


def board_command(scenario: Scenario, config, ports: HardwarePorts, config_path: str | None) -> list[str]:
    """What to start on the board: the scenario's scene and frames, on the board's port."""
    frames = max(1, math.ceil(scenario.duration_s * config.sensor.frame_rate_hz))
    command = ["kestrel-flight"] + (["--config", config_path] if config_path else [])
    return command + ["--port", ports.flight, "--source", scene_url(scenario.scene), "--max-frames", str(frames)]


def fly_on_hardware(scenario: Scenario, config, config_path: str | None, out_dir: Path, ports: HardwarePorts,
                    result, launch_ground, stop, announce=print) -> None:
    """Run the scenario against the board; fills `result` (commands, link, series, skipped, ground_exit, error).
    PortError if the ground port cannot be opened."""
    for fault in scenario.faults:
        result.skipped.append({"fault": fault.kind, "reason": NEEDS_LOCAL[fault.kind]})
    p = scenario.profile()
    if p.ber or p.burst_start or p.drop or p.latency_s or p.outages or p.half_duplex or p.fifo_octets:
        result.skipped.append({"fault": "link impairments",
                               "reason": "the line is real: the profile's errors, drops, latency and outages are "
                                         "not applied"})
    result.skipped.append({"fault": "products accounting",
                           "reason": "the flight store's file is on the board; the products bar is not judged"})
    result.skipped.append({"fault": "flight CPU and memory", "reason": "the flight process is on the board"})
    with contextlib.ExitStack() as stack:
        spy = stack.enter_context(open(out_dir / "spy.log", "w"))
        tap = DownlinkTap(spy) if scenario.cop1 else None
        link = stack.enter_context(StationLink(ports.ground, config.link.baud, spy=tap or spy))
        session = CopSession(config, tap, link.inject_up, out_dir / "uplink-counters") if scenario.cop1 else None
        ground = launch_ground(link.ground_port)
        stack.callback(stop, ground, 15)
        command = board_command(scenario, config, ports, config_path)
        (out_dir / "board-command.txt").write_text(shlex.join(command) + "\n")
        announce(f"board: {shlex.join(command)}")
        deadline = time.monotonic() + ports.board_timeout_s
        while link.first_octet_at is None and time.monotonic() < deadline:
            time.sleep(0.02)
        if link.first_octet_at is None:
            result.error = f"no octet from the board on {ports.ground} within {ports.board_timeout_s:g} s"
            result.ground_exit = stop(ground, 15)
            return
        t0 = link.first_octet_at
        result.started_unix = time.time() - (time.monotonic() - t0)
        sampler = Sampler(link, t0)
        pending = sorted(scenario.commands, key=lambda c: c.at_s)
        sequence: dict[int, int] = {}
        limit = t0 + scenario.duration_s * 3 + 60
        while time.monotonic() < limit:
            now = time.monotonic() - t0
            while pending and pending[0].at_s <= now:
                c = pending.pop(0)
                apid = config.uplink.command_apid
                count = sequence.get(apid, 0)
                sequence[apid] = count + 1
                packet = command_request(c.tc).tc(apid, count).pack()
                if session is not None:
                    session.send(packet)
                else:
                    link.inject_up(uplink_octets(config, packet, out_dir))
                result.commands.append({"at_s": c.at_s, "tc": list(c.tc), "apid": apid, "sequence": count})
            if session is not None:
                session.pump()
            sampler.sample(None)
            # The board's program ends after its frames; its line then goes quiet.
            quiet = time.monotonic() - link.last_activity
            if not pending and now > scenario.duration_s and quiet >= scenario.drain_s \
                    and (session is None or session.idle):
                break
            time.sleep(0.02)
        else:
            result.error = f"the board's line did not go quiet within {scenario.duration_s * 3 + 60:.0f} s"
        record_end(result, stop(ground, 15), session, stack, link, sampler)

