"""The ground archive: one record (SQLite), JSON lines that never run ahead of it,
idempotent decoding, and archive faults that are errors, not bad telemetry.

Faults are real: a full disk is a tiny tmpfs, a read-only disk a read-only
remount, a lock another SQLite connection's exclusive transaction.
"""
import dataclasses
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ground.archive import SCHEMA_VERSION, ArchiveError, GroundArchive
from tests.test_flight_to_ground import decode, fly, small_config


@pytest.fixture(scope="module")
def long_capture(tmp_path_factory):
    """2000 frames of reports and housekeeping without imagery: many distinct rows, many transactions."""
    base = small_config()
    config = dataclasses.replace(base, sensor=dataclasses.replace(base.sensor, max_frames=2000, frame_rate_hz=1000.0),
                                 imaging=dataclasses.replace(base.imaging, chips_per_frame=0, quicklook_period_s=0),
                                 tracking=dataclasses.replace(base.tracking, alert_chip_frames=0))
    stream, _ = fly(config)
    path = tmp_path_factory.mktemp("long") / "long.bin"
    path.write_bytes(stream)
    return path


@pytest.fixture(scope="module")
def capture(tmp_path_factory):
    """A real downlink of 40 frames (detections, housekeeping, events, imagery), as a file."""
    base = small_config()
    config = dataclasses.replace(base, sensor=dataclasses.replace(base.sensor, max_frames=40))
    stream, executive = fly(config)
    path = tmp_path_factory.mktemp("capture") / "pass.bin"
    path.write_bytes(stream)
    return config, path, executive


