"""CUC time codes (CCSDS 301.0-B-4): fields, P-field, exact UTC conversion across leap seconds."""
import datetime as dt
from fractions import Fraction

import pytest
from hypothesis import given, strategies as st

from kestrel.link.errors import ConfigurationError, MalformedError
from kestrel.link.timecode import CUC_PFIELD_FIRST, CucCodec, CucConfig, tai_minus_utc

UTC = dt.timezone.utc


def test_tai_utc_offsets_around_leap_seconds():
    before = dt.datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC).timestamp()
    after = dt.datetime(2017, 1, 1, tzinfo=UTC).timestamp()
    assert tai_minus_utc(before) == 36
    assert tai_minus_utc(after) == 37
    assert tai_minus_utc(dt.datetime(1972, 1, 1, tzinfo=UTC).timestamp()) == 10


def test_known_instant_from_ccsds_epoch():
    codec = CucCodec(CucConfig(coarse_octets=4, fine_octets=0))
    # 1972-01-01T00:00:00 UTC is 1972-01-01T00:00:10 TAI: 5113 days and 10 s after 1958-01-01 TAI.
    ticks = codec.from_utc(dt.datetime(1972, 1, 1, tzinfo=UTC))
    assert ticks == 5113 * 86400 + 10
    # A leap second inserted at the end of 2016 adds one TAI second to the span.
    a = codec.from_utc(dt.datetime(2016, 12, 31, 23, 59, 59, tzinfo=UTC))
    b = codec.from_utc(dt.datetime(2017, 1, 1, 0, 0, 0, tzinfo=UTC))
    assert b - a == 2


@given(st.datetimes(min_value=dt.datetime(1972, 1, 1), max_value=dt.datetime(2100, 1, 1)),
       st.integers(1, 7), st.integers(3, 10))
def test_utc_round_trip_is_exact_to_the_microsecond(when, coarse, fine):
    # Four coarse octets roll over in 2094; five reach far beyond the strategy.
    codec = CucCodec(CucConfig(coarse_octets=max(coarse, 5), fine_octets=fine))
    when = when.replace(tzinfo=UTC)
    ticks = codec.from_utc(when)
    assert codec.to_utc(ticks) == when
    assert codec.decode(codec.encode(ticks)) == ticks


def test_two_fine_octets_resolve_to_a_2_16_fraction():
    codec = CucCodec(CucConfig(fine_octets=2))
    ticks = codec.from_unix(Fraction(1_700_000_000) + Fraction(1, 4))
    assert ticks & 0xFFFF == 0x4000
    assert codec.to_unix_exact(ticks) == Fraction(1_700_000_000) + Fraction(1, 4)


def test_pfield_declares_the_layout():
    short = CucCodec(CucConfig(coarse_octets=4, fine_octets=2, explicit_pfield=True))
    assert short.pfield == bytes([0b0_001_11_10])
    parsed = CUC_PFIELD_FIRST.parse(short.pfield)
    assert (parsed.time_code_id, parsed.coarse_minus_one + 1, parsed.fine) == (1, 4, 2)
    extended = CucCodec(CucConfig(coarse_octets=6, fine_octets=5, explicit_pfield=True))
    assert len(extended.pfield) == 2 and extended.pfield[0] & 0x80
    assert extended.pfield[1] == (2 << 5) | (2 << 2)
    agency = CucCodec(CucConfig(epoch="2000-01-01T00:00:00", explicit_pfield=True))
    assert CUC_PFIELD_FIRST.parse(agency.pfield).time_code_id == 2


def test_agency_epoch_shifts_ticks():
    ccsds = CucCodec(CucConfig(fine_octets=0))
    j2000 = CucCodec(CucConfig(fine_octets=0, epoch="2000-01-01T00:00:00"))
    when = dt.datetime(2026, 1, 1, tzinfo=UTC)
    days = (dt.date(2000, 1, 1) - dt.date(1958, 1, 1)).days
    assert ccsds.from_utc(when) - j2000.from_utc(when) == days * 86400


def test_bad_fields_and_configs():
    codec = CucCodec(CucConfig(explicit_pfield=True))
    with pytest.raises(MalformedError, match="P-field"):
        codec.decode(b"\x00" + bytes(6))
    with pytest.raises(MalformedError, match="expected 7"):
        codec.decode(b"\x2e")
    # One coarse octet counts 256 s: enough for a mission whose epoch is its own launch minute.
    short = CucConfig(coarse_octets=1, fine_octets=0, epoch="2030-01-01T00:00:00", mission_end="2030-01-01T00:03:00")
    with pytest.raises(ValueError, match="does not fit"):
        CucCodec(short).encode(256)
    with pytest.raises(ConfigurationError, match="coarse_octets 1 counts 256 s, fewer than the 3660 s"):
        CucConfig(coarse_octets=1, epoch="2030-01-01T00:00:00", mission_end="2030-01-01T01:00:00")
    with pytest.raises(ConfigurationError):
        CucConfig(coarse_octets=8)
    with pytest.raises(ConfigurationError):
        CucConfig(epoch="yesterday")
