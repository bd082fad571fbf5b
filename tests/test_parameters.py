"""The ST[20] parameter store: typed, range-checked get and set; values that survive a
reopen, a kill -9 at any instant and a corrupt file; and the time correlation kept in it.

References: each parameter's declared rule (and the configuration settings it
mirrors); for durability, what a child process had set before it was killed.
"""
import json
import os
import random
import signal
import time

import pytest

from flight.config import FlightProgramConfig
from flight.imaging import ImagingConfig
from flight.parameters import (TABLE, Parameter, ParameterStorageError, ParameterStore, ParameterTable,
                               ParameterValueError, UnknownParameterError, _checksum, apply_parameters,
                               from_setting)
from flight.timecorrelation import TimeCorrelation
from kestrel.settings import ConfigurationError


@pytest.fixture
def path(tmp_path):
    return tmp_path / "parameters.json"


def test_defaults_by_id_and_by_name(path):
    store = ParameterStore(path)
    assert store.get(1) == store.get("detection.k_sigma") == 5.0
    assert store.get("imaging.chips_per_frame") == 1 and type(store.get(11)) is int
    assert store.get("time.offset_s") == 0.0
    assert {p.name for p in TABLE} >= {"detection.k_sigma", "imaging.quicklook_period_s", "imaging.chips_per_frame",
                                       "flight.housekeeping_period_s", "time.offset_s", "time.drift_ppm"}
    assert store.load_errors == [f"no parameter file at {path}: defaults in use"]


def test_set_then_get(path):
    store = ParameterStore(path)
    assert store.set("detection.k_sigma", 6.5) == 6.5
    assert store.set(11, 4) == 4
    assert store.set("imaging.quicklook_period_s", 30) == 30.0 and type(store.get(10)) is float   # an int is a fine float
    assert store.get(1) == 6.5 and store.get("imaging.chips_per_frame") == 4
    assert store.commanded() == {"detection.k_sigma": 6.5, "imaging.chips_per_frame": 4,
                                 "imaging.quicklook_period_s": 30.0}
    assert store.writes == 3 and store.write_errors == 0


@pytest.mark.parametrize("key, value, message", [
    ("detection.k_sigma", 0.0, r"detection\.k_sigma \(id 1\) must be float > 0, got 0\.0"),
    ("detection.k_sigma", float("nan"), r"must be float > 0, got nan"),
    ("detection.k_sigma", "5", r"must be float > 0, got '5'"),
    ("detection.k_sigma", True, r"must be float > 0, got True"),
    (11, 65, r"imaging\.chips_per_frame \(id 11\) must be int 0\.\.64, got 65"),
    (11, 2.0, r"must be int 0\.\.64, got 2\.0"),
    ("flight.housekeeping_period_s", 3601, r"must be float > 0, <= 3600, got 3601\.0"),
    ("time.drift_ppm", -1e4, r"time\.drift_ppm \(id 31\) must be float -1000\.0\.\.1000\.0, got -10000\.0"),
    ("time.offset_s", float("inf"), r"got inf"),
])
def test_a_bad_value_is_refused_naming_the_rule_and_the_value(path, key, value, message):
    store = ParameterStore(path)
    with pytest.raises(ParameterValueError, match=message) as caught:
        store.set(key, value)
    assert caught.value.parameter is TABLE[key] and caught.value.actual is not None
    assert store.get(key) == TABLE[key].default and not path.exists() and store.writes == 0


def test_an_unknown_parameter_is_refused(path):
    store = ParameterStore(path)
    for key in (99, "detection.k_sgima", True):
        with pytest.raises(UnknownParameterError, match="no parameter .* known ids"):
            store.set(key, 1)
    with pytest.raises(UnknownParameterError):
        store.get(0)


def test_set_many_is_all_or_nothing(path):
    store = ParameterStore(path)
    store.set(1, 7.0)
    before = path.read_bytes()
    with pytest.raises(ParameterValueError, match="chips_per_frame"):
        store.set_many({1: 8.0, 10: 20.0, 11: -1})
    assert store.get(1) == 7.0 and store.get(10) == 10.0 and path.read_bytes() == before


def test_values_survive_a_reopen_and_reset_forgets_them(path):
    store = ParameterStore(path)
    store.set_many({"detection.k_sigma": 4.25, "imaging.chips_per_frame": 0, "time.offset_s": -1.5e9})
    reopened = ParameterStore(path)
    assert reopened.load_errors == []
    assert reopened.values() == store.values() and reopened.get("time.offset_s") == -1.5e9
    assert reopened.reset("detection.k_sigma") == 5.0
    assert ParameterStore(path).commanded() == {"imaging.chips_per_frame": 0, "time.offset_s": -1.5e9}


