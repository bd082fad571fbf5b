"""Opening the radio port: any pyserial URL (a device, a pty, socket://, rfc2217://, loop://)."""
from __future__ import annotations

from dataclasses import dataclass

import serial

from ..settings import ConfigurationError, Settings, setting
from .errors import LinkError


@dataclass(frozen=True)
class ReconnectConfig(Settings):
    """How a program reopens a radio port it lost: waits that double from initial_s up to max_s."""

    initial_s: float = setting(0.5, "first wait before reopening a lost port", above=0, high=60)
    max_s: float = setting(30.0, "longest wait between attempts to reopen it", above=0, high=3600)

    def check(self) -> None:
        if self.max_s < self.initial_s:
            raise ConfigurationError(f"reconnect max_s ({self.max_s:g}) must be at least initial_s ({self.initial_s:g})")


class PortError(LinkError):
    """The radio port could not be opened or used."""


def open_port(url: str, baud: int = 115200, timeout: float = 0.1, write_timeout: float | None = None):
    if not url:
        raise PortError("no radio port given (use --port URL or flight.port in the config)")
    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=timeout, write_timeout=write_timeout)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise PortError(f"cannot open port {url!r}: {exc}") from None
