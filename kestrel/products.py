"""What the payload sends: the products' source-data formats and where each goes.

| product        | APID | PUS service, subtype | virtual channel (default) |
|----------------|------|----------------------|---------------------------|
| housekeeping   | 100  | 3, 25 (HK report)    | link.vc_housekeeping (1)  |
| event          | 101  | 5, 1..4 (by severity)| link.vc_events (0)        |
| alert opened   | 103  | 132, 1 (update 0)    | link.vc_events (0)        |
| alert          | 102  | 132, 1 update / 2 closed | link.vc_events (0)    |
| detections     | 110  | 130, 1 (mission)     | link.vc_detections (1)    |
| image chip     | 120  | 131, 1 (mission)     | link.vc_images (2)        |
| quick-look     | 121  | 131, 2 (mission)     | link.vc_images (2)        |
| track chip     | 120  | 131, 3 (mission)     | link.vc_images (2)        |

Services 128-255 are mission-specific in ECSS-E-ST-70-41C. Every format is
declared once here; flight builds with it, ground parses with it.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Final

import construct as cs
import numpy as np

from .link.errors import Rejection


APID_HOUSEKEEPING: Final = 100
APID_EVENTS: Final = 101
APID_ALERTS: Final = 102              # an open alert's later states and its close
# An alert's opening has an APID of its own: it overtakes the updates waiting in the store, and on one
# APID that would put sequence counts out of order (which the ground counts as gaps).
APID_ALERT_OPENINGS: Final = 103
ALERT_APIDS: Final = (APID_ALERT_OPENINGS, APID_ALERTS)
APID_DETECTIONS: Final = 110
APID_IMAGES: Final = 120              # image chips
# Quick-looks are another store class than chips, so the link may send one before a chip put earlier:
# on one APID that reorders the sequence counts, which the ground counts as gaps.
APID_QUICKLOOK: Final = 121
IMAGE_APIDS: Final = (APID_IMAGES, APID_QUICKLOOK)

SERVICE_HOUSEKEEPING, SUBTYPE_HK_REPORT = 3, 25
SERVICE_EVENTS = 5
SERVICE_DETECTIONS, SUBTYPE_DETECTION_REPORT = 130, 1
SERVICE_IMAGES, SUBTYPE_CHIP, SUBTYPE_QUICKLOOK = 131, 1, 2
SUBTYPE_TRACK_CHIP = 3     # one chip of an alert's chip sequence
SERVICE_ALERTS, SUBTYPE_ALERT_UPDATE, SUBTYPE_ALERT_CLOSED = 132, 1, 2

# Version of the housekeeping layout below: 2 added the link-outage and time-error counters.
HK_STRUCTURE_FLIGHT: Final = 2
# The uplink's counters: CLTUs, frames, COP-1, SDLS, and every rejection by its reason.
HK_STRUCTURE_UPLINK: Final = 3

# The PUS-C TM secondary header's 4-bit spacecraft time reference status
# (ECSS-E-ST-70-41C 7.4.3.1); the values are this mission's.
TIME_STATUS_VALID: Final = 0
TIME_STATUS_OUT_OF_RANGE: Final = 1   # the clock was outside the CUC field; the time is the field's limit

# Event severities are the ST[05] subtypes.
EVENT_INFO, EVENT_LOW, EVENT_MEDIUM, EVENT_HIGH = 1, 2, 3, 4

# One record per detection candidate; everything a tracker needs. The detector
# kernels' measurement columns are checked against this at import (flight.detection).
#   x, y      sub-pixel centroid, pixel coordinates (column, row), pixel centres at integers
#   sigma_x/y 1-sigma centroid uncertainty (px), Cramer-Rao bound of a Gaussian PSF
#   flux      background-subtracted sum in the aperture (counts)
#   snr       detection significance: peak of the noise-normalised detection statistic
#   peak      peak value above background (counts)
#   npix      pixels in the connected component above threshold
#   a, b, theta  second-moment shape: semi-axes (px) and angle of a from +x (rad)
DETECTION_DTYPE: Final = np.dtype([
    ("x", "f4"), ("y", "f4"), ("sigma_x", "f4"), ("sigma_y", "f4"), ("flux", "f4"),
    ("snr", "f4"), ("peak", "f4"), ("npix", "u2"), ("a", "f4"), ("b", "f4"), ("theta", "f4"),
])
# Its fields by position: the column of each in a kernel's measurement table.
DETECTION_COLUMN: Final = {name: i for i, name in enumerate(DETECTION_DTYPE.names)}

# Detection records travel big-endian, packed, in the order of DETECTION_DTYPE.
DETECTION_WIRE_DTYPE: Final = DETECTION_DTYPE.newbyteorder(">")


def detection_report_format(time_length: int) -> cs.Construct:
    return cs.Struct(
        "frame_index" / cs.Int32ub,
        "frame_time" / cs.Bytes(time_length),
        "count" / cs.Int16ub,
        "records" / cs.Bytes(cs.this.count * DETECTION_WIRE_DTYPE.itemsize),
        cs.Terminated,
    )


@dataclass(frozen=True)
class DetectionReport:
    frame_index: int
    frame_time: bytes
    detections: np.ndarray  # DETECTION_DTYPE

    def pack(self) -> bytes:
        records = np.ascontiguousarray(self.detections, dtype=DETECTION_WIRE_DTYPE).tobytes()
        return detection_report_format(len(self.frame_time)).build(dict(
            frame_index=self.frame_index, frame_time=self.frame_time,
            count=len(self.detections), records=records))

    @classmethod
    def unpack(cls, data: bytes, time_length: int) -> "DetectionReport":
        parsed = detection_report_format(time_length).parse(data)
        records = np.frombuffer(parsed.records, DETECTION_WIRE_DTYPE).astype(DETECTION_DTYPE)
        return cls(parsed.frame_index, parsed.frame_time, records)


HOUSEKEEPING_REPORT = cs.Struct(
    "structure_id" / cs.Const(HK_STRUCTURE_FLIGHT, cs.Int16ub),
    "uptime_s" / cs.Int32ub,
    "frames_processed" / cs.Int32ub,
    "frames_failed" / cs.Int32ub,
    "loop_time_last_us" / cs.Int32ub,
    "loop_time_max_us" / cs.Int32ub,
    "loop_overruns" / cs.Int32ub,
    "detections_total" / cs.Int32ub,
    "images_sent" / cs.Int32ub,
    "packets_sent" / cs.Int32ub,
    "packets_dropped" / cs.Int32ub,
    "bytes_sent" / cs.Int32ub,
    "frames_sent" / cs.Int32ub,
    "errors" / cs.Int32ub,
    "queue_octets" / cs.Int32ub,
    "link_outages" / cs.Int32ub,        # radio port losses (each logged and reported once)
    "link_reconnects" / cs.Int32ub,     # outages ended: the port took data again
    "link_down_s" / cs.Int32ub,         # seconds the radio port has been down in all
    "cadus_interrupted" / cs.Int32ub,   # CADUs cut by an outage (each sent again after the reconnect)
    "time_errors" / cs.Int32ub,         # packet times out of the CUC field's range, sent as its limit
    "store_errors" / cs.Int32ub,        # products the store could not keep (disk full, read-only)
    "store_unsent_octets" / cs.Int32ub,  # octets stored and not yet offered to the link
    "store_held_octets" / cs.Int32ub,   # octets stored and not yet acknowledged by the ground
    "store_dropped" / cs.Int32ub,       # products dropped by their class's rule (quota or capacity)
    "mode" / cs.Int32ub,                # flight.modes.Mode: 0 BOOT, 1 SAFE, 2 STANDBY, 3 OBSERVE
    "commands_accepted" / cs.Int32ub,
    "commands_rejected" / cs.Int32ub,   # refused at acceptance (format, APID, mode...), each reported
    "commands_failed" / cs.Int32ub,     # accepted, then failed in execution, each reported
    "uplink_octets" / cs.Int32ub,       # octets read from the radio's receive direction
    "clock_jumps" / cs.Int32ub,         # steps of the system clock beyond slewing
    "ticks_missed" / cs.Int32ub,        # loop ticks skipped because the work before them ran late
    "cycle_slips" / cs.Int32ub,         # rate group runs lost to a late loop, all groups
    "tick_jitter_p99_us" / cs.Int32ub,  # 99th percentile of how late ticks start (recent ones)
    "time_offset_s" / cs.Float64b,      # the ground's time correlation: offset at its epoch
    "time_drift_ppm" / cs.Float64b,     # and its drift
    cs.Terminated,
)
HOUSEKEEPING_FIELDS: Final = tuple(
    sc.name for sc in HOUSEKEEPING_REPORT.subcons if sc.name and sc.name != "structure_id")

# One counter per Rejection, in the enum's order: the reasons are declared once (kestrel.link.errors).
UPLINK_HOUSEKEEPING = cs.Struct(
    "structure_id" / cs.Const(HK_STRUCTURE_UPLINK, cs.Int16ub),
    "authenticated" / cs.Int8ub,         # 1 when SDLS protects a virtual channel, 0: the uplink is clear
    "sas_operational" / cs.Int8ub,       # security associations that can verify frames
    "sas_configured" / cs.Int8ub,
    "farm_state" / cs.Int8ub,            # FARM-1 of the command VC: 1 open, 2 wait, 3 lockout
    "farm_vr" / cs.Int8ub,               # its V(R)
    "farm_b_counter" / cs.Int8ub,
    "cltu_bits_corrected" / cs.Int32ub,
    "frames_accepted" / cs.Int32ub,
    "frames_rejected" / cs.Int32ub,
    "commands_queued" / cs.Int32ub,
    *[(reason.value / cs.Int32ub) for reason in Rejection],
    cs.Terminated,
)
UPLINK_SMALL_FIELDS: Final = frozenset(
    sc.name for sc in UPLINK_HOUSEKEEPING.subcons if sc.name and sc.subcon is cs.Int8ub if hasattr(sc, "subcon"))
UPLINK_HOUSEKEEPING_FIELDS: Final = tuple(
    sc.name for sc in UPLINK_HOUSEKEEPING.subcons if sc.name and sc.name != "structure_id")

EVENT_REPORT = cs.Struct(
    "event_id" / cs.Int16ub,
    "text" / cs.PascalString(cs.Int8ub, "utf8"),
    cs.Terminated,
)

# Event ids (ST[05] report ids of this payload).
EVENT_STARTED: Final = 1
EVENT_STOPPING: Final = 2
EVENT_SENSOR_ERROR: Final = 10
EVENT_DETECTION_ERROR: Final = 11
EVENT_LINK_ERROR: Final = 12       # the radio port was lost (an outage begins)
EVENT_QUEUE_OVERFLOW: Final = 13   # products dropped by their class's rule (the text says which and how many)
EVENT_IMAGE_ERROR: Final = 14
EVENT_LINK_RESTORED: Final = 15    # the radio port is back; the text says how long it was down
EVENT_TIME_ERROR: Final = 16       # the clock left (or came back into) the CUC field's range
EVENT_STORE_ERROR: Final = 17      # the store could not keep a product (disk full, read-only)
EVENT_MODE: Final = 18             # the payload changed mode; the text says from, to, and why
EVENT_CLOCK_JUMP: Final = 19       # the system clock stepped (beyond slewing); the text says by how much
EVENT_PARAMETER: Final = 20        # a parameter changed, or could not be read at start
EVENT_HEALTH: Final = 21           # a component stalled (or recovered); a long stall restarts the program
EVENT_TRACKING_ERROR: Final = 22   # the tracker refused a frame's detections; the text says why
EVENT_UPLINK_SECURITY: Final = 23  # the uplink is unauthenticated, or an SA is not operational, or was rekeyed


# An image product (a chip around a detection, or a quick-look frame) is
# compressed once and cut into segments, one a packet. Each segment says
# which product it belongs to and which piece it is, so the ground can tell
# a whole product from one with a piece missing.
IMAGE_CODEC_CCSDS123 = 1


def image_segment_format(time_length: int, subtype: int = SUBTYPE_CHIP) -> cs.Construct:
    """A track chip (subtype 3) also says whose track it is and where in the track's sequence."""
    track = (("track_id" / cs.Int32ub, "track_frame" / cs.Int16ub)   # alert's track id; 0 at its opening
             if subtype == SUBTYPE_TRACK_CHIP else ())
    return cs.Struct(
        "product_id" / cs.Int32ub,
        *track,
        "frame_index" / cs.Int32ub,
        "frame_time" / cs.Bytes(time_length),
        "x0" / cs.Int16ub,
        "y0" / cs.Int16ub,
        "width" / cs.Int16ub,
        "height" / cs.Int16ub,
        "codec" / cs.Const(IMAGE_CODEC_CCSDS123, cs.Int8ub),
        "max_error" / cs.Int16ub,
        "segment_index" / cs.Int16ub,
        "segment_count" / cs.Int16ub,
        "data" / cs.GreedyBytes,
    )


