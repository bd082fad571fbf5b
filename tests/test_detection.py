"""Detector tests.

Reference for the kernel: its numpy twin flight/detection_ref.py (stage by
stage and end to end), and scipy.ndimage.label as the peer for connected
components.  Reference for quality: the scene simulator's ground truth.
"""
import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from flight import detection, detection_ref
from flight.detection import DETECTION_DTYPE, Detector, DetectorConfig, SingleFrameDetector
from flight.kernels import detect as kernel
from hil.scene import SceneConfig, SceneSimulator
from hil.scene_family import draw_scene, family_seed
from hil.scoring import match


@st.composite
def frames_with_targets(draw):
    """A noisy uint16 frame with a few Gaussian blobs and some bad pixels."""
    h = draw(st.integers(8, 70))
    w = draw(st.integers(8, 70))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    level = draw(st.floats(0.0, 12000.0))
    noise = draw(st.floats(0.0, 60.0))
    img = level + noise * rng.standard_normal((h, w))
    yy, xx = np.mgrid[:h, :w]
    for _ in range(draw(st.integers(0, 8))):
        x, y = rng.uniform(-2, w + 1), rng.uniform(-2, h + 1)
        s = rng.uniform(0.5, 2.5)
        img += rng.uniform(0, 3000) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * s * s))
    frame = np.clip(np.rint(img), 0, 2**14 - 1).astype(np.uint16)
    bad = rng.random((h, w)) < draw(st.sampled_from([0.0, 0.01, 0.2]))
    config = DetectorConfig(
        mode="single",
        k_sigma=draw(st.floats(2.0, 8.0)),
        tile_size=draw(st.sampled_from([4, 8, 16, 32])),
        min_pixels=draw(st.integers(1, 3)),
        max_detections=draw(st.integers(1, 50)),
        aperture_radius=draw(st.integers(1, 3)),
    )
    return frame, bad, config


def assert_same_detections(got, want):
    assert got.dtype == DETECTION_DTYPE and want.dtype == DETECTION_DTYPE
    assert len(got) == len(want)
    np.testing.assert_array_equal(got["npix"], want["npix"])
    for name in DETECTION_DTYPE.names:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-5, atol=1e-4, err_msg=name)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames_with_targets())
def test_kernel_equals_reference_end_to_end(case):
    frame, bad, config = case
    got = Detector(config, frame.shape, bad).process(frame)
    want = detection_ref.Detector(config, frame.shape, bad).process(frame)
    assert_same_detections(got, want)
    assert np.all(np.diff(got["snr"]) <= 0)
    assert len(got) <= config.max_detections


@settings(max_examples=60, deadline=None)
@given(frames_with_targets())
def test_stages_equal_reference(case):
    frame, bad, config = case
    det = SingleFrameDetector(config, frame.shape, bad)
    det.process(frame)
    ref = detection_ref.SingleFrameDetector(config, frame.shape, bad)
    ref.process(frame)
    # background and noise maps bit-identical, so the thresholded pixel sets are too
    np.testing.assert_array_equal(det.background, ref.background)
    np.testing.assert_array_equal(det.noise, ref.noise)
    np.testing.assert_array_equal(det.labels, ref.labels)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0.05, 0.9))
def test_labels_equal_scipy(h, w, seed, fill):
    # peer: scipy.ndimage.label with a full 3x3 structure (8-connectivity), same raster numbering
    rng = np.random.default_rng(seed)
    above = rng.random((h, w)) < fill
    frame = np.where(above, 100, 0).astype(np.uint16)
    zeros = np.zeros((h, w), np.float32)
    ones = np.ones((h, w), np.float32)
    labels = np.empty((h, w), np.int32)
    size = h * ((w + 1) // 2) + 1
    n = kernel.label_above_threshold(frame, np.zeros((h, w), np.uint8), zeros, ones, 50.0, labels,
                                     np.empty(size, np.int32), np.empty(size, np.int32))
    want, n_want = ndimage.label(above, structure=np.ones((3, 3)))
    assert n == n_want
    np.testing.assert_array_equal(labels, want)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**14 - 1), min_size=1, max_size=300))
def test_tile_median_and_mad_equal_numpy(values):
    vals = np.array(values, np.uint16)
    frame = vals.reshape(1, -1)
    med = np.empty((1, 1))
    sig = np.empty((1, 1))
    kernel.tile_statistics(frame, np.zeros_like(frame, np.uint8), frame.shape[1], 1, med, sig,
                           np.empty(frame.size, np.int32))
    v = vals.astype(np.float64)
    assert med[0, 0] == np.median(v)
    assert sig[0, 0] == detection_ref.MAD_TO_SIGMA * np.median(np.abs(v - np.median(v)))


def test_single_blob_measurement():
    h = w = 41
    yy, xx = np.mgrid[:h, :w]
    x0, y0, s = 20.3, 17.8, 1.0
    frame = (1000 + 2000 * np.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * s * s))).astype(np.uint16)
    # noise floor sets the threshold: flat tiles have zero MAD
    det = Detector(DetectorConfig(mode="single", k_sigma=5.0, noise_floor=10.0, tile_size=32), (h, w))
    got = det.process(frame)
    assert len(got) == 1
    d = got[0]
    # log-parabola through a sampled Gaussian recovers the centre to integer rounding
    assert abs(d["x"] - x0) < 0.01 and abs(d["y"] - y0) < 0.01
    assert d["npix"] == np.count_nonzero(frame.astype(float) - 1000 > 50)
    assert d["peak"] == frame.max() - 1000
    assert abs(d["a"] - d["b"]) < 0.1 and 0.6 < d["a"] < 1.2


def test_bad_pixels_are_never_detected():
    frame = np.full((32, 32), 1000, np.uint16)
    frame[5, 7] = 9000
    frame[20, 20] = 9000
    bad = np.zeros((32, 32), bool)
    bad[5, 7] = True
    got = Detector(DetectorConfig(mode="single", noise_floor=5.0), (32, 32), bad).process(frame)
    assert [(int(round(d["x"])), int(round(d["y"]))) for d in got] == [(20, 20)]


def test_max_detections_keeps_most_significant():
    frame = np.full((64, 64), 1000, np.uint16)
    for i, amp in enumerate([200, 900, 400, 700]):
        frame[10, 5 + 15 * i] += amp
    got = Detector(DetectorConfig(mode="single", noise_floor=5.0, max_detections=2), (64, 64)).process(frame)
    assert list(got["peak"]) == [900.0, 700.0]


@pytest.mark.parametrize(
    "frame, message",
    [
        (np.zeros((32, 32), np.int32), "dtype must be uint16, got int32"),
        (np.zeros((32, 33), np.uint16), "shape must be (32, 32), got (32, 33)"),
        (np.zeros((32, 32, 1), np.uint16), "2-D, got 3-D"),
        (np.zeros((32, 64), np.uint16)[:, ::2], "C-contiguous"),
        ([[0] * 32] * 32, "numpy.ndarray, got list"),
    ],
)
@pytest.mark.parametrize("module", [detection, detection_ref])
def test_bad_frames_rejected(module, frame, message):
    det = module.Detector(DetectorConfig(), (32, 32))
    with pytest.raises(ValueError) as err:
        det.process(frame)
    assert message in str(err.value)


def test_bad_construction_rejected():
    with pytest.raises(ValueError, match="k_sigma must be > 0"):
        DetectorConfig(k_sigma=0)
    with pytest.raises(ValueError, match=r"tile_size must be 4\.\.4096, got 2"):
        DetectorConfig(tile_size=2)
    with pytest.raises(ValueError, match="calibration_bad_pixels shape must be"):
        Detector(DetectorConfig(), (32, 32), np.zeros((16, 16), bool))
    with pytest.raises(ValueError, match="shape must be"):
        Detector(DetectorConfig(), (32,))


def test_describe_lists_every_field_with_doc():
    rows = DetectorConfig.describe()
    names = [r[0] for r in rows]
    assert names[:3] == ["k_sigma", "min_pixels", "max_detections"]
    assert dict((n, d) for n, d, _ in rows)["k_sigma"] == 5.0
    assert all(doc for _, _, doc in rows)
    assert set(names) == set(DetectorConfig.__dataclass_fields__)


def test_single_frame_finds_bright_targets_in_clear_scene():
    # reference: simulator truth. SNR >= 12 targets all found within 0.5 px; SNR 8 nearly
    # all (a single-frame peak threshold loses a few whose flux splits over a pixel corner).
    sim = SceneSimulator(SceneConfig(kind="clear", seed=11, n_targets=8, snr_values=(8.0, 12.0, 20.0)))
    det = Detector(DetectorConfig(mode="single"), (256, 256), sim.calibration_bad_pixels())
    hits = {8: [], 12: []}
    errors = []
    for i in range(20):
        frame, truth = sim.frame(i)
        got = det.process(frame)
        for t in truth[truth["snr"] >= 8.0]:
            dist = np.hypot(got["x"] - t["x"], got["y"] - t["y"])
            found = bool(len(dist)) and dist.min() < 0.5
            hits[12 if t["snr"] >= 12.0 else 8].append(found)
            if found:
                errors.append(dist.min())
    assert len(hits[8]) > 20 and len(hits[12]) > 40
    assert all(hits[12])
    assert np.mean(hits[8]) >= 0.9
    assert np.sqrt(np.mean(np.square(errors))) < 0.2


# ---------------------------------------------------------------------------
# Temporal pipeline: each kernel stage against its numpy twin, then behaviour.
# ---------------------------------------------------------------------------
from flight import detection as fd  # noqa: E402
from flight.kernels import detect_temporal as tk  # noqa: E402


def smooth_field(rng, h, w, level=3000.0, amp=800.0):
    yy, xx = np.mgrid[:h, :w]
    field = np.full((h, w), level)
    for _ in range(4):
        kx, ky, ph = rng.uniform(0.01, 0.06), rng.uniform(0.01, 0.06), rng.uniform(0, 6.3)
        field += amp * np.sin(2 * np.pi * (kx * xx + ky * yy) + ph)
    return field


def test_warp_by_whole_pixels_is_exact_and_cubic_reproduces_a_ramp():
    src = np.arange(20 * 30, dtype=np.float32).reshape(20, 30)
    (oy, wy), (ox, wx) = fd.split_shift(2.0), fd.split_shift(-3.0)
    out, outside = detection_ref.warp_separable(src, oy, ox, wy, wx)
    yy, xx = np.mgrid[:20, :30]
    inside = outside == 0
    assert inside[1:16, 4:27].all()  # the 4-tap support marks one more edge pixel outside
    np.testing.assert_array_equal(out[inside], src[(yy + 2)[inside], (xx - 3)[inside]])
    # Catmull-Rom is exact on linear functions
    (oy, wy), (ox, wx) = fd.split_shift(0.25), fd.split_shift(0.6)
    out, outside = detection_ref.warp_separable(src, oy, ox, wy, wx)
    inside = outside == 0
    np.testing.assert_allclose(out[inside], ((yy + 0.25) * 30 + xx + 0.6)[inside], atol=1e-3)


@settings(max_examples=30, deadline=None)
@given(st.integers(3, 30), st.integers(3, 30), st.integers(1, 3), st.integers(0, 2**32 - 1))
def test_matched_filter_twin_equals_scipy_correlate(h, w, radius, seed):
    # peer: scipy.ndimage.correlate with the outer product of the taps, zero outside;
    # float32 sums in a different order, hence the tolerance
    res = np.random.default_rng(seed).normal(0, 50, (h, w)).astype(np.float32)
    taps = fd.filter_taps(DetectorConfig(filter_radius=radius)).astype(np.float32)
    want = ndimage.correlate(res.astype(np.float64), np.outer(taps, taps).astype(np.float64),
                             mode="constant")
    np.testing.assert_allclose(detection_ref.filter_separable(res, taps), want, rtol=0, atol=1e-3)


