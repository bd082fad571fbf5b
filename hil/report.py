"""The bench's verdict: what the ground received, scored against the scene's truth."""
from __future__ import annotations

import json
import sqlite3
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .scoring import Score, score_alerts

# What the scorer reads of each detection the ground decoded.
DETECTION_FIELDS = [("x", "f8"), ("y", "f8"), ("snr", "f8")]


@dataclass
class PassReport:
    frames_commanded: int
    frames_processed: int          # by the flight program, from its last housekeeping
    reports_received: int          # detection reports decoded on the ground
    detections_received: int
    bytes_over_link: int
    latency_median_s: float
    latency_worst_s: float
    truth: bool                    # scored against simulator truth
    stored_octets: int = 0         # still in the flight's store at its last housekeeping: for a later pass
    dropped_products: int = 0      # dropped on board by their class's rule (quota or capacity)
    frames_scored: int = 0         # frames after the warm-up that were scored
    target_frames: dict = field(default_factory=dict)     # SNR class -> [detected, total]
    targets_detected: int = 0      # distinct targets found at least once
    targets_total: int = 0
    false_alarms: int = 0
    false_alarms_per_frame: float = 0.0
    centroid_rms_px: float = float("nan")
    alerts_received: int = 0       # alert updates decoded on the ground (alerts.jsonl)
    tracks: dict = field(default_factory=dict)   # the alerts scored against truth (hil.scoring.score_alerts)
    ground: dict = field(default_factory=dict)
    checks: list = field(default_factory=list)   # (name, passed, detail)
    passed: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=float)

    def text(self) -> str:
        lines = ["Kestrel HIL pass report", ""]
        lines.append(f"frames: commanded {self.frames_commanded}, processed on board {self.frames_processed}, "
                     f"reports decoded on ground {self.reports_received}")
        lines.append(f"bytes over the downlink: {self.bytes_over_link}")
        lines.append(f"left on board: {self.stored_octets} octets stored for a later pass, "
                     f"{self.dropped_products} products dropped by their class's rule")
        lines.append(f"latency frame time -> ground decode: median {self.latency_median_s * 1000:.0f} ms, "
                     f"worst {self.latency_worst_s * 1000:.0f} ms")
        if self.truth:
            lines.append(f"targets detected: {self.targets_detected} of {self.targets_total} "
                         f"(found in at least one of {self.frames_scored} scored frames)")
            for snr, (hit, total) in sorted(self.target_frames.items(), key=lambda kv: float(kv[0])):
                pd = hit / total if total else float("nan")
                lines.append(f"  SNR {float(snr):5.1f}: detected in {hit:4d} of {total:4d} target-frames  Pd {pd:.3f}")
            lines.append(f"false alarms: {self.false_alarms} ({self.false_alarms_per_frame:.2f} per frame)")
            lines.append(f"centroid rms error: {self.centroid_rms_px:.3f} px")
            t = self.tracks
            if t:
                lines.append(f"alerts: {self.alerts_received} updates of {t['alert_tracks']} tracks; false alert tracks "
                             f"{t['false_alert_tracks']} ({t['false_alerts_per_1000_frames']:.1f} per 1000 frames); "
                             f"GOSPA mean {t['gospa_mean']:.2f}; track purity {t['track_purity']:.3f}")
                for snr, (hit, total) in sorted(t["confirmed_by_snr"].items(), key=lambda kv: float(kv[0])):
                    first = t["frames_to_first_alert"].get(snr, [])
                    within = sum(f <= 3 for f in first)
                    lines.append(f"  SNR {float(snr):5.1f}: {hit} of {total} targets alerted; first alert within 3 "
                                 f"frames of first visibility for {within} of {len(first)}")
        else:
            lines.append(f"detections received: {self.detections_received} (no truth: recorded frames)")
        lines.append("")
        for name, ok, detail in self.checks:
            lines.append(f"[{'PASS' if ok else 'FAIL'}] {name}: {detail}")
        lines.append("")
        lines.append("RESULT: " + ("PASS" if self.passed else "FAIL"))
        return "\n".join(lines)


