"""From tracks to alert products: when an alert opens, is updated, and closes.

An alert opens the frame a confirmed track is first alertable (moving, or
boost- or glide-like; never slow). It is sent again when its kind changes and
every `alert_update_frames` frames, so the ground's picture never ages by
more than that while the link keeps up (a 148-octet alert per track a second
is about 1 % of the 115200-baud bench link). An opening or a periodic update
waits for a frame in which the track has a detection: a coasting track's
state is a prediction, and a target that has just left the view would be
reported where nothing is. It closes, once, with the track's last state,
when the track ends (the close says it was lost) or turns out to be slow.

From its opening, the track's chip sequence follows: a lossless chip at the
track's position for each of `alert_chip_frames` frames while the track
lasts, so the ground sees what the payload saw (the executive makes them).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from kestrel.products import AlertUpdate, TrackEnd, TrackKind

from .geolocation import GeolocationError
from .tracking import TrackReport, Tracker, TrackerConfig

log = logging.getLogger(__name__)

_UPPER = np.triu_indices(4)


@dataclass(frozen=True)
class TrackChip:
    """A chip the frame owes an alert's track: its id, the chip's place in the sequence, where it is."""

    track_id: int
    track_frame: int
    x: float
    y: float


@dataclass
class _Open:
    updates: int
    last_frame: int
    kind: TrackKind


class AlertPublisher:
    """`frame(...)` once a frame: the alert updates to send, in order. `locate(x, y, unix_time)`: (lat, lon)
    or None, when geolocation is configured."""

    def __init__(self, config: TrackerConfig, shape: tuple[int, int],
                 locate: Callable[[float, float, float], tuple[float, float] | None] | None = None):
        self.config = config
        self.tracker = Tracker(config, shape)
        self._locate = locate
        self._open: dict[int, _Open] = {}
        self._chip_sequences: dict[int, int] = {}    # track id -> chips of its sequence made so far
        self.chips_due: list[TrackChip] = []         # the last frame's
        self.confirmed: list[TrackReport] = []       # the last frame's confirmed tracks, alertable or not
        self.alerts_opened = 0
        self.alerts_closed = 0
        self.geolocation_errors = 0

    def frame(self, frame_index: int, frame_time: bytes, unix_time: float | None,
              detections: np.ndarray, scores: np.ndarray | None = None,
              scene_offset: tuple[float, float] | None = None,
              faint: np.ndarray | None = None, births: bool = True) -> list[AlertUpdate]:
        """`scores`: the false-alarm filter's score of each detection, or None; `scene_offset`: where the
        sensor sits on the ground, px, or None; `faint`: the detector's faint detections, or None;
        `births`: whether the detections may start tracks (all four as Tracker.update)."""
        self.chips_due = []
        result = self.tracker.update(frame_index, detections, stamp=frame_time, scores=scores,
                                     scene_offset=scene_offset, faint=faint, births=births)
        self.confirmed = result.confirmed
        out = []
        for report in result.confirmed:
            state = self._open.get(report.track_id)
            seen = report.track_id in result.associations or report.track_id in result.faint_associations
            if state is None:
                if report.alertable and seen:
                    self._open[report.track_id] = _Open(0, frame_index, report.kind)
                    self.alerts_opened += 1
                    out.append(self._alert(report, 0, frame_time, unix_time))
                    if self.config.alert_chip_frames:
                        self._chip_sequences[report.track_id] = 0
                        self._chip_due(report)
                continue
            if report.track_id in self._chip_sequences:
                self._chip_due(report)
            if report.kind == TrackKind.SLOW:
                out.append(self._close(report, TrackEnd.SLOW, frame_time, unix_time))
            elif (report.kind != state.kind
                  or (seen and frame_index - state.last_frame >= self.config.alert_update_frames)):
                state.updates += 1
                state.last_frame = frame_index
                state.kind = report.kind
                out.append(self._alert(report, state.updates, frame_time, unix_time))
        for report in result.ended:
            self._chip_sequences.pop(report.track_id, None)
            if report.track_id in self._open:
                out.append(self._close(report, report.end, frame_time, unix_time))
        return out

    def _chip_due(self, report: TrackReport) -> None:
        made = self._chip_sequences[report.track_id]
        self.chips_due.append(TrackChip(report.track_id & 0xFFFFFFFF, made, float(report.state[0]),
                                        float(report.state[1])))
        if made + 1 >= self.config.alert_chip_frames:
            del self._chip_sequences[report.track_id]
        else:
            self._chip_sequences[report.track_id] = made + 1

    def _close(self, report: TrackReport, end: TrackEnd, frame_time: bytes, unix_time) -> AlertUpdate:
        state = self._open.pop(report.track_id)
        self._chip_sequences.pop(report.track_id, None)
        self.alerts_closed += 1
        return self._alert(report, state.updates + 1, frame_time, unix_time, end)

    def _alert(self, report: TrackReport, update: int, frame_time: bytes, unix_time,
               end: TrackEnd = TrackEnd.OPEN) -> AlertUpdate:
        x, y, vx, vy = (float(v) for v in report.state)
        lat = lon = None
        if self._locate is not None and unix_time is not None:
            try:
                where = self._locate(x, y, unix_time)
            except GeolocationError as exc:
                # An orbit sgp4 cannot propagate: the alert goes without a place; counted in housekeeping.
                self.geolocation_errors += 1
                log.warning("geolocation: %s", exc)
                where = None
            if where is not None:
                lat, lon = where
        first_time = report.first_stamp if isinstance(report.first_stamp, bytes) else frame_time
        return AlertUpdate(
            track_id=report.track_id & 0xFFFFFFFF, update=min(update, 0xFFFF), kind=report.kind,
            evidence=report.kind_evidence or report.evidence, end=end,
            frame_index=report.frame_index, frame_time=frame_time, first_index=report.first_index,
            first_time=first_time, hits=min(report.hits, 0xFFFF), x=x, y=y, vx=vx, vy=vy,
            covariance=tuple(float(v) for v in report.covariance[_UPPER]), flux=report.flux,
            trend=report.trend, trend_sigma=report.trend_sigma, speed=report.speed, speed_sigma=report.speed_sigma,
            accel_along=report.accel_along, accel_across=report.accel_across, accel_sigma=report.accel_sigma,
            manoeuvre_probability=report.manoeuvre_probability, track_score=report.score,
            classifier_score=report.classifier_score, lat=lat, lon=lon)
