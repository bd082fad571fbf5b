"""Detection benchmarks: speed at 1024x1024 on one core, and quality on the same scenes,
against the peers named in the issue: an OpenCV pipeline (top-hat, threshold,
connectedComponentsWithStats), sep (Background + extract), and a numpy/scipy
temporal pipeline with registration.

    cd /work/main && /work/venv/bin/python -m pytest tests/perf/test_perf_detection.py -m perf -s

Speeds are medians (and means: the model re-anchoring every few frames shows there) over
frames, measured in the same run (shared, noisy machine); the flight detector's time is also
split by kernel stage.
"""
import time

import numpy as np
import pytest
from scipy import ndimage

from flight.detection import Detector, DetectorConfig
from flight.kernels import detect_temporal
from hil import metrics
from hil.scene import SceneConfig, SceneSimulator

cv2 = pytest.importorskip("cv2")
sep = pytest.importorskip("sep")

pytestmark = pytest.mark.perf

K_SIGMA = 5.0
MAD_TO_SIGMA = 1.482602218505602


def opencv_detector(shape, calibration):
    """Top-hat (7x7 ellipse) -> global robust k-sigma threshold -> 8-connected components."""
    cv2.setNumThreads(1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))

    def run(frame):
        hat = cv2.morphologyEx(frame, cv2.MORPH_TOPHAT, kernel)
        sample = hat[::8, ::8].astype(np.float32)
        med = float(np.median(sample))
        sigma = MAD_TO_SIGMA * float(np.median(np.abs(sample - med))) or 1.0
        mask = (hat > med + K_SIGMA * sigma).astype(np.uint8)
        n, _, stats, centroids = cv2.connectedComponentsWithStats(mask, connectivity=8)
        out = np.zeros(n - 1, [("x", "f4"), ("y", "f4"), ("snr", "f4")])
        out["x"], out["y"] = centroids[1:, 0], centroids[1:, 1]
        out["snr"] = stats[1:, cv2.CC_STAT_AREA]
        return out
    return run


def sep_detector(shape, calibration):
    """sep.Background (64 px meshes) -> subtract -> sep.extract at K_SIGMA x global rms."""
    mask = None if calibration is None else np.ascontiguousarray(calibration, dtype=bool)

    def run(frame):
        data = frame.astype(np.float32)
        bkg = sep.Background(data, mask=mask, bw=64, bh=64)
        data -= bkg.back()
        try:
            objs = sep.extract(data, K_SIGMA, err=bkg.globalrms, mask=mask, minarea=1)
        except Exception:  # sep raises on too many objects in heavy clutter
            return np.zeros(0, [("x", "f4"), ("y", "f4"), ("snr", "f4")])
        out = np.zeros(len(objs), [("x", "f4"), ("y", "f4"), ("snr", "f4")])
        out["x"], out["y"], out["snr"] = objs["x"], objs["y"], objs["peak"] / bkg.globalrms
        return out
    return run


