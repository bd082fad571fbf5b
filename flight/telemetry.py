"""Stamps and numbers telemetry packets: per-APID sequence counts, PUS message type counters, CUC time.

A stamp the CUC field cannot hold (a clock before the epoch or before 1972,
as on a board that booted without its real-time clock, or past what the
coarse octets count) does not stop the packet: it is stamped with the
field's nearest limit, flagged in the PUS time reference status, counted,
and described in `time_error` until the clock is back in range.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import NamedTuple

from kestrel.link.spacepacket import MAX_SEQUENCE_COUNT, PusTm
from kestrel.link.timecode import CucCodec
from kestrel.products import TIME_STATUS_OUT_OF_RANGE, TIME_STATUS_VALID


class Stamp(NamedTuple):
    """A packet time: CUC ticks that fit the field, and whether they are the clock's or a limit."""

    ticks: int
    status: int = TIME_STATUS_VALID


class TelemetryPacketFactory:
    """`sequence_count(apid)`: the count the next packet of an APID carries; the store's, so that counts
    continue across restarts (None: counted here, from 0)."""

    def __init__(self, cuc: CucCodec, destination_id: int, wallclock, sequence_count=None):
        self.cuc = cuc
        self.destination_id = destination_id
        self._wallclock = wallclock
        self._sequence_count = sequence_count or self._own_count
        self._sequence = defaultdict(int)
        self._message_counter = defaultdict(int)
        self.max_ticks = (1 << (8 * cuc.tfield_length)) - 1
        self.last_unix = 0.0                 # the clock's latest reading, for the store's time index
        self.time_errors = 0                 # stamps out of range, each sent with the field's limit
        self.time_error: str | None = None   # what was wrong with the latest stamp; None once it was fine

    # --- time ---------------------------------------------------------------
    def now(self) -> Stamp:
        """The wall clock as a stamp; out of range, the nearest limit of the field, flagged."""
        unix = self._wallclock()
        self.last_unix = unix if math.isfinite(unix) else 0.0
        try:
            ticks = self.cuc.from_unix(unix)
        except (ValueError, OverflowError) as exc:   # before 1972 (no TAI-UTC offset), NaN, inf
            return self._out_of_range(self.max_ticks if unix == math.inf else 0, f"wall clock {unix!r}: {exc}")
        return self.stamp(ticks, f"wall clock {unix!r}")

    def stamp(self, ticks: int, what: str = "time") -> Stamp:
        """`ticks` as a stamp: clamped to the field and flagged when they do not fit it."""
        if ticks < 0:
            return self._out_of_range(0, f"{what} is {-ticks / self.cuc.ticks_per_second:.0f} s before the CUC "
                                         f"epoch {self.cuc.config.epoch}")
        if ticks > self.max_ticks:
            return self._out_of_range(self.max_ticks, f"{what} is past the last instant {self.cuc.tfield_length} "
                                                      f"CUC octets count")
        self.time_error = None
        return Stamp(ticks)

    def _out_of_range(self, limit: int, why: str) -> Stamp:
        self.time_errors += 1
        self.time_error = f"{why}; stamped with the CUC field's {'first' if limit == 0 else 'last'} instant"
        return Stamp(limit, TIME_STATUS_OUT_OF_RANGE)

    def encode(self, stamp: Stamp) -> bytes:
        """The CUC field (P-field included where configured) of a stamp."""
        return self.cuc.encode(stamp.ticks)

    # --- packets --------------------------------------------------------------
    def _own_count(self, apid: int) -> int:
        sequence = self._sequence[apid]
        self._sequence[apid] = (sequence + 1) & MAX_SEQUENCE_COUNT
        return sequence

    def make(self, apid: int, service: int, subtype: int, data: bytes, stamp: Stamp | None = None) -> bytes:
        if stamp is None:
            stamp = self.now()
        sequence = self._sequence_count(apid)
        counter = self._message_counter[(apid, service)]
        self._message_counter[(apid, service)] = (counter + 1) & 0xFFFF
        return PusTm(apid=apid, service=service, subtype=subtype, data=data,
                     time=self.encode(stamp), sequence_count=sequence, message_type_counter=counter,
                     destination_id=self.destination_id, time_reference_status=stamp.status).pack()
