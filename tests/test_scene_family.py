"""The scene family (hil.scene_family) and `kestrel-hil metrics family`.

References: the ranges issue 10 states; the simulator's own platform offsets
(a target's ground position is its sensor position plus the offset); the shot
noise law (temporal variance = read^2 + signal / gain, in counts). Only
development seeds are used here: held-out seeds are for reporting alone.
"""
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from hil import cli
from hil.metrics import FAMILY_SPEED_CLASSES, FamilyRun, family_scene, family_speed_class
from hil.scene import SCENE_KINDS, SceneConfig, SceneSimulator
from hil.scene_family import HELD_OUT_FIRST, draw_scene, family_seed, is_held_out

DEVELOPMENT = [family_seed(i, held_out=False) for i in range(200)]


def ground_track(sim: SceneSimulator, target: int, frames) -> dict[int, tuple[float, float]]:
    """frame -> the target's position over the ground (truth position plus the platform offset)."""
    track = {}
    for i in frames:
        truth = sim.frame(i)[1]
        row = truth[truth["target"] == target]
        if len(row):
            ox, oy = sim.platform_offset(i)
            track[i] = (float(row["x"][0]) + ox, float(row["y"][0]) + oy)
    return track


def test_draws_are_deterministic_per_seed_and_the_cap_changes_nothing_else():
    assert draw_scene(17) == draw_scene(17)
    assert draw_scene(17) != draw_scene(18)
    big, capped = draw_scene(17, 2048), draw_scene(17, 256)
    assert capped.width == min(big.width, 256) and capped.height == min(big.height, 256)
    assert replace(capped, width=big.width, height=big.height, n_targets=big.n_targets) == big
    a, b = SceneSimulator(draw_scene(5, 256)), SceneSimulator(draw_scene(5, 256))
    np.testing.assert_array_equal(a.frame(3)[0], b.frame(3)[0])
    np.testing.assert_array_equal(a.frame(3)[1], b.frame(3)[1])


def test_draws_cover_the_issue_ranges():
    scenes = [draw_scene(s) for s in DEVELOPMENT]
    sides = np.array([(c.width, c.height) for c in scenes])
    assert sides.min() >= 256 and sides.max() <= 2048 and np.all(sides % 32 == 0)
    assert sides.min() < 320 and sides.max() > 1800          # both ends reached
    assert all(c.width <= 512 and c.height <= 512 for c in (draw_scene(s, 512) for s in DEVELOPMENT[:50]))
    for name, (low, high) in {"gain": (0.5, 4.0), "read_noise": (5.0, 40.0)}.items():
        values = np.array([getattr(c, name) for c in scenes])
        assert low <= values.min() < low * 1.15 and high / 1.15 < values.max() <= high
        # log-uniform: half the draws below the geometric midpoint
        assert 0.4 < np.mean(values < math.sqrt(low * high)) < 0.6
    psf = np.array([c.psf_sigma_range for c in scenes])
    assert psf.min() >= 0.6 and psf.max() <= 2.0 and psf[:, 0].min() < 0.7 and psf[:, 1].max() > 1.9
    assert {c.kind for c in scenes} == set(SCENE_KINDS)
    slopes = [c.clouds[3] for c in scenes if c.kind != "clear"]
    assert max(slopes) - min(slopes) > 0.8                    # clutter of varying spectral slope
    drift = np.array([math.hypot(*c.drift) for c in scenes])
    jitter = np.array([c.jitter_rms for c in scenes])
    assert drift.min() < 0.05 and drift.max() > 1.0 and jitter.min() < 0.05 and jitter.max() > 0.7
    # every scene hides its sensor from the detector: the family never equals the detector's defaults
    assert all(c.speed_range == (0.05, 8.0) and c.speed_distribution == "log-uniform" for c in scenes)


def test_target_speeds_are_log_uniform_over_0p05_to_8():
    cfg = replace(draw_scene(3, 256), n_targets=400, stationary_fraction=0.0, crossing_fraction=0.0)
    speeds = np.array(list(SceneSimulator(cfg).target_speeds(0).values()))
    assert len(speeds) == 400 and speeds.min() >= 0.05 and speeds.max() <= 8.0
    # equal counts in each quarter of log speed (uniform in speed would put ~97 % above 0.63 px/frame)
    quarters = np.histogram(np.log(speeds), bins=4, range=(math.log(0.05), math.log(8.0)))[0]
    assert np.all(np.abs(quarters - 100) < 30), quarters
    assert 0.4 < np.mean(speeds < math.sqrt(0.05 * 8.0)) < 0.6


def test_held_out_and_development_seeds_are_disjoint():
    assert max(DEVELOPMENT) < HELD_OUT_FIRST == family_seed(0, held_out=True)
    assert not any(is_held_out(s) for s in DEVELOPMENT)
    assert is_held_out(family_seed(0, True)) and is_held_out(family_seed(10**6, True))
    with pytest.raises(ValueError, match="development scene index must be <"):
        family_seed(HELD_OUT_FIRST, held_out=False)


