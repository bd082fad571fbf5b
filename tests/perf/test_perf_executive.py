"""The flight executive in time: the 10 Hz loop on one core, an accelerated soak, and alert latency.

    cd /work/main && . .venv/bin/activate && pytest tests/perf/test_perf_executive.py -m perf -s

Each benchmark runs the real Executive and Downlink in process, the store a
SQLite file in the test's directory, and prints a table. Durations (real
seconds): KESTREL_PERF_LOOP_S (30), KESTREL_PERF_SOAK_S (180),
KESTREL_PERF_ALERT_S (40). KESTREL_PERF_LEAD overrides link.line_lead_cadus for the alert latency run;
KESTREL_PERF_ALERT_FRAMES (as many as the run has cycles) is how many frames it cycles through.

Frames: 1024x1024 or 64x64 cloudy frames from the project's scene simulator
(hil.scene, as the sim:// source makes them), simulated once before the run
and read forwards and backwards (CyclingSensor). The simulator takes 44-58 ms
a 1024x1024 frame here: run inside the loop it would be half of the loop's
load, and it is no part of the flight's (a camera delivers the frame).

Ticks: which tick a cycle serves, and when that tick was due, is the
executive's TickSource's (start + index * period); when the cycle started
(its first step, `commanding`) is measured here. Lateness = start - due;
jitter is its p50, p99 and max. Overruns, missed ticks and cycle slips are
the rate groups' own counters.

1. The loop at 10 Hz, 1024x1024 frames, the whole process on one core
   (sched_setaffinity before the executive and the downlink writer start, so
   both threads inherit it), synchronous=FULL as flown, the default
   115200-baud link to a port that takes every write (the writer paces
   itself to the line rate): CPU share (process CPU time / wall time), VmRSS
   (/proc/self/status) before, max and at the end, tick lateness.
2. An accelerated soak. The executive's clock is a warp clock: real time
   plus every wait for a tick, skipped (the wait returns at once). A cycle
   still costs its real time, so lateness and overruns are real, but the
   idle part of each period costs nothing: hours of executive time (10 Hz,
   64x64 frames, housekeeping every second, store drop events every 10 s,
   CUC times, uptime) pass in minutes. The downlink writer paces a 9600-baud
   line on the same warp clock (its module's `time.sleep` is replaced for
   the test by one that waits for the warp clock), narrower than the
   products: the store (capacity 256 KiB) fills and drops by rule for
   hours. RSS is sampled every half second; its slope over the last 80 % of
   the run, per simulated hour, says whether it is flat. Drift: the trend of
   tick lateness, missed ticks, and housekeeping reports made against the
   ticks run. If a defect stops the loop, the program is started again on
   the same store, as its service manager would, and the stop is reported.
3. Alert latency, the issue's goal p99 <= 100 ms. The 10 Hz 1024x1024 loop
   (synchronous=FULL) on a real port: hil.radio.PacedLink, two
   pseudo-terminals joined by a relay that passes 115200 baud (8N1) and no
   faster, run in a process of its own with the ground's reader, which keeps
   each chunk with its arrival time (CLOCK_MONOTONIC, shared by both
   processes). On random cycles (p = 0.4) an ALERT product is put through
   executive.send_tm from the loop thread right after the detector returns,
   where a tracker raises one: inside the cycle's store batch, which the
   urgent put commits at once; the cycle's imagery follows it.
   Afterwards the ground decoder is fed the chunks in order, and an alert's
   arrival is that of the chunk that completed the CADU carrying its last
   octet. Latency from the frame time (the cycle's start: the frame is read
   first) and from the put, split at the moment the downlink writer took the
   alert from the store; p50, p99 and max over all alerts. The tracker's
   own alert openings (APID 103) are timed the same way, from the frame
   time of the frame that opened them. By default every cycle reads a frame
   of its own (400 frames, 800 MiB, simulated before the run). With
   KESTREL_PERF_ALERT_FRAMES=16 the frames go forwards and backwards over
   16: at each turn every target reverses at once, its track ends and a new
   one opens a few frames later, all in the same frame, every 1.6 s: a
   burst of openings that shows what k alerts at once cost on the line.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import random
import select
import sqlite3
import statistics
import struct
import subprocess
import sys
import threading
import time
import types
from pathlib import Path

import construct
import numpy as np
import pytest

from flight import downlink as downlink_module
from flight.downlink import Downlink
from flight.executive import Executive
from flight.store import ProductClass, StoreError
from hil.config import KestrelConfig
from hil.sim_source import SimulatedSensor, scene_from_url
from kestrel import products

pytestmark = pytest.mark.perf

REPO_ROOT = Path(__file__).resolve().parents[2]

LOOP_S = float(os.environ.get("KESTREL_PERF_LOOP_S", "30"))
SOAK_S = float(os.environ.get("KESTREL_PERF_SOAK_S", "180"))
ALERT_S = float(os.environ.get("KESTREL_PERF_ALERT_S", "40"))
ALERT_FRAMES = int(os.environ.get("KESTREL_PERF_ALERT_FRAMES", str(round(ALERT_S * 10))))
BIG = "sim://cloudy?width=1024&height=1024&seed=3"
SMALL = "sim://cloudy?width=64&height=64&seed=3"
ALERT_GOAL_MS = 100.0
# The tracker's own alerts (APID 102) come when its tracks say so; these stand-ins, on an APID of their
# own, come on random cycles, as long as an alert update (148 octets with the default CUC).
ALERT_APID = 111
ALERT_SERVICE, ALERT_SUBTYPE = 132, 1
ALERT_OCTETS = 148


# --- helpers ---------------------------------------------------------------------------------------

def vm_kib(name: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(name + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {name} in /proc/self/status")


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=float), q))


class CyclingSensor:
    """Frames simulated once, then read forwards and backwards (0..n-1, n-2..1, 0..) with an ever-growing
    index: the scene never jumps. (Read in a plain cycle, the jump from the last frame to the first
    looks to the temporal detector like a new scene: a full detection report, 10785 octets, every
    cycle of frames; on the link that is 1.1 s at 115200 baud, and every alert behind it waits.)"""

    def __init__(self, url: str, count: int):
        sim = SimulatedSensor(scene_from_url(url))
        self.shape = sim.shape
        self.calibration_bad_pixels = sim.calibration_bad_pixels
        self.frames = [sim.read()[1] for _ in range(count)]
        self._order = list(range(count)) + list(range(count - 2, 0, -1))
        self._next = 0

    def read(self):
        index = self._next
        self._next += 1
        return index, self.frames[self._order[index % len(self._order)]]


class NullPort:
    """A radio that takes every write at once (the downlink writer paces to the line rate itself)."""

    def __init__(self):
        self.octets = 0

    def write(self, chunk):
        self.octets += len(chunk)
        return len(chunk)

    def flush(self):
        pass

    def close(self):
        pass


class WarpClock:
    """Real time plus the waits skipped: a cycle costs its real time, an idle wait none.

    `sleep` is the downlink writer's: it returns once the warp clock has passed the time asked,
    by real time or by a skip, so the writer paces the line in executive time."""

    def __init__(self):
        self._origin = time.monotonic()
        self._wall_origin = time.time()
        self.skipped = 0.0
        self._skip = threading.Condition()

    def monotonic(self) -> float:
        return time.monotonic() - self._origin + self.skipped

    def wall(self) -> float:
        return self._wall_origin + self.monotonic()

    def skip(self, seconds: float) -> None:
        with self._skip:
            self.skipped += seconds
            self._skip.notify_all()

    def sleep(self, seconds: float) -> None:
        until = self.monotonic() + seconds
        with self._skip:
            while (left := until - self.monotonic()) > 0:
                self._skip.wait(left)


class WarpStop(threading.Event):
    """The executive's stop event on a warp clock: a wait for the next tick skips to it."""

    def __init__(self, warp: WarpClock):
        super().__init__()
        self.warp = warp

    def wait(self, timeout=None):
        if timeout is None or self.is_set():
            return super().wait(timeout)
        self.warp.skip(timeout)
        return self.is_set()


