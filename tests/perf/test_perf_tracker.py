"""Tracker speed at 10 false alarms per frame against Stone Soup running the same model on the same
detections: constant velocity, the detection's Cramer-Rao sigma plus jitter as measurement noise, Mahalanobis
gate with the gate as the miss cost, GNN (Stone Soup: GNNWith2DAssignment), the same M-of-N confirmation,
deletion and births (the harness below applies our rules to Stone Soup's tracks). The associations are
checked equal, frame by frame, before anything is timed."""
from datetime import datetime, timedelta

import numpy as np
import pytest

from flight.tracking import Tracker, TrackerConfig
from flight.tracking_ref import TrackTable as NumpyTwin
from kestrel.products import DETECTION_DTYPE

from .timing import alternated_medians

pytestmark = pytest.mark.perf
SIZE = 1024


def synthetic(frames=120, false_alarms=10, targets=6, seed=0):
    """Straight targets with 0.3 px jitter, and uniform false alarms: detection records per frame."""
    rng = np.random.default_rng(seed)
    pos = rng.uniform(100, SIZE - 100, (targets, 2))
    vel = rng.uniform(-3, 3, (targets, 2))
    out = []
    for i in range(frames):
        d = np.zeros(targets + false_alarms, DETECTION_DTYPE)
        p = np.concatenate([pos + vel * i + rng.normal(0, 0.3, (targets, 2)),
                            rng.uniform(5, SIZE - 5, (false_alarms, 2))])
        d["x"], d["y"] = p[:, 0], p[:, 1]
        d["sigma_x"] = d["sigma_y"] = rng.uniform(0.05, 0.2, len(d))
        d["flux"], d["snr"] = 1000, 10
        out.append(d)
    return out


def ours(frames, config, table=None):
    tracker = Tracker(config, (SIZE, SIZE), table=table)
    associations = []
    for i, d in enumerate(frames):
        result = tracker.update(i, d)
        associations.append({(tid, det) for tid, det in result.associations.items()})
    return associations


def stone_soup(frames, config):
    """Stone Soup's predictor, updater, hypothesiser and GNN; our track management rules around them."""
    from stonesoup.dataassociator.neighbour import GNNWith2DAssignment
    from stonesoup.hypothesiser.distance import DistanceHypothesiser
    from stonesoup.measures import Mahalanobis
    from stonesoup.models.measurement.linear import LinearGaussian
    from stonesoup.models.transition.linear import CombinedLinearGaussianTransitionModel, ConstantVelocity
    from stonesoup.predictor.kalman import KalmanPredictor
    from stonesoup.types.detection import Detection
    from stonesoup.types.state import GaussianState
    from stonesoup.types.track import Track
    from stonesoup.updater.kalman import KalmanUpdater

    c = config
    transition = CombinedLinearGaussianTransitionModel([ConstantVelocity(c.process_noise)] * 2)
    predictor = KalmanPredictor(transition)
    updater = KalmanUpdater(measurement_model=None)
    associator = GNNWith2DAssignment(DistanceHypothesiser(predictor, updater, Mahalanobis(), missed_distance=c.gate_sigma))
    start = datetime(2026, 1, 1)
    tracks = {}          # track -> [id, window, age, misses, confirmed]
    next_id = 1
    mask = (1 << c.confirm_n) - 1
    associations = []
    for i, d in enumerate(frames):
        when = start + timedelta(seconds=i)
        rx = np.maximum(d["sigma_x"].astype(float) ** 2 + c.jitter_px ** 2, 1e-4)
        ry = np.maximum(d["sigma_y"].astype(float) ** 2 + c.jitter_px ** 2, 1e-4)
        detections = [Detection(np.array([[float(d["x"][k])], [float(d["y"][k])]]), timestamp=when,
                                measurement_model=LinearGaussian(4, (0, 2), np.diag([rx[k], ry[k]])),
                                metadata={"index": k}) for k in range(len(d))]
        hypotheses = associator.associate(set(tracks), set(detections), when) if tracks else {}
        used = set()
        frame = set()
        for track, hypothesis in hypotheses.items():
            m = tracks[track]
            if hypothesis.measurement is not None and hypothesis:
                track.append(updater.update(hypothesis))
                k = hypothesis.measurement.metadata["index"]
                used.add(k)
                frame.add((m[0], k))
                m[1], m[3] = ((m[1] << 1) | 1) & 0xFFFF, 0
            else:
                track.append(hypothesis.prediction)
                m[1], m[3] = (m[1] << 1) & 0xFFFF, m[3] + 1
            m[2] += 1
        for track in list(tracks):
            m = tracks[track]
            hits = bin(m[1] & mask).count("1")
            newly = not m[4] and hits >= c.confirm_m
            m[4] = m[4] or newly
            x = track.state.state_vector.ravel()
            P = track.state.covar
            hopeless = not m[4] and min(m[2], c.confirm_n) - hits > c.confirm_n - c.confirm_m
            lost = m[4] and not newly and (m[3] >= c.delete_misses or max(P[0, 0], P[2, 2]) > c.max_position_sigma ** 2)
            outside = not (-0.5 <= x[0] <= SIZE - 0.5 and -0.5 <= x[2] <= SIZE - 0.5)
            if hopeless or lost or outside:
                del tracks[track]
        b = c.border_px
        for k in range(len(d)):
            if k in used or not (b <= d["x"][k] <= SIZE - 1 - b and b <= d["y"][k] <= SIZE - 1 - b):
                continue
            v2 = c.initial_speed_sigma ** 2
            state = GaussianState(np.array([[float(d["x"][k])], [0.0], [float(d["y"][k])], [0.0]]),
                                  np.diag([rx[k], v2, ry[k], v2]), timestamp=when)
            tracks[Track([state])] = [next_id, 1, 1, 0, c.confirm_m <= 1]
            next_id += 1
        associations.append(frame)
    return associations


