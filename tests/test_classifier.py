"""The learned false-alarm filter: its weights file, its kernel against the numpy twin
(flight/classifier_ref.py), its export against scikit-learn's own decision function (the peer that
trained it), reproducible training, and its score feeding the track score without a veto."""
import dataclasses
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flight.classifier import (ClassifierConfig, ClassifierFileError, FalseAlarmFilter, FrameHistory, Weights,
                               chip_centres, features, load_weights, noise_scale)
from flight.classifier_ref import chip_features_ref, forest_ref, score_ref
from flight.kernels import classifier as kernel
from flight.tracking import Tracker, TrackerConfig
from kestrel.products import DETECTION_DTYPE


def random_forest(rng, n_features, trees=5, depth=4, radius=1, lag=2):
    """Random complete trees, nodes numbered breadth-first (children after parents)."""
    roots, feature, threshold, left, right, value = [], [], [], [], [], []
    for _ in range(trees):
        offset = len(feature)
        roots.append(offset)
        d = int(rng.integers(0, depth + 1))
        inner, leaves = 2 ** d - 1, 2 ** d
        for i in range(inner + leaves):
            if i < inner:
                feature.append(int(rng.integers(n_features)))
                threshold.append(float(rng.normal()))
                left.append(offset + 2 * i + 1)
                right.append(offset + 2 * i + 2)
                value.append(0.0)
            else:
                feature.append(-1)
                threshold.append(0.0)
                left.append(-1)
                right.append(-1)
                value.append(float(rng.normal()))
    w = Weights(radius, lag, float(rng.normal()), np.array(roots, np.int32), np.array(feature, np.int32),
                np.array(threshold), np.array(left, np.int32), np.array(right, np.int32), np.array(value))
    w.check()
    return w


def detections_at(points, flux=500.0, snr=10.0):
    d = np.zeros(len(points), DETECTION_DTYPE)
    for i, (x, y) in enumerate(points):
        d[i]["x"], d[i]["y"] = x, y
    d["sigma_x"] = d["sigma_y"] = 0.1
    d["flux"], d["snr"] = flux, snr
    return d


# --- the weights file ------------------------------------------------------------------
def test_weights_round_trip_and_the_shipped_file_loads():
    w = random_forest(np.random.default_rng(1), 19)
    again = Weights.unpack(w.pack())
    for name in ("roots", "feature", "threshold", "left", "right", "value"):
        np.testing.assert_array_equal(getattr(again, name), getattr(w, name), strict=True)
    assert (again.radius, again.lag, again.base) == (w.radius, w.lag, w.base)
    shipped = load_weights()            # package data of flight.data
    assert shipped.n_features == 2 * (2 * shipped.radius + 1) ** 2 + 1 and len(shipped.roots) > 0


@pytest.mark.parametrize("damage, message", [
    (lambda b: b[:10], "too short"),
    (lambda b: b"XXXX" + b[4:], "magic"),
    (lambda b: b[:4] + (2).to_bytes(2, "little") + b[6:], "version 2"),
    (lambda b: b[:6] + (7).to_bytes(2, "little") + b[8:], "layout 7"),
    (lambda b: b[:-9] + bytes([b[-9] ^ 1]) + b[-8:], "CRC"),
    (lambda b: b + b"\0", "octets"),
])
def test_a_damaged_weights_file_is_refused_with_the_reason(damage, message, tmp_path):
    data = random_forest(np.random.default_rng(2), 19).pack()
    path = tmp_path / "w.kclf"
    path.write_bytes(damage(data))
    with pytest.raises(ClassifierFileError, match=message):
        load_weights(path)
    with pytest.raises(ClassifierFileError, match="No such file"):
        load_weights(tmp_path / "missing.kclf")


