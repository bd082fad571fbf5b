"""The link's exception tree: one base, a few specific kinds.

Each error says what was expected and what came, so a counter name and a
log line are enough to know what the radio delivered.
"""
import enum

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



class FrameRejected(LinkError):
    """The uplink refused what the radio delivered: the one exception that leaves the uplink path.

    `reason` is a `Rejection`; the receiver counts rejections by it (housekeeping) and carries on.
    """

    def __init__(self, reason: "Rejection", detail: str = ""):
        super().__init__(f"{reason.value}: {detail}" if detail else reason.value)
        self.reason = reason
        self.detail = detail


class Rejection(str, enum.Enum):
    """Every reason the uplink refuses a CLTU, a TC frame, its security or its packets (a housekeeping key)."""

    # CLTU (231.0-B)
    BCH_UNCORRECTABLE = "bch_uncorrectable"
    CLTU_TOO_LONG = "cltu_too_long"
    CLTU_UNTERMINATED = "cltu_unterminated"
    # TC transfer frame (232.0-B)
    FRAME_TRUNCATED = "frame_truncated"
    FRAME_LENGTH = "frame_length"
    FRAME_FILL = "frame_fill"
    VERSION = "version"
    SPARE = "spare"
    SPACECRAFT_ID = "spacecraft_id"
    VIRTUAL_CHANNEL = "virtual_channel"
    FECF = "fecf"
    FRAME_TYPE = "frame_type"                  # bypass 0 with control command 1 (no such type)
    SEGMENT = "segment"                        # a segment header that is not "unsegmented"
    # SDLS (355.0-B)
    CLEAR_ON_PROTECTED_VC = "clear_on_protected_vc"
    SDLS_TRUNCATED = "sdls_truncated"
    SPI_UNKNOWN = "spi_unknown"
    SPI_OTHER_VC = "spi_other_vc"
    SA_NOT_OPERATIONAL = "sa_not_operational"
    MAC = "mac"
    REPLAY = "replay"
    COUNTER_STORAGE = "counter_storage"
    # COP-1 (232.1-B)
    FARM_LOCKOUT = "farm_lockout"
    FARM_WAIT = "farm_wait"
    FARM_RETRANSMISSION = "farm_retransmission"  # N(S) in the positive window, not V(R): discarded
    FARM_NEGATIVE_WINDOW = "farm_negative_window"
    FARM_OUT_OF_WINDOW = "farm_out_of_window"    # neither window: lockout entered
    CONTROL_COMMAND = "control_command"
    CONTROL_RATE = "control_rate"              # clear control frames beyond the rate allowed
    # PUS-C TC packets in the frame
    PACKET = "packet"
    QUEUE_FULL = "queue_full"
