"""The mode machine: every transition by every cause, against the rules written out here."""
import itertools

import pytest

from flight.modes import Cause, Mode, ModeMachine, ModeRefused


def machine_in(mode: Mode):
    seen = []
    m = ModeMachine(lambda old, new, cause, reason: seen.append((old, new, cause, reason)))
    m.enter(Mode.SAFE, Cause.START)
    for step in range(Mode.SAFE + 1, mode + 1):
        m.enter(Mode(step), Cause.COMMAND)
    seen.clear()
    return m, seen


def expected_allowed(current: Mode, target: Mode, cause: Cause) -> bool:
    if target == current or target == Mode.BOOT:
        return False
    if cause in (Cause.FAULT, Cause.WATCHDOG):
        return target == Mode.SAFE
    if cause == Cause.START:
        return current == Mode.BOOT
    return current != Mode.BOOT and target <= current + 1


@pytest.mark.parametrize("current, target, cause", list(itertools.product(
    [Mode.SAFE, Mode.STANDBY, Mode.OBSERVE], list(Mode), list(Cause))))
def test_every_transition_follows_the_rules(current, target, cause):
    m, seen = machine_in(current)
    if expected_allowed(current, target, cause):
        m.enter(target, cause, "why")
        assert m.mode == target and seen == [(current, target, cause, "why")]
    else:
        with pytest.raises(ModeRefused, match=f"{current.name} -> {target.name} refused"):
            m.enter(target, cause, "why")
        assert m.mode == current and not seen and m.counters.refused == 1


def test_boot_takes_only_the_start():
    m = ModeMachine(lambda *a: None)
    with pytest.raises(ModeRefused, match="still starting"):
        m.enter(Mode.SAFE, Cause.COMMAND)
    m.enter(Mode.SAFE, Cause.START)
    with pytest.raises(ModeRefused, match="started already"):
        m.enter(Mode.STANDBY, Cause.START)


def test_a_fault_drops_to_safe_once_and_is_counted():
    m, seen = machine_in(Mode.OBSERVE)
    m.fault("sensor stalled")
    m.fault("sensor still stalled")
    assert m.mode == Mode.SAFE and len(seen) == 1 and m.counters.to_safe_by_fault == 1
    assert seen[0][2] == Cause.FAULT and seen[0][3] == "sensor stalled"
    assert not m.observing and not m.sensing
