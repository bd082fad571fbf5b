"""The ground archives the uplink's housekeeping (structure 3): each report a row of uplink_housekeeping,
one column per counter of products.UPLINK_HOUSEKEEPING, every FrameRejected reason among them; and an
archive of schema 4 gains the table when opened.

Reference: the flight executive's own uplink_housekeeping() values, sent through the real downlink.
"""
import sqlite3
import threading

from flight.downlink import Downlink
from flight.executive import Executive
from ground.archive import SCHEMA_VERSION, GroundArchive
from ground.decoder import GroundDecoder
from kestrel import products
from kestrel.link.errors import Rejection
from tests.test_flight_to_ground import CapturePort, small_config
from tests.test_uplink import TC, frame_cltu, hand_frame


def test_uplink_housekeeping_is_archived_with_every_rejection_by_reason(tmp_path):
    config = small_config(ocf=True)
    port = CapturePort()
    downlink = Downlink(config.link, port)
    executive = Executive(config, downlink, threading.Event())
    downlink.start()
    uplink = config.uplink
    executive.uplink.feed(frame_cltu(uplink, hand_frame(uplink, TC.pack(), bypass=0, seq=0)))
    executive.uplink.feed(frame_cltu(uplink, hand_frame(uplink, TC.pack(), scid=7)))
    for _ in range(2):
        executive.uplink.feed(frame_cltu(uplink, hand_frame(uplink, TC.pack(), crc_ok=False)))
    executive.uplink.feed(frame_cltu(uplink, hand_frame(uplink, TC.pack(), version=1)))
    executive.commanding()
    values = executive.uplink_housekeeping()
    assert downlink.stop(10)
    executive.close()
    assert (values["spacecraft_id"], values["fecf"], values["version"], values["frames_accepted"]) == (1, 2, 1, 1)

    archive = GroundArchive(tmp_path)
    decoder = GroundDecoder(config, archive)
    decoder.feed(bytes(port.data))
    decoder.finish()
    archive.close()
    assert decoder.counters.uplink_housekeeping_reports >= 1
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    columns = [row[1] for row in db.execute("PRAGMA table_info(uplink_housekeeping)")]
    assert {reason.value for reason in Rejection} <= set(columns)
    quoted = ", ".join(f'"{n}"' for n in products.UPLINK_HOUSEKEEPING_FIELDS)
    rows = db.execute(f"SELECT {quoted} "
                      "FROM uplink_housekeeping ORDER BY id").fetchall()
    assert len(rows) == decoder.counters.uplink_housekeeping_reports
    assert dict(zip(products.UPLINK_HOUSEKEEPING_FIELDS, rows[-1])) == {
        n: values[n] for n in products.UPLINK_HOUSEKEEPING_FIELDS}
    # Each row hangs off its packet: structure 3 on the housekeeping APID.
    assert db.execute("SELECT COUNT(*) FROM uplink_housekeeping u JOIN packets p ON u.packet_id = p.id "
                      "WHERE p.apid = ? AND p.service = 3 AND p.subtype = 25",
                      (products.APID_HOUSEKEEPING,)).fetchone()[0] == len(rows)


def test_a_schema_4_archive_gains_the_uplink_housekeeping_table(tmp_path):
    GroundArchive(tmp_path).close()
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    db.executescript("DROP TABLE uplink_housekeeping; PRAGMA user_version=4;")
    db.close()
    archive = GroundArchive(tmp_path)
    assert archive.found["uplink_housekeeping"] == 0
    archive.close()
    db = sqlite3.connect(tmp_path / "archive.sqlite")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert "farm_lockout" in {row[1] for row in db.execute("PRAGMA table_info(uplink_housekeeping)")}
