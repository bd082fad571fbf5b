"""Detection benchmarks: speed at 1024x1024 on one core, and quality at matched false-alarm
rates, against the peers named in the issue: an OpenCV pipeline (top-hat, local noise map,
threshold, connectedComponentsWithStats), sep (Background + extract) and a numpy/scipy
temporal pipeline with registration. It measures whatever flight.detection.Detector is.

    cd /work/main && . .venv/bin/activate && pytest tests/perf/test_perf_detection.py -m perf -s

Every detector gets what the flight detector gets: the calibration (bad pixel) map and a
local noise map to threshold against. OpenCV inpaints listed bad pixels (3x3 median), never
reports them, and thresholds the top-hat against its local mean and standard deviation
(box filter, NOISE_WINDOW px); sep takes the map as its mask and the rms map of its
Background (meshes of the flight detector's tile size) as err; the scipy pipeline masks bad
pixels and keeps a running per-pixel variance of its filtered residual.

Quality: thresholds differ in meaning from one detector to the next, so each detector is
run over the same 256x256 scene once per threshold in THRESHOLDS, highest first (each run
a full pass: the temporal pipelines' models see the threshold as they would in flight),
until it passes 1 false alarm per frame. Pd per SNR class is then interpolated, linearly
in FA/frame between the two runs that bracket it, at 1 and 0.1 false alarms per frame; a
detector that never gets that low is reported as NOT REACHED, with its closest run. The
sweeps are run twice: with the calibration map the flight has (the simulator lists half the
hot pixels), and with an oracle map listing every defective pixel, which shows the
single-frame peers in the clutter alone.

Speed: every detector at K_SIGMA, medians (and means: the model re-anchoring every few
frames shows there) of per-frame CPU times of the calling thread (tests/perf/timing.py),
pooled over ROUNDS rounds in which the pipelines take turns (shared, noisy machine); the
flight detector's time is also split by kernel stage, in a separate pass, where those
stages exist.

Checks before any figure: every pipeline finds the SNR 20 targets of a clear scene; the
flight detector equals its numpy twin on the first timed frames, and its two
instruction-set paths equal each other on all of them; every pipeline's output on the timed
frames is scored against the simulator's truth and printed beside its time.
"""
import numpy as np
import pytest
from scipy import ndimage

from flight import detection, detection_ref
from flight.detection import Detector, DetectorConfig
from hil import metrics
from hil.config import HilConfig
from hil.scene import SceneConfig, SceneSimulator
from hil.scoring import Score
from tests.perf.timing import clock

cv2 = pytest.importorskip("cv2")
sep = pytest.importorskip("sep")

pytestmark = pytest.mark.perf

K_SIGMA = DetectorConfig().k_sigma
THRESHOLDS = (40.0, 30.0, 24.0, 20.0, 16.0, 13.0, 11.0, 9.5, 8.0, 7.0, 6.0, 5.5, 5.0, 4.75, 4.5, 4.25, 4.0,
              3.75, 3.5, 3.25, 3.0)
FA_TARGETS = (1.0, 0.1)
ROUNDS = 3
SPEED_GOAL_MS = 1.5  # per 1024x1024 frame, one core (the goal was 2 ms before it was tightened)
NOISE_WINDOW = 31
TILE = DetectorConfig().tile_size
RECORD = np.dtype([("x", "f4"), ("y", "f4"), ("snr", "f4")])
HIL = HilConfig()


def flight_detector(k=K_SIGMA, **config):
    return metrics.flight_detector(DetectorConfig(k_sigma=k, **config))


def opencv_detector(k=K_SIGMA):
    """Bad pixels inpainted -> top-hat (7x7 ellipse) -> z against the local mean and standard
    deviation of the top-hat -> threshold, bad pixels cleared -> 8-connected components."""
    def make(shape, calibration):
        cv2.setNumThreads(1)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
        window = (NOISE_WINDOW, NOISE_WINDOW)
        bad = None if calibration is None else np.asarray(calibration, bool)

        def run(frame):
            if bad is not None:
                frame = np.where(bad, cv2.medianBlur(frame, 3), frame)
            hat = cv2.morphologyEx(frame, cv2.MORPH_TOPHAT, kernel).astype(np.float32)
            mean = cv2.blur(hat, window)
            var = cv2.blur(hat * hat, window) - mean * mean
            z = (hat - mean) / np.sqrt(np.maximum(var, 1.0))
            above = z > k
            if bad is not None:
                above &= ~bad
            n, _, _, centroids = cv2.connectedComponentsWithStats(above.view(np.uint8), connectivity=8)
            out = np.zeros(n - 1, RECORD)
            out["x"], out["y"] = centroids[1:, 0], centroids[1:, 1]
            iy = np.clip(np.rint(out["y"]).astype(int), 0, shape[0] - 1)
            ix = np.clip(np.rint(out["x"]).astype(int), 0, shape[1] - 1)
            out["snr"] = z[iy, ix]
            return out
        return run
    return make


