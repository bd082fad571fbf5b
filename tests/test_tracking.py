"""The onboard tracker: assignment against scipy (the reference), filter and track management on scenes
whose answer is known, kinds with their evidence, alerts opened, updated and closed."""
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy.optimize import linear_sum_assignment

from flight import tracking_ref
from flight.alerts import AlertPublisher
from flight.assignment import assign, hungarian
from flight.tracking import Tracker, TrackerConfig
from kestrel.products import DETECTION_DTYPE, AlertUpdate, Evidence, TrackEnd, TrackKind
from kestrel.settings import ConfigurationError

SHAPE = (256, 256)


def detections(points, sigma=0.1, flux=1000.0):
    """Detection records at (x, y) points, each with its CRB sigma and flux."""
    d = np.zeros(len(points), DETECTION_DTYPE)
    for i, p in enumerate(points):
        d[i]["x"], d[i]["y"] = p[0], p[1]
        d[i]["sigma_x"] = d[i]["sigma_y"] = sigma
        d[i]["flux"] = p[2] if len(p) > 2 else flux
        d[i]["snr"] = 10
    return d


# --- assignment --------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.integers(1, 6), st.integers(0, 4), st.integers(0, 2**32 - 1))
def test_hungarian_matches_scipy(n, extra, seed):
    cost = np.random.default_rng(seed).random((n, n + extra)) * 10
    columns = hungarian(cost.tolist())
    rows, cols = linear_sum_assignment(cost)
    assert len(set(columns)) == n
    assert cost[np.arange(n), columns].sum() == pytest.approx(cost[rows, cols].sum(), abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 8), st.integers(1, 8), st.integers(0, 2**32 - 1))
def test_gated_assignment_is_the_optimum_with_miss_costs(n, m, seed):
    """Reference: scipy on the matrix padded with one miss column per track (cost = the gate)."""
    rng = np.random.default_rng(seed)
    gate = 3.0
    distance = rng.random((n, m)) * 6
    distance[distance > gate] = np.inf
    rows, cols = assign(distance, gate)
    ours = distance[rows, cols].sum() + gate * (n - len(rows))
    padded = np.full((n, m + n), 1e9)
    padded[:, :m] = np.where(np.isfinite(distance), distance, 1e9)
    padded[np.arange(n), m + np.arange(n)] = gate
    r, c = linear_sum_assignment(padded)
    assert ours == pytest.approx(padded[r, c].sum(), abs=1e-9)
    assert np.all(distance[rows, cols] < gate)
    assert len(set(cols.tolist())) == len(cols)


def test_assignment_refuses_bad_input():
    with pytest.raises(ValueError, match="2-D"):
        assign(np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="miss_cost"):
        assign(np.zeros((2, 2)), math.nan)


# --- the filter and track management -------------------------------------------------------

def run(tracker, frames):
    return [tracker.update(i, detections(points)) for i, points in enumerate(frames)]


@pytest.mark.parametrize("model", ["cv", "imm"])
def test_a_straight_target_is_confirmed_at_m_of_n_and_its_velocity_converges(model):
    tracker = Tracker(TrackerConfig(model=model, jitter_px=0.0), SHAPE)
    results = run(tracker, [[(50 + 2 * i, 60 + 1 * i)] for i in range(20)])
    assert [len(r.confirmed) for r in results[:3]] == [0, 0, 1]        # 3 of 4: the third detection confirms
    last = results[-1].confirmed[0]
    assert last.state[2:] == pytest.approx([2.0, 1.0], abs=0.02)
    assert last.state[:2] == pytest.approx([88, 79], abs=0.05)
    assert last.hits == 20 and last.first_index == 0
    assert Evidence.MOVING in last.evidence and last.alertable


def test_measurement_noise_is_the_detection_sigma():
    """A detection with a larger CRB sigma pulls the state less (the Kalman gain follows R)."""
    pulls = []
    for sigma in (0.05, 1.0):
        tracker = Tracker(TrackerConfig(model="cv", jitter_px=0.0), SHAPE)
        for i in range(8):
            tracker.update(i, detections([(50.0 + i, 50.0)], sigma=0.3))
        result = tracker.update(8, detections([(58.0 + 0.3, 50.0)], sigma=sigma))
        pulls.append(result.confirmed[0].state[0] - 58.0)
    assert pulls[0] > 0.15 and pulls[1] < 0.05