@st.composite
def pass_states(draw):
    """A frame and a temporal state near it: model, row and column ages, variance, hot score,
    bad mask, offset, hot-score phase."""
    h, w = draw(st.integers(4, 28)), draw(st.integers(4, 28))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    frame = rng.integers(0, 6000, (h, w)).astype(np.uint16)
    model = (frame + rng.normal(0, draw(st.sampled_from([5.0, 200.0])), (h, w))).astype(np.float32)
    for _ in range(draw(st.integers(0, 3))):  # targets the filter should find
        frame[rng.integers(0, h), rng.integers(0, w)] += np.uint16(rng.integers(200, 3000))
    ages = np.array([1, 2, 5, 40, 65535], np.uint16)
    row_age, col_age = rng.choice(ages, h), rng.choice(ages, w)
    variance = rng.uniform(100, 5000, (h, w)).astype(np.float32)
    hot = rng.normal(1.0, 2.0, (h, w)).astype(np.float32)
    bad = rng.choice(np.array([0, 1, 2, 3], np.uint8), (h, w), p=[0.85, 0.05, 0.05, 0.05])
    offset = (draw(st.floats(-5.0, 5.0)), draw(st.floats(-5.0, 5.0)))
    # the gates drawn below, at or above k_sigma: the held sets are the candidates, or more
    config = DetectorConfig(k_sigma=draw(st.floats(1.0, 6.0)), filter_radius=draw(st.integers(1, 3)),
                            hot_rate=0.3, model_rate=0.1, variance_rate=0.1,
                            hot_every=draw(st.integers(1, 4)), gate_sigma=draw(st.floats(0.0, 7.0)),
                            hold_sigma=draw(st.floats(0.0, 7.0)),
                            variance_hold_age=draw(st.sampled_from([0, 2, 5, 41])),
                            variance_clip=draw(st.floats(1.0, 3.0)),
                            variance_clip_young=draw(st.floats(1.0, 3.0)))
    phase = draw(st.integers(0, config.hot_every - 1))
    return frame, model, row_age, col_age, variance, hot, bad, offset, config, phase


def run_pass(frame, model, row_age, col_age, variance, hot, bad, offset, config, phase,
             isa="best", persist=None):
    """The kernel's detect_pass on copies of the state, as TemporalDetector calls it; the
    residual starts as NaN, so what the pass did not write shows."""
    h, w = frame.shape
    state = dict(model=model.copy(), row_age=row_age.copy(), col_age=col_age.copy(),
                 variance=variance.copy(), hot_score=hot.copy(), bad=bad.copy(),
                 residual=np.full((h, w), np.nan, np.float32),
                 persist=np.zeros((h, w), np.uint8) if persist is None else persist.copy())
    fx, fy = offset
    (oy, wy), (ox, wx) = fd.split_shift(fy), fd.split_shift(fx)
    (uy, uwy), (ux, uwx) = fd.split_shift(-fy), fd.split_shift(-fx)
    taps = fd.filter_taps(config)
    cand_index, cand_z = np.empty(h * w, np.int32), np.empty(h * w, np.float32)
    row_start = np.empty(h + 1, np.int32)
    c = config
    n = tk.detect_pass(frame, state["bad"], state["model"], state["variance"],
                       state["hot_score"], state["residual"], state["row_age"], state["col_age"],
                       oy, ox, fd.as_weights(wy),
                       fd.as_weights(wx), uy, ux, fd.as_weights(uwy), fd.as_weights(uwx),
                       fd.as_weights(taps), int(round(fy)), int(round(fx)),
                       *fd.learn_window((h, w), oy, ox, len(taps) // 2),
                       c.model_clip, c.model_clip_low, c.read_noise**2, 1.0 / c.gain,
                       fd.visit_rate(c.hot_rate, c.hot_every), c.hot_on, c.hot_off, c.hot_every,
                       phase, c.variance_rate, c.variance_clip, fd.VARIANCE_FLOOR,
                       fd.candidate_sigma(c), fd.gate_sigma(c), fd.hold_sigma(c), c.variance_rate * c.variance_hold,
                       c.model_rate,
                       fd.residual_reach(c),
                       np.zeros((tk.scratch_rows(len(taps), fd.residual_reach(c)),
                                 w + len(taps) - 1), np.float32),
                       cand_index, cand_z, row_start, isa=isa, persist=state["persist"],
                       persistence=fd.persistence(c),
                       hold_window=fd.hold_window(row_age, col_age, c.variance_hold_age),
                       **fd.variance_learning(c))
    state.update(cand_index=cand_index[:n], cand_z=cand_z[:n], row_start=row_start)
    return state


def near_candidates(above, reach):
    """Pixels within reach (Chebyshev) of an above-threshold pixel."""
    if reach == 0:
        return above.copy()
    return ndimage.binary_dilation(above, np.ones((2 * reach + 1,) * 2, bool))


@st.composite
def persistences(draw):
    """Persistence settings (sigma, k, hold and detect fractions, some beyond 1: never) and
    a seed for the persistence bytes, drawn about the thresholds."""
    return (draw(st.floats(0.5, 6.0)), draw(st.floats(0.5, 6.0)),
            draw(st.sampled_from([0.0, 0.25, 0.5, 0.75, 1.0, 1.5])),
            draw(st.sampled_from([0.0, 0.5, 0.75, 1.0, 1.5])), draw(st.integers(0, 2**32 - 1)))


@settings(max_examples=80, deadline=None)
@given(pass_states(), st.sampled_from(tk.isa_paths()), persistences())
def test_detect_pass_equals_reference(case, isa, persistence):
    # reference: the stage-by-stage float32 twin; same operations in the same order, so the
    # kernel's one fused pass must agree bit for bit, candidates and persistence included,
    # on every instruction-set path this CPU runs
    frame, model, row_age, col_age, variance, hot, bad, offset, config, phase = case
    p_sigma, p_k, p_hold, p_detect, seed = persistence
    config = replace(config, persist_sigma=p_sigma, persist_k=p_k, persist_hold=p_hold,
                     persist_detect=p_detect)
    case = case[:8] + (config, phase)
    levels = np.array([0, 3, 62, 63, 125, 126, 127, 188, 189, 190, 252], np.uint8)
    persist = np.random.default_rng(seed).choice(levels, frame.shape)
    got = run_pass(*case, isa=isa, persist=persist)
    want = detection_ref.detect_pass(frame, bad, model, row_age, col_age, variance, hot, offset,
                                     fd.filter_taps(config), config, fd.VARIANCE_FLOOR, phase,
                                     persist.copy())
    for name in ("model", "row_age", "col_age", "variance", "hot_score", "bad", "persist",
                 "cand_index", "cand_z"):
        np.testing.assert_array_equal(got[name], want[name], err_msg=name, strict=True)
    # the residual is written near the candidates only: all that measurement reads
    near = near_candidates(want["above"], fd.residual_reach(config))
    np.testing.assert_array_equal(got["residual"][near], want["residual"][near], strict=True)
    rows = np.searchsorted(want["cand_index"], np.arange(frame.shape[0] + 1) * frame.shape[1])
    np.testing.assert_array_equal(got["row_start"], rows)


def test_residual_is_written_only_near_candidates():
    # one target on a flat, known scene: the pass writes the residual in the reach window
    # around its candidates and nowhere else (the NaN fill shows what was written)
    h, w = 40, 48
    frame = np.full((h, w), 1000, np.uint16)
    frame[20, 30] += 400
    model = frame.astype(np.float32)
    model[20, 30] = 1000.0
    config = DetectorConfig(k_sigma=5.0, faint_sigma=5.0)  # few candidates: no whole rows
    state = run_pass(frame, model, np.full(h, 50, np.uint16), np.full(w, 50, np.uint16),
                     np.full((h, w), 30.0, np.float32), np.zeros((h, w), np.float32),
                     np.zeros((h, w), np.uint8), (0.0, 0.0), config, 0)
    above = np.zeros((h, w), bool)
    above.ravel()[state["cand_index"]] = True
    assert 1 <= above.sum() <= 25 and above[20, 30]
    written = ~np.isnan(state["residual"])
    np.testing.assert_array_equal(written, near_candidates(above, fd.residual_reach(config)))
    assert state["residual"][20, 30] == 400.0


@pytest.mark.skipif(len(tk.isa_paths()) < 2, reason="this CPU runs only the baseline path")
def test_instruction_set_paths_agree_on_a_scene():
    # reference: the baseline (SSE2 on x86_64) path; the AVX2 path must give the same bits
    # for the whole state and the same detections over a drifting cloudy scene
    sim = SceneSimulator(SceneConfig(kind="cloudy", width=96, height=80, seed=6, n_targets=6,
                                     hot_pixel_fraction=2e-3, drift=(0.9, -1.1)))
    dets = {isa: Detector(DetectorConfig(k_sigma=4.0, simd=isa), (80, 96),
                          sim.calibration_bad_pixels()) for isa in ("baseline", "best")}
    total = 0
    for i in range(12):
        frame = sim.frame(i)[0]
        got = {isa: det.process(frame) for isa, det in dets.items()}
        np.testing.assert_array_equal(got["best"], got["baseline"], strict=True)
        total += len(got["best"])
        fast, plain = dets["best"].pipeline, dets["baseline"].pipeline
        for name in ("model", "variance", "hot_score", "bad"):
            np.testing.assert_array_equal(getattr(fast, name), getattr(plain, name), err_msg=name)
    assert total > 0 and tk.best_isa() == "avx2"


def test_instruction_set_choice_is_checked():
    assert tk.isa_paths()[0] == "baseline"
    with pytest.raises(ValueError, match="simd must be one of 'best', 'baseline', got 'avx512'"):
        DetectorConfig(simd="avx512")


def test_detect_pass_rejects_bad_arguments():
    frame = np.zeros((8, 8), np.uint16)
    f32 = np.zeros((8, 8), np.float32)
    def call(scratch=np.zeros((40, 12), np.float32), taps=np.ones(5, np.float32),
             row_age=np.ones(8, np.uint16), hot_phase=0, model=f32, n_weights=4,
             reach=3, isa="best", gate=3.0, hold=2.0):
        tk.detect_pass(frame, np.zeros((8, 8), np.uint8), model.copy(), f32 + 1, f32.copy(),
                       f32.copy(), row_age, np.ones(8, np.uint16), 0, 0,
                       np.ones(n_weights, np.float32), np.ones(4, np.float32), 0, 0, *[np.ones(4, np.float32)] * 2, taps,
                       0, 0, 0, 8, 0, 8, 2.5, 5.0, 100.0, 1.0, 0.02, 3.5, 1.5, 4, hot_phase, 0.03,
                       2.5, 1e-6, 5.0, gate, hold, 0.003, 0.05, reach, scratch, np.empty(64, np.int32),
                       np.empty(64, np.float32), np.empty(9, np.int32), isa=isa)
    call()  # the good call runs
    with pytest.raises(ValueError, match="scratch must be at least"):
        call(scratch=np.zeros((2, 12), np.float32))
    with pytest.raises(ValueError, match=r"model must have the frame's shape \(8, 8\), got \(8, 7\)"):
        call(model=np.zeros((8, 7), np.float32))
    with pytest.raises(ValueError, match="must hold 4 cubic weights each, got 3, 4"):
        call(n_weights=3)
    with pytest.raises(ValueError, match="reach must be >= 0, got -1"):
        call(reach=-1)
    with pytest.raises(ValueError, match="isa must be 'best' or one of"):
        call(isa="avx512")
    with pytest.raises(ValueError, match="taps must be symmetric"):
        call(taps=np.arange(5, dtype=np.float32))
    with pytest.raises(ValueError, match="row_age, col_age must have 8, 8 entries, got 7, 8"):
        call(row_age=np.ones(7, np.uint16))
    with pytest.raises(ValueError, match="0 <= hot_phase < hot_every, got 4, 4"):
        call(hot_phase=4)
    with pytest.raises(ValueError, match=r"gate_sigma must lie in \[0, k_sigma = 5.0\], got 5.5"):
        call(gate=5.5)
    with pytest.raises(ValueError, match=r"hold_sigma must lie in \[0, gate_sigma = 3.0\], got 3.5"):
        call(hold=3.5)


def shifted_scene(field, h, w, dx, dy, rng, noise=20.0, hot=20):
    """Frame seeing field[10:, 10:] shifted by (dx, dy), with noise and unflagged hot pixels."""
    (oy, wy), (ox, wx) = fd.split_shift(dy), fd.split_shift(dx)
    src = field.astype(np.float32)[10 + oy - 5:, 10 + ox - 5:][:h + 10, :w + 10].copy()
    out, _ = detection_ref.warp_separable(src, 5, 5, wy, wx)
    frame = out[:h, :w] + rng.normal(0, noise, (h, w))
    frame[rng.integers(0, h, hot), rng.integers(0, w, hot)] += 5000
    return np.clip(np.rint(frame), 0, 16383).astype(np.uint16)


@settings(max_examples=25, deadline=None)
@given(st.floats(-1.0, 1.0), st.floats(-1.0, 1.0), st.integers(0, 2**32 - 1))
def test_registration_equals_reference(dx, dy, seed):
    rng = np.random.default_rng(seed)
    h, w = 64, 80
    field = smooth_field(rng, h + 20, w + 20)
    model = field[10:10 + h, 10:10 + w].astype(np.float32)
    frame = shifted_scene(field, h, w, dx, dy, rng)
    bad = (rng.random((h, w)) < 0.01).astype(np.uint8)
    got = np.empty(len(tk.REGISTRATION_OUT))
    tk.register_shift(frame, bad, model, 400.0, 0.0, 0.1, -0.1, 2, 6, 4.0, 4, got)
    want = detection_ref.register_shift(frame, bad, model, 400.0, 0.0, 0.1, -0.1, 2, 6, 4.0, 4)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    short = np.empty(4)  # the first four alone, where the caller wants no more
    tk.register_shift(frame, bad, model, 400.0, 0.0, 0.1, -0.1, 2, 6, 4.0, 4, short)
    np.testing.assert_array_equal(short, got[:4])


@settings(max_examples=25, deadline=None)
@given(st.floats(-3.0, 3.0), st.floats(-3.0, 3.0), st.integers(0, 2**32 - 1),
       st.sampled_from([4, 7, 16]), st.sampled_from([0.0, 0.01, 0.6]))
def test_block_registration_equals_reference(dx, dy, seed, block, bad_fraction):
    # reference: the numpy twin, block by block from slices of the model (the kernel slides
    # column sums); a bad fraction of 0.6 leaves blocks with fewer than half good out.  That
    # blocks are used at all, and recover the shift, is the next test's
    rng = np.random.default_rng(seed)
    h, w = 70, 90
    field = smooth_field(rng, h + 20, w + 20)
    model = field[10:10 + h, 10:10 + w].astype(np.float32)
    frame = shifted_scene(field, h, w, dx, dy, rng)
    bad = (rng.random((h, w)) < bad_fraction).astype(np.uint8)
    got = np.empty(len(tk.REGISTRATION_OUT))
    tk.register_blocks(frame, bad, model, 400.0, 0.5, 0.2, -0.3, block, 5, 4.0, 4, got)
    want = detection_ref.register_blocks(frame, bad, model, 400.0, 0.5, 0.2, -0.3, block, 5, 4.0, 4)
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)


