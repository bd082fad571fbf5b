"""Declaring settings: a default, one line of documentation and the range, in one place.

Every configurable dataclass (link, sensor, detector, scene, imaging...)
derives from `Settings` and declares its fields with `setting()`. The range
given there is checked whenever an instance is made, so a value read from a
file, built in a test or derived by a program meets the same rule, and
`--print-config` shows the rule beside the default. Rules that tie several
fields together go in `check()`.
"""
from __future__ import annotations

import dataclasses
import math


class ConfigurationError(ValueError):
    """A setting, or a combination of settings, that cannot work; refused at start."""


def setting(default, doc: str, *, low=None, high=None, above=None, choices=None):
    """A documented dataclass field.

    low/high: inclusive bounds; above: an exclusive lower bound; choices: the
    allowed values. Float settings are always finite. Mutable and dataclass
    defaults are copied per instance.
    """
    metadata = {"doc": doc, "low": low, "high": high, "above": above, "choices": choices}
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def rule(field: dataclasses.Field) -> str:
    """The declared range of a field as text ('' when it has none)."""
    m = field.metadata
    if m.get("choices") is not None:
        return "one of " + ", ".join(repr(c) for c in m["choices"])
    low = m.get("low")
    above = m.get("above")
    high = m.get("high")
    if low is not None and high is not None:
        return f"{low}..{high}"
    parts = []
    if low is not None:
        parts.append(f">= {low}")
    if above is not None:
        parts.append(f"> {above}")
    if high is not None:
        parts.append(f"<= {high}")
    return ", ".join(parts)


def _check_value(field: dataclasses.Field, value) -> None:
    m = field.metadata
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigurationError(f"{field.name} must be a finite number, got {value!r}")
    items = value if isinstance(value, tuple) else (value,)
    for item in items:
        if m.get("choices") is not None and item not in m["choices"]:
            raise ConfigurationError(f"{field.name} must be {rule(field)}, got {item!r}")
        if isinstance(item, float) and not math.isfinite(item):
            raise ConfigurationError(f"{field.name} must hold finite numbers, got {value!r}")
        if not isinstance(item, (int, float)) or isinstance(item, bool):
            continue
        if ((m.get("low") is not None and item < m["low"]) or (m.get("high") is not None and item > m["high"])
                or (m.get("above") is not None and not item > m["above"])):
            raise ConfigurationError(f"{field.name} must be {rule(field)}, got {item!r}")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Base of every settings dataclass: declared ranges checked on construction."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if f.metadata.get("doc") is not None:
                _check_value(f, getattr(self, f.name))
        self.check()

    def check(self) -> None:
        """Rules across fields; raise ConfigurationError naming the fields."""


def describe(cls) -> list[tuple[str, object, str]]:
    """(name, default, one-line doc) for every setting of a dataclass, in declaration order."""
    instance = cls()
    return [(f.name, getattr(instance, f.name), f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]
