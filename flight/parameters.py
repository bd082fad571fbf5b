"""The onboard parameter store behind PUS service 20 (on-board parameter management).

A parameter is declared once, in `TABLE`: a plain integer id (what ST[20]
carries), a dotted name, a type, a range and a default. Where a parameter
mirrors a setting of the configuration file ("detection.k_sigma" is
`DetectorConfig.k_sigma`), `from_setting` takes its type, range, default and
doc from that setting, so the file and the uplink obey one rule; give the store
the program's configuration and its values become the defaults, and every
change is also checked against the settings' cross-field rules.

What the ground sets is written to a JSON file atomically (temporary file,
fsync, rename, fsync of the directory): a kill -9 or a power cut at any
instant leaves the old values or the new ones, never a torn file. Only the
commanded values are kept there, so a default changed by a new configuration
still applies to what the ground never set. A missing, corrupt or foreign file
at start gives the defaults and a line in `load_errors`, never a crash; a
corrupt file is moved aside as evidence.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import zlib
from pathlib import Path
from typing import Callable, Iterable, Mapping

from kestrel.settings import ConfigurationError, Settings

from .detection import DetectorConfig
from .config import FlightConfig
from .imaging import ImagingConfig

FILE_FORMAT = "kestrel-parameters"
FILE_VERSION = 1


class ParameterError(Exception):
    """A parameter request refused; the message names the parameter, what was expected and what came."""


class UnknownParameterError(ParameterError, KeyError):
    def __str__(self) -> str:     # KeyError would quote the message
        return self.args[0]


class ParameterValueError(ParameterError, ValueError):
    """A value of the wrong type or out of range; `expected` and `actual` say which."""

    def __init__(self, parameter: "Parameter", expected: str, actual):
        self.parameter, self.expected, self.actual = parameter, expected, actual
        super().__init__(f"{parameter.name} (id {parameter.id}) must be {expected}, got {actual!r}")


class ParameterStorageError(ParameterError):
    """The new values could not be made durable; the old ones stay, on disk and in memory."""


@dataclasses.dataclass(frozen=True)
class Parameter:
    id: int
    name: str
    type: type                   # int or float
    default: int | float
    low: int | float | None = None     # inclusive
    high: int | float | None = None    # inclusive
    above: int | float | None = None   # exclusive lower bound
    doc: str = ""

    def rule(self) -> str:
        if self.low is not None and self.high is not None and self.above is None:
            bounds = [f"{self.low}..{self.high}"]
        else:
            bounds = ([f">= {self.low}"] if self.low is not None else []) + \
                     ([f"> {self.above}"] if self.above is not None else []) + \
                     ([f"<= {self.high}"] if self.high is not None else [])
        return f"{self.type.__name__} " + ", ".join(bounds) if bounds else self.type.__name__

    def check(self, value) -> int | float:
        """The value as this parameter's type, or ParameterValueError naming the rule."""
        # bool is an int to Python, never to us; an int is a fine float, a float is no int.
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.type is int and isinstance(value, float)):
            raise ParameterValueError(self, self.rule(), value)
        value = self.type(value)
        if (not math.isfinite(value) or (self.low is not None and value < self.low)
                or (self.high is not None and value > self.high) or (self.above is not None and not value > self.above)):
            raise ParameterValueError(self, self.rule(), value)
        return value


def from_setting(pid: int, name: str, settings: type[Settings], field: str | None = None, **overrides) -> Parameter:
    """A parameter mirroring a setting: type, range, default and doc from its declaration.

    `overrides` narrow it for the uplink (e.g. a `high` the file does not have).
    """
    field = field or name.rpartition(".")[2]
    f = {f.name: f for f in dataclasses.fields(settings)}[field]
    default = getattr(settings(), field)
    m = f.metadata
    declared = dict(type=type(default), default=default, low=m.get("low"), high=m.get("high"),
                    above=m.get("above"), doc=m.get("doc", ""))
    return Parameter(pid, name, **{**declared, **overrides})