def registration_case(seed, dx, dy, h=96, w=112):
    """(frame, bad, model): a smooth field, the frame seeing it shifted by (dx, dy), 2 % bad."""
    rng = np.random.default_rng(seed)
    field = smooth_field(rng, h + 20, w + 20)
    model = field[10:10 + h, 10:10 + w].astype(np.float32)
    frame = shifted_scene(field, h, w, dx, dy, rng)
    return frame, (rng.random((h, w)) < 0.02).astype(np.uint8), model


def same_on_every_path(kernel, args, scratch, n_out):
    """kernel(*args, out, buf, isa=...) on every instruction-set path, with and without the
    caller's scratch: asserts the same bits everywhere, and returns them."""
    outs = []
    for isa in tk.isa_paths():
        for buf in (None, scratch):
            got = np.empty(n_out)
            kernel(*args, got, buf, isa=isa)
            outs.append(got)
    for got in outs[1:]:
        np.testing.assert_array_equal(got, outs[0])
    return outs[0]


def test_block_registration_paths_agree_and_arguments_are_checked():
    frame, bad, model = registration_case(3, 1.6, -0.7)
    h, w = frame.shape
    args = (frame, bad, model, 400.0, 0.5, 0.3, -0.2, 8, 6, 4.0, 3)
    scratch = np.empty(tk.register_block_scratch_size(h, w, 8, 6), np.float32)
    got = same_on_every_path(tk.register_blocks, args, scratch, 9)
    assert got[2] > 50 and abs(got[0] - 1.6) < 0.1 and abs(got[1] + 0.7) < 0.1
    with pytest.raises(ValueError, match="scratch needs"):
        tk.register_blocks(*args, np.empty(9), scratch[:-1])
    with pytest.raises(ValueError, match="out needs 9"):
        tk.register_blocks(*args, np.empty(4))
    with pytest.raises(ValueError, match="block >= 2"):
        tk.register_blocks(*args[:7], 1, *args[8:], np.empty(9))
    with pytest.raises(ValueError, match="model must have"):
        tk.register_blocks(frame, bad, model[:-1], *args[3:], np.empty(9))


def registration_out(dx, dy, n, mean_square, level, axx, axy, ayy):
    return np.array([dx, dy, n, (axx * ayy - axy * axy), mean_square, level, axx, axy, ayy], float)


def test_the_blocks_replace_the_grid_only_where_precise_fitting_and_apart():
    # reference: block_error's formula worked by hand, and the rule's four conditions one by
    # one.  Pixel noise 100 (read) + 1000 / 10 (shot) = 200; 16 x 16 blocks: 200 / 256 a mean
    cfg = DetectorConfig()
    weak = registration_out(0.1, 0.2, 5000, 150.0, 1000.0, 60.0, 0.0, 60.0)  # texture 0.6
    calls = []

    def blocks_at(out):
        def measure(gx, gy):
            calls.append((gx, gy))
            return out
        return measure
    # 400 blocks, mean square 0.8, normal matrix 2 I per block: sigma^2 = 0.8 / 400 * 4 / 4
    precise = registration_out(0.9, -0.3, 400, 0.8, 1000.0, 2.0, 0.0, 2.0)
    assert fd.block_error(precise) == pytest.approx(math.sqrt(0.8 / 400))
    assert fd.block_residual_ratio(precise, 100.0, 0.1, 16) == pytest.approx(0.8 / (200 / 256))
    got, taken = fd.checked_by_blocks(weak, blocks_at(precise), 100.0, 0.1, cfg)
    assert taken and tuple(got[:2]) == (0.9, -0.3) and got[2] == 5000  # the grid's count kept
    assert calls == [(0.1, 0.2)]  # measured from the grid's estimate
    # too loose (sigma 1.8 px), not fitting (residual 40x the noise), or within 3 sigma
    loose = registration_out(0.9, -0.3, 400, 0.8 * 1600, 1000.0, 2.0, 0.0, 2.0)
    misfit = registration_out(0.9, -0.3, 400, 40 * 200 / 256, 1000.0, 2.0, 0.0, 2.0)
    near = registration_out(0.1 + 0.1, 0.2, 400, 0.8, 1000.0, 2.0, 0.0, 2.0)
    for out in (loose, misfit, near):
        got, taken = fd.checked_by_blocks(weak, blocks_at(out), 100.0, 0.1, cfg)
        assert not taken and tuple(got) == tuple(weak)
    # textured terrain (mean squared gradient 3x the noise): the blocks are not even measured
    calls.clear()
    textured = registration_out(0.1, 0.2, 5000, 150.0, 1000.0, 300.0, 0.0, 300.0)
    got, taken = fd.checked_by_blocks(textured, blocks_at(precise), 100.0, 0.1, cfg)
    assert not taken and calls == []
    got, taken = fd.checked_by_blocks(weak, blocks_at(precise), 100.0, 0.1,
                                      DetectorConfig(register_block=0))
    assert not taken and tuple(got) == tuple(weak)


def test_blocks_register_terrain_whose_pixel_gradient_is_mostly_noise():
    # reference: the known shift.  A field of 0.5 % contrast on slow scales (periods of 17-100
    # px), and a model as noisy as one frame (the seed): the pixel grid's gradient is mostly
    # the model's noise, and its Gauss-Newton stops well short of the shift; the block means
    # keep the slopes with 256 times less noise
    rng = np.random.default_rng(11)
    h, w = 320, 384
    field = smooth_field(rng, h + 20, w + 20, amp=15.0)
    model = (field[10:10 + h, 10:10 + w] + rng.normal(0, 20.0, (h, w))).astype(np.float32)
    dx, dy = 0.9, -0.6
    frame = shifted_scene(field, h, w, dx, dy, rng, hot=0)
    bad = np.zeros((h, w), np.uint8)
    fine, blocks = np.empty(9), np.empty(9)
    tk.register_shift(frame, bad, model, 400.0, 0.0, 0.0, 0.0, 8, 8, 4.0, 3, fine)
    tk.register_blocks(frame, bad, model, 400.0, 0.0, 0.0, 0.0, 16, 8, 4.0, 3, blocks)
    assert math.hypot(fine[0] - dx, fine[1] - dy) > 0.4
    error = math.hypot(blocks[0] - dx, blocks[1] - dy)
    assert error < 0.1
    # its own error estimate (0.17 px: the field's slopes here are nearly parallel, so one
    # direction is poorly pinned) covers its error, and the residual fits the noise
    assert error < 3 * fd.block_error(blocks) < 0.6
    assert fd.block_residual_ratio(blocks, 400.0, 0.0, 16) < 3.0


def test_registration_paths_agree_and_scratch_is_checked():
    # reference: the baseline path; both paths sum the same lanes in the same order, so the
    # same bits, with or without a caller's scratch
    frame, bad, model = registration_case(7, 0.6, -0.4)
    h, w = frame.shape
    args = (frame, bad, model, 400.0, 0.5, 0.3, -0.2, 3, 6, 4.0, 3)
    scratch = np.empty(tk.register_scratch_size(h, w, 3, 6), np.float32)
    got = same_on_every_path(tk.register_shift, args, scratch, 4)
    assert got[2] > 100  # samples were used: the comparison means something
    with pytest.raises(ValueError, match="scratch needs"):
        tk.register_shift(*args, np.empty(4), scratch[:-1])
    with pytest.raises(ValueError, match="isa must be"):
        tk.register_shift(*args, np.empty(4), isa="sse9")
    with pytest.raises(ValueError, match="model must have"):
        tk.register_shift(frame, bad, model[:-1], *args[3:], np.empty(4))
    with pytest.raises(ValueError, match="margin >= 0"):
        tk.register_shift(*args[:8], -1, *args[9:], np.empty(4))


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 14), st.integers(3, 14), st.integers(0, 2**32 - 1), st.data())
def test_fill_new_cells_equals_reference(h, w, seed, data):
    # reference: the numpy twin (repair from good 3x3 neighbours, bilinear in double, white
    # variance in float32); bit for bit, bad pixels with no good neighbour included
    rng = np.random.default_rng(seed)
    frame = rng.integers(0, 16384, (h, w)).astype(np.uint16)
    bad = (rng.random((h, w)) < data.draw(st.sampled_from([0.0, 0.2, 0.9]))).astype(np.uint8)
    y0 = data.draw(st.integers(0, h))
    y1 = data.draw(st.integers(y0, h))
    x0 = data.draw(st.integers(0, w))
    x1 = data.draw(st.integers(x0, w))
    fy, fx = data.draw(st.floats(-0.5, 0.5)), data.draw(st.floats(-0.5, 0.5))
    cfg = DetectorConfig(read_noise=data.draw(st.floats(0.0, 30.0)),
                         gain=data.draw(st.floats(0.2, 4.0)))
    taps = fd.filter_taps(cfg)
    model = rng.normal(1000.0, 300.0, (h, w)).astype(np.float32)
    variance = rng.uniform(0.0, 400.0, (h, w)).astype(np.float32)
    want_m, want_v = model.copy(), variance.copy()
    rows, cols = slice(y0, y1), slice(x0, x1)
    detection_ref.fill_new_cells(frame, bad, want_m, want_v, rows, cols, fy, fx, cfg, taps)
    fd.fill_new_cells(frame, bad, model, variance, rows, cols, fy, fx, cfg, taps)
    np.testing.assert_array_equal(model, want_m)
    np.testing.assert_array_equal(variance, want_v)


def test_fill_new_cells_rejects_bad_arguments():
    frame = np.zeros((8, 9), np.uint16)
    bad = np.zeros((8, 9), np.uint8)
    plane = np.zeros((8, 9), np.float32)
    with pytest.raises(ValueError, match="must lie in the frame"):
        tk.fill_new_cells(frame, bad, plane, plane.copy(), 0, 9, 0, 9, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="variance must have"):
        tk.fill_new_cells(frame, bad, plane, plane[:, :-1].copy(), 0, 1, 0, 1, 0.0, 0.0, 1.0, 1.0,
                          1.0, 0.0)


@pytest.mark.parametrize("dx, dy", [(-0.8, 0.4), (0.9, -0.3), (0.25, 0.75), (0.0, 0.0)])
def test_registration_recovers_shift_despite_hot_pixels(dx, dy):
    # reference: the known shift applied to a textured field (1 px is about the largest
    # jitter step the drift-seeded first guess leaves)
    h, w = 64, 80
    yy, xx = np.mgrid[:h + 20, :w + 20]
    field = (3000 + 800 * np.sin(2 * np.pi * (0.04 * xx + 0.01 * yy))
             + 800 * np.sin(2 * np.pi * (0.01 * xx + 0.05 * yy)) + 500 * np.sin(2 * np.pi * 0.03 * (xx - yy)))
    rng = np.random.default_rng(1)
    frame = shifted_scene(field, h, w, dx, dy, rng, hot=60)
    got = np.empty(4)
    tk.register_shift(frame, np.zeros((h, w), np.uint8), field[10:10 + h, 10:10 + w].astype(np.float32),
                      400.0, 0.0, 0.0, 0.0, 2, 6, 4.0, 4, got)
    assert abs(got[0] - dx) < 0.02 and abs(got[1] - dy) < 0.02


