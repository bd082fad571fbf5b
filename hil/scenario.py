"""Scenario files: one bench run described in TOML, checked whole before anything starts.

```toml
name = "bad-link"                      # default: the file's stem
description = "one line"
duration_s = 20.0                      # seconds of scene the flight program flies
drain_s = 4.0                          # seconds the ground keeps listening after the flight ends
cop1 = false                           # commands as AD frames through FOP-1 (else BD frames)
[scene]                                # hil.scene.SceneConfig (the sim:// URL's settings)
[link]                                 # hil.impairments.LinkProfile
[passes]                               # hil.passes.PassSchedule: the link is cut below the station's mask
[[commands]]                           # a telecommand, as `kestrel-ground command` words, at a time
at_s = 5.0
tc = ["ping"]
[[faults]]                             # kill_flight (down for for_s, restarted on the same store),
at_s = 8.0                             # cut_link (an outage of for_s) or fill_disk (the store's filesystem
                                       # full for for_s)
kind = "kill_flight"
for_s = 1.0
[bars]                                 # what the run must meet (hil.scenario.Bars)
```

Unknown keys, wrong types and out-of-range values are refused with the file
and key named (the configuration file's own rules, kestrel.config).
"""
from __future__ import annotations

import argparse
import contextlib
import io
import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from kestrel.config import ConfigError, _build
from kestrel.settings import ConfigurationError

from .impairments import LinkProfile
from .passes import PassSchedule
from .scene import SceneConfig

FAULT_KINDS = ("kill_flight", "cut_link", "fill_disk")


class ScenarioError(ValueError):
    """A scenario file that cannot be run; the message names the file and the key."""


@dataclass(frozen=True)
class Command:
    at_s: float
    tc: tuple[str, ...]

    def __post_init__(self):
        if not self.at_s >= 0:
            raise ValueError(f"at_s must be >= 0, got {self.at_s}")
        if not self.tc:
            raise ValueError("tc must name a telecommand, e.g. [\"ping\"]")


@dataclass(frozen=True)
class Fault:
    at_s: float
    kind: str
    for_s: float = 1.0       # kill_flight: seconds before the restart; cut_link: the outage's length;
                             # fill_disk: seconds the store's filesystem stays full before the filler goes

    def __post_init__(self):
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}, got {self.kind!r}")
        if not self.at_s >= 0 or not self.for_s > 0:
            raise ValueError(f"at_s must be >= 0 and for_s > 0, got {self.at_s}, {self.for_s}")


@dataclass(frozen=True)
class Bars:
    """The bars a run must meet; a negative limit, or false, is no bar."""
    reports_complete: bool = True        # every frame the flight processed has its report on the ground
    products_lost_max: int = 0           # committed, and neither on the ground nor waiting in the store unsent
    frames_bad_max: int = 0              # transfer frames the ground could not use (RS failed, CRC wrong)
    commands_completed: bool = True      # every command sent got its completion success report
    latency_worst_max_s: float = -1.0    # frame time to ground decode, worst report
    pd_min: float = -1.0                 # detection probability at SNR >= hil.pass_snr
    false_alarms_per_frame_max: float = -1.0   # detections matching no true target, per scored frame
    disk_full_reported: bool = False     # fill_disk: the store's errors counted in housekeeping, the flight flew on
    commands_verified_once: bool = False  # one acceptance and one completion success report per command, no more

    def __post_init__(self):
        if self.pd_min > 1:
            raise ValueError(f"pd_min must be <= 1, got {self.pd_min}")