def test_two_crossing_targets_keep_their_ids():
    tracker = Tracker(TrackerConfig(model="cv", jitter_px=0.0), SHAPE)
    frames = [[(40 + 3 * i, 100 + 0.5 * i), (40 + 3 * i, 130 - 0.5 * i)] for i in range(40)]
    ids = []
    for i, points in enumerate(frames):
        r = tracker.update(i, detections(points))
        if r.confirmed:
            ids.append({c.track_id: round(float(c.state[1])) for c in r.confirmed})
    first, last = ids[0], ids[-1]
    # The track that started at y = 100 is the one that ends at y = 100 + 0.5 * 39.
    low = min(first, key=first.get)
    assert last[low] == round(100 + 0.5 * 39)
    assert tracker.counters.tracks_born == 2


def test_tentative_tracks_that_cannot_reach_m_of_n_are_deleted_and_clutter_never_confirms():
    rng = np.random.default_rng(4)
    tracker = Tracker(TrackerConfig(), SHAPE)
    confirmed = 0
    for i in range(50):
        clutter = rng.uniform(10, 246, size=(5, 2))
        confirmed += len(tracker.update(i, detections(clutter)).confirmed)
    assert confirmed == 0 and tracker.counters.tracks_confirmed == 0
    assert tracker.counters.tracks_born > 200
    assert tracker.track_count <= 5 * 3       # a tentative track is gone after 2 misses (3 of 4)


def test_a_lost_track_ends_after_delete_misses_and_one_leaving_the_frame_says_so():
    tracker = Tracker(TrackerConfig(model="cv", delete_misses=3), SHAPE)
    run(tracker, [[(100 + i, 100)] for i in range(6)])
    ended = [tracker.update(6 + k, detections([])).ended for k in range(3)]
    assert [len(e) for e in ended] == [0, 0, 1] and ended[2][0].end == TrackEnd.LOST
    tracker = Tracker(TrackerConfig(model="cv", border_px=4), (64, 64))
    out = [tracker.update(i, detections([(40 + 5 * i, 30)] if 40 + 5 * i <= 59 else [])) for i in range(8)]
    ends = [e.end for r in out for e in r.ended]
    assert ends == [TrackEnd.LEFT_FIELD]


def test_no_track_is_born_on_the_border():
    tracker = Tracker(TrackerConfig(border_px=4), SHAPE)
    tracker.update(0, detections([(2.0, 100.0), (100.0, 253.5), (100.0, 100.0)]))
    assert tracker.counters.tracks_born == 1


def test_births_beyond_the_slots_are_refused_and_counted():
    tracker = Tracker(TrackerConfig(max_tracks=3), SHAPE)
    tracker.update(0, detections([(20.0 + 10 * k, 50.0) for k in range(5)]))
    assert tracker.track_count == 3 and tracker.counters.births_refused == 2


def test_bad_input_is_refused_clearly():
    tracker = Tracker(TrackerConfig(), SHAPE)
    with pytest.raises(ValueError, match="DETECTION_DTYPE"):
        tracker.update(0, np.zeros((3, 2)))
    tracker.update(5, detections([]))
    with pytest.raises(ValueError, match="in order"):
        tracker.update(5, detections([]))
    d = detections([(np.nan, 5.0), (50.0, 50.0)])
    tracker.update(6, d)
    assert tracker.counters.detections_rejected == 1 and tracker.counters.tracks_born == 1
    with pytest.raises(ConfigurationError, match="confirm_m"):
        TrackerConfig(confirm_m=5, confirm_n=4)


# --- kinds ---------------------------------------------------------------------------------------

def test_a_stationary_source_is_slow_and_never_alertable():
    tracker = Tracker(TrackerConfig(), SHAPE)
    rng = np.random.default_rng(1)
    for i in range(20):
        r = tracker.update(i, detections([(120 + rng.normal(0, 0.05), 80 + rng.normal(0, 0.05))]))
    report = r.confirmed[0]
    assert report.kind == TrackKind.SLOW and Evidence.SLOW in report.kind_evidence and not report.alertable