def candidates(z, k):
    """(flat index, Z, row starts) of z > k, as detect_pass hands them over."""
    index = np.flatnonzero(z > np.float32(k)).astype(np.int32)
    rows = np.searchsorted(index, np.arange(z.shape[0] + 1) * z.shape[1]).astype(np.int32)
    return index, z.ravel()[index].astype(np.float32), rows


def label_sparse(z, bad, k):
    h, w = z.shape
    index, zs, rows = candidates(z, k)
    labels = np.empty(len(index), np.int32)
    sizes = np.empty(len(index), np.int32)
    n = tk.label_candidates(index, rows, len(index), w, bad, np.empty(len(index), np.int32),
                            labels, sizes)
    dense = np.zeros((h, w), np.int32)
    dense.ravel()[index] = labels
    return index, zs, rows, labels, sizes[:n], dense, n


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1), st.floats(0.05, 0.9))
def test_candidate_labels_equal_scipy(h, w, seed, fill):
    # peer: scipy.ndimage.label with a full 3x3 structure (8-connectivity), same raster numbering
    rng = np.random.default_rng(seed)
    z = rng.random((h, w)).astype(np.float32)
    bad = (rng.random((h, w)) < 0.05).astype(np.uint8)
    *_, sizes, dense, n = label_sparse(z, bad, 1.0 - fill)
    want, n_want = ndimage.label((z > np.float32(1.0 - fill)) & (bad == 0), structure=np.ones((3, 3)))
    assert n == n_want
    np.testing.assert_array_equal(dense, want)
    np.testing.assert_array_equal(sizes, np.bincount(want.ravel())[1:])


@settings(max_examples=30, deadline=None)
@given(st.integers(8, 40), st.integers(8, 40), st.integers(0, 2**32 - 1), st.integers(1, 3),
       st.sampled_from([0, 1, 5]))
def test_labels_peaks_and_measurement_equal_reference(h, w, seed, radius, fit):
    rng = np.random.default_rng(seed)
    res = rng.normal(0, 30, (h, w)).astype(np.float32)
    yy, xx = np.mgrid[:h, :w]
    for _ in range(4):
        x, y = rng.uniform(0, w), rng.uniform(0, h)
        res += (rng.uniform(0, 800) * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / 2)).astype(np.float32)
    frame = (res + 2000).astype(np.uint16)
    taps = fd.filter_taps(DetectorConfig()).astype(np.float32)
    filt = detection_ref.filter_separable(res, taps)
    z = (filt / np.sqrt(np.float32(300.0))).astype(np.float32)
    bad = (rng.random((h, w)) < 0.02).astype(np.uint8)
    index, zs, rows, labels, sizes, dense, n = label_sparse(z, bad, 4.0)
    want_labels, want_n = detection_ref.label_above(z > np.float32(4.0), bad)
    assert n == want_n
    np.testing.assert_array_equal(dense, want_labels)
    peaks = np.empty(max(len(index), 1), np.int32)
    m = tk.find_peaks(index, zs, labels, rows, len(index), w, radius, peaks)
    want_sizes, want_peaks = detection_ref.find_peaks(z, want_labels, want_n, radius)
    np.testing.assert_array_equal(index[peaks[:m]], want_peaks)
    assert (m >= 1) == (n >= 1)  # the highest pixel is always a peak; a weaker neighbour may not be
    table = np.empty((m, len(tk.COLUMNS)))
    tk.measure_targets(frame, res, taps, index, zs, labels, sizes, peaks, m, 2, 1.0, 100.0, 1.0, table,
                       bad, 3, fit)
    want = detection_ref.measure_targets(frame, res, filt, z, want_labels, want_sizes, want_peaks, 2,
                                         1.0, 100.0, 1.0, bad, 3, fit)
    # the kernel recomputes the filter at the peak in the pass's order: the same bits; the
    # Gaussian fit (x, y) solves its normal equations in another order than numpy's
    np.testing.assert_allclose(table[:, 2:], want[:, 2:], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(table[:, :2], want[:, :2], rtol=0, atol=1e-7 if fit else 1e-9)
    with pytest.raises(ValueError, match="COLUMNS"):  # a table one column short is refused
        tk.measure_targets(frame, res, taps, index, zs, labels, sizes, peaks, m, 2, 1.0, 100.0, 1.0,
                           np.empty((m, len(tk.COLUMNS) - 1)), bad, 3, fit)
    with pytest.raises(ValueError, match="bad must be"):  # a bad-pixel map of another shape
        tk.measure_targets(frame, res, taps, index, zs, labels, sizes, peaks, m, 2, 1.0, 100.0, 1.0,
                           table, bad[1:], 3, fit)


def test_temporal_detector_equals_reference_on_a_scene():
    sim = SceneSimulator(SceneConfig(kind="cloudy", width=64, height=48, seed=4, n_targets=4,
                                     hot_pixel_fraction=3e-3, cosmic_rate=300.0, drift=(1.3, -0.9)))
    cfg = DetectorConfig(k_sigma=4.0)
    det = Detector(cfg, (48, 64), sim.calibration_bad_pixels())
    ref = detection_ref.Detector(cfg, (48, 64), sim.calibration_bad_pixels())
    total = 0
    for i in range(8):  # drift of 1.3 px/frame re-anchors the model on the way
        frame = sim.frame(i)[0]
        got, want = det.process(frame), ref.process(frame)
        assert_same_detections(got, want)
        total += len(got)
        # float32 twins in the kernel's order: the state agrees bit for bit
        np.testing.assert_array_equal(det.pipeline.model, ref.pipeline.model)
        np.testing.assert_array_equal(det.pipeline.variance, ref.pipeline.variance)
    assert total > 0


def run_with_twin(sim, config, frames):
    """The flight detector and its numpy twin over `frames` frames of `sim`, their detections equal
    frame by frame: (flight, twin)."""
    shape = (sim.config.height, sim.config.width)
    det = Detector(config, shape, sim.calibration_bad_pixels())
    ref = detection_ref.Detector(config, shape, sim.calibration_bad_pixels())
    for i in range(frames):
        frame = sim.frame(i)[0]
        assert_same_detections(det.process(frame), ref.process(frame))
    return det, ref


def test_temporal_detector_equals_reference_once_the_variance_is_floored():
    # a faster variance (mature in 10 frames) so that the floor's ratio, measured at frame 32,
    # and the new cells' clutter variance (drift re-anchors every few frames) both act
    sim = SceneSimulator(SceneConfig(kind="cloudy", width=72, height=80, seed=5, n_targets=3,
                                     hot_pixel_fraction=3e-3, cosmic_rate=300.0, drift=(1.3, -0.9)))
    det, ref = run_with_twin(sim, DetectorConfig(k_sigma=4.0, variance_rate=0.1), 42)
    assert det.pipeline.floor_ratio == ref.pipeline.floor_ratio > 0.0
    np.testing.assert_array_equal(det.pipeline.variance, ref.pipeline.variance)
    np.testing.assert_array_equal(det.pipeline.model, ref.pipeline.model)


def test_faint_detections_lie_between_faint_sigma_and_k_sigma_and_leave_the_detections_as_they_were():
    # the same scene with faint detections on and off: the detections agree in all but their
    # component's size (more pixels pass the lower threshold); the faint ones lie between
    # faint_sigma and k_sigma, none a persistent source's, and the twin finds the same
    sim = SceneSimulator(SceneConfig(kind="cloudy", width=96, height=80, seed=7, n_targets=8,
                                     snr_values=(3.0, 4.0, 8.0), drift=(0.4, -0.3),
                                     speed_range=(0.0, 0.2)))   # slow: some are persistent
    shape, bad = (80, 96), sim.calibration_bad_pixels()
    off = Detector(DetectorConfig(faint_sigma=5.0), shape, bad)
    on = Detector(DetectorConfig(faint_sigma=3.5), shape, bad)
    twin = detection_ref.Detector(DetectorConfig(faint_sigma=3.5), shape, bad)
    faint = persistent = 0
    for i in range(40):
        frame = sim.frame(i)[0]
        want, got = off.process(frame), on.process(frame)
        assert_same_detections(got, twin.process(frame))
        assert_same_detections(on.faint, twin.pipeline.faint)
        assert len(off.faint) == 0 and len(got) == len(want)
        for name in DETECTION_DTYPE.names:
            if name != "npix":
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)
        assert np.all((on.faint["snr"] > 3.5 - 1e-4) & (on.faint["snr"] <= 5.0))
        faint += len(on.faint)
        persistent += int(np.count_nonzero(got["snr"] <= 5.0))
    assert faint > 10 and persistent > 0   # some detections below k_sigma were persistent sources


def test_a_faint_candidate_does_not_take_a_persistent_sources_place_as_the_peak():
    # candidates placed by hand: a persistent source A (Z 4.3, its cell persistent) with a brighter
    # faint candidate B 2 px off, a detection D and a faint candidate C on their own. Among all
    # candidates B outshines A; the detections must be A and D, as at k_sigma alone, and the faint
    # peaks C only (B stands beside A)
    h = w = 16
    cfg = DetectorConfig(k_sigma=5.0, faint_sigma=4.0)
    pipe = Detector(cfg, (h, w)).pipeline
    cells = {"D": (2, 12, 6.0), "A": (5, 5, 4.3), "B": (5, 7, 4.8), "C": (12, 12, 4.5)}
    order = sorted(cells, key=lambda k: cells[k][0] * w + cells[k][1])
    n = len(order)
    pipe._cand_index[:n] = [cells[k][0] * w + cells[k][1] for k in order]
    pipe._cand_z[:n] = [cells[k][2] for k in order]
    rows = np.array([cells[k][0] for k in order])
    pipe._row_start[:] = np.searchsorted(rows, np.arange(h + 1))
    pipe.persist[5, 5] = fd.persistence(cfg)[3]
    c = tk.label_candidates(pipe._cand_index, pipe._row_start, n, w, pipe.bad, pipe._parent,
                            pipe._cand_label, pipe._sizes)
    m = tk.find_peaks(pipe._cand_index, pipe._cand_z, pipe._cand_label, pipe._row_start, n, w,
                      cfg.peak_radius, pipe._peaks)
    name = {cells[k][0] * w + cells[k][1]: k for k in cells}
    assert c == 4 and sorted(name[pipe._cand_index[i]] for i in pipe._peaks[:m]) == ["B", "C", "D"]
    labels = pipe._cand_label[:n].copy()
    strong, total = pipe._strong_peaks_first(n, m, 0, 0)
    peaks = [name[pipe._cand_index[i]] for i in pipe._peaks[:total]]
    assert sorted(peaks[:strong]) == ["A", "D"] and peaks[strong:] == ["C"]
    np.testing.assert_array_equal(pipe._cand_label[:n], labels)    # the labels are given back


def test_the_temporal_detector_settles_after_settle_frames_and_the_single_frame_one_at_once():
    sim = SceneSimulator(SceneConfig(kind="clear", width=64, height=48, seed=2, n_targets=2))
    temporal = Detector(DetectorConfig(settle_frames=3), (48, 64), sim.calibration_bad_pixels())
    single = Detector(DetectorConfig(mode="single"), (48, 64), sim.calibration_bad_pixels())
    settled = []
    for i in range(6):
        frame = sim.frame(i)[0]
        temporal.process(frame)
        single.process(frame)
        settled.append(temporal.settled)
        assert single.settled
    assert settled == [False, False, False, True, True, True]   # the seed, then 3 frames


def match_greedy(got, truth, radius=1.5):
    """Each truth row in turn takes its nearest detection if within `radius` and not yet taken: (which
    detections were taken, each truth row's distance or None)."""
    used = np.zeros(len(got), bool)
    distances = []
    for t in truth:
        dist = np.hypot(got["x"] - t["x"], got["y"] - t["y"])
        j = int(np.argmin(dist)) if len(dist) else -1
        ok = j >= 0 and dist[j] < radius and not used[j]
        if ok:
            used[j] = True
        distances.append(float(dist[j]) if ok else None)
    return used, distances


