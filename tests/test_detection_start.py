"""The detector's start: the noise re-measured on the first frame after the seed, and the
variance free to learn the clutter over the first frames (flight.detection)."""

import math

import numpy as np
import pytest

from flight import detection as fd
from flight import detection_ref
from flight.detection import Detector, DetectorConfig
from hil.scene import SceneConfig, SceneSimulator
from hil.scoring import match


def ripple(shape, dy=0.0, dx=0.0):
    """A scene of strong ripples 9-13 px long (smooth enough for the cubic warp, sharp enough
    that second differences see them), sampled at (y + dy, x + dx)."""
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(np.float64)
    yy, xx = yy + dy, xx + dx
    return (3000.0 + 400.0 * np.sin(2 * np.pi * xx / 11.0) * np.cos(2 * np.pi * yy / 13.0)
            + 300.0 * np.sin(2 * np.pi * (xx + yy) / 9.0))


def noisy(level, read_noise, gain, rng):
    return level + rng.standard_normal(level.shape) * np.sqrt(read_noise**2 + level / gain)


@pytest.mark.parametrize("read_noise, gain, shift", [(10.0, 1.0, (0.3, -0.45)), (6.0, 2.5, (1.2, 0.5)),
                                                     (30.0, 0.6, (-0.7, 0.1))])
def test_residual_noise_scale_is_the_sensors_where_the_seeds_counts_the_texture(read_noise, gain, shift):
    # reference: the noise the frames were made with, over the hints' (read noise 10, gain 1)
    rng = np.random.default_rng(7)
    shape = (160, 192)
    fy, fx = shift
    seed_frame = noisy(ripple(shape), read_noise, gain, rng)
    frame = noisy(ripple(shape, fy, fx), read_noise, gain, rng)  # sensor p sees scene p + f
    bad = np.zeros(shape, np.uint8)
    cfg = DetectorConfig()
    level = 3000.0
    truth = (read_noise**2 + level / gain) / (cfg.read_noise**2 + level / cfg.gain)
    got = fd.residual_noise_scale(frame, bad, seed_frame.astype(np.float32), fy, fx, cfg)
    assert got == pytest.approx(truth, rel=0.08)
    # the seed frame's second differences see the ripples as noise
    assert fd.seed_noise_scale(seed_frame, bad, cfg) > 1.3 * truth


def test_remeasured_noise_scales_the_variance_down_only():
    rng = np.random.default_rng(3)
    shape = (96, 96)
    seed_frame = noisy(ripple(shape), 10.0, 1.0, rng).astype(np.float32)
    frame = noisy(ripple(shape, 0.25, 0.25), 10.0, 1.0, rng)
    bad = np.zeros(shape, np.uint8)
    cfg = DetectorConfig()
    variance = np.full(shape, 100.0, np.float32)
    measured = fd.residual_noise_scale(frame, bad, seed_frame, 0.25, 0.25, cfg)
    got = fd.remeasured_noise(frame, bad, seed_frame, variance, 0.25, 0.25, 3.0, cfg)
    assert got == pytest.approx(measured, rel=1e-6) and got < 1.5
    np.testing.assert_allclose(variance, np.float32(100.0 * got / 3.0), rtol=1e-6)
    # a seed's scale already below what the residual shows is kept, and the variance with it
    variance[...] = 100.0
    assert fd.remeasured_noise(frame, bad, seed_frame, variance, 0.25, 0.25, 0.5, cfg) == 0.5
    assert (variance == 100.0).all()


def test_residual_noise_scale_without_overlap_is_nan_and_the_seeds_stays():
    frame = np.full((40, 40), 1000.0)
    bad = np.zeros((40, 40), np.uint8)
    model = frame.astype(np.float32)
    assert math.isnan(fd.residual_noise_scale(frame, bad, model, 0.0, 45.0, DetectorConfig()))
    variance = np.ones((40, 40), np.float32)
    assert fd.remeasured_noise(frame, bad, model, variance, 0.0, 45.0, 2.0, DetectorConfig()) == 2.0
    assert (variance == 1.0).all()


