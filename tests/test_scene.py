"""Scene simulator tests: determinism, sensor model, truth, target SNR definition.

Reference: the model stated in hil/scene.py (numbers derived by hand here).
"""
import math

import numpy as np
import pytest

from hil.scene import ADC_MAX, TRUTH_DTYPE, SceneConfig, SceneSimulator, pixel_psf, write_npy_frames


def test_frames_are_pure_functions_of_seed_and_index():
    cfg = SceneConfig(kind="cloudy", seed=5, width=96, height=80)
    a = SceneSimulator(cfg)
    later = [a.frame(i) for i in (7, 2, 7)]
    b = SceneSimulator(cfg)  # a fresh simulator, as in another process
    f2, t2 = b.frame(2)
    f7, t7 = b.frame(7)
    np.testing.assert_array_equal(later[0][0], f7)
    np.testing.assert_array_equal(later[2][0], f7)
    np.testing.assert_array_equal(later[1][0], f2)
    np.testing.assert_array_equal(later[0][1], t7)
    assert not np.array_equal(f2, f7)
    other = SceneSimulator(SceneConfig(kind="cloudy", seed=6, width=96, height=80)).frame(2)[0]
    assert not np.array_equal(other, f2)


@pytest.mark.parametrize("kind", ["clear", "cloudy", "heavy"])
def test_frame_format_and_truth(kind):
    cfg = SceneConfig(kind=kind, width=128, height=64)
    frame, truth = SceneSimulator(cfg).frame(3)
    assert frame.shape == (64, 128) and frame.dtype == np.uint16 and frame.flags.c_contiguous
    assert frame.max() <= ADC_MAX
    assert truth.dtype == TRUTH_DTYPE
    m = cfg.edge_margin
    assert np.all((truth["x"] >= m) & (truth["x"] <= 127 - m))
    assert np.all((truth["y"] >= m) & (truth["y"] <= 63 - m))
    assert np.all((truth["sigma_psf"] >= 0.7) & (truth["sigma_psf"] <= 1.2))
    assert len(np.unique(truth["target"])) == len(truth)


def test_clutter_grows_with_kind():
    spread = {}
    for kind in ("clear", "cloudy", "heavy"):
        frame = SceneSimulator(SceneConfig(kind=kind, seed=2)).frame(0)[0].astype(float)
        spread[kind] = np.percentile(frame, 95) - np.percentile(frame, 5)
    assert spread["clear"] < 400 < spread["cloudy"] < spread["heavy"]


def test_targets_move_between_0p2_and_5_px_per_frame_apart_from_platform():
    cfg = SceneConfig(kind="clear", jitter_rms=0.0, drift=(0.0, 0.0), n_targets=12)
    sim = SceneSimulator(cfg)
    for (k, x0, y0, *_), (k1, x1, y1, *_) in zip(sim.targets(10), sim.targets(11)):
        step = math.hypot(x1 - x0, y1 - y0)
        if step < 10:  # not a new target starting
            assert 0.15 < step < 5.05


def test_snr_is_peak_amplitude_over_temporal_noise():
    # flat clear sky, no defects: the temporal sigma at the target is sqrt(read^2 + background)
    cfg = SceneConfig(kind="clear", n_targets=1, snr_values=(10.0,), jitter_rms=0.0, drift=(0.0, 0.0),
                      nonuniformity=0.0, hot_pixel_fraction=0.0, dead_pixel_fraction=0.0,
                      cosmic_rate=0.0, width=64, height=64)
    sim = SceneSimulator(cfg)
    _, truth = sim.frame(0)
    t = truth[0]
    sigma_noise = t["flux"] / (2 * math.pi * t["sigma_psf"] ** 2) / t["snr"]
    assert 40 < sigma_noise < 50  # sqrt(10^2 + ~2000)
    # temporal noise measured on frame differences far from the target agrees
    d = sim.frame(1)[0].astype(float) - sim.frame(2)[0].astype(float)
    assert abs(np.std(d[:8, :8]) / math.sqrt(2) - sigma_noise) < 8


def test_pixel_psf_conserves_flux_and_centre():
    y0, x0, stamp = pixel_psf(10.3, 20.6, 1.0, 1000.0, 5)
    assert abs(stamp.sum() - 1000.0) < 1e-3
    ys, xs = np.mgrid[y0:y0 + stamp.shape[0], x0:x0 + stamp.shape[1]]
    assert abs((stamp * xs).sum() / stamp.sum() - 10.3) < 1e-6
    assert abs((stamp * ys).sum() / stamp.sum() - 20.6) < 1e-6


def test_calibration_map_lists_some_but_not_all_defects():
    sim = SceneSimulator(SceneConfig(width=256, height=256, hot_pixel_fraction=1e-3))
    listed = sim.calibration_bad_pixels()
    every = sim.defective_pixels()
    assert listed.dtype == bool and listed.shape == (256, 256)
    assert np.all(every[listed])
    assert 0 < listed.sum() < every.sum()
    # unlisted hot pixels are hot in every frame, at the same sensor position
    hot = every & ~listed
    f0, f5 = sim.frame(0)[0].astype(float), sim.frame(5)[0].astype(float)
    assert np.median(f0[hot]) > np.median(f0) + 200 and np.median(f5[hot]) > np.median(f5) + 200


def test_write_npy_frames(tmp_path):
    sim = SceneSimulator(SceneConfig(width=32, height=24))
    paths = write_npy_frames(sim, 3, tmp_path / "frames")
    assert [p.name for p in paths] == ["frame_000000.npy", "frame_000001.npy", "frame_000002.npy"]
    np.testing.assert_array_equal(np.load(paths[1]), sim.frame(1)[0])


def test_bad_config_and_index_rejected():
    with pytest.raises(ValueError, match="kind must be one of"):
        SceneConfig(kind="foggy")
    with pytest.raises(ValueError, match="width must be 16..8192, got"):
        SceneConfig(width=8)
    with pytest.raises(ValueError, match="index must be >= 0"):
        SceneSimulator(SceneConfig(width=32, height=32)).frame(-1)


def test_describe_documents_every_field():
    rows = SceneConfig.describe()
    assert [r[0] for r in rows][:4] == ["width", "height", "seed", "kind"]
    assert all(doc for _, _, doc in rows)
    assert dict((n, d) for n, d, _ in rows)["background"] == 2000.0
