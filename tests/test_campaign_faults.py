"""The bench's faults that need more than the radio: a store whose filesystem fills, and a command session
with COP-1 over a link that loses frames.

References: the ground's archive and the flight store's file read with sqlite3; the store's filesystem
is a real size-limited tmpfs (mount(8), as root), filled until the kernel says ENOSPC; the commands go
through the ground's own FOP-1 (ground/fop.py) to the flight program's FARM-1.
"""
import json
import os
import shutil
import subprocess
import sys

import pytest

DISK = """
description = "short disk full"
duration_s = 10.0
drain_s = 2.0
[scene]
width = 96
height = 96
[link]
baud = 0
[[faults]]
kind = "fill_disk"
at_s = 4.0
for_s = 2.5
[bars]
reports_complete = false
disk_full_reported = true
"""

COP = """
description = "short COP-1 session through a cut"
duration_s = 11.0
drain_s = 3.0
cop1 = true
[scene]
width = 96
height = 96
[link]
baud = 0
ber = 1e-5
[[faults]]
kind = "cut_link"
at_s = 7.0
for_s = 1.5
""" + "".join(f'[[commands]]\nat_s = {1.0 + 0.5 * i}\ntc = ["ping"]\n' for i in range(15)) + """
[[commands]]
at_s = 9.5
tc = ["function", "dump_store"]
[bars]
reports_complete = false
products_lost_max = -1
commands_verified_once = true
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    (root / "disk.toml").write_text(DISK)
    (root / "cop.toml").write_text(COP)
    out = root / "out"
    done = subprocess.run([sys.executable, "-m", "hil", "run", str(root / "disk.toml"), str(root / "cop.toml"),
                           "--jobs", "2", "--out", str(out)], capture_output=True, text=True, timeout=300)
    return done, out


@pytest.mark.skipif(os.geteuid() != 0, reason="fill_disk mounts a size-limited tmpfs, which needs root")
def test_a_full_disk_is_counted_the_flight_flies_on_and_nothing_stored_is_lost(runs):
    done, out = runs
    data = json.loads((out / "disk" / "result.json").read_text())
    assert data["skipped"] == [] and data["passed"], (done.stdout, data["bars"])
    filled, freed = data["disk"]
    assert filled["filled_octets"] > 16 << 20 and filled["free_after"] < 64 << 10     # the filesystem was full
    assert freed["freed"] and freed["free_after"] > 16 << 20
    assert data["flight_runs"] == [0]                                                  # no crash on ENOSPC
    assert data["products"]["lost"] == 0 and data["products"]["on_ground"] > 0
    errors = max(data["series"]["store"]["store_errors"])
    assert errors > 0
    # The control: the other run of the fixture, with no fill, counted none (on a loaded machine the flight
    # program may start after the fill at 4 s, so this run's own housekeeping need not have one from before the fill).
    control = json.loads((out / "cop" / "result.json").read_text())
    assert control["series"]["store"]["store_errors"] and max(control["series"]["store"]["store_errors"]) == 0
    assert not os.path.ismount(out / "disk" / "store-fs")            # unmounted; the store copied out
    assert (out / "disk" / "store.sqlite").stat().st_size > 0


def test_commands_through_fop1_are_verified_exactly_once_across_a_cut(runs):
    done, out = runs
    data = json.loads((out / "cop" / "result.json").read_text())
    bar = next(b for b in data["bars"] if b["name"] == "every command verified exactly once")
    assert bar["passed"], (done.stdout, bar)
    cop = data["cop1"]
    # The flight program is up well before 7 s even on a loaded machine (it took 3 to 4 s at worst seen), so
    # the pings of 7.0 to 8.0 s go into the cut. The AD frames sent into the cut were lost, and FOP-1 sent them
    # again (T1 or the CLCW's retransmit flag); FARM-1 took each once: every command has exactly one
    # acceptance report.
    assert data["link"]["up"]["outage_octets"] > 0 and cop["retransmissions"] >= 1
    assert cop["ad_sent"] == len(data["commands"]) == 16 and cop["acknowledged"] == 16
    assert cop["alerts"] == 0 and cop["alert_reasons"] == []
    assert cop["clcws_seen"] > 10 and cop["queued"] == 0
    assert (out / "cop" / "kestrel.toml").exists()         # link.ocf on for this run only
    assert "ocf = true" in (out / "cop" / "kestrel.toml").read_text()


def test_the_verified_once_bar_catches_a_command_run_twice_or_not_reported(tmp_path):
    """The bar reads the ground's real archive (ground.archive.GroundArchive, as `listen` writes it): a command
    whose reports came twice as distinct packets (executed twice: what a FARM-1 that took a retransmitted frame
    again would cause) fails it, as does one with no acceptance report; a clean one passes."""
    from ground.archive import CommandReport, GroundArchive, PacketIdentity
    from hil.campaign import ScenarioResult, _verified_once

    archive = GroundArchive(tmp_path)
    tm_count = iter(range(100))

    def report(kind, request):
        n = next(tm_count)
        packet = archive.packet(1000.0 + n, PacketIdentity(1, 0, 50, n, bytes(7), n), 0, 1,
                                1 if kind == "ACCEPTANCE" else 7, 20)
        archive.command_report(packet, 1000.0 + n, None, 50, 1, 1 if kind == "ACCEPTANCE" else 7,
                               CommandReport(kind, True, 50, request))

    for kind in ("ACCEPTANCE", "COMPLETION"):
        report(kind, 0)
        report(kind, 1)
        report(kind, 1)              # count 1 executed twice
    report("COMPLETION", 2)          # count 2's acceptance never came
    archive.commit()
    archive.close()
    result = ScenarioResult("x", "", "")
    result.commands = [{"at_s": 1.0, "tc": ["ping"], "apid": 50, "sequence": q} for q in (0, 1, 2)]
    bar = _verified_once(tmp_path / "archive.sqlite", result)
    assert not bar.passed and bar.evidence.startswith("1 of 3")
    assert "count 1: 2 acceptance, 2 completion" in bar.evidence
    assert "count 2: 0 acceptance, 1 completion" in bar.evidence
    result.commands = result.commands[:1]
    assert _verified_once(tmp_path / "archive.sqlite", result).passed


@pytest.mark.skipif(shutil.which("unshare") is None, reason="unshare(1) is needed to run the bench as a non-root user")
def test_without_root_fill_disk_is_skipped_with_its_reason(tmp_path):
    """The bench in a user namespace of its own (uid 65534 there, so it may not mount): the scenario flies,
    the fault is listed as skipped with why, on the console and in the report, and its bar is not judged."""
    (tmp_path / "disk.toml").write_text(DISK.replace("duration_s = 10.0", "duration_s = 3.0").replace(
        "at_s = 4.0", "at_s = 1.0"))
    out = tmp_path / "out"
    done = subprocess.run(["unshare", "-U", sys.executable, "-m", "hil", "run", str(tmp_path / "disk.toml"),
                           "--out", str(out)], capture_output=True, text=True, timeout=180)
    if "unshare failed" in done.stderr:
        pytest.skip(f"user namespaces are not allowed here: {done.stderr.strip()}")
    data = json.loads((out / "disk" / "result.json").read_text())
    assert data["skipped"] == [{"fault": "fill_disk", "reason": "fill_disk needs root to mount a size-limited "
                                "tmpfs for the store; the bench is not root"}]
    assert data["disk"] == [] and "a full disk is reported and flying goes on" not in {b["name"] for b in data["bars"]}
    assert done.returncode == 0 and data["passed"], done.stdout + done.stderr
    assert "[SKIPPED] fill_disk: fill_disk needs root" in done.stdout
    assert "**Skipped:** fill_disk" in (out / "disk" / "report.md").read_text()
