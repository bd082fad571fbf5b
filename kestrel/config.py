"""Reading Kestrel's configuration: one TOML file that flight, ground and bench share.

Each program declares the sections it owns as a root dataclass of `Settings`
sections (flight.config, ground.config, hil.config); this module loads a file
into any such root. Every key has a documented default (`--print-config`); a
key we do not know is an error, so a typo never silently leaves a default in
force. A section that another program owns (see FILE_SECTIONS) is left to
that program, which checks it when it reads the same file.
"""
from __future__ import annotations

import dataclasses
import tomllib
import typing
from pathlib import Path

from .settings import ConfigurationError, Settings, rule, setting

# Every section a Kestrel configuration file may hold, and the program that owns it.
FILE_SECTIONS: typing.Final = {
    "link": "kestrel", "uplink": "kestrel", "sensor": "flight", "detection": "flight", "imaging": "flight", "flight": "flight",
    "store": "flight", "scheduler": "flight", "health": "flight", "tracking": "flight", "geolocation": "flight",
    "classifier": "flight",
    "ground": "ground", "scene": "hil", "hil": "hil",
}
# The largest configuration file read: a config is a page of text, not a data set.
MAX_CONFIG_OCTETS: typing.Final = 1 << 20


class ConfigError(Exception):
    """The configuration file cannot be used; the message names the file and key."""


def _coerce(value, hint, where: str):
    origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {type(value).__name__}")
        return _build(hint, value, where)
    if origin is tuple:
        args = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{where} must be an array, got {type(value).__name__}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where} must be an array of {len(args)} values, got {len(value)}")
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
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


def _build(cls, table: dict, where: str, foreign: typing.Collection[str] = ()):
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    values = {}
    for key, value in table.items():
        path = f"{where}.{key}" if where else key
        if key not in known:
            if key in foreign:
                continue
            raise ConfigError(f"unknown key {path!r}; {where or 'the top level'} takes: {', '.join(known)}")
        values[key] = _coerce(value, hints[key], path)
    try:
        return cls(**values)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ConfigError(f"[{where}] {exc}" if where else str(exc)) from None


def config_from_dict(table: dict, root):
    """An instance of the program's root config from a parsed TOML table."""
    foreign = [name for name in FILE_SECTIONS if name not in {f.name for f in dataclasses.fields(root)}]
    return _build(root, table, "", foreign)


def load_config(path: str | Path | None, root):
    """The configuration in `path` for the program whose sections are `root`; None gives all defaults."""
    if path is None:
        return root()
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_OCTETS + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path} is a directory") from None
    except OSError as exc:
        raise ConfigError(f"config file {path} cannot be read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_OCTETS:
        raise ConfigError(f"config file {path} is larger than {MAX_CONFIG_OCTETS} octets")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text (octet {exc.start})") from None
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    try:
        return config_from_dict(table, root)
    except (ConfigError, ConfigurationError) as exc:
        raise ConfigError(f"{path}: {exc}") from None


def combined_sections(name: str, *roots, **own):
    """A root config holding every section of `roots` (each declared once, where its program declares it)
    and the caller's own sections, given as name=(class, doc)."""
    declared = []
    seen = set()
    for root in roots:
        for f in dataclasses.fields(root):
            if f.name not in seen:
                seen.add(f.name)
                declared.append((f.name, typing.get_type_hints(root)[f.name], f))
    for section, (cls, doc) in own.items():
        declared.append((section, cls, setting(cls(), doc)))
    fields = [(n, hint, dataclasses.field(default_factory=hint, metadata=f.metadata)) for n, hint, f in declared]
    return dataclasses.make_dataclass(name, fields, bases=(Settings,), frozen=True)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)


def render_defaults(cls, prefix: str = "", instance=None) -> str:
    """The whole default configuration as commented TOML (what --print-config prints)."""
    lines: list[str] = []
    tables: list[str] = []
    instance = cls() if instance is None else instance
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        doc = f.metadata.get("doc", "")
        if dataclasses.is_dataclass(value):
            name = f"{prefix}{f.name}"
            tables.append(f"\n# {doc}\n[{name}]\n" + render_defaults(type(value), name + ".", value))
        else:
            allowed = rule(f)
            lines.append(f"# {doc}" + (f" [{allowed}]" if allowed else "") + f"\n{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "".join(tables) + ("\n" if not prefix else "")