def run_scene(kind, frames, seed=3, config=DetectorConfig(), calibration=True, **scene):
    sim = SceneSimulator(SceneConfig(kind=kind, seed=seed, n_targets=12, **scene))
    det = Detector(config, (sim.config.height, sim.config.width),
                   sim.calibration_bad_pixels() if calibration else None)
    found = {}
    errors = []
    false_alarms = 0
    shift_errors = []
    for i in range(frames):
        frame, truth = sim.frame(i)
        got = det.process(frame)
        if i > 0:
            true_shift = np.subtract(sim.platform_offset(i), sim.platform_offset(i - 1))
            shift_errors.append(det.pipeline.shift - true_shift)
        det.shift_errors = np.array(shift_errors)
        if i < 10:  # the background model is still forming
            continue
        used, distances = match_greedy(got, truth)
        for t, d in zip(truth, distances):
            if d is not None:
                errors.append(d)
            found.setdefault(8 if t["snr"] >= 8 else 5, []).append(d is not None)
        false_alarms += int((~used).sum())
    return found, np.array(errors), false_alarms / (frames - 10), det, sim


def test_temporal_detector_in_cloud():
    # reference: simulator truth over 30 frames of a drifting, jittering cloudy scene
    found, errors, fa_per_frame, det, _ = run_scene("cloudy", 40)
    # registration against simulator truth: frame-to-frame shift within a few hundredths px
    assert np.sqrt(np.mean(det.shift_errors[5:] ** 2)) < 0.05
    assert np.mean(found[8]) >= 0.95
    assert fa_per_frame <= 2.0
    assert np.sqrt(np.mean(errors**2)) < 0.3


def test_pixels_gone_hot_are_found_from_the_data():
    _, _, _, det, sim = run_scene("cloudy", 60, hot_pixel_fraction=2e-3, cosmic_rate=0.0)
    unlisted = sim.defective_pixels() & ~sim.calibration_bad_pixels()
    flagged = (det.pipeline.bad & tk.BAD_BITS["detected"]) != 0
    assert unlisted.sum() > 40
    assert flagged[unlisted].mean() > 0.9
    assert (flagged & ~sim.defective_pixels()).sum() <= 5


def test_cosmic_ray_hits_are_rejected():
    sim = SceneSimulator(SceneConfig(kind="clear", n_targets=0, cosmic_rate=0.0, seed=8))
    det = Detector(DetectorConfig(), (256, 256), sim.calibration_bad_pixels())
    for i in range(12):
        det.process(sim.frame(i)[0])
    frame = sim.frame(12)[0].copy()
    hits = [(40, 50), (100, 200), (180, 30)]
    for y, x in hits:
        frame[y, x] += 3000
    frame[181, 31] += 1800  # a two-pixel streak
    got = det.process(frame)
    assert det.pipeline.last_candidates >= 3  # they were seen, then rejected as too sharp
    for y, x in hits:
        assert not np.any(np.hypot(got["x"] - x, got["y"] - y) < 2.0)


def test_centroid_beats_3x3_centre_of_gravity_at_high_snr():
    _, errors, _, _, _ = run_scene("clear", 30, snr_values=(30.0,), jitter_rms=0.0)
    # a 3x3 centre of gravity on a sigma~1 PSF is biased towards the pixel centre by up to
    # ~0.1 px; the log-parabola on the matched-filter output is not
    sim = SceneSimulator(SceneConfig(kind="clear", n_targets=12, snr_values=(30.0,), jitter_rms=0.0))
    cog = []
    for i in range(10, 30):
        frame, truth = sim.frame(i)
        img = frame.astype(float) - 2000.0
        for t in truth:
            py, px = int(round(t["y"])), int(round(t["x"]))
            block = img[py - 1:py + 2, px - 1:px + 2]
            yy, xx = np.mgrid[-1:2, -1:2]
            cog.append(np.hypot((block * xx).sum() / block.sum() + px - t["x"],
                                (block * yy).sum() / block.sum() + py - t["y"]))
    assert np.sqrt(np.mean(errors**2)) < 0.8 * np.sqrt(np.mean(np.square(cog)))


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.data())
def test_shift_cells_equals_reference(h, w, data):
    # reference: the numpy slice-copy twin; a pure move, so equal bit for bit
    ky, kx = data.draw(st.integers(-h + 1, h - 1)), data.draw(st.integers(-w + 1, w - 1))
    array = np.random.default_rng(h * 100 + w).random((h, w)).astype(np.float32)
    want = array.copy()
    detection_ref.shift_cells(want, ky, kx)
    vacated = fd.shift_cells(array, ky, kx)
    np.testing.assert_array_equal(array, want)
    assert vacated == (fd.moved_axis(h, ky)[2], fd.moved_axis(w, kx)[2])
    with pytest.raises(ValueError, match="must be smaller than the array"):
        tk.shift_cells(array, h, 0)


def test_reanchor_repairs_bad_pixels_and_resamples_the_new_cells():
    # reference: a linear ramp frame, whose value at any sub-pixel position is known exactly
    h, w = 20, 30
    yy, xx = np.mgrid[:h, :w]
    frame = (1000 + 10 * xx + 3 * yy).astype(np.uint16)
    bad = np.zeros((h, w), np.uint8)
    frame[5, 28] = 0  # a dead pixel in the strip that comes into view
    bad[5, 28] = 1
    model = np.full((h, w), 7.0, np.float32)
    variance = np.full((h, w), 50.0, np.float32)
    row_age, col_age = np.full(h, 40, np.uint16), np.arange(w, dtype=np.uint16) + 40
    cfg = DetectorConfig()
    fd.reanchor(model, variance, row_age, col_age, frame, bad, 0, 3, 0.0, 0.25, cfg,
                fd.filter_taps(cfg))
    new = np.s_[:, w - 3:]
    np.testing.assert_allclose(model[new], (1000 + 10 * (xx - 0.25) + 3 * yy)[new], atol=0.5)
    # columns moved with the model; the three new ones are one frame old, rows untouched
    np.testing.assert_array_equal(col_age, np.r_[np.arange(3, w) + 40, [1, 1, 1]])
    assert (row_age == 40).all()
    assert (model[:, :w - 3] == 7.0).all()  # kept cells moved exactly
    assert (variance[new] >= 50.0).all()  # no lower than the mature neighbour


def test_new_cells_start_with_the_clutter_mature_cells_show_for_their_curvature():
    # reference: mature variance that is exactly base + g * curvature power, on a model that
    # is flat in most of the band (its median is the base) with cloud edges crossing it; the
    # new rows (the bottom three) see the same edges and must start at base + g * power
    h, w = 48, 40
    yy, xx = np.mgrid[:h, :w]
    model = np.where((xx > 12) & (xx < 20), 4000.0, 1000.0).astype(np.float32)
    model[:, 30:] += (400.0 * np.sin(yy[:, 30:] / 2.0)).astype(np.float32)
    cfg = DetectorConfig()
    taps = fd.filter_taps(cfg)
    base, g = 120.0, 3e-4
    power = fd.curvature_power(model, taps)
    assert np.count_nonzero(power[:, :10]) == 0  # flat there: the band's median is the base
    variance = (base + g * power).astype(np.float32)
    variance[h - 3:] = base  # what the new rows had before: no clutter
    row_age = np.r_[np.full(h - 3, 40), [1, 1, 1]].astype(np.uint16)
    col_age = np.full(w, 40, np.uint16)
    state = variance.copy()
    fd.add_clutter_variance(model, variance, row_age, col_age, 3, 0, cfg, taps)
    np.testing.assert_allclose(variance[h - 3:], base + g * power[h - 3:], rtol=2e-3)
    assert variance[h - 3:, 15].min() > 2 * base  # the edge entering the view is not white
    np.testing.assert_array_equal(variance[:h - 3], state[:h - 3])  # mature cells untouched
    # off, or with no mature cells to learn from, the new cells keep what they had
    for config, ages in ((replace(cfg, clutter_band=0), row_age), (cfg, np.ones(h, np.uint16))):
        again = state.copy()
        fd.add_clutter_variance(model, again, ages, col_age, 3, 0, config, taps)
        np.testing.assert_array_equal(again, state)
    # new columns on the left (a drift the other way) learn from the mature columns beside them
    side = np.full((w, h), 1000.0, np.float32)
    side[:, :] += np.where((np.arange(w) > 30)[:, None], 3000.0, 0.0).astype(np.float32)
    power = fd.curvature_power(side, taps)
    assert np.count_nonzero(power[:, 3:19]) < power[:, 3:19].size / 2
    variance = (base + g * power).astype(np.float32)
    variance[:, :3] = base
    fd.add_clutter_variance(side, variance, np.full(w, 40, np.uint16),
                            np.r_[[1, 1, 1], np.full(h - 3, 40)].astype(np.uint16), 0, -3, cfg, taps)
    np.testing.assert_allclose(variance[:, :3], base + g * power[:, :3], rtol=2e-3)
    assert variance[30, :3].min() > 2 * base


