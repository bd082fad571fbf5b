"""Where decoded products go: detections as JSON lines, housekeeping and events in SQLite.

The archive is SQLite in WAL mode, committed per report, so a ground station
that loses power keeps everything it had decoded.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from kestrel.products import HOUSEKEEPING_FIELDS

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS housekeeping (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    packet_time REAL NOT NULL,
    sequence_count INTEGER NOT NULL,
    {", ".join(f"{name} INTEGER NOT NULL" for name in HOUSEKEEPING_FIELDS)}
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    packet_time REAL NOT NULL,
    severity INTEGER NOT NULL,
    event_id INTEGER NOT NULL,
    text TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS detection_reports (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    frame_index INTEGER NOT NULL,
    frame_time REAL NOT NULL,
    count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS images (
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
    path TEXT
);
CREATE TABLE IF NOT EXISTS packets (
    id INTEGER PRIMARY KEY,
    received_at REAL NOT NULL,
    apid INTEGER NOT NULL,
    service INTEGER,
    subtype INTEGER,
    sequence_count INTEGER NOT NULL,
    length INTEGER NOT NULL
);
"""


class GroundArchive:
    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.out_dir / "archive.sqlite")
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self._detections = (self.out_dir / "detections.jsonl").open("a", encoding="utf8")

    def packet(self, received_at: float, apid: int, service, subtype, sequence_count: int, length: int) -> None:
        self.db.execute("INSERT INTO packets (received_at, apid, service, subtype, sequence_count, length) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (received_at, apid, service, subtype, sequence_count, length))

    def housekeeping(self, received_at: float, packet_time: float, sequence_count: int, values: dict) -> None:
        names = ("received_at", "packet_time", "sequence_count") + HOUSEKEEPING_FIELDS
        row = (received_at, packet_time, sequence_count) + tuple(values[n] for n in HOUSEKEEPING_FIELDS)
        self.db.execute(f"INSERT INTO housekeeping ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})", row)
        self.db.commit()

    def event(self, received_at: float, packet_time: float, severity: int, event_id: int, text: str) -> None:
        self.db.execute("INSERT INTO events (received_at, packet_time, severity, event_id, text) VALUES (?, ?, ?, ?, ?)",
                        (received_at, packet_time, severity, event_id, text))
        self.db.commit()

    def image(self, received_at: float, product_id: int, kind: str, meta: dict, status: str, detail: str, path) -> None:
        self.db.execute(
            "INSERT INTO images (received_at, product_id, kind, frame_index, frame_time, x0, y0, width, height, "
            "max_error, status, detail, path) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (received_at, product_id, kind, meta["frame_index"], meta["frame_time"], meta["x0"], meta["y0"],
             meta["width"], meta["height"], meta["max_error"], status, detail, path))
        self.db.commit()

    def detections(self, received_at: float, frame_index: int, frame_time: float, records) -> None:
        self.db.execute("INSERT INTO detection_reports (received_at, frame_index, frame_time, count) "
                        "VALUES (?, ?, ?, ?)", (received_at, frame_index, frame_time, len(records)))
        for r in records:
            line = {"frame_index": frame_index, "frame_time": frame_time,
                    **{name: round(float(r[name]), 4) if r.dtype[name].kind == "f" else int(r[name])
                       for name in records.dtype.names},
                    "received_at": received_at}
            self._detections.write(json.dumps(line) + "\n")
        self._detections.flush()
        self.db.commit()

    def commit(self) -> None:
        self.db.commit()
        self._detections.flush()

    def close(self) -> None:
        self.commit()
        self._detections.close()
        self.db.close()