def test_no_cell_is_held_and_there_is_no_clip_over_the_free_frames():
    rows, cols = np.full(30, 5, np.uint16), np.full(40, 5, np.uint16)
    cfg = DetectorConfig(variance_free_frames=4)
    assert fd.variance_free(3, cfg) and not fd.variance_free(4, cfg)
    assert not fd.variance_free(1, DetectorConfig(variance_free_frames=0))
    assert fd.variance_hold_window(rows, cols, True, cfg) == (0, 0, 0, 0)
    assert fd.variance_hold_window(rows, cols, False, cfg) == fd.hold_window(rows, cols, cfg.variance_hold_age)
    assert fd.variance_learning(cfg, True)["young_variance"] == (fd.FREE_CLIP, pytest.approx(1.0))
    assert fd.variance_learning(cfg)["young_variance"][0] == cfg.variance_clip_young


def test_the_variance_around_seed_sources_is_put_back():
    sources = fd.SeedSources(np.array([[1, 2], [10, 10]]), np.zeros((12, 14)), 2, 4)
    variance = np.arange(12 * 14, dtype=np.float32).reshape(12, 14)
    before = variance.copy()
    saved = sources.variance_around(variance, 3)
    assert [cells for cells, _ in saved] == [(slice(0, 5), slice(0, 6)), (slice(7, 12), slice(7, 14))]
    variance *= 2.0
    fd.put_back_variance(variance, saved)
    held = np.zeros(variance.shape, bool)
    for cells, _ in saved:
        held[cells] = True
    np.testing.assert_array_equal(variance[held], before[held])
    np.testing.assert_array_equal(variance[~held], 2.0 * before[~held])


def sharp_heavy_cloud(seed):
    """A 256^2 heavy-cloud scene drifting 1.4 px/frame, sharp optics, gain 2.8 and read noise 6
    (the hints say 1 and 10): like the development scene that showed the start's trouble."""
    return SceneSimulator(SceneConfig(
        kind="heavy", seed=seed, width=256, height=256, n_targets=6, drift=(-0.98, -0.95),
        jitter_rms=0.2, gain=2.8, read_noise=6.0, optics_sigma=0.9, psf_sigma_range=(0.85, 0.95),
        clouds=(4300.0, 0.63, 1.06, 2.87)))


def false_alarms(sim, config, frames=40, first=10):
    det = Detector(config, (sim.config.height, sim.config.width), sim.calibration_bad_pixels())
    count = 0
    for i in range(frames):
        frame, truth = sim.frame(i)
        got = det.process(frame)
        if i >= first:
            count += int((~match(got, truth, 2.0)[1]).sum())
    return count / (frames - first), det


@pytest.mark.parametrize("seed", [1, 2])
def test_free_frames_let_the_clutter_variance_rise(seed):
    # reference: simulator truth.  The noise re-measured, the variance starts at the sensor's
    # noise; held where cloud edges pass the gate from the start, it stayed there: 5.5 and
    # 11.7 false alarms a frame over frames 10-39 here, 2.7 and 2.8 with 12 free frames
    sim = sharp_heavy_cloud(seed)
    free, det = false_alarms(sim, DetectorConfig())
    held, _ = false_alarms(sim, DetectorConfig(variance_free_frames=0))
    assert free < 0.8 * held
    # and the noise is the sensor's: its variance at the scene's level over the hints'
    level = float(np.median(sim.frame(1)[0]))
    truth = (6.0**2 + level / 2.8) / (10.0**2 + level)
    assert truth <= det.pipeline.residual_noise_scale < 1.5 * truth  # the cloud's resampling adds a little
    # the pixel noise model (the model's clip, hot pixels, the SNR) keeps the seed's
    assert det.pipeline.noise_scale == fd.seed_noise_scale(
        sim.frame(0)[0], det.pipeline.calibration, DetectorConfig()) > det.pipeline.residual_noise_scale
    assert abs(det.pipeline.residual_noise_scale - truth) < 0.5 * abs(fd.seed_noise_scale(
        sim.frame(0)[0], np.zeros((256, 256), np.uint8), DetectorConfig()) - truth)


