"""CCSDS Unsegmented time Code (CUC), CCSDS 301.0-B-4 section 3.2.

A CUC T-field counts TAI seconds (coarse octets) and binary fractions of a
second (fine octets) from an epoch: the CCSDS epoch 1958-01-01 TAI (time code
ID 1) or an agency-defined one (ID 2). Onboard clocks and the ground speak UTC
or POSIX time, which skip leap seconds, so converting needs the TAI-UTC table.
Times are held as integer ticks of 2**-(8*fine_octets) s: exact, no float drift.
"""
from __future__ import annotations

import bisect
import datetime as _dt
from dataclasses import dataclass
from fractions import Fraction

import construct as cs

from ..settings import Settings, setting
from .errors import ConfigurationError, MalformedError

# TAI-UTC (s) from each UTC date on (IERS Bulletin C). Before 1972 the offset
# was not a whole number of seconds; we refuse those instants instead of guessing.
_LEAP_TABLE = (
    ((1972, 1, 1), 10), ((1972, 7, 1), 11), ((1973, 1, 1), 12), ((1974, 1, 1), 13),
    ((1975, 1, 1), 14), ((1976, 1, 1), 15), ((1977, 1, 1), 16), ((1978, 1, 1), 17),
    ((1979, 1, 1), 18), ((1980, 1, 1), 19), ((1981, 7, 1), 20), ((1982, 7, 1), 21),
    ((1983, 7, 1), 22), ((1985, 7, 1), 23), ((1988, 1, 1), 24), ((1990, 1, 1), 25),
    ((1991, 1, 1), 26), ((1992, 7, 1), 27), ((1993, 7, 1), 28), ((1994, 7, 1), 29),
    ((1996, 1, 1), 30), ((1997, 7, 1), 31), ((1999, 1, 1), 32), ((2006, 1, 1), 33),
    ((2009, 1, 1), 34), ((2012, 7, 1), 35), ((2015, 7, 1), 36), ((2017, 1, 1), 37),
)
_UNIX_EPOCH = _dt.datetime(1970, 1, 1)
_LEAP_UNIX = tuple(int((_dt.datetime(*d) - _UNIX_EPOCH).total_seconds()) for d, _ in _LEAP_TABLE)
_LEAP_OFFSET = tuple(o for _, o in _LEAP_TABLE)
# The same steps expressed on the TAI time line (TAI-as-calendar seconds since 1970).
_LEAP_TAI = tuple(u + o for u, o in zip(_LEAP_UNIX, _LEAP_OFFSET))

CCSDS_EPOCH = "1958-01-01T00:00:00"


def tai_minus_utc(unix_seconds: float) -> int:
    """TAI-UTC in seconds at a POSIX (UTC) instant, 1972 onwards."""
    i = bisect.bisect_right(_LEAP_UNIX, unix_seconds) - 1
    if i < 0:
        raise ValueError("UTC before 1972-01-01 has no integral TAI-UTC offset")
    return _LEAP_OFFSET[i]


def _tai_minus_utc_on_tai_line(tai_calendar_seconds: Fraction) -> int:
    i = bisect.bisect_right(_LEAP_TAI, tai_calendar_seconds) - 1
    if i < 0:
        raise ValueError("TAI before 1972-01-01T00:00:10 has no integral TAI-UTC offset")
    return _LEAP_OFFSET[i]


@dataclass(frozen=True)
class CucConfig(Settings):
    """Layout of the CUC fields we send; flight and ground share it."""

    coarse_octets: int = setting(4, "octets of whole seconds", low=1, high=7)
    fine_octets: int = setting(2, "octets of binary fraction of a second", low=0, high=10)
    epoch: str = setting(CCSDS_EPOCH, "epoch as a TAI calendar instant, ISO 8601; 1958-01-01T00:00:00 is the CCSDS epoch")
    explicit_pfield: bool = setting(False, "send the P-field before each T-field")
    mission_end: str = setting("2045-01-01T00:00:00", "last instant (UTC, ISO 8601) the mission stamps; "
                               "the coarse octets must count the seconds from the epoch to it")

    def check(self) -> None:
        epoch = _iso_instant(self.epoch, "epoch")
        end = _iso_instant(self.mission_end, "mission_end")
        if end <= epoch:
            raise ConfigurationError(f"CUC mission_end {self.mission_end} must come after the epoch {self.epoch}")
        # TAI runs ahead of UTC by under a minute for centuries yet: a margin, not a table look-up.
        span = (end - epoch).total_seconds() + 60
        capacity = 1 << (8 * self.coarse_octets)
        if span >= capacity:
            raise ConfigurationError(
                f"CUC coarse_octets {self.coarse_octets} counts {capacity} s, fewer than the {span:.0f} s from the "
                f"epoch {self.epoch} to mission_end {self.mission_end}: use more coarse octets or a later epoch")


