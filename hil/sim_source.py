"""The scene simulator as a frame source of the flight program: `sim://KIND?key=value&...`.

The bench registers `open_source` under the entry-point group
`kestrel.sensor_sources` (pyproject.toml), so the flight program opens a
simulated sensor by URL without importing the bench. The URL carries the
scene's settings by name (`sim://heavy?seed=3&width=512&speed_range=0.05,8`);
`scene_url` writes the URL of a SceneConfig, so the bench can score the very
scene the flight program saw.
"""
from __future__ import annotations

import dataclasses
import typing
from urllib.parse import parse_qsl, quote, urlsplit

from kestrel.config import ConfigError, config_from_dict

from .scene import SceneConfig, SceneSimulator

SCHEME = "sim"


class SimulatedSensor:
    def __init__(self, scene: SceneConfig):
        self.scene = scene
        self._simulator = SceneSimulator(scene)
        self.shape = (scene.height, scene.width)
        self.calibration_bad_pixels = self._simulator.calibration_bad_pixels()
        self._next = 0

    def read(self):
        index = self._next
        self._next += 1
        pixels, _truth = self._simulator.frame(index)
        return index, pixels


def _parse_value(text: str, hint):
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return [_parse_value(part, item) for part in text.split(",")]
    try:
        return {int: int, float: float, str: str}[hint](text)
    except ValueError:
        raise ValueError(f"{text!r} is not a{'n integer' if hint is int else ' number'}") from None


def scene_from_url(url: str) -> SceneConfig:
    """The SceneConfig a `sim://` URL names; ValueError naming the bad part."""
    parts = urlsplit(url)
    if parts.scheme != SCHEME:
        raise ValueError(f"not a {SCHEME}:// URL: {url!r}")
    hints = typing.get_type_hints(SceneConfig)
    table: dict = {}
    if parts.netloc:
        table["kind"] = parts.netloc
    for key, text in parse_qsl(parts.query, keep_blank_values=True, strict_parsing=False):
        if key not in hints:
            raise ValueError(f"unknown scene setting {key!r}; {SCHEME}:// takes {', '.join(hints)}")
        try:
            table[key] = _parse_value(text, hints[key])
        except ValueError as exc:
            raise ValueError(f"scene setting {key}: {exc}") from None
    try:
        return config_from_dict({"scene": table}, _SceneOnly).scene
    except ConfigError as exc:
        raise ValueError(str(exc)) from None


def _text(value) -> str:
    if isinstance(value, tuple):
        return ",".join(_text(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)


def scene_url(scene: SceneConfig) -> str:
    """The `sim://` URL of a scene: its kind, then every setting that differs from the default."""
    default = SceneConfig()
    query = "&".join(f"{f.name}={quote(_text(getattr(scene, f.name)), safe=',.-')}"
                     for f in dataclasses.fields(scene)
                     if f.name != "kind" and getattr(scene, f.name) != getattr(default, f.name))
    return f"{SCHEME}://{scene.kind}" + (f"?{query}" if query else "")


@dataclasses.dataclass(frozen=True)
class _SceneOnly:
    scene: SceneConfig = dataclasses.field(default_factory=SceneConfig)


def open_source(url: str, limits) -> SimulatedSensor:
    """The entry point the flight program calls for a `sim://` URL."""
    scene = scene_from_url(url)
    if scene.width * scene.height > limits.max_pixels:
        raise ValueError(f"{scene.width}x{scene.height} scene exceeds sensor.max_frame_pixels {limits.max_pixels}")
    return SimulatedSensor(scene)