def scipy_temporal_detector(shape, calibration, k_sigma=K_SIGMA, rate=0.05, var_rate=0.03):
    """numpy/scipy temporal pipeline, the straightforward way: Gauss-Newton registration on a
    sparse grid (ndimage.map_coordinates), the background model and the variance of the
    filtered residual shifted onto each new frame (ndimage.shift, linear), Gaussian matched
    filter (ndimage.gaussian_filter), k-sigma on the running noise map, ndimage.label and
    ndimage.maximum_position, one detection per component."""
    good = np.ones(shape, bool) if calibration is None else ~np.asarray(calibration, bool)
    gy, gx = np.mgrid[8:shape[0] - 8:4, 8:shape[1] - 8:4]
    gy, gx = gy.ravel().astype(np.float64), gx.ravel().astype(np.float64)
    grid_good = good[gy.astype(int), gx.astype(int)]
    gy, gx = gy[grid_good], gx[grid_good]
    state = {}

    def register(frame, model):
        # shift d with frame(p) ~ model(p + d)
        d = state.get("drift", np.zeros(2)).copy()
        values = frame[gy.astype(int), gx.astype(int)].astype(np.float64)
        for clip in (16.0, 8.0, 4.0):
            m, my0, my1, mx0, mx1 = (ndimage.map_coordinates(model, [gy + d[1] + oy, gx + d[0] + ox], order=1,
                                                              mode="nearest")
                                     for oy, ox in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)))
            r = values - m
            keep = r * r < clip * clip * (100.0 + np.maximum(m, 0.0))
            ggx, ggy = 0.5 * (mx1 - mx0)[keep], 0.5 * (my1 - my0)[keep]
            a = np.array([[ggx @ ggx, ggx @ ggy], [ggx @ ggy, ggy @ ggy]])
            if np.linalg.det(a) <= 0:
                break
            d += np.clip(np.linalg.solve(a, [ggx @ r[keep], ggy @ r[keep]]), -2, 2)
        return d

    def run(frame):
        data = frame.astype(np.float32)
        if "model" not in state:
            state["model"] = np.where(good, data, ndimage.median_filter(data, 3))
            # white shot+read noise through the 5x5 Gaussian (sum of squared taps 0.0824), doubled
            # because the first model is one noisy frame
            state["var"] = (2 * 0.0824 * (100.0 + np.maximum(data, 0.0))).astype(np.float32)
            return np.zeros(0, [("x", "f4"), ("y", "f4"), ("snr", "f4")])
        d = register(frame, state["model"])
        state["drift"] = d
        model = ndimage.shift(state["model"], (-d[1], -d[0]), order=1, mode="nearest")
        var = ndimage.shift(state["var"], (-d[1], -d[0]), order=1, mode="nearest")
        residual = np.where(good, data - model, 0.0).astype(np.float32)
        filtered = ndimage.gaussian_filter(residual, 1.0, truncate=2.0)
        z = filtered / np.sqrt(var)
        labels, n = ndimage.label((z > k_sigma) & good, structure=np.ones((3, 3)))
        sigma = np.sqrt(100.0 + np.maximum(model, 0.0))
        update = np.minimum(residual, 2.5 * sigma)
        update[labels > 0] = 0.0
        state["model"] = model + rate * update
        state["var"] = np.maximum((1 - var_rate) * var + var_rate * np.minimum(filtered**2, 6.25 * var), 1e-6)
        out = np.zeros(n, [("x", "f4"), ("y", "f4"), ("snr", "f4")])
        if n:
            idx = np.arange(1, n + 1)
            peaks = np.array(ndimage.maximum_position(z, labels, idx), np.float64).reshape(-1, 2)
            out["y"], out["x"] = peaks[:, 0], peaks[:, 1]
            out["snr"] = ndimage.maximum(z, labels, idx)
        return out
    return run


def frame_times(run, frames, warmup=3):
    """Per-frame wall times (ms) after warm-up."""
    for f in frames[:warmup]:
        run(f)
    times = []
    for f in frames[warmup:]:
        t0 = time.perf_counter()
        run(f)
        times.append(time.perf_counter() - t0)
    return 1e3 * np.array(times)


class StageClock:
    """Wall time per call of the flight detector's kernel stages (wraps the module functions
    for the duration of a with block)."""

    STAGES = ("register_shift", "detect_pass", "label_candidates", "find_peaks", "measure_targets")

    def __init__(self):
        from flight import detection
        self.targets = [(detection._temporal, n) for n in self.STAGES] + [(detection, "reanchor")]
        self.times = {n: [] for _, n in self.targets}

    def __enter__(self):
        self.saved = []
        for module, name in self.targets:
            fn = getattr(module, name)
            self.saved.append((module, name, fn))

            def timed(*args, _fn=fn, _name=name, **kwargs):
                t0 = time.perf_counter()
                out = _fn(*args, **kwargs)
                self.times[_name].append(time.perf_counter() - t0)
                return out
            setattr(module, name, timed)
        return self

    def __exit__(self, *exc):
        for module, name, fn in self.saved:
            setattr(module, name, fn)