def test_variance_floor_lifts_the_low_estimates_to_the_noise_models_quantile():
    # reference: a variance that is the noise model's times a known spread of ratios, on a
    # model of two levels; the floor is the 20 % quantile of the sampled cells' ratios
    h, w = 96, 88
    cfg = DetectorConfig()
    taps = fd.filter_taps(cfg)
    model = np.where(np.arange(w) < 40, 500.0, 3000.0)[None, :].repeat(h, 0).astype(np.float32)
    a, b = fd.white_variance_terms(cfg, taps)
    white = a + b * model.astype(np.float64)
    ratio = np.random.default_rng(2).permutation(np.linspace(0.5, 1.5, h * w)).reshape(h, w)
    variance = (ratio * white).astype(np.float32)
    ages = np.full(h, 40, np.uint16), np.full(w, 40, np.uint16)
    sample = ratio[::fd.FLOOR_STRIDE, ::fd.FLOOR_STRIDE]
    assert fd.noise_floor_ratio(variance, model, *ages, cfg, taps) == pytest.approx(
        np.quantile(sample, 0.2), rel=1e-6)
    before = variance.copy()
    used = fd.keep_variance_floor(variance, model, *ages, 0, 0.0, cfg, taps)  # frame 0: measure
    assert used == pytest.approx(np.quantile(sample, 0.2), rel=1e-6)
    band = slice(0, h // fd.FLOOR_BANDS)
    floor = (used * white[band]).astype(np.float32)
    np.testing.assert_allclose(variance[band], np.maximum(before[band], floor), rtol=1e-6)
    assert (variance[band] > before[band]).any() and (variance[band] == before[band]).any()
    np.testing.assert_array_equal(variance[band.stop:], before[band.stop:])  # other rows: later
    # the next frame floors the next band with the ratio it was given, measuring nothing
    again = variance.copy()
    assert fd.keep_variance_floor(again, model, *ages, 1, 0.9, cfg, taps) == 0.9
    rows = slice(h // fd.FLOOR_BANDS, 2 * h // fd.FLOOR_BANDS)
    np.testing.assert_allclose(again[rows], np.maximum(variance[rows], (0.9 * white[rows]).astype(np.float32)),
                               rtol=1e-6)
    # no floor while no cell is mature, nor when it is off
    young = variance.copy()
    assert fd.keep_variance_floor(young, model, np.ones(h, np.uint16), ages[1], 0, 0.0, cfg, taps) == 0.0
    np.testing.assert_array_equal(young, variance)
    off = replace(cfg, variance_floor_quantile=0.0)
    assert fd.keep_variance_floor(young, model, *ages, 0, 0.0, off, taps) == 0.0
    np.testing.assert_array_equal(young, variance)


def test_hold_window_spans_the_cells_as_old_as_the_age_or_the_oldest():
    rows = np.array([1, 3, 40, 40, 40, 2], np.uint16)
    cols = np.array([40, 40, 40, 7, 1], np.uint16)
    assert fd.hold_window(rows, cols, 32) == (2, 5, 0, 3)
    assert fd.hold_window(rows, cols, 0) == (0, 6, 0, 5)        # off: everywhere
    # early on every cell is young; the seed's, the oldest, hold from the start
    assert fd.hold_window(np.array([5, 5, 2], np.uint16), np.array([1, 5, 5], np.uint16), 32) == (0, 2, 1, 3)


def test_cells_entering_view_in_heavy_cloud_do_not_hold_a_variance_too_low():
    # regression: a development heavy-cloud scene drifting 1.4 px/frame made 20 false alarms a
    # frame in the strip of cells entering view, whose variance, held from their first frame
    # while it was still too low, stayed too low.  The same scene's kind, noise and drift here.
    base = draw_scene(family_seed(20, False), 1024)
    for seed in (1, 2):
        scene = replace(base, width=320, height=320, n_targets=8, seed=seed)
        sim = SceneSimulator(scene)
        pairs = [sim.frame(i) for i in range(80)]
        false_alarms, found = {}, {}
        for age in (0, DetectorConfig().variance_hold_age):
            det = Detector(DetectorConfig(variance_hold_age=age), (320, 320), sim.calibration_bad_pixels())
            false_alarms[age] = found[age] = 0
            for i, (frame, truth) in enumerate(pairs):
                got = det.process(frame)
                if i >= 10:
                    matched, used = match(got, truth, 2.0)
                    false_alarms[age] += int((~used).sum())
                    found[age] += int((matched >= 0).sum())
        held_always, held_when_old = false_alarms[0] / 70, false_alarms[DetectorConfig().variance_hold_age] / 70
        assert held_always > 5.0 and held_when_old < 0.35 * held_always, (seed, false_alarms)
        assert found[DetectorConfig().variance_hold_age] >= found[0]


def test_quality_holds_over_time():
    # regression: model holes (dead pixels copied into new cells) and a variance learnt from
    # the zero fill outside the model once made false alarms grow with time
    sim = SceneSimulator(SceneConfig(kind="clear", seed=3, n_targets=8))
    det = Detector(DetectorConfig(), (256, 256), sim.calibration_bad_pixels())
    late_false = 0
    for i in range(150):
        frame, truth = sim.frame(i)
        got = det.process(frame)
        if i >= 100:
            d = np.hypot(got["x"][:, None] - truth["x"][None, :], got["y"][:, None] - truth["y"][None, :])
            late_false += int((d.min(axis=1, initial=99.0) > 1.5).sum())
    assert late_false / 50 <= 0.5
    assert np.all(det.pipeline.variance > 10.0)  # nowhere learnt from the zero fill


def test_close_targets_are_both_reported():
    # two PSFs 4 px apart share one component; each is a peak of its own
    h, w = 40, 40
    yy, xx = np.mgrid[:h, :w]
    res = np.zeros((h, w), np.float32)
    for x0 in (18.0, 22.0):
        res += (400 * np.exp(-((xx - x0) ** 2 + (yy - 20.0) ** 2) / 2)).astype(np.float32)
    z = detection_ref.filter_separable(res, fd.filter_taps(DetectorConfig())) / np.float32(10.0)
    index, zs, rows, labels, sizes, dense, n = label_sparse(z, np.zeros((h, w), np.uint8), 5.0)
    peaks = np.empty(16, np.int32)
    m = tk.find_peaks(index, zs, labels, rows, len(index), w, 1, peaks)
    assert n == 1 and m == 2
    assert sorted(int(index[p]) % w for p in peaks[:m]) == [18, 22]


def test_cosmic_ray_tracks_are_rejected_on_their_line_but_sharp_optics_are_kept():
    # a track of three pixels at a grazing angle is not sharp by the peak-over-3x3 test
    # (1 / (0.7 + 1 + 0.8) = 0.4 around its middle pixel), but it puts nearly all of the 3x3
    # on one line, which no PSF of sigma >= 0.6 px does, at any sub-pixel phase
    sim = SceneSimulator(SceneConfig(kind="clear", n_targets=0, cosmic_rate=0.0, seed=8))
    cfg = DetectorConfig()
    dets = [module.Detector(cfg, (256, 256), sim.calibration_bad_pixels())
            for module in (detection, detection_ref)]
    for i in range(12):
        for det in dets:
            det.process(sim.frame(i)[0])
    frame = sim.frame(12)[0].astype(np.float64)
    tracks = [(40, 50, 0, 1), (100, 200, 1, 0), (180, 30, 1, 1), (60, 150, 1, -1)]
    for y, x, dy, dx in tracks:
        for step, share in enumerate((0.7, 1.0, 0.8)):
            frame[y + step * dy, x + step * dx] += 2500.0 * share
    yy, xx = np.mgrid[:256, :256]
    sources = [(120.3, 80.6), (200.5, 180.5), (30.0, 220.0)]
    for y, x in sources:  # the sharpest optics the detector is built for, three phases
        frame += 2500.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * 0.6**2))
    frame = np.clip(frame, 0, 65535).astype(np.uint16)
    got = [det.process(frame) for det in dets]
    assert got[0].tobytes() == got[1].tobytes()
    table = dets[0].pipeline.table
    near_track = [np.hypot(table[:, 0] - (x + dx), table[:, 1] - (y + dy)).min() < 2.0
                  for y, x, dy, dx in tracks]
    assert all(near_track)  # each track was a candidate ...
    for y, x, dy, dx in tracks:  # ... and none is reported
        assert not np.any(np.hypot(got[0]["x"] - (x + dx), got[0]["y"] - (y + dy)) < 3.0)
    lines = table[:, detection.LINE_COLUMN]
    sharp = table[:, detection.SHARPNESS_COLUMN]
    at_tracks = np.array([np.hypot(table[:, 0] - (x + dx), table[:, 1] - (y + dy)).argmin()
                          for y, x, dy, dx in tracks])
    assert (lines[at_tracks] > 0.9).all() and (sharp[at_tracks] < cfg.max_sharpness).all()
    for y, x in sources:
        hit = np.hypot(got[0]["x"] - x, got[0]["y"] - y)
        assert hit.min() < 0.5
        row = np.hypot(table[:, 0] - x, table[:, 1] - y).argmin()
        assert lines[row] < 0.7 and sharp[row] < cfg.max_sharpness
    # with the line test off, the tracks the sharpness test lets pass come back
    off = detection.Detector(replace(cfg, max_line_fraction=1.0), (256, 256), sim.calibration_bad_pixels())
    for i in range(12):
        off.process(sim.frame(i)[0])
    kept = off.process(frame)
    assert all(np.any(np.hypot(kept["x"] - (x + dx), kept["y"] - (y + dy)) < 3.0)
               for y, x, dy, dx in tracks)


def test_seed_marks_dead_pixels_and_spikes_but_not_sources_or_border_ones():
    rng = np.random.default_rng(5)
    h, w = 40, 48
    field = smooth_field(rng, h, w) + rng.normal(0, 40, (h, w))
    yy, xx = np.mgrid[:h, :w]
    # a bright source as sharp as the optics allow (PSF sigma 0.6 px): a target, not a defect
    field += 20000.0 * np.exp(-((yy - 30) ** 2 + (xx - 12) ** 2) / (2 * 0.6**2))
    frame = np.clip(field, 0, 65535).astype(np.uint16)
    frame[20, 30] = 3  # dead, in the interior
    frame[0, 10] = 3  # dead, on the border: its neighbours lie on one side only
    frame[10, 10] = 60000  # a lone hot pixel: no optics put all of a source in one pixel
    frame[25, 40] = frame[26, 40] = 9000  # a cosmic ray across two pixels, neither alone sharp
    cfg = DetectorConfig()
    for module in (detection, detection_ref):
        det = module.Detector(cfg, (h, w))
        det.process(frame)
        p = det.pipeline
        flagged = np.argwhere(p.bad != 0).tolist()
        assert flagged == [[10, 10], [20, 30], [25, 40], [26, 40]]
        assert (p.bad[p.bad != 0] == tk.BAD_BITS["detected"]).all()
        assert p.hot_score[20, 30] == -20.0 and np.count_nonzero(p.hot_score) == 4
        assert p.hot_score[10, 10] == p.hot_score[25, 40] == p.hot_score[26, 40] == 20.0
        # the seed model has no hole and no spike: each is repaired from its good neighbours
        block = frame[19:22, 29:32].astype(np.float64)
        assert p.model[20, 30] == np.median(np.delete(block.ravel(), 4))
        block = frame[9:12, 9:12].astype(np.float64)
        assert p.model[10, 10] == np.median(np.delete(block.ravel(), 4))
        assert p.model[25, 40] < 5000 and p.model[26, 40] < 5000
        assert p.model[30, 12] == frame[30, 12]  # the source stays in the model
    # a pixel the calibration map lists is not marked a second time
    det = Detector(cfg, (h, w), np.pad(np.ones((1, 1), bool), ((20, h - 21), (30, w - 31))))
    det.process(frame)
    assert det.pipeline.bad[20, 30] == tk.BAD_BITS["calibration"]
    assert det.pipeline.hot_score[20, 30] == 0


def test_unlisted_hot_pixels_in_the_seed_do_not_hold_the_registration():
    # regression: the seed frame's unlisted hot pixels stayed in the scene-fixed model, where
    # their spikes dominated the registration's gradients; being fixed on the sensor they
    # pulled the measured shift towards zero, and on a low-contrast clear scene the
    # registration lost most of the jitter (0.42-0.52 px rms frame to frame here, 0.27-0.31
    # without the hot pixels, which is what it is now)
    errors = []
    for seed in (1, 2, 3):
        sim = SceneSimulator(SceneConfig(
            kind="clear", seed=seed, width=256, height=256, n_targets=6, terrain=(0.04, 2.6),
            hot_pixel_fraction=2e-3, hot_listed_fraction=0.0, cosmic_rate=0.0, jitter_rms=0.3))
        det = Detector(DetectorConfig(), (256, 256), sim.calibration_bad_pixels())
        for i in range(30):
            det.process(sim.frame(i)[0])
            if i > 5:
                true_shift = np.subtract(sim.platform_offset(i), sim.platform_offset(i - 1))
                errors.append(det.pipeline.shift - true_shift)
        hot = sim.defective_pixels() & ~sim.calibration_bad_pixels()
        assert np.mean(det.pipeline.bad[1:-1, 1:-1][hot[1:-1, 1:-1]] != 0) > 0.95
    assert np.sqrt(np.mean(np.square(errors))) < 0.36


def test_unlisted_dead_pixels_make_no_false_alarms():
    # regression: without the calibration map the seed frame put each dead pixel's hole into
    # the scene-fixed model; the drift then showed it to good pixels as a bright point for the
    # whole run (1.56 false alarms/frame here), held in place by the hold under candidates
    _, _, fa_per_frame, det, sim = run_scene("cloudy", 80, calibration=False)
    assert fa_per_frame <= 0.3
    frame0 = sim.frame(0)[0]
    dead = sim.defective_pixels() & (frame0 < 500)
    assert dead[1:-1, 1:-1].sum() >= 5
    assert ((det.pipeline.bad[dead] & tk.BAD_BITS["detected"]) != 0).all()


def test_temporal_detector_equals_reference_without_the_map():
    sim = SceneSimulator(SceneConfig(kind="cloudy", width=64, height=48, seed=4, n_targets=4,
                                     dead_pixel_fraction=3e-3, drift=(1.3, -0.9)))
    cfg = DetectorConfig(k_sigma=4.0)
    det, ref = Detector(cfg, (48, 64)), detection_ref.Detector(cfg, (48, 64))
    for i in range(6):
        frame = sim.frame(i)[0]
        assert_same_detections(det.process(frame), ref.process(frame))
        np.testing.assert_array_equal(det.pipeline.model, ref.pipeline.model)
        np.testing.assert_array_equal(det.pipeline.bad, ref.pipeline.bad)
        np.testing.assert_array_equal(det.pipeline.hot_score, ref.pipeline.hot_score)
    assert (det.pipeline.bad & tk.BAD_BITS["detected"]).any()


def jump_errors(seed, config, frames=60):
    """(frame-to-frame registration errors (px) from frame 6, most detections in a frame once
    settled, frames tried again) on a 256^2 cloudy scene shaken by a jitter of 1 px rms."""
    sim = SceneSimulator(SceneConfig(kind="cloudy", seed=seed, width=256, height=256, n_targets=6,
                                     jitter_rms=1.0, drift=(0.2, -0.1)))
    det = Detector(config, (256, 256), sim.calibration_bad_pixels())
    errors, most = [], 0
    for i in range(frames):
        got = det.process(sim.frame(i)[0])
        if i > 5:
            true_shift = np.subtract(sim.platform_offset(i), sim.platform_offset(i - 1))
            errors.append(np.hypot(*(det.pipeline.shift - true_shift)))
        if i >= config.settle_frames:  # before, the sources the seed kept out are found too
            most = max(most, len(got))
    return np.array(errors), most, det.pipeline.registration_retries


