"""FOP-1 (ground) against FARM-1 (flight) over a lossy loop: every AD frame's data delivered once, in order;
retransmission on the CLCW's flag and on the timer, wait, lockout alerts, suspend/resume, BD bypass,
initialisation with Unlock and Set V(R)."""
import random

import pytest

from flight.farm import Farm1, FarmState
from ground.fop import Fop1, FopState
from kestrel.link.errors import FrameRejected
from kestrel.link.tcframe import FrameType, TcFrame, TcFrameLayout

LAYOUT = TcFrameLayout(42, frozenset({1}))


class Loop:
    """FOP -> (maybe lost) TC frame octets -> FARM -> CLCW -> FOP, on a clock the test moves."""

    def __init__(self, loss=0.0, seed=0, room=lambda: True, **fop):
        self.now = 0.0
        self.rng = random.Random(seed)
        self.loss = loss
        self.farm = Farm1(1, 10, room)
        self.delivered: list[bytes] = []
        self.wire: list[bytes] = []
        self.fop = Fop1(1, lambda t, ns, data: TcFrame(1, ns, data, t).pack(LAYOUT), self.wire.append,
                        clock=lambda: self.now, **fop)

    def run(self, steps=1, clcw=True):
        for _ in range(steps):
            wire, self.wire[:] = list(self.wire), []
            for raw in wire:
                if self.rng.random() < self.loss:
                    continue
                frame = TcFrame.unpack(raw, LAYOUT)
                try:
                    if self.farm.frame(frame.frame_type, frame.sequence_number, frame.data):
                        self.delivered.append(frame.data)
                except FrameRejected:
                    pass
            if clcw and self.rng.random() >= self.loss:
                self.fop.clcw(self.farm.clcw())
            self.now += 1.0
            self.fop.poll()


def test_clean_link_delivers_in_order():
    loop = Loop()
    loop.fop.initiate()
    sent = [f"tc{i}".encode() for i in range(30)]
    for data in sent:
        while loop.fop.transmit_ad(data) is None:
            loop.run()
    loop.run(3)
    assert loop.delivered == sent and loop.fop.outstanding == 0 and loop.fop.state == FopState.ACTIVE


@pytest.mark.parametrize("seed", range(5))
def test_lossy_link_delivers_each_once_in_order(seed):
    loop = Loop(loss=0.3, seed=seed, t1_initial_s=3.0, transmission_limit=50)
    loop.fop.initiate()
    sent = [f"tc{i}".encode() for i in range(300)]   # more than 256: N(S) wraps
    for data in sent:
        while loop.fop.transmit_ad(data) is None:
            loop.run()
            assert loop.fop.state != FopState.INITIAL, loop.fop.alert_reason
    for _ in range(500):
        if not loop.fop.outstanding:
            break
        loop.run()
    assert loop.delivered == sent
    assert loop.fop.counters.retransmissions > 0


def test_wait_then_release():
    room = [False]
    loop = Loop(room=lambda: room[0])
    loop.fop.initiate()
    loop.fop.transmit_ad(b"a")
    loop.run()
    assert loop.farm.state == FarmState.WAIT and loop.fop.state == FopState.RETRANSMIT_WITH_WAIT
    room[0] = True
    loop.farm.buffer_released()
    loop.run(3)
    assert loop.delivered == [b"a"] and loop.fop.state == FopState.ACTIVE


def test_lockout_alerts_then_unlock_recovers():
    loop = Loop()
    loop.fop.set_vs(100)                       # far from the FARM's V(R) 0: the FARM locks out
    loop.fop.initiate()
    loop.fop.transmit_ad(b"x")
    loop.run()
    assert loop.farm.state == FarmState.LOCKOUT
    assert loop.fop.state == FopState.INITIAL and "lockout" in loop.fop.alert_reason
    loop.fop.initiate_with_unlock()
    loop.run(2)
    assert loop.farm.state == FarmState.OPEN
    # Unlock leaves V(R) at 0 and V(S) at 100: the FOP is still initialising, an N(R) it does not expect.
    loop.fop.initiate_with_set_vr(7)
    loop.run(2)
    assert loop.fop.state == FopState.ACTIVE and loop.farm.vr == 7
    loop.fop.transmit_ad(b"after")
    loop.run(2)
    assert loop.delivered == [b"after"]


def test_initiate_with_clcw_check_adopting_the_farms_v_r():
    loop = Loop()
    loop.farm.frame(FrameType.BC, 0, b"\x82\x00\x2a")
    loop.fop.set_vs(loop.farm.clcw().report_value)
    loop.fop.initiate(clcw_check=True)
    assert loop.fop.state == FopState.INITIALISING_WITHOUT_BC
    loop.run()
    assert loop.fop.state == FopState.ACTIVE
    assert loop.fop.transmit_ad(b"x") == 42


def test_timer_limit_alerts_or_suspends_and_resume():
    for timeout_type in (0, 1):
        loop = Loop(t1_initial_s=2.0, transmission_limit=3, timeout_type=timeout_type)
        loop.fop.initiate()
        loop.fop.transmit_ad(b"lost")
        loop.wire.clear()                      # the frame never arrives, and no CLCW comes back
        for _ in range(10):
            loop.wire.clear()
            loop.now += 1.0
            loop.fop.poll()
        assert loop.fop.state == FopState.INITIAL
        if timeout_type == 0:
            assert loop.fop.counters.alerts == 1 and loop.fop.outstanding == 0
        else:
            assert loop.fop.suspend_state and loop.fop.outstanding == 1
            loop.fop.resume()
            loop.run(3)
            assert loop.delivered == [b"lost"] and loop.fop.state == FopState.ACTIVE


def test_bd_bypasses_the_sequence():
    loop = Loop()
    loop.fop.transmit_bd(b"expedited")         # even in INITIAL
    loop.run()
    assert loop.delivered == [b"expedited"] and loop.farm.farm_b_counter == 1


def test_window_bounds_outstanding_frames():
    loop = Loop(window=3)
    loop.fop.initiate()
    assert [loop.fop.transmit_ad(b"x") for _ in range(4)] == [0, 1, 2, None]
