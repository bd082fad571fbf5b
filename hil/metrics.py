"""Detection quality against simulator truth (`kestrel-hil metrics`): Pd per SNR
class, false alarms per frame, centroid RMS against the Cramer-Rao bound, per
scene kind, with and without the calibration map; and a threshold sweep (Pd
against FA/frame). Scored by hil.scoring, as the demo's verdict is.

Any detector can be scored: ``evaluate`` takes a factory
``make(shape, calibration_mask_or_None) -> callable(frame) -> records with x, y, snr``.
"""
from __future__ import annotations

from dataclasses import replace

from flight.detection import Detector, DetectorConfig

from .config import HilConfig
from .scene import SceneConfig, SceneSimulator
from .scoring import Score


def flight_detector(config: DetectorConfig = DetectorConfig()):
    """Factory for the flight detector, for evaluate()."""
    def make(shape, calibration):
        return Detector(config, shape, calibration).process
    return make


def evaluate(make, scene: SceneConfig, frames: int, with_calibration: bool = True,
             hil: HilConfig = HilConfig()) -> Score:
    """Run one detector over frames of one scene and score it against the truth."""
    sim = SceneSimulator(scene)
    run = make((scene.height, scene.width), sim.calibration_bad_pixels() if with_calibration else None)
    score = Score(classes=tuple(scene.snr_values), radius=hil.match_radius_px)
    for i in range(frames):
        frame, truth = sim.frame(i)
        dets = run(frame)
        if i >= hil.warmup_frames:
            score.add(dets, truth)
    return score


def scene_for(kind: str, size: int, seed: int) -> SceneConfig:
    return SceneConfig(kind=kind, width=size, height=size, seed=seed, n_targets=max(12, size // 16))


def table(frames: int = 60, size: int = 256, seed: int = 3, kinds=("clear", "cloudy", "heavy"),
          config: DetectorConfig = DetectorConfig(), hil: HilConfig = HilConfig(), out=print) -> list[dict]:
    """Print (and return) the quality table of the flight detector."""
    rows = []
    out(f"flight detector, {size}x{size}, {frames} frames ({hil.warmup_frames} warm-up), seed {seed}, "
        f"match radius {hil.match_radius_px} px, k_sigma {config.k_sigma}")
    out("| scene | cal. map | Pd@5 | Pd@8 | Pd@12 | Pd@20 | FA/frame | RMS/CRB@8 | RMS/CRB@12 | RMS/CRB@20 (px) |")
    out("|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for cal in (True, False):
            scene = scene_for(kind, size, seed)
            s = evaluate(flight_detector(config), scene, frames, cal, hil)
            row = {"kind": kind, "calibration": cal, "fa_per_frame": s.fa_per_frame(),
                   **{f"pd_{c:g}": s.pd(c) for c in scene.snr_values},
                   **{f"rms_{c:g}": s.rms(c) for c in scene.snr_values},
                   **{f"crb_{c:g}": s.crb(c) for c in scene.snr_values}}
            rows.append(row)
            pds = " | ".join(f"{s.pd(c):.3f}" for c in (5.0, 8.0, 12.0, 20.0))
            rms = " | ".join(f"{s.rms(c):.3f}/{s.crb(c):.3f}" for c in (8.0, 12.0, 20.0))
            out(f"| {kind} | {'yes' if cal else 'no'} | {pds} | {s.fa_per_frame():.2f} | {rms} |")
    return rows


def sweep(kind: str = "cloudy", frames: int = 60, size: int = 256, seed: int = 3,
          thresholds=(3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 7.0, 8.0), with_calibration: bool = True,
          config: DetectorConfig = DetectorConfig(), hil: HilConfig = HilConfig(),
          out=print) -> list[tuple[float, dict, float]]:
    """Pd per class against FA/frame as the CFAR threshold varies (one run at the lowest)."""
    config = replace(config, k_sigma=min(thresholds), max_detections=65535)
    scene = scene_for(kind, size, seed)
    s = evaluate(flight_detector(config), scene, frames, with_calibration, hil)
    out(f"threshold sweep, {kind}, {size}x{size}, {frames} frames, calibration map "
        f"{'yes' if with_calibration else 'no'}")
    out("| k_sigma | FA/frame | " + " | ".join(f"Pd@{c:g}" for c in scene.snr_values) + " |")
    out("|---|---|" + "---|" * len(scene.snr_values))
    result = []
    for k in thresholds:
        pd, fa = s.at_threshold(k)
        result.append((k, pd, fa))
        out(f"| {k:g} | {fa:.2f} | " + " | ".join(f"{pd.get(float(c), float('nan')):.3f}"
                                                 for c in scene.snr_values) + " |")
    return result