def test_the_configuration_gives_the_defaults_and_its_rules_bind_the_uplink(path):
    config = apply_parameters(FlightProgramConfig(), {"detection.k_sigma": 3.0, "imaging.chips_per_frame": 2})
    assert config.detection.k_sigma == 3.0 and config.imaging.chips_per_frame == 2
    store = ParameterStore(path, config=config)
    assert store.get("detection.k_sigma") == 3.0 and store.get(11) == 2
    # A change is checked against the configuration's cross-field rules too.
    store.set(1, 9.0)
    assert apply_parameters(config, store.values()).detection.k_sigma == 9.0
    # Only what was commanded is saved: a new configuration's default applies to the rest.
    assert ParameterStore(path, config=FlightProgramConfig()).get(11) == 1
    with pytest.raises(ConfigurationError, match="the configuration's imaging.chips_per_frame"):
        narrow = ParameterTable([Parameter(11, "imaging.chips_per_frame", int, 1, low=0, high=1)])
        ParameterStore(path.with_name("other.json"), table=narrow, config=config)


def test_the_table_is_declared_once_and_easy_to_extend():
    k_sigma = TABLE["detection.k_sigma"]
    assert (k_sigma.type, k_sigma.above, k_sigma.doc) == (float, 0, "threshold in units of the local noise sigma (CFAR level)")
    chips = from_setting(100, "imaging.chip_size", ImagingConfig)
    assert (chips.type, chips.low, chips.high, chips.default) == (int, 2, 256, 16)
    table = TABLE.extended(chips)
    assert table[100] is chips and len(table) == len(TABLE) + 1
    with pytest.raises(ConfigurationError, match="unique"):
        TABLE.extended(Parameter(1, "other", int, 0))
    with pytest.raises(ParameterValueError, match="got 5"):
        ParameterTable([Parameter(200, "bad.default", int, 5, low=0, high=1)])


def test_the_wire_declaration_agrees_with_the_table():
    """kestrel/services.py declares ST[20] on the wire; each parameter it carries must be
    ours, by the same id and name, and any value it lets through must pass our rule."""
    services = pytest.importorskip("kestrel.services")
    for wire in services.PARAMETERS:
        ours = TABLE[wire.id]
        assert ours.name == wire.name, (wire.id, wire.name, ours.name)
        assert ours.type is (float if wire.type.startswith("f") else int), wire.name
        ours.check(ours.type(wire.low))
        ours.check(ours.type(wire.high))


def test_changes_are_announced_after_they_are_durable(path):
    seen = []
    store = ParameterStore(path, on_change=lambda name, value: seen.append((name, value, json.loads(path.read_text()))))
    store.set(11, 7)
    assert seen[0][:2] == ("imaging.chips_per_frame", 7) and seen[0][2]["values"] == {"imaging.chips_per_frame": 7}


