"""`kestrel-hil run`: scenarios flown over the impaired radio, each judged against its bars.

One scenario: the ground station listens on one end of an `ImpairedLink`,
the flight program flies the scenario's scene on the other with its store in
the scenario's directory; commands are sent from the ground's radio at their
times (the TC packet `kestrel-ground command` would send), faults are
injected (the flight process killed with SIGKILL and restarted on the same
store; the link cut), and when the flight is done and the line has been
quiet for `drain_s` the ground is stopped and the bars are judged from what
the ground archived, the flight store's file and the link's counters.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ground.uplink import TcSender
from kestrel.config import render_defaults
from kestrel.link.port import PortError
from kestrel.link.tcframe import FrameType

from .demo import _program, _stop
from .archive_query import read_only
from .campaign_disk import StoreFilesystem
from .campaign_uplink import CopSession, DownlinkTap
from .campaign_series import Sampler, alert_latencies, detections_against_truth, elevations, store_depth
from .impairments import ImpairedLink
from .report import score
from .scenario import Scenario, command_request
from .scene import SceneSimulator
from .sim_source import scene_url

SEQUENCE_MODULO = 1 << 14


@dataclass
class Bar:
    name: str
    passed: bool
    evidence: str


@dataclass
class ScenarioResult:
    name: str
    description: str
    path: str
    passed: bool = False
    bars: list[Bar] = field(default_factory=list)
    wall_s: float = 0.0
    link: dict = field(default_factory=dict)          # ImpairedLink counters
    relay_cpu_s: float = 0.0                          # the radio simulator's own CPU time
    flight_runs: list = field(default_factory=list)   # exit status of each flight run
    ground_exit: int | None = None                    # the ground station's exit status
    commands: list = field(default_factory=list)      # (at_s, words, apid, sequence count)
    products: dict = field(default_factory=dict)      # the store's accounting against the ground
    ground: dict = field(default_factory=dict)        # the ground's summary.json
    series: dict = field(default_factory=dict)        # what the report plots (hil.campaign_series)
    started_unix: float = 0.0                         # wall clock at the flight's start: the series' second 0
    skipped: list = field(default_factory=list)       # faults not injected here, each with the reason
    disk: list = field(default_factory=list)          # fill_disk: when the store's filesystem was filled and freed
    cop1: dict = field(default_factory=dict)          # the COP-1 session's FOP-1 counters
    mode: str = "simulated"                           # or "hardware": the flight program on a board (--flight-port)
    error: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=float)


def record_end(result, ground_exit, session, stack, link, sampler) -> None:
    """What a run records once its ground has stopped (local or on hardware): the ground's exit, the COP-1
    session's counters, the link's counters and CPU, the sampled series; the run's resources released."""
    result.ground_exit = ground_exit
    if session is not None:
        result.cop1 = session.counters()
    stack.pop_all().close()
    result.relay_cpu_s = link.cpu_seconds
    result.link = link.counters.as_dict()
    result.series = {"link": sampler.link_series, "flight": sampler.flight_series}


def uplink_octets(config, packet: bytes, out_dir: Path) -> bytes:
    """A TC packet as the flight program's port takes it: bare in the bench mode, else a BD frame in a
    CLTU (clear: the shipped scenarios configure no SA; with one, the sender protects the frame)."""
    if config.uplink.mode != "cltu":
        return packet
    sender = TcSender(config.link, config.uplink, lambda octets: None, out_dir / "uplink-counters", time.monotonic)
    return sender.build(FrameType.BD, 0, packet)


def _launch(command: list[str], log: Path) -> subprocess.Popen:
    handle = open(log, "a")
    try:
        return subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, text=True,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    finally:
        handle.close()


