"""Where on Earth a pixel looks: sgp4 orbit, configured pointing, WGS-84 ellipsoid.

    pixel -> camera ray (pinhole: focal length and principal point, in pixels)
    -> orbital frame (the configured quaternion)
    -> TEME (the orbital frame built from sgp4's position and velocity)
    -> Earth-fixed (rotation by Greenwich mean sidereal time)
    -> the ray's first intersection with the WGS-84 ellipsoid -> geodetic lat, lon.

Frames. Camera: +z along the boresight, +x along increasing columns, +y along
increasing rows. Orbital (local vertical, local horizontal): +z toward the
Earth's centre, +y against the orbit normal (r x v), +x = y x z, close to the
velocity. The identity quaternion therefore looks straight down, columns along
the track. The quaternion (w, x, y, z) rotates camera vectors into the orbital frame.

Approximations, each small against a pixel of an early-warning imager: UT1 is
taken as UTC (at most 0.9 s of Earth rotation, 0.4 km at the equator), and
polar motion is ignored (about 10 m).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np

from kestrel.settings import ConfigurationError, Settings, setting

WGS84_A_KM: Final = 6378.137
WGS84_F: Final = 1 / 298.257223563
WGS84_B_KM: Final = WGS84_A_KM * (1 - WGS84_F)
WGS84_E2: Final = WGS84_F * (2 - WGS84_F)
UNIX_EPOCH_JD: Final = 2440587.5


class GeolocationError(ValueError):
    """The orbit cannot be propagated to the time asked (sgp4's error code and message)."""


@dataclass(frozen=True)
class GeolocationConfig(Settings):
    tle_line1: str = setting("", "first line of the spacecraft's two-line element set; empty (with tle_line2): "
                             "no geolocation, alerts carry no latitude and longitude")
    tle_line2: str = setting("", "second line of the two-line element set")
    quaternion: tuple[float, float, float, float] = setting(
        (1.0, 0.0, 0.0, 0.0), "pointing: rotation (w, x, y, z) of camera vectors into the orbital frame "
        "(z to the Earth's centre, y against the orbit normal); the identity looks straight down",
        low=-1, high=1)
    focal_length_px: float = setting(20000.0, "focal length in pixels (the focal length over the pixel pitch)",
                                     above=0, high=1e9)
    principal_offset_px: tuple[float, float] = setting(
        (0.0, 0.0), "where the boresight meets the focal plane, (x, y) pixels from the frame's centre",
        low=-1e6, high=1e6)

    @property
    def configured(self) -> bool:
        return bool(self.tle_line1 or self.tle_line2)

    def check(self) -> None:
        if len(self.quaternion) != 4:
            raise ConfigurationError(f"quaternion must have 4 components (w, x, y, z), got {len(self.quaternion)}")
        norm = math.sqrt(sum(q * q for q in self.quaternion))
        if abs(norm - 1) > 1e-6:
            raise ConfigurationError(f"quaternion must be a unit quaternion, its norm is {norm:.9f}")
        if len(self.principal_offset_px) != 2:
            raise ConfigurationError("principal_offset_px must be (x, y)")
        if bool(self.tle_line1) != bool(self.tle_line2):
            raise ConfigurationError("tle_line1 and tle_line2 come together, or neither")
        if self.configured:
            satellite_from_tle(self.tle_line1, self.tle_line2)


def satellite_from_tle(line1: str, line2: str):
    """An sgp4 Satrec; ConfigurationError naming what is wrong with the element set."""
    from sgp4.api import Satrec

    for number, line in ((1, line1), (2, line2)):
        if len(line.rstrip()) != 69 or not line.startswith(str(number)):
            raise ConfigurationError(f"tle_line{number} must be a 69-character line starting with '{number}', "
                                     f"got {len(line.rstrip())} characters: {line[:20]!r}...")
        digits = sum(int(ch) if ch.isdigit() else ch == "-" for ch in line[:68])
        if str(digits % 10) != line[68]:
            raise ConfigurationError(f"tle_line{number}: checksum {line[68]!r}, the line sums to {digits % 10}")
    try:
        return Satrec.twoline2rv(line1, line2)
    except (ValueError, IndexError) as exc:
        raise ConfigurationError(f"two-line element set does not parse: {exc}") from None


def quaternion_matrix(q) -> np.ndarray:
    """Rotation matrix of a unit quaternion (w, x, y, z)."""
    w, x, y, z = q
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])


