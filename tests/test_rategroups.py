"""Rate groups on one tick source: exact run counts, overruns and slips counted, no drift,
and a wall-clock step that moves nothing in the schedule (but is reported).

The reference for counts is arithmetic on tick indices; time is a ManualClock
(accelerated: a simulated member spends time by advancing it), except in the
real-time tests, which use the machine's monotonic clock.
"""
import random
import threading
import time

import pytest

from flight.parameters import ParameterStore
from flight.rategroups import (JitterMeter, ManualClock, RateGroup, RateGroupDriver, TickSource,
                               divisor_for)
from flight.timecorrelation import TimeConfig, TimeCorrelation
from kestrel.settings import ConfigurationError


def make_driver(clock, groups, rate_hz=10.0):
    return RateGroupDriver(TickSource(rate_hz, clock=clock, wait=clock.sleep), groups)


def test_each_group_runs_on_its_own_ticks_exactly():
    clock = ManualClock()
    ran = {"sensing": [], "housekeeping": [], "health": [], "offset": []}
    driver = make_driver(clock, [
        RateGroup("sensing", 1, [lambda: ran["sensing"].append(driver.ticks.index)]),
        RateGroup("housekeeping", 10, [lambda: ran["housekeeping"].append(driver.ticks.index)]),
        RateGroup("health", 100, [lambda: ran["health"].append(driver.ticks.index)]),
        RateGroup("offset", 10, [lambda: ran["offset"].append(driver.ticks.index)], offset=5),
    ])
    n = 1005
    driver.run(threading.Event(), max_ticks=n)
    assert ran["sensing"] == list(range(n))
    assert ran["housekeeping"] == list(range(0, n, 10))
    assert ran["health"] == list(range(0, n, 100))
    assert ran["offset"] == list(range(5, n, 10))
    assert {g.name: g.runs for g in driver.groups} == {"sensing": 1005, "housekeeping": 101, "health": 11, "offset": 100}
    assert all(g.overruns == 0 and g.slips == 0 for g in driver.groups)
    assert driver.ticks.ticks_missed == 0
    # Tick n-1 began exactly on its slot: the ManualClock jumps to it.
    assert clock() == driver.ticks.start + (n - 1) * 0.1


def test_a_slow_member_counts_an_overrun_on_its_group_and_slips_on_the_groups_it_delays():
    clock = ManualClock()
    runs_at = {"sensing": [], "health": []}
    driver = make_driver(clock, [
        RateGroup("sensing", 1, [lambda: runs_at["sensing"].append(driver.ticks.index)]),
        # Housekeeping takes 0.35 s once, at tick 20: 3.5 base periods, 0.35 of its own 1 s period.
        RateGroup("housekeeping", 10, [lambda: clock.cost(0.35 if driver.ticks.index == 20 else 0.001)]),
        # Health is due at tick 23, inside the slow run: it must run late, not be lost.
        RateGroup("health", 50, [lambda: runs_at["health"].append(driver.ticks.index)], offset=23),
        # Slow once more at tick 75, longer than its own period: an overrun.
        RateGroup("slow", 25, [lambda: clock.cost(2.55 if driver.ticks.index == 75 else 0.0)]),
    ])
    driver.run(threading.Event(), max_ticks=100)     # 100 ticks run; 26 skipped, so the last is tick 125
    sensing, housekeeping, health, slow = driver.groups
    # 0.35 s from tick 20 ends inside slot 23: ticks 21 and 22 are skipped, 23 runs late.
    # 2.55 s from tick 75 ends inside slot 100: ticks 76..99 are skipped, 100 runs late.
    assert driver.ticks.ticks_missed == 2 + 24
    assert 21 not in runs_at["sensing"] and 23 in runs_at["sensing"]
    assert sensing.slips == 26 and sensing.overruns == 0
    assert housekeeping.overruns == 0 and housekeeping.max_duration_s == pytest.approx(0.35)
    assert housekeeping.slips == 2           # slots 80 and 90 passed during the slow group's run
    assert housekeeping.runs == 11           # 0..70, 100 (late), 110, 120
    assert slow.overruns == 1 and slow.max_duration_s == pytest.approx(2.55) and slow.slips == 0
    assert health.slips == 0 and runs_at["health"] == [23, 73, 123]
    assert driver.counters()["sensing_slips"] == 26


