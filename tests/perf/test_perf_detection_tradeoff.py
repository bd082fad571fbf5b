"""What each costly stage of the flight detector buys: ms per 1024² frame against held-out Pd and false alarms.

    cd /work/main && . .venv/bin/activate && pytest tests/perf/test_perf_detection_tradeoff.py -m perf -s

Issue 10 puts quality on unseen scenes before the 1.5 ms goal, and asks for the
trade-off measured at every setting tried. Each row turns off (or thins) one stage
that costs time, and the last row all of them together:

- speed: per-frame CPU time of the calling thread (tests/perf/timing.py), median and
  mean (the re-anchoring shows in the mean), pooled over ROUNDS rounds in which the
  settings take turns, on one 1024² cloudy scene of the project's simulator, FRAMES
  frames (enough that the lagged take-back and the variance floor, which start once
  cells are 24 and 34 frames old, run in the timed part), AVX2 path where the CPU has it;
- quality: the scene family's HELD-OUT seeds (never used for tuning), SCENES scenes
  with sides up to MAX_SIDE, QUALITY_FRAMES frames each, scored as `kestrel-hil metrics
  family` scores them: Pd at SNR 5 / 8 for targets slower than 0.3 px/frame and for all
  moving targets, false alarms per 1024² frame, per scene kind.

The quality set is smaller than the README's headline family run (60 scenes up to
2048², 200 frames), so its default row differs from that run's figures.
"""
import numpy as np
import pytest

from flight.detection import DetectorConfig
from hil import metrics
from hil.scene import SceneConfig, SceneSimulator
from hil.scene_family import family_seed
from tests.perf.test_perf_detection import SPEED_GOAL_MS, frame_times

pytestmark = pytest.mark.perf

ROUNDS = 3
FRAMES = 80
SCENES = 24
MAX_SIDE = 1024
QUALITY_FRAMES = 150
JOBS = 2

# name -> DetectorConfig overrides; every row but the first and last changes one stage
SETTINGS = {
    "default": {},
    "no lagged take-back (lag_frames 0)": {"lag_frames": 0},
    "no persistence (persist_hold, persist_detect 2)": {"persist_hold": 2.0, "persist_detect": 2.0},
    "hot score on 1 row in 4 (hot_every 4)": {"hot_every": 4},
    "no variance floor (variance_floor_quantile 0)": {"variance_floor_quantile": 0.0},
    "no registration retry (register_retry 0)": {"register_retry": 0.0},
    "all five of the above": {"lag_frames": 0, "persist_hold": 2.0, "persist_detect": 2.0, "hot_every": 4,
                              "variance_floor_quantile": 0.0, "register_retry": 0.0},
}


def moving_pd(kind_report: dict, snr: str) -> float | None:
    """Pd at one SNR over every moving speed class, weighted by target-frames."""
    found = total = 0.0
    for name, row in kind_report["by_speed"].items():
        if name == "held" or row["pd"][snr] is None:
            continue
        found += row["pd"][snr] * row["n"][snr]
        total += row["n"][snr]
    return found / total if total else None


def cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def test_speed_against_quality():
    scene = SceneConfig(kind="cloudy", width=1024, height=1024, seed=5, n_targets=40)
    sim = SceneSimulator(scene)
    frames = [sim.frame(i)[0] for i in range(FRAMES)]
    makes = [metrics.flight_detector(DetectorConfig(**over)) for over in SETTINGS.values()]
    times = frame_times(makes, frames[0].shape, sim.calibration_bad_pixels(), frames, rounds=ROUNDS)

    seeds = tuple(family_seed(i, True) for i in range(SCENES))
    reports = [metrics.family(metrics.FamilyRun(seeds, QUALITY_FRAMES, MAX_SIDE, True, DetectorConfig(**over)),
                              JOBS, True, out=lambda *a, **k: None)
               for over in SETTINGS.values()]
    kinds = list(reports[0]["kinds"])
    for report in reports:
        # every setting must still find targets: a row of zeros would be a broken run, not a trade-off
        assert all(report["kinds"][k]["pd"]["12"] > 0.5 for k in kinds), report["kinds"]

    print(f"\nflight detector, one core: ms per 1024² cloudy frame (median / mean of {ROUNDS} x "
          f"{FRAMES - 3} frames) against quality on {SCENES} HELD-OUT family scenes (sides <= {MAX_SIDE}, "
          f"{QUALITY_FRAMES} frames): Pd at SNR 5 / 8, slower than 0.3 px/frame and all moving; "
          f"false alarms per 1024² frame")
    head = " | ".join(f"{k}: slow Pd5/8, all Pd5/8, FA" for k in kinds)
    print(f"| setting | median ms | mean ms | {head} |")
    print("|---|---|---|" + "---|" * len(kinds))
    for name, t, report in zip(SETTINGS, times, reports):
        cells = []
        for k in kinds:
            r = report["kinds"][k]
            slow = r["by_speed"]["<=0.3"]["pd"]
            cells.append(f"{cell(slow['5'])}/{cell(slow['8'])}, {cell(moving_pd(r, '5'))}/"
                         f"{cell(moving_pd(r, '8'))}, {r['fa_per_megapixel_frame'] * 1024 * 1024 / 1e6:.2f}")
        print(f"| {name} | {np.median(t):.2f} | {np.mean(t):.2f} | " + " | ".join(cells) + " |")
    fastest = min(float(np.median(t)) for t in times)
    print(f"\ngoal <= {SPEED_GOAL_MS:g} ms: fastest setting tried {fastest:.2f} ms -> "
          f"{'met' if fastest <= SPEED_GOAL_MS else 'NOT MET'}")