def orbital_frame(r: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Columns: the orbital frame's x, y, z axes in the frame r and v are given in."""
    z = -r / np.linalg.norm(r)
    normal = np.cross(r, v)
    y = -normal / np.linalg.norm(normal)
    x = np.cross(y, z)
    return np.stack([x, y, z], axis=1)


def earth_rotation(gmst: float) -> np.ndarray:
    """TEME (true equator, mean equinox) to Earth-fixed, polar motion ignored."""
    c, s = math.cos(gmst), math.sin(gmst)
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def intersect_ellipsoid(origin: np.ndarray, direction: np.ndarray) -> np.ndarray | None:
    """First point (km, Earth-fixed) where the ray meets the WGS-84 ellipsoid; None if it misses."""
    scale = np.array([1 / WGS84_A_KM, 1 / WGS84_A_KM, 1 / WGS84_B_KM])
    p, d = origin * scale, direction * scale
    a, b, c = d @ d, p @ d, p @ p - 1.0
    disc = b * b - a * c
    if disc < 0 or c < 0:          # misses, or the origin is inside the Earth
        return None
    t = (-b - math.sqrt(disc)) / a
    if t < 0:                      # the Earth is behind the camera
        return None
    return origin + t * direction


def surface_geodetic(point: np.ndarray) -> tuple[float, float]:
    """Geodetic (lat, lon) in degrees of a point on the ellipsoid's surface (height 0, exact there)."""
    x, y, z = point
    lon = math.degrees(math.atan2(y, x))
    lat = math.degrees(math.atan2(z, (1 - WGS84_E2) * math.hypot(x, y)))
    return lat, lon


class Geolocator:
    """`locate(x, y, unix_time)`: (lat, lon) in degrees of the ground a pixel sees, None off the Earth."""

    def __init__(self, config: GeolocationConfig, shape: tuple[int, int]):
        if not config.configured:
            raise ConfigurationError("geolocation needs tle_line1 and tle_line2")
        self.satellite = satellite_from_tle(config.tle_line1, config.tle_line2)
        self._camera_to_orbital = quaternion_matrix(config.quaternion)
        height, width = shape
        self._cx = (width - 1) / 2 + config.principal_offset_px[0]
        self._cy = (height - 1) / 2 + config.principal_offset_px[1]
        self._f = config.focal_length_px

    def state(self, unix_time: float) -> tuple[np.ndarray, np.ndarray]:
        """sgp4 position (km) and velocity (km/s), TEME."""
        whole = math.floor(unix_time / 86400)
        code, r, v = self.satellite.sgp4(UNIX_EPOCH_JD + whole, (unix_time - whole * 86400) / 86400)
        if code != 0:
            from sgp4.api import SGP4_ERRORS
            raise GeolocationError(f"sgp4 error {code} at {unix_time:.3f}: {SGP4_ERRORS.get(code, 'unknown')}")
        return np.array(r), np.array(v)

    def camera_ray(self, x: float, y: float) -> np.ndarray:
        ray = np.array([x - self._cx, y - self._cy, self._f])
        return ray / np.linalg.norm(ray)

    def locate_from_state(self, x: float, y: float, r_teme, v_teme, gmst: float) -> tuple[float, float] | None:
        to_earth = earth_rotation(gmst)
        direction = to_earth @ orbital_frame(np.asarray(r_teme), np.asarray(v_teme)) @ (
            self._camera_to_orbital @ self.camera_ray(x, y))
        point = intersect_ellipsoid(to_earth @ np.asarray(r_teme), direction)
        return None if point is None else surface_geodetic(point)

    def locate(self, x: float, y: float, unix_time: float) -> tuple[float, float] | None:
        from sgp4.propagation import gstime

        r, v = self.state(unix_time)
        return self.locate_from_state(x, y, r, v, gstime(UNIX_EPOCH_JD + unix_time / 86400))