@pytest.mark.parametrize("seed", [1, 2])
def test_registration_tried_again_after_a_jump_beyond_its_reach(seed):
    # reference: the simulator's platform offsets.  Jumps of up to 4 px took the local
    # Gauss-Newton registration to a wrong shift on 6-8 frames of 60 here, each with
    # 140-256 false alarms; a wrong shift keeps fewer points within the clip
    errors, most, retries = jump_errors(seed, DetectorConfig(register_retry=0.0, register_block=0))
    assert (errors > 0.2).sum() >= 4 and most > 100 and retries == 0
    errors, most, retries = jump_errors(seed, DetectorConfig())
    assert (errors > 0.2).sum() == 0 and np.sqrt(np.mean(errors**2)) < 0.06
    assert most <= 10 and 1 <= retries <= 15  # retried on a quarter of the frames at most


def test_a_wrong_shift_that_keeps_most_inliers_is_tried_again():
    # regression: with 1 px rms of jitter and a sharp PSF (a development cloudy scene's, here at
    # 320^2), a jump settled 0.5-1 px off while keeping 95-97 % of the usual inliers, over the
    # old retry fraction of 0.95, and made up to 250 false alarms each time
    base = draw_scene(family_seed(79, False), 1024)
    scene = replace(base, width=320, height=320, n_targets=6, seed=3)
    sim = SceneSimulator(scene)
    frames = [sim.frame(i)[0] for i in range(80)]

    def run(retry, block=DetectorConfig().register_block):
        det = Detector(DetectorConfig(register_retry=retry, register_block=block), (320, 320),
                       sim.calibration_bad_pixels())
        errors, most = [], 0
        for i, frame in enumerate(frames):
            got = det.process(frame)
            if i > 5:
                true_shift = np.subtract(sim.platform_offset(i), sim.platform_offset(i - 1))
                errors.append(np.hypot(*(det.pipeline.shift - true_shift)))
                most = max(most, len(got))
        return np.array(errors), most

    errors, most = run(0.95, block=0)
    assert (errors > 0.2).sum() >= 4 and most > 50
    errors, most = run(DetectorConfig().register_retry)
    assert (errors > 0.2).sum() == 0 and most <= 10