class Ticks:
    """Each cycle's start (its first step, `commanding`, on the executive's clock) and its tick's due time.

    The due time is the tick grid of the executive's TickSource (start + index * period): which
    tick a cycle serves is the executive's to say, how late it starts is measured here. Kept in
    arrays allocated (and touched) before the run: a list growing by a cycle's worth would be the
    soak's own RSS growth. One recorder may follow several executives in turn (`attach`)."""

    def __init__(self, clock, capacity: int):
        self.clock = clock
        self.starts = np.full(capacity, np.nan)
        self.due = np.full(capacity, np.nan)
        self.index = np.full(capacity, -1, dtype=np.int64)
        self.count = 0
        self.segments: list[int] = []      # the first record of each executive attached

    def attach(self, executive: Executive) -> None:
        self.segments.append(self.count)
        original = executive.commanding
        last = [-1]

        def commanding():
            now = self.clock()
            driver = executive.driver
            k = self.count
            # Only the loop's cycles: run() commands once more after its loop, with the last index again.
            if driver is not None and driver.ticks.index > last[0] and k < len(self.starts):
                last[0] = driver.ticks.index
                self.starts[k] = now
                self.due[k] = driver.ticks.due(driver.ticks.index)
                self.index[k] = driver.ticks.index
                self.count = k + 1
            return original()

        executive.commanding = commanding

    def lateness_ms(self) -> np.ndarray:
        assert self.count < len(self.starts), "more cycles than the arrays hold"
        return (self.starts[:self.count] - self.due[:self.count]) * 1e3

    def missed(self) -> int:
        """Ticks skipped between the cycles recorded (within each executive's run)."""
        bounds = self.segments + [self.count]
        return sum(int(np.sum(np.diff(self.index[a:b]) - 1)) for a, b in zip(bounds, bounds[1:]) if b - a > 1)


