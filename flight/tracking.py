"""Multi-target tracking on board: detection records in, confirmed and classified tracks out.

Each frame:

    predict (constant velocity; with `model = "imm"` an interacting pair:
             quiet CV and manoeuvring CV, mixed by their probabilities)
    -> gate (Mahalanobis distance of each detection to each track's predicted
             position, the detection's Cramer-Rao sigma and jitter_px as its
             measurement noise)
    -> global nearest-neighbour assignment (flight.assignment)
    -> Kalman update of the assigned tracks
    -> the same for the detector's faint detections (below its threshold)
       onto the tracks left without one: they continue tracks, start none
    -> M-of-N confirmation; deletion (tentative: cannot reach M of N;
       confirmed: consecutive misses, a position too uncertain to use, or
       predicted out of the frame)
    -> new tentative tracks from unassigned detections off the border, once
       the detector has settled
    -> kinds for confirmed tracks, from their recent history.

The state of every track lives in fixed-size arrays (`max_tracks` slots): the
tracker's memory is bounded, and a birth with no free slot is refused and
counted. States are (x, y, vx, vy) in pixels and pixels per frame, on the
ground (the first frame's pixels) when the detector gives the scene offset;
reports are in the frame's own pixels.

The arithmetic across tracks (predict, gate distances, update, births, the
history fits behind the kinds) runs in the kernel flight.kernels.tracking, one
loop over the tracks per call, because numpy's cost per call on a few dozen
tracks was most of the frame; flight/tracking_ref.py is its numpy twin. This
module keeps the decisions: assignment, confirmation, deletion, kinds, reports.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final

import numpy as np

from kestrel.products import Evidence, TrackEnd, TrackKind
from kestrel.settings import ConfigurationError, Settings, setting

from .assignment import assign
from .clutter import ClutterMap
from .kernels import tracking as _kernel

# Smallest measurement sigma (px): keeps the innovation covariance invertible with jitter 0 and a tiny CRB.
MIN_MEASUREMENT_SIGMA: Final = 0.01
_POPCOUNT: Final = np.array([bin(i).count("1") for i in range(1 << 16)], dtype=np.int8)
_NONE: Final = np.empty(0, np.intp)
_REQUIRED_FIELDS: Final = ("x", "y", "sigma_x", "sigma_y", "flux", "snr")
# alert_hits: clutter in a gate more often than this is as bad as it gets (ln of it stays below 0)
CLUTTER_MOST_IN_GATE: Final = 0.5
# The evidence bits as ints, and every kind and evidence value made once: a report is built per track per frame.
_MOVING, _SLOW, _FAST = int(Evidence.MOVING), int(Evidence.SLOW), int(Evidence.FAST)
_BRIGHTENING, _ACCELERATING = int(Evidence.BRIGHTENING), int(Evidence.ACCELERATING)
_MANOEUVRING, _STEADY = int(Evidence.MANOEUVRING), int(Evidence.STEADY)
_EVIDENCE: Final = tuple(Evidence(i) for i in range(sum(int(f) for f in Evidence) + 1))
_KINDS: Final = MappingProxyType({int(k): k for k in TrackKind})


@dataclass(frozen=True)
class TrackerConfig(Settings):
    """The onboard tracker; positions in pixels, velocities in pixels per frame."""

    model: str = setting("imm", "motion model: imm (quiet and manoeuvring constant velocity, interacting) or "
                         "cv (one constant-velocity filter)", choices=("imm", "cv"))
    process_noise: float = setting(0.005, "white-acceleration spectral density of the constant-velocity model "
                                   "(px^2/frame^3)", above=0, high=100)
    manoeuvre_noise: float = setting(0.2, "the same for the manoeuvring model of imm (px^2/frame^3): a glide "
                                     "vehicle turning", above=0, high=100)
    switch_probability: float = setting(0.05, "imm: probability per frame of switching model", above=0, high=0.5)
    jitter_px: float = setting(0.3, "position noise added in quadrature to each detection's Cramer-Rao sigma "
                               "(rms per axis: the registration's error, and the centroid's beyond the bound, "
                               "about 2x it at SNR 8 on the scene family; the platform's jitter too when no "
                               "scene offset is given)",
                               low=0, high=10)
    initial_speed_sigma: float = setting(3.0, "1-sigma velocity per axis of a new track (px/frame): about half "
                                         "the fastest target expected", above=0, high=100)
    gate_sigma: float = setting(3.5, "gate: the largest Mahalanobis distance of a detection to a track; also "
                                "the cost of a miss in the assignment", above=0, high=20)
    confirm_m: int = setting(3, "a track is confirmed with detections in confirm_m of its last confirm_n frames",
                             low=1, high=16)
    confirm_n: int = setting(4, "the window of M-of-N confirmation (frames)", low=1, high=16)
    delete_misses: int = setting(3, "a confirmed track is deleted after this many frames in a row without a "
                                 "detection", low=1, high=100)
    max_position_sigma: float = setting(5.0, "a confirmed track whose position sigma exceeds this (px) is lost",
                                        above=0, high=1000)
    border_px: float = setting(4.0, "detections closer than this to the frame edge start no track (a cut PSF, "
                               "a target leaving)", low=0, high=1000)
    max_tracks: int = setting(256, "track slots (tentative and confirmed); a birth with none free is refused "
                              "and counted", low=1, high=65535)
    detection_probability: float = setting(0.9, "probability of detecting a target, for the track score",
                                           above=0, high=0.999)
    clutter_density: float = setting(1e-5, "false detections per pixel per frame, for the track score",
                                     above=0, high=1)
    history_frames: int = setting(16, "detections of each track kept to classify it (ring)", low=6, high=64)
    classify_min_hits: int = setting(6, "detections a track needs before intensity trend and acceleration "
                                     "count as evidence", low=4, high=64)
    evidence_sigmas: float = setting(2.0, "how many sigmas a test must pass by to count as evidence",
                                     above=0, high=10)
    slow_speed: float = setting(0.15, "below this speed (px/frame; the lower of across the sensor and over the "
                                "ground) a track is slow or stationary: flagged, never alerted", low=0, high=100)
    boost_min_trend: float = setting(0.01, "brightening: slope of ln(flux) per frame above this", low=0, high=10)
    boost_min_accel: float = setting(0.05, "accelerating: acceleration along the path above this (px/frame^2)",
                                     low=0, high=100)
    glide_min_speed: float = setting(1.0, "fast: speed (as for slow_speed) above this (px/frame)", low=0, high=100)
    glide_min_turn: float = setting(0.02, "manoeuvring: acceleration across the path above this (px/frame^2)",
                                    low=0, high=100)
    steady_max_trend: float = setting(0.01, "steady: |slope of ln(flux)| per frame not significantly above this",
                                      low=0, high=10)
    alert_min_hits: int = setting(4, "detections (faint ones not counted) a track needs before it may be "
                                  "alerted, of any kind (boost and glide need classify_min_hits, faint ones "
                                  "counted, to be shown anyway): three detections give a speed "
                                  "whose sigma, from the Cramer-Rao bound, is far below what cloud-edge "
                                  "clutter wanders, and ground-fixed clutter was alerted as moving",
                                  low=1, high=64)
    clutter_cell: float = setting(4.0, "side (px) of a cell of the clutter map: the ground's cells where detections "
                                  "no track took are counted (flight.clutter)", above=0, high=1024)
    clutter_memory: float = setting(64.0, "frames the clutter map averages over; a track needs alert_min_hits "
                                    "detections scaled by ln(clutter_density A) / ln(local density A), A the gate's "
                                    "area for a detection of sigma jitter_px, before it is alerted: as unlikely to "
                                    "be made of clutter as where clutter is at clutter_density (0: no map)",
                                    low=0, high=100000)
    alert_update_frames: int = setting(10, "an open alert is sent again every this many frames (and whenever "
                                       "its kind changes)", low=1, high=100000)
    classifier_weight: float = setting(2.0, "the track score adds classifier_weight x (2 m - 1), m the mean "
                                       "false-alarm-filter score of its detections: a bounded term, so the "
                                       "filter never vetoes a track (0: ignore the filter)", low=0, high=20)
    alert_chip_frames: int = setting(8, "lossless chips of an alert's track, one a frame from its opening, "
                                     "while the track lasts (0: none)", low=0, high=10000)

    def check(self) -> None:
        if self.confirm_m > self.confirm_n:
            raise ConfigurationError(f"confirm_m ({self.confirm_m}) must not exceed confirm_n ({self.confirm_n})")
        if 0 < self.clutter_memory < 1:
            raise ConfigurationError(f"clutter_memory must be 0 (no clutter map) or at least 1 frame, "
                                     f"got {self.clutter_memory}")
        if self.classify_min_hits > self.history_frames:
            raise ConfigurationError(f"classify_min_hits ({self.classify_min_hits}) must not exceed "
                                     f"history_frames ({self.history_frames})")


@dataclass(frozen=True)
class TrackReport:
    """A confirmed track after a frame: its state, what it is and the evidence that says so."""

    track_id: int
    frame_index: int
    first_index: int
    first_stamp: Any                 # what update() was given with the track's first detection
    hits: int
    state: np.ndarray                # x, y, vx, vy
    covariance: np.ndarray           # 4 x 4
    kind: TrackKind
    evidence: Evidence               # the tests that passed this frame
    kind_evidence: Evidence          # the tests that set the kind, when they set it
    flux: float
    trend: float
    trend_sigma: float
    speed: float
    speed_sigma: float
    accel_along: float
    accel_across: float
    accel_sigma: float
    manoeuvre_probability: float
    score: float
    classifier_score: float
    alertable: bool                  # moving, or boost or glide; never slow
    end: TrackEnd = TrackEnd.OPEN
    clutter_density: float = 0.0     # unassociated detections per px per frame around it (ClutterMap)
    alert_hits: int = 0              # detections (not faint) it needs to be alerted, there


@dataclass
class TrackerCounters:
    frames: int = 0
    detections: int = 0
    detections_rejected: int = 0     # non-finite position or sigma (faint ones included)
    faint_detections: int = 0        # offered to continue tracks (Detector.faint)
    faint_used: int = 0              # of those, taken by a track
    tracks_born: int = 0
    births_refused: int = 0          # no free slot
    births_withheld: int = 0         # detections that started no track: the detector had not settled
    tracks_confirmed: int = 0
    tracks_deleted: int = 0


@dataclass
class FrameResult:
    confirmed: list = field(default_factory=list)     # TrackReport of each confirmed track alive
    ended: list = field(default_factory=list)         # TrackReport (end set) of each confirmed track that ended
    associations: dict = field(default_factory=dict)  # track id -> index of its detection in this frame
    faint_associations: dict = field(default_factory=dict)  # track id -> index of its faint detection


class Tracker:
    """`update(frame_index, detections, stamp)` once a frame, frames in order; detections of DETECTION_DTYPE.

    `table`: the class that runs the per-track arithmetic on the tracker's arrays; the compiled kernel
    (flight.kernels.tracking) by default, its numpy twin (flight.tracking_ref) to check it against.
    """

    def __init__(self, config: TrackerConfig, shape: tuple[int, int], table=None):
        self.config = c = config
        self.height, self.width = int(shape[0]), int(shape[1])
        if self.height < 1 or self.width < 1:
            raise ValueError(f"frame shape must be positive, got {shape}")
        self.counters = TrackerCounters()
        self._scene_motion = (0.0, 0.0)  # the last update's (dx, dy) of the ground across the sensor, px/frame
        self._ground = (0.0, 0.0)  # the last update's scene offset: sensor pixel p is ground point p + this
        self._offsets: deque = deque()  # (frame, fx, fy) scene offsets of the last history_frames frames
        self.clutter = (ClutterMap(c.clutter_cell, c.clutter_memory, c.clutter_density)
                        if c.clutter_memory > 0 else None)
        models = 2 if c.model == "imm" else 1
        cap, hist = c.max_tracks, c.history_frames
        q = np.array([c.process_noise, c.manoeuvre_noise][:models])
        # Continuous white-noise acceleration, dt = 1 frame, per axis: q [[1/3, 1/2], [1/2, 1]].
        Q = q[:, None, None] * np.array([[1 / 3, 0, 1 / 2, 0], [0, 1 / 3, 0, 1 / 2],
                                         [1 / 2, 0, 1, 0], [0, 1 / 2, 0, 1]])[None]
        p = c.switch_probability
        switch = np.array([[1 - p, p], [p, 1 - p]]) if models == 2 else np.ones((1, 1))
        self.models = models
        # What the table's arithmetic reads and writes (layout: flight/tracking_ref.py).
        self._arrays = a = {
            "x": np.zeros((cap, models, 4)), "P": np.zeros((cap, models, 4, 4)), "mu": np.zeros((cap, models)),
            "window": np.zeros(cap, np.int64),       # hit bits of recent frames, newest lowest
            "age": np.zeros(cap, np.int64),          # frames since birth
            "misses": np.zeros(cap, np.int64),       # consecutive
            "hits": np.zeros(cap, np.int64), "score": np.zeros(cap), "flux": np.zeros(cap),
            "h_t": np.zeros((cap, hist)), "h_x": np.zeros((cap, hist)), "h_y": np.zeros((cap, hist)),
            "h_f": np.zeros((cap, hist)),            # history ring: frame, x, y, ln flux,
            "h_r": np.zeros((cap, hist)),            # measurement variance per axis (mean of x and y)
            "h_n": np.zeros(cap, np.int64),          # entries written (ring position = n % hist)
        }
        self._mu, self._window, self._age, self._misses = a["mu"], a["window"], a["age"], a["misses"]
        self._hits, self._score, self._flux = a["hits"], a["score"], a["flux"]
        self._active = np.zeros(cap, bool)
        self._id = np.zeros(cap, np.int64)
        self._confirmed = np.zeros(cap, bool)
        self._first = np.zeros(cap, np.int64)
        self._birth = np.zeros((cap, 2))             # ground (x, y) of the detection that started it
        self._kind = np.zeros(cap, np.int64)
        self._kind_evidence = np.zeros(cap, np.int64)
        self._cls_sum = np.zeros(cap)                # classifier scores of the track's detections: sum, count
        self._cls_n = np.zeros(cap, np.int64)
        self._strong = np.zeros(cap, np.int64)       # detections at k_sigma or above (faint ones not)
        self._stamps: dict[int, Any] = {}
        self._next_id = 1
        self._last_index: int | None = None
        self._window_mask = (1 << c.confirm_n) - 1
        log_pd = math.log(c.detection_probability) - math.log(c.clutter_density)
        log_miss = math.log(1 - c.detection_probability)
        self._table = (table or _kernel.TrackTable)(a, Q, switch, log_pd, log_miss, c.initial_speed_sigma ** 2,
                                                    c.classify_min_hits)

    # --- input ----------------------------------------------------------------
    def _measurements(self, detections: np.ndarray):
        if not isinstance(detections, np.ndarray) or detections.dtype.names is None:
            raise ValueError("detections must be a structured array of kestrel.products.DETECTION_DTYPE")
        missing = [n for n in _REQUIRED_FIELDS if n not in detections.dtype.names]
        if missing:
            raise ValueError(f"detections lack the fields {missing} of kestrel.products.DETECTION_DTYPE")
        z = np.empty((len(detections), 2))
        z[:, 0], z[:, 1] = detections["x"], detections["y"]
        sx = detections["sigma_x"].astype(np.float64)
        sy = detections["sigma_y"].astype(np.float64)
        good = np.isfinite(z).all(axis=1) & np.isfinite(sx) & np.isfinite(sy) & (sx >= 0) & (sy >= 0)
        self.counters.detections_rejected += len(good) - int(np.count_nonzero(good))
        jitter2 = self.config.jitter_px ** 2
        rx = np.maximum(sx * sx + jitter2, MIN_MEASUREMENT_SIGMA ** 2)
        ry = np.maximum(sy * sy + jitter2, MIN_MEASUREMENT_SIGMA ** 2)
        return z, rx, ry, good

    # --- the frame ---------------------------------------------------------------
    def update(self, frame_index: int, detections: np.ndarray, stamp: Any = None,
               scores: np.ndarray | None = None, scene_offset: tuple[float, float] | None = None,
               faint: np.ndarray | None = None, births: bool = True) -> FrameResult:
        """`scores`: the false-alarm filter's score in [0, 1] of each detection (NaN: not scored), or None.
        `faint`: detections below the detector's threshold (Detector.faint), or None. They are offered
        to the tracks that this frame's detections left without one, gated as the rest, and continue
        those they fall in; they never start a track, and a track is alerted only once
        `alert_min_hits` of its detections were not faint. A faint target is so kept between the
        frames where it passes the threshold, at little risk: its gate is a few pixels, where noise
        that high is rare. `births` False: the detections continue tracks but start none (a detector
        that has not settled, Detector.settled).
        `scene_offset`: where this frame's sensor sits on the ground, px (Detector.scene_offset), or None
        (the sensor does not move). Tracks are kept on the ground (detection + offset): the platform's
        jitter, up to a pixel a frame, moves every detection of a frame alike, and the registration
        measures it to a few hundredths, so a track's velocity is not thrown about by it. Reports are
        in this frame's sensor pixels. A kind is judged by the lower of the speed over the ground and
        across the sensor (the ground's apparent motion, the slope of the offsets over the last
        history_frames frames, added), so that a fire or a cloud rim that the platform's drift carries
        across the sensor is slow, as a hot pixel is."""
        if self._last_index is not None and frame_index <= self._last_index:
            raise ValueError(f"frame {frame_index} after frame {self._last_index}: frames must come in order")
        self._scene_motion = self._ground_motion(frame_index, scene_offset)
        self._ground = (0.0, 0.0) if scene_offset is None else (float(scene_offset[0]), float(scene_offset[1]))
        steps = 1 if self._last_index is None else frame_index - self._last_index
        self._last_index = frame_index
        c = self.config
        table = self._table
        self.counters.frames += 1
        self.counters.detections += len(detections)
        z, rx, ry, good = self._measurements(detections)
        sensor_z = z.copy()
        z[:, 0] += self._ground[0]
        z[:, 1] += self._ground[1]
        if scores is not None:
            scores = np.asarray(scores, np.float64)
            if scores.shape != (len(detections),):
                raise ValueError(f"scores must be one per detection ({len(detections)}), got shape {scores.shape}")
        flux = detections["flux"].astype(np.float64)
        slots = np.flatnonzero(self._active)
        for _ in range(min(steps - 1, 64)):   # a skipped frame is a prediction without a detection; past 64 all are lost
            table.predict(slots)
            table.miss(slots)
        table.predict(slots)
        result = FrameResult()
        assigned_slots = assigned_dets = _NONE
        if len(slots) and good.any():
            distance = np.empty((len(slots), len(detections)))
            table.distance(slots, z, rx, ry, good.view(np.uint8), distance)
            rows, cols = assign(distance, c.gate_sigma)
            assigned_slots, assigned_dets = slots[rows], cols
        missed = slots
        if len(assigned_slots):
            table.update(assigned_slots, assigned_dets, z, rx, ry, flux, frame_index)
            if scores is not None:
                self._add_scores(assigned_slots, scores[assigned_dets])
            keep = np.ones(len(slots), bool)
            keep[rows] = False
            missed = slots[keep]
        self._strong[assigned_slots] += 1
        if faint is not None and len(faint):
            missed = self._continue_faint(missed, faint, frame_index, result)
        table.miss(missed)
        ids = self._id[assigned_slots].tolist()
        result.associations = dict(zip(ids, assigned_dets.tolist()))
        self._manage(slots, result)
        unassigned = good.copy()
        unassigned[assigned_dets] = False
        if births:
            if self.clutter is not None:   # an unsettled detector's false alarms say nothing of the scene
                self.clutter.add(z[unassigned], frame_index)
            self._births(np.flatnonzero(unassigned), sensor_z, z, rx, ry, flux, frame_index, stamp, scores)
        else:
            self.counters.births_withheld += int(np.count_nonzero(unassigned))
        live = np.flatnonzero(self._active & self._confirmed)
        if len(live):
            result.confirmed = self._reports(live, frame_index)
        return result

    def _continue_faint(self, slots: np.ndarray, faint: np.ndarray, frame_index: int,
                        result: FrameResult) -> np.ndarray:
        """The faint detections onto the tracks `slots` (predicted, without a detection this frame) they
        gate with; returns the slots still without one."""
        self.counters.faint_detections += len(faint)
        z, rx, ry, good = self._measurements(faint)
        if not len(slots) or not good.any():
            return slots
        z[:, 0] += self._ground[0]
        z[:, 1] += self._ground[1]
        distance = np.empty((len(slots), len(faint)))
        self._table.distance(slots, z, rx, ry, good.view(np.uint8), distance)
        rows, cols = assign(distance, self.config.gate_sigma)
        if not len(rows):
            return slots
        self._table.update(slots[rows], cols, z, rx, ry, faint["flux"].astype(np.float64), frame_index)
        self.counters.faint_used += len(rows)
        result.faint_associations = dict(zip(self._id[slots[rows]].tolist(), cols.tolist()))
        keep = np.ones(len(slots), bool)
        keep[rows] = False
        return slots[keep]

    def _ground_motion(self, frame_index: int, scene_offset) -> tuple[float, float]:
        """(dx, dy) px/frame the ground appears to move across the sensor: minus the least-squares slope
        of the scene offsets kept over the last history_frames frames; (0, 0) with fewer than two."""
        if scene_offset is None:
            self._offsets.clear()
            return 0.0, 0.0
        fx, fy = float(scene_offset[0]), float(scene_offset[1])
        if not (math.isfinite(fx) and math.isfinite(fy)):
            raise ValueError(f"scene_offset must be finite, got {scene_offset}")
        self._offsets.append((float(frame_index), fx, fy))
        while self._offsets and self._offsets[0][0] <= frame_index - self.config.history_frames:
            self._offsets.popleft()
        if len(self._offsets) < 2:
            return 0.0, 0.0
        t, x, y = np.array(self._offsets).T
        t = t - t.mean()
        den = float(np.dot(t, t))
        return -float(np.dot(t, x)) / den, -float(np.dot(t, y)) / den

    def _combined(self, slots: np.ndarray):
        """(states, covariances) of `slots`, models combined, in this frame's sensor pixels as
        detections are: the tracks' ground position less the scene offset, their velocity plus
        the ground's apparent motion."""
        xc, Pc = np.empty((len(slots), 4)), np.empty((len(slots), 4, 4))
        self._table.combine(slots, xc, Pc)
        xc[:, 0] -= self._ground[0]
        xc[:, 1] -= self._ground[1]
        xc[:, 2] += self._scene_motion[0]
        xc[:, 3] += self._scene_motion[1]
        return xc, Pc

    def _add_scores(self, slots, scores) -> None:
        known = np.isfinite(scores)
        if known.any():
            self._cls_sum[slots[known]] += np.clip(scores[known], 0.0, 1.0)
            self._cls_n[slots[known]] += 1

    def _manage(self, slots, result: FrameResult) -> None:
        """Confirm, and delete: tentative tracks that cannot reach M of N, confirmed ones lost or gone."""
        if not len(slots):
            return
        c = self.config
        hits_in_window = _POPCOUNT[self._window[slots] & self._window_mask]
        frames_in_window = np.minimum(self._age[slots], c.confirm_n)
        confirmed = self._confirmed[slots]
        newly = ~confirmed & (hits_in_window >= c.confirm_m)
        if newly.any():
            self._confirmed[slots[newly]] = True
            self.counters.tracks_confirmed += int(np.count_nonzero(newly))
        hopeless = ~confirmed & ~newly & (frames_in_window - hits_in_window > c.confirm_n - c.confirm_m)
        xc, Pc = self._combined(slots)
        sigma2 = np.maximum(Pc[:, 0, 0], Pc[:, 1, 1])
        outside = ((xc[:, 0] < -0.5) | (xc[:, 0] > self.width - 0.5) | (xc[:, 1] < -0.5)
                   | (xc[:, 1] > self.height - 0.5))
        lost = (confirmed & ((self._misses[slots] >= c.delete_misses) | (sigma2 > c.max_position_sigma ** 2)))
        gone = hopeless | lost | outside
        if not gone.any():
            return
        ended_confirmed = slots[gone & (confirmed | newly)]
        if len(ended_confirmed):
            reports = self._reports(ended_confirmed, self._last_index)
            out = set(slots[outside].tolist())
            for slot, report in zip(ended_confirmed.tolist(), reports):
                end = TrackEnd.LEFT_FIELD if slot in out else TrackEnd.LOST
                result.ended.append(_with_end(report, end))
        for track_id in self._id[slots[gone]].tolist():
            self._stamps.pop(track_id, None)
        self._active[slots[gone]] = False
        self.counters.tracks_deleted += int(np.count_nonzero(gone))

    def _births(self, dets, sensor_z, z, rx, ry, flux, frame_index: int, stamp, scores) -> None:
        """Tentative tracks from detections `dets` off the border (sensor_z: their sensor pixels; z: the
        ground's, which the tracks keep)."""
        b = self.config.border_px
        inside = ((sensor_z[dets, 0] >= b) & (sensor_z[dets, 0] <= self.width - 1 - b)
                  & (sensor_z[dets, 1] >= b) & (sensor_z[dets, 1] <= self.height - 1 - b))
        dets = dets[inside]
        if not len(dets):
            return
        free = np.flatnonzero(~self._active)
        if len(free) < len(dets):
            self.counters.births_refused += len(dets) - len(free)
            dets = dets[:len(free)]     # the detector lists the most significant first
        slots = free[:len(dets)]
        k = len(slots)
        self._table.birth(slots, dets, z, rx, ry, flux, frame_index)
        ids = np.arange(self._next_id, self._next_id + k)
        self._next_id += k
        self._id[slots] = ids
        self._confirmed[slots] = self.config.confirm_m <= 1
        self._first[slots] = frame_index
        self._birth[slots] = z[dets]
        self._kind[slots] = TrackKind.UNCLASSIFIED
        self._kind_evidence[slots] = 0
        self._cls_sum[slots] = 0.0
        self._cls_n[slots] = 0
        self._strong[slots] = 1
        if scores is not None:
            self._add_scores(slots, scores[dets])
        self._active[slots] = True
        self._stamps.update(dict.fromkeys(ids.tolist(), stamp))
        self.counters.tracks_born += k

    # --- kinds ---------------------------------------------------------------------
    def _reports(self, slots: np.ndarray, frame_index: int) -> list[TrackReport]:
        c = self.config
        k = c.evidence_sigmas
        xc, Pc = self._combined(slots)
        # Speed evidence from the detections themselves: the filter's velocity covariance carries the
        # manoeuvre model's process noise, which would hide a stationary source for ever.
        fits = np.empty((len(slots), 8))
        self._table.fits(slots, fits)
        # A mover moves both over the ground and across the sensor: a fire or a cloud rim is still on the
        # ground, a hot pixel on the sensor. Where the platform drifts the two differ; the slower one
        # is the speed that counts (the fit's sigma serves both). The history is on the ground.
        over_ground = np.hypot(fits[:, 0], fits[:, 1])
        on_sensor = np.hypot(fits[:, 0] + self._scene_motion[0], fits[:, 1] + self._scene_motion[1])
        speed = np.minimum(over_ground, on_sensor).tolist()
        # Per track in plain Python floats: a frame has a few confirmed tracks, and numpy's cost per call
        # on arrays that short was most of this function's time. NaN (too few detections) passes no test.
        manoeuvre = self._mu[slots, 1].tolist() if self.models > 1 else [0.0] * len(slots)
        density = [self._clutter_density(x + self._ground[0], y + self._ground[1], frame_index, (bx, by, bt))
                   for (x, y), bx, by, bt in zip(xc[:, :2].tolist(), self._birth[slots, 0].tolist(),
                                                 self._birth[slots, 1].tolist(), self._first[slots].tolist())]
        columns = zip(slots.tolist(), fits.tolist(), speed, manoeuvre, density, self._kind[slots].tolist(),
                      self._kind_evidence[slots].tolist(), self._id[slots].tolist(), self._first[slots].tolist(),
                      self._hits[slots].tolist(), self._flux[slots].tolist(), self._score[slots].tolist(),
                      self._cls_sum[slots].tolist(), self._cls_n[slots].tolist(), self._strong[slots].tolist())
        reports = []
        for i, (slot, fit, speed, manoeuvre, clutter, kind, kind_evidence, track_id, first, hits, flux, score,
                cls_sum, cls_n, strong) in enumerate(columns):
            vx, vy, speed_sigma, trend, trend_sigma, ax, ay, accel_sigma = fit
            if speed > 1e-9:
                ux, uy = vx / speed, vy / speed
            else:
                ux, uy = 1.0, 0.0
            along = ax * ux + ay * uy
            across = -ax * uy + ay * ux
            known = math.isfinite(trend)
            e = 0
            if speed - k * speed_sigma > c.slow_speed:
                e |= _MOVING
            if speed + k * speed_sigma < c.slow_speed:
                e |= _SLOW
            if speed - k * speed_sigma > c.glide_min_speed:
                e |= _FAST
            if known and trend - k * trend_sigma > c.boost_min_trend:
                e |= _BRIGHTENING
            if known and along - k * accel_sigma > c.boost_min_accel:
                e |= _ACCELERATING
            if known and abs(across) - k * accel_sigma > c.glide_min_turn:
                e |= _MANOEUVRING
            if known and abs(trend) - k * trend_sigma <= c.steady_max_trend:
                e |= _STEADY
            if kind not in (TrackKind.BOOST, TrackKind.GLIDE):      # boost and glide stand once shown
                new = kind
                if e & _SLOW:
                    new = TrackKind.SLOW
                elif e & _MOVING and e & (_BRIGHTENING | _ACCELERATING):
                    new = TrackKind.BOOST
                elif e & _FAST and e & _MANOEUVRING and e & _STEADY:
                    new = TrackKind.GLIDE
                elif e & _MOVING:
                    new = TrackKind.UNCLASSIFIED
                if new != kind:
                    self._kind[slot], self._kind_evidence[slot] = new, e
                    kind, kind_evidence = new, e
            needed = alert_hits(c, clutter)
            alertable = strong >= needed and (kind in (TrackKind.BOOST, TrackKind.GLIDE) or (
                kind == TrackKind.UNCLASSIFIED and bool(e & _MOVING)))
            classifier = cls_sum / cls_n if cls_n > 0 else math.nan
            if cls_n > 0:
                score += c.classifier_weight * (2 * classifier - 1)
            reports.append(TrackReport(
                track_id=track_id, frame_index=frame_index, first_index=first,
                first_stamp=self._stamps.get(track_id), hits=hits, state=xc[i].copy(),
                covariance=Pc[i].copy(), kind=_KINDS[kind], evidence=_EVIDENCE[e],
                kind_evidence=_EVIDENCE[kind_evidence], flux=flux,
                trend=_finite(trend), trend_sigma=_finite(trend_sigma), speed=_finite(speed),
                speed_sigma=_finite(speed_sigma), accel_along=_finite(along), accel_across=_finite(across),
                accel_sigma=_finite(accel_sigma), manoeuvre_probability=manoeuvre,
                score=score, classifier_score=_finite(classifier), alertable=alertable,
                clutter_density=clutter, alert_hits=needed))
        return reports

    def _clutter_density(self, x: float, y: float, frame_index: int, own) -> float:
        if self.clutter is None:
            return self.config.clutter_density
        return self.clutter.density(x, y, frame_index, own)

    def classifier_mean(self, slots) -> np.ndarray:
        """Mean filter score of each track's scored detections (NaN for a track with none)."""
        n = self._cls_n[slots]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, self._cls_sum[slots] / np.maximum(n, 1), np.nan)

    @property
    def track_count(self) -> int:
        return int(self._active.sum())