@pytest.mark.parametrize("table", [None, tracking_ref.TrackTable], ids=["kernel", "twin"])
def test_a_source_whose_detections_wander_is_not_alerted_as_a_mover_at_its_fourth(table):
    """A learned source's residual peak wanders 1-3 px with the platform's jitter (one-off dumps of
    development scenes). Reference, worked by hand (jitter_px 0, Cramer-Rao sigma 0.1 px): x = 0, 0.8,
    0.4, 1.2 at frames 0-3 fit 0.32 px/frame with a sigma of 0.1 / sqrt(5) = 0.0447, so it passed
    0.32 - 2 x 0.0447 > 0.15. Its residuals (-0.12, 0.36, -0.36, 0.12) are 7.2 times what the bounds
    allow (0.288 against 0.04; capped at 4: the sigma doubles), and 0.32 - 2 x 0.0894 < 0.15. A target
    on a line with the same bounds still passes at its fourth."""
    config = TrackerConfig(jitter_px=0.0)
    wander = Tracker(config, SHAPE, table=table)
    line = Tracker(config, SHAPE, table=table)
    for i, dx in enumerate((0.0, 0.8, 0.4, 1.2)):
        r = wander.update(i, detections([(120.0 + dx, 80.0)]))
        s = line.update(i, detections([(120.0 + 0.8 * i, 80.0)]))
    report = r.confirmed[0]
    assert report.hits == 4 and report.speed == pytest.approx(0.32, abs=1e-5)
    assert report.speed_sigma == pytest.approx(2 * 0.1 / math.sqrt(5), rel=1e-6)
    assert not report.alertable and report.kind == TrackKind.UNCLASSIFIED
    moving = s.confirmed[0]
    assert moving.speed_sigma == pytest.approx(0.1 / math.sqrt(5), rel=1e-6) and moving.alertable


def test_kinds_judge_speed_over_the_ground_and_across_the_sensor():
    # the platform drifts and jitters: the ground crosses the sensor at (1.2, -0.7) px/frame plus 0.3 px
    # rms of jitter, which the registration measures (scene_offset). A source fixed on the ground (a
    # fire, a cloud rim) crosses with it, a hot pixel stays put on the sensor: both are slow. A target
    # flying across the drift at 1 px/frame over the ground is alerted
    drift = np.array([1.2, -0.7])
    rng = np.random.default_rng(4)
    tracker = Tracker(TrackerConfig(), SHAPE)
    blind = Tracker(TrackerConfig(), SHAPE)   # the same detections, told nothing of the platform
    for i in range(20):
        ground = drift * i + rng.normal(0, 0.3, 2)   # how far the ground has moved across the sensor
        noise = rng.normal(0, 0.05, (3, 2))
        d = detections([(40 + ground[0] + noise[0, 0], 150 + ground[1] + noise[0, 1]),
                        (120 + ground[0] + noise[1, 0], 60 + ground[1] + i + noise[1, 1]),
                        (200 + noise[2, 0], 200 + noise[2, 1])])
        r = tracker.update(i, d, scene_offset=(-ground[0], -ground[1]))
        b = blind.update(i, d)
    fixed, flier, hot = sorted(r.confirmed, key=lambda t: t.state[0])
    assert fixed.kind == TrackKind.SLOW and not fixed.alertable
    assert hot.kind == TrackKind.SLOW and not hot.alertable
    assert flier.kind != TrackKind.SLOW and flier.alertable
    assert fixed.state[2] == pytest.approx(drift[0], abs=0.2)  # reported in sensor pixels
    blind_fixed, _, _ = sorted(b.confirmed, key=lambda t: t.state[0])
    assert blind_fixed.alertable  # told nothing, the ground-fixed source is a mover
    kept = list(tracker._offsets)
    with pytest.raises(ValueError, match="scene_offset"):
        tracker.update(20, detections([]), scene_offset=(math.nan, 0.0))
    with pytest.raises(ValueError, match="in order"):   # a frame out of order leaves no offset behind
        tracker.update(19, detections([]), scene_offset=(0.0, 0.0))
    assert list(tracker._offsets) == kept and len(kept) == TrackerConfig().history_frames


def test_tracks_kept_on_the_ground_are_not_thrown_about_by_jitter():
    # reference: the truth the detections are made from.  A target flies 0.3 px/frame over the ground
    # while the platform jitters 1 px rms per axis, which the registration measures (scene_offset).
    # Kept on the ground, the track's speed is the target's own to a few hundredths and its reports
    # sit on the detections, in sensor pixels; kept in sensor pixels, the same detections give a
    # velocity off by most of a pixel a frame (on seeds 0-5: 0.4-1.0 px/frame, one kind BOOST)
    rng = np.random.default_rng(6)
    truth_v = np.array([0.3, 0.0])
    on_ground, blind = Tracker(TrackerConfig(), SHAPE), Tracker(TrackerConfig(), SHAPE)
    errors = []
    for i in range(30):
        jitter = rng.normal(0, 1.0, 2)
        where = np.array([100.0, 120.0]) + truth_v * i + jitter + rng.normal(0, 0.05, 2)
        d = detections([tuple(where)])
        r = on_ground.update(i, d, scene_offset=tuple(-jitter))
        b = blind.update(i, d)
        if r.confirmed:
            errors.append(np.hypot(*(r.confirmed[0].state[:2] - where)))
    track, = r.confirmed
    # the velocity reported across the sensor adds the ground's apparent motion, itself a slope fitted
    # to jittered offsets (here ~0.05 px/frame off); the speed over the ground has no such term
    assert np.hypot(*(track.state[2:] - truth_v)) < 0.12
    assert track.speed == pytest.approx(0.3, abs=0.06) and track.alertable
    assert max(errors) < 0.3  # reports in this frame's sensor pixels
    blind_v = [t.state[2:] for t in b.confirmed]
    assert not blind_v or min(np.hypot(*(v - truth_v)) for v in blind_v) > 0.3