def sep_detector(k=K_SIGMA):
    """sep.Background (masked, TILE px meshes) -> subtract -> sep.extract at k x the rms map."""
    def make(shape, calibration):
        mask = None if calibration is None else np.ascontiguousarray(calibration, dtype=bool)

        def run(frame):
            data = frame.astype(np.float32)
            bkg = sep.Background(data, mask=mask, bw=TILE, bh=TILE)
            rms = bkg.rms()
            data -= bkg.back()
            objs = sep.extract(data, k, err=rms, mask=mask, minarea=1)
            out = np.zeros(len(objs), RECORD)
            out["x"], out["y"] = objs["x"], objs["y"]
            out["snr"] = objs["peak"] / rms[objs["ypeak"], objs["xpeak"]]
            return out
        return run
    return make


def scipy_temporal_detector(k=K_SIGMA, rate=0.05, var_rate=0.03):
    """numpy/scipy temporal pipeline, the straightforward way: Gauss-Newton registration on a
    sparse grid (ndimage.map_coordinates), the background model and the variance of the
    filtered residual shifted onto each new frame (ndimage.shift, linear), Gaussian matched
    filter (ndimage.gaussian_filter), k-sigma on the running noise map, ndimage.label and
    ndimage.maximum_position, one detection per component."""
    def make(shape, calibration):
        return _scipy_temporal(shape, calibration, k, rate, var_rate)
    return make


def _scipy_temporal(shape, calibration, k_sigma, rate, var_rate):
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
            return np.zeros(0, RECORD)
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
        out = np.zeros(n, RECORD)
        if n:
            idx = np.arange(1, n + 1)
            peaks = np.array(ndimage.maximum_position(z, labels, idx), np.float64).reshape(-1, 2)
            out["y"], out["x"] = peaks[:, 0], peaks[:, 1]
            out["snr"] = ndimage.maximum(z, labels, idx)
        return out
    return run


# name -> threshold -> evaluate() factory
DETECTORS = {
    "flight temporal": flight_detector,
    "flight single-frame": lambda k=K_SIGMA: flight_detector(k, mode="single"),
    "OpenCV top-hat": opencv_detector,
    "sep": sep_detector,
    "numpy/scipy temporal": scipy_temporal_detector,
}
PEERS = ("OpenCV top-hat", "sep", "numpy/scipy temporal")


def frame_times(makes, shape, calibration, frames, rounds=ROUNDS, warmup=3):
    """Per-frame CPU times (ms) of each pipeline after warm-up, pooled over rounds. Each round
    gives every pipeline, fresh, the whole sequence in turn: load from other users of the
    machine is spread over all, and each keeps the caches it would have running alone."""
    times = [[] for _ in makes]
    for _ in range(rounds):
        for make, series in zip(makes, times):
            run = make(shape, calibration)
            for f in frames[:warmup]:
                run(f)
            for f in frames[warmup:]:
                t0 = clock()
                run(f)
                series.append(clock() - t0)
    return [1e3 * np.array(series) for series in times]


class StageClock:
    """CPU time per call of the flight detector's kernel stages: wraps, for the duration of a
    with block, those of the named module functions that exist (the detector may change)."""

    STAGES = ("register_shift", "register_blocks", "detect_pass", "label_candidates", "find_peaks",
              "measure_targets")

    def __init__(self):
        temporal = getattr(detection, "_temporal", None)
        # and the numpy stages around the kernels
        targets = [(temporal, n) for n in self.STAGES] + [
            (detection, n) for n in ("reanchor", "keep_variance_floor", "lagged_sources")]
        self.targets = [(m, n) for m, n in targets if callable(getattr(m, n, None))]
        self.times = {n: [] for _, n in self.targets}

    def __enter__(self):
        self.saved = []
        for module, name in self.targets:
            fn = getattr(module, name)
            self.saved.append((module, name, fn))

            def timed(*args, _fn=fn, _name=name, **kwargs):
                t0 = clock()
                out = _fn(*args, **kwargs)
                self.times[_name].append(clock() - t0)
                return out
            setattr(module, name, timed)
        return self

    def __exit__(self, *exc):
        for module, name, fn in self.saved:
            setattr(module, name, fn)


def score_frames(run, frames, truths, classes) -> Score:
    score = Score(classes=classes, radius=HIL.match_radius_px)
    for i, (frame, truth) in enumerate(zip(frames, truths)):
        dets = run(frame)
        if i >= HIL.warmup_frames:
            score.add(dets, truth)
    return score


def same_detections(got, want) -> bool:
    return len(got) == len(want) and all(
        np.allclose(got[name], want[name], rtol=1e-5, atol=1e-4) for name in got.dtype.names)


