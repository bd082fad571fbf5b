"""Frame sources for the executive, chosen by URL the way pyserial chooses a port.

A source hands out (index, pixels) in time order and None when it has no
more; it also says its frame shape and, if it has one, its calibration map
of known bad pixels. `npy:DIR` (recorded frames) is built in. Other schemes
are plug-ins: a package names a factory `open_source(url, limits)` under the
entry-point group `kestrel.sensor_sources`, as the bench does for its scene
simulator (`sim://cloudy?seed=3`). The flight program imports no plug-in
itself, so a satellite build without the bench simply lacks that scheme.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import numpy as np

SOURCE_ENTRY_POINTS = "kestrel.sensor_sources"
FRAME_DTYPE = np.dtype(np.uint16)


class SensorError(Exception):
    """A source cannot be opened, or a frame could not be read or is not a 2-D uint16 frame."""


@dataclass(frozen=True)
class FrameLimits:
    """What a source may hand the executive; a frame beyond these is refused, not processed."""

    max_pixels: int


class FrameSource(Protocol):
    shape: tuple[int, int]
    calibration_bad_pixels: np.ndarray | None

    def read(self) -> tuple[int, np.ndarray] | None: ...


def check_shape(shape: tuple[int, int], limits: FrameLimits, what: str) -> None:
    if len(shape) != 2 or min(shape) < 1:
        raise SensorError(f"{what}: expected a 2-D frame, got shape {shape}")
    pixels = int(shape[0]) * int(shape[1])
    if pixels > limits.max_pixels:
        raise SensorError(f"{what}: {shape[1]}x{shape[0]} frame has {pixels} pixels, more than "
                          f"sensor.max_frame_pixels {limits.max_pixels}")


class NpyDirectorySensor:
    """Frames from `*.npy` files in name order; a bad file is an error for that frame only."""

    def __init__(self, directory: str | Path, limits: FrameLimits):
        self.directory = Path(directory)
        self.limits = limits
        if not self.directory.is_dir():
            raise SensorError(f"frame directory {self.directory} does not exist")
        self._paths = sorted(self.directory.glob("*.npy"))
        if not self._paths:
            raise SensorError(f"frame directory {self.directory} holds no .npy files")
        first = self._load(self._paths[0])
        self.shape = first.shape
        self.calibration_bad_pixels = None
        self._next = 0

    def __len__(self) -> int:
        return len(self._paths)

    def _load(self, path: Path) -> np.ndarray:
        try:
            # Memory-mapped first, so that the header's shape is checked before any pixel is read.
            pixels = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as exc:
            raise SensorError(f"{path.name}: not a readable .npy array ({exc})") from exc
        if pixels.ndim != 2 or pixels.dtype != FRAME_DTYPE:
            raise SensorError(f"{path.name}: expected a 2-D uint16 frame, got {pixels.ndim}-D {pixels.dtype}")
        check_shape(pixels.shape, self.limits, path.name)
        try:
            return np.ascontiguousarray(pixels)
        except (OSError, ValueError) as exc:
            raise SensorError(f"{path.name}: truncated or unreadable ({exc})") from exc

    def read(self) -> tuple[int, np.ndarray] | None:
        """The next frame; SensorError for a bad one (the next call moves on)."""
        if self._next >= len(self._paths):
            return None
        index = self._next
        self._next += 1
        pixels = self._load(self._paths[index])
        if pixels.shape != self.shape:
            raise SensorError(f"{self._paths[index].name}: shape {pixels.shape} differs from the first frame's {self.shape}")
        return index, pixels


def npy_directory(url: str) -> str:
    """The directory of an `npy:` URL: `npy:frames`, `npy://frames` (relative) or `npy:///abs/frames`."""
    parts = urlsplit(url)
    return (parts.netloc + parts.path) or "."


def source_schemes() -> dict[str, object]:
    """Every scheme this installation can open: the built-in ones and the registered plug-ins."""
    schemes: dict[str, object] = {ep.name: ep for ep in entry_points(group=SOURCE_ENTRY_POINTS)}
    schemes["npy"] = None
    return schemes


def open_sensor(url: str, limits: FrameLimits) -> FrameSource:
    """The frame source a URL names; SensorError (naming the schemes there are) when none does."""
    scheme = urlsplit(url).scheme if ":" in url else ""
    if scheme == "npy":
        return NpyDirectorySensor(npy_directory(url), limits)
    schemes = source_schemes()
    plugin = schemes.get(scheme)
    if plugin is None:
        raise SensorError(f"no frame source for {url!r}: known schemes are "
                          f"{', '.join(sorted(s + ':' for s in schemes))}")
    try:
        factory = plugin.load()
    except ImportError as exc:
        raise SensorError(f"frame source {scheme}: cannot be loaded ({exc})") from exc
    try:
        source = factory(url, limits)
    except ValueError as exc:
        raise SensorError(f"frame source {url!r}: {exc}") from exc
    check_shape(source.shape, limits, url)
    return source
