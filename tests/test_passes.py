"""Pass schedules from a TLE: elevation and pass times against skyfield (an independent SGP4 and frame chain)."""
from datetime import datetime, timedelta, timezone

import pytest

from hil.passes import PassSchedule, elevation_deg, geodetic_to_ecef
from hil.scenario import ScenarioError, parse_scenario

# ISS (ZARYA), a published element set (checksums valid).
TLE = ("1 25544U 98067A   08264.51782528 -.00002182  00000-0 -11606-4 0  2927",
       "2 25544  51.6416 247.4627 0006703 130.5360 325.0288 15.72125391563537")
STATION = (48.85, 2.35, 35.0)      # Paris
START = datetime(2008, 9, 20, 12, 0, tzinfo=timezone.utc)


def skyfield_scene():
    api = pytest.importorskip("skyfield.api")
    ts = api.load.timescale(builtin=True)
    satellite = api.EarthSatellite(TLE[0], TLE[1], "ISS", ts)
    station = api.wgs84.latlon(STATION[0], STATION[1], elevation_m=STATION[2])
    return api, ts, satellite, station


def test_elevation_agrees_with_skyfield():
    api, ts, satellite, station = skyfield_scene()
    from sgp4.api import Satrec

    ours = Satrec.twoline2rv(*TLE)
    ecef = geodetic_to_ecef(STATION[0], STATION[1], STATION[2] / 1000)
    for minutes in range(0, 24 * 60, 37):
        when = START + timedelta(minutes=minutes)
        theirs = (satellite - station).at(ts.from_datetime(when)).altaz()[0].degrees
        assert elevation_deg(ours, ecef, START, minutes * 60.0) == pytest.approx(theirs, abs=0.05)


def test_windows_match_skyfields_rise_and_set_within_a_step():
    api, ts, satellite, station = skyfield_scene()
    schedule = PassSchedule(*TLE, latitude_deg=STATION[0], longitude_deg=STATION[1], altitude_m=STATION[2],
                            mask_deg=10.0, start_utc=START.isoformat(), time_scale=1.0, step_s=5.0)
    day = 86400.0
    ours = schedule.windows(day)
    times, events = satellite.find_events(station, ts.from_datetime(START), ts.from_datetime(START + timedelta(days=1)),
                                          altitude_degrees=10.0)
    rises = [(t.utc_datetime() - START).total_seconds() for t, e in zip(times, events) if e == 0]
    sets = [(t.utc_datetime() - START).total_seconds() for t, e in zip(times, events) if e == 2]
    assert len(ours) == len(rises) >= 2
    for (start, end), rise, set_ in zip(ours, rises, sets):
        assert abs(start - rise) <= 5.5 and abs(end - set_) <= 5.5
    # The outages are the rest of the day.
    cuts = schedule.outages(day)
    assert cuts[0][0] == 0.0 and all(a[1] == b[0] for a, b in zip(cuts, ours))


def test_a_scenario_with_a_pass_schedule_is_cut_below_the_mask():
    text = f"""
duration_s = 60
[passes]
tle_line1 = "{TLE[0]}"
tle_line2 = "{TLE[1]}"
latitude_deg = {STATION[0]}
longitude_deg = {STATION[1]}
start_utc = "{START.isoformat()}"
time_scale = 1440.0
"""
    scenario = parse_scenario(text, "p.toml")
    cuts = scenario.profile().outages
    windows = scenario.passes.windows(60)
    assert windows and cuts and all(0 <= a < b for a, b in cuts)
    up = sum(b - a for a, b in windows)
    assert 0 < up < 10      # a day in a minute: a few passes of minutes each
    with pytest.raises(ScenarioError, match="start_utc"):
        parse_scenario(text.replace(START.isoformat(), "noon"), "p.toml")
    with pytest.raises(ScenarioError, match="tle_line1"):
        parse_scenario(text.replace(TLE[1], TLE[1][:30]), "p.toml")