@pytest.fixture(scope="module")
def frames_1024():
    sim = SceneSimulator(SceneConfig(kind="cloudy", width=1024, height=1024, seed=5, n_targets=40))
    return sim, [sim.frame(i)[0] for i in range(43)]


def test_speed_1024(frames_1024):
    sim, frames = frames_1024
    shape = frames[0].shape
    cal = sim.calibration_bad_pixels()
    flight = Detector(DetectorConfig(), shape, cal)
    single = Detector(DetectorConfig(mode="single"), shape, cal)
    with StageClock() as clock:
        flight_times = frame_times(flight.process, frames)
    baseline = Detector(DetectorConfig(simd="baseline"), shape, cal)
    runs = {
        f"flight temporal (ext/detect_temporal, {detect_temporal.best_isa()} path)": flight_times,
        "flight temporal, baseline path (SSE2 on x86_64)": frame_times(baseline.process, frames),
        "flight single-frame (ext/detect)": frame_times(single.process, frames),
        "OpenCV top-hat + threshold + CC": frame_times(opencv_detector(shape, cal), frames),
        "sep Background + extract": frame_times(sep_detector(shape, cal), frames),
        "numpy/scipy temporal with registration": frame_times(scipy_temporal_detector(shape, cal),
                                                              frames),
    }
    base = float(np.median(flight_times))
    print(f"\n1024x1024 cloudy, one core, ms/frame over {len(flight_times)} frames (after 3 warm-up);"
          f" instruction-set paths on this CPU: {', '.join(detect_temporal.isa_paths())}")
    print("| pipeline | median ms/frame | mean ms/frame | median ratio to flight temporal |")
    print("|---|---|---|---|")
    for name, t in runs.items():
        print(f"| {name} | {np.median(t):.2f} | {np.mean(t):.2f} | {np.median(t) / base:.2f} |")
    print("\nflight temporal, per stage (ms per call; reanchor runs only when the drift passes "
          "4 px)")
    print("| stage | calls | median | mean |")
    print("|---|---|---|---|")
    for name, t in clock.times.items():
        if t:
            print(f"| {name} | {len(t)} | {1e3 * np.median(t):.2f} | {1e3 * np.mean(t):.2f} |")
    assert base < 50.0  # sanity only; the 2 ms target is reported, not asserted


@pytest.mark.parametrize("kind", ["cloudy", "heavy"])
def test_quality_against_peers(kind):
    scene = metrics.scene_for(kind, 256, 3)
    frames = 200
    rows = {
        "flight temporal": metrics.evaluate(metrics.flight_detector(), scene, frames),
        "flight single-frame": metrics.evaluate(metrics.flight_detector(DetectorConfig(mode="single")),
                                                scene, frames),
        "OpenCV top-hat": metrics.evaluate(opencv_detector, scene, frames),
        "sep": metrics.evaluate(sep_detector, scene, frames),
        "numpy/scipy temporal": metrics.evaluate(scipy_temporal_detector, scene, frames),
    }
    print(f"\n{kind}, 256x256, {frames} frames ({metrics.WARMUP_FRAMES} warm-up), calibration map, "
          f"k = {K_SIGMA}")
    print("| detector | Pd@5 | Pd@8 | Pd@12 | Pd@20 | FA/frame |")
    print("|---|---|---|---|---|---|")
    for name, s in rows.items():
        print(f"| {name} | " + " | ".join(f"{s.pd(c):.3f}" for c in (5.0, 8.0, 12.0, 20.0))
              + f" | {s.fa_per_frame():.2f} |")
    flight = rows["flight temporal"]
    for name in ("OpenCV top-hat", "sep", "numpy/scipy temporal"):
        peer = rows[name]
        # the flight detector must beat each peer on Pd at SNR 8 or on false alarms
        assert flight.pd(8.0) >= peer.pd(8.0) or flight.fa_per_frame() <= peer.fa_per_frame()