class ParameterTable:
    """Declared parameters, by id and by name; ids and names unique, defaults valid."""

    def __init__(self, parameters: Iterable[Parameter]):
        self.parameters = tuple(parameters)
        self.by_id = {p.id: p for p in self.parameters}
        self.by_name = {p.name: p for p in self.parameters}
        if len(self.by_id) != len(self.parameters) or len(self.by_name) != len(self.parameters):
            raise ConfigurationError(f"parameter ids and names must be unique: {[(p.id, p.name) for p in self.parameters]}")
        for p in self.parameters:
            if not isinstance(p.id, int) or not 0 <= p.id <= 0xFFFFFFFF or p.type not in (int, float):
                raise ConfigurationError(f"parameter {p.name}: id must be 0..2**32-1 and type int or float")
            p.check(p.default)

    def __iter__(self):
        return iter(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    def __getitem__(self, key: int | str) -> Parameter:
        """By id (int) or name (str); UnknownParameterError otherwise."""
        found = self.by_name.get(key) if isinstance(key, str) else self.by_id.get(key)
        if found is None or isinstance(key, bool):
            raise UnknownParameterError(f"no parameter {key!r}: known ids {sorted(self.by_id)}")
        return found

    def extended(self, *parameters: Parameter) -> "ParameterTable":
        return ParameterTable(self.parameters + parameters)


# ids are ST[20] parameter ids, the ones kestrel/services.py puts on the wire: never reuse or
# renumber one, add new ones at the end. Parameters the wire does not carry (yet) are set by
# other services (housekeeping re-timing, the time correlation function) or at start.
TABLE = ParameterTable([
    from_setting(1, "detection.k_sigma", DetectorConfig),
    from_setting(10, "imaging.quicklook_period_s", ImagingConfig),
    from_setting(11, "imaging.chips_per_frame", ImagingConfig),
    from_setting(20, "flight.housekeeping_period_s", FlightConfig),
    # Onboard time = system time + offset + drift * (system time - epoch): flight/timecorrelation.py.
    # A board without a real-time clock may boot in 1970, hence an offset of decades.
    Parameter(30, "time.offset_s", float, 0.0, low=-2.0**32, high=2.0**32,
              doc="onboard time minus system time at the epoch (s)"),
    Parameter(31, "time.drift_ppm", float, 0.0, low=-1000.0, high=1000.0,
              doc="rate of the correction after the epoch (parts per million of system time)"),
    Parameter(32, "time.epoch_s", float, 0.0, low=0.0, high=2.0**33,
              doc="system time (Unix seconds) at which offset_s holds"),
])


def apply_parameters(config, values: Mapping[str, int | float]):
    """`config` with each "section.field" value put in; the others (time.*) ignored.

    Settings are frozen and checked on construction, so this raises
    ConfigurationError if the values break a cross-field rule.
    """
    sections: dict[str, dict] = {}
    for name, value in values.items():
        section, _, field = name.partition(".")
        if hasattr(config, section) and hasattr(getattr(config, section), field):
            sections.setdefault(section, {})[field] = value
    return dataclasses.replace(config, **{s: dataclasses.replace(getattr(config, s), **v) for s, v in sections.items()})


def _config_value(config, name: str):
    section, _, field = name.partition(".")
    return getattr(getattr(config, section, None), field, None)


def _checksum(values: Mapping) -> int:
    return zlib.crc32(json.dumps(values, sort_keys=True).encode())


class ParameterStore:
    """Get and set declared parameters; what is set survives a reboot.

    `config`: the program's configuration; its values are the defaults, and a
    change must keep it valid. `on_change(name, value)` is called after each
    change is durable. Counters: `writes`, `write_errors`; `load_errors` lists
    what was wrong with the file at start.
    """

    def __init__(self, path: str | os.PathLike, table: ParameterTable = TABLE, config=None,
                 on_change: Callable[[str, int | float], None] | None = None):
        self.path = Path(path)
        self._temporary = self.path.with_name(f".{self.path.name}.tmp")
        self.table = table
        self.config = config
        self.on_change = on_change
        self.defaults = {p.name: p.default for p in table}
        if config is not None:
            for p in table:
                if _config_value(config, p.name) is not None:
                    try:
                        self.defaults[p.name] = p.check(_config_value(config, p.name))
                    except ParameterValueError as exc:
                        raise ConfigurationError(f"the configuration's {exc}") from exc
        self.writes = 0
        self.write_errors = 0
        self.load_errors: list[str] = []
        self._set: dict[str, int | float] = {}     # what the ground commanded, as on disk
        self._lock = threading.Lock()              # ST[20] handler and housekeeping may be different threads
        self._load()

    # --- reading ---------------------------------------------------------------
    def get(self, key: int | str) -> int | float:
        name = self.table[key].name
        return self._set.get(name, self.defaults[name])

    def values(self) -> dict[str, int | float]:
        return {**self.defaults, **self._set}

    def commanded(self) -> dict[str, int | float]:
        """Only what was set (and persisted), not the defaults."""
        return dict(self._set)

    # --- changing --------------------------------------------------------------
    def set(self, key: int | str, value) -> int | float:
        """Check, persist and apply one value; returns it as stored."""
        return self.set_many({key: value})[self.table[key].name]

    def set_many(self, values: Mapping[int | str, object]) -> dict[str, int | float]:
        """All or none: each value is checked, then all are written in one atomic replace."""
        checked = {}
        for key, value in values.items():
            p = self.table[key]
            checked[p.name] = p.check(value)
        with self._lock:
            if self.config is not None:
                try:
                    apply_parameters(self.config, {**self.values(), **checked})
                except ConfigurationError as exc:
                    p = self.table[next(iter(checked))]
                    raise ParameterValueError(p, f"consistent with the configuration ({exc})", checked[p.name]) from exc
            new = {**self._set, **checked}
            self._write(new)
            self._set = new
        if self.on_change is not None:
            for name, value in checked.items():
                self.on_change(name, value)
        return checked

    def reset(self, key: int | str) -> int | float:
        """Forget what was set: back to the default, durably. Returns the default."""
        name = self.table[key].name
        with self._lock:
            new = {k: v for k, v in self._set.items() if k != name}
            self._write(new)
            self._set = new
        if self.on_change is not None:
            self.on_change(name, self.defaults[name])
        return self.defaults[name]

    # --- the file ----------------------------------------------------------------
    def _write(self, values: Mapping[str, int | float]) -> None:
        document = {"format": FILE_FORMAT, "version": FILE_VERSION, "crc32": _checksum(values), "values": values}
        data = (json.dumps(document, indent=1, sort_keys=True) + "\n").encode()
        try:
            fd = os.open(self._temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)          # the content is on disk before the name points at it
            finally:
                os.close(fd)
            os.replace(self._temporary, self.path)
            directory = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(directory)   # and the rename itself survives a power cut
            finally:
                os.close(directory)
        except OSError as exc:
            self.write_errors += 1
            raise ParameterStorageError(f"parameters not saved to {self.path}: {exc}; the previous values stay") from exc
        self.writes += 1

    def _load(self) -> None:
        # A temporary file is what a write killed before its rename left; the real file is whole.
        self._temporary.unlink(missing_ok=True)
        try:
            text = self.path.read_text(encoding="utf8")
        except FileNotFoundError:
            self.load_errors.append(f"no parameter file at {self.path}: defaults in use")
            return
        except (OSError, UnicodeDecodeError) as exc:
            self._refuse(f"parameter file {self.path} unreadable ({exc})")
            return
        try:
            document = json.loads(text)
            values = document["values"]
            if (document.get("format"), document.get("version")) != (FILE_FORMAT, FILE_VERSION):
                raise ValueError(f"format {document.get('format')!r} version {document.get('version')!r}, "
                                 f"expected {FILE_FORMAT!r} version {FILE_VERSION}")
            if not isinstance(values, dict) or document.get("crc32") != _checksum(values):
                raise ValueError("checksum does not match its values")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            self._refuse(f"parameter file {self.path} is corrupt ({exc})")
            return
        for name, value in values.items():
            try:
                self._set[name] = self.table[name].check(value)
            except ParameterError as exc:
                # One bad entry (a parameter since removed, a range since narrowed) costs that entry only.
                self.load_errors.append(f"{self.path}: {exc}; the default stays")
        if self.config is not None and self._set:
            try:
                apply_parameters(self.config, self.values())
            except ConfigurationError as exc:
                self.load_errors.append(f"{self.path}: saved values break the configuration ({exc}); defaults in use")
                self._set = {}

    def _refuse(self, problem: str) -> None:
        """Defaults for everything; the bad file kept beside, for the ground to ask about."""
        aside = self.path.with_name(self.path.name + ".corrupt")
        try:
            os.replace(self.path, aside)
            problem += f", moved to {aside.name}"
        except OSError as exc:
            problem += f", and could not be moved aside ({exc})"
        self.load_errors.append(problem + ": defaults in use")
