"""The downlink's settings, as both ends must agree on them, and what is built from them."""
from __future__ import annotations

from dataclasses import dataclass

from ..settings import ConfigurationError, Settings, setting
from .coding import RS_DATA_SYMBOLS, RS_DEPTHS, ChannelCoder
from .timecode import CucConfig
from .tmframe import IDLE_VCID, MAX_FRAME_LENGTH, MAX_SPACECRAFT_ID, FrameLayout


@dataclass(frozen=True)
class LinkConfig(Settings):
    spacecraft_id: int = setting(42, "spacecraft id in every TM frame header", low=0, high=MAX_SPACECRAFT_ID)
    frame_length: int = setting(223, "TM transfer frame length in octets, FECF and OCF included",
                                low=8, high=MAX_FRAME_LENGTH)
    ocf: bool = setting(False, "frames carry an operational control field (CLCW)")
    fecf: bool = setting(True, "frames end with a CRC-16 frame error control field")
    randomize: bool = setting(True, "apply the CCSDS pseudo-randomizer to frames (not the ASM)")
    reed_solomon: bool = setting(True, "Reed-Solomon (255,223) E=16 code the frames (false: uncoded)")
    interleave_depth: int = setting(1, "Reed-Solomon interleaving depth", choices=RS_DEPTHS)
    # A packet on a virtual channel goes out whole before the next one on it: the urgent classes get a
    # channel of their own, above detection reports of kilobytes, so an alert waits for one frame at most.
    vc_priority: tuple[int, ...] = setting((0, 1, 2), "virtual channels in priority order, highest first (7 is idle)",
                                           low=0, high=IDLE_VCID - 1)
    vc_events: int = setting(0, "virtual channel carrying alerts, events and command verification reports",
                             low=0, high=IDLE_VCID - 1)
    vc_housekeeping: int = setting(1, "virtual channel carrying housekeeping", low=0, high=IDLE_VCID - 1)
    vc_detections: int = setting(1, "virtual channel carrying detection reports", low=0, high=IDLE_VCID - 1)
    vc_images: int = setting(2, "virtual channel carrying image chips and quick-look frames", low=0, high=IDLE_VCID - 1)
    max_pending_octets: int = setting(262144, "octets each virtual channel may queue before packets are dropped",
                                      low=1024, high=1 << 30)
    continuous: bool = setting(False, "keep the downlink continuous with idle frames (transparent radios)")
    baud: int = setting(115200, "radio line rate (bit/s, 8N1); the downlink writes no faster than this",
                        low=50, high=100_000_000)
    line_lead_cadus: float = setting(1.0, "CADUs the writer may run ahead of the line (bounds OS buffering, so "
                                     "priority holds; below 1 the line may idle when the writer wakes late)",
                                     low=0.25, high=1024)
    destination_id: int = setting(0, "PUS destination id of telemetry", low=0, high=0xFFFF)
    time: CucConfig = setting(CucConfig(), "CUC time code of packet and frame times")

    def check(self) -> None:
        frame_layout(self)  # refuses a frame length that leaves no data field
        if self.reed_solomon:
            per_codeword, rest = divmod(self.frame_length, self.interleave_depth)
            if rest or not 1 <= per_codeword <= RS_DATA_SYMBOLS:
                raise ConfigurationError(
                    f"frame_length {self.frame_length} does not fit Reed-Solomon interleaving depth "
                    f"{self.interleave_depth}: it must be depth x ({RS_DATA_SYMBOLS} - virtual fill), at most "
                    f"{RS_DATA_SYMBOLS * self.interleave_depth}")
        if not self.vc_priority or len(set(self.vc_priority)) != len(self.vc_priority):
            raise ConfigurationError(f"vc_priority must list distinct virtual channels 0..{IDLE_VCID - 1} "
                                     f"({IDLE_VCID} carries idle frames), got {list(self.vc_priority)}")
        for name in ("vc_housekeeping", "vc_events", "vc_detections", "vc_images"):
            if getattr(self, name) not in self.vc_priority:
                raise ConfigurationError(
                    f"{name} = {getattr(self, name)} is not among vc_priority {list(self.vc_priority)}")


def frame_layout(link: LinkConfig) -> FrameLayout:
    return FrameLayout(link.frame_length, link.ocf, link.fecf)


def build_channel_coder(link: LinkConfig) -> ChannelCoder:
    """The CADU coder both ends build from the same settings (flight encodes, ground decodes)."""
    codec = None
    if link.reed_solomon:
        from .reed_solomon import ReedSolomonCodec  # loads the RS kernel only where the link is coded

        depth = link.interleave_depth
        codec = ReedSolomonCodec(depth, virtual_fill=RS_DATA_SYMBOLS - link.frame_length // depth)
    return ChannelCoder(link.frame_length, link.randomize, codec)

