"""Kestrel's configuration: one TOML file shared by flight, ground and bench.

Every key has a documented default (`--print-config` shows them all); a key
we do not know is an error, so a typo never silently leaves a default in
force. Sections map to frozen dataclasses; their `__post_init__` checks say
what values are allowed.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from dataclasses import dataclass
from pathlib import Path

from hil.scene import SceneConfig

from .detection import DetectorConfig
from .imaging import ImagingConfig
from .link.errors import ConfigurationError
from .link.reed_solomon import DATA_SYMBOLS as RS_DATA_SYMBOLS, DEPTHS as RS_DEPTHS
from .link.tmframe import IDLE_VCID
from .link.timecode import CucConfig
from .settings import setting


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and key."""


@dataclass(frozen=True)
class LinkConfig:
    """The downlink as both ends must agree on it."""

    spacecraft_id: int = setting(42, "spacecraft id in every TM frame header (0..1023)")
    frame_length: int = setting(223, "TM transfer frame length in octets, FECF and OCF included")
    ocf: bool = setting(False, "frames carry an operational control field (CLCW)")
    fecf: bool = setting(True, "frames end with a CRC-16 frame error control field")
    randomize: bool = setting(True, "apply the CCSDS pseudo-randomizer to frames (not the ASM)")
    reed_solomon: bool = setting(False, "Reed-Solomon (255,223) E=16 code the frames")
    interleave_depth: int = setting(1, "Reed-Solomon interleaving depth (1,2,3,4,5,8)")
    vc_priority: tuple[int, ...] = setting((0, 1), "virtual channels in priority order, highest first (7 is idle)")
    vc_housekeeping: int = setting(0, "virtual channel carrying housekeeping")
    vc_events: int = setting(0, "virtual channel carrying events")
    vc_detections: int = setting(0, "virtual channel carrying detection reports")
    vc_images: int = setting(1, "virtual channel carrying image chips and quick-look frames")
    max_pending_octets: int = setting(262144, "octets each virtual channel may queue before packets are dropped")
    continuous: bool = setting(False, "keep the downlink continuous with idle frames (transparent radios)")
    baud: int = setting(115200, "radio line rate (bit/s, 8N1); the downlink writes no faster than this")
    line_lead_cadus: int = setting(2, "CADUs the writer may run ahead of the line (bounds OS buffering, so priority holds)")
    destination_id: int = setting(0, "PUS destination id of telemetry")
    time: CucConfig = setting(CucConfig(), "CUC time code of packet and frame times")

    def __post_init__(self):
        if self.interleave_depth not in RS_DEPTHS:
            raise ConfigurationError(
                f"interleave_depth must be one of {RS_DEPTHS}, got {self.interleave_depth}")
        if self.reed_solomon:
            per_codeword, rest = divmod(self.frame_length, self.interleave_depth)
            if rest or not 1 <= per_codeword <= RS_DATA_SYMBOLS:
                raise ConfigurationError(
                    f"frame_length {self.frame_length} does not fit Reed-Solomon interleaving depth "
                    f"{self.interleave_depth}: it must be depth x ({RS_DATA_SYMBOLS} - virtual fill), at most "
                    f"{RS_DATA_SYMBOLS * self.interleave_depth}")
        if (not self.vc_priority or len(set(self.vc_priority)) != len(self.vc_priority)
                or not all(0 <= v < IDLE_VCID for v in self.vc_priority)):
            raise ConfigurationError(f"vc_priority must list distinct virtual channels 0..{IDLE_VCID - 1} "
                                     f"({IDLE_VCID} carries idle frames), got {list(self.vc_priority)}")
        for name in ("vc_housekeeping", "vc_events", "vc_detections", "vc_images"):
            if getattr(self, name) not in self.vc_priority:
                raise ConfigurationError(
                    f"{name} = {getattr(self, name)} is not among vc_priority {list(self.vc_priority)}")
        if self.baud <= 0:
            raise ConfigurationError(f"baud must be positive, got {self.baud}")
        if self.line_lead_cadus < 1:
            raise ConfigurationError(f"line_lead_cadus must be >= 1, got {self.line_lead_cadus}")


@dataclass(frozen=True)
class SensorConfig:
    source: str = setting("sim", "where frames come from: 'sim' (scene simulator) or 'npy' (a directory)")
    directory: str = setting("", "with source 'npy': directory of 2-D uint16 .npy frames, read in name order")
    frame_rate_hz: float = setting(10.0, "frames per second the executive processes")
    max_frames: int = setting(0, "stop after this many frames (0: run until stopped or out of frames)")

    def __post_init__(self):
        if self.source not in ("sim", "npy"):
            raise ConfigurationError(f"sensor source must be 'sim' or 'npy', got {self.source!r}")
        if self.source == "npy" and not self.directory:
            raise ConfigurationError("sensor source 'npy' needs sensor.directory")
        if not self.frame_rate_hz > 0:
            raise ConfigurationError(f"frame_rate_hz must be positive, got {self.frame_rate_hz}")
        if self.max_frames < 0:
            raise ConfigurationError(f"max_frames must be >= 0, got {self.max_frames}")