# --- alerts --------------------------------------------------------------------------
# An alert is a confirmed, moving track: what it is, where it is going and how
# sure the payload is. TM(132,1) opens it and updates it as the track evolves;
# TM(132,2) closes it with the track's last state and why it ended. Positions
# and velocities are pixels and pixels per frame, in the detections' convention.

class TrackKind(enum.IntEnum):
    """What a track looks like; the evidence flags say why."""

    UNCLASSIFIED = 0    # moving, not (yet) boost-like or glide-like
    BOOST = 1           # brightening or accelerating along its path
    GLIDE = 2           # fast, manoeuvring, steady intensity
    SLOW = 3            # slow or stationary (clutter, glint, a hot pixel): flagged, never alerted


class Evidence(enum.IntFlag):
    """Which tests of the track's history passed (each at the configured number of sigmas)."""

    MOVING = 1          # speed significantly above the slow limit
    BRIGHTENING = 2     # log-flux slope significantly above the boost limit
    ACCELERATING = 4    # acceleration along the velocity significantly above the boost limit
    FAST = 8            # speed significantly above the glide limit
    MANOEUVRING = 16    # acceleration across the velocity significantly above the glide limit
    STEADY = 32         # log-flux slope not significantly beyond the steady limit
    SLOW = 64           # speed significantly below the slow limit