def test_a_low_rate_group_runs_late_rather_than_never():
    """A member late every tick makes the loop skip ticks; health's rare slot must still run."""
    clock = ManualClock()
    health_runs = []
    driver = make_driver(clock, [
        RateGroup("sensing", 1, [lambda: clock.cost(0.15)]),   # 1.5 periods every tick
        RateGroup("health", 100, [lambda: health_runs.append(driver.ticks.index)]),
    ])
    driver.run(threading.Event(), max_ticks=2000)    # covers about 3000 tick slots
    sensing, health = driver.groups
    assert sensing.overruns == 2000
    assert driver.ticks.ticks_missed == sensing.slips and sensing.slips > 900
    slots = (driver.ticks.index // 100) + 1
    assert health.runs + health.slips == slots and health.runs >= slots - 1
    assert all(b - a <= 102 for a, b in zip(health_runs, health_runs[1:]))


def test_no_drift_over_100k_ticks_with_noisy_work_and_oversleep():
    """Accelerated soak: each tick does a random amount of work under a period and
    each wait oversleeps randomly; the schedule stays on start + n * period."""
    rng = random.Random(20240611)
    clock = ManualClock()

    def oversleeping_wait(seconds):
        return clock.sleep(seconds + rng.uniform(0, 0.002))

    last_start = []

    def sense():
        last_start[:] = [clock()]
        clock.cost(rng.uniform(0, 0.09))

    ticks = TickSource(10.0, clock=clock, wait=oversleeping_wait, jitter=JitterMeter(100_000))
    driver = RateGroupDriver(ticks, [
        RateGroup("sensing", 1, [sense]),
        RateGroup("housekeeping", 10, [lambda: clock.cost(rng.uniform(0, 0.005))]),
        RateGroup("health", 100, [lambda: None]),
    ])
    n = 100_000
    started = time.perf_counter()
    driver.run(threading.Event(), max_ticks=n)
    assert time.perf_counter() - started < 20
    assert ticks.ticks == n and ticks.index == n - 1 and ticks.ticks_missed == 0
    assert [g.runs for g in driver.groups] == [n, n // 10, n // 100]
    assert all(g.slips == 0 for g in driver.groups)
    # The last tick began within the oversleep of its slot, 10^4 s after the first:
    # a scheduler adding periods to "now" would be late by the sum of the work, ~4500 s.
    last_due = ticks.start + (n - 1) * 0.1
    assert last_due <= last_start[0] <= last_due + 0.002
    assert 0 <= ticks.jitter.percentile(100) <= 0.002 + 1e-9
    assert ticks.jitter.percentile(50) == pytest.approx(0.001, abs=1e-4)


def test_a_wall_clock_jump_moves_nothing_in_the_schedule_and_is_reported(tmp_path):
    def fly(jump_at_tick):
        clock = ManualClock()
        wall = {"offset": 1.7e9 - clock()}
        wallclock = lambda: clock() + wall["offset"]
        jumps = []
        timecorr = TimeCorrelation(ParameterStore(tmp_path / f"p{jump_at_tick}.json"), wallclock=wallclock,
                                   clock=clock, on_jump=jumps.append, config=TimeConfig(jump_tolerance_s=0.5))
        starts = []

        def sense():
            starts.append(clock())
            if driver.ticks.index == jump_at_tick:
                wall["offset"] -= 3600.0     # someone sets the clock back an hour
            elif driver.ticks.index == jump_at_tick + 200:
                wall["offset"] += 7.25       # and forward again
            clock.cost(0.02)

        driver = make_driver(clock, [RateGroup("sensing", 1, [sense]),
                                     RateGroup("housekeeping", 10, [timecorr.check])])
        driver.run(threading.Event(), max_ticks=1000)
        return starts, [g.counters() for g in driver.groups], jumps, timecorr

    steady_starts, steady_counts, steady_jumps, _ = fly(jump_at_tick=10**9)
    starts, counts, jumps, timecorr = fly(jump_at_tick=305)
    assert starts == steady_starts and counts == steady_counts
    assert steady_jumps == [] and jumps == [pytest.approx(-3600.0), pytest.approx(7.25)]
    assert timecorr.clock_jumps == 2 and timecorr.report()["last_jump_s"] == pytest.approx(7.25)


def test_scheduling_reads_the_monotonic_clock_only(monkeypatch):
    assert TickSource(10).clock is time.monotonic
    # Even a wall clock running wild during a real run changes no count.
    monkeypatch.setattr(time, "time", lambda: random.uniform(0, 4e9))
    runs = []
    driver = RateGroupDriver(TickSource(200.0), [RateGroup("fast", 1, [lambda: runs.append(1)]),
                                                  RateGroup("slow", 20, [lambda: None])])
    driver.run(threading.Event(), max_ticks=60)
    assert len(runs) == 60 and driver.groups[1].runs + driver.groups[1].slips == (driver.ticks.index // 20) + 1


def test_real_time_ticks_and_jitter():
    """200 Hz for 1 s on the machine's clock: every slot accounted for, start lateness small."""
    stop = threading.Event()
    ticks = TickSource(200.0, wait=stop.wait)
    driver = RateGroupDriver(ticks, [RateGroup("sensing", 1, [lambda: None])])
    started = time.monotonic()
    driver.run(stop, max_ticks=200)
    elapsed = time.monotonic() - started
    assert ticks.ticks == 200 and ticks.ticks + ticks.ticks_missed == ticks.index + 1
    assert 0.99 * 199 / 200 <= elapsed < 2.0
    summary = ticks.jitter.summary()
    assert summary["jitter_samples"] == 200 and 0 <= summary["jitter_p50_s"] < 0.005


def test_stop_ends_the_wait_at_once():
    stop = threading.Event()
    driver = RateGroupDriver(TickSource(0.1, wait=stop.wait), [RateGroup("slow", 1, [lambda: None])])
    thread = threading.Thread(target=driver.run, args=(stop,))
    thread.start()
    time.sleep(0.05)
    started = time.monotonic()
    stop.set()
    thread.join(2)
    assert not thread.is_alive() and time.monotonic() - started < 0.5
    assert driver.groups[0].runs == 1    # tick 0, at start; tick 1 was 10 s away


def test_jitter_percentiles_are_nearest_rank_and_bounded():
    meter = JitterMeter(capacity=100)
    for i in range(1, 201):
        meter.add(i / 1000)
    assert len(meter.samples) == 100                 # the oldest 100 dropped
    assert meter.percentile(50) == 0.150 and meter.percentile(99) == 0.199 and meter.percentile(100) == 0.2
    assert JitterMeter().summary()["jitter_p99_s"] == 0.0


def test_divisors_and_bad_groups():
    assert divisor_for(1.0, 10.0) == 10 and divisor_for(10.0, 10.0) == 100 and divisor_for(0.01, 10.0) == 1
    with pytest.raises(ConfigurationError, match="divisor must be an integer >= 1, got 0"):
        RateGroup("x", 0, [])
    with pytest.raises(ConfigurationError, match="offset must be 0..9, got 10"):
        RateGroup("x", 10, [], offset=10)
    with pytest.raises(ConfigurationError, match="unique"):
        RateGroupDriver(TickSource(10), [RateGroup("x", 1, []), RateGroup("x", 2, [])])
    with pytest.raises(ConfigurationError, match="tick rate"):
        TickSource(0)


def test_a_member_that_raises_stops_the_run():
    def broken():
        raise RuntimeError("a defect of ours")
    clock = ManualClock()
    driver = make_driver(clock, [RateGroup("g", 1, [broken])])
    with pytest.raises(RuntimeError, match="defect"):
        driver.run(threading.Event(), max_ticks=5)


def test_a_group_retimed_mid_run_keeps_its_slots_and_counts_no_negative_slips():
    group = RateGroup("housekeeping", 10, [lambda: None])
    runs = [i for i in range(0, 37) if group.due(i)]
    group.retime(4, 37)
    runs += [i for i in range(37, 60) if group.due(i)]
    assert runs == [0, 10, 20, 30, 41, 45, 49, 53, 57]
    assert group.slips == 0
    assert not any(group.due(i) for i in (58, 59, 60)) and group.due(61)
    # A late loop after the change counts the runs it lost (slots 65 and 69; 73 runs late, at 75).
    assert group.due(75) and group.slips == 2
