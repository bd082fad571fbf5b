"""FARM-1 (CCSDS 232.1-B-2 section 6): swept over N(S) 0-255 x V(R) {0, 1, 127, 254, 255} x W {2, 10, 254}
against the windows written out as sets, the lockout / unlock / Set V(R) sequences, the FARM-B wrap, and
the CLCW bit by bit as 232.0-B 4.2.1 lays it out."""
import pytest

from flight.farm import Farm1, FarmState
from kestrel.link.cop1 import UNLOCK, Clcw, set_vr
from kestrel.link.errors import FrameRejected, Rejection
from kestrel.link.tcframe import FrameType


def windows(vr: int, width: int) -> tuple[set, set]:
    """The positive window V(R)..V(R)+PW-1 and the negative window V(R)-NW..V(R)-1, each enumerated."""
    return {(vr + i) % 256 for i in range(width // 2)}, {(vr - i) % 256 for i in range(1, width // 2 + 1)}


def farm_at(vr: int, width: int, state=FarmState.OPEN, room=lambda: True) -> Farm1:
    farm = Farm1(3, width, room)
    farm.frame(FrameType.BC, 0, set_vr(vr))
    if state == FarmState.LOCKOUT:
        outside = next(n for n in range(256) if n not in set.union(*windows(vr, width)))
        with pytest.raises(FrameRejected):
            farm.frame(FrameType.AD, outside)
    assert farm.state == state and farm.vr == vr
    return farm


@pytest.mark.parametrize("width", [2, 10, 254])
@pytest.mark.parametrize("vr", [0, 1, 127, 254, 255])
def test_sweep_open(vr, width):
    positive, negative = windows(vr, width)
    for ns in range(256):
        farm = farm_at(vr, width)
        if ns == vr:
            assert farm.frame(FrameType.AD, ns, b"tc") is True
            assert (farm.vr, farm.state, farm.retransmit) == ((vr + 1) % 256, FarmState.OPEN, False)
            continue
        with pytest.raises(FrameRejected) as info:
            farm.frame(FrameType.AD, ns, b"tc")
        if ns in positive:
            assert info.value.reason == Rejection.FARM_RETRANSMISSION
            assert (farm.state, farm.retransmit, farm.vr) == (FarmState.OPEN, True, vr)
        elif ns in negative:
            assert info.value.reason == Rejection.FARM_NEGATIVE_WINDOW
            assert (farm.state, farm.retransmit, farm.vr) == (FarmState.OPEN, False, vr)
        else:
            assert info.value.reason == Rejection.FARM_OUT_OF_WINDOW
            assert (farm.state, farm.lockout, farm.vr) == (FarmState.LOCKOUT, True, vr)


@pytest.mark.parametrize("width", [2, 10, 254])
@pytest.mark.parametrize("vr", [0, 1, 127, 254, 255])
def test_sweep_lockout_discards_everything_sequenced(vr, width):
    for ns in range(256):
        farm = farm_at(vr, width, FarmState.LOCKOUT)
        with pytest.raises(FrameRejected) as info:
            farm.frame(FrameType.AD, ns)
        assert info.value.reason == Rejection.FARM_LOCKOUT
        assert (farm.state, farm.vr) == (FarmState.LOCKOUT, vr)
    assert windows(vr, width)[0] | windows(vr, width)[1] != set(range(256))   # a lockout area exists


def test_wait_and_buffer_release():
    room = [True]
    farm = Farm1(0, 10, lambda: room[0])
    assert farm.frame(FrameType.AD, 0)
    room[0] = False
    with pytest.raises(FrameRejected) as info:
        farm.frame(FrameType.AD, 1)
    assert info.value.reason == Rejection.FARM_WAIT
    assert (farm.state, farm.wait, farm.retransmit, farm.vr) == (FarmState.WAIT, True, True, 1)
    room[0] = True
    with pytest.raises(FrameRejected):          # still waiting until the buffer says it has room
        farm.frame(FrameType.AD, 1)
    farm.buffer_released()
    assert farm.state == FarmState.OPEN and not farm.wait
    assert farm.frame(FrameType.AD, 1) and farm.vr == 2 and not farm.retransmit


def test_unlock_from_lockout_then_set_vr():
    farm = farm_at(10, 10, FarmState.LOCKOUT)
    # Set V(R) in lockout: counted, no effect.
    before = farm.farm_b_counter
    assert farm.frame(FrameType.BC, 0, set_vr(50)) is False
    assert (farm.state, farm.vr, farm.farm_b_counter) == (FarmState.LOCKOUT, 10, (before + 1) % 4)
    farm.frame(FrameType.BC, 0, UNLOCK)
    assert (farm.state, farm.lockout, farm.vr) == (FarmState.OPEN, False, 10)
    farm.frame(FrameType.BC, 0, set_vr(50))
    assert farm.vr == 50 and farm.frame(FrameType.AD, 50) and farm.vr == 51


def test_bd_frames_pass_in_every_state_and_count():
    for state in (FarmState.OPEN, FarmState.LOCKOUT):
        farm = farm_at(5, 10, state)
        counts = []
        for _ in range(6):
            assert farm.frame(FrameType.BD, 99) is True
            counts.append(farm.farm_b_counter)
        assert counts == [2, 3, 0, 1, 2, 3] if state == FarmState.OPEN else [3, 0, 1, 2, 3, 0]
        assert farm.state == state and farm.vr == 5


def test_v_r_wraps():
    farm = farm_at(254, 10)
    for ns in (254, 255, 0, 1):
        assert farm.frame(FrameType.AD, ns)
    assert farm.vr == 2


def test_unknown_control_commands_are_refused():
    farm = Farm1(0)
    for data in (b"", b"\x01", b"\x82\x00", b"\x82\x01\x05", b"\x00\x00", b"\x82\x00\x05\x00"):
        with pytest.raises(FrameRejected) as info:
            farm.frame(FrameType.BC, 0, data)
        assert info.value.reason == Rejection.CONTROL_COMMAND
    assert farm.farm_b_counter == 0


@pytest.mark.parametrize("width", [0, 1, 3, 256, 300])
def test_window_must_be_even_2_to_254(width):
    with pytest.raises(ValueError):
        Farm1(0, width)


def test_clcw_layout():
    clcw = Clcw(virtual_channel_id=5, report_value=0xA7, lockout=True, wait=False, retransmit=True,
                farm_b_counter=2)
    word = int.from_bytes(clcw.pack(), "big")
    # 232.0-B 4.2.1: type 1, version 2, status 3, COP 2, VCID 6, spare 2, RF 1, bit lock 1, lockout 1,
    # wait 1, retransmit 1, FARM-B 2, spare 1, report value 8.
    expected = (0 << 31 | 0 << 29 | 0 << 26 | 1 << 24 | 5 << 18 | 0 << 16 | 0 << 15 | 0 << 14 | 1 << 13
                | 0 << 12 | 1 << 11 | 2 << 9 | 0 << 8 | 0xA7)
    assert word == expected
    assert Clcw.unpack(clcw.pack()) == clcw
    with pytest.raises(ValueError):
        Clcw.unpack((1 << 31 | 0xA7).to_bytes(4, "big"))


def test_farm_clcw_reports_its_state():
    farm = farm_at(7, 10, FarmState.LOCKOUT)
    clcw = farm.clcw()
    assert (clcw.virtual_channel_id, clcw.report_value, clcw.lockout, clcw.farm_b_counter) == (3, 7, True, 1)
