"""Scenario files: the shipped ones load, bad ones are refused naming the key; one short scenario flown end to end.

References: tomllib for the format; for the run, the flight store's file and the ground's archive,
read with sqlite3, and the JUnit XML read back with ElementTree.
"""
import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from hil.scenario import ScenarioError, load_scenario, parse_scenario, shipped


def test_the_shipped_scenarios_load_and_list_one_per_line():
    names = list(shipped())
    assert {"nominal", "bad-link", "outage", "reboot"} <= set(names)
    for name, path in shipped().items():
        scenario = load_scenario(path)
        assert scenario.name == name and scenario.description
    listed = subprocess.run([sys.executable, "-m", "hil", "run", "--list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout.split("\n")[:-1] == names


def test_a_scenario_parses_into_its_dataclasses():
    s = parse_scenario("""
duration_s = 5
[scene]
width = 64
height = 64
[link]
ber = 1e-4
outages = [[1.0, 2.0]]
[[commands]]
at_s = 1
tc = ["mode", "standby"]
[[faults]]
kind = "cut_link"
at_s = 3
for_s = 0.5
[bars]
pd_min = 0.8
""", "x.toml")
    assert s.name == "x" and s.duration_s == 5.0 and s.scene.width == 64 and s.link.ber == 1e-4
    assert s.commands[0].tc == ("mode", "standby") and s.bars.pd_min == 0.8 and s.bars.products_lost_max == 0
    assert s.profile().outages == ((1.0, 2.0), (3.0, 3.5))


@pytest.mark.parametrize("text, message", [
    ("durration_s = 5", "unknown key 'durration_s'"),
    ("[link]\nberr = 1e-4", "unknown key 'link.berr'"),
    ("[link]\nber = 'high'", "link.ber must be a number"),
    ("[link]\nber = 2.0", "link.ber must be a probability"),
    ("[link]\nbaud = 9600.5", "link.baud must be an integer"),
    ("[scene]\nkind = 'foggy'", "kind must be one of"),
    ("[bars]\nreports_complete = 1", "bars.reports_complete must be true or false"),
    ("[[commands]]\nat_s = 1\ntc = ['pnig']", "commands[0].tc"),
    ("[[commands]]\nat_s = 1\ntc = ['mode', 'FLYING']", "commands[0].tc"),
    ("[[commands]]\nat_s = 99\ntc = ['ping']", "after duration_s"),
    ("[[faults]]\nkind = 'fill_disk'\nat_s = 1", "kind must be one of kill_flight, cut_link"),
    ("[[faults]]\nkind = 'kill_flight'\nat_s = -1", "at_s must be >= 0"),
    ("commands = 3", "commands must be an array"),
    ("duration_s = 0", "duration_s must be in"),
    ("name = ", "not valid TOML"),
])
def test_bad_scenarios_are_refused_naming_the_key(text, message):
    with pytest.raises(ScenarioError, match="bad.toml") as caught:
        parse_scenario(text, "bad.toml")
    assert message in str(caught.value)


def test_run_refuses_an_unknown_scenario_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hil", "run", "no-such-scenario", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "no-such-scenario" in result.stderr and "Traceback" not in result.stderr


SHORT = """
description = "short: a cut, a ping after it, bit errors RS corrects"
duration_s = 6.0
drain_s = 2.0
[scene]
width = 96
height = 96
[link]
baud = 0
ber = 1e-4
[[faults]]
kind = "cut_link"
at_s = 2.0
for_s = 1.5
[[commands]]
at_s = 4.0
tc = ["function", "dump_store"]
[bars]
latency_worst_max_s = 0.001
"""


def test_a_short_scenario_runs_reports_and_fails_only_the_bar_it_cannot_meet(tmp_path):
    """The latency bar cannot be met (1 ms): exit 1, that bar alone FAIL in the report and the JUnit XML;
    the cut really lost octets and the dump brought every product to the ground."""
    path = tmp_path / "short.toml"
    path.write_text(SHORT)
    out = tmp_path / "out"
    result = subprocess.run([sys.executable, "-m", "hil", "run", str(path), "--out", str(out)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads((out / "short" / "result.json").read_text())
    bars = {b["name"]: b["passed"] for b in data["bars"]}
    assert bars.pop("worst latency <= 0.001 s") is False
    assert all(bars.values()), data["bars"]
    link = data["link"]
    assert link["down"]["outage_octets"] > 1000 and 1.4 <= link["outage_seconds"] <= 1.6
    assert link["down"]["bits_flipped"] > 0
    assert data["products"]["lost"] == 0 and data["products"]["committed"] > 0
    assert data["ground"]["sync"]["symbols_corrected"] > 0
    suites = ET.parse(out / "junit.xml").getroot()
    failures = [c.get("name") for c in suites.iter("testcase") if c.find("failure") is not None]
    assert failures == ["worst latency <= 0.001 s"]
    assert "| worst latency <= 0.001 s | **FAIL** |" in (out / "short" / "report.md").read_text()
    assert (out / "short" / "report.html").exists() and (out / "short" / "spy.log").stat().st_size > 0