def test_no_test_uses_held_out_seeds():
    """Held-out seeds are for reporting: no test (which tunes or asserts on quality) may name them."""
    here = Path(__file__).resolve()
    pattern = re.compile(r"held[-_]out\s*=\s*True|--held-out|HELD_OUT_FIRST\s*\+|2\s*\*\*\s*40")
    offenders = [p.name for p in here.parent.rglob("*.py") if p != here and pattern.search(p.read_text())]
    assert offenders == []


def test_targets_in_the_first_frame_stay_in_the_truth():
    sim = SceneSimulator(draw_scene(1, 256))
    first = sim.frame(0)[1]
    assert len(first) >= 3
    later = sim.frame(1)[1]
    for row in first[:3]:
        nxt = later[later["target"] == row["target"]]
        assert len(nxt) == 1            # the same target, one frame on, not a new one
        step = math.hypot(nxt["x"][0] - row["x"], nxt["y"][0] - row["y"])
        assert step < 12                # at most 8 px/frame of its own plus platform drift and jitter


def test_stationary_then_moving_targets_hold_still_on_the_ground_then_move_at_their_speed():
    for seed in DEVELOPMENT[:12]:
        sim = SceneSimulator(draw_scene(seed, 256))
        for i in range(0, 120, 4):
            for target, speed in sim.target_speeds(i).items():
                later = sim.target_speeds(i + 40)
                if speed != 0.0 or later.get(target, 0.0) == 0.0 or later[target] < 0.3:
                    continue
                track = ground_track(sim, target, range(i, i + 41))
                held = [f for f in track if sim.target_speeds(f)[target] == 0.0]
                moving = [f for f in track if sim.target_speeds(f)[target] > 0.0 and f - 1 in track
                          and sim.target_speeds(f - 1)[target] > 0.0]
                if len(held) < 3 or len(moving) < 3:
                    continue                      # not in view in both phases: look for another
                x0, y0 = track[held[0]]
                for f in held:
                    assert math.hypot(track[f][0] - x0, track[f][1] - y0) < 1e-3
                for f in moving:
                    step = math.hypot(track[f][0] - track[f - 1][0], track[f][1] - track[f - 1][1])
                    assert step == pytest.approx(later[target], rel=0.01, abs=1e-3)
                return
    pytest.fail("no target seen both holding still and moving in 12 development scenes")


def test_crossing_targets_meet():
    cfg = SceneConfig(kind="clear", width=256, height=256, n_targets=2, crossing_fraction=1.0,
                      target_lifetime=100, speed_range=(0.5, 3.0), jitter_rms=0.4, drift=(0.3, -0.2))
    sim = SceneSimulator(cfg)
    gaps = []
    for i in range(100):
        (id0, x0, y0, *_), (id1, x1, y1, *_) = sim.targets(i)
        assert id0 != id1
        gaps.append(math.hypot(x1 - x0, y1 - y0))
    assert min(gaps) < 1e-6 and max(gaps) > 5      # they meet once, and are two targets


def test_targets_routed_across_cloud_rims_sit_on_one():
    cfg = SceneConfig(kind="heavy", width=256, height=256, n_targets=8, cloud_edge_fraction=1.0,
                      target_lifetime=60, stationary_fraction=0.0)
    sim = SceneSimulator(cfg)
    side_y, side_x = sim._world_shape
    rim = set(sim._edge_points.tolist())
    on_rim = set()
    for i in range(60):
        ox, oy = sim.platform_offset(i)
        for target, x, y, *_ in sim.targets(i):
            wx, wy = x + ox, y + oy               # where on the (periodic) world the target is
            if abs(wx - round(wx)) < 1e-6 and abs(wy - round(wy)) < 1e-6:
                if (round(wy) % side_y) * side_x + round(wx) % side_x in rim:
                    on_rim.add(target)
    assert len(on_rim) >= 7                       # exactly on a rim pixel: by design, not by chance


def test_gain_sets_the_shot_noise():
    flat = SceneConfig(kind="clear", width=128, height=128, n_targets=0, background=3000.0, read_noise=5.0,
                       terrain=(0.0, 3.2), jitter_rms=0.0, drift=(0.0, 0.0), nonuniformity=0.0,
                       hot_pixel_fraction=0.0, dead_pixel_fraction=0.0, cosmic_rate=0.0)
    for gain in (0.5, 1.0, 4.0):
        sim = SceneSimulator(replace(flat, gain=gain))
        diff = sim.frame(1)[0].astype(float) - sim.frame(2)[0].astype(float)
        expected = math.sqrt(5.0**2 + 3000.0 / gain)       # 77.6, 55.0, 27.8 counts
        assert np.std(diff) / math.sqrt(2) == pytest.approx(expected, rel=0.03)
    # and the truth's SNR is defined against that noise
    target = SceneSimulator(replace(flat, gain=4.0, n_targets=1, snr_values=(10.0,))).frame(0)[1][0]
    noise = target["flux"] / (2 * math.pi * target["sigma_psf"] ** 2) / target["snr"]
    assert noise == pytest.approx(math.sqrt(25.0 + 3000.0 / 4.0), rel=1e-3)


