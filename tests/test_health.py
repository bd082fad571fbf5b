"""Health and the systemd watchdog: sd_notify datagrams as systemd receives them, the
watchdog fed only while every component moves, and a stalled sensor reported and
answered with a clean restart.

The peer is a real unix datagram socket standing in for systemd's NOTIFY_SOCKET
(path and abstract namespace); time is a ManualClock, except where a real thread
is stuck for real.
"""
import itertools
import os
import re
import socket
import tempfile
import threading
from pathlib import Path

import pytest

from flight.health import EXIT_RESTART, HealthConfig, HealthMonitor, SdNotify, watchdog_timeout_s
from flight.rategroups import ManualClock, RateGroup, RateGroupDriver, TickSource, divisor_for
from kestrel.settings import ConfigurationError


class Systemd:
    """The receiving end of NOTIFY_SOCKET.

    A datagram socket queues few messages (net.unix.max_dgram_qlen, 10 by
    default) and SdNotify never waits, so like systemd this end must read as
    they come: `poll` is called often in long runs.
    """

    def __init__(self, address: str):
        self.address = address
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.socket.setblocking(False)
        self.received = []

    def poll(self) -> None:
        while True:
            try:
                self.received.append(self.socket.recv(4096).decode())
            except BlockingIOError:
                return

    def messages(self) -> list[str]:
        """What arrived since the last call."""
        self.poll()
        received, self.received = self.received, []
        return received

    def close(self):
        self.socket.close()


@pytest.fixture
def systemd(tmp_path):
    path = tmp_path / "notify"
    if len(str(path)) > 100:    # sun_path holds 108 octets
        path = Path(tempfile.mkdtemp(prefix="kn")) / "notify"
    peer = Systemd(str(path))
    yield peer
    peer.close()


def test_ready_watchdog_status_stopping_reach_the_socket(systemd):
    notify = SdNotify({"NOTIFY_SOCKET": systemd.address})
    assert notify.ready("started, 10 Hz") and notify.watchdog() and notify.status("all 3 alive\nreally")
    assert notify.stopping("restarting: sensor stalled")
    assert systemd.messages() == ["READY=1\nSTATUS=started, 10 Hz", "WATCHDOG=1", "STATUS=all 3 alive really",
                                  "STOPPING=1\nSTATUS=restarting: sensor stalled"]
    assert notify.sent == 4 and notify.send_errors == 0
    notify.close()


def test_the_abstract_namespace():
    peer = Systemd(f"@kestrel-test-{os.getpid()}")
    try:
        notify = SdNotify({"NOTIFY_SOCKET": peer.address})
        assert notify.watchdog() and peer.messages() == ["WATCHDOG=1"]
        notify.close()
    finally:
        peer.close()


def test_without_notify_socket_every_call_is_a_no_op():
    notify = SdNotify({})
    assert notify.ready() is False and notify.watchdog() is False and notify.stopping() is False
    assert notify.sent == notify.send_errors == 0 and notify.ping_period_s is None


def test_a_failed_send_is_counted_not_raised(tmp_path):
    notify = SdNotify({"NOTIFY_SOCKET": str(tmp_path / "nobody")})
    assert notify.watchdog() is False and notify.send_errors == 1 and "No such file" in notify.last_error
    with pytest.raises(ConfigurationError, match="NOTIFY_SOCKET must be a path or an abstract"):
        SdNotify({"NOTIFY_SOCKET": "vsock:2:1234"})


