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
    line_lead_cadus: float = setting(0.5, "CADUs the writer may run ahead of the line (bounds OS buffering, so "
                                     "priority holds: an alert waits behind at most this much more than the CADU "
                                     "on the line; too little and the line idles when the writer wakes late: "
                                     "0.5 is 11 ms at 115200 baud, twice Python's thread switch interval)",
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



# --- the uplink ---------------------------------------------------------------------------------------

UPLINK_MODES = ("cltu", "bare_tc")
SDLS_MODES = ("authenticated_encryption", "authentication")


@dataclass(frozen=True)
class SecurityAssociationConfig(Settings):
    spi: int = setting(1, "security parameter index (355.0-B-2; 0 and 65535 are reserved)", low=1, high=0xFFFE)
    vcid: int = setting(0, "the TC virtual channel this SA protects", low=0, high=0x3F)
    mode: str = setting("authenticated_encryption", "AES-256-GCM authenticated encryption, or authentication "
                        "only (the data stays clear, the MAC covers it)", choices=SDLS_MODES)
    key_file: str = setting("", "file holding the 32-octet key (raw or 64 hex digits), mode 600, owned by "
                            "the program's user; never in the repository")


@dataclass(frozen=True)
class UplinkConfig(Settings):
    mode: str = setting("cltu", "what the radio port's receive direction carries: cltu (CLTUs of TC frames, "
                        "with COP-1 and SDLS) or bare_tc (PUS-C TC packets back to back: a bench mode with no "
                        "frames, no COP-1 and no security)", choices=UPLINK_MODES)
    command_apid: int = setting(50, "the APID telecommands are addressed to, and their reports come from",
                                low=0, high=0x7FE)
    virtual_channels: tuple[int, ...] = setting((0,), "TC virtual channels in use; a frame on another is refused",
                                                low=0, high=0x3F)
    segment_header: bool = setting(False, "AD and BD frames carry a segment header (unsegmented data only)")
    randomize: bool = setting(True, "CLTUs carry the frame through the TC randomizer (231.0-B)")
    farm_window: int = setting(10, "FARM-1 sliding window W (even); FOP-1's window is at most W/2", low=2, high=254)
    fop_window: int = setting(5, "FOP-1 window K: AD frames outstanding at most", low=1, high=127)
    fop_timer_s: float = setting(2.0, "FOP-1 timer T1: retransmit when no CLCW acknowledged within it",
                                 above=0, high=3600)
    fop_transmission_limit: int = setting(3, "FOP-1: transmissions of a frame before the FOP alerts",
                                          low=1, high=255)
    control_frames_per_s: float = setting(10.0, "clear control frames (BC) accepted per second and virtual "
                                          "channel; more are refused and counted", above=0, high=10000)
    counter_dir: str = setting("", "flight: the directory of the SDLS high-water marks (sa-SPI.seq), required when "
                               "SAs are configured; the ground keeps the last IV it sent in its --out directory, sdls/")
    key_dir: str = setting("", "flight: the directory of the keys rekey_sa may switch an SA to (files key-N, "
                           "mode 600); empty: key rotation by command is refused")
    replay_window: int = setting(1 << 20, "SDLS: a sequence number this far beyond the last accepted is still "
                                 "taken (frames lost in between)", low=1, high=1 << 62)
    security_associations: tuple[SecurityAssociationConfig, ...] = setting(
        (), "SDLS security associations ([[uplink.security_associations]] tables); none: the uplink is "
        "unauthenticated (the bench default), said in an event at start")

    def check(self) -> None:
        if self.farm_window % 2:
            raise ConfigurationError(f"farm_window must be even, got {self.farm_window}")
        if self.fop_window > self.farm_window // 2:
            raise ConfigurationError(f"fop_window {self.fop_window} exceeds farm_window/2 = "
                                     f"{self.farm_window // 2}: a lost frame would lock the FARM out")
        if not self.virtual_channels or len(set(self.virtual_channels)) != len(self.virtual_channels):
            raise ConfigurationError(f"virtual_channels must list distinct channels, got {list(self.virtual_channels)}")
        spis = [sa.spi for sa in self.security_associations]
        if len(set(spis)) != len(spis):
            raise ConfigurationError(f"an SPI is configured twice: {spis}")
        for sa in self.security_associations:
            if sa.vcid not in self.virtual_channels:
                raise ConfigurationError(f"SA {sa.spi} protects virtual channel {sa.vcid}, which is not in "
                                         f"virtual_channels {list(self.virtual_channels)}")
            if not sa.key_file:
                raise ConfigurationError(f"SA {sa.spi} has no key_file")
        if self.security_associations and not self.counter_dir:
            raise ConfigurationError("security associations need counter_dir (their sequence counters)")

    @property
    def command_vcid(self) -> int:
        """The virtual channel commands go out on: the first in use."""
        return self.virtual_channels[0]


def tc_frame_layout(link: LinkConfig, uplink: UplinkConfig):
    from .tcframe import TcFrameLayout

    return TcFrameLayout(link.spacecraft_id, frozenset(uplink.virtual_channels), uplink.segment_header)