def loop_counters(executive: Executive) -> dict:
    groups = executive.driver.groups
    return {"overruns": sum(g.overruns for g in groups), "slips": sum(g.slips for g in groups),
            "ticks_missed": executive.driver.ticks.ticks_missed,
            "sensing_max_ms": groups[0].max_duration_s * 1e3,
            "own_jitter_p99_ms": executive.driver.ticks.jitter.percentile(99) * 1e3}


class RssSampler:
    def __init__(self, every_s: float, extra=lambda: None):
        self.samples: list[tuple[float, int, object]] = []
        self._every = every_s
        self._extra = extra
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while True:
            self.samples.append((time.monotonic(), vm_kib(), self._extra()))
            if self._done.wait(self._every):
                return

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join(5)


def flight_config(tmp_path, **sections) -> KestrelConfig:
    base = KestrelConfig()
    changes = {"store": dataclasses.replace(base.store, path=str(tmp_path / "store.sqlite")),
               "flight": dataclasses.replace(base.flight, parameters_path=str(tmp_path / "parameters.json"))}
    for name, values in sections.items():
        changes[name] = dataclasses.replace(changes.get(name, getattr(base, name)), **values)
    return dataclasses.replace(base, **changes)


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx if sxx else 0.0


def table(rows: list[tuple[str, str]]) -> None:
    print("| what | measured |")
    print("|---|---|")
    for what, value in rows:
        print(f"| {what} | {value} |")


# --- 1. the loop at 10 Hz, 1024x1024, one core -----------------------------------------------------