def test_registration_tried_again_equals_reference():
    sim = SceneSimulator(SceneConfig(kind="cloudy", width=64, height=48, seed=2, n_targets=3,
                                     jitter_rms=1.5, drift=(0.2, -0.1)))
    cfg = DetectorConfig(k_sigma=4.0)
    det, ref = Detector(cfg, (48, 64)), detection_ref.Detector(cfg, (48, 64))
    for i in range(8):
        frame = sim.frame(i)[0]
        assert_same_detections(det.process(frame), ref.process(frame))
        np.testing.assert_allclose(det.pipeline.offset, ref.pipeline.offset, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(det.pipeline.model, ref.pipeline.model)
    assert det.pipeline.registration_retries == ref.pipeline.registration_retries >= 1


def point_frames(count, seed=9):
    """Noisy frames (sigma 10) of a smooth still scene (slopes, for the registration)
    with one source fixed in it at (y, x) = (20, 30) and one moving 0.5 px/frame from
    (34, 12), both of peak 300 counts."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :64]
    scene = 1000.0 + 10.0 * xx + 8.0 * yy + 30.0 * np.sin(xx / 9.0) * np.cos(yy / 11.0)
    for i in range(count):
        img = scene + rng.normal(0, 10.0, (48, 64))
        for y, x in ((20.0, 30.0), (34.0, 12.0 + 0.5 * i)):
            img += 300.0 * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0)
        yield np.rint(img).astype(np.uint16)


def test_seed_sources_kept_out_and_learned_equal_reference():
    # reference: the numpy twin, through the seed's compact sources kept out of the model and
    # the learning, at seed_check, of the one still in place (its cells take back the seed
    # frame's values, exactly); and the scene: the fixed source is learned, the moving one
    # (0.5 px/frame) never was, not at seed_check nor at the second look, 3 seed_check
    cfg = DetectorConfig(k_sigma=4.0, seed_check=5, read_noise=10.0, gain=1e9, register_stride=2)
    det, ref = Detector(cfg, (48, 64)), detection_ref.Detector(cfg, (48, 64))
    found = []
    frames = list(point_frames(20))
    for i, frame in enumerate(frames):
        got = det.process(frame)
        assert_same_detections(got, ref.process(frame))
        np.testing.assert_array_equal(det.pipeline.model, ref.pipeline.model)
        np.testing.assert_array_equal(det.pipeline.variance, ref.pipeline.variance)
        if i == 0:
            np.testing.assert_array_equal(det.pipeline.seed_sources.peaks, [[20, 30], [34, 12]])
            np.testing.assert_array_equal(det.pipeline.seed_sources.peaks, ref.pipeline.seed_sources.peaks)
            assert det.pipeline.model[20, 30] < frame[20, 30] - 200  # kept out
        if i == cfg.seed_check:
            box = (slice(17, 24), slice(27, 34))
            np.testing.assert_array_equal(det.pipeline.model[box], frames[0][box].astype(np.float32))
            np.testing.assert_array_equal(det.pipeline.lagged[box], frames[0][box].astype(np.float32))
            np.testing.assert_array_equal(det.pipeline.seed_sources.peaks, [[34, 12]])
        found.append(sorted((round(float(y)), round(float(x))) for y, x in got[["y", "x"]]))
    assert det.pipeline.seed_learned == ref.pipeline.seed_learned == 1
    assert len(det.pipeline.seed_sources) == 0  # watched no longer
    assert all((20, 30) in f for f in found[1:6])  # kept out of the model until seed_check
    assert all((20, 30) not in f for f in found[6:])  # then learned as the scene
    assert all(any(y == 34 for y, _ in f) for f in found[1:])  # the mover, all along


@pytest.mark.parametrize("clip", [1.5, 1.75, 2.5])
def test_the_clipped_variance_update_settles_on_the_true_variance(clip):
    # reference: the noise's own variance.  The update as the pass does it, v <- (1 - a) v +
    # a g min(F^2, c^2 v), on seeded Gaussian F of variance 4: with the gain it settles on 4;
    # without it, low (0.90 at c = 2, 0.83 at 1.5: a threshold lowered by the back door)
    rng = np.random.default_rng(11)
    f2 = rng.normal(0.0, 2.0, 400_000) ** 2
    rate = 0.03
    for gain, low, high in ((fd.variance_gain(clip), 0.97, 1.03), (1.0, 0.0, 0.985)):
        v, seen = 4.0, []
        for i, x in enumerate(f2):
            v = (1.0 - rate) * v + rate * gain * min(x, clip * clip * v)
            if i >= 1000:
                seen.append(v)
        assert low * 4.0 <= np.mean(seen) <= high * 4.0, (clip, gain, np.mean(seen))


def test_a_seed_source_moved_if_its_detections_lie_on_a_moving_line():
    # reference: hand-made detection offsets (px) of four sources over 9 frames: a target at
    # 0.1 px/frame with 0.1 px noise; a cloud feature hopping between two peaks 1 px apart;
    # one at rest with 0.2 px noise; a target seen in 3 frames only (too few to tell)
    cfg = DetectorConfig(seed_check=9, seed_still=0.45, seed_motion_sigma=4.0)
    rng = np.random.default_rng(3)
    sources = fd.SeedSources(np.array([[10, 10], [20, 20], [30, 30], [40, 40]]), np.zeros((64, 64)),
                             cfg.seed_ring, 27)
    t = np.arange(9.0)
    sources.seen[0, :9] = np.column_stack([0.1 * t, -0.05 * t]) + rng.normal(0, 0.1, (9, 2))
    sources.seen[1, :9] = np.where((t % 2 == 0)[:, None], [0.0, 0.0], [1.0, 0.0])
    sources.seen[2, :9] = rng.normal(0, 0.2, (9, 2))
    sources.seen[3, :3] = [[0.0, 0.0], [0.5, 0.0], [1.0, 0.0]]
    assert sources.moving(cfg).tolist() == [True, False, False, False]
    # the same target, slower than seed_still over the frames seen: learned
    assert not fd.SeedSources.moving(sources, DetectorConfig(seed_still=1.5))[0]


def test_compact_sources_find_a_point_but_not_an_edge_or_a_slope():
    # reference: a hand-made scene: white noise (sigma 10) on a slope, a sharp step edge,
    # and one Gaussian point source of peak 12 sigma at (20, 40)
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[:64, :96]
    level = 500.0 + 3.0 * xx + 400.0 * (xx > 70) + rng.normal(0, 10.0, (64, 96))
    level += 120.0 * np.exp(-((yy - 20) ** 2 + (xx - 40) ** 2) / 2.0)
    cfg = DetectorConfig(read_noise=10.0, gain=1e9)
    taps = fd.filter_taps(cfg)
    peaks = fd.compact_sources(level, cfg, taps)
    assert peaks.tolist() == [[20, 40]]
    model, kept_out = fd.without_compact_sources(level, cfg, taps)
    np.testing.assert_array_equal(kept_out, peaks)
    # the source is gone; what replaced it is the slope, within the noise
    box = (slice(17, 24), slice(37, 44))
    truth = 500.0 + 3.0 * xx[box]
    assert np.abs(model[box] - truth).max() < 15.0
    np.testing.assert_array_equal(model[:, 50:], level[:, 50:].astype(np.float32))


@pytest.mark.parametrize("kind, least", [("clear", 0.55), ("cloudy", 0.3)])
def test_persistence_finds_faint_slow_targets_the_model_would_learn(kind, least):
    # reference: simulator truth.  SNR 5 targets at 0.1 px/frame, born through the run:
    # they stay on the same scene cells for frames on end.  Without the persistence the
    # model and the variance learn them (0.52-0.54 clear, 0.27-0.29 cloudy here, since the
    # noise is re-measured after the seed; 0.44-0.54 and 0.19-0.21 before); with it they are
    # held and found (0.59-0.63, 0.49-0.55), at the same false alarms
    # (seed_check 0 in both: the targets in view from the seed frame are learned by both, and
    # the test sees the persistence alone)
    off = DetectorConfig(persist_hold=1.5, persist_detect=1.5, seed_check=0)
    scene = dict(kind=kind, width=128, height=128, n_targets=6, snr_values=(5.0,),
                 speed_range=(0.1, 0.1), target_lifetime=70)
    without = [scene_pd(off, frames=150, seed=seed, **scene) for seed in (11, 12)]
    with_ = [scene_pd(DetectorConfig(seed_check=0), frames=150, seed=seed, **scene) for seed in (11, 12)]
    pd_without = np.mean([pd for pd, _ in without])
    pd_with = np.mean([pd for pd, _ in with_])
    assert pd_with >= least and pd_with >= pd_without + 0.06
    assert max(fa for _, fa in with_) <= max(fa for _, fa in without) + 0.05


@pytest.mark.parametrize("true_sigma", [5.0, 10.0, 40.0])
def test_seed_noise_scale_is_measured_from_the_frame(true_sigma):
    # reference: the variance the frame was drawn with, over the hinted one (read noise 10,
    # no shot noise): the hints are scaled to the data, on a slope too
    rng = np.random.default_rng(7)
    xx = np.mgrid[:128, :128][1]
    frame = np.rint(1000.0 + 4.0 * xx + rng.normal(0, true_sigma, (128, 128))).astype(np.uint16)
    cfg = DetectorConfig(read_noise=10.0, gain=1e9)
    scale = fd.seed_noise_scale(frame, np.zeros((128, 128), np.uint8), cfg)
    assert scale == pytest.approx((true_sigma / 10.0) ** 2, rel=0.15)
    sensor = fd.noise_hints(cfg, scale)
    assert sensor.read_noise == pytest.approx(10.0 * np.sqrt(scale))


def scene_pd(config, frames=60, **scene):
    """Fraction of target-frames matched (1.5 px) after 10 warm-up frames, and false alarms
    per frame, of the flight detector on a simulated development scene."""
    sim = SceneSimulator(SceneConfig(**scene))
    det = Detector(config, (sim.config.height, sim.config.width), sim.calibration_bad_pixels())
    hits = total = false = 0
    for i in range(frames):
        frame, truth = sim.frame(i)
        got = det.process(frame)
        if i < 10:
            continue
        used, distances = match_greedy(got, truth)
        hits += sum(d is not None for d in distances)
        total += len(truth)
        false += int((~used).sum())
    return hits / total, false / (frames - 10)


@pytest.mark.parametrize("kind, speed, least, gain", [
    ("clear", 0.2, 0.85, 0.0), ("cloudy", 0.2, 0.85, 0.05), ("clear", 0.03, 0.6, None)])
def test_slow_targets_in_view_from_the_seed_frame_are_found(kind, speed, least, gain):
    # reference: simulator truth.  Six SNR 8 targets, every one already in the seed frame
    # and slow (0.2 px/frame, as a glide vehicle seen from orbit; 0.03, nearly still), on
    # four scenes.  With seed_check 0 the seed learns them, and they are found only once they
    # have moved off (clear 0.88, cloudy 0.85 here).  Kept out of the seed and learned only
    # if they did not move (SeedSources) they are found from the start (0.90, 0.94).  The
    # nearly still ones move less than seed_still over the watch and are learned either way
    # (0.73 against 0.73): only their floor is held
    scene = dict(kind=kind, width=128, height=128, n_targets=6, snr_values=(8.0,),
                 speed_range=(speed, speed), target_lifetime=400)
    seeds = (11, 12, 13, 14)
    kept = [scene_pd(DetectorConfig(), seed=seed, **scene) for seed in seeds]
    pd_kept = np.mean([pd for pd, _ in kept])
    assert pd_kept >= least
    if gain is not None:
        learned = [scene_pd(DetectorConfig(seed_check=0), seed=seed, **scene) for seed in seeds]
        assert pd_kept >= np.mean([pd for pd, _ in learned]) + gain
    assert max(fa for _, fa in kept) <= 0.5


def test_lagged_sources_takes_back_a_learned_point_source_but_not_cloud_or_young_cells():
    # reference: the snapshot itself.  A sloping scene; since the snapshot the model has
    # learned a compact source (PSF sigma 1, well above the difference's noise), a broad
    # brightening (cloud growing, sigma 6) and, in cells younger than the snapshot, another
    # compact source.  Only the first is taken back: the cells within seed_ring px take the
    # snapshot's value (the lower), the rest of the model is untouched
    h, w = 72, 80
    cfg = DetectorConfig(lag_frames=2)  # two bands: rows 0-35 at even frames, 36-71 at odd
    taps = fd.filter_taps(cfg)
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    lagged = (800.0 + 2.0 * xx).astype(np.float32)

    def blob(y, x, sigma, peak):
        return peak * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))
    model = (lagged + blob(20, 30, 1.0, 150.0) + blob(18, 60, 6.0, 150.0)
             + blob(24, 8, 1.0, 150.0)).astype(np.float32)
    variance = np.full((h, w), 100.0, np.float32)
    row_age = np.full(h, 50, np.uint16)
    col_age = np.r_[np.full(12, 2), np.full(w - 12, 50)].astype(np.uint16)  # columns 0-11 new
    before, snapshot = model.copy(), lagged.copy()
    assert fd.lagged_sources(model, lagged, variance, row_age, col_age, 0, cfg, taps) == 1
    box = (slice(17, 24), slice(27, 34))
    np.testing.assert_array_equal(model[box], np.minimum(before[box], snapshot[box]))
    assert np.abs(model[box] - snapshot[box]).max() < 0.5  # the source is gone
    rest = np.ones((h, w), bool)
    rest[box] = False
    np.testing.assert_array_equal(model[rest], before[rest])  # cloud and young cells kept
    np.testing.assert_array_equal(lagged[:36], model[:36])  # the band's snapshot refreshed
    np.testing.assert_array_equal(lagged[36:], snapshot[36:])  # the other band's kept
    # the other band holds nothing new; off, nothing is checked nor refreshed
    assert fd.lagged_sources(model, lagged, variance, row_age, col_age, 1, cfg, taps) == 0
    np.testing.assert_array_equal(lagged, model)
    again = (snapshot + blob(50, 40, 1.0, 150.0)).astype(np.float32)
    kept = snapshot.copy()
    assert fd.lagged_sources(again, kept, variance, row_age, col_age, 1,
                             replace(cfg, lag_frames=0), taps) == 0
    np.testing.assert_array_equal(kept, snapshot)
    # the same source below lag_sigma of the difference's noise is left alone
    faint = (snapshot + blob(50, 40, 1.0, 6.0)).astype(np.float32)
    assert fd.lagged_sources(faint, snapshot.copy(), variance, row_age, col_age, 1, cfg, taps) == 0
    assert fd.lagged_sources(again, snapshot.copy(), variance, row_age, col_age, 1, cfg, taps) == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(8, 48), st.integers(1, 6), st.integers(0, 2**32 - 1),
       st.sampled_from([2, 3, 4]), st.booleans(), st.integers(1, 4))
def test_the_kernels_lagged_band_equals_numpys_bit_for_bit(h, w, lag, seed, ring, sparse, radius):
    # reference: lagged_band (numpy).  Random model and snapshot with compact sources (so some
    # cells pass and are taken back), ages either side of lag, 3 to 9 filter taps, and, when
    # sparse, a difference that is exactly zero almost everywhere (the signed zeros of the sums)
    rng = np.random.default_rng(seed)
    cfg = DetectorConfig(lag_frames=lag, seed_ring=ring, filter_radius=radius)
    taps = fd.filter_taps(cfg)
    lagged = rng.normal(1000.0, 30.0, (h, w)).astype(np.float32)
    step = rng.normal(0.0, 1.0, (h, w)) * (rng.random((h, w)) < 0.1 if sparse else 1.0)
    model = (lagged + step + 200.0 * (rng.random((h, w)) < 0.02)).astype(np.float32)
    variance = rng.uniform(0.5, 20.0, (h, w)).astype(np.float32)
    row_age = rng.integers(0, 2 * lag + 2, h).astype(np.uint16)
    col_age = rng.integers(0, 2 * lag + 2, w).astype(np.uint16)
    band = fd.LaggedBand((h, w), cfg, taps)
    for frame_index in range(lag):
        rows = fd.band_rows(frame_index, h, lag)
        margin = len(taps) // 2 + ring
        a0, a1 = max(rows.start - margin, 0), min(rows.stop + margin, h)
        if rows.start < rows.stop:
            args = (model, lagged, variance, row_age, col_age, a0, a1, rows.start, rows.stop, cfg, taps)
            want, got = fd.lagged_band(*args), band(*args)
            assert want[0].tobytes() == got[0].tobytes()  # signed zeros too
            np.testing.assert_array_equal(want[1], got[1])
            np.testing.assert_array_equal(want[2], got[2])
        m_ref, l_ref = model.copy(), lagged.copy()
        taken = fd.lagged_sources(m_ref, l_ref, variance, row_age, col_age, frame_index, cfg, taps)
        assert fd.lagged_sources(model, lagged, variance, row_age, col_age, frame_index, cfg, taps,
                                 band) == taken
        np.testing.assert_array_equal(model, m_ref)
        np.testing.assert_array_equal(lagged, l_ref)


def test_lagged_band_refuses_a_band_outside_the_model():
    cfg = DetectorConfig(lag_frames=4)
    taps = fd.filter_taps(cfg)
    state = np.zeros((16, 16), np.float32)
    ages = np.full(16, 9, np.uint16)
    band = fd.LaggedBand((16, 16), cfg, taps)
    with pytest.raises(ValueError, match="a0 <= y0"):
        band(state, state, state, ages, ages, 4, 20, 4, 8, cfg, taps)
    with pytest.raises(ValueError, match="a0 <= y0"):
        band(state, state, state, ages, ages, 6, 12, 4, 8, cfg, taps)


def test_temporal_detector_equals_reference_while_taking_back_learned_sources():
    # slow SNR 8 targets in view from the seed frame, on a drifting cloudy scene: the model
    # learns them and lagged_sources (every 8 frames here) takes them back, on both paths
    sim = SceneSimulator(SceneConfig(kind="cloudy", width=88, height=96, seed=11, n_targets=6,
                                     snr_values=(8.0,), speed_range=(0.1, 0.1),
                                     target_lifetime=400, drift=(0.4, -0.3)))
    det, ref = run_with_twin(sim, DetectorConfig(lag_frames=8), 48)
    assert det.pipeline.sources_taken_back == ref.pipeline.sources_taken_back > 0
    np.testing.assert_array_equal(det.pipeline.model, ref.pipeline.model)
    np.testing.assert_array_equal(det.pipeline.lagged, ref.pipeline.lagged)


def test_slow_targets_the_model_learned_in_cloud_are_taken_back_and_found():
    # reference: simulator truth.  Six SNR 8 targets at 0.1 px/frame, all in view from the
    # seed frame, on cloud: the model learns them.  With lagged_sources 77 % of the
    # target-frames of these three scenes are found, against 74 % without, at the same false
    # alarms (54 % against 46 % before the noise was re-measured after the seed: the variance
    # started high and let less of the learned targets through either way)
    def run(config):
        return [scene_pd(config, frames=150, kind="cloudy", width=192, height=192, seed=seed,
                         n_targets=6, snr_values=(8.0,), speed_range=(0.1, 0.1),
                         target_lifetime=400) for seed in (11, 12, 13)]
    with_, without = run(DetectorConfig()), run(DetectorConfig(lag_frames=0))
    assert np.mean([pd for pd, _ in with_]) >= np.mean([pd for pd, _ in without]) + 0.02
    assert max(fa for _, fa in with_) <= max(fa for _, fa in without) + 0.02


def centroid_errors(fit_iterations, sigmas, seed=11):
    """Radial errors of measure_targets' position for one pixel-integrated Gaussian of peak SNR
    10 per width in `sigmas`, at a random sub-pixel place in unit white noise, the
    Cramer-Rao bound of each (hil.scoring.crb_radial's formula) and the bound the detection
    reports (sigma_x, made radial)."""
    from hil.scene import pixel_psf
    rng = np.random.default_rng(seed)
    taps = fd.filter_taps(DetectorConfig()).astype(np.float32)
    errors, bounds, reported = [], [], []
    for sigma in sigmas:
        x, y = rng.uniform(15.0, 16.0, size=2)
        flux = 10.0 * 2.0 * np.pi * sigma**2
        y0, x0, stamp = pixel_psf(x, y, sigma, flux, int(np.ceil(4 * sigma)))
        res = rng.normal(0.0, 1.0, (32, 32))
        res[y0:y0 + stamp.shape[0], x0:x0 + stamp.shape[1]] += stamp
        res = res.astype(np.float32)
        frame = (res + 1000).astype(np.uint16)
        z = detection_ref.filter_separable(res, taps) / np.float32(np.sum(taps**2))  # sigmas
        bad = np.zeros((32, 32), np.uint8)
        index, zs, rows, labels, sizes, dense, n = label_sparse(z.astype(np.float32), bad, 4.0)
        peaks = np.empty(max(len(index), 1), np.int32)
        m = tk.find_peaks(index, zs, labels, rows, len(index), 32, 2, peaks)
        table = np.empty((m, len(tk.COLUMNS)))
        # unit noise: read variance 1, no shot noise (inv_gain 0)
        tk.measure_targets(frame, res, taps, index, zs, labels, sizes, peaks, m, 2, 1.0, 1.0, 0.0,
                           table, bad, 3, fit_iterations)
        best = int(np.argmin(np.hypot(table[:, 0] - x, table[:, 1] - y)))
        errors.append(np.hypot(table[best, 0] - x, table[best, 1] - y))
        bounds.append(np.sqrt(2.0) * np.sqrt(8 * np.pi) * sigma**2 / flux)
        reported.append(np.sqrt(2.0) * table[best, 2])  # radial, from the per-axis column
    return np.array(errors), np.array(bounds), np.array(reported)


@pytest.mark.parametrize("widths", [(0.7, 1.0), (1.2, 2.0)])
def test_gaussian_fit_brings_the_centroid_near_the_cramer_rao_bound(widths):
    # the PSF is not the matched filter's (sigma 1) and its width is unknown: the log-parabola
    # vertex of the filter runs well above the bound; the fit of position, amplitude and width
    # comes near it, and does better than the vertex it starts from
    sigmas = np.random.default_rng(3).uniform(*widths, 300)
    vertex, bounds, assumed = centroid_errors(0, sigmas)
    fitted, _, reported = centroid_errors(DetectorConfig().centroid_fit_iterations, sigmas)
    rms = lambda e: float(np.sqrt(np.mean(e**2)))  # noqa: E731
    # (measured: vertex 1.19 and 1.22 times the bound, fit (2 steps) 1.11 and 1.04)
    assert rms(fitted) < 0.95 * rms(vertex), (rms(fitted), rms(vertex))
    assert rms(fitted) < 1.2 * rms(bounds), (rms(fitted), rms(vertex), rms(bounds))
    # the bound reported with a fitted position is the fitted Gaussian's, near the true one
    # whatever the width; without the fit it assumes psf_sigma (1 px) and the aperture's flux
    # (measured: 1.12 and 1.09 times the truth in the median; assumed, 1.40 and 0.51)
    ratio = np.median(reported / bounds)
    assert 0.85 < ratio < 1.2, ratio
    assert abs(np.median(assumed / bounds) - 1.0) > 0.35