def test_a_brightening_target_is_boost_and_a_turning_steady_one_is_glide():
    rng = np.random.default_rng(2)
    boost = Tracker(TrackerConfig(), SHAPE)
    for i in range(20):
        r = boost.update(i, detections([(40 + 1.5 * i + rng.normal(0, 0.1), 60 + rng.normal(0, 0.1),
                                         1000 * math.exp(0.05 * i) * (1 + rng.normal(0, 0.03)))]))
    b = r.confirmed[0]
    assert b.kind == TrackKind.BOOST and Evidence.BRIGHTENING in b.kind_evidence
    assert b.trend == pytest.approx(0.05, abs=0.01)
    glide = Tracker(TrackerConfig(), SHAPE)
    turn, speed, heading = 0.08, 3.0, 0.0
    x, y = 60.0, 60.0
    for i in range(24):
        r = glide.update(i, detections([(x + rng.normal(0, 0.1), y + rng.normal(0, 0.1),
                                         1000 * (1 + rng.normal(0, 0.03)))]))
        x, y = x + speed * math.cos(heading), y + speed * math.sin(heading)
        heading += turn
    g = r.confirmed[0]
    assert g.kind == TrackKind.GLIDE
    assert {Evidence.FAST, Evidence.MANOEUVRING, Evidence.STEADY} <= set(Evidence(g.kind_evidence))
    assert abs(g.accel_across) == pytest.approx(speed * 2 * math.sin(turn / 2), rel=0.35)


# --- alerts ----------------------------------------------------------------------------------------

def test_alerts_open_update_and_close_and_survive_the_wire():
    config = TrackerConfig(model="cv", alert_update_frames=5, delete_misses=2)
    publisher = AlertPublisher(config, SHAPE, locate=lambda x, y, t: (x / 10, -y / 10))
    sent = []
    for i in range(15):
        points = [(50 + 2 * i, 60)] if i < 12 else []
        sent += [(i, a) for a in publisher.frame(i, i.to_bytes(6, "big"), 1e9 + i, detections(points))]
    frames = [i for i, _ in sent]
    kinds = [a.end for _, a in sent]
    # confirmed at the third detection (frame 2), alerted from the fourth (alert_min_hits)
    assert frames[0] == 3 and kinds[-1] == TrackEnd.LOST and kinds[:-1] == [TrackEnd.OPEN] * (len(sent) - 1)
    assert [a.update for _, a in sent] == list(range(len(sent)))
    sooner = AlertPublisher(replace(config, alert_min_hits=3), SHAPE)
    assert [i for i in range(4) if sooner.frame(i, bytes(6), None, detections([(50 + 2 * i, 60)]))] == [2]
    first = sent[0][1]
    assert first.first_index == 0 and first.first_time == (0).to_bytes(6, "big")
    assert first.lat == pytest.approx(first.x / 10, abs=1e-6) and first.lon == pytest.approx(-first.y / 10)
    for _, alert in sent:
        back = AlertUpdate.unpack(alert.pack(), 6, alert.subtype)
        assert back.track_id == alert.track_id and back.kind == alert.kind and back.end == alert.end
        assert back.x == pytest.approx(alert.x, rel=1e-6) and back.lat == alert.lat
        assert np.allclose(back.covariance_matrix(), back.covariance_matrix().T)


