"""The flight program's sections of the configuration file.

The file is shared with the ground and the bench; kestrel.config reads it and
leaves their sections to them.
"""
from __future__ import annotations

from dataclasses import dataclass

from kestrel.link.config import LinkConfig, UplinkConfig
from kestrel.link.port import ReconnectConfig
from kestrel.settings import Settings, setting

from .classifier import ClassifierConfig
from .detection import DetectorConfig
from .geolocation import GeolocationConfig
from .health import HealthConfig
from .imaging import ImagingConfig
from .scheduler import SchedulerConfig
from .store import StoreConfig
from .tracking import TrackerConfig


@dataclass(frozen=True)
class SensorConfig(Settings):
    source: str = setting("sim://cloudy", "frame source URL: npy:DIR (a directory of .npy frames) or a plug-in "
                          "scheme such as the bench's sim://KIND?seed=N")
    frame_rate_hz: float = setting(10.0, "frames per second the executive processes", above=0, high=1000)
    max_frames: int = setting(0, "stop after this many frames (0: run until stopped or out of frames)", low=0)
    max_frame_pixels: int = setting(2048 * 2048, "largest frame accepted (pixels); a larger one is refused "
                                    "with an event, before it can exhaust memory", low=16 * 16, high=1 << 26)


@dataclass(frozen=True)
class FlightConfig(Settings):
    port: str = setting("", "radio port URL (any pyserial URL); --port overrides it")
    housekeeping_period_s: float = setting(1.0, "seconds between housekeeping reports", above=0, high=3600)
    flush_timeout_s: float = setting(10.0, "longest wait, when stopping, for queued data to go out", low=0, high=3600)
    reconnect: ReconnectConfig = setting(ReconnectConfig(), "reopening a lost radio port")
    start_mode: str = setting("OBSERVE", "the mode entered once started (a payload on orbit starts in SAFE)",
                              choices=("SAFE", "STANDBY", "OBSERVE"))
    parameters_path: str = setting("", "the file ST[20] parameter values set by command are kept in; empty: a "
                                   "temporary one (the bench's default; a payload names its file)")


@dataclass(frozen=True)
class FlightProgramConfig(Settings):
    """The sections kestrel-flight reads."""

    link: LinkConfig = setting(LinkConfig(), "the downlink, shared by flight and ground")
    uplink: UplinkConfig = setting(UplinkConfig(), "the uplink: CLTUs, TC frames, COP-1 and SDLS, shared by flight "
                                   "and ground")
    sensor: SensorConfig = setting(SensorConfig(), "the frame source of the flight program")
    detection: DetectorConfig = setting(DetectorConfig(), "the onboard detector")
    classifier: ClassifierConfig = setting(ClassifierConfig(), "the learned false-alarm filter: a score per "
                                           "detection that feeds the track score")
    tracking: TrackerConfig = setting(TrackerConfig(), "the onboard tracker and the alerts it opens")
    geolocation: GeolocationConfig = setting(GeolocationConfig(), "latitude and longitude of alerts: the orbit "
                                             "(TLE) and the pointing")
    imaging: ImagingConfig = setting(ImagingConfig(), "image products: chips and quick-look frames")
    flight: FlightConfig = setting(FlightConfig(), "the flight executive")
    store: StoreConfig = setting(StoreConfig(), "store-and-forward: every product is kept here until the ground "
                                 "acknowledges it")
    scheduler: SchedulerConfig = setting(SchedulerConfig(), "the downlink scheduler: class priorities and budgets")
    health: HealthConfig = setting(HealthConfig(), "health: the watchdog is fed only while every component "
                                   "shows progress; a stall restarts the program")