def test_start_equals_reference():
    # the re-measure, the free frames and the seed sources' held variance on both paths, on a
    # clear scene with bright slow targets in view from the seed frame
    sim = SceneSimulator(SceneConfig(kind="clear", seed=3, width=128, height=128, n_targets=8,
                                     snr_values=(12.0,), speed_range=(0.1, 0.3), gain=2.8,
                                     read_noise=6.0))
    shape = (128, 128)
    cfg = DetectorConfig(variance_free_frames=6)
    det = Detector(cfg, shape, sim.calibration_bad_pixels())
    ref = detection_ref.Detector(cfg, shape, sim.calibration_bad_pixels())
    for i in range(9):
        frame = sim.frame(i)[0]
        det.process(frame)
        ref.process(frame)
        np.testing.assert_array_equal(det.pipeline.variance, ref.pipeline.variance)
    assert det.pipeline.residual_noise_scale == ref.pipeline.residual_noise_scale < 0.6
    assert len(det.pipeline.seed_sources) > 0


def tile_medians_by_loop(values, good, tile, least, rows):
    out = np.full((-(-values.shape[0] // rows), -(-values.shape[1] // tile)), np.nan)
    for ty in range(out.shape[0]):
        for tx in range(out.shape[1]):
            block = (slice(ty * rows, (ty + 1) * rows), slice(tx * tile, (tx + 1) * tile))
            v = values[block][good[block]]
            if v.size >= least:
                out[ty, tx] = np.median(v)
    return out


@pytest.mark.parametrize("shape, tile, rows, least", [((100, 77), 32, 32, 16), ((64, 64), 32, 8, 16),
                                                      ((50, 90), 16, 4, 1), ((33, 40), 32, 32, 1),
                                                      ((7, 5), 4, 2, 3)])
def test_tile_medians_equal_the_median_of_each_blocks_good_values(shape, tile, rows, least):
    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    for _ in range(4):
        values = rng.normal(size=shape) * 100.0
        good = rng.random(shape) > rng.uniform(0.0, 0.9)
        got = fd.tile_medians(values, good, tile, least, tile_rows=rows)
        np.testing.assert_array_equal(got, tile_medians_by_loop(values, good, tile, least, rows))


def test_a_pixel_going_hot_mid_pass_is_marked_and_a_slow_targets_peak_is_not():
    # reference: the pixel the test makes hot, and the simulator's target truth.  A pixel
    # going hot by 30 pixel-noise sigmas at frame 20 is marked within 40 frames; a sharp SNR 12
    # target crawling 0.05 px/frame over the same sensor pixels (no drift) is never marked
    sim = SceneSimulator(SceneConfig(kind="clear", seed=4, width=96, height=96, n_targets=4,
                                     snr_values=(12.0,), speed_range=(0.05, 0.05),
                                     psf_sigma_range=(0.6, 0.65), optics_sigma=0.6, drift=(0.0, 0.0),
                                     jitter_rms=0.02, target_lifetime=400, hot_pixel_fraction=0.0,
                                     dead_pixel_fraction=0.0, cosmic_rate=0.0))
    det = Detector(DetectorConfig(), (96, 96), sim.calibration_bad_pixels())
    marked_at = None
    near_target = 0
    for i in range(80):
        frame, truth = sim.frame(i)
        frame = frame.astype(np.float64)
        if i >= 20:
            frame[50, 17] += 30.0 * np.sqrt(10.0**2 + frame[50, 17])
        det.process(np.clip(frame, 0, 2**14 - 1).astype(np.uint16))
        flagged = (det.pipeline.bad & fd.BAD_DETECTED) != 0
        if marked_at is None and flagged[50, 17]:
            marked_at = i
        for t in truth:
            y, x = int(round(t["y"])), int(round(t["x"]))
            near_target += int(flagged[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2].sum())
    assert marked_at is not None and 20 < marked_at < 60
    assert near_target == 0
