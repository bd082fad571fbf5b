"""Where the scene makes false alarms: the detections no track took, mapped on the ground.

A cloud rim or a glint that the detector keeps flagging is fixed on the ground, and in heavy
cloud its false alarms are what false alert tracks are made of. The tracker's track score
assumes one clutter density everywhere (`clutter_density`); this map measures it cell by cell,
so that a track born where false alarms recur needs more detections before it is alerted
(Tracker, `alert_min_hits`).
"""
from __future__ import annotations

import math

import numpy as np


class ClutterMap:
    """Detections no track took (each new track's first one among them), per frame, in each
    `cell_px` square of the ground: an exponential average over about `memory` frames.

    density() is the posterior mean of the rate under a gamma prior of mean `prior_density`
    (detections per px per frame) worth `memory` frames: with 4 px cells a single detection
    within a few px in the last `memory` frames raises it a few times over the prior (a track
    there needs one detection more), one that fires every few frames far more; once `memory`
    frames have passed it lies halfway between the prior and the rate measured, a shrinkage the
    tracker's rule (tracking.alert_hits) was measured with. One factor decays every cell, so a
    frame costs only the cells its detections land in, and cells gone quiet are dropped every
    `memory` frames.

    Frames must come in order (the tracker checks). Positions are the tracker's ground pixels."""

    def __init__(self, cell_px: float, memory: float, prior_density: float) -> None:
        if not (cell_px > 0 and memory >= 1 and prior_density >= 0):
            raise ValueError(f"need cell_px > 0, memory >= 1 and prior_density >= 0, got "
                             f"{cell_px}, {memory}, {prior_density}")
        self.cell_px = float(cell_px)
        self.memory = float(memory)
        self.prior_density = float(prior_density)
        self._keep = 1.0 - 1.0 / self.memory
        # cell -> its average at frame f is u keep^(f - epoch): one factor decays every cell, and a
        # read is a lookup; _renew brings the epoch forward (and drops quiet cells) every `memory` frames
        self._cells: dict[tuple[int, int], float] = {}
        self._epoch = 0
        self._first: int | None = None
        self._area = 9.0 * self.cell_px ** 2   # the 3 x 3 cells density() reads
        self._prior_count = self.prior_density * self._area * self.memory
        self._frame: int | None = None   # density()'s per-frame factors, for this frame
        self._decay = self._norm = 0.0

    def __len__(self) -> int:
        return len(self._cells)

    def _key(self, x: float, y: float) -> tuple[int, int]:
        return math.floor(x / self.cell_px), math.floor(y / self.cell_px)

    def add(self, points: np.ndarray, frame_index: int) -> None:
        """This frame's detections that no track took: (n, 2) ground (x, y); non-finite rows are
        skipped. Call once a frame, frames in order, with an empty array on a frame without any."""
        if self._first is None:
            self._first = self._epoch = frame_index
        if frame_index - self._epoch >= self.memory:
            self._renew(frame_index)
        share = (1.0 - self._keep) / self._keep ** (frame_index - self._epoch)
        cells, cell, finite = self._cells, self.cell_px, math.isfinite
        # a frame brings a few detections: plain floats beat numpy's cost per call here
        for x, y in np.asarray(points, np.float64).reshape(-1, 2).tolist():
            if finite(x) and finite(y):
                key = (math.floor(x / cell), math.floor(y / cell))
                cells[key] = cells.get(key, 0.0) + share

    def _renew(self, frame_index: int) -> None:
        # a cell worth less than a hundredth of one detection's share counts for nothing
        scale = self._keep ** (frame_index - self._epoch)
        floor = 0.01 * (1.0 - self._keep)
        self._cells = {k: u * scale for k, u in self._cells.items() if u * scale >= floor}
        self._epoch = frame_index
        self._frame = None

    def density(self, x: float, y: float, frame_index: int, own: tuple[float, float, int] | None = None) -> float:
        """Detections per pixel per frame around ground (x, y): the 3 x 3 cells centred on its
        cell, over the frames seen (the first ones' average corrected for its start at zero),
        with the prior. `own`: (x, y, frame) of a detection that is not clutter (the one that
        started the track asking), taken out if it was counted there."""
        if self._first is None or not (math.isfinite(x) and math.isfinite(y)):
            return self.prior_density
        if self._frame != frame_index:   # what every read of a frame shares
            frames = frame_index - self._first + 1
            # the average holds 1 - keep^frames of the true rate: in frames' worth of detections
            self._decay = self._keep ** (frame_index - self._epoch) * self.memory
            self._norm = 1.0 / (((1.0 - self._keep ** frames) * self.memory + self.memory) * self._area)
            self._frame = frame_index
        cx, cy = math.floor(x / self.cell_px), math.floor(y / self.cell_px)
        get = self._cells.get
        held = (get((cx - 1, cy - 1), 0.0) + get((cx, cy - 1), 0.0) + get((cx + 1, cy - 1), 0.0)
                + get((cx - 1, cy), 0.0) + get((cx, cy), 0.0) + get((cx + 1, cy), 0.0)
                + get((cx - 1, cy + 1), 0.0) + get((cx, cy + 1), 0.0) + get((cx + 1, cy + 1), 0.0))
        seen = held * self._decay   # detections, in the frames' weight
        if own is not None and own[2] >= self._first and math.isfinite(own[0]) and math.isfinite(own[1]):
            ox, oy = self._key(own[0], own[1])
            if abs(ox - cx) <= 1 and abs(oy - cy) <= 1:
                seen = max(seen - self._keep ** (frame_index - own[2]), 0.0)
        return (seen + self._prior_count) * self._norm