def test_executive_loop_10hz_1024_one_core(tmp_path):
    sensor = CyclingSensor(BIG, 16)
    frames = round(LOOP_S * 10)
    config = flight_config(tmp_path, sensor={"frame_rate_hz": 10.0, "max_frames": frames})
    affinity = os.sched_getaffinity(0)
    cpu = sorted(affinity)[-1]
    os.sched_setaffinity(0, {cpu})
    try:
        rss_before = vm_kib()
        port = NullPort()
        downlink = Downlink(config.link, port)
        executive = Executive(config, downlink, threading.Event(), sensor=sensor)
        ticks = Ticks(time.monotonic, frames + 1)
        ticks.attach(executive)
        downlink.start()
        with RssSampler(0.25) as rss:
            wall, cpu_time = time.monotonic(), time.process_time()
            counters = executive.run()
            wall, cpu_time = time.monotonic() - wall, time.process_time() - cpu_time
            rss_end = vm_kib()
        downlink.stop(2.0)
        downlink.close()
        loop = loop_counters(executive)
        backlog = sum(executive.store.unsent_octets)
        executive.close()
    finally:
        os.sched_setaffinity(0, affinity)
    assert counters.frames_processed == frames and counters.frames_failed == 0
    assert ticks.count == frames
    late = ticks.lateness_ms()
    print(f"\nexecutive loop: {frames} frames of 1024x1024 at 10 Hz, the whole process on CPU {cpu}, "
          f"link 115200 baud, store synchronous={config.store.synchronous}")
    table([
        ("wall time of run()", f"{wall:.1f} s"),
        ("CPU share (process CPU / wall, one core)", f"{100 * cpu_time / wall:.1f} % ({cpu_time:.1f} s CPU)"),
        ("CPU per cycle", f"{1e3 * cpu_time / frames:.1f} ms"),
        ("sensing group run, the executive's own (last / max)",
         f"{counters.loop_time_last_us / 1e3:.1f} / {loop['sensing_max_ms']:.1f} ms"),
        ("VmRSS before the executive (16 frames of 2 MiB held) / max / at end",
         f"{rss_before / 1024:.1f} / {max(s[1] for s in rss.samples) / 1024:.1f} / {rss_end / 1024:.1f} MiB"),
        ("tick lateness (cycle start - tick due) p50 / p99 / max",
         f"{percentile(late, 50):.2f} / {percentile(late, 99):.2f} / {late.max():.2f} ms"),
        ("the executive's own jitter p99 (TickSource, at the tick)", f"{loop['own_jitter_p99_ms']:.2f} ms"),
        ("overruns / ticks missed / cycle slips", f"{loop['overruns']} / {loop['ticks_missed']} / {loop['slips']}"),
        ("detections; octets on the link; left in the store",
         f"{counters.detections_total}; {port.octets}; {backlog}"),
    ])


# --- 2. the accelerated soak -----------------------------------------------------------------------

SOAK_BAUD = 9600
TICK_CAPACITY = 2_000_000      # cycles the soak can record (32 MiB of arrays, touched before it starts)
# NORMAL: no fsync a cycle. Under FULL (as flown, and in 1 and 3) the sync costs about 2 ms of each
# cycle's real time here, which caps the speed-up near 40x; memory and the schedule do not depend on it.
SOAK_SYNC = os.environ.get("KESTREL_PERF_SOAK_SYNC", "NORMAL")
SOAK_STORE = {"capacity_octets": 256 << 10, "quota_alert": 64 << 10, "quota_alert_update": 64 << 10,
              "quota_event": 64 << 10, "quota_verification": 64 << 10, "quota_detections": 128 << 10, "quota_chip": 128 << 10, "quota_housekeeping": 64 << 10,
              "quota_quicklook": 64 << 10, "quota_bulk": 64 << 10}


