"""Detection quality against simulator truth: Pd per SNR class, false alarms per
frame, centroid RMS against the Cramer-Rao bound, per scene kind, with and
without the calibration map; and a threshold sweep (Pd against FA/frame).

    python -m hil.metrics table [--frames 60] [--size 256] [--seed 3]
    python -m hil.metrics sweep [--kind cloudy] [--frames 60] [--size 256]

Any detector can be scored: ``evaluate`` takes a factory
``make(shape, calibration_mask_or_None) -> callable(frame) -> records with x, y, snr``.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field, replace

import numpy as np

from flight.detection import Detector, DetectorConfig
from hil.scene import SceneConfig, SceneSimulator

MATCH_RADIUS_PX = 1.5
WARMUP_FRAMES = 10  # the temporal model forms over the first frames; they are not scored


def crb_radial(truth: np.ndarray) -> np.ndarray:
    """Radial centroid Cramer-Rao bound (px) per truth row, background-limited Gaussian PSF.

    Per axis var = 8 pi sigma^4 sigma_n^2 / F^2 (continuous PSF, white noise);
    radial = sqrt(2) x per axis.  sigma_n follows from the truth SNR definition
    (PSF peak amplitude F / (2 pi sigma^2) over sigma_n).
    """
    sigma = truth["sigma_psf"].astype(np.float64)
    flux = truth["flux"].astype(np.float64)
    noise = flux / (2 * math.pi * sigma**2) / truth["snr"].astype(np.float64)
    return math.sqrt(2.0) * math.sqrt(8 * math.pi) * sigma**2 * noise / flux


def snr_class(snr: np.ndarray, classes) -> np.ndarray:
    """Nearest class in log SNR (rising tracks pass through lower classes)."""
    classes = np.asarray(classes, np.float64)
    return classes[np.argmin(np.abs(np.log(np.asarray(snr)[:, None] / classes[None, :])), axis=1)]


def match(dets, truth, radius: float = MATCH_RADIUS_PX):
    """Greedy one-to-one matching by distance; (truth index -> det index or -1, det used mask)."""
    assigned = np.full(len(truth), -1)
    used = np.zeros(len(dets), bool)
    if len(dets) and len(truth):
        d = np.hypot(dets["x"][None, :] - truth["x"][:, None], dets["y"][None, :] - truth["y"][:, None])
        for flat in np.argsort(d, axis=None):
            t, j = divmod(int(flat), len(dets))
            if d[t, j] > radius:
                break
            if assigned[t] < 0 and not used[j]:
                assigned[t] = j
                used[j] = True
    return assigned, used


@dataclass
class Score:
    """Accumulated outcome of one detector on one scene."""

    classes: tuple
    frames: int = 0
    false_alarms: int = 0
    found: dict = field(default_factory=dict)  # class -> list[bool]
    errors: dict = field(default_factory=dict)  # class -> list[radial error]
    bounds: dict = field(default_factory=dict)  # class -> list[radial CRB]
    fa_snr: list = field(default_factory=list)  # snr of every false alarm
    hit_snr: dict = field(default_factory=dict)  # class -> list[snr of the match or -inf]

    def add(self, dets, truth) -> None:
        self.frames += 1
        assigned, used = match(dets, truth)
        self.false_alarms += int((~used).sum())
        self.fa_snr.extend(np.asarray(dets["snr"])[~used].tolist())
        if not len(truth):
            return
        cls = snr_class(truth["snr"], self.classes)
        bound = crb_radial(truth)
        for t in range(len(truth)):
            c = float(cls[t])
            j = assigned[t]
            self.found.setdefault(c, []).append(j >= 0)
            self.hit_snr.setdefault(c, []).append(float(dets["snr"][j]) if j >= 0 else -np.inf)
            if j >= 0:
                self.errors.setdefault(c, []).append(
                    math.hypot(float(dets["x"][j] - truth["x"][t]), float(dets["y"][j] - truth["y"][t])))
                self.bounds.setdefault(c, []).append(float(bound[t]))

    def pd(self, c: float) -> float:
        return float(np.mean(self.found[c])) if self.found.get(c) else float("nan")

    def fa_per_frame(self) -> float:
        return self.false_alarms / max(self.frames, 1)

    def rms(self, c: float) -> float:
        e = self.errors.get(c)
        return float(np.sqrt(np.mean(np.square(e)))) if e else float("nan")

    def crb(self, c: float) -> float:
        b = self.bounds.get(c)
        return float(np.sqrt(np.mean(np.square(b)))) if b else float("nan")

    def at_threshold(self, k: float) -> tuple[dict, float]:
        """(Pd per class, FA/frame) keeping only detections with snr >= k."""
        pd = {c: float(np.mean(np.asarray(v) >= k)) for c, v in self.hit_snr.items()}
        return pd, float(np.sum(np.asarray(self.fa_snr) >= k)) / max(self.frames, 1)


def flight_detector(config: DetectorConfig = DetectorConfig()):
    """Factory for the flight detector, for evaluate()."""
    def make(shape, calibration):
        return Detector(config, shape, calibration).process
    return make


def evaluate(make, scene: SceneConfig, frames: int, with_calibration: bool = True,
             warmup: int = WARMUP_FRAMES) -> Score:
    """Run one detector over frames of one scene and score it against the truth."""
    sim = SceneSimulator(scene)
    run = make((scene.height, scene.width), sim.calibration_bad_pixels() if with_calibration else None)
    score = Score(classes=tuple(scene.snr_values))
    for i in range(frames):
        frame, truth = sim.frame(i)
        dets = run(frame)
        if i >= warmup:
            score.add(dets, truth)
    return score


def scene_for(kind: str, size: int, seed: int) -> SceneConfig:
    return SceneConfig(kind=kind, width=size, height=size, seed=seed, n_targets=max(12, size // 16))


def table(frames: int = 60, size: int = 256, seed: int = 3, kinds=("clear", "cloudy", "heavy"),
          config: DetectorConfig = DetectorConfig(), out=print) -> list[dict]:
    """Print (and return) the quality table of the flight detector."""
    rows = []
    out(f"flight detector, {size}x{size}, {frames} frames ({WARMUP_FRAMES} warm-up), seed {seed}, "
        f"match radius {MATCH_RADIUS_PX} px, k_sigma {config.k_sigma}")
    out("| scene | cal. map | Pd@5 | Pd@8 | Pd@12 | Pd@20 | FA/frame | RMS/CRB@8 | RMS/CRB@12 | RMS/CRB@20 (px) |")
    out("|---|---|---|---|---|---|---|---|---|---|")
    for kind in kinds:
        for cal in (True, False):
            scene = scene_for(kind, size, seed)
            s = evaluate(flight_detector(config), scene, frames, cal)
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
          out=print) -> list[tuple[float, dict, float]]:
    """Pd per class against FA/frame as the CFAR threshold varies (one run at the lowest)."""
    config = replace(DetectorConfig(), k_sigma=min(thresholds), max_detections=100000)
    scene = scene_for(kind, size, seed)
    s = evaluate(flight_detector(config), scene, frames, with_calibration)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hil.metrics", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("table", "sweep"):
        p = sub.add_parser(name)
        p.add_argument("--frames", type=int, default=60)
        p.add_argument("--size", type=int, default=256)
        p.add_argument("--seed", type=int, default=3)
        if name == "sweep":
            p.add_argument("--kind", default="cloudy", choices=("clear", "cloudy", "heavy"))
            p.add_argument("--no-calibration", action="store_true")
    args = parser.parse_args(argv)
    if args.frames <= WARMUP_FRAMES:
        parser.error(f"--frames must exceed the {WARMUP_FRAMES} warm-up frames")
    if args.command == "table":
        table(args.frames, args.size, args.seed)
    else:
        sweep(args.kind, args.frames, args.size, args.seed, with_calibration=not args.no_calibration)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