@pytest.fixture(scope="module")
def frames_1024():
    scene = SceneConfig(kind="cloudy", width=1024, height=1024, seed=5, n_targets=40)
    sim = SceneSimulator(scene)
    pairs = [sim.frame(i) for i in range(43)]
    return scene, sim.calibration_bad_pixels(), [f for f, _ in pairs], [t for _, t in pairs]


def test_speed_1024(frames_1024, working_detectors):
    scene, cal, frames, truths = frames_1024
    shape = frames[0].shape
    classes = tuple(scene.snr_values)
    temporal = getattr(detection, "_temporal", None)
    best_isa = getattr(temporal, "best_isa", lambda: "best")()
    paths = "simd" in DetectorConfig.__dataclass_fields__
    pipelines = {f"flight temporal ({best_isa} path)": flight_detector()}
    if paths:
        pipelines["flight temporal, baseline path (SSE2 on x86_64)"] = flight_detector(simd="baseline")
    pipelines.update({
        "flight single-frame": DETECTORS["flight single-frame"](),
        "OpenCV top-hat + local noise + CC": opencv_detector(),
        "sep Background + extract, rms map": sep_detector(),
        "numpy/scipy temporal with registration": scipy_temporal_detector(),
    })

    # Correctness first. The flight detector against its numpy twin (1.5 s a frame at this
    # size, so the seed frame and three more), its paths against each other on every frame.
    flight, twin = Detector(DetectorConfig(), shape, cal), detection_ref.Detector(DetectorConfig(), shape, cal)
    for frame in frames[:4]:
        assert same_detections(flight.process(frame), twin.process(frame))
    if paths:
        best, baseline = flight_detector()(shape, cal), flight_detector(simd="baseline")(shape, cal)
        for frame in frames:
            assert same_detections(best(frame), baseline(frame))
    scores = {name: score_frames(make(shape, cal), frames, truths, classes) for name, make in pipelines.items()}

    runs = dict(zip(pipelines, frame_times(list(pipelines.values()), shape, cal, frames)))
    names = list(runs)
    base = float(np.median(runs[names[0]]))
    isa = getattr(temporal, "isa_paths", lambda: ())()
    print(f"\n1024x1024 cloudy, one core, every detector at k = {K_SIGMA}, ms/frame over "
          f"{len(frames) - 3} frames (after 3 warm-up) x {ROUNDS} rounds; instruction-set paths on this CPU: "
          f"{', '.join(isa) or 'n/a'}")
    print(f"Pd@20 and FA/frame: the same frames scored before timing ({HIL.warmup_frames} warm-up)")
    print("| pipeline | median ms/frame | mean ms/frame | median ratio to flight temporal | Pd@20 | FA/frame |")
    print("|---|---|---|---|---|---|")
    for name, t in runs.items():
        print(f"| {name} | {np.median(t):.2f} | {np.mean(t):.2f} | {np.median(t) / base:.2f} "
              f"| {scores[name].pd(20.0):.3f} | {scores[name].fa_per_frame():.2f} |")
    print(f"\ngoal <= {SPEED_GOAL_MS:g} ms per 1024x1024 frame (flight temporal, best path): median "
          f"{base:.2f} ms -> {'met' if base <= SPEED_GOAL_MS else 'NOT MET'}")
    print("\nflight temporal, per stage (ms per call; reanchor runs only when the drift passes "
          "4 px)")
    with StageClock() as clock:
        frame_times([flight_detector()], shape, cal, frames, rounds=1)
    print("| stage | calls | median | mean |")
    print("|---|---|---|---|")
    for name, t in clock.times.items():
        if t:
            print(f"| {name} | {len(t)} | {1e3 * np.median(t):.2f} | {1e3 * np.mean(t):.2f} |")
    assert base < 50.0  # sanity only; the goal is reported, not asserted


def with_bad_map(make, bad_map):
    """`make` handed `bad_map` in place of the calibration map evaluate() gives it."""
    def make_with(shape, _calibration):
        return make(shape, bad_map)
    return make_with


def sweep(make_at, scene, frames, bad_map=None):
    """[(k, Score)] from the highest threshold down, until FA/frame passes the largest target.
    `bad_map`, when given, replaces the calibration map."""
    runs = []
    for k in THRESHOLDS:
        make = make_at(k) if bad_map is None else with_bad_map(make_at(k), bad_map)
        score = metrics.evaluate(make, scene, frames)
        runs.append((k, score))
        if score.fa_per_frame() > max(FA_TARGETS):
            break
    return runs