def ground(*args, timeout=120, **kwargs):
    return subprocess.run([sys.executable, "-m", "ground", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, **kwargs)


def archive_state(out: Path) -> dict:
    db = sqlite3.connect(out / "archive.sqlite")
    try:
        return {table: db.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
                for table in ("packets", "housekeeping", "events", "detection_reports", "detections", "images")}
    finally:
        db.close()


def archive_content(out: Path) -> dict:
    """Every table less row ids, links between rows and reception times: what two decodes of one capture share."""
    db = sqlite3.connect(out / "archive.sqlite")
    try:
        content = {}
        for table in ("packets", "housekeeping", "events", "detection_reports", "detections", "images"):
            columns = [r[1] for r in db.execute(f"PRAGMA table_info({table})")
                       if r[1] not in ("id", "received_at", "packet_id", "report_id", "path")]
            content[table] = sorted(db.execute(f"SELECT {', '.join(columns)} FROM {table}").fetchall())
        return content
    finally:
        db.close()


def jsonl_detections(out: Path) -> list[dict]:
    """The whole lines of detections.jsonl (a kill -9 in the middle of a write may leave half of the last)."""
    text = (out / "detections.jsonl").read_text()
    whole, _, partial = text.rpartition("\n")
    assert "\n" not in partial
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def db_detections(out: Path) -> set[tuple]:
    db = sqlite3.connect(out / "archive.sqlite")
    try:
        # A decode killed before its first commit leaves a database without tables: it holds nothing.
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'detections'").fetchone():
            return set()
        # Rounded as the archive writes the lines (Python's round, not SQLite's).
        return {(f, round(x, 4), round(y, 4)) for f, x, y in db.execute(
            "SELECT r.frame_index, d.x, d.y FROM detections d JOIN detection_reports r ON d.report_id = r.id")}
    finally:
        db.close()


def test_one_decode_archives_every_product_and_the_jsonl_is_the_database(capture, tmp_path):
    config, path, executive = capture
    result = ground("decode", path, "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    assert "archive: new" in result.stdout
    state = archive_state(tmp_path)
    assert len(state["detection_reports"]) == 40
    assert len(state["detections"]) == executive.counters.detections_total
    lines = jsonl_detections(tmp_path)
    assert {(d["frame_index"], d["x"], d["y"]) for d in lines} == db_detections(tmp_path)
    assert len(lines) == len(state["detections"])
    assert sqlite3.connect(tmp_path / "archive.sqlite").execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_a_second_decode_into_the_same_directory_changes_nothing(capture, tmp_path):
    config, path, _ = capture
    assert ground("decode", path, "--out", tmp_path).returncode == 0
    first, first_lines = archive_state(tmp_path), jsonl_detections(tmp_path)
    again = ground("decode", path, "--out", tmp_path)
    assert again.returncode == 0, again.stderr
    assert "already holds" in again.stdout and "40 detection reports" in again.stdout
    assert archive_state(tmp_path) == first
    assert jsonl_detections(tmp_path) == first_lines
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["packets"]["packets_duplicate"] == len(first["packets"])
    assert summary["packets"]["detection_reports"] == 0


def test_a_capture_holding_a_chunk_twice_gives_the_clean_archive(capture, tmp_path):
    config, path, _ = capture
    stream = path.read_bytes()
    cut = len(stream) // 3
    repeated = stream[:cut + 5000] + stream[cut:]
    decode(config, stream, tmp_path / "clean")
    summary = decode(config, repeated, tmp_path / "repeated")
    assert summary.packets["packets_duplicate"] > 0
    assert archive_content(tmp_path / "repeated") == archive_content(tmp_path / "clean")


def test_after_kill_9_the_jsonl_never_holds_what_the_database_lacks(long_capture, tmp_path):
    big = long_capture
    outs = []
    for attempt, delay in enumerate((0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6, 1.8)):
        out = tmp_path / f"out{attempt}"
        process = subprocess.Popen([sys.executable, "-m", "ground", "decode", str(big), "--out", str(out)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if (out / "archive.sqlite").exists():
            outs.append(out)
            lines = {(d["frame_index"], d["x"], d["y"]) for d in jsonl_detections(out)} \
                if (out / "detections.jsonl").exists() else set()
            assert lines <= db_detections(out)
    assert outs
    # Opening the archive again rebuilds the lines from the record.
    for out in outs:
        GroundArchive(out).close()
        assert {(d["frame_index"], d["x"], d["y"]) for d in jsonl_detections(out)} == db_detections(out)


def test_ctrl_c_ends_a_decode_with_its_summary(capture, tmp_path):
    config, path, _ = capture
    big = tmp_path / "big.bin"
    big.write_bytes(path.read_bytes() * 400)
    process = subprocess.Popen([sys.executable, "-m", "ground", "decode", str(big), "--out", str(tmp_path / "o")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "archive: new" in process.stdout.readline()  # decoding has begun
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["interrupted"] and 0 < summary["sync"]["bytes_read"] < big.stat().st_size


# --- archive faults: one line, exit 3, nothing reported as bad telemetry ----------------------------

def assert_storage_failure(result, words: str):
    assert result.returncode == 3, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert "malformed" not in result.stderr and "undecodable" not in result.stderr


def test_out_that_is_a_file_and_a_garbage_archive(capture, tmp_path):
    _, path, _ = capture
    (tmp_path / "file").write_text("x")
    assert_storage_failure(ground("decode", path, "--out", tmp_path / "file"), "is not a directory")
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "archive.sqlite").write_bytes(os.urandom(8192))
    assert_storage_failure(ground("decode", path, "--out", tmp_path / "garbage"), "cannot be used")


def test_a_schema_2_archive_gains_the_later_tables_and_columns_and_keeps_what_it_held(capture, tmp_path):
    """Schema 2 is schema 5 less the alerts and command_reports tables (3), the images' track columns
    (4) and the uplink housekeeping (5): opened, it is upgraded in place, nothing lost."""
    config, path, _ = capture
    assert ground("decode", path, "--out", tmp_path).returncode == 0
    before = archive_state(tmp_path)
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    db.executescript("DROP TABLE alerts; DROP TABLE command_reports; DROP TABLE uplink_housekeeping; "
                     "ALTER TABLE images DROP COLUMN track_id; "
                     "ALTER TABLE images DROP COLUMN track_frame; PRAGMA user_version=2;")
    db.close()
    again = ground("decode", path, "--out", tmp_path)
    assert again.returncode == 0, again.stderr
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {"track_id", "track_frame"} <= {row[1] for row in db.execute("PRAGMA table_info(images)")}
    assert db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM command_reports").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM uplink_housekeeping").fetchone()[0] == 0
    db.close()
    after = archive_state(tmp_path)
    # The dropped track columns come back empty; every other value is what it was.
    assert [row[:-2] for row in after.pop("images")] == [row[:-2] for row in before.pop("images")]
    assert after == before


def test_foreign_and_older_schemas_are_refused(capture, tmp_path):
    _, path, _ = capture
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    sqlite3.connect(foreign / "archive.sqlite").executescript("CREATE TABLE orders (id INTEGER);")
    assert_storage_failure(ground("decode", path, "--out", foreign), "is not a Kestrel ground archive")
    older = tmp_path / "older"
    older.mkdir()
    sqlite3.connect(older / "archive.sqlite").executescript(
        "CREATE TABLE packets (id INTEGER PRIMARY KEY, apid INTEGER); CREATE TABLE housekeeping (id INTEGER);")
    assert_storage_failure(ground("decode", path, "--out", older), "an earlier Kestrel, schema 1")
    newer = tmp_path / "newer"
    GroundArchive(newer).close()
    sqlite3.connect(newer / "archive.sqlite").execute("PRAGMA user_version=9")
    assert_storage_failure(ground("decode", path, "--out", newer), "has archive schema 9")
    # Refusing touched nothing: the foreign table is as it was.
    assert sqlite3.connect(foreign / "archive.sqlite").execute(
        "SELECT name FROM sqlite_master").fetchall() == [("orders",)]


def test_a_locked_archive_is_an_error_after_the_configured_wait(capture, tmp_path):
    _, path, _ = capture
    GroundArchive(tmp_path / "o").close()
    holder = sqlite3.connect(tmp_path / "o" / "archive.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    config = tmp_path / "k.toml"
    config.write_text("[ground]\narchive_busy_timeout_s = 0.3\n")
    try:
        result = ground("decode", path, "--out", tmp_path / "o", "--config", config)
    finally:
        holder.execute("ROLLBACK")
    assert_storage_failure(result, "locked")


def test_an_images_path_that_is_a_file(capture, tmp_path):
    _, path, _ = capture
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "images").write_text("not a directory")
    result = ground("decode", path, "--out", tmp_path / "o")
    assert_storage_failure(result, "cannot write image")
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["error"].startswith("archive: cannot write image")


@pytest.fixture
def small_disk(tmp_path):
    """A 400 KiB tmpfs: a real disk that fills. Needs root (CI and this bench run as root)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_stops_the_decode_and_keeps_what_was_committed(long_capture, small_disk):
    # Many distinct reports: the database itself grows until the disk is full.
    big = long_capture
    out = small_disk / "o"
    result = ground("decode", big, "--out", out)
    assert_storage_failure(result, "full")
    assert sqlite3.connect(out / "archive.sqlite").execute("PRAGMA integrity_check").fetchone() == ("ok",)
    committed = db_detections(out)
    assert committed
    lines = {(d["frame_index"], d["x"], d["y"]) for d in jsonl_detections(out)}
    assert lines <= committed


def test_a_read_only_disk(capture, small_disk):
    _, path, _ = capture
    out = small_disk / "o"
    GroundArchive(out).close()
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    assert_storage_failure(ground("decode", path, "--out", out), "archive")


def test_the_archive_raises_its_own_error_class(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(ArchiveError, match="is not a directory"):
        GroundArchive(tmp_path / "f")
