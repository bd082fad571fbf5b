"""The clutter map (flight.clutter) against rates worked by hand, and the tracker's rule that a track
where false alarms recur needs more detections before it is alerted (tracking.alert_hits)."""
import math
from dataclasses import replace

import numpy as np
import pytest

from flight.alerts import AlertPublisher
from flight.clutter import ClutterMap
from flight.tracking import TrackerConfig, alert_hits
from kestrel.products import DETECTION_DTYPE
from kestrel.settings import ConfigurationError

SHAPE = (256, 256)


def detections(points, sigma=0.1):
    d = np.zeros(len(points), DETECTION_DTYPE)
    for i, (x, y) in enumerate(points):
        d[i]["x"], d[i]["y"] = x, y
        d[i]["sigma_x"] = d[i]["sigma_y"] = sigma
        d[i]["flux"], d[i]["snr"] = 1000.0, 10
    return d


def posterior(count_weight, frames_weight, prior, area, memory):
    """The map's estimate from its definition: gamma prior of mean `prior` worth `memory` frames."""
    return (count_weight + prior * area * memory) / ((frames_weight + memory) * area)


def test_the_map_is_the_posterior_mean_of_the_rate_and_decays_as_its_memory_says():
    memory, prior, cell = 16.0, 1e-4, 4.0
    area = 9 * cell**2
    keep = 1 - 1 / memory
    m = ClutterMap(cell, memory, prior)
    assert m.density(10.0, 10.0, 0) == prior  # nothing seen yet: the prior
    for frame in range(200):  # one detection a frame in the cell of (10, 10), two cells off (30, 30)
        m.add(np.array([[9.5, 9.0], [30.0, 30.0]]), frame)
    # after many frames the average is the rate, 1 a frame, worth `memory` frames of weight
    frames = 200
    want = posterior(memory * (1 - keep**frames), memory * (1 - keep**frames), prior, area, memory)
    assert m.density(10.0, 10.0, 199) == pytest.approx(want, rel=1e-12)
    assert want == pytest.approx((1 / area + prior) / 2, rel=1e-3)  # halfway to the prior, as documented
    # a neighbour cell sees it (3 x 3), two cells away does not
    assert m.density(10.0 + cell, 10.0, 199) == pytest.approx(want, rel=1e-12)
    assert m.density(10.0 + 2 * cell, 10.0 - 2 * cell, 199) == pytest.approx(
        posterior(0.0, memory * (1 - keep**frames), prior, area, memory), rel=1e-12)
    # 100 quiet frames later (no add: the decay is lazy) the average has fallen by keep**100
    later = posterior(memory * (1 - keep**frames) * keep**100, memory * (1 - keep**300), prior, area, memory)
    assert m.density(10.0, 10.0, 299) == pytest.approx(later, rel=1e-12)


def test_one_stray_detection_costs_a_track_one_detection_more_and_its_own_birth_nothing():
    # worked by hand: one detection at frame 100, read at 103 in a map begun at frame 0 (memory 64,
    # cells 4 px: 144 px^2 around): (64 k^3 / 64 + 1e-5 144 64) / ((64 (1 - k^104) + 64) 144), k = 63/64
    m = ClutterMap(4.0, 64.0, 1e-5)
    for frame in range(100):
        m.add(np.empty((0, 2)), frame)
    m.add(np.array([[50.0, 50.0]]), 100)
    k = 63 / 64
    one = m.density(50.0, 50.0, 103)
    assert one == pytest.approx((k**3 + 1e-5 * 144 * 64) / ((64 * (1 - k**104) + 64) * 144), rel=1e-12)
    assert alert_hits(TrackerConfig(clutter_cell=4.0, clutter_memory=64.0), one) == 5
    assert m.density(50.0, 50.0, 103, own=(50.0, 50.0, 100)) == pytest.approx(
        m.density(500.0, 500.0, 103), rel=1e-12)   # its own birth taken out: as where nothing fell
    assert alert_hits(TrackerConfig(), m.density(500.0, 500.0, 103)) == 4
    assert m.density(50.0, 50.0, 103, own=(90.0, 90.0, 100)) == one   # a birth elsewhere is not taken out


