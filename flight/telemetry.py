"""Stamps and numbers telemetry packets: per-APID sequence counts, PUS message type counters, CUC time."""
from __future__ import annotations

from collections import defaultdict

from kestrel.link.spacepacket import MAX_SEQUENCE_COUNT, PusTm
from kestrel.link.timecode import CucCodec


class TelemetryPacketFactory:
    def __init__(self, cuc: CucCodec, destination_id: int, wallclock):
        self.cuc = cuc
        self.destination_id = destination_id
        self._wallclock = wallclock
        self._sequence = defaultdict(int)
        self._message_counter = defaultdict(int)

    def now_ticks(self) -> int:
        return self.cuc.from_unix(self._wallclock())

    def make(self, apid: int, service: int, subtype: int, data: bytes, time_ticks: int | None = None) -> bytes:
        ticks = self.now_ticks() if time_ticks is None else time_ticks
        sequence = self._sequence[apid]
        self._sequence[apid] = (sequence + 1) & MAX_SEQUENCE_COUNT
        counter = self._message_counter[(apid, service)]
        self._message_counter[(apid, service)] = (counter + 1) & 0xFFFF
        return PusTm(apid=apid, service=service, subtype=subtype, data=data,
                     time=self.cuc.encode(ticks), sequence_count=sequence,
                     message_type_counter=counter, destination_id=self.destination_id).pack()