def test_a_forest_whose_walk_could_loop_or_escape_is_refused():
    w = random_forest(np.random.default_rng(3), 19, trees=1, depth=2)
    looping = dataclasses.replace(w, left=np.where(w.left >= 0, 0, -1).astype(np.int32))
    with pytest.raises(ClassifierFileError, match="child before its parent"):
        Weights.unpack(looping.pack())
    far = dataclasses.replace(w, feature=np.where(w.feature >= 0, 19, -1).astype(np.int32))
    with pytest.raises(ClassifierFileError, match="beyond"):
        Weights.unpack(far.pack())


# --- kernel against the twin ---------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), radius=st.integers(1, 4), n=st.integers(0, 20),
       h=st.integers(9, 40), w=st.integers(9, 40))
def test_chip_features_equal_the_twin_bit_for_bit(seed, radius, n, h, w):
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 2**14, (h, w), dtype=np.uint16)
    past = rng.integers(0, 2**14, (h, w), dtype=np.uint16)
    d = detections_at(rng.uniform(-3, max(h, w) + 3, (n, 2)))
    d["flux"] = rng.uniform(-10, 1e4, n)
    d["snr"] = rng.choice([0.0, np.nan, 3.0, 50.0], n)
    got = features(frame, past, d, radius)
    cx, cy = chip_centres(d, (h, w), radius)
    assert ((cx >= radius) & (cx < w - radius) & (cy >= radius) & (cy < h - radius)).all()
    want = chip_features_ref(frame, past, cx, cy, noise_scale(d), d["snr"], radius)
    np.testing.assert_array_equal(got, want, strict=True)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 50), trees=st.integers(0, 12))
def test_the_forest_kernel_equals_the_twin_bit_for_bit(seed, n, trees):
    rng = np.random.default_rng(seed)
    w = random_forest(rng, 19, trees=trees)
    x = rng.normal(size=(n, 19)).astype(np.float32)
    x[rng.random((n, 19)) < 0.1] = 0.0                       # ties with thresholds of 0.0 take the left branch
    filt = FalseAlarmFilter(w, (9, 9))
    want = forest_ref(x, w.feature, w.threshold, w.left, w.right, w.value, w.roots, w.base)
    np.testing.assert_array_equal(filt.decision(x), want, strict=True)


def test_the_kernel_refuses_wrong_arrays_before_running():
    filt = FalseAlarmFilter(random_forest(np.random.default_rng(4), 19), (9, 9))
    with pytest.raises(ValueError, match="features must be"):
        filt.decision(np.zeros((3, 18), np.float32))
    frame = np.zeros((9, 9), np.uint16)
    with pytest.raises(ValueError, match="uint16"):
        filt.features(frame.astype(np.int32), frame, detections_at([(4, 4)]))
    with pytest.raises(ValueError, match="one shape"):
        filt.features(frame, np.zeros((9, 10), np.uint16), detections_at([(4, 4)]))


# --- training: sklearn is the peer; same seed, same octets ------------------------------------
TINY = dict(seeds=(1, 2), frames=24, size=64, trees=6, depth=2)


def test_training_is_reproducible_and_the_export_equals_sklearn():
    pytest.importorskip("sklearn")
    from hil import train_classifier as tc

    setup = dataclasses.replace(tc.TrainingSetup(), **TINY)
    a, b = tc.train(setup, out=lambda *_: None).pack(), tc.train(setup, out=lambda *_: None).pack()
    assert a == b
    # Our forest, read back from the file, against the fitted model's own decision function.
    from sklearn.ensemble import GradientBoostingClassifier

    x, y, *_ = tc.dataset(setup, setup.seeds, tc.training_detector(setup))
    assert y.any() and (~y).any()
    model = GradientBoostingClassifier(n_estimators=setup.trees, max_depth=setup.depth,
                                       learning_rate=setup.learning_rate, random_state=setup.random_state)
    model.fit(x, y.astype(int))
    w = Weights.unpack(a)
    ours = FalseAlarmFilter(w, (setup.size, setup.size)).decision(x)
    np.testing.assert_allclose(ours, model.decision_function(x), rtol=0, atol=1e-9)
    np.testing.assert_allclose(score_ref(x, w), model.predict_proba(x)[:, 1], rtol=0, atol=1e-9)


