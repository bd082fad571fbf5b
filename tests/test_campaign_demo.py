"""The demo as a scenario: the shipped demo.toml flies what `kestrel-hil demo` flies and holds it to the
demo's checks. Reference: the demo's own defaults (hil/config.py HilConfig, the scene's and link's
defaults), which `kestrel-hil demo` reads; if either side changes, this says so."""
from hil.config import KestrelConfig
from hil.impairments import LinkProfile
from hil.scenario import load_scenario, shipped


def test_demo_toml_is_the_demo():
    demo = load_scenario(shipped()["demo"])
    config = KestrelConfig()
    hil = config.hil
    assert demo.duration_s == hil.duration_s and demo.drain_s == hil.drain_s
    assert demo.scene == config.scene                        # the demo flies sim:// of the configured scene
    # A clean line at the flight program's baud (the demo's PacedLink runs at link.baud, which the flight sets).
    assert demo.profile() == LinkProfile(baud=0) and not demo.passes.tle_line1
    assert demo.commands == () and demo.faults == () and not demo.cop1
    b = demo.bars
    # The demo's checks: every frame's report, worst latency, Pd at pass_snr, false alarms per frame, no bad frame.
    assert b.reports_complete and b.frames_bad_max == 0
    assert b.latency_worst_max_s == hil.pass_max_latency_s and b.pd_min == hil.pass_min_pd
    assert b.false_alarms_per_frame_max == hil.pass_max_false_per_frame
    assert not b.commands_completed and not b.commands_verified_once and not b.disk_full_reported