def test_accelerated_soak(tmp_path, monkeypatch):
    sensor = CyclingSensor(SMALL, 64)
    config = flight_config(tmp_path, sensor={"frame_rate_hz": 10.0}, link={"baud": SOAK_BAUD},
                           store={**SOAK_STORE, "synchronous": SOAK_SYNC})
    warp = WarpClock()
    ticks = Ticks(warp.monotonic, TICK_CAPACITY)
    # The writer paces the line on the warp clock too (it calls time.sleep: that one, in its module only).
    monkeypatch.setattr(downlink_module, "time", types.SimpleNamespace(sleep=warp.sleep, monotonic=warp.monotonic))
    # Hours of drop events would be hours of log records kept by pytest's log capture: this
    # process's RSS, not the executive's.
    flight_log = logging.getLogger("flight")
    level = flight_log.level
    flight_log.setLevel(logging.CRITICAL)
    crashes: list[tuple[float, str]] = []
    audits: list[str] = []
    cycles = octets = hk_expected = 0
    loops = []
    started = time.monotonic()
    deadline = started + SOAK_S
    try:
        with RssSampler(0.5, extra=warp.monotonic) as rss:
            while time.monotonic() < deadline - 1.0:
                # One run of the program; if a defect stops it, a new one on the same store, as the
                # service manager restarts the program (exit 70).
                stop = WarpStop(warp)
                port = NullPort()
                downlink = Downlink(config.link, port, clock=warp.monotonic)
                executive = Executive(config, downlink, stop, sensor=sensor, clock=warp.monotonic,
                                      wallclock=warp.wall)
                ticks.attach(executive)
                timer = threading.Timer(deadline - time.monotonic(), stop.set)
                timer.start()
                downlink.start()
                crashed = False
                try:
                    executive.run()
                except construct.ConstructError as exc:
                    crashed = True
                    crashes.append((warp.monotonic(), f"{type(exc).__name__}: {exc}".splitlines()[0]))
                finally:
                    timer.cancel()
                    stop.set()
                # Housekeeping as run() starts, every 10th tick after tick 0, and as it stops; a run
                # stopped by a defect (building housekeeping) sends neither that one nor the last. Each time,
                # structure 1 and, with the framed uplink, the uplink's structure 3.
                last_tick = executive.driver.ticks.index if executive.driver is not None else 0
                hk_per_period = 1 + (executive.uplink.path is not None)
                hk_expected += hk_per_period * (1 + last_tick // 10 + (-1 if crashed else 1))
                downlink.stop(0.5)
                downlink.close()
                cycles += executive.counters.frames_processed
                octets += port.octets
                if executive.driver is not None:
                    loops.append(loop_counters(executive))
                store = executive.store
                try:
                    store.audit()
                except StoreError as exc:
                    audits.append(str(exc))
                totals = dict(held=sum(store.held_octets(c) for c in ProductClass), dropped=store.total("dropped"),
                              hk_put=store.totals[ProductClass.HOUSEKEEPING].put, put=store.total("put"),
                              by_class={c.name.lower(): (store.totals[c].held_octets, store.totals[c].held,
                                                         store.totals[c].dropped) for c in ProductClass})
                executive.close()
        real = time.monotonic() - started
    finally:
        flight_log.setLevel(level)
    simulated = warp.monotonic()
    hours = simulated / 3600
    late = ticks.lateness_ms()
    # RSS over executive time, after the first 20 % (the store and SQLite's cache fill first).
    samples = [(virtual / 3600, kib / 1024) for _, kib, virtual in rss.samples]
    settled = [s for s in samples if s[0] >= 0.2 * hours]
    rss_slope = slope(settled)                       # MiB per simulated hour
    tenth = max(1, len(settled) // 10)
    growth = statistics.median(v for _, v in settled[-tenth:]) - statistics.median(v for _, v in settled[:tenth])
    tenth = max(1, len(late) // 10)
    drift = float(np.median(late[-tenth:]) - np.median(late[:tenth]))
    overruns = sum(loop["overruns"] for loop in loops)
    missed = sum(loop["ticks_missed"] for loop in loops)
    runs = len(ticks.segments)
    print(f"\naccelerated soak: {real:.0f} s real, {hours:.2f} h simulated ({simulated / real:.0f}x), "
          f"64x64 frames at 10 Hz, a {SOAK_BAUD}-baud link, store capacity {config.store.capacity_octets >> 10} KiB, "
          f"synchronous={SOAK_SYNC}")
    table([
        ("cycles; runs of the program (restarts after a defect stopped it)", f"{cycles}; {runs}"),
        ("VmRSS at 20 % / max / at end", f"{settled[0][1]:.1f} / {max(v for _, v in samples):.1f} / "
                                         f"{samples[-1][1]:.1f} MiB"),
        ("VmRSS slope, last 80 % (least squares)", f"{rss_slope * 1024:+.1f} KiB per simulated hour"),
        ("VmRSS growth, median of the first to the last tenth of that", f"{growth * 1024:+.0f} KiB"),
        ("tick lateness p50 / p99 / max", f"{percentile(late, 50):.3f} / {percentile(late, 99):.3f} / "
                                          f"{late.max():.1f} ms"),
        ("lateness drift, median of the last tenth - the first", f"{drift:+.4f} ms"),
        ("overruns / ticks missed", f"{overruns} / {missed} (recorded between cycles: {ticks.missed()})"),
        ("housekeeping reports made / expected from the ticks run", f"{totals['hk_put']} / {hk_expected}"),
        ("products put / dropped by rule; held at the end",
         f"{totals['put']} / {totals['dropped']}; {totals['held'] >> 10} KiB of {config.store.capacity_octets >> 10} KiB"),
        ("held at the end by class: KiB (products); dropped by rule",
         "; ".join(f"{name} {held >> 10} ({count}); {dropped}" for name, (held, count, dropped)
                   in totals["by_class"].items() if count or dropped)),
        ("link use (executive time)", f"{octets * 10 / simulated:.0f} bit/s of {SOAK_BAUD}"),
        ("the loop stopped by a defect", "never" if not crashes else
         f"{len(crashes)} times, at {', '.join(f'{t / 3600:.2f}' for t, _ in crashes)} h; {crashes[0][1]}"),
    ])
    flat = abs(rss_slope) * hours < 2.0 and abs(growth) < 2.0
    print(f"RSS flat (under 2 MiB over the run): {'yes' if flat else 'NO'}; tick drift: {drift:+.4f} ms, "
          f"{overruns} overruns, {missed} ticks missed")
    print(f"store accounting at the end of each run (ProductStore.audit): "
          f"{'balances' if not audits else f'{len(audits)} of {runs} did not balance; the last: {audits[-1]}'}")
    assert totals["dropped"] > 0, "the soak was meant to fill the store and drop by rule"
    # Openings not yet offered may exceed it; the link at 9600 baud sends them within seconds.
    assert totals["held"] <= config.store.capacity_octets + (16 << 10), "the store outgrew its capacity"
    assert abs(totals["hk_put"] - hk_expected) <= hk_per_period * (runs + missed), \
        "housekeeping drifted from its period"
    assert flat, f"RSS grew {growth * 1024:.0f} KiB ({rss_slope * 1024:+.1f} KiB per simulated hour)"
    assert abs(drift) < 1.0, f"tick lateness drifted by {drift:.3f} ms"
    known = "octets counted unsent, rows say"
    if (crashes or audits) and all(known in a for a in audits) and all("store_unsent_octets" in c for _, c in crashes):
        # A product the writer took (next_unsent) and the executive then dropped by rule before the
        # writer marked it offered is subtracted from unsent_octets twice; once the sum is negative,
        # building housekeeping raises and the loop stops. Reproduced without threads in the report.
        pytest.xfail(f"known store defect (next_unsent/mark_offered race with a drop): {len(crashes)} stops, "
                     f"{len(audits)} unbalanced audits")
    assert not crashes and not audits, (crashes, audits)


# --- 3. alert latency at 115200 baud -------------------------------------------------------------

class GroundReader:
    """Reads the ground end of the paced link; keeps every chunk with the time it arrived."""

    def __init__(self, path: str):
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        self.chunks: list[tuple[float, bytes]] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._done.is_set():
            if not select.select([self.fd], [], [], 0.05)[0]:
                continue
            try:
                chunk = os.read(self.fd, 65536)
            except OSError:
                return
            self.chunks.append((time.monotonic(), chunk))

    def close(self):
        self._done.set()
        self._thread.join(2)
        os.close(self.fd)


def radio(baud: int, out: str) -> None:
    """The paced link and the ground's reader, in a process of their own (`python -m
    tests.perf.test_perf_executive radio BAUD FILE`): in the flight's process they would wait for
    its GIL, and the relay, late, would give up line time it cannot catch up (hil.radio keeps 64
    octets of credit), so the line would run slower than its baud. Prints the flight's port; on end
    of stdin writes every chunk the ground got, with its CLOCK_MONOTONIC arrival time, to FILE."""
    from hil.radio import PacedLink

    with PacedLink(baud) as link:
        ground = GroundReader(link.ground_port)
        print(link.flight_port, flush=True)
        sys.stdin.read()
        time.sleep(0.2)
        ground.close()
    with open(out, "wb") as capture:
        for arrived, chunk in ground.chunks:
            capture.write(struct.pack(">dI", arrived, len(chunk)) + chunk)


def read_capture(path) -> list[tuple[float, bytes]]:
    data = open(path, "rb").read()
    chunks, at = [], 0
    while at < len(data):
        arrived, length = struct.unpack_from(">dI", data, at)
        at += 12
        chunks.append((arrived, data[at:at + length]))
        at += length
    return chunks


def test_alert_latency_115200(tmp_path):
    from ground.decoder import GroundDecoder
    from kestrel.link.port import open_port
    from kestrel.link.spacepacket import packet_key
    from tests.support import NullArchive

    sensor = CyclingSensor(BIG, ALERT_FRAMES)
    read_at: dict[int, float] = {}                # frame index -> when the cycle read it (its frame time)
    read_frame = sensor.read

    def read_timed():
        index, pixels = read_frame()
        read_at[index] = time.monotonic()
        return index, pixels

    sensor.read = read_timed
    frames = round(ALERT_S * 10)
    link = {"line_lead_cadus": float(os.environ["KESTREL_PERF_LEAD"])} if "KESTREL_PERF_LEAD" in os.environ else {}
    config = flight_config(tmp_path, sensor={"frame_rate_hz": 10.0, "max_frames": frames}, link=link)
    rng = random.Random(7)
    alerts: list[tuple[float, float]] = []        # (frame time, put time) by alert number
    taken: list[float] = []                       # when the downlink writer took each from the store
    capture = tmp_path / "ground.capture"
    relay = subprocess.Popen([sys.executable, "-m", "tests.perf.test_perf_executive", "radio",
                              str(config.link.baud), str(capture)], cwd=REPO_ROOT, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        flight_port = relay.stdout.readline().strip()
        assert flight_port, "the radio did not start"
        port = open_port(flight_port, config.link.baud, timeout=0.1, write_timeout=None)
        downlink = Downlink(config.link, port)
        executive = Executive(config, downlink, threading.Event(), sensor=sensor)
        cycle = executive.cycle
        process = executive.detector.process
        source, urgent = downlink._source, downlink._urgent
        frame_time = [0.0]

        def cycle_timed():
            frame_time[0] = time.monotonic()
            return cycle()

        def process_then_alert(pixels):
            detections = process(pixels)
            if rng.random() < 0.4:
                number = len(alerts)
                data = struct.pack(">II", number, executive.counters.frames_processed) + bytes(ALERT_OCTETS - 8)
                put = time.monotonic()
                assert executive.send_tm(ProductClass.ALERT, ALERT_APID, ALERT_SERVICE, ALERT_SUBTYPE, data)
                alerts.append((frame_time[0], put))
            return detections

        def watched(take):
            def take_watched():
                item = take()
                if item is not None and packet_key(item[1])[0] == ALERT_APID:
                    taken.append(time.monotonic())
                return item
            return take_watched

        executive.cycle = cycle_timed
        executive.detector.process = process_then_alert
        # Both ways out of the store watched: the writer asks for urgent products before every frame.
        downlink.set_source(watched(source), watched(urgent))
        downlink.start()
        counters = executive.run()
        # Alerts go first: once none waits in the store, a few CADUs more carry the last one out.
        deadline = time.monotonic() + 5
        while executive.store.pending_octets(ProductClass.ALERT) and time.monotonic() < deadline:
            time.sleep(0.01)
        cadu_s = downlink.coder.cadu_length * 10 / config.link.baud
        time.sleep((config.link.line_lead_cadus + 3) * cadu_s)
        # The rest of the store is imagery for minutes at this rate: stop at once, and let the line
        # carry what the writer wrote (the pty holds a few CADUs) before the port closes.
        downlink.stop(0.0)
        time.sleep(1.0)
        downlink.close()
        loop = loop_counters(executive)
        db = sqlite3.connect(executive.files.store)
        reports = np.array([r[0] for r in db.execute(
            f"SELECT length FROM products WHERE apid = {products.APID_DETECTIONS}")])
        tracker_alerts = db.execute(f"SELECT COUNT(*) FROM products WHERE apid IN {products.ALERT_APIDS}").fetchone()[0]
        db.close()
        executive.close()
    finally:
        relay.stdin.close()
        relay.wait(30)
    chunks = read_capture(capture)
    received: dict[int, float] = {}
    now = [0.0]

    def alert(tm):
        number, _ = struct.unpack(">II", tm.data[:8])
        received.setdefault(number, now[0])

    openings: list[float] = []

    def opening(tm):
        update = products.AlertUpdate.unpack(tm.data, decoder.cuc.length, tm.subtype)
        openings.append(1e3 * (now[0] - read_at[update.frame_index]))

    decoder = GroundDecoder(config, NullArchive(), handlers={ALERT_APID: alert,
                                                             products.APID_ALERT_OPENINGS: opening})
    for arrived, chunk in chunks:
        now[0] = arrived
        decoder.feed(chunk)
    decoder.finish()
    octets = sum(len(c) for _, c in chunks)
    assert octets == downlink.bytes_sent, (octets, downlink.bytes_sent)
    # The store holds imagery for minutes, so the line should never idle: a writer that runs too
    # little ahead of it and wakes late would show here as a share below 100 %.
    line_busy = octets * 10 / config.link.baud / (chunks[-1][0] - chunks[0][0] + len(chunks[0][1]) * 10 / config.link.baud)
    missing = [n for n in range(len(alerts)) if n not in received]
    assert not missing, f"{len(missing)} of {len(alerts)} alerts never arrived"
    assert len(alerts) >= 100 and len(taken) == len(alerts)
    from_frame = [1e3 * (received[n] - alerts[n][0]) for n in range(len(alerts))]
    from_put = [1e3 * (received[n] - alerts[n][1]) for n in range(len(alerts))]
    in_store = [1e3 * (taken[n] - alerts[n][1]) for n in range(len(alerts))]
    on_line = [1e3 * (received[n] - taken[n]) for n in range(len(alerts))]

    def spread(values) -> str:
        return f"{percentile(values, 50):.1f} / {percentile(values, 99):.1f} / {max(values):.1f} ms"

    print(f"\nalert latency: {len(alerts)} alerts over {counters.frames_processed} cycles of 1024x1024 at 10 Hz, "
          f"115200 baud through hil.radio.PacedLink (its own process), {octets} octets received, "
          f"{loop['overruns']} overruns, {loop['ticks_missed']} ticks missed")
    table([
        ("from frame time to the last octet of its CADU at the ground, p50 / p99 / max", spread(from_frame)),
        ("from the put (send_tm) to the same, p50 / p99 / max", spread(from_put)),
        ("  of which in the store (put to the writer taking it)", spread(in_store)),
        ("  of which in the writer, the pty and on the line (taken to arrival)", spread(on_line)),
        ("one CADU on the line", f"{1e3 * cadu_s:.1f} ms; the writer runs up to {config.link.line_lead_cadus} "
                                 f"ahead"),
        ("the line busy, first octet to last (octets x 10 / baud over the time between)", f"{100 * line_busy:.2f} %"),
        ("the tracker's own alerts in the same run, on the same channel (openings, updates and closes)",
         str(tracker_alerts)),
        (f"the tracker's openings, {len(openings)}, from their frame's time to the same, p50 / p99 / max",
         spread(openings) if openings else "none"),
        ("detection reports, octets p50 / p99 / max (a packet handed to the multiplexer goes out whole)",
         f"{np.percentile(reports, 50):.0f} / {np.percentile(reports, 99):.0f} / {reports.max()}"),
    ])
    p99 = percentile(from_frame, 99)
    print(f"goal p99 <= {ALERT_GOAL_MS:.0f} ms from frame time: {p99:.1f} ms -> "
          f"{'met' if p99 <= ALERT_GOAL_MS else 'NOT MET'}")


if __name__ == "__main__" and sys.argv[1:2] == ["radio"]:
    radio(int(sys.argv[2]), sys.argv[3])