def test_cells_gone_quiet_are_dropped_and_bad_points_are_skipped():
    m = ClutterMap(4.0, 8.0, 1e-5)
    m.add(np.array([[1.0, 1.0], [np.nan, 3.0], [np.inf, 1.0]]), 0)
    assert len(m) == 1
    for frame in range(1, 80):
        m.add(np.array([[200.0, 200.0]]), frame)
    assert len(m) == 1  # the first cell fell below a hundredth of one detection and went
    shortest = ClutterMap(4.0, 1.0, 1e-5)   # memory 1: each frame forgets the last
    for frame in range(5):
        shortest.add(np.array([[1.0, 1.0]]) if frame != 3 else np.empty((0, 2)), frame)
        assert shortest.density(1.0, 1.0, frame) == pytest.approx(((frame != 3) + 1e-5 * 144) / (2 * 144))
    with pytest.raises(ValueError, match="cell_px > 0"):
        ClutterMap(0.0, 8.0, 1e-5)
    with pytest.raises(ValueError, match="memory >= 1"):
        ClutterMap(4.0, 0.5, 1e-5)
    with pytest.raises(ConfigurationError, match="clutter_cell"):
        TrackerConfig(clutter_cell=0.0)
    with pytest.raises(ConfigurationError, match="clutter_memory"):
        TrackerConfig(clutter_memory=0.5)
    assert TrackerConfig(clutter_memory=0).clutter_memory == 0   # no map


def test_alert_hits_scale_with_the_log_of_the_clutter_in_the_gate():
    c = TrackerConfig()
    area = math.pi * (c.gate_sigma * c.jitter_px) ** 2
    # worked by hand: 4 ln(1e-5 A) / ln(1e-3 A) with A = pi (3.5 x 0.3)^2 = 3.4636 px^2 -> 7.25
    assert area == pytest.approx(3.4636, abs=1e-4)
    assert alert_hits(c, 1e-3) == 7
    assert alert_hits(c, 0.0) == alert_hits(c, c.clutter_density) == c.alert_min_hits
    needs = [alert_hits(c, d) for d in np.logspace(-6, 1, 50)]
    assert needs == sorted(needs) and needs[-1] == c.history_frames


def first_alert_on(publisher, frames, first_frame, spot=None, seed=3):
    """A target at 1 px/frame along y = 100 from x = 100 from frame `first_frame`; with `spot` (x, y),
    clutter there: four detections a frame scattered within 2 px of it, beyond the target's gate.
    Returns (frame of the target's first alert, its report then)."""
    rng = np.random.default_rng(seed)
    for i in range(frames):
        points = [(spot[0] + dx, spot[1] + dy) for dx, dy in rng.uniform(-2, 2, (4, 2))] if spot else []
        if i >= first_frame:
            points.append((100.0 + (i - first_frame), 100.0))
        for alert in publisher.frame(i, bytes(6), None, detections(points)):
            if alert.update == 0 and abs(alert.y - 100.0) < 0.5:
                return i, next(r for r in publisher.confirmed if r.track_id == alert.track_id)
    return None, None


def test_a_target_where_false_alarms_recur_needs_more_detections_before_its_alert():
    config = TrackerConfig(model="cv")
    first = 60
    # away from any clutter: alerted at its fourth detection
    clean, report = first_alert_on(AlertPublisher(config, SHAPE), 90, first)
    assert clean == first + config.alert_min_hits - 1 and report.alert_hits == config.alert_min_hits
    # born 5 px from a spot of recurring false alarms: the map holds it, and the alert waits for more
    late, report = first_alert_on(AlertPublisher(config, SHAPE), 90, first, spot=(101.0, 105.0))
    assert report.first_index == first
    assert report.alert_hits > config.alert_min_hits
    assert report.alert_hits == alert_hits(config, report.clutter_density)
    assert late == first + report.alert_hits - 1
    # the same without the map: as in clear sky
    off, _ = first_alert_on(AlertPublisher(replace(config, clutter_memory=0), SHAPE), 90, first,
                            spot=(101.0, 105.0))
    assert off == clean