def score(out_dir: Path, frames_commanded: int, bytes_over_link: int, hil_config,
          truth_for_frame=None, snr_classes=(), frames_processed: int | None = None) -> PassReport:
    """Read the ground's outputs in `out_dir`; `truth_for_frame(i)` gives TRUTH_DTYPE rows."""
    db = sqlite3.connect(out_dir / "archive.sqlite")
    try:
        reports = db.execute("SELECT frame_index, frame_time, received_at FROM detection_reports").fetchall()
        hk = db.execute("SELECT frames_processed, store_unsent_octets, store_dropped FROM housekeeping "
                        "ORDER BY id DESC LIMIT 1").fetchone()
    finally:
        db.close()
    detections = []
    det_path = out_dir / "detections.jsonl"
    if det_path.exists():
        detections = [json.loads(line) for line in det_path.read_text().splitlines() if line.strip()]
    alerts = []
    alert_path = out_dir / "alerts.jsonl"
    if alert_path.exists():
        alerts = [json.loads(line) for line in alert_path.read_text().splitlines() if line.strip()]
    ground = json.loads((out_dir / "summary.json").read_text()) if (out_dir / "summary.json").exists() else {}
    # A report whose frame time the flight marked invalid (NULL) has no latency; it cannot count as fast.
    timed = [r[2] - r[1] for r in reports if r[1] is not None]
    latencies = np.array(timed if timed and len(timed) == len(reports) else timed + [np.inf])
    processed = frames_processed if frames_processed is not None else (hk[0] if hk else 0)
    report = PassReport(
        frames_commanded=frames_commanded, frames_processed=processed,
        reports_received=len({r[0] for r in reports}), detections_received=len(detections),
        bytes_over_link=bytes_over_link,
        latency_median_s=float(np.median(latencies)), latency_worst_s=float(np.max(latencies)),
        truth=truth_for_frame is not None, ground=ground, alerts_received=len(alerts))
    if hk:
        report.stored_octets, report.dropped_products = hk[1], hk[2]
    checks = report.checks
    checks.append(("every processed frame's report reached the ground",
                   report.reports_received == processed and processed > 0,
                   f"{report.reports_received} of {processed}"))
    checks.append(("worst latency", report.latency_worst_s <= hil_config.pass_max_latency_s,
                   f"{report.latency_worst_s:.2f} s <= {hil_config.pass_max_latency_s:.2f} s"))
    if truth_for_frame is not None:
        _score_truth(report, detections, sorted({r[0] for r in reports}), truth_for_frame, hil_config, snr_classes)
        scored = [i for i in sorted({r[0] for r in reports}) if i >= hil_config.warmup_frames]
        report.tracks = score_alerts(alerts, scored, truth_for_frame, snr_classes, hil_config.match_radius_px,
                                     first_frame=hil_config.warmup_frames)
        hit = sum(v[0] for k, v in report.target_frames.items() if float(k) >= hil_config.pass_snr)
        total = sum(v[1] for k, v in report.target_frames.items() if float(k) >= hil_config.pass_snr)
        pd = hit / total if total else 0.0
        checks.append((f"Pd at SNR >= {hil_config.pass_snr:g}", total > 0 and pd >= hil_config.pass_min_pd,
                       f"{pd:.3f} >= {hil_config.pass_min_pd:.3f} ({hit}/{total})"))
        checks.append(("false alarms per frame", report.false_alarms_per_frame <= hil_config.pass_max_false_per_frame,
                       f"{report.false_alarms_per_frame:.2f} <= {hil_config.pass_max_false_per_frame:.2f}"))
    report.passed = all(ok for _, ok, _ in checks)
    return report


def _score_truth(report: PassReport, detections, frame_indices, truth_for_frame, hil_config, snr_classes) -> None:
    by_frame: dict[int, list] = {}
    for d in detections:
        by_frame.setdefault(d["frame_index"], []).append((d["x"], d["y"], d["snr"]))
    result = Score(classes=tuple(snr_classes), radius=hil_config.match_radius_px)
    scored = [i for i in frame_indices if i >= hil_config.warmup_frames]
    for index in scored:
        result.add(np.array(by_frame.get(index, []), dtype=DETECTION_FIELDS), truth_for_frame(index))
    report.frames_scored = len(scored)
    report.target_frames = {f"{c:g}": [int(np.sum(found)), len(found)] for c, found in sorted(result.found.items())}
    report.targets_total = len(result.targets_seen)
    report.targets_detected = len(result.targets_found)
    report.false_alarms = result.false_alarms
    report.false_alarms_per_frame = result.fa_per_frame()
    report.centroid_rms_px = result.rms_all()
