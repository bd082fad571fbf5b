"""Passes over a ground station, from a TLE with SGP4: when the link is up, and so when it is cut.

The satellite's TEME position (sgp4) is turned Earth-fixed by the Greenwich mean sidereal time
(IAU 1982; polar motion and the equation of the equinoxes ignored: well under a hundredth of a
degree of elevation), and its elevation seen from the station (WGS-84 geodetic) is compared with
the mask. A scenario's run is usually shorter than an orbit, so `time_scale` seconds of orbit
pass per second of the run.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone

from sgp4.api import Satrec, jday

WGS84_A_KM = 6378.137
WGS84_F = 1 / 298.257223563


@dataclass(frozen=True)
class PassSchedule:
    """A scenario's [passes] table; empty tle_line1: no schedule (the link is always up)."""
    tle_line1: str = ""
    tle_line2: str = ""
    latitude_deg: float = 0.0
    longitude_deg: float = 0.0
    altitude_m: float = 0.0
    mask_deg: float = 10.0
    start_utc: str = ""              # ISO 8601; the run's second 0 is this instant
    time_scale: float = 1.0          # seconds of orbit per second of the run
    step_s: float = 10.0             # seconds of orbit between elevation samples

    def __post_init__(self):
        if not self.tle_line1:
            return
        satellite = Satrec.twoline2rv(self.tle_line1, self.tle_line2)
        if satellite.error:
            raise ValueError(f"tle_line1/tle_line2 is not a usable element set (sgp4 error {satellite.error})")
        if not -90 <= self.latitude_deg <= 90 or not -180 <= self.longitude_deg <= 360:
            raise ValueError(f"latitude_deg/longitude_deg out of range: {self.latitude_deg}, {self.longitude_deg}")
        if not -5 <= self.mask_deg < 90:
            raise ValueError(f"mask_deg must be -5..90, got {self.mask_deg}")
        if not self.time_scale > 0 or not self.step_s > 0:
            raise ValueError("time_scale and step_s must be > 0")
        self.start()

    def start(self) -> datetime:
        try:
            when = datetime.fromisoformat(self.start_utc)
        except ValueError:
            raise ValueError(f"start_utc must be an ISO 8601 time, got {self.start_utc!r}") from None
        return when if when.tzinfo else when.replace(tzinfo=timezone.utc)

    def windows(self, run_s: float) -> list[tuple[float, float]]:
        """(start, end) seconds of the run when the satellite is above the mask."""
        satellite = Satrec.twoline2rv(self.tle_line1, self.tle_line2)
        origin = self.start()
        station = geodetic_to_ecef(self.latitude_deg, self.longitude_deg, self.altitude_m / 1000.0)
        out: list[tuple[float, float]] = []
        steps = max(1, math.ceil(run_s * self.time_scale / self.step_s))
        opened = None
        for i in range(steps + 1):
            orbit_s = min(i * self.step_s, run_s * self.time_scale)
            up = elevation_deg(satellite, station, origin, orbit_s) >= self.mask_deg
            t = orbit_s / self.time_scale
            if up and opened is None:
                opened = t
            elif not up and opened is not None:
                out.append((opened, t))
                opened = None
        if opened is not None:
            out.append((opened, run_s))
        return out

    def outages(self, run_s: float) -> tuple[tuple[float, float], ...]:
        """The complement of the windows over the run: the link is cut while the satellite is below the mask."""
        cuts, at = [], 0.0
        for start, end in self.windows(run_s):
            if start > at:
                cuts.append((at, start))
            at = end
        if at < run_s:
            cuts.append((at, run_s + 3600.0))      # below the mask to the end, drain included
        return tuple(cuts)


def geodetic_to_ecef(lat_deg: float, lon_deg: float, alt_km: float) -> tuple[float, float, float]:
    lat, lon = math.radians(lat_deg), math.radians(lon_deg)
    e2 = WGS84_F * (2 - WGS84_F)
    n = WGS84_A_KM / math.sqrt(1 - e2 * math.sin(lat) ** 2)
    return ((n + alt_km) * math.cos(lat) * math.cos(lon), (n + alt_km) * math.cos(lat) * math.sin(lon),
            (n * (1 - e2) + alt_km) * math.sin(lat))


def gmst_rad(jd_ut1: float, fraction: float) -> float:
    """Greenwich mean sidereal time, IAU 1982 (Vallado, Fundamentals of Astrodynamics, eq. 3-47)."""
    t = ((jd_ut1 - 2451545.0) + fraction) / 36525.0
    seconds = (67310.54841 + (876600.0 * 3600.0 + 8640184.812866) * t + 0.093104 * t * t - 6.2e-6 * t ** 3)
    return math.radians((seconds % 86400.0) / 240.0)


def elevation_deg(satellite: Satrec, station_ecef, origin: datetime, offset_s: float) -> float:
    when = origin.timestamp() + offset_s
    moment = datetime.fromtimestamp(when, timezone.utc)
    jd, fraction = jday(moment.year, moment.month, moment.day, moment.hour, moment.minute,
                        moment.second + moment.microsecond / 1e6)
    error, r, _v = satellite.sgp4(jd, fraction)
    if error:
        return -90.0
    g = gmst_rad(jd, fraction)
    c, s = math.cos(g), math.sin(g)
    x, y, z = c * r[0] + s * r[1], -s * r[0] + c * r[1], r[2]
    dx, dy, dz = x - station_ecef[0], y - station_ecef[1], z - station_ecef[2]
    # The station's up: the geodetic normal.
    lat = math.atan2(station_ecef[2], math.hypot(station_ecef[0], station_ecef[1]) * (1 - WGS84_F) ** 2)
    lon = math.atan2(station_ecef[1], station_ecef[0])
    up = (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))
    distance = math.sqrt(dx * dx + dy * dy + dz * dz)
    return math.degrees(math.asin((dx * up[0] + dy * up[1] + dz * up[2]) / distance))
