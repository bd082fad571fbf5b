"""The track scorer: GOSPA against Stone Soup's, and the alert picture the ground would hold."""
from datetime import datetime

import numpy as np
import pytest

from hil.scoring import PICTURE_DTYPE, TrackScore, alert_picture, gospa


def test_gospa_matches_stone_soup():
    pytest.importorskip("stonesoup")
    from stonesoup.metricgenerator.ospametric import GOSPAMetric
    from stonesoup.types.state import State

    rng = np.random.default_rng(3)
    when = datetime(2026, 1, 1)
    metric = GOSPAMetric(p=2, c=10.0)
    for _ in range(40):
        est = rng.uniform(0, 30, (rng.integers(1, 6), 2))
        truth = rng.uniform(0, 30, (rng.integers(1, 6), 2))
        ours, _, missed, false = gospa(est, truth, 10.0)
        theirs, _ = metric.compute_gospa_metric([State(p.reshape(2, 1), timestamp=when) for p in est],
                                                [State(p.reshape(2, 1), timestamp=when) for p in truth])
        assert ours == pytest.approx(theirs.value["distance"], abs=1e-9)
        assert missed - false == len(truth) - len(est)


def test_the_picture_carries_alerts_forward_and_drops_them_when_closed():
    at = alert_picture([
        dict(track_id=7, frame_index=10, x=5.0, y=5.0, vx=1.0, vy=-0.5, ended=None),
        dict(track_id=7, frame_index=14, x=20.0, y=1.0, vx=0.0, vy=0.0, ended="LOST"),
    ])
    rows, fresh = at(12)
    assert rows["x"].tolist() == [7.0] and rows["y"].tolist() == [4.0] and fresh == set()
    assert at(10)[1] == {7} and at(14)[1] == set()      # a closing update is not a sighting
    assert len(at(9)[0]) == 0 and len(at(15)[0]) == 0


def test_false_tracks_near_a_target_are_told_from_clutter():
    # three tracks over ten frames on one target at (50, 50): track 1 on it, track 2 a second track
    # 3 px beside it (false, but near), track 3 on empty sky 40 px away (false, clutter)
    truth = np.array([(50.0, 50.0, 0, 8.0)], dtype=[("x", "f8"), ("y", "f8"), ("target", "i8"), ("snr", "f8")])
    score = TrackScore(classes=(8.0,), radius=1.5)
    for i in range(10):
        rows = np.array([(1, 50.2, 50.1), (2, 53.0, 50.0), (3, 90.0, 50.0)], dtype=PICTURE_DTYPE)
        score.add(i, truth, rows, {1, 2, 3})
    summary = score.summary(first_frame=0)
    assert summary["alert_tracks"] == 3
    assert summary["false_alert_tracks"] == 2
    assert summary["false_alert_tracks_near_targets"] == 1
    assert score.nearest[2] == pytest.approx([3.0] * 10) and score.nearest[3] == pytest.approx([40.0] * 10)


def test_first_alert_latency_is_split_by_speed_over_the_ground_for_the_goals_snr():
    # reference: the frames given.  Three targets appear at frame 5: a fast SNR-8 one alerted at
    # frame 7 (2 frames), a slow SNR-8 one never alerted, and a fast SNR-5 one alerted at frame 6,
    # which the SNR >= 8 latency leaves out; the classes come from the speeds given, not the steps
    dtype = [("x", "f8"), ("y", "f8"), ("target", "i8"), ("snr", "f8")]
    score = TrackScore(classes=(5.0, 8.0), radius=1.5, min_visible=3)
    for i in range(5, 12):
        truth = np.array([(10.0 + 3 * i, 10.0, 1, 8.0), (60.0, 60.0, 2, 8.0), (90.0, 10.0 + 3 * i, 3, 5.0)],
                         dtype=dtype)
        rows = []
        if i >= 7:
            rows.append((11, 10.0 + 3 * i, 10.0))
        if i >= 6:
            rows.append((13, 90.0, 10.0 + 3 * i))
        score.add(i, truth, np.array(rows, dtype=PICTURE_DTYPE), {r[0] for r in rows},
                  speeds={1: 3.0, 2: 0.1, 3: 3.0})
    summary = score.summary(first_frame=0)
    assert summary["frames_to_first_alert_by_speed"] == {"fast >=2": [2], "slow <0.5": [float("inf")]}
    assert summary["frames_to_first_alert_from_moving_by_speed"] == {"fast >=2": [2], "slow <0.5": [float("inf")]}
    assert summary["frames_to_first_alert"] == {"5": [1], "8": [2, float("inf")]}
    assert summary["confirmed_by_speed"] == {"fast >=2": [2, 2], "slow <0.5": [0, 1]}


def test_the_moving_clock_starts_when_a_target_moves_at_the_goals_snr():
    # reference: the frames given.  Target 1 holds still at SNR 9 over frames 5-9 and moves from
    # frame 10 (alerted at 12: 7 frames after first visibility, 2 after it moved); target 2 moves from
    # frame 5 but rises from SNR 4 to 8 at frame 8 (alerted at 9: 4 and 1); target 3 is alerted while
    # still, before it moves at frame 9 (0 by the moving clock, never negative)
    dtype = [("x", "f8"), ("y", "f8"), ("target", "i8"), ("snr", "f8")]
    score = TrackScore(classes=(8.0,), radius=1.5, min_visible=3)
    for i in range(5, 16):
        x1 = 20.0 + 3 * max(i - 10, 0)
        truth = np.array([(x1, 20.0, 1, 9.0), (60.0, 10.0 + 3 * i, 2, 8.0 if i >= 8 else 4.0),
                          (100.0, 100.0, 3, 10.0)], dtype=dtype)
        rows = [(11, x1, 20.0)] if i >= 12 else []
        if i >= 9:
            rows.append((12, 60.0, 10.0 + 3 * i))
        if i >= 7:
            rows.append((13, 100.0, 100.0))
        score.add(i, truth, np.array(rows, dtype=PICTURE_DTYPE), {r[0] for r in rows},
                  speeds={1: 3.0 if i >= 10 else 0.0, 2: 3.0, 3: 1.0 if i >= 9 else 0.0})
    summary = score.summary(first_frame=0)
    assert summary["frames_to_first_alert_by_speed"] == {"fast >=2": [4, 7], "0.5-2": [2]}
    assert summary["frames_to_first_alert_from_moving_by_speed"] == {"fast >=2": [1, 2], "0.5-2": [0]}
