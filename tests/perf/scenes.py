"""The project's own infrared scenes for benchmarks, made by the bench's scene simulator."""
from functools import lru_cache

import numpy as np

from hil.scene import SceneConfig, SceneSimulator


@lru_cache(maxsize=4)
def project_scene(size: int, kind: str = "cloudy", seed: int = 11) -> np.ndarray:
    """One 14-bit frame (uint16, read-only) of a size x size simulated scene."""
    frame, _truth = SceneSimulator(SceneConfig(width=size, height=size, kind=kind, seed=seed)).frame(0)
    frame.setflags(write=False)
    return frame