def _wait_for(log: Path, marker: str, process: subprocess.Popen, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        if log.exists() and marker in log.read_text(errors="replace"):
            return True
        time.sleep(0.05)
    return False


def product_accounting(store_path: Path, archive_path: Path) -> dict:
    """Every product the flight store committed, against what the ground archived.

    Committed: each APID's counts 0..next-1 (the store never reuses one). A committed product is
    held (still in the store), dropped by its class's rule, or acknowledged; anything else is lost
    in the store. A held product the link was offered (it left the store at least once) is on the
    ground or lost on the link (the packet's APID and 14-bit count, read from its CCSDS header,
    say which); one never offered waits for a later pass. Lost: lost in the store or on the link.
    """
    with read_only(store_path) as db:
        counts = dict(db.execute("SELECT apid, next FROM sequences"))
        held = [(bytes(r[0][:4]), r[1]) for r in db.execute("SELECT packet, offers FROM products")]
        dropped, acknowledged = db.execute("SELECT COALESCE(SUM(dropped), 0), COALESCE(SUM(acknowledged), 0) "
                                           "FROM totals").fetchone()
    with read_only(archive_path) as db:
        on_ground = set(db.execute("SELECT apid, sequence_count FROM packets"))
    # The CCSDS primary header, read here and not through our own parser.
    keys = [((((h[0] & 0x07) << 8) | h[1], ((h[2] & 0x3F) << 8) | h[3]), offers) for h, offers in held]
    committed = sum(counts.values())
    lost_in_store = committed - len(held) - dropped - acknowledged
    delivered = sum(k in on_ground for k, _ in keys)
    waiting = sum(k not in on_ground and offers == 0 for k, offers in keys)
    lost_on_link = sum(k not in on_ground and offers > 0 for k, offers in keys)
    return {"committed": committed, "on_ground": delivered, "waiting_unsent": waiting, "lost_on_link": lost_on_link,
            "dropped_by_rule": dropped, "acknowledged": acknowledged, "lost_in_store": lost_in_store,
            "lost": lost_on_link + max(0, lost_in_store)}


def _completed(archive_path: Path, apid: int, sequence: int) -> bool:
    with read_only(archive_path) as db:
        return db.execute("SELECT COUNT(*) FROM command_reports WHERE kind = 'COMPLETION' AND success = 1 "
                          "AND request_apid = ? AND request_sequence_count = ?", (apid, sequence)).fetchone()[0] > 0


def _scenario_config(scenario: Scenario, config, config_path: str | None, out_dir: Path):
    """The configuration both programs run with: the campaign's, with what the scenario needs switched on
    (COP-1 needs the CLCW in the downlink's OCF), written whole beside the run when it differs."""
    if not scenario.cop1 or config.link.ocf:
        return config, config_path
    config = replace(config, link=replace(config.link, ocf=True))
    path = out_dir / "kestrel.toml"
    path.write_text(render_defaults(type(config), instance=config))
    return config, str(path)


def run_scenario(scenario: Scenario, config, config_path: str | None, out_dir: Path, ports=None,
                 announce=print) -> ScenarioResult:
    """Fly one scenario; the result says which bars were met and why. Our own failures raise. With `ports`
    (hil.campaign_hardware.HardwarePorts) the flight program is on a board at the far end of a real line."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in ("store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "flight.log", "ground.log", "spy.log",
                  "kestrel.toml"):
        (out_dir / stale).unlink(missing_ok=True)
    ground_dir = out_dir / "ground"
    if ground_dir.exists():
        for stale in ground_dir.iterdir():
            if stale.is_file():
                stale.unlink()
    result = ScenarioResult(scenario.name, scenario.description, scenario.path)
    config, config_path = _scenario_config(scenario, config, config_path, out_dir)
    started = time.monotonic()
    rate = config.sensor.frame_rate_hz
    frame_count = max(1, math.ceil(scenario.duration_s * rate))
    store = out_dir / "store.sqlite"
    flight_log, ground_log = out_dir / "flight.log", out_dir / "ground.log"
    if ports is not None:
        from .campaign_hardware import fly_on_hardware

        def launch_ground(port: str) -> subprocess.Popen:
            ground = _launch(_program("ground", config_path, "listen", "--port", port, "--out", str(ground_dir)),
                             ground_log)
            if not _wait_for(ground_log, "listening", ground, 60):
                _stop(ground, 5)
                raise RuntimeError(f"kestrel-ground did not start: {ground_log.read_text()[-500:]}")
            return ground

        result.mode = "hardware"
        fly_on_hardware(scenario, config, config_path, out_dir, ports, result, launch_ground, _stop, announce)
        result.wall_s = time.monotonic() - started
        _judge(scenario, config, result, ground_dir, None, frame_count)
        (out_dir / "result.json").write_text(result.to_json())
        return result
    profile = scenario.profile()
    with contextlib.ExitStack() as stack:
        disk = None
        if any(f.kind == "fill_disk" for f in scenario.faults):
            disk = StoreFilesystem(out_dir / "store-fs")
            why = disk.mount()
            if why:
                result.skipped.append({"fault": "fill_disk", "reason": why})
                disk = None
            else:
                stack.callback(disk.unmount, store)
        flight_store = disk.store if disk is not None else store
        spy = stack.enter_context(open(out_dir / "spy.log", "w"))
        tap = DownlinkTap(spy) if scenario.cop1 else None
        link = stack.enter_context(ImpairedLink(profile, spy=tap or spy, fallback_baud=config.link.baud))
        session = CopSession(config, tap, link.inject_up, out_dir / "uplink-counters") if scenario.cop1 else None
        ground = _launch(_program("ground", config_path, "listen", "--port", link.ground_port,
                                  "--out", str(ground_dir)), ground_log)
        stack.callback(_stop, ground, 15)
        if not _wait_for(ground_log, "listening", ground, 60):
            raise RuntimeError(f"kestrel-ground did not start: {ground_log.read_text()[-500:]}")

        def fly(frames: int) -> subprocess.Popen:
            return _launch(_program("flight", config_path, "--port", link.flight_port, "--store", str(flight_store),
                                    "--source", scene_url(scenario.scene), "--max-frames", str(frames)), flight_log)

        flight = fly(frame_count)
        t0 = time.monotonic()
        result.started_unix = time.time()
        link.set_epoch(t0)
        sampler = Sampler(link, t0)
        events = [(c.at_s, "command", c) for c in scenario.commands]
        events += [(f.at_s, "kill", f) for f in scenario.faults if f.kind == "kill_flight"]
        if disk is not None:
            events += [(f.at_s, "fill", f) for f in scenario.faults if f.kind == "fill_disk"]
            events += [(f.at_s + f.for_s, "free", f) for f in scenario.faults if f.kind == "fill_disk"]
        sequence = {}
        frames_left = frame_count
        pending = sorted(events, key=lambda e: e[0])
        limit = scenario.duration_s * 3 + 60
        while True:
            now = time.monotonic() - t0
            while pending and pending[0][0] <= now:
                at, kind, what = pending.pop(0)
                if kind == "command":
                    request = command_request(what.tc)
                    apid = config.uplink.command_apid
                    count = sequence.get(apid, 0)
                    sequence[apid] = count + 1
                    packet = request.tc(apid, count).pack()
                    if session is not None:
                        session.send(packet)
                    else:
                        link.inject_up(uplink_octets(config, packet, out_dir))
                    result.commands.append({"at_s": at, "tc": list(what.tc), "apid": apid, "sequence": count})
                elif kind == "fill":
                    octets = disk.fill()
                    result.disk.append({"at_s": round(now, 3), "filled_octets": octets,
                                        "free_after": disk.free_octets()})
                elif kind == "free":
                    disk.free()
                    result.disk.append({"at_s": round(now, 3), "freed": True, "free_after": disk.free_octets()})
                else:
                    if flight.poll() is None:
                        flight.send_signal(signal.SIGKILL)
                    flight.wait()
                    result.flight_runs.append(flight.returncode)
                    # The scene frames flown so far, by the clock; the restart flies the rest.
                    frames_left = max(1, frames_left - int(max(0.0, at - 1.0) * rate))
                    time.sleep(what.for_s)
                    flight = fly(frames_left)
            if session is not None:
                session.pump()
            if flight.poll() is not None and not pending:
                break
            if flight.poll() is not None and pending and pending[0][1] in ("command", "free"):
                # The flight ended before the command's (or the freeing's) time: do it now, while the radio is up.
                pending[0] = (now, *pending[0][1:])
            if now > limit:
                _stop(flight, 15)
                result.error = f"the flight program ran past {limit:.0f} s"
                break
            sampler.sample(flight.pid if flight.poll() is None else None)
            time.sleep(0.02)
        result.flight_runs.append(flight.returncode)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and time.monotonic() - link.last_activity < scenario.drain_s:
            sampler.sample(None)
            if session is not None:
                session.pump()
            time.sleep(0.02 if session is not None else 0.1)
        record_end(result, _stop(ground, 15), session, stack, link, sampler)
    result.wall_s = time.monotonic() - started
    _judge(scenario, config, result, ground_dir, store, frame_count)
    (out_dir / "result.json").write_text(result.to_json())
    return result


def _judge(scenario: Scenario, config, result: ScenarioResult, ground_dir: Path, store: Path | None,
           frame_count: int):
    """The bars, from the ground's archive, the flight store (None: it is on the board) and the link's counters."""
    bars = scenario.bars
    archive = ground_dir / "archive.sqlite"
    if (ground_dir / "summary.json").exists():
        result.ground = json.loads((ground_dir / "summary.json").read_text())
    out = result.bars
    if store is not None:
        kills = sum(1 for f in scenario.faults if f.kind == "kill_flight")
        clean_exits = result.flight_runs[kills:]
        out.append(Bar("flight program ends cleanly", bool(clean_exits) and all(s == 0 for s in clean_exits),
                       f"exit status of each run: {result.flight_runs} ({kills} killed by the scenario)"))
    out.append(Bar("ground decoder ends cleanly", result.ground_exit == 0, f"exit status {result.ground_exit}"))
    if result.error:
        out.append(Bar("run finished in time", False, result.error))
    if not archive.exists() or (store is not None and not store.exists()):
        out.append(Bar("ground archive and flight store exist", False, f"{archive}: {archive.exists()}, "
                       f"{store}: {store is None or store.exists()}"))
        result.passed = False
        return
    simulator = SceneSimulator(scenario.scene)
    report = score(ground_dir, frame_count, result.link["down"]["octets_passed"], config.hil,
                   lambda index: simulator.frame(index)[1], tuple(scenario.scene.snr_values))
    result.products = product_accounting(store, archive) if store is not None else {}
    p = result.products
    _series_after(scenario, config, result, ground_dir, archive, lambda index: simulator.frame(index)[1])
    if bars.reports_complete:
        out.append(Bar("every processed frame's report reached the ground",
                       report.reports_received == report.frames_processed > 0,
                       f"{report.reports_received} reports of {report.frames_processed} frames processed"))
    if bars.products_lost_max >= 0 and store is not None:
        out.append(Bar(f"products lost <= {bars.products_lost_max}", p["lost"] <= bars.products_lost_max,
                       f"{p['lost']} lost ({p['lost_on_link']} offered to the link and not on the ground, "
                       f"{p['lost_in_store']} neither held nor dropped by rule) of {p['committed']} committed; "
                       f"{p['on_ground']} on the ground, {p['waiting_unsent']} waiting unsent for a later pass, "
                       f"{p['dropped_by_rule']} dropped by rule"))
    if bars.frames_bad_max >= 0:
        sync = result.ground.get("sync", {})
        bad = sync.get("frames_bad")
        # A cut truncates the frame on the line when it starts: one bad frame per outage is the cut's, not the code's.
        cuts = len(scenario.profile().outages)
        allowed = bars.frames_bad_max + cuts
        out.append(Bar(f"bad transfer frames <= {bars.frames_bad_max}" + (f" (+{cuts} cut by outages)" if cuts else ""),
                       bad is not None and bad <= allowed,
                       f"{bad} bad of {sync.get('frames_good', 0) + (bad or 0)}; RS symbols corrected "
                       f"{sync.get('symbols_corrected')}; bits flipped on the downlink "
                       f"{result.link['down']['bits_flipped']}"))
    if bars.commands_completed:
        done = [c for c in result.commands if _completed(archive, c["apid"], c["sequence"])]
        out.append(Bar("every command completed", len(done) == len(scenario.commands),
                       f"{len(done)} of {len(scenario.commands)} with a completion success report: "
                       + ", ".join(" ".join(c["tc"]) for c in result.commands)))
    if bars.commands_verified_once:
        out.append(_verified_once(archive, result))
    if bars.disk_full_reported and store is not None and result.disk:
        out.append(_disk_full_bar(archive, result))
    if bars.latency_worst_max_s >= 0:
        out.append(Bar(f"worst latency <= {bars.latency_worst_max_s:g} s",
                       report.latency_worst_s <= bars.latency_worst_max_s,
                       f"{report.latency_worst_s:.2f} s (median {report.latency_median_s:.2f} s)"))
    if bars.pd_min >= 0:
        hit = sum(v[0] for k, v in report.target_frames.items() if float(k) >= config.hil.pass_snr)
        total = sum(v[1] for k, v in report.target_frames.items() if float(k) >= config.hil.pass_snr)
        pd = hit / total if total else 0.0
        out.append(Bar(f"Pd at SNR >= {config.hil.pass_snr:g} >= {bars.pd_min:g}", total > 0 and pd >= bars.pd_min,
                       f"{pd:.3f} ({hit}/{total} target-frames)"))
    if bars.false_alarms_per_frame_max >= 0:
        out.append(Bar(f"false alarms per frame <= {bars.false_alarms_per_frame_max:g}",
                       report.frames_scored > 0 and report.false_alarms_per_frame <= bars.false_alarms_per_frame_max,
                       f"{report.false_alarms_per_frame:.2f} ({report.false_alarms} in {report.frames_scored} "
                       f"scored frames)"))
    result.passed = all(b.passed for b in out)


def _verified_once(archive: Path, result: ScenarioResult) -> Bar:
    """Each command sent: exactly one acceptance and one completion success report, and no failure; a command
    FARM-1 took twice (a retransmitted frame it should have refused) would be executed, and reported, twice."""
    with read_only(archive) as db:
        rows = db.execute("SELECT request_apid, request_sequence_count, kind, success, COUNT(*) FROM command_reports "
                          "WHERE service = 1 GROUP BY 1, 2, 3, 4").fetchall()
    reports = {(a, q, k, bool(ok)): n for a, q, k, ok, n in rows}
    wrong = []
    for c in result.commands:
        key = (c["apid"], c["sequence"])
        got = {k: reports.get((*key, k, True), 0) for k in ("ACCEPTANCE", "COMPLETION")}
        failed = sum(n for (a, q, _k, ok), n in reports.items() if (a, q) == key and not ok)
        if got != {"ACCEPTANCE": 1, "COMPLETION": 1} or failed:
            wrong.append(f"count {c['sequence']}: {got['ACCEPTANCE']} acceptance, {got['COMPLETION']} completion, "
                         f"{failed} failure reports")
    cop = result.cop1
    how = (f"; FOP-1: {cop.get('ad_sent', 0)} AD frames, {cop.get('retransmissions', 0)} retransmissions, "
           f"{cop.get('acknowledged', 0)} acknowledged, {cop.get('clcws_seen', 0)} CLCWs seen, "
           f"alerts {cop.get('alert_reasons', [])}, {cop.get('queued', 0)} never sent" if cop else "")
    return Bar("every command verified exactly once", bool(result.commands) and not wrong,
               f"{len(result.commands) - len(wrong)} of {len(result.commands)} with one acceptance and one completion "
               f"success report and no failure" + (": " + "; ".join(wrong[:5]) if wrong else "") + how)


def _disk_full_bar(archive: Path, result: ScenarioResult) -> Bar:
    """The store's filesystem filled: the flight program counted the products it could not keep (housekeeping
    store_errors, and event 17 when one could be stored), and frames flown after the space came back reached
    the ground. Nothing it had stored is lost: that is the products bar's accounting. Judged only when the fault
    ran: a skipped one is listed with its reason instead."""
    freed = next((d["at_s"] for d in result.disk if d.get("freed")), None)
    with read_only(archive) as db:
        errors = db.execute("SELECT COALESCE(MAX(store_errors), 0) FROM housekeeping").fetchone()[0]
        events = db.execute("SELECT COUNT(*) FROM events WHERE event_id = 17").fetchone()[0]
        after = db.execute("SELECT COUNT(*) FROM detection_reports WHERE received_at > ?",
                           (result.started_unix + (freed if freed is not None else 1e9),)).fetchone()[0]
    filled = result.disk[0]
    return Bar("a full disk is reported and flying goes on", errors > 0 and after > 0,
               f"filled at {filled['at_s']:.1f} s ({filled['filled_octets']} octets of filler, "
               f"{filled['free_after']} free after), freed at {freed} s; store_errors in housekeeping {errors}; "
               f"event 17 received {events}; {after} frame reports received after the space came back")


def _series_after(scenario: Scenario, config, result: ScenarioResult, ground_dir: Path, archive: Path, truth) -> None:
    """The plotted series read back from the ground's archive, the scene's truth and the pass schedule."""
    result.series["store"] = store_depth(archive, result.started_unix)
    result.series["detections"] = detections_against_truth(archive, ground_dir / "detections.jsonl", truth,
                                                           config.hil.match_radius_px)
    result.series["alert_latency_s"] = alert_latencies(archive)
    result.series["passes"] = elevations(scenario.passes, scenario.duration_s)
    result.series["outages"] = [list(o) for o in scenario.profile().outages]


def run_campaign(scenarios: list[Scenario], config, config_path: str | None, out_dir: Path, jobs: int = 1,
                 progress=print, ports=None) -> list[ScenarioResult]:
    """Every scenario in its own directory under `out_dir`, `jobs` at a time; results in the given order.
    With `ports` (one board at the far end of a real line) one at a time."""
    results: dict[int, ScenarioResult] = {}
    total = len(scenarios)
    jobs = 1 if ports is not None else max(1, jobs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_scenario, s, config, config_path, out_dir / s.name, ports, progress): i
                   for i, s in enumerate(scenarios)}
        for future in concurrent.futures.as_completed(futures):
            i = futures[future]
            try:
                results[i] = future.result()
            except (OSError, RuntimeError, sqlite3.Error, PortError) as exc:
                s = scenarios[i]
                results[i] = ScenarioResult(s.name, s.description, s.path, error=f"{type(exc).__name__}: {exc}",
                                            bars=[Bar("the bench ran the scenario", False, str(exc))])
            r = results[i]
            done = len(results)
            bar = "#" * (20 * done // total) + "." * (20 - 20 * done // total)
            progress(f"[{bar}] {done}/{total} {r.name}: {'PASS' if r.passed else 'FAIL'} ({r.wall_s:.0f} s)")
    return [results[i] for i in range(total)]