def pd_at_fa(runs, target, classes):
    """(Pd per class, FA/frame, how) at `target` FA/frame: linear in FA/frame between the two
    runs that bracket it, or, when no two do, the run whose FA/frame is closest to it."""
    for (k_hi, hi), (k_lo, lo) in zip(runs, runs[1:]):
        fa_hi, fa_lo = hi.fa_per_frame(), lo.fa_per_frame()
        if fa_hi <= target <= fa_lo:
            w = (target - fa_hi) / (fa_lo - fa_hi) if fa_lo > fa_hi else 0.0
            return ({c: (1 - w) * hi.pd(c) + w * lo.pd(c) for c in classes}, target,
                    f"interpolated, k {k_lo:g}..{k_hi:g}")
    k, s = min(runs, key=lambda run: abs(np.log((run[1].fa_per_frame() + 1e-3) / target)))
    return {c: s.pd(c) for c in classes}, s.fa_per_frame(), f"NOT REACHED; closest run k {k:g}"


@pytest.fixture(scope="module")
def working_detectors():
    """Each pipeline, at K_SIGMA, must find the SNR 20 targets of a clear scene: a check that it
    runs as meant (coordinates, masks) before its figures in clutter mean anything."""
    scene = metrics.scene_for("clear", 256, 3)
    for name, make_at in DETECTORS.items():
        score = metrics.evaluate(make_at(), scene, HIL.warmup_frames + 30)
        assert score.pd(20.0) >= 0.9, f"{name} finds {score.pd(20.0):.2f} of SNR 20 targets in a clear scene"
    return DETECTORS


def print_sweeps(sweeps, classes) -> dict:
    """Print the sweeps and Pd at each FA target; return (name, target) -> pd_at_fa()."""
    pd_header = " | ".join(f"Pd@{c:g}" for c in classes)
    print(f"\nthreshold sweeps (k in each detector's own noise units; highest first, stopped past "
          f"{max(FA_TARGETS):g} FA/frame)")
    print(f"| detector | k | FA/frame | {pd_header} |")
    print("|---|---|---|" + "---|" * len(classes))
    for name, runs in sweeps.items():
        for k, s in runs:
            print(f"| {name} | {k:g} | {s.fa_per_frame():.3f} | "
                  + " | ".join(f"{s.pd(c):.3f}" for c in classes) + " |")
    matched = {}
    for target in FA_TARGETS:
        print(f"\nPd at {target:g} false alarms per frame")
        print(f"| detector | {pd_header} | FA/frame | how |")
        print("|---|" + "---|" * len(classes) + "---|---|")
        for name, runs in sweeps.items():
            pd, fa, how = matched[name, target] = pd_at_fa(runs, target, classes)
            print(f"| {name} | " + " | ".join(f"{pd[c]:.3f}" for c in classes) + f" | {fa:.3f} | {how} |")
    return matched


@pytest.mark.parametrize("kind", ["cloudy", "heavy"])
def test_quality_at_matched_false_alarms(kind, working_detectors):
    scene = metrics.scene_for(kind, 256, 3)
    classes = tuple(scene.snr_values)
    frames = 200
    print(f"\n{kind}, 256x256, {frames} frames ({HIL.warmup_frames} warm-up), match radius "
          f"{HIL.match_radius_px} px; every detector gets the bad pixel map and a local noise map")
    print("\n#### with the calibration map (as in flight: half the hot pixels are not on it)")
    matched = print_sweeps({name: sweep(make_at, scene, frames) for name, make_at in working_detectors.items()},
                           classes)
    # Single-frame detectors cannot tell an unlisted hot pixel from a target; this run shows
    # what they do in the clutter alone, with every defect listed.
    print("\n#### with every defective pixel listed (an oracle map the flight never has)")
    oracle = SceneSimulator(scene).defective_pixels()
    print_sweeps({name: sweep(make_at, scene, frames, oracle) for name, make_at in working_detectors.items()},
                 classes)
    print(f"\nflight temporal at its configured k = {K_SIGMA}")
    print("| calibration map | " + " | ".join(f"Pd@{c:g}" for c in classes) + " | FA/frame |")
    print("|---|" + "---|" * len(classes) + "---|")
    for cal in (True, False):
        s = metrics.evaluate(flight_detector(), scene, frames, with_calibration=cal)
        print(f"| {'yes' if cal else 'no'} | " + " | ".join(f"{s.pd(c):.3f}" for c in classes)
              + f" | {s.fa_per_frame():.3f} |")
    for target in FA_TARGETS:
        assert matched["flight temporal", target][2].startswith("interpolated"), "widen THRESHOLDS"
    # With the real map, the flight detector must match or beat each peer on Pd at SNR 8
    # wherever both reach 1 FA/frame.
    ours = matched["flight temporal", 1.0][0][8.0]
    for name in PEERS:
        pd, _, how = matched[name, 1.0]
        assert not how.startswith("interpolated") or ours >= pd[8.0], f"{name} beats the flight detector"
