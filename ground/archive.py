"""Where decoded products go: one SQLite archive (WAL) that is the record, and files derived from it.

Order of truth: a product is first a row in a committed transaction; the
JSON lines of detections and of alerts are appended only after that commit, and rebuilt
from the database whenever an archive is opened, so after a kill they can
lag the database but never hold what it lacks. Packets are identified by
spacecraft, virtual channel, APID, sequence count and time stamp: one seen
before (a second decode into the same directory, a capture holding a chunk
twice) is recognised and not archived again.

A failure of the archive itself (disk full, read-only, locked, a foreign or
older schema) is an ArchiveError: the ground stops and says so. It is never
counted as bad telemetry.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import sqlite3
from pathlib import Path
from typing import NamedTuple

import numpy as np

from kestrel import services
from kestrel.products import (DETECTION_DTYPE, HOUSEKEEPING_FIELDS, UPLINK_HOUSEKEEPING_FIELDS, AlertUpdate, Evidence,
                              TrackEnd, TrackKind)

from .png import display_stretch, write_png

log = logging.getLogger(__name__)

SCHEMA_VERSION = 5   # 3 added alerts; 4 the images' track columns; 5 the uplink housekeeping
APPLICATION = "kestrel-ground archive"
DATABASE = "archive.sqlite"
DETECTIONS_JSONL = "detections.jsonl"
ALERTS_JSONL = "alerts.jsonl"
IMAGES = "images"

_DETECTION_COLUMNS = tuple(DETECTION_DTYPE.names)

# Schema 3 added this table; a schema-2 archive gains it when opened (MIGRATIONS).
ALERTS_TABLE = """
CREATE TABLE alerts (
    id INTEGER PRIMARY KEY,
    packet_id INTEGER NOT NULL UNIQUE REFERENCES packets(id),
    received_at REAL NOT NULL,
    frame_index INTEGER NOT NULL,
    frame_time REAL,               -- NULL: the flight's clock was out of range
    track_id INTEGER NOT NULL,
    update_number INTEGER NOT NULL,
    kind TEXT NOT NULL,            -- kestrel.products.TrackKind name
    evidence TEXT NOT NULL,        -- kestrel.products.Evidence names, comma-separated
    ended TEXT,                    -- NULL while open; else kestrel.products.TrackEnd name
    first_index INTEGER NOT NULL,
    first_time REAL,
    hits INTEGER NOT NULL,
    x REAL NOT NULL, y REAL NOT NULL, vx REAL NOT NULL, vy REAL NOT NULL,
    covariance TEXT NOT NULL,      -- JSON: upper triangle of the (x, y, vx, vy) covariance, row by row
    flux REAL NOT NULL, trend REAL NOT NULL, trend_sigma REAL NOT NULL,
    speed REAL NOT NULL, speed_sigma REAL NOT NULL,
    accel_along REAL NOT NULL, accel_across REAL NOT NULL, accel_sigma REAL NOT NULL,
    manoeuvre_probability REAL NOT NULL,
    track_score REAL NOT NULL,
    classifier_score REAL NOT NULL,
    lat REAL, lon REAL              -- NULL: no geolocation
);
"""
# Also new in schema 3: what the command process reported, so a pass's record shows what was commanded.
COMMAND_REPORTS_TABLE = """
CREATE TABLE command_reports (
    id INTEGER PRIMARY KEY,
    packet_id INTEGER NOT NULL UNIQUE REFERENCES packets(id),
    received_at REAL NOT NULL,
    packet_time REAL,              -- NULL: the flight's clock was out of range
    apid INTEGER NOT NULL,
    service INTEGER NOT NULL,
    subtype INTEGER NOT NULL,
    kind TEXT NOT NULL,            -- a Stage name (ST[01]), or 'alive' (17,2), or 'parameters' (20,2)
    success INTEGER NOT NULL,
    request_apid INTEGER,          -- the telecommand reported on (ST[01] only)
    request_sequence_count INTEGER,
    step INTEGER,                  -- progress reports only
    code INTEGER,                  -- failure reports: a kestrel.services.Reason value
    reason TEXT,                   -- its name, or NULL for a code this ground does not know
    detail TEXT                    -- failure data as sent; for (20,2) the values as JSON {id: value}
);
"""
# What turns an archive of schema N into N + 1, in one transaction with its user_version.
# A track chip names its alert's track and its place in the track's chip sequence (NULL for other images).
IMAGE_TRACK_COLUMNS = "ALTER TABLE images ADD COLUMN track_id INTEGER; ALTER TABLE images ADD COLUMN track_frame INTEGER;"
# Schema 5: the uplink's housekeeping (structure 3), one column per field of its declaration, so every
# FrameRejected reason the flight counts (kestrel.link.errors.Rejection) is a column. Quoted: the reasons
# are names the flight chose, not checked against SQL's keywords.
UPLINK_HOUSEKEEPING_TABLE = f"""
CREATE TABLE uplink_housekeeping (
    id INTEGER PRIMARY KEY,
    packet_id INTEGER NOT NULL UNIQUE REFERENCES packets(id),
    received_at REAL NOT NULL,
    packet_time REAL,              -- NULL: the packet's time was not the clock's (time_status)
    sequence_count INTEGER NOT NULL,
    {", ".join(f'"{name}" INTEGER NOT NULL' for name in UPLINK_HOUSEKEEPING_FIELDS)}
);
"""
_UPLINK_HOUSEKEEPING_NAMES = (("packet_id", "received_at", "packet_time", "sequence_count")
                              + UPLINK_HOUSEKEEPING_FIELDS)
_UPLINK_HOUSEKEEPING_INSERT = ("INSERT INTO uplink_housekeeping ("
                               + ", ".join(f'"{n}"' for n in _UPLINK_HOUSEKEEPING_NAMES) + ") VALUES ("
                               + ", ".join("?" * len(_UPLINK_HOUSEKEEPING_NAMES)) + ")")
MIGRATIONS = {2: ALERTS_TABLE + COMMAND_REPORTS_TABLE, 3: IMAGE_TRACK_COLUMNS, 4: UPLINK_HOUSEKEEPING_TABLE}

SCHEMA = f"""
CREATE TABLE archive_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE packets (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    spacecraft_id INTEGER NOT NULL,
    virtual_channel INTEGER NOT NULL,
    apid INTEGER NOT NULL,
    sequence_count INTEGER NOT NULL,
    time_field BLOB NOT NULL,
    message_type_counter INTEGER NOT NULL,
    time_status INTEGER NOT NULL,
    service INTEGER NOT NULL,
    subtype INTEGER NOT NULL,
    length INTEGER NOT NULL,
    UNIQUE (spacecraft_id, virtual_channel, apid, sequence_count, time_field, message_type_counter)
);
CREATE TABLE housekeeping (
    id INTEGER PRIMARY KEY,
    packet_id INTEGER NOT NULL UNIQUE REFERENCES packets(id),
    received_at REAL NOT NULL,
    packet_time REAL,              -- NULL: the packet's time was not the clock's (time_status)
    sequence_count INTEGER NOT NULL,
    {", ".join(f"{name} INTEGER NOT NULL" for name in HOUSEKEEPING_FIELDS)}
);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    packet_id INTEGER NOT NULL UNIQUE REFERENCES packets(id),
    received_at REAL NOT NULL,
    packet_time REAL,
    severity INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE detection_reports (
    id INTEGER PRIMARY KEY,
    packet_id INTEGER NOT NULL UNIQUE REFERENCES packets(id),
    received_at REAL NOT NULL,
    frame_index INTEGER NOT NULL,
    frame_time REAL,
    count INTEGER NOT NULL
);
CREATE TABLE detections (
    id INTEGER PRIMARY KEY,
    report_id INTEGER NOT NULL REFERENCES detection_reports(id),
    {", ".join(f"{name} {'INTEGER' if DETECTION_DTYPE[name].kind in 'iu' else 'REAL'} NOT NULL"
               for name in _DETECTION_COLUMNS)}
);
{ALERTS_TABLE}{COMMAND_REPORTS_TABLE}{UPLINK_HOUSEKEEPING_TABLE}CREATE TABLE images (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    product_id INTEGER NOT NULL,
    kind TEXT NOT NULL,
    frame_index INTEGER NOT NULL,
    frame_time REAL NOT NULL,
    x0 INTEGER NOT NULL, y0 INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    max_error INTEGER NOT NULL,
    status TEXT NOT NULL,          -- complete | incomplete | corrupt
    detail TEXT NOT NULL,
    path TEXT,
    track_id INTEGER,              -- a track chip's alert track (kind track_chip), else NULL
    track_frame INTEGER,           -- its place in the track's chip sequence, 0 at the alert's opening
    UNIQUE (product_id, kind, frame_index, frame_time)
);
"""


class ArchiveError(Exception):
    """The archive cannot be written or opened: a fault of the ground station, not of the telemetry."""


class PacketIdentity(NamedTuple):
    """What makes a packet the same packet when it is received again.

    The two counters wrap at 16384 and 65536 packets: with a clock stuck at a
    limit, a new packet is taken for an old one only after 65536 of its kind.
    """

    spacecraft_id: int
    virtual_channel: int
    apid: int
    sequence_count: int
    time_field: bytes
    message_type_counter: int


def _describe(exc: BaseException, what: str) -> str:
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError):
        if "locked" in text or "busy" in text:
            return f"{what}: the database is locked by another process ({text})"
        if "full" in text:
            return f"{what}: the disk is full ({text})"
        if "readonly" in text or "read-only" in text:
            return f"{what}: the database is read-only ({text})"
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return f"{what}: the disk is full ({exc.strerror})"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"{what}: the disk is read-only ({exc.strerror})"
    if isinstance(exc, OSError) and exc.strerror:
        return f"{what}: {exc.strerror}" + (f" ({exc.filename})" if exc.filename else "")
    return f"{what}: {text}"


class CommandReport(NamedTuple):
    """One command_reports row past the packet's own columns."""

    kind: str
    success: bool
    request_apid: int | None = None
    request_sequence_count: int | None = None
    step: int | None = None
    code: int | None = None
    reason: str | None = None
    detail: str | None = None

    @classmethod
    def of(cls, service: int, subtype: int, data: bytes) -> "CommandReport":
        """From a TM(1,x), (17,2) or (20,2)'s source data; MalformedError when it does not parse."""
        if service == services.SERVICE_VERIFICATION:
            r = services.VerificationReport.unpack(subtype, data)
            failed = not r.success
            return cls(r.stage.name, r.success, r.request_id.apid, r.request_id.sequence_count, r.step,
                       r.code if failed else None,
                       (r.reason.name if isinstance(r.reason, services.Reason) else None) if failed else None,
                       r.data.decode("utf8", "replace") if failed else None)
        if (service, subtype) == (services.SERVICE_TEST, 2):
            services.EMPTY.parse(data)
            return cls("alive", True)
        if (service, subtype) == (services.SERVICE_PARAMETERS, 2):
            return cls("parameters", True, detail=json.dumps(services.parse_parameter_report(data)))
        raise ValueError(f"TM({service},{subtype}) is not a command report")


