"""Alerts end to end, in process: the flight executive's tracker opens alerts, the ground decodes them into
the archive and alerts.jsonl, and they sit on the simulated targets."""
import dataclasses
import json
import sqlite3

import numpy as np
import pytest

from flight.geolocation import GeolocationConfig, Geolocator
from ground.archive import GroundArchive
from hil.scene import SceneSimulator
from kestrel import products
from tests.test_flight_to_ground import decode, fly, small_config
from tests.test_geolocation import TLE


@pytest.fixture(scope="module")
def flown(tmp_path_factory):
    base = small_config()
    # 40 frames: tracks start once the detector has settled (settle_frames), and a whole chip
    # sequence takes alert_chip_frames more after the alert opens
    config = dataclasses.replace(
        base, sensor=dataclasses.replace(base.sensor, max_frames=40),
        tracking=dataclasses.replace(base.tracking, alert_chip_frames=8),
        geolocation=GeolocationConfig(tle_line1=TLE[0], tle_line2=TLE[1], focal_length_px=5000.0))
    stream, executive = fly(config)
    out = tmp_path_factory.mktemp("alerts")
    summary = decode(config, stream, out)
    return config, executive, summary, out


def test_alerts_reach_the_archive_and_alerts_jsonl(flown):
    config, executive, summary, out = flown
    rows = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    assert summary.packets["alerts"] == len(rows) > 0
    assert summary.packets["packets_malformed"] == 0 and summary.packets["packets_unknown"] == 0
    assert {"track_id", "frame_index", "frame_time", "x", "y", "vx", "vy", "kind", "score", "lat", "lon"} <= set(rows[0])
    db = sqlite3.connect(out / "archive.sqlite")
    assert db.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == len(rows)
    # Alert frame times are the detection reports' frame times of the same frame.
    times = dict(db.execute("SELECT frame_index, frame_time FROM detection_reports"))
    assert all(r["frame_time"] == times[r["frame_index"]] for r in rows)
    assert executive.alerts.alerts_opened == len({r["track_id"] for r in rows})
    # Openings come on an APID of their own, so overtaking the updates leaves each APID's counts in order.
    by_apid = dict(db.execute("SELECT p.apid, COUNT(*) FROM alerts a JOIN packets p ON p.id = a.packet_id "
                              "GROUP BY p.apid"))
    openings = db.execute("SELECT COUNT(*) FROM alerts WHERE update_number = 0").fetchone()[0]
    assert by_apid[products.APID_ALERT_OPENINGS] == openings == executive.alerts.alerts_opened
    assert by_apid[products.APID_ALERTS] == len(rows) - openings > 0
    assert summary.packets["sequence_gaps"] == 0
    for apid in products.ALERT_APIDS:
        counts = [r[0] for r in db.execute("SELECT sequence_count FROM packets WHERE apid = ? ORDER BY id", (apid,))]
        assert counts == list(range(len(counts))), apid


def test_alerts_sit_on_the_targets_and_carry_the_flights_geolocation(flown):
    config, _, _, out = flown
    rows = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    sim = SceneSimulator(config.scene)
    geolocator = Geolocator(config.geolocation, (config.scene.height, config.scene.width))
    for r in rows:
        if r["ended"]:
            continue
        truth = sim.frame(r["frame_index"])[1]
        distance = np.hypot(truth["x"] - r["x"], truth["y"] - r["y"]).min()
        assert distance < 1.5, r
        lat, lon = geolocator.locate(r["x"], r["y"], r["frame_time"])
        # The flight located the filter's state (float64); the wire rounds x, y to float32.
        assert r["lat"] == pytest.approx(lat, abs=1e-4) and r["lon"] == pytest.approx(lon, abs=1e-4)


def test_alerts_carry_the_false_alarm_filters_mean_score(flown):
    _, executive, _, out = flown
    rows = [json.loads(line) for line in (out / "alerts.jsonl").read_text().splitlines()]
    scores = np.array([r["classifier_score"] for r in rows])
    scored = np.array([r["frame_index"] >= executive.classifier.lag for r in rows])
    # 0 says no detection of the track was scored: only before the filter has its lagged frame.
    assert ((scores >= 0) & (scores <= 1)).all() and (scores[scored] > 0).all() and scored.sum() >= 3
    # Bright moving targets on a clear scene: the filter, on by default, calls them targets (above its
    # even odds; the weights trained on the family put the median here near 0.7).
    assert np.median(scores[scored]) > 0.5


def test_alerts_jsonl_is_rebuilt_from_the_database(flown):
    _, _, _, out = flown
    path = out / "alerts.jsonl"
    before = path.read_text()
    path.write_text(before[: len(before) // 2])        # a kill mid-write
    GroundArchive(out).close()
    assert path.read_text() == before


def test_each_alert_is_followed_by_its_tracks_chip_sequence_lossless(flown):
    """From its opening frame, a lossless chip centred on the track each frame, alert_chip_frames of them
    (fewer only when the track ended first), named for the track, equal to the frame's pixels."""
    config, executive, _, out = flown
    db = sqlite3.connect(out / "archive.sqlite")
    openings = dict(db.execute("SELECT track_id, frame_index FROM alerts WHERE update_number = 0"))
    positions = {(t, f): (x, y) for t, f, x, y in db.execute("SELECT track_id, frame_index, x, y FROM alerts")}
    chips = db.execute("SELECT track_id, track_frame, frame_index, x0, y0, width, height, status, path "
                       "FROM images WHERE kind = 'track_chip' ORDER BY track_id, track_frame").fetchall()
    assert chips and {c[0] for c in chips} == set(openings)
    sim = SceneSimulator(config.scene)
    size = config.imaging.chip_size
    for track in openings:
        sequence = [c for c in chips if c[0] == track]
        assert [c[1] for c in sequence] == list(range(len(sequence)))
        assert [c[2] for c in sequence] == list(range(openings[track], openings[track] + len(sequence)))
        assert 1 <= len(sequence) <= config.tracking.alert_chip_frames
        for _, _, frame_index, x0, y0, width, height, status, path in sequence:
            assert status == "complete" and (width, height) == (size, size)
            assert f"track_{track}_" in path
            pixels = np.load(path)
            assert np.array_equal(pixels, sim.frame(frame_index)[0][y0:y0 + height, x0:x0 + width])
        # centred on the track as its opening alert placed it, kept inside the frame
        x, y = positions[track, openings[track]]
        h, w = config.scene.height, config.scene.width
        assert abs(sequence[0][3] - np.clip(x - size / 2, 0, w - size)) <= 1
        assert abs(sequence[0][4] - np.clip(y - size / 2, 0, h - size)) <= 1
    full = [t for t in openings if sum(c[0] == t for c in chips) == config.tracking.alert_chip_frames]
    assert full, "no track lasted a whole chip sequence"
