"""The false-alarm filter's cost per chip: our Cython kernel against its numpy twin and against
onnxruntime running the same forest, measured in the same run.

Run: . .venv/bin/activate && pytest tests/perf/test_perf_classifier.py -m perf -s

The shipped weights (flight/data/classifier.kclf) score 256 candidates of a 1024x1024
simulated cloudy frame (the detector's most per frame), the residual taken 4 frames back.
Two stages are timed: the forest alone on ready feature rows (the stage onnxruntime can do:
the same trees as an ai.onnx.ml TreeEnsembleRegressor, one thread), and features plus forest
(what the flight program runs per frame; numpy twin as the peer). Before anything is timed
the three agree: kernel and twin bit for bit, onnxruntime (float32 thresholds and sums) to
1e-4 on at least 99 % of the chips. CPU time of the calling thread, medians of alternated
repeats (tests/perf/timing.py). The goal is <= 3 us per chip.
"""
import numpy as np
import pytest

from flight.classifier import FalseAlarmFilter, chip_centres, load_weights, noise_scale
from flight.classifier_ref import chip_features_ref, forest_ref, score_ref
from hil.scene import SceneConfig, SceneSimulator
from kestrel.products import DETECTION_DTYPE
from tests.perf.timing import alternated_medians

pytestmark = pytest.mark.perf
SIZE = 1024
CHIPS = 256
REPEATS = 31


def candidates(rng):
    d = np.zeros(CHIPS, DETECTION_DTYPE)
    d["x"], d["y"] = rng.uniform(0, SIZE - 1, CHIPS), rng.uniform(0, SIZE - 1, CHIPS)
    d["snr"] = rng.uniform(5, 30, CHIPS)
    d["flux"] = d["snr"] * rng.uniform(100, 300, CHIPS)
    return d


def onnx_session(w):
    """The forest as an ONNX TreeEnsembleRegressor (ai.onnx.ml), run by onnxruntime on one thread."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper

    tree_of = np.zeros(len(w.feature), np.int64)
    for t, (start, stop) in enumerate(zip(w.roots, list(w.roots[1:]) + [len(w.feature)])):
        tree_of[start:stop] = t
    local = np.arange(len(w.feature)) - w.roots[tree_of]
    leaf = w.feature < 0
    node = helper.make_node(
        "TreeEnsembleRegressor", ["x"], ["y"], domain="ai.onnx.ml", n_targets=1,
        nodes_treeids=tree_of.tolist(), nodes_nodeids=local.tolist(),
        nodes_featureids=np.where(leaf, 0, w.feature).tolist(),
        nodes_values=np.where(leaf, 0, w.threshold).astype(np.float32).tolist(),
        nodes_modes=["LEAF" if f else "BRANCH_LEQ" for f in leaf],
        nodes_truenodeids=np.where(leaf, 0, w.left - w.roots[tree_of]).tolist(),
        nodes_falsenodeids=np.where(leaf, 0, w.right - w.roots[tree_of]).tolist(),
        target_ids=[0] * int(leaf.sum()), target_nodeids=local[leaf].tolist(),
        target_treeids=tree_of[leaf].tolist(), target_weights=w.value[leaf].astype(np.float32).tolist(),
        base_values=[float(w.base)], aggregate_function="SUM")
    graph = helper.make_graph([node], "forest",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, w.n_features])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def test_classifier_cost_per_chip_against_numpy_and_onnxruntime():
    w = load_weights()
    sim = SceneSimulator(SceneConfig(width=SIZE, height=SIZE, kind="cloudy", seed=11))
    frame, past = sim.frame(w.lag)[0], sim.frame(0)[0]
    d = candidates(np.random.default_rng(0))
    filt = FalseAlarmFilter(w, (SIZE, SIZE))
    x = filt.features(frame, past, d)
    cx, cy = chip_centres(d, (SIZE, SIZE), w.radius)
    scale = noise_scale(d)

    def twin_features():
        return chip_features_ref(frame, past, cx, cy, scale, d["snr"], w.radius)

    def twin_forest():
        return forest_ref(x, w.feature, w.threshold, w.left, w.right, w.value, w.roots, w.base)

    np.testing.assert_array_equal(twin_features(), x, strict=True)
    raw = filt.decision(x)
    np.testing.assert_array_equal(twin_forest(), raw, strict=True)
    session = onnx_session(w)
    theirs = session.run(None, {"x": x})[0][:, 0]
    assert np.mean(np.abs(theirs - raw) < 1e-4) >= 0.99

    forest_ours, forest_twin, forest_ort = alternated_medians(
        lambda: filt.decision(x), twin_forest, lambda: session.run(None, {"x": x}), repeats=REPEATS)
    whole_ours, whole_twin = alternated_medians(
        lambda: filt.score(frame, past, d), lambda: score_ref(twin_features(), w), repeats=REPEATS)
    us = lambda s: s / CHIPS * 1e6     # noqa: E731
    print(f"\nfalse-alarm filter, {len(w.roots)} trees, {len(w.feature)} nodes, {CHIPS} chips of a "
          f"{SIZE}x{SIZE} frame, us per chip (CPU time, median of {REPEATS}):")
    print(f"  forest: kernel {us(forest_ours):.3f}, numpy twin {us(forest_twin):.3f} "
          f"({forest_twin / forest_ours:.1f}x), onnxruntime 1 thread {us(forest_ort):.3f} "
          f"({forest_ort / forest_ours:.2f}x)")
    print(f"  features + forest: kernel {us(whole_ours):.3f}, numpy twin {us(whole_twin):.3f} "
          f"({whole_twin / whole_ours:.1f}x)")
    assert us(whole_ours) <= 3.0
    assert forest_ours < forest_twin


def test_the_filters_cost_per_1024_frame_beside_the_detectors():
    """What the executive adds per frame (the frame copied into the history ring, chips, forest, for the
    detector's most candidates) against the detector's own pass over the same frames, same run."""
    from flight.classifier import FrameHistory
    from flight.detection import Detector, DetectorConfig

    w = load_weights()
    sim = SceneSimulator(SceneConfig(width=SIZE, height=SIZE, kind="cloudy", seed=11))
    frames = [sim.frame(i)[0] for i in range(w.lag + 4)]
    detector = Detector(DetectorConfig(), (SIZE, SIZE), sim.calibration_bad_pixels())
    for f in frames:
        found = detector.process(f)
    dets = candidates(np.random.default_rng(1))       # the worst case: the detector's full list of 256
    filt = FalseAlarmFilter(w, (SIZE, SIZE))
    history = FrameHistory((SIZE, SIZE), w.lag)
    for f in frames:
        history.push(f)
    state = {"i": 0}

    def filter_frame():
        state["i"] += 1
        current = history.push(frames[state["i"] % len(frames)])
        return filt.score(current, history.past(), dets)

    def detect_frame():
        return detector.process(frames[state["i"] % len(frames)])

    def filter_found():
        current = history.push(frames[state["i"] % len(frames)])
        return filt.score(current, history.past(), found)

    ours, typical, detect = alternated_medians(filter_frame, filter_found, detect_frame, repeats=REPEATS)
    print(f"\nper {SIZE}x{SIZE} frame: filter (history copy, chips, forest) {ours * 1e3:.3f} ms with "
          f"{len(dets)} candidates, {typical * 1e3:.3f} ms with the scene's {len(found)}; detector "
          f"{detect * 1e3:.2f} ms: the filter adds {ours / detect:.1%} at most, {typical / detect:.1%} here")
    assert ours < 0.5 * detect