def test_watchdog_usec_picks_the_ping_period():
    assert watchdog_timeout_s({"WATCHDOG_USEC": "30000000"}) == 30.0
    notify = SdNotify({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())})
    assert notify.watchdog_timeout_s == 30.0 and notify.ping_period_s == 15.0
    assert watchdog_timeout_s({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None   # not ours
    assert watchdog_timeout_s({}) is None
    for bad in ("0", "-5", "thirty"):
        with pytest.raises(ConfigurationError, match="WATCHDOG_USEC must be a positive"):
            watchdog_timeout_s({"WATCHDOG_USEC": bad})
    # The monitor runs at the configured period, or faster if systemd needs it; its grace must fit.
    monitor = HealthMonitor({}, SdNotify({"WATCHDOG_USEC": "8000000"}), config=HealthConfig(period_s=5, grace_s=3))
    assert monitor.period_s == 4.0 and divisor_for(monitor.period_s, 10.0) == 40
    assert HealthMonitor({}, SdNotify({}), config=HealthConfig(period_s=5)).period_s == 5.0
    with pytest.raises(ConfigurationError, match="grace_s 5 s plus a check period 4 s must be shorter than systemd's watchdog 8 s"):
        HealthMonitor({}, SdNotify({"WATCHDOG_USEC": "8000000"}), config=HealthConfig(period_s=5, grace_s=5))


def test_the_watchdog_is_fed_only_while_all_move(systemd):
    clock = ManualClock()
    beats = {"sensor": 0, "downlink": 0}
    events, restarts = [], []
    monitor = HealthMonitor({name: (lambda name=name: beats[name]) for name in beats},
                            SdNotify({"NOTIFY_SOCKET": systemd.address}), clock,
                            on_event=lambda *event: events.append(event), on_restart=restarts.append,
                            config=HealthConfig(period_s=1, grace_s=3.5))

    def check(*moving):
        clock.cost(1.0)
        for name in moving:
            beats[name] += 1
        return monitor.check()

    assert check("sensor", "downlink") and check("sensor", "downlink")
    assert systemd.messages() == ["STATUS=all 2 components alive", "WATCHDOG=1", "WATCHDOG=1"]
    # The sensor stops: no WATCHDOG from the first check that sees it, one report.
    assert not check("downlink") and not check("downlink")
    assert systemd.messages() == ["STATUS=stalled: sensor"]
    assert events == [("sensor", 1.0, False)] and monitor.stalled() == {"sensor": 2.0} and restarts == []
    # It comes back within the grace: one report of that, and the watchdog is fed again.
    assert check("sensor", "downlink")
    assert events[1] == ("sensor", 3.0, True) and monitor.recoveries == 1
    assert systemd.messages() == ["STATUS=all 2 components alive", "WATCHDOG=1"]
    # Both stop: after the grace, one restart request naming the longest stalled.
    beats_before = dict(beats)
    for _ in range(6):
        check()
    assert beats == beats_before
    assert restarts == ["sensor stalled for 4.0 s"] and monitor.restart_reason == restarts[0]
    assert systemd.messages() == ["STATUS=stalled: downlink, sensor", "STATUS=restarting: sensor stalled for 4.0 s"]
    assert events[2:] == [("sensor", 1.0, False), ("downlink", 1.0, False)]
    assert (monitor.checks, monitor.watchdogs_sent, monitor.stalls) == (11, 3, 3)


def test_a_sensor_that_stalls_stops_the_watchdog_and_restarts_the_program(systemd):
    """The flight loop in miniature, accelerated: 10 Hz sensing, 1 Hz housekeeping,
    0.5 Hz health under a 6 s systemd watchdog. The sensor delivers nothing after 30 s."""
    clock = ManualClock()
    stop = threading.Event()

    class Sensor:
        frames = 0

        def read(self):
            if clock() - start < 30.0:
                self.frames += 1

    class Downlink:
        heartbeat = 0

        def write(self):
            self.heartbeat += 1

    sensor, downlink, events, restart = Sensor(), Downlink(), [], []
    notify = SdNotify({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "6000000"})

    def request_restart(reason):
        restart.append((clock() - start, reason))
        stop.set()

    monitor = HealthMonitor({"sensor": lambda: sensor.frames, "downlink": lambda: downlink.heartbeat}, notify,
                            clock, on_event=lambda *e: events.append((clock() - start, *e)),
                            on_restart=request_restart, config=HealthConfig(period_s=2.0, grace_s=3.0))
    start = clock()
    driver = RateGroupDriver(TickSource(10.0, clock=clock, wait=clock.sleep), [
        RateGroup("sensing", 1, [sensor.read, systemd.poll]),
        RateGroup("housekeeping", 10, [downlink.write]),
        RateGroup("health", divisor_for(monitor.period_s, 10.0), [monitor.check], offset=5),
    ])
    notify.ready("started")
    driver.run(stop, max_ticks=100_000)
    notify.stopping(f"restarting: {monitor.restart_reason}")
    messages = systemd.messages()
    # Fed every 2 s through 30.5 s; the check at 32.5 s sees the sensor stalled since 30.5 s.
    assert messages.count("WATCHDOG=1") == 16 and notify.send_errors == 0
    assert events == [(32.5, "sensor", 2.0, False)]
    assert restart == [(34.5, "sensor stalled for 4.0 s")] and driver.ticks.index == 345
    assert messages[-3:] == ["STATUS=stalled: sensor", "STATUS=restarting: sensor stalled for 4.0 s",
                             "STOPPING=1\nSTATUS=restarting: sensor stalled for 4.0 s"]
    # Restarted with 4 s since the last WATCHDOG=1, inside the 6 s systemd allows.
    assert EXIT_RESTART not in (0, 1, 2, 3, 70, 130)


def test_a_loop_stuck_in_a_sensor_read_is_seen_from_the_health_thread(systemd):
    """Real threads, real time: the executive loop blocks forever in a sensor read; the
    health group, on its own explicitly started thread, sees the loop's heartbeat stop
    and asks for a restart while the watchdog is still unfed for less than its timeout."""
    stop = threading.Event()
    unstick = threading.Event()
    reads = itertools.count()
    executive = RateGroupDriver(TickSource(100.0, wait=stop.wait),
                                [RateGroup("sensing", 1, [lambda: next(reads) == 20 and unstick.wait()])])
    notify = SdNotify({"NOTIFY_SOCKET": systemd.address, "WATCHDOG_USEC": "1000000"})
    reasons = []
    monitor = HealthMonitor({"executive": lambda: executive.ticks_run}, notify,
                            on_restart=lambda reason: (reasons.append(reason), stop.set()),
                            config=HealthConfig(period_s=0.05, grace_s=0.2))
    health = RateGroupDriver(TickSource(1 / monitor.period_s, wait=stop.wait), [RateGroup("health", 1, [monitor.check])])
    threads = [threading.Thread(target=executive.run, args=(stop,), name="executive"),
               threading.Thread(target=health.run, args=(stop,), name="health")]
    for thread in threads:
        thread.start()
    try:
        assert stop.wait(5), "no restart asked for"
        assert len(reasons) == 1 and re.fullmatch(r"executive stalled for 0\.[2-9] s", reasons[0]), reasons
        assert executive.ticks_run == 20 and threads[0].is_alive()   # still stuck: the program must exit without it
        threads[1].join(2)
        assert not threads[1].is_alive()
    finally:
        unstick.set()
        stop.set()
        for thread in threads:
            thread.join(2)
    messages = systemd.messages()
    assert "WATCHDOG=1" in messages and messages[-1].startswith("STATUS=restarting: executive stalled")