def test_seeds_of_the_held_out_family_are_refused():
    from hil import train_classifier as tc
    from hil.scene_family import HELD_OUT_FIRST

    # Only refused, never used: the first held-out seed of the scene family.
    with pytest.raises(ValueError, match="held-out"):
        tc.check_seeds([HELD_OUT_FIRST], development=False)
    with pytest.raises(ValueError, match="development"):
        tc.check_seeds([12000], development=True)
    with pytest.raises(ValueError, match="validation"):
        tc.check_seeds([5001], development=True)


def test_the_shipped_filter_ranks_targets_above_false_alarms_on_a_validation_scene():
    from hil import train_classifier as tc

    w = load_weights()
    x, y, snr, *_ = tc.labelled_detections(5007, 40, 128, 10, w.radius, w.lag,
                                           tc.training_detector(tc.TrainingSetup()))
    score = score_ref(x, w)
    assert y.sum() >= 10 and (~y).sum() >= 10
    assert tc.auc(score, y) > 0.8


def test_auc_is_the_mann_whitney_statistic():
    from hil.train_classifier import auc

    assert auc(np.array([3.0, 2.0, 1.0]), np.array([True, False, False])) == 1.0
    assert auc(np.array([1.0, 1.0]), np.array([True, False])) == 0.5
    assert auc(np.array([1.0, 2.0, 3.0, 0.5]), np.array([True, False, True, False])) == 0.75


# --- on board: history, tracker, executive ---------------------------------------------------------
def test_frame_history_gives_the_frame_lag_pushes_back():
    history = FrameHistory((2, 2), lag=2)
    for i in range(5):
        history.push(np.full((2, 2), i, np.uint16))
        past = history.past()
        assert (past is None) if i < 2 else (past == i - 2).all()


def test_the_filter_moves_the_track_score_by_a_bounded_term_and_never_vetoes():
    config = TrackerConfig(confirm_m=2, confirm_n=3, classifier_weight=2.0)
    reports = {}
    for label, value in (("none", None), ("target", 1.0), ("clutter", 0.0), ("half", 0.5)):
        tracker = Tracker(config, (100, 100))
        for i in range(4):
            d = detections_at([(20 + 2 * i, 30)])
            result = tracker.update(i, d, scores=None if value is None else np.array([value]))
        (report,) = result.confirmed               # confirmed whatever the filter says
        reports[label] = report
    assert reports["none"].classifier_score == 0.0
    assert reports["target"].classifier_score == 1.0 and reports["clutter"].classifier_score == 0.0
    assert reports["target"].score == pytest.approx(reports["none"].score + 2.0)
    assert reports["clutter"].score == pytest.approx(reports["none"].score - 2.0)
    assert reports["half"].score == pytest.approx(reports["none"].score)


def test_the_track_keeps_the_mean_of_its_detections_scores_and_skips_unscored_ones():
    tracker = Tracker(TrackerConfig(confirm_m=2, confirm_n=3), (100, 100))
    for i, s in enumerate([np.nan, 0.2, 0.6, 1.0]):
        result = tracker.update(i, detections_at([(20 + 2 * i, 30), (80, 80 - 3 * i)]), scores=np.array([s, 0.9]))
    by_x = sorted(result.confirmed, key=lambda r: r.state[0])
    assert by_x[0].classifier_score == pytest.approx(0.6)
    with pytest.raises(ValueError, match="one per detection"):
        tracker.update(9, detections_at([(1, 1)]), scores=np.array([0.5, 0.5]))


