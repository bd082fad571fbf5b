"""Frame sources for the executive: the simulated scene, or recorded .npy frames.

A source hands out (index, pixels) in time order and None when it has no more.
The simulator belongs to the bench; it is imported only when configured.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


class SensorError(Exception):
    """A frame could not be read or is not a 2-D uint16 frame."""


class SimulatedSensor:
    def __init__(self, scene_config):
        from hil.scene import SceneSimulator

        self._simulator = SceneSimulator(scene_config)
        self.shape = (scene_config.height, scene_config.width)
        self.calibration_bad_pixels = self._simulator.calibration_bad_pixels()
        self._next = 0

    def read(self) -> tuple[int, np.ndarray] | None:
        index = self._next
        self._next += 1
        pixels, _truth = self._simulator.frame(index)
        return index, pixels


class NpyDirectorySensor:
    """Frames from `*.npy` files in name order; a bad file is an error for that frame only."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)
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

    @staticmethod
    def _load(path: Path) -> np.ndarray:
        try:
            pixels = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise SensorError(f"{path.name}: not a readable .npy array ({exc})") from exc
        if pixels.ndim != 2 or pixels.dtype != np.uint16:
            raise SensorError(f"{path.name}: expected a 2-D uint16 frame, got {pixels.ndim}-D {pixels.dtype}")
        return np.ascontiguousarray(pixels)

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


def open_sensor(sensor_config, scene_config):
    if sensor_config.source == "npy":
        return NpyDirectorySensor(sensor_config.directory)
    return SimulatedSensor(scene_config)
