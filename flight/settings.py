"""Declaring configuration settings: a default and one line of documentation each.

Every configurable dataclass (link, sensor, detector, scene, imaging...) uses
`setting()` so that `--print-config` can show every key with its default and
what it means, and `describe()` can list them.
"""
from __future__ import annotations

import dataclasses


def setting(default, doc: str):
    """A dataclass field with a documented default; mutable and dataclass defaults are copied per instance."""
    if isinstance(default, (list, dict, set)) or dataclasses.is_dataclass(default):
        return dataclasses.field(default_factory=lambda: default, metadata={"doc": doc})
    return dataclasses.field(default=default, metadata={"doc": doc})


def describe(cls) -> list[tuple[str, object, str]]:
    """(name, default, one-line doc) for every setting of a dataclass, in declaration order."""
    instance = cls()
    return [(f.name, getattr(instance, f.name), f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]
