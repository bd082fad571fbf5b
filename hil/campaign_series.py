"""The time series a campaign report plots: sampled while the scenario flies, or read back after it.

While it flies, `Sampler.sample()` (called from the runner's loop) reads the
radio's counters (octets passed each way, bits flipped, octets lost to drops,
outages and FIFO overflow) and the flight process's CPU time and resident
memory from /proc. After it, `store_depth` reads the store's depth from the
housekeeping the ground archived, `detections_against_truth` and
`alert_latencies` read the archive against the scene's truth, and
`elevations` samples the pass schedule. Each series is plain lists, so it
goes into result.json as it is.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

from .archive_query import read_only
from .passes import PassSchedule, elevation_deg, geodetic_to_ecef
from .report import DETECTION_FIELDS
from .scoring import match

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def process_cpu_rss(pid: int) -> tuple[float, float] | None:
    """(CPU seconds used, user and system; resident MB) of a live process, from /proc; None once it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        statm = Path(f"/proc/{pid}/statm").read_text().split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS     # utime, stime: fields 14 and 15
    return cpu, int(statm[1]) * PAGE_KB / 1024.0


class Sampler:
    """Samples every `period_s` of the runner's loop: the link's counters and the flight process's use."""

    def __init__(self, link, t0: float, period_s: float = 0.5, clock=time.monotonic):
        self.link = link
        self.t0 = t0
        self.period_s = period_s
        self._clock = clock
        self._next = t0
        self._last: tuple[float, int, int] | None = None        # (t, down passed, up passed)
        self._cpu: tuple[int, float, float] | None = None       # (pid, t, cpu seconds)
        self.link_series = {"t": [], "down_octets_per_s": [], "up_octets_per_s": [], "bits_flipped": [],
                            "octets_lost": [], "cut": []}
        self.flight_series = {"t": [], "cpu_percent": [], "rss_mb": []}

    def sample(self, flight_pid: int | None) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self.period_s
        t = now - self.t0
        if self.link is not None:
            self._sample_link(t)
        if flight_pid is not None:
            self._sample_process(t, flight_pid)

    def _sample_link(self, t: float) -> None:
        c = self.link.counters
        down, up = c.down.octets_passed, c.up.octets_passed
        if self._last is not None and t > self._last[0]:
            dt = t - self._last[0]
            s = self.link_series
            s["t"].append(round(t, 3))
            s["down_octets_per_s"].append(round((down - self._last[1]) / dt, 1))
            s["up_octets_per_s"].append(round((up - self._last[2]) / dt, 1))
            s["bits_flipped"].append(c.down.bits_flipped + c.up.bits_flipped)
            s["octets_lost"].append(sum(d.octets_dropped + d.outage_octets + d.fifo_overflows for d in (c.down, c.up)))
            s["cut"].append(1 if self.link.profile.in_outage(t) else 0)
        self._last = (t, down, up)

    def _sample_process(self, t: float, pid: int) -> None:
        use = process_cpu_rss(pid)
        if use is None:
            return
        cpu, rss = use
        # CPU share over the last period, of one core; a restarted program starts its own count.
        if self._cpu is not None and self._cpu[0] == pid and t > self._cpu[1]:
            s = self.flight_series
            s["t"].append(round(t, 3))
            s["cpu_percent"].append(round(100.0 * (cpu - self._cpu[2]) / (t - self._cpu[1]), 1))
            s["rss_mb"].append(round(rss, 1))
        self._cpu = (pid, t, cpu)


def store_depth(archive: Path, t0_wall: float) -> dict:
    """The flight store's depth from each housekeeping report the ground archived, by its arrival time."""
    with read_only(archive) as db:
        rows = db.execute("SELECT received_at, store_unsent_octets, store_held_octets, store_errors "
                          "FROM housekeeping ORDER BY received_at").fetchall()
    return {"t": [round(r[0] - t0_wall, 3) for r in rows], "unsent_octets": [r[1] for r in rows],
            "held_octets": [r[2] for r in rows], "store_errors": [r[3] for r in rows]}


def detections_against_truth(archive: Path, detections_jsonl: Path, truth_for_frame, radius: float) -> dict:
    """Per frame whose report reached the ground: targets in the truth, detections, and detections on a target."""
    import json

    with read_only(archive) as db:
        frames = sorted({r[0] for r in db.execute("SELECT frame_index FROM detection_reports")})
    by_frame: dict[int, list] = {}
    if detections_jsonl.exists():
        for line in detections_jsonl.read_text().splitlines():
            if line.strip():
                d = json.loads(line)
                by_frame.setdefault(d["frame_index"], []).append((d["x"], d["y"], d["snr"]))
    out = {"frame": [], "truth": [], "detected": [], "on_target": []}
    for index in frames:
        dets = np.array(by_frame.get(index, []), dtype=DETECTION_FIELDS)
        truth = truth_for_frame(index)
        assigned, _used = match(dets, truth, radius)
        out["frame"].append(index)
        out["truth"].append(int(len(truth)))
        out["detected"].append(int(len(dets)))
        out["on_target"].append(int(np.sum(assigned >= 0)))
    return out


def alert_latencies(archive: Path) -> list[float]:
    """Seconds from each alert's frame time to its decode on the ground (alerts with a valid time)."""
    with read_only(archive) as db:
        rows = db.execute("SELECT received_at - frame_time FROM alerts WHERE frame_time IS NOT NULL").fetchall()
    return [round(r[0], 4) for r in rows]


def elevations(schedule: PassSchedule, run_s: float, samples: int = 200) -> dict:
    """The satellite's elevation over the run (run seconds, degrees), and the station's mask."""
    if not schedule.tle_line1:
        return {}
    from sgp4.api import Satrec

    satellite = Satrec.twoline2rv(schedule.tle_line1, schedule.tle_line2)
    station = geodetic_to_ecef(schedule.latitude_deg, schedule.longitude_deg, schedule.altitude_m / 1000.0)
    origin = schedule.start()
    ts = [run_s * i / samples for i in range(samples + 1)]
    return {"t": [round(t, 3) for t in ts],
            "elevation_deg": [round(elevation_deg(satellite, station, origin, t * schedule.time_scale), 3) for t in ts],
            "mask_deg": schedule.mask_deg}