@dataclass(frozen=True)
class FlightConfig:
    port: str = setting("", "radio port URL (any pyserial URL); --port overrides it")
    housekeeping_period_s: float = setting(1.0, "seconds between housekeeping reports")
    flush_timeout_s: float = setting(10.0, "longest wait, when stopping, for queued data to go out")

    def __post_init__(self):
        if not self.housekeeping_period_s > 0:
            raise ConfigurationError("housekeeping_period_s must be positive")


@dataclass(frozen=True)
class GroundConfig:
    read_size: int = setting(4096, "octets asked of the port or file per read")
    idle_exit_s: float = setting(0.0, "listen: stop after this many seconds without a byte (0: never)")
    sync_search_errors: int = setting(1, "ASM bit errors accepted while searching (0..8)")
    sync_lock_errors: int = setting(3, "ASM bit errors accepted in lock (0..8, at least sync_search_errors)")
    sync_flywheel: int = setting(3, "missing markers bridged in lock before searching again (0..64)")
    sync_slip_window_bits: int = setting(16, "a marker this many bits from the expected one is a slip, re-aligned at once (0..64)")
    sync_allow_inverted: bool = setting(True, "accept an inverted ASM (BPSK phase flip) and invert the data back")


@dataclass(frozen=True)
class HilConfig:
    duration_s: float = setting(20.0, "seconds of scene the demo runs")
    match_radius_px: float = setting(1.5, "a detection within this distance of a true target is a hit")
    pass_min_pd: float = setting(0.9, "pass bar: fraction of target-frames at SNR >= pass_snr detected")
    pass_snr: float = setting(8.0, "pass bar: the SNR from which targets count towards pass_min_pd")
    pass_max_false_per_frame: float = setting(1.0, "pass bar: most false alarms per frame")
    pass_max_latency_s: float = setting(2.0, "pass bar: worst frame-time-to-ground-decode latency")
    drain_s: float = setting(3.0, "seconds the ground keeps listening after the flight program ends")


@dataclass(frozen=True)
class KestrelConfig:
    link: LinkConfig = setting(LinkConfig(), "the downlink, shared by flight and ground")
    sensor: SensorConfig = setting(SensorConfig(), "the frame source of the flight program")
    scene: SceneConfig = setting(SceneConfig(), "the scene simulator (sensor source 'sim', and the bench's truth)")
    detection: DetectorConfig = setting(DetectorConfig(), "the onboard detector")
    imaging: ImagingConfig = setting(ImagingConfig(), "image products: chips and quick-look frames")
    flight: FlightConfig = setting(FlightConfig(), "the flight executive")
    ground: GroundConfig = setting(GroundConfig(), "the ground decoder")
    hil: HilConfig = setting(HilConfig(), "the bench")


# --- loading ---------------------------------------------------------------

def _coerce(value, hint, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
        return _build(hint, value, where)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be an array, got {type(value).__name__}")
        return tuple(_coerce(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if hint is tuple:
        if not isinstance(value, list) or not all(isinstance(v, (int, float, str)) for v in value):
            raise ConfigError(f"{where} must be an array of numbers or strings, got {value!r}")
        return tuple(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported setting type {hint}")


def _build(cls, table: dict, where: str):
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(f"unknown key '{path}'; {where or 'the top level'} takes: {', '.join(known)}")
        values[key] = _coerce(value, hints[key], path)
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"[{where}] {exc}") from exc


def config_from_dict(table: dict) -> KestrelConfig:
    return _build(KestrelConfig, table, "")


def load_config(path: str | Path | None) -> KestrelConfig:
    """The configuration in `path`, every missing key at its default; None gives all defaults."""
    if path is None:
        return KestrelConfig()
    path = Path(path)
    try:
        with path.open("rb") as handle:
            table = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    try:
        return config_from_dict(table)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


# --- documenting -----------------------------------------------------------

def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def render_defaults(cls=KestrelConfig, prefix: str = "") -> str:
    """The whole default configuration as commented TOML (what --print-config prints)."""
    lines: list[str] = []
    tables: list[str] = []
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(value):
            name = f"{prefix}{f.name}"
            tables.append(f"\n# {doc}\n[{name}]\n" + render_defaults(type(value), name + "."))
        else:
            lines.append(f"# {doc}\n{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "".join(tables) + ("\n" if not prefix else "")