@dataclass(frozen=True)
class Scenario:
    name: str = ""
    description: str = ""
    duration_s: float = 20.0
    drain_s: float = 4.0
    scene: SceneConfig = field(default_factory=SceneConfig)
    link: LinkProfile = field(default_factory=LinkProfile)
    passes: PassSchedule = field(default_factory=PassSchedule)
    commands: tuple[Command, ...] = ()
    faults: tuple[Fault, ...] = ()
    cop1: bool = False        # commands as AD frames through the ground's FOP-1 (link.ocf on for the run)
    bars: Bars = field(default_factory=Bars)
    path: str = ""

    def __post_init__(self):
        if not 0 < self.duration_s <= 3600:
            raise ValueError(f"duration_s must be in (0, 3600], got {self.duration_s}")
        if not 0 <= self.drain_s <= 600:
            raise ValueError(f"drain_s must be 0..600, got {self.drain_s}")

    def profile(self, startup_s: float = 0.0) -> LinkProfile:
        """The link profile with the cut_link faults and the times below the pass schedule's mask added as
        outages, `startup_s` after the link starts."""
        cuts = tuple((f.at_s + startup_s, f.at_s + startup_s + f.for_s) for f in self.faults if f.kind == "cut_link")
        below = self.passes.outages(self.duration_s) if self.passes.tle_line1 else ()
        shifted = tuple((a + startup_s, b + startup_s) for a, b in self.link.outages + below)
        return replace(self.link, outages=shifted + cuts)


def _command_parser() -> argparse.ArgumentParser:
    from ground.command import add_command_parser

    parser = argparse.ArgumentParser(prog="tc", exit_on_error=False)
    add_command_parser(parser.add_subparsers(dest="program"))
    return parser


def command_request(words: tuple[str, ...]):
    """The services.Request that `kestrel-ground command WORDS` would send; ValueError if it would refuse it."""
    from ground.command import build_request
    from kestrel import services

    parser = _command_parser()
    errors = io.StringIO()
    try:
        with contextlib.redirect_stderr(errors):
            args = parser.parse_args(["command", *words])
    except (SystemExit, argparse.ArgumentError) as exc:
        detail = errors.getvalue().strip().splitlines()
        raise ValueError(detail[-1] if detail else str(exc)) from None
    request = build_request(args)
    apid = services.COMMAND_APID if args.apid is None else args.apid   # None: the config's, checked here as 50
    services.parse_request(request.tc(apid, 0), apid=apid)
    return request


def parse_scenario(text: str, source: str = "<scenario>") -> Scenario:
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{source} is not valid TOML: {exc}") from None
    try:
        scenario = _build(Scenario, table, "")
    except (ConfigError, ConfigurationError) as exc:
        raise ScenarioError(f"{source}: {exc}") from None
    if "path" in table:
        raise ScenarioError(f"{source}: unknown key 'path'")
    for i, command in enumerate(scenario.commands):
        if command.at_s > scenario.duration_s:
            raise ScenarioError(f"{source}: commands[{i}].at_s {command.at_s} is after duration_s {scenario.duration_s}")
        try:
            command_request(command.tc)
        except ValueError as exc:
            raise ScenarioError(f"{source}: commands[{i}].tc {list(command.tc)}: {exc}") from None
    for i, fault in enumerate(scenario.faults):
        if fault.at_s > scenario.duration_s:
            raise ScenarioError(f"{source}: faults[{i}].at_s {fault.at_s} is after duration_s {scenario.duration_s}")
    if scenario.bars.disk_full_reported and not any(f.kind == "fill_disk" for f in scenario.faults):
        raise ScenarioError(f"{source}: bars.disk_full_reported needs a fill_disk fault")
    if scenario.bars.commands_verified_once and not scenario.commands:
        raise ScenarioError(f"{source}: bars.commands_verified_once needs commands")
    name = scenario.name or Path(source).stem
    return replace(scenario, name=name, path=source)


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"scenario {path} does not exist (kestrel-hil run --list names the shipped ones)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"scenario {path} cannot be read: {exc}") from None
    return parse_scenario(text, str(path))


def shipped() -> dict[str, Path]:
    """The scenarios shipped with the package, by name (the file's stem), in name order."""
    folder = resources.files("hil") / "scenarios"
    return {Path(p.name).stem: Path(str(p)) for p in sorted(folder.iterdir(), key=lambda p: p.name)
            if p.name.endswith(".toml")}


def resolve(name_or_path: str) -> Scenario:
    """A shipped scenario by name, or a scenario file by path."""
    known = shipped()
    if name_or_path in known and not Path(name_or_path).exists():
        return load_scenario(known[name_or_path])
    return load_scenario(name_or_path)