def _alert_row(packet_id: int, received_at: float, frame_time, first_time, a: AlertUpdate) -> dict:
    """One alerts row: the columns in _ALERT_COLUMNS order."""
    return {
        "packet_id": packet_id, "received_at": received_at, "frame_index": a.frame_index, "frame_time": frame_time,
        "track_id": a.track_id, "update_number": a.update, "kind": a.kind.name,
        "evidence": ",".join(e.name for e in Evidence if e in a.evidence),
        "ended": a.end.name if a.end else None, "first_index": a.first_index, "first_time": first_time,
        "hits": a.hits, "x": a.x, "y": a.y, "vx": a.vx, "vy": a.vy,
        "covariance": json.dumps([round(v, 6) for v in a.covariance]),
        **{name: getattr(a, name) for name in _ALERT_FLOATS},
        "lat": a.lat, "lon": a.lon,
    }


_ALERT_FLOATS = ("flux", "trend", "trend_sigma", "speed", "speed_sigma", "accel_along", "accel_across",
                 "accel_sigma", "manoeuvre_probability", "track_score", "classifier_score")
# The columns, in the order _alert_row writes them (the row builder is their one declaration).
_ALERT_COLUMNS = tuple(_alert_row(0, 0.0, None, None, AlertUpdate(
    0, 0, TrackKind(0), Evidence(0), TrackEnd(0), 0, b"", 0, b"", 0, 0.0, 0.0, 0.0, 0.0, (0.0,) * 10,
    *(0.0,) * len(_ALERT_FLOATS))))