def _iso_instant(text: str, name: str) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(text).replace(tzinfo=None)
    except ValueError:
        raise ConfigurationError(f"CUC {name} {text!r} is not an ISO 8601 instant") from None


# P-field (301.0-B-4 3.2.2): first octet, and a second one when the T-field
# needs more than 4 coarse or 3 fine octets.
CUC_PFIELD_FIRST = cs.BitStruct(
    "extension" / cs.Flag,
    "time_code_id" / cs.BitsInteger(3),
    "coarse_minus_one" / cs.BitsInteger(2),
    "fine" / cs.BitsInteger(2),
)
CUC_PFIELD_SECOND = cs.BitStruct(
    "extension" / cs.Flag,
    "extra_coarse" / cs.BitsInteger(2),
    "extra_fine" / cs.BitsInteger(3),
    "reserved" / cs.BitsInteger(2),
)


class CucCodec:
    """Builds and reads CUC T-fields (and P-fields) for one configuration."""

    def __init__(self, config: CucConfig = CucConfig()):
        self.config = config
        self.ticks_per_second = 1 << (8 * config.fine_octets)
        self.tfield_length = config.coarse_octets + config.fine_octets
        epoch = _dt.datetime.fromisoformat(config.epoch).replace(tzinfo=None)
        # Epoch on the TAI calendar line, seconds since 1970-01-01 (TAI calendar).
        self._epoch_tai = Fraction(int((epoch - _UNIX_EPOCH).total_seconds() * 1_000_000), 1_000_000)
        self.time_code_id = 1 if epoch == _dt.datetime(1958, 1, 1) else 2
        self.tfield = cs.BytesInteger(self.tfield_length)
        self.pfield = self._build_pfield()
        self.length = self.tfield_length + len(self.pfield)

    def _build_pfield(self) -> bytes:
        c, f = self.config.coarse_octets, self.config.fine_octets
        if not self.config.explicit_pfield:
            return b""
        extended = c > 4 or f > 3
        first = CUC_PFIELD_FIRST.build(dict(extension=extended, time_code_id=self.time_code_id,
                                            coarse_minus_one=min(c, 4) - 1, fine=min(f, 3)))
        if not extended:
            return first
        return first + CUC_PFIELD_SECOND.build(dict(extension=False, extra_coarse=c - min(c, 4),
                                                    extra_fine=f - min(f, 3), reserved=0))

    # --- ticks <-> bytes -------------------------------------------------
    def encode(self, ticks: int) -> bytes:
        if not 0 <= ticks < 1 << (8 * self.tfield_length):
            raise ValueError(f"CUC time {ticks} ticks does not fit {self.tfield_length} octets")
        return self.pfield + self.tfield.build(ticks)

    def decode(self, data: bytes) -> int:
        if len(data) < self.length:
            raise MalformedError(f"CUC field: expected {self.length} bytes, got {len(data)}")
        if self.pfield and bytes(data[: len(self.pfield)]) != self.pfield:
            raise MalformedError(f"CUC P-field {bytes(data[:len(self.pfield)]).hex()} does not match configured {self.pfield.hex()}")
        return self.tfield.parse(bytes(data[len(self.pfield): self.length]))

    # --- ticks <-> UTC -------------------------------------------------------
    def from_unix(self, unix_seconds: float | Fraction) -> int:
        """Ticks for a POSIX instant (UTC, leap seconds not counted), rounded to nearest tick."""
        unix = Fraction(unix_seconds)
        tai = unix + tai_minus_utc(float(unix))
        return round((tai - self._epoch_tai) * self.ticks_per_second)

    def to_unix_exact(self, ticks: int) -> Fraction:
        tai = self._epoch_tai + Fraction(ticks, self.ticks_per_second)
        return tai - _tai_minus_utc_on_tai_line(tai)

    def to_unix(self, ticks: int) -> float:
        return float(self.to_unix_exact(ticks))

    def from_utc(self, when: _dt.datetime) -> int:
        if when.tzinfo is not None:
            when = when.astimezone(_dt.timezone.utc).replace(tzinfo=None)
        delta = when - _UNIX_EPOCH
        micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
        return self.from_unix(Fraction(micros, 1_000_000))

    def to_utc(self, ticks: int) -> _dt.datetime:
        unix = self.to_unix_exact(ticks)
        micros = round(unix * 1_000_000)
        return (_UNIX_EPOCH + _dt.timedelta(microseconds=micros)).replace(tzinfo=_dt.timezone.utc)
