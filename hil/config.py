"""The whole configuration file, as the bench reads it: its own sections and every program's.

The bench starts the flight program and the ground station with the same
file, so it checks every section before it starts either.
"""
from __future__ import annotations

from dataclasses import dataclass

from flight.config import FlightProgramConfig
from ground.config import GroundProgramConfig
from kestrel.config import combined_sections
from kestrel.settings import Settings, setting

from .scene import SceneConfig


@dataclass(frozen=True)
class HilConfig(Settings):
    duration_s: float = setting(20.0, "seconds of scene the demo runs", above=0, high=86400)
    match_radius_px: float = setting(1.5, "a detection within this distance of a true target is a hit",
                                     above=0, high=50)
    pass_min_pd: float = setting(0.9, "pass bar: fraction of target-frames at SNR >= pass_snr detected",
                                 low=0, high=1)
    pass_snr: float = setting(8.0, "pass bar: the SNR from which targets count towards pass_min_pd", low=0)
    pass_max_false_per_frame: float = setting(1.0, "pass bar: most false alarms per frame", low=0)
    pass_max_latency_s: float = setting(2.0, "pass bar: worst frame-time-to-ground-decode latency", above=0)
    drain_s: float = setting(3.0, "seconds the ground keeps listening after the flight program ends",
                             low=0, high=600)
    warmup_frames: int = setting(10, "frames at the start of a pass that are not scored (the detector's "
                                 "background model forms over them)", low=0, high=10000)


# Every section of the file: the flight program's and the ground's, declared where they are, and the bench's.
KestrelConfig = combined_sections(
    "KestrelConfig", FlightProgramConfig, GroundProgramConfig,
    scene=(SceneConfig, "the scene simulator (the bench's sim:// source, and its truth)"),
    hil=(HilConfig, "the bench"))
