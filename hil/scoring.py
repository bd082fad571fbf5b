"""The bench's one way to score detections against the scene's truth.

Both the demo's verdict (hil.report) and `kestrel-hil metrics` use it: one
matcher (greedy one to one by distance, within one radius), one SNR binning
(nearest class in log SNR) and one centroid bound (Cramer-Rao).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np


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


def match(dets, truth, radius: float):
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
    radius: float
    frames: int = 0
    false_alarms: int = 0
    found: dict = field(default_factory=dict)  # class -> list[bool]
    errors: dict = field(default_factory=dict)  # class -> list[radial error]
    bounds: dict = field(default_factory=dict)  # class -> list[radial CRB]
    fa_snr: list = field(default_factory=list)  # snr of every false alarm
    hit_snr: dict = field(default_factory=dict)  # class -> list[snr of the match or -inf]
    targets_seen: set = field(default_factory=set)   # track ids in the scored truth
    targets_found: set = field(default_factory=set)  # track ids matched at least once

    def add(self, dets, truth) -> None:
        self.frames += 1
        assigned, used = match(dets, truth, self.radius)
        self.false_alarms += int((~used).sum())
        self.fa_snr.extend(np.asarray(dets["snr"])[~used].tolist())
        if not len(truth):
            return
        cls = snr_class(truth["snr"], self.classes)
        bound = crb_radial(truth)
        for t in range(len(truth)):
            c = float(cls[t])
            j = assigned[t]
            self.targets_seen.add(int(truth["target"][t]))
            if j >= 0:
                self.targets_found.add(int(truth["target"][t]))
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

    def rms_all(self) -> float:
        e = [v for values in self.errors.values() for v in values]
        return float(np.sqrt(np.mean(np.square(e)))) if e else float("nan")

    def crb(self, c: float) -> float:
        b = self.bounds.get(c)
        return float(np.sqrt(np.mean(np.square(b)))) if b else float("nan")

    def at_threshold(self, k: float) -> tuple[dict, float]:
        """(Pd per class, FA/frame) keeping only detections with snr >= k."""
        pd = {c: float(np.mean(np.asarray(v) >= k)) for c, v in self.hit_snr.items()}
        return pd, float(np.sum(np.asarray(self.fa_snr) >= k)) / max(self.frames, 1)
