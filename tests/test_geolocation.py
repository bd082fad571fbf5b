"""Geolocation: geometry worked by hand, then pymap3d (ray and ellipsoid) and skyfield (the orbit in the
Earth-fixed frame) as independent computations."""
import math

import numpy as np
import pytest

from flight.geolocation import (WGS84_A_KM, GeolocationConfig, Geolocator, earth_rotation, intersect_ellipsoid,
                                orbital_frame, quaternion_matrix, surface_geodetic)
from kestrel.settings import ConfigurationError

# ISS (ZARYA), a published element set (checksums valid).
TLE = ("1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927",
       "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537")
SHAPE = (512, 512)


def locator(quaternion=(1.0, 0, 0, 0), focal=20000.0):
    return Geolocator(GeolocationConfig(tle_line1=TLE[0], tle_line2=TLE[1], quaternion=quaternion,
                                        focal_length_px=focal), SHAPE)


def test_nadir_from_the_equator_is_the_point_below():
    g = locator()
    r = np.array([WGS84_A_KM + 700.0, 0, 0])
    v = np.array([0, 7.5, 0])
    lat, lon = g.locate_from_state(255.5, 255.5, r, v, gmst=0.0)
    assert lat == pytest.approx(0, abs=1e-9) and lon == pytest.approx(0, abs=1e-9)
    # Earth rotated by 30 degrees under the same inertial position: the ground below is at longitude -30.
    assert g.locate_from_state(255.5, 255.5, r, v, gmst=math.radians(30))[1] == pytest.approx(-30, abs=1e-9)


def test_an_off_nadir_ray_in_the_equator_meets_the_ground_at_the_angle_worked_by_hand():
    """In the equatorial plane the ellipsoid is a circle of radius a: law of sines gives the central angle."""
    focal = 1000.0
    g = locator(focal=focal)
    h = 700.0
    r, v = np.array([WGS84_A_KM + h, 0, 0]), np.array([0, 7.5, 0])
    offset = 200.0           # pixels along columns: the orbital frame's x, along the velocity (+y in ECI here)
    theta = math.atan2(offset, focal)
    central = math.asin((WGS84_A_KM + h) / WGS84_A_KM * math.sin(theta)) - theta
    lat, lon = g.locate_from_state(255.5 + offset, 255.5, r, v, gmst=0.0)
    assert lat == pytest.approx(0, abs=1e-9)
    assert lon == pytest.approx(math.degrees(central), abs=1e-9)


def test_a_ray_past_the_limb_misses_and_the_pole_is_at_90():
    g = locator(focal=100.0)
    r, v = np.array([WGS84_A_KM + 700.0, 0, 0]), np.array([0, 7.5, 0])
    assert g.locate_from_state(255.5 + 10000, 255.5, r, v, 0.0) is None
    polar = np.array([0, 0, WGS84_A_KM + 700.0])
    assert surface_geodetic(intersect_ellipsoid(polar, np.array([0, 0, -1.0])))[0] == pytest.approx(90)


def test_ray_and_ellipsoid_agree_with_pymap3d():
    pymap3d = pytest.importorskip("pymap3d")
    from pymap3d import los
    rng = np.random.default_rng(11)
    for _ in range(30):
        lat0, lon0, h0 = rng.uniform(-70, 70), rng.uniform(-180, 180), rng.uniform(400e3, 36000e3)
        az, tilt = rng.uniform(0, 360), rng.uniform(0, 5)
        lat_p, lon_p, _ = los.lookAtSpheroid(lat0, lon0, h0, az, tilt)
        origin = np.array(pymap3d.geodetic2ecef(lat0, lon0, h0)) / 1000
        e, n, u = pymap3d.aer2enu(az, tilt - 90, 1.0)
        direction = np.array(pymap3d.enu2ecef(e, n, u, lat0, lon0, h0)) / 1000 - origin
        lat, lon = surface_geodetic(intersect_ellipsoid(origin, direction / np.linalg.norm(direction)))
        assert lat == pytest.approx(float(lat_p), abs=1e-6) and lon == pytest.approx(float(lon_p), abs=1e-6)


def test_the_orbit_in_the_earth_fixed_frame_agrees_with_skyfield():
    skyfield = pytest.importorskip("skyfield.api")
    from skyfield.framelib import itrs
    from sgp4.propagation import gstime

    g = locator()
    ts = skyfield.load.timescale(builtin=True)
    satellite = skyfield.EarthSatellite(TLE[0], TLE[1], "ISS", ts)
    unix = 1222000000.0           # 2008-09-21, two days after the element set's epoch
    r, _ = g.state(unix)
    ours = earth_rotation(gstime(2440587.5 + unix / 86400)) @ r
    t = ts.utc(2008, 9, 21, 12, 26, 40)
    assert abs(t.tt - (2440587.5 + unix / 86400) - (t.tt - t.ut1)) < 1 / 86400   # the same instant
    theirs = satellite.at(t).frame_xyz(itrs).km
    # UT1 taken as UTC and polar motion ignored here: within 1 km at 7.7 km/s.
    assert np.linalg.norm(ours - theirs) < 1.0


def test_pointing_quaternion_and_frames():
    q = (math.cos(math.pi / 4), 0, 0, math.sin(math.pi / 4))     # 90 degrees about z
    assert quaternion_matrix(q) @ np.array([1.0, 0, 0]) == pytest.approx([0, 1, 0])
    axes = orbital_frame(np.array([7000.0, 0, 0]), np.array([0, 7.5, 0]))
    assert axes[:, 2] == pytest.approx([-1, 0, 0]) and axes[:, 0] == pytest.approx([0, 1, 0])


def test_bad_configuration_is_refused_with_the_reason():
    with pytest.raises(ConfigurationError, match="checksum"):
        GeolocationConfig(tle_line1=TLE[0][:-1] + "0", tle_line2=TLE[1])
    with pytest.raises(ConfigurationError, match="together"):
        GeolocationConfig(tle_line1=TLE[0])
    with pytest.raises(ConfigurationError, match="unit quaternion"):
        GeolocationConfig(quaternion=(1.0, 0.5, 0, 0))
    assert not GeolocationConfig().configured
