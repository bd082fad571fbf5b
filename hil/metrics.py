"""Detection and tracking quality against simulator truth (`kestrel-hil metrics`): Pd per SNR
class, false alarms per frame, centroid RMS against the Cramer-Rao bound, per
scene kind, with and without the calibration map; a threshold sweep (Pd
against FA/frame); and tracks as alerts (`tracks`). Scored by hil.scoring, as
the demo's verdict is.

Any detector can be scored: ``evaluate`` takes a factory
``make(shape, calibration_mask_or_None) -> callable(frame) -> records with x, y, snr``.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from flight.alerts import AlertPublisher
from flight.classifier import FalseAlarmFilter, FrameHistory, load_weights
from flight.detection import Detector, DetectorConfig
from flight.tracking import TrackerConfig

from .config import HilConfig
from .scene import SceneConfig, SceneSimulator
from .scoring import Score, TrackScore, alert_picture


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


def track_run(scene: SceneConfig, frames: int, tracker: TrackerConfig = TrackerConfig(),
              detector: DetectorConfig = DetectorConfig(), hil: HilConfig = HilConfig(),
              score: TrackScore | None = None, id_offset: int = 0, classifier_scores: dict | None = None):
    """Detector, false-alarm filter (the shipped weights), tracker and alert policy of the flight program
    over one scene, in process (no link).

    Returns (score, kinds): kinds maps each alert track to (its last alerted kind, the truth kind of the
    target it was on most). Target and track ids are offset by `id_offset` so runs can share a score.
    `classifier_scores`, if given, gets each alert track's classifier score at its last update."""
    sim = SceneSimulator(scene)
    shape = (scene.height, scene.width)
    detect = Detector(detector, shape, sim.calibration_bad_pixels()).process
    publisher = AlertPublisher(tracker, shape)
    classifier = FalseAlarmFilter(load_weights(), shape)
    history = FrameHistory(shape, classifier.lag)
    score = score or TrackScore(classes=tuple(scene.snr_values), radius=hil.match_radius_px)
    alerts: list[dict] = []
    truth_kind: dict[int, str] = {}
    last_kind: dict[int, str] = {}
    truths = {}
    for i in range(frames):
        frame, truth = sim.frame(i)
        truth = truth.copy()
        truth["target"] += id_offset
        truths[i] = truth
        for target, *_rest, kind in sim.targets(i):
            truth_kind[target + id_offset] = kind
        dets = detect(frame)
        current = history.push(frame)
        past = history.past()
        scores = classifier.score(current, past, dets) if past is not None else None
        for a in publisher.frame(i, b"", None, dets, scores):
            alerts.append(dict(track_id=a.track_id + id_offset, frame_index=a.frame_index, x=a.x, y=a.y,
                               vx=a.vx, vy=a.vy, ended=a.end.name if a.end else None, update=a.update))
            last_kind[a.track_id + id_offset] = a.kind.name
            if classifier_scores is not None:
                classifier_scores[a.track_id + id_offset] = a.classifier_score
    picture = alert_picture(alerts)
    for i in range(hil.warmup_frames, frames):
        rows, fresh = picture(i)
        score.add(i, truths[i], rows, fresh)
    kinds = {}
    for track, counts in score.on_target.items():
        if track in last_kind:
            target = max(counts, key=counts.get)
            kinds[track] = (last_kind[track], truth_kind.get(target, "?"))
    return score, kinds


def track_table(seeds=(1001, 1002, 1003), frames: int = 200, size: int = 256, kind: str = "cloudy",
                tracker: TrackerConfig = TrackerConfig(), detector: DetectorConfig = DetectorConfig(),
                hil: HilConfig = HilConfig(), out=print) -> dict:
    """Score tracks (as the alerts the ground would get) on several scenes; print and return the summary."""
    score = None
    kinds: dict = {}
    classifier: dict = {}
    for n, seed in enumerate(seeds):
        scene = scene_for(kind, size, seed)
        score, k = track_run(scene, frames, tracker, detector, hil, score, id_offset=(n + 1) * 10_000_000,
                             classifier_scores=classifier)
        kinds.update(k)
    summary = score.summary(first_frame=hil.warmup_frames)
    confusion: dict = {}
    for alerted, truth in kinds.values():
        confusion[f"{truth}->{alerted}"] = confusion.get(f"{truth}->{alerted}", 0) + 1
    summary["kind_confusion"] = dict(sorted(confusion.items()))
    out(f"tracks, {kind}, {size}x{size}, seeds {list(seeds)}, {frames} frames each ({hil.warmup_frames} warm-up), "
        f"model {tracker.model}, match radius {hil.match_radius_px} px")
    out("| SNR class | targets alerted | frames to first alert: median / p90 / share <= 3 |")
    out("|---|---|---|")
    for cls, (hit, total) in sorted(summary["confirmed_by_snr"].items(), key=lambda kv: float(kv[0])):
        lat = np.sort(np.array(summary["frames_to_first_alert"].get(cls, []), float))   # inf: never alerted
        text = (f"{lat[(len(lat) - 1) // 2]:.0f} / {lat[int(np.ceil(0.9 * len(lat))) - 1]:.0f} / "
                f"{np.mean(lat <= 3):.2f} (n={len(lat)})" if len(lat) else "-")
        out(f"| {cls} | {hit}/{total} = {hit / max(total, 1):.3f} | {text} |")
    out("| speed (px/frame) | targets alerted |")
    out("|---|---|")
    for cls, (hit, total) in summary["confirmed_by_speed"].items():
        out(f"| {cls} | {hit}/{total} = {hit / max(total, 1):.3f} |")
    out(f"false alert tracks: {summary['false_alert_tracks']} of {summary['alert_tracks']} "
        f"({summary['false_alerts_per_1000_frames']:.2f} per 1000 frames); GOSPA mean {summary['gospa_mean']:.2f} "
        f"(c = {score.gospa_c:g} px; missed {summary['gospa_missed_per_frame']:.2f}, false "
        f"{summary['gospa_false_per_frame']:.2f} per frame); track purity {summary['track_purity']:.3f}")
    out(f"kinds (truth -> alerted): {summary['kind_confusion']}")
    # The filter never vetoes: how its score (mean over a track's detections, at the track's last alert
    # update) sets the false alert tracks apart from the true ones. A false track is one whose updates
    # were mostly on no target, as in the summary.
    false = {t for t, n in score.track_frames.items() if sum(score.on_target.get(t, {}).values()) < n / 2}
    on = np.array([v for t, v in classifier.items() if t in score.track_frames and t not in false])
    off = np.array([v for t, v in classifier.items() if t in false])
    summary["classifier_true_tracks"] = on.tolist()
    summary["classifier_false_tracks"] = off.tolist()
    out(f"classifier score of alert tracks: true ({len(on)}) median {np.median(on) if len(on) else float('nan'):.3f}, "
        f"below 0.5: {int(np.sum(on < 0.5))}; false ({len(off)}): {', '.join(f'{v:.3f}' for v in sorted(off)) or '-'}")
    return summary