def test_tracker_speed_against_stone_soup():
    pytest.importorskip("stonesoup")
    config = TrackerConfig(model="cv")
    frames = synthetic()
    ours_assoc, theirs_assoc = ours(frames, config), stone_soup(frames, config)
    differing = sum(a != b for a, b in zip(ours_assoc, theirs_assoc))
    assert differing == 0, f"associations differ in {differing} of {len(frames)} frames"
    assert ours(frames, config, table=NumpyTwin) == ours_assoc
    assert sum(len(a) for a in ours_assoc) > 6 * len(frames) * 0.9
    imm = TrackerConfig(model="imm")
    t_ours, t_imm, t_twin, t_twin_imm, t_theirs = alternated_medians(
        lambda: ours(frames, config), lambda: ours(frames, imm), lambda: ours(frames, config, NumpyTwin),
        lambda: ours(frames, imm, NumpyTwin), lambda: stone_soup(frames, config), repeats=5)
    per = 1000 / len(frames)
    print(f"\ntracker, 6 targets + 10 false alarms per frame, {len(frames)} frames, same associations "
          f"(CPU time, medians of 5): ours CV {t_ours * per:.3f} ms/frame, IMM {t_imm * per:.3f} (goal <= 0.3); "
          f"on the numpy twin CV {t_twin * per:.3f}, IMM {t_twin_imm * per:.3f}; Stone Soup CV "
          f"{t_theirs * per:.2f} ms/frame, ratio {t_theirs / t_ours:.0f}x")


def test_tracker_speed_with_faint_detections():
    """The same frames, the targets' detections faint on every third frame, and 20 faint false alarms a frame
    besides: what offering the faint detections (Detector.faint) to the tracks costs, IMM."""
    frames = synthetic()
    strong, faint = [], []
    for i, d in enumerate(frames):
        noise = synthetic(frames=1, false_alarms=20, targets=0, seed=1000 + i)[0]
        noise["snr"] = 4.5
        if i % 3 == 2:
            weak = d[:6].copy()
            weak["snr"] = 4.5
            strong.append(d[6:])
            faint.append(np.concatenate([weak, noise]))
        else:
            strong.append(d)
            faint.append(noise)
    imm = TrackerConfig(model="imm")

    def run(offer):
        tracker = Tracker(imm, (SIZE, SIZE))
        for i in range(len(frames)):
            tracker.update(i, strong[i], faint=faint[i] if offer else None)
        return tracker
    used = run(True).counters.faint_used
    assert used >= 0.9 * 6 * (len(frames) // 3)
    t_with, t_without = alternated_medians(lambda: run(True), lambda: run(False), repeats=5)
    per = 1000 / len(frames)
    print(f"\ntracker IMM, 6 targets (faint every third frame) + 10 false alarms + 20 faint false alarms per "
          f"frame, {len(frames)} frames (CPU time, medians of 5): with the faint detections offered "
          f"{t_with * per:.3f} ms/frame ({used} used), without {t_without * per:.3f} (goal <= 0.3)")