class TrackEnd(enum.IntEnum):
    """Why an alert was closed (OPEN while it is not)."""

    OPEN = 0
    LOST = 1            # missed too many frames in a row, or its uncertainty grew past use
    LEFT_FIELD = 2      # predicted outside the frame
    SLOW = 3            # reclassified slow or stationary


ALERT_COVARIANCE_TERMS: Final = 10   # upper triangle of the 4x4 (x, y, vx, vy) covariance, row by row


def alert_format(time_length: int) -> cs.Construct:
    return cs.Struct(
        "track_id" / cs.Int32ub,
        "update" / cs.Int16ub,                # updates of this alert before this one (0: the first)
        "kind" / cs.Int8ub,                   # TrackKind
        "evidence" / cs.Int8ub,               # Evidence flags
        "end" / cs.Int8ub,                    # TrackEnd
        "frame_index" / cs.Int32ub,           # the frame this state is for
        "frame_time" / cs.Bytes(time_length),
        "first_index" / cs.Int32ub,           # the frame of the track's first detection
        "first_time" / cs.Bytes(time_length),
        "hits" / cs.Int16ub,                  # detections the track has taken
        "x" / cs.Float32b, "y" / cs.Float32b,     # px
        "vx" / cs.Float32b, "vy" / cs.Float32b,   # px/frame
        "covariance" / cs.Array(ALERT_COVARIANCE_TERMS, cs.Float32b),
        "flux" / cs.Float32b,                 # latest detection's flux (counts)
        "trend" / cs.Float32b,                # intensity trend: slope of ln(flux) per frame
        "trend_sigma" / cs.Float32b,
        "speed" / cs.Float32b, "speed_sigma" / cs.Float32b,       # px/frame
        "accel_along" / cs.Float32b, "accel_across" / cs.Float32b, "accel_sigma" / cs.Float32b,  # px/frame^2
        "manoeuvre_probability" / cs.Float32b,  # the manoeuvre model's probability (0 with a single model)
        "track_score" / cs.Float32b,          # log-likelihood ratio, target against clutter
        "classifier_score" / cs.Float32b,     # the false-alarm classifier's mean score (0: no classifier)
        "geolocated" / cs.Flag,
        "ground" / cs.If(cs.this.geolocated, cs.Struct("lat" / cs.Float64b, "lon" / cs.Float64b)),  # deg, WGS-84
        cs.Terminated,
    )


