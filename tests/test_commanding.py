"""Commanding the flight program end to end: kestrel-ground command and kestrel-flight as processes, on the
two ends of the bench's paced pseudo-serial link (115200 baud), each command tracked to its ST[01] reports.

References: the service declarations (kestrel.services) for what each reply must hold, the mode rules
(flight.modes), and the flight's own housekeeping and events as the ground archives them.
"""
import dataclasses
import json
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from flight.downlink import Downlink
from flight.executive import Executive
from flight.modes import Cause, Mode
from flight.store import ProductClass
from ground.decoder import GroundDecoder
from hil.radio import PacedLink
from kestrel import products, services
from kestrel.link.telecommand import PusTc
from kestrel.services import Reason, Stage, VerificationReport
from tests.support import NullArchive
from tests.test_flight_to_ground import CapturePort, decode, small_config

SOURCE = "sim://clear?width=64&height=64&seed=2"


@pytest.fixture
def flight(tmp_path):
    """kestrel-flight running on one end of a paced link; yields (ground port, parameters file)."""
    parameters = tmp_path / "parameters.json"
    config = tmp_path / "k.toml"
    config.write_text(f"[flight]\nparameters_path = '{parameters}'\nhousekeeping_period_s = 0.5\n")
    with PacedLink(115200) as link:
        process = subprocess.Popen([sys.executable, "-m", "flight", "--config", str(config), "--port",
                                    link.flight_port, "--source", SOURCE], stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        try:
            yield link.ground_port, parameters, tmp_path
        finally:
            process.terminate()
            out, err = process.communicate(timeout=20)
            assert process.returncode == 0, err
            assert "Traceback" not in err


def command(port, state, *args, timeout=15):
    return subprocess.run([sys.executable, "-m", "ground", "command", "--port", port, "--out", str(state),
                           "--timeout", "10", *args], capture_output=True, text=True, timeout=timeout + 20)


def test_ping_parameters_and_modes_over_the_paced_link(flight):
    port, parameters, tmp_path = flight
    state = tmp_path / "ground"
    ping = command(port, state, "ping")
    assert ping.returncode == 0, ping.stdout + ping.stderr
    assert "completion" in ping.stdout.lower()

    # A parameter set by command: verified, persisted, and reported back.
    assert command(port, state, "set-parameter", "detection.k_sigma", "6.5").returncode == 0
    got = command(port, state, "get-parameter", "detection.k_sigma")
    assert got.returncode == 0 and "6.5" in got.stdout, got.stdout
    assert json.loads(parameters.read_text())["values"]["detection.k_sigma"] == 6.5

    # Out of range: refused at acceptance with its reason, nothing changed.
    bad = command(port, state, "--no-check", "set-parameter", "detection.k_sigma", "500")
    assert bad.returncode == 1 and "VALUE_OUT_OF_RANGE" in bad.stdout + bad.stderr

    # Modes: down any number of steps, up one at a time.
    assert command(port, state, "mode", "safe").returncode == 0
    skip = command(port, state, "--no-check", "mode", "observe")
    assert skip.returncode == 1 and "NOT_ALLOWED_IN_MODE" in skip.stdout + skip.stderr
    assert command(port, state, "mode", "standby").returncode == 0
    # A quick-look needs the sensor running: allowed in STANDBY.
    assert command(port, state, "function", "take_quicklook").returncode == 0
    # Housekeeping re-timed, disabled and enabled by ST[03]; an unknown structure is refused.
    assert command(port, state, "hk-interval", "flight", "0.2").returncode == 0
    assert command(port, state, "hk", "disable", "flight").returncode == 0
    assert command(port, state, "hk", "enable", "flight").returncode == 0
    unknown = command(port, state, "--no-check", "hk", "enable", "9")
    assert unknown.returncode == 1 and "UNKNOWN_STRUCTURE" in unknown.stdout + unknown.stderr


def handled(config, *requests):
    """An executive fed TC packets directly; the ST[01] reports it stored, decoded by the ground."""
    port = CapturePort()
    downlink = Downlink(config.link, port)
    executive = Executive(config, downlink, threading.Event())
    downlink.start()
    executive.modes.enter(Mode.OBSERVE, Cause.START)
    results = [executive.commands.handle(tc) for tc in requests]
    executive._send_pending_events()
    assert downlink.stop(10)
    return executive, results, bytes(port.data)


def reports(stream: bytes, config, tmp_path) -> list[tuple[int, int]]:
    """(service, subtype) of every packet the command APID sent, in order, as the ground archived them."""
    decode(config, stream, tmp_path)
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    return [row for row in db.execute("SELECT service, subtype FROM packets WHERE apid = ? ORDER BY id",
                                      (config.uplink.command_apid,))]


def test_every_command_ends_in_a_report_with_its_reason(tmp_path):
    config = small_config()
    apid = config.uplink.command_apid
    tcs = [
        services.ping().tc(apid, 1),
        services.set_parameters({1: 7.0}).tc(apid, 2),
        PusTc(apid, 17, 9, b"", 3),                                 # unknown subtype
        PusTc(apid + 1, 17, 1, b"", 4),                             # wrong APID
        services.enable_housekeeping([99]).tc(apid, 5),             # unknown structure
        services.change_mode(services.Mode.SAFE).tc(apid, 6),
        services.perform_function("take_quicklook").tc(apid, 7),    # not in SAFE
        # Accepted, then fails: the store holds nothing to acknowledge.
        services.perform_function("acknowledge_store", apid=110, first=0, last=3).tc(apid, 8),
    ]
    executive, results, stream = handled(config, *tcs)
    assert results == [True, True, False, False, False, True, False, False]
    assert executive.config.detection.k_sigma == 7.0 and executive.parameters.get("detection.k_sigma") == 7.0
    assert executive.modes.mode == Mode.SAFE
    c = executive.commands.counters
    assert (c.accepted, c.rejected, c.completed, c.failed) == (4, 4, 3, 1)
    kinds = reports(stream, config, tmp_path)
    # ping: acceptance, start, (17,2), completion; then set, mode: acceptance, start, completion each;
    # 4 acceptance failures; the acknowledgement: acceptance, start, completion failure.
    assert kinds[:4] == [(1, 1), (1, 3), (17, 2), (1, 7)]
    assert kinds.count((1, 2)) == 4 and kinds.count((1, 7)) == 3 and kinds.count((1, 8)) == 1
    stored = executive.store.totals[ProductClass.VERIFICATION].put
    assert stored == len(kinds)
    # The archive keeps what each report said, not only that a packet came.
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    rows = db.execute("SELECT kind, success, request_sequence_count, code, reason, detail FROM command_reports "
                      "ORDER BY id").fetchall()
    assert len(rows) == len(kinds)
    assert rows[:4] == [("ACCEPTANCE", 1, 1, None, None, None), ("START", 1, 1, None, None, None),
                        ("alive", 1, None, None, None, None), ("COMPLETION", 1, 1, None, None, None)]
    failures = {seq: (kind, reason) for kind, ok, seq, _, reason, _ in rows if not ok}
    assert failures == {3: ("ACCEPTANCE", "UNKNOWN_SUBTYPE"), 4: ("ACCEPTANCE", "WRONG_APID"),
                        5: ("ACCEPTANCE", "UNKNOWN_STRUCTURE"), 7: ("ACCEPTANCE", "NOT_ALLOWED_IN_MODE"),
                        8: ("COMPLETION", "STORE_ERROR")}


def test_a_failure_report_names_the_command_and_the_reason():
    config = small_config()
    apid = config.uplink.command_apid
    executive, _, stream = handled(config, PusTc(apid, 42, 1, b"", 77))
    seen = []
    decoder = GroundDecoder(config, NullArchive(),
                            handlers={apid: lambda tm: seen.append(VerificationReport.unpack(tm.subtype, tm.data))})
    decoder.feed(stream)
    decoder.finish()
    [report] = seen
    assert report.stage == Stage.ACCEPTANCE and not report.success
    assert report.reason == Reason.UNKNOWN_SERVICE and report.request_id.sequence_count == 77
    assert b"service 42 unknown" in report.data


def test_commanded_parameters_outlive_a_restart(tmp_path):
    base = small_config()
    config = dataclasses.replace(base, flight=dataclasses.replace(
        base.flight, parameters_path=str(tmp_path / "p.json")))
    apid = config.uplink.command_apid
    handled(config, services.set_parameters({11: 0, 1: 9.0}).tc(apid, 1))
    again, _, _ = handled(config)
    assert again.config.imaging.chips_per_frame == 0 and again.config.detection.k_sigma == 9.0


def test_a_clock_step_is_an_event_and_counted(tmp_path):
    """The system clock jumps an hour between two housekeeping runs: event 19, and housekeeping counts it;
    packet times follow the wall clock, the loop's schedule does not (tests/test_rategroups.py)."""
    wall = [1_800_000_000.0]
    config = small_config()
    executive = Executive(config, Downlink(config.link, CapturePort()), threading.Event(),
                          wallclock=lambda: wall[0])
    executive._housekeeping()
    wall[0] += 3600.0
    executive._housekeeping()
    jumps = [text for _, event_id, text in executive._pending_events if event_id == products.EVENT_CLOCK_JUMP]
    [text] = jumps
    step = float(text.split("stepped ")[1].split(" s")[0])
    assert 3590 < step <= 3600      # the hour, less the real time between the two runs
    assert executive.housekeeping()["clock_jumps"] == 1