def test_speed_classes_are_the_issues():
    assert [name for name, *_ in FAMILY_SPEED_CLASSES] == ["held", "<=0.3", "0.3-1", "1-3", ">3"]
    assert [family_speed_class(v) for v in (0.0, 0.05, 0.3, 0.31, 1.0, 2.9, 3.0, 3.01, 8.0)] == [
        "held", "<=0.3", "<=0.3", "0.3-1", "0.3-1", "1-3", "1-3", ">3", ">3"]


def test_family_scores_each_speed_class_apart():
    """An oracle that reports exactly the targets moving faster than 3 px/frame, and one false alarm a frame:
    Pd 1 in '>3' and 0 in every other class, whatever the SNR; one false alarm per frame."""
    seed = 3        # a development scene with target-frames in all five speed classes
    run = FamilyRun((seed,), frames=40, max_side=256, warmup_frames=10)

    def make(shape, calibration):
        sim = SceneSimulator(draw_scene(seed, 256))
        frames = iter(range(run.frames))

        def process(frame):
            i = next(frames)
            truth, speeds = sim.frame(i)[1], sim.target_speeds(i)
            fast = truth[[speeds[int(t)] > 3.0 for t in truth["target"]]]
            dets = np.zeros(len(fast) + 1, [("x", "f4"), ("y", "f4"), ("snr", "f4")])
            dets["x"][:-1], dets["y"][:-1], dets["snr"][:-1] = fast["x"] + 0.5, fast["y"], 9.0
            dets[-1] = (-50.0, -50.0, 6.0)       # off the frame: matches nothing
            return dets
        return process

    scene, score, _ = family_scene(run, seed, make)
    assert score.frames == 30 and score.fa_per_frame() == 1.0
    seen = set()
    for name, _, _ in FAMILY_SPEED_CLASSES:
        for c in scene.snr_values:
            pd, n = score.pd_in(name, c)
            if n:
                seen.add(name)
                assert pd == (1.0 if name == ">3" else 0.0), (name, c)
    assert seen == {name for name, _, _ in FAMILY_SPEED_CLASSES}
    assert score.rms_all() == pytest.approx(0.5, abs=1e-4)


def test_metrics_family_command(capsys, tmp_path):
    path = tmp_path / "family.json"
    assert cli.main(["metrics", "family", "--development", "--scenes", "2", "--max-side", "256", "--frames", "20",
                     "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "DEVELOPMENT seeds 0..1" in out
    report = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in the JSON"))
    assert report["label"] == "development" and report["seeds"] == [0, 1]
    assert set(report["kinds"]) == {"clear", "cloudy"}          # seeds 0 and 1: kinds in turn
    for kind, k in report["kinds"].items():
        assert k["frames"] == 10 and k["fa_per_frame"] >= 0
        # every family scene here is 256 x 256: per megapixel is per frame over 0.065536
        assert k["fa_per_megapixel_frame"] == pytest.approx(k["fa_per_frame"] / 0.065536)
        for name, _, _ in FAMILY_SPEED_CLASSES:
            assert re.search(rf"^\| {kind} \| {re.escape(name)} \|", out, re.M)
            row = k["by_speed"][name]
            for c in ("3", "5", "8", "12"):
                assert (row["pd"][c] is None) == (row["n"][c] == 0)
                assert row["pd"][c] is None or 0.0 <= row["pd"][c] <= 1.0
        total = sum(n for row in k["by_speed"].values() for n in row["n"].values())
        assert total > 0 and f"| {kind} | all |" in out and out.count(f"| {kind} | all |") == 1
        assert re.search(rf"\| {kind} \| all \|.*\| {total} \|$", out, re.M)   # the strata add up to all
        assert k["centroid_over_crb"] is None or k["centroid_over_crb"] > 0
    assert len(report["scenes"]) == 2 and all(s["url"].startswith("sim://") for s in report["scenes"])
    assert len(report["goals"]["lines"]) == 4


def test_metrics_family_needs_a_seed_range():
    with pytest.raises(SystemExit) as exc:
        cli.main(["metrics", "family", "--scenes", "1"])
    assert exc.value.code == 2


def test_a_family_scene_is_its_sim_url():
    """A report names each scene by its sim:// URL, so the flight program can fly exactly that scene."""
    from hil.sim_source import scene_from_url, scene_url

    for seed in DEVELOPMENT[:30]:
        assert scene_from_url(scene_url(draw_scene(seed, 512))) == draw_scene(seed, 512)