@dataclass(frozen=True)
class AlertUpdate:
    track_id: int
    update: int
    kind: TrackKind
    evidence: Evidence
    end: TrackEnd
    frame_index: int
    frame_time: bytes
    first_index: int
    first_time: bytes
    hits: int
    x: float
    y: float
    vx: float
    vy: float
    covariance: tuple        # ALERT_COVARIANCE_TERMS floats, see covariance_matrix()
    flux: float
    trend: float
    trend_sigma: float
    speed: float
    speed_sigma: float
    accel_along: float
    accel_across: float
    accel_sigma: float
    manoeuvre_probability: float
    track_score: float
    classifier_score: float
    lat: float | None = None
    lon: float | None = None

    @property
    def subtype(self) -> int:
        return SUBTYPE_ALERT_UPDATE if self.end == TrackEnd.OPEN else SUBTYPE_ALERT_CLOSED

    def covariance_matrix(self) -> np.ndarray:
        full = np.zeros((4, 4))
        full[np.triu_indices(4)] = self.covariance
        return full + np.triu(full, 1).T

    def pack(self) -> bytes:
        if len(self.frame_time) != len(self.first_time):
            raise ValueError(f"frame_time has {len(self.frame_time)} octets, first_time {len(self.first_time)}")
        if (self.lat is None) != (self.lon is None):
            raise ValueError("lat and lon come together or not at all")
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("lat", "lon")}
        values["covariance"] = list(self.covariance)
        values["geolocated"] = self.lat is not None
        values["ground"] = dict(lat=self.lat, lon=self.lon) if self.lat is not None else None
        return alert_format(len(self.frame_time)).build(values)

    @classmethod
    def unpack(cls, data: bytes, time_length: int, subtype: int = SUBTYPE_ALERT_UPDATE) -> "AlertUpdate":
        parsed = alert_format(time_length).parse(data)
        kind, evidence, end = TrackKind(parsed.kind), Evidence(parsed.evidence), TrackEnd(parsed.end)
        if (subtype == SUBTYPE_ALERT_CLOSED) != (end != TrackEnd.OPEN):
            raise ValueError(f"alert subtype {subtype} with end {end.name}: a closing alert, and only one, "
                             f"says why it ended")
        names = [f.name for f in fields(cls) if f.name not in ("lat", "lon")]
        values = {name: parsed[name] for name in names}
        values.update(kind=kind, evidence=evidence, end=end, covariance=tuple(parsed.covariance))
        ground = parsed.ground
        return cls(**values, lat=ground.lat if ground else None, lon=ground.lon if ground else None)