def test_a_failed_write_keeps_the_old_values_on_disk_and_in_memory(path, monkeypatch):
    store = ParameterStore(path)
    store.set(1, 6.0)

    def full_disk(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(ParameterStorageError, match="No space left on device.*previous values stay"):
        store.set(1, 7.0)
    monkeypatch.undo()
    assert store.get(1) == 6.0 and store.write_errors == 1
    reopened = ParameterStore(path)
    assert reopened.get(1) == 6.0 and reopened.load_errors == []
    assert not path.with_name(f".{path.name}.tmp").exists()   # what the failed write left, cleared at open


@pytest.mark.parametrize("content, problem", [
    (b"", "corrupt"),
    (b"\x00\x01garbage\xff", "unreadable"),
    (b'{"format": "kestrel-parameters", "version": 1, "crc32": 0, "val', "corrupt"),
    (b"[1, 2, 3]", "corrupt"),
    (b'{"format": "other", "version": 1, "values": {}}', "format 'other'"),
    (b'{"format": "kestrel-parameters", "version": 2, "values": {}}', "version 2"),
    (b'{"format": "kestrel-parameters", "version": 1, "crc32": 1, "values": {"detection.k_sigma": 6.0}}',
     "checksum does not match"),
])
def test_a_corrupt_file_gives_the_defaults_a_report_and_is_kept_aside(path, content, problem):
    path.write_bytes(content)
    store = ParameterStore(path)
    assert store.values() == {p.name: p.default for p in TABLE}
    assert len(store.load_errors) == 1 and problem in store.load_errors[0] and str(path) in store.load_errors[0]
    assert path.with_name("parameters.json.corrupt").read_bytes() == content
    store.set(1, 6.0)                                     # and the store works on
    assert ParameterStore(path).get(1) == 6.0


def test_a_flipped_digit_is_caught_by_the_checksum(path):
    ParameterStore(path).set("detection.k_sigma", 6.0)
    path.write_text(path.read_text().replace("6.0", "9.0"))
    store = ParameterStore(path)
    assert store.get(1) == 5.0 and "checksum" in store.load_errors[0]


def test_one_bad_entry_costs_that_entry_only(path):
    ParameterStore(path).set_many({1: 6.0, 11: 7})
    document = json.loads(path.read_text())
    document["values"].update({"retired.parameter": 1, "imaging.chips_per_frame": 99})
    document["crc32"] = _checksum(document["values"])
    path.write_text(json.dumps(document))
    store = ParameterStore(path)
    assert store.get(1) == 6.0 and store.get(11) == 1
    assert len(store.load_errors) == 2
    assert any("no parameter 'retired.parameter'" in e for e in store.load_errors)
    assert any("must be int 0..64, got 99; the default stays" in e for e in store.load_errors)


def test_kill_9_at_random_instants_leaves_the_old_or_the_new_values(path):
    """100 times: a child sets three parameters together in a loop, each round from the
    value it finds; it is killed at a random instant. The file always parses, holds one
    round's three values together, and never goes backwards."""
    rng = random.Random(7)
    temporary = path.with_name(f".{path.name}.tmp")
    last, mid_write = 0, 0
    for _ in range(100):
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:     # the child: no pytest from here on, and never return into it
            try:
                os.close(ready_r)
                store = ParameterStore(path)
                n = int(store.get("detection.k_sigma") * 1000)
                os.write(ready_w, b"!")
                while True:
                    n += 1
                    store.set_many({"detection.k_sigma": n / 1000, "imaging.quicklook_period_s": float(n % 86400),
                                    "imaging.chips_per_frame": n % 65})
            finally:
                os._exit(1)
        os.close(ready_w)
        assert os.read(ready_r, 1) == b"!"
        os.close(ready_r)
        time.sleep(rng.uniform(0, 0.04))      # a set takes 1-200 ms here: two fsyncs
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        mid_write += temporary.exists()
        store = ParameterStore(path)
        if not path.exists():    # killed before its first write was whole: the defaults, as at first boot
            assert last == 0 and store.values() == {p.name: p.default for p in TABLE}
            continue
        assert store.load_errors == []
        n = round(store.get("detection.k_sigma") * 1000)
        assert store.get("imaging.quicklook_period_s") == float(n % 86400) and store.get(11) == n % 65
        assert n >= last
        last = n
    # Some kills came between writes and some inside one (its temporary file left behind).
    assert last > 5000 and 0 < mid_write < 100
    print(f"{last - 5000} sets in 100 kills; {mid_write} kills left a temporary file")


def test_time_correlation_is_set_validated_persisted_and_reported(path):
    wall = [1.7e9]
    timecorr = TimeCorrelation(ParameterStore(path), wallclock=lambda: wall[0], clock=lambda: 0.0)
    assert timecorr.now() == 1.7e9
    timecorr.set(offset_s=2.5, drift_ppm=10.0, epoch_s=1.7e9 - 1000)
    assert timecorr.now() == pytest.approx(1.7e9 + 2.5 + 10e-6 * 1000)
    with pytest.raises(ParameterValueError, match=r"time\.drift_ppm .* got 5000\.0"):
        timecorr.set(offset_s=0.0, drift_ppm=5000.0)
    assert timecorr.correlation() == (2.5, 10.0, 1.7e9 - 1000)     # all three refused together
    # A board without a real-time clock boots in 1970; the ground's offset brings it to now.
    wall[0] = 100.0
    timecorr.set(offset_s=1.7e9)
    assert timecorr.correlation() == (1.7e9, 0.0, 100.0) and timecorr.now() == 1.7e9 + 100.0
    reopened = TimeCorrelation(ParameterStore(path), wallclock=lambda: 100.0)
    report = reopened.report()
    assert report["time_offset_s"] == 1.7e9 and report["time_epoch_s"] == 100.0
    assert report["time_correction_s"] == 1.7e9 and report["clock_jumps"] == 0


def test_a_clock_step_is_detected_against_the_monotonic_clock(path):
    mono, wall = [0.0], [1.7e9]
    jumps = []
    timecorr = TimeCorrelation(ParameterStore(path), wallclock=lambda: wall[0], clock=lambda: mono[0],
                               on_jump=jumps.append)

    def advance(seconds, step=0.0, slew_ppm=0.0):
        mono[0] += seconds
        wall[0] += seconds * (1 + slew_ppm * 1e-6) + step
        return timecorr.check()

    assert advance(10) is None
    assert advance(10, step=0.4) is None                 # under the 0.5 s tolerance
    assert advance(3600, slew_ppm=500) is None           # NTP slewing is not a step
    assert advance(10, step=-30.0) == pytest.approx(-30.0)
    assert advance(1, step=86400.0) == pytest.approx(86400.0)
    assert jumps == [pytest.approx(-30.0), pytest.approx(86400.0)] and timecorr.clock_jumps == 2
    assert timecorr.jumps_since_correlation == 2
    timecorr.set(offset_s=-86400.0)
    assert timecorr.jumps_since_correlation == 0 and timecorr.report()["last_jump_s"] == pytest.approx(86400.0)