def _alert_line(row: dict) -> str:
    """alerts.jsonl: one object per alert update; pixels and frame indices as in detections.jsonl."""
    record = {"track_id": row["track_id"], "frame_index": row["frame_index"], "frame_time": row["frame_time"],
              "x": round(row["x"], 4), "y": round(row["y"], 4), "vx": round(row["vx"], 4),
              "vy": round(row["vy"], 4), "kind": row["kind"], "score": round(row["track_score"], 3),
              "classifier_score": round(row["classifier_score"], 4), "update": row["update_number"],
              "ended": row["ended"], "evidence": row["evidence"].split(",") if row["evidence"] else [],
              "first_index": row["first_index"], "first_time": row["first_time"],
              "speed": round(row["speed"], 4), "trend": round(row["trend"], 5),
              "covariance": json.loads(row["covariance"])}
    if row["lat"] is not None:
        record["lat"], record["lon"] = row["lat"], row["lon"]
    record["received_at"] = row["received_at"]
    return json.dumps(record) + "\n"


class GroundArchive:
    def __init__(self, out_dir: str | Path, busy_timeout_s: float = 5.0):
        self.out_dir = Path(out_dir)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise ArchiveError(f"output {self.out_dir} exists and is not a directory")
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(self.out_dir / DATABASE, timeout=busy_timeout_s)
        except (OSError, sqlite3.Error) as exc:
            raise ArchiveError(_describe(exc, f"cannot open the archive in {self.out_dir}")) from exc
        self._pending_lines: dict[str, list[str]] = {DETECTIONS_JSONL: [], ALERTS_JSONL: []}
        self._jsonl: dict[str, int] = {}
        try:
            self.found = self._open_schema()
            self._jsonl[DETECTIONS_JSONL] = self._rebuild_jsonl(DETECTIONS_JSONL, self._detection_lines())
            self._jsonl[ALERTS_JSONL] = self._rebuild_jsonl(ALERTS_JSONL, self._alert_lines())
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ArchiveError(_describe(exc, f"{self.out_dir / DATABASE} cannot be used")) from exc
        except OSError as exc:
            self.db.close()
            for handle in self._jsonl.values():
                os.close(handle)
            raise ArchiveError(_describe(exc, f"cannot write the JSON lines in {self.out_dir}")) from exc

    # --- opening ----------------------------------------------------------------
    def _open_schema(self) -> dict:
        """Create the schema in a new database, or check an existing one is ours; what it already holds."""
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if version == 0 and not tables:
            with self.db:
                self.db.executescript("BEGIN;" + SCHEMA + f"PRAGMA user_version={SCHEMA_VERSION};")
                self.db.execute("INSERT INTO archive_info VALUES ('application', ?)", (APPLICATION,))
            return {}
        info = {}
        if "archive_info" in tables:
            info = dict(self.db.execute("SELECT key, value FROM archive_info"))
        if info.get("application") != APPLICATION:
            hint = (" (an archive of an earlier Kestrel, schema 1)" if {"packets", "housekeeping"} <= tables
                    else "")
            raise ArchiveError(f"{self.out_dir / DATABASE} is not a Kestrel ground archive{hint}: "
                               f"decode into a new --out directory")
        while version in MIGRATIONS and version < SCHEMA_VERSION:
            with self.db:
                self.db.executescript("BEGIN;" + MIGRATIONS[version] + f"PRAGMA user_version={version + 1};")
            log.info("archive: %s upgraded from schema %d to %d", self.out_dir / DATABASE, version, version + 1)
            version += 1
        if version != SCHEMA_VERSION:
            raise ArchiveError(f"{self.out_dir / DATABASE} has archive schema {version}; this kestrel-ground "
                               f"writes schema {SCHEMA_VERSION}: decode into a new --out directory")
        return {table: self.db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("packets", "detection_reports", "housekeeping", "events", "images", "alerts",
                              "command_reports", "uplink_housekeeping")}

    def _detection_lines(self):
        rows = self.db.execute(
            f"SELECT r.frame_index, r.frame_time, r.received_at, {', '.join('d.' + c for c in _DETECTION_COLUMNS)} "
            "FROM detections d JOIN detection_reports r ON d.report_id = r.id ORDER BY d.id")
        return (self._line(row[0], row[1], row[2], row[3:]) for row in rows)

    def _alert_lines(self):
        rows = self.db.execute(f"SELECT {', '.join(_ALERT_COLUMNS)} FROM alerts ORDER BY id")
        return (_alert_line(dict(zip(_ALERT_COLUMNS, row))) for row in rows)

    def _rebuild_jsonl(self, name: str, lines):
        """Rewrite a JSON-lines file from the database (it may have lagged, or been half-written, at a kill)."""
        path = self.out_dir / name
        temporary = path.with_name(path.name + ".tmp")
        with temporary.open("w", encoding="utf8") as handle:
            for line in lines:
                handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        return os.open(path, os.O_WRONLY | os.O_APPEND)

    @staticmethod
    def _line(frame_index: int, frame_time: float, received_at: float, values) -> str:
        record = {"frame_index": frame_index, "frame_time": frame_time}
        for name, value in zip(_DETECTION_COLUMNS, values):
            record[name] = round(float(value), 4) if DETECTION_DTYPE[name].kind == "f" else int(value)
        record["received_at"] = received_at
        return json.dumps(record) + "\n"

    def summary_line(self) -> str:
        """What the output directory held when it was opened, for the operator."""
        if not self.found:
            return f"archive: new, in {self.out_dir}"
        return (f"archive: {self.out_dir} already holds {self.found['packets']} packets, "
                f"{self.found['detection_reports']} detection reports, {self.found['housekeeping']} housekeeping "
                f"reports, {self.found['events']} events, {self.found['images']} images, {self.found['alerts']} alert "
                f"updates; packets seen before "
                f"are recognised and not archived again")

    # --- writing ------------------------------------------------------------------
    def _execute(self, sql: str, values=()) -> sqlite3.Cursor:
        try:
            return self.db.execute(sql, values)
        except sqlite3.Error as exc:
            raise ArchiveError(_describe(exc, f"cannot write {self.out_dir / DATABASE}")) from exc

    def packet(self, received_at: float, identity: PacketIdentity, time_status: int, service: int, subtype: int,
               length: int) -> int | None:
        """The new packet's row id, or None when this packet was archived before."""
        cursor = self._execute(
            "INSERT OR IGNORE INTO packets (received_at, spacecraft_id, virtual_channel, apid, sequence_count, "
            "time_field, message_type_counter, time_status, service, subtype, length) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (received_at, *identity, time_status, service, subtype, length))
        return cursor.lastrowid if cursor.rowcount == 1 else None

    def housekeeping(self, packet_id: int, received_at: float, packet_time: float, sequence_count: int,
                     values: dict) -> None:
        names = ("packet_id", "received_at", "packet_time", "sequence_count") + HOUSEKEEPING_FIELDS
        row = (packet_id, received_at, packet_time, sequence_count) + tuple(values[n] for n in HOUSEKEEPING_FIELDS)
        self._execute(f"INSERT INTO housekeeping ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", row)

    def uplink_housekeeping(self, packet_id: int, received_at: float, packet_time: float, sequence_count: int,
                            values: dict) -> None:
        """One report of structure 3: the uplink's counters, each rejection under its reason."""
        row = (packet_id, received_at, packet_time, sequence_count) + tuple(
            values[n] for n in UPLINK_HOUSEKEEPING_FIELDS)
        self._execute(_UPLINK_HOUSEKEEPING_INSERT, row)

    def event(self, packet_id: int, received_at: float, packet_time: float, severity: int, event_id: int,
              text: str) -> None:
        self._execute("INSERT INTO events (packet_id, received_at, packet_time, severity, event_id, text) "
                      "VALUES (?, ?, ?, ?, ?, ?)", (packet_id, received_at, packet_time, severity, event_id, text))

    def detections(self, packet_id: int, received_at: float, frame_index: int, frame_time: float,
                   records: np.ndarray) -> None:
        report = self._execute("INSERT INTO detection_reports (packet_id, received_at, frame_index, frame_time, "
                               "count) VALUES (?, ?, ?, ?, ?)",
                               (packet_id, received_at, frame_index, frame_time, len(records))).lastrowid
        rows = [(report, *(r[name].item() for name in _DETECTION_COLUMNS)) for r in records]
        if rows:
            try:
                self.db.executemany(f"INSERT INTO detections (report_id, {', '.join(_DETECTION_COLUMNS)}) "
                                    f"VALUES ({', '.join('?' * (1 + len(_DETECTION_COLUMNS)))})", rows)
            except sqlite3.Error as exc:
                raise ArchiveError(_describe(exc, f"cannot write {self.out_dir / DATABASE}")) from exc
        self._pending_lines[DETECTIONS_JSONL].extend(
            self._line(frame_index, frame_time, received_at, row[1:]) for row in rows)

    def alert(self, packet_id: int, received_at: float, frame_time: float | None, first_time: float | None,
              alert: AlertUpdate) -> None:
        row = _alert_row(packet_id, received_at, frame_time, first_time, alert)
        self._execute(f"INSERT INTO alerts ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                      tuple(row.values()))
        self._pending_lines[ALERTS_JSONL].append(_alert_line(row))

    def command_report(self, packet_id: int, received_at: float, packet_time: float | None, apid: int,
                       service: int, subtype: int, report: CommandReport) -> None:
        self._execute("INSERT INTO command_reports (packet_id, received_at, packet_time, apid, service, subtype, "
                      f"{', '.join(CommandReport._fields)}) VALUES ({', '.join('?' * (6 + len(CommandReport._fields)))})",
                      (packet_id, received_at, packet_time, apid, service, subtype, *report))

    def image(self, received_at: float, product_id: int, kind: str, meta: dict, status: str, detail: str,
              path) -> None:
        self._execute(
            "INSERT OR IGNORE INTO images (received_at, product_id, kind, frame_index, frame_time, x0, y0, width, "
            "height, max_error, status, detail, path, track_id, track_frame) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (received_at, product_id, kind, meta["frame_index"], meta["frame_time"], meta["x0"], meta["y0"],
             meta["width"], meta["height"], meta["max_error"], status, detail, path, meta.get("track_id"),
             meta.get("track_frame")))

    def save_image(self, name: str, image: np.ndarray) -> str:
        """Write a decoded image as .npy (the data) and .png (to look at); the .npy path."""
        stem = self.out_dir / IMAGES / name
        try:
            stem.parent.mkdir(exist_ok=True)
            np.save(stem.with_suffix(".npy"), image)
            write_png(stem.with_suffix(".png"), display_stretch(image))
        except OSError as exc:
            raise ArchiveError(_describe(exc, f"cannot write image {stem.name}")) from exc
        return str(stem.with_suffix(".npy"))

    def commit(self) -> None:
        """End the transaction; only then do its detections and alerts reach the JSON lines."""
        try:
            self.db.commit()
        except sqlite3.Error as exc:
            raise ArchiveError(_describe(exc, f"cannot commit {self.out_dir / DATABASE}")) from exc
        for name, pending in self._pending_lines.items():
            if not pending:
                continue
            data = "".join(pending).encode("utf8")
            pending.clear()
            handle = self._jsonl[name]
            end = os.lseek(handle, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(handle, view):]
            except OSError as exc:
                # No half line: the file ends where the last whole transaction's lines ended.
                try:
                    os.ftruncate(handle, end)
                except OSError:
                    pass
                raise ArchiveError(_describe(exc, f"cannot write {self.out_dir / name}")) from exc

    def rollback(self) -> None:
        """Drop the open transaction (after a failure): what was committed stays."""
        for pending in self._pending_lines.values():
            pending.clear()
        try:
            self.db.rollback()
        except sqlite3.Error:
            pass

    def close(self) -> None:
        try:
            self.commit()
        finally:
            for handle in self._jsonl.values():
                os.close(handle)
            self.db.close()


class NullArchive:
    """Takes what the decoder archives and keeps nothing (every packet is new to it): for decoding
    without a record, as `kestrel-ground command` follows its replies, and for benchmarks."""

    def __init__(self):
        self.packets = 0

    def packet(self, received_at, identity, time_status, service, subtype, length) -> int:
        self.packets += 1
        return self.packets

    def housekeeping(self, *args): pass
    def uplink_housekeeping(self, *args): pass
    def event(self, *args): pass
    def detections(self, *args): pass
    def alert(self, *args): pass
    def command_report(self, *args): pass
    def image(self, *args): pass
    def save_image(self, name, image): return name
    def commit(self): pass