def alert_hits(config: TrackerConfig, density: float) -> int:
    """Detections (not faint) a track needs before it is alerted where clutter comes at `density` per px
    per frame: alert_min_hits where it is clutter_density or less, and more where it is more, so that a
    track made of clutter is as unlikely as it is at clutter_density. With A the gate's area for a
    detection of sigma jitter_px, n detections of clutter fall in line by chance about as (density A)^n:
    n = alert_min_hits ln(clutter_density A) / ln(density A), rounded, at most history_frames."""
    area = math.pi * (config.gate_sigma * max(config.jitter_px, MIN_MEASUREMENT_SIGMA)) ** 2
    base = config.clutter_density * area
    here = min(max(density, config.clutter_density) * area, CLUTTER_MOST_IN_GATE)
    if not (base < here and base < CLUTTER_MOST_IN_GATE):
        return config.alert_min_hits
    return max(config.alert_min_hits,
               min(round(config.alert_min_hits * math.log(base) / math.log(here)), config.history_frames))


def _finite(value) -> float:
    """0 for a statistic not yet known (too few detections): the evidence flags say it did not count."""
    value = float(value)
    return value if math.isfinite(value) else 0.0


def _with_end(report: TrackReport, end: TrackEnd) -> TrackReport:
    return replace(report, end=end)