def test_a_missing_or_corrupt_weights_file_stops_the_start_with_a_clear_error(tmp_path):
    from flight.downlink import Downlink
    from flight.executive import Executive
    from tests.test_flight_to_ground import CapturePort, small_config

    config = small_config()
    bad = tmp_path / "bad.kclf"
    bad.write_bytes(b"KCLF" + bytes(40))
    for path, message in ((tmp_path / "nowhere.kclf", "No such file"), (bad, "version 0")):
        c = dataclasses.replace(config, classifier=ClassifierConfig(weights=str(path)))
        with pytest.raises(ClassifierFileError, match=message):
            Executive(c, Downlink(c.link, CapturePort()), threading.Event())


def test_new_weights_by_the_reload_config_command_and_bad_ones_refused_whole(tmp_path):
    from flight.downlink import Downlink
    from flight.executive import Executive
    from kestrel import services
    from tests.test_flight_to_ground import CapturePort, small_config

    config = small_config()
    shipped = load_weights()
    fresh = random_forest(np.random.default_rng(5), shipped.n_features, radius=shipped.radius, lag=2)
    good, bad = tmp_path / "fresh.kclf", tmp_path / "bad.kclf"
    good.write_bytes(fresh.pack())
    bad.write_bytes(fresh.pack()[:-1])
    files = iter([good, bad])
    executive = Executive(config, Downlink(config.link, CapturePort()), threading.Event(),
                          reload_config=lambda: dataclasses.replace(
                              config, classifier=ClassifierConfig(weights=str(next(files)))))
    assert executive.classifier.weights.pack() == shipped.pack() and executive.frame_history.lag == shipped.lag
    apid = config.uplink.command_apid
    assert executive.commands.handle(services.perform_function("reload_config").tc(apid, 1))
    assert executive.classifier.weights.pack() == good.read_bytes() and executive.frame_history.lag == 2
    # A damaged file: the command fails and the filter in use stays.
    assert not executive.commands.handle(services.perform_function("reload_config").tc(apid, 2))
    assert executive.classifier.weights.pack() == good.read_bytes()
    assert executive.config.classifier.weights == str(good)
    executive.close()


def test_the_executive_scores_detections_once_it_has_the_lagged_frame():
    from flight.downlink import Downlink
    from flight.executive import Executive
    from tests.test_flight_to_ground import CapturePort, small_config

    config = small_config()
    off = Executive(dataclasses.replace(config, classifier=ClassifierConfig(mode="off")),
                    Downlink(config.link, CapturePort()), threading.Event())
    assert off.classifier is None and off.classify(np.zeros((80, 96), np.uint16), detections_at([(5, 5)])) is None
    off.close()
    executive = Executive(config, Downlink(config.link, CapturePort()), threading.Event())
    rng = np.random.default_rng(6)
    frames = [rng.integers(0, 3000, (80, 96), dtype=np.uint16) for _ in range(executive.classifier.lag + 2)]
    d = detections_at([(10, 10), (50, 40)])
    got = [executive.classify(f, d) for f in frames]
    assert all(np.isnan(g).all() for g in got[:executive.classifier.lag])
    lag = executive.classifier.lag
    for i in range(lag, len(frames)):
        x = features(frames[i], frames[i - lag], d, executive.classifier.weights.radius)
        np.testing.assert_allclose(got[i], score_ref(x, executive.classifier.weights), rtol=1e-15)
    executive.close()


def test_the_benchs_track_metrics_run_the_filter_as_the_flight_does():
    from hil.metrics import track_run
    from hil.scene import SceneConfig

    scene = SceneConfig(width=96, height=96, kind="clear", seed=7, n_targets=3, snr_values=(20.0,))
    scores: dict = {}
    score, _ = track_run(scene, 30, classifier_scores=scores)
    assert score.track_frames and set(score.track_frames) <= set(scores)     # every alert track has its score
    assert all(0.0 <= v <= 1.0 for v in scores.values()) and max(scores.values()) > 0.8
