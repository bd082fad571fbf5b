"""Opening the radio port: any pyserial URL (a device, a pty, socket://, rfc2217://, loop://)."""
from __future__ import annotations

import serial

from .errors import LinkError


class PortError(LinkError):
    """The radio port could not be opened or used."""


def open_port(url: str, baud: int = 115200, timeout: float = 0.1, write_timeout: float | None = None):
    if not url:
        raise PortError("no radio port given (use --port URL or flight.port in the config)")
    try:
        return serial.serial_for_url(url, baudrate=baud, timeout=timeout, write_timeout=write_timeout)
    except (serial.SerialException, ValueError, OSError) as exc:
        raise PortError(f"cannot open port {url!r}: {exc}") from None
