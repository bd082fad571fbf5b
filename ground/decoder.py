"""The ground decoder: bytes from a radio or a recording in, products out.

    bytes -> frame sync (ASM, derandomize, RS, FECF) -> spacecraft check
      -> virtual-channel reassembly -> PUS TM check -> product handlers -> archive

It never raises on what it is fed: every rejection is a counter.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

from flight import products
from flight.downlink import build_channel_coder, frame_layout
from flight.link.errors import ChecksumMismatch, LinkError
from flight.link.spacepacket import IDLE_APID, PRIMARY_HEADER, PusTm
from flight.link.timecode import CucCodec

from .reassembly import VirtualChannelReassembler
from .sync import FrameSynchronizer

log = logging.getLogger(__name__)


@dataclass
class PacketCounters:
    packets: int = 0
    idle_packets: int = 0
    packet_crc_errors: int = 0
    packets_malformed: int = 0
    packets_unknown: int = 0
    sequence_gaps: int = 0
    detection_reports: int = 0
    detections: int = 0
    housekeeping_reports: int = 0
    events: int = 0
    frames_foreign: int = 0


@dataclass
class GroundSummary:
    sync: dict = field(default_factory=dict)
    virtual_channels: dict = field(default_factory=dict)
    packets: dict = field(default_factory=dict)

    def lines(self) -> list[str]:
        s, p = self.sync, self.packets
        lost = sum(v["frames_lost"] for v in self.virtual_channels.values())
        plost = sum(v["packets_lost"] for v in self.virtual_channels.values())
        return [
            f"bytes read {s['bytes_read']}, in good frames {s['bytes_in_frames']}, skipped {s['bytes_skipped']}",
            f"frames good {s['frames_good']}, bad {s['frames_bad']}, lost in gaps {lost}, foreign {p['frames_foreign']}",
            f"packets {p['packets']} (idle {p['idle_packets']}), CRC errors {p['packet_crc_errors']}, "
            f"malformed {p['packets_malformed']}, partial dropped {plost}, sequence gaps {p['sequence_gaps']}",
            f"detection reports {p['detection_reports']}, detections {p['detections']}, "
            f"housekeeping {p['housekeeping_reports']}, events {p['events']}",
        ]


class GroundDecoder:
    def __init__(self, config, archive, wallclock=time.time):
        self.config = config
        self.archive = archive
        self._wallclock = wallclock
        link = config.link
        self.cuc = CucCodec(link.time)
        self.sync = FrameSynchronizer(frame_layout(link), build_channel_coder(link))
        self.channels: dict[int, VirtualChannelReassembler] = {}
        self.counters = PacketCounters()
        self._last_sequence: dict[int, int] = {}

    def feed(self, chunk: bytes) -> None:
        received_at = self._wallclock()
        for frame in self.sync.feed(chunk):
            if frame.spacecraft_id != self.config.link.spacecraft_id:
                self.counters.frames_foreign += 1
                continue
            channel = self.channels.get(frame.virtual_channel_id)
            if channel is None:
                channel = self.channels[frame.virtual_channel_id] = VirtualChannelReassembler(frame.virtual_channel_id)
            for packet in channel.feed(frame):
                self._packet(packet, received_at)

    def finish(self) -> GroundSummary:
        self.sync.finish()
        self.archive.commit()
        return self.summary()

    def summary(self) -> GroundSummary:
        return GroundSummary(sync=asdict(self.sync.counters),
                             virtual_channels={v: asdict(c.counters) for v, c in self.channels.items()},
                             packets=asdict(self.counters))

    def _packet(self, raw: bytes, received_at: float) -> None:
        c = self.counters
        c.packets += 1
        header = PRIMARY_HEADER.parse(raw)
        if header.apid == IDLE_APID:
            c.idle_packets += 1
            return
        last = self._last_sequence.get(header.apid)
        if last is not None and header.sequence_count != (last + 1) & 0x3FFF:
            c.sequence_gaps += 1
        self._last_sequence[header.apid] = header.sequence_count
        try:
            tm = PusTm.unpack(raw, self.cuc.length)
        except ChecksumMismatch as exc:
            c.packet_crc_errors += 1
            log.debug("APID %d: %s", header.apid, exc)
            return
        except LinkError as exc:
            c.packets_malformed += 1
            log.debug("APID %d: %s", header.apid, exc)
            return
        self.archive.packet(received_at, tm.apid, tm.service, tm.subtype, tm.sequence_count, len(raw))
        try:
            self._product(tm, received_at)
        except Exception as exc:  # noqa: BLE001 - no source data, however hostile, may stop the ground
            c.packets_malformed += 1
            log.warning("APID %d service %d,%d: undecodable source data: %s", tm.apid, tm.service, tm.subtype, exc)

    def _product(self, tm: PusTm, received_at: float) -> None:
        c = self.counters
        packet_time = self.cuc.to_unix(self.cuc.decode(tm.time))
        key = (tm.apid, tm.service, tm.subtype)
        if key == (products.APID_DETECTIONS, products.SERVICE_DETECTIONS, products.SUBTYPE_DETECTION_REPORT):
            report = products.DetectionReport.unpack(tm.data, self.cuc.length)
            frame_time = self.cuc.to_unix(self.cuc.decode(report.frame_time))
            self.archive.detections(received_at, report.frame_index, frame_time, report.detections)
            c.detection_reports += 1
            c.detections += len(report.detections)
        elif key == (products.APID_HOUSEKEEPING, products.SERVICE_HOUSEKEEPING, products.SUBTYPE_HK_REPORT):
            values = products.HOUSEKEEPING_REPORT.parse(tm.data)
            self.archive.housekeeping(received_at, packet_time, tm.sequence_count,
                                      {n: values[n] for n in products.HOUSEKEEPING_FIELDS})
            c.housekeeping_reports += 1
        elif tm.apid == products.APID_EVENTS and tm.service == products.SERVICE_EVENTS:
            event = products.EVENT_REPORT.parse(tm.data)
            self.archive.event(received_at, packet_time, tm.subtype, event.event_id, event.text)
            c.events += 1
        else:
            c.packets_unknown += 1
