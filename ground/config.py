"""The ground station's sections of the configuration file."""
from __future__ import annotations

from dataclasses import dataclass

from kestrel.link.config import LinkConfig, UplinkConfig
from kestrel.link.port import ReconnectConfig
from kestrel.settings import ConfigurationError, Settings, setting


@dataclass(frozen=True)
class GroundConfig(Settings):
    read_size: int = setting(4096, "octets asked of the port or file per read", low=1, high=1 << 24)
    read_timeout_s: float = setting(0.1, "longest a port read waits for its octets", above=0, high=60)
    idle_exit_s: float = setting(0.0, "listen: stop after this many seconds without a byte (0: never)",
                                 low=0, high=86400 * 365)
    flush_on_open: bool = setting(False, "listen: discard what the port holds when it is opened")
    reconnect: ReconnectConfig = setting(ReconnectConfig(max_s=10.0), "listen --reconnect: reopening a lost "
                                         "network source")
    archive_busy_timeout_s: float = setting(5.0, "longest wait for an archive another process has locked",
                                            above=0, high=3600)
    sync_search_errors: int = setting(1, "ASM bit errors accepted while searching", low=0, high=8)
    sync_lock_errors: int = setting(3, "ASM bit errors accepted in lock (at least sync_search_errors)", low=0, high=8)
    sync_flywheel: int = setting(3, "missing markers bridged in lock before searching again", low=0, high=64)
    sync_slip_window_bits: int = setting(16, "a marker this many bits from the expected one is a slip, "
                                         "re-aligned at once", low=0, high=64)
    sync_allow_inverted: bool = setting(True, "accept an inverted ASM (BPSK phase flip) and invert the data back")

    def check(self) -> None:
        if self.sync_lock_errors < self.sync_search_errors:
            raise ConfigurationError(f"sync_lock_errors ({self.sync_lock_errors}) must be at least "
                                     f"sync_search_errors ({self.sync_search_errors})")


@dataclass(frozen=True)
class GroundProgramConfig(Settings):
    """The sections kestrel-ground reads."""

    link: LinkConfig = setting(LinkConfig(), "the downlink, shared by flight and ground")
    uplink: UplinkConfig = setting(UplinkConfig(), "the uplink: CLTUs, TC frames, COP-1 and SDLS, shared by flight "
                                   "and ground")
    ground: GroundConfig = setting(GroundConfig(), "the ground decoder")
