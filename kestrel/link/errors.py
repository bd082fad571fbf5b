"""The link's exception tree: one base, a few specific kinds.

Each error says what was expected and what came, so a counter name and a
log line are enough to know what the radio delivered.
"""
from ..settings import ConfigurationError  # noqa: F401 - one class for a refused configuration


class LinkError(Exception):
    """Base of every error raised while building or parsing link data."""


class TruncatedError(LinkError):
    """Fewer bytes arrived than the format needs."""

    def __init__(self, what: str, expected: int, actual: int):
        super().__init__(f"{what}: expected {expected} bytes, got {actual}")
        self.expected = expected
        self.actual = actual


class ChecksumMismatch(LinkError):
    """A CRC did not match the data it protects."""

    def __init__(self, what: str, expected: int, actual: int):
        super().__init__(f"{what}: CRC expected 0x{expected:04X}, computed 0x{actual:04X}")
        self.expected = expected
        self.actual = actual


class MalformedError(LinkError):
    """A field holds a value the format or our configuration does not allow."""