def test_a_coasting_track_sends_no_update_until_it_is_seen_again_or_lost():
    # regression: a target leaving the view had its periodic update fall on a frame the track
    # coasted through, and the ground was told of a target where nothing was
    config = TrackerConfig(model="cv", alert_update_frames=5, delete_misses=4)
    publisher = AlertPublisher(config, SHAPE)
    sent = {}
    for i in range(20):
        seen = i < 8 or i >= 10      # two frames without a detection, across the update due at 8
        points = [(50 + 2 * i, 60)] if seen else []
        for alert in publisher.frame(i, bytes(6), None, detections(points)):
            sent.setdefault(i, []).append(alert)
    assert sorted(sent) == [3, 10, 15]      # opened at 3; due at 8, sent when seen again
    assert all(a.end == TrackEnd.OPEN for alerts in sent.values() for a in alerts)
    gone = AlertPublisher(config, SHAPE)
    ends = [(i, a.end) for i in range(20)
            for a in gone.frame(i, bytes(6), None, detections([(50 + 2 * i, 60)] if i < 7 else []))]
    assert ends == [(3, TrackEnd.OPEN), (10, TrackEnd.LOST)]   # no update at 8: lost at the fourth miss


def test_an_alert_product_with_a_wrong_end_for_its_subtype_is_refused():
    publisher = AlertPublisher(TrackerConfig(model="cv"), SHAPE)
    alerts = [a for i in range(4) for a in publisher.frame(i, bytes(6), None, detections([(50 + i, 50)]))]
    data = alerts[0].pack()
    with pytest.raises(ValueError, match="subtype 2"):
        AlertUpdate.unpack(data, 6, subtype=2)
    assert alerts[0].lat is None


def faint(points, snr=4.5):
    """Faint detection records (below the detector's k_sigma) at (x, y) points."""
    d = detections(points)
    d["snr"] = snr
    return d


def test_a_faint_detection_continues_a_track_but_starts_none_and_does_not_count_towards_an_alert():
    config = TrackerConfig(model="cv", delete_misses=2)
    # faint detections alone, frame after frame: no track is born of them
    alone = Tracker(config, SHAPE)
    for i in range(6):
        result = alone.update(i, detections([]), faint=faint([(50 + 2 * i, 60)]))
        assert not result.confirmed and not result.faint_associations
    assert alone.counters.tracks_born == 0 and alone.counters.faint_detections == 6
    # a mover seen at the threshold on frames 0-2 and 5-9 only, faint between: the faint
    # detections keep its track (without them it is lost after two misses), they never take
    # the place of a detection, and its alert waits for the fourth detection that is not faint
    publisher = AlertPublisher(config, SHAPE)
    bare = AlertPublisher(config, SHAPE)
    opened, ids, bare_ids = [], set(), set()
    for i in range(10):
        at = (50 + 2 * i, 60)
        strong = detections([at] if i not in (3, 4) else [])
        weak = faint([at] if i in (3, 4) else [(at[0] + 40, 90)])   # or a faint one far from any track
        for alert in publisher.frame(i, bytes(6), None, strong, faint=weak):
            if alert.update == 0:
                opened.append(i)
        ids |= {r.track_id for r in publisher.confirmed}
        bare.frame(i, bytes(6), None, strong)
        bare_ids |= {r.track_id for r in bare.confirmed}
        assert publisher.tracker.track_count == 1    # the far faint ones started nothing
    assert len(ids) == 1 and len(bare_ids) == 2      # kept whole, against lost and born again
    assert opened == [5]                             # strong detections 0, 1, 2 and 5
    assert publisher.tracker.counters.faint_used == 2
    # a frame with both: the track takes its detection, and the faint one nearby is left
    both = Tracker(config, SHAPE)
    for i in range(3):
        both.update(i, detections([(50 + 2 * i, 60)]))
    result = both.update(3, detections([(56, 60)]), faint=faint([(56.3, 60.2)]))
    assert list(result.associations.values()) == [0] and not result.faint_associations


def test_detections_of_a_detector_not_yet_settled_continue_tracks_but_start_none():
    tracker = Tracker(TrackerConfig(model="cv"), SHAPE)
    for i in range(3):
        assert not tracker.update(i, detections([(50 + 2 * i, 60)]), births=False).confirmed
    assert tracker.counters.tracks_born == 0 and tracker.counters.births_withheld == 3
    for i in range(3, 6):
        tracker.update(i, detections([(50 + 2 * i, 60)]))
    # born at 3, confirmed at 5; a new target seen while births are held starts nothing, the track goes on
    result = tracker.update(6, detections([(62, 60), (150, 150)]), births=False)
    assert [r.hits for r in result.confirmed] == [4] and tracker.counters.tracks_born == 1
    assert tracker.counters.births_withheld == 4
