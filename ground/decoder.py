"""The ground decoder: bytes from a radio or a recording in, products out.

    bytes -> frame sync (ASM, derandomize, RS, FECF) -> spacecraft check
      -> virtual-channel reassembly -> PUS TM check -> product handlers -> archive

It never raises on what it is fed: every rejection is a counter. A failure
of the archive is not a rejection of telemetry: it propagates (ArchiveError).
Each chunk fed ends one archive transaction.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import construct as cs

from kestrel import products, services
from kestrel.link.config import build_channel_coder, frame_layout
from kestrel.link.errors import ChecksumMismatch, LinkError
from kestrel.link.spacepacket import IDLE_APID, MAX_SEQUENCE_COUNT, PusTm, packet_key
from kestrel.link.timecode import CucCodec
from kestrel.link.cop1 import Clcw
from kestrel.link.tmframe import IDLE_VCID

from .archive import CommandReport, PacketIdentity
from .reassembly import VirtualChannelReassembler
from .sync import FrameSynchronizer

log = logging.getLogger(__name__)


# (service, subtype) of the command process's replies that the archive keeps beside ST[01].
COMMAND_REPLIES = ((services.SERVICE_TEST, 2), (services.SERVICE_PARAMETERS, 2))


@dataclass
class PacketCounters:
    packets: int = 0
    idle_packets: int = 0
    packet_crc_errors: int = 0
    packets_malformed: int = 0
    packets_unknown: int = 0
    packets_duplicate: int = 0     # archived before (a repeated chunk, or a second decode of one capture)
    times_invalid: int = 0         # product times the flight marked out of range, or before 1972: stored as NULL
    sequence_gaps: int = 0
    detection_reports: int = 0
    detections: int = 0
    housekeeping_reports: int = 0
    uplink_housekeeping_reports: int = 0
    events: int = 0
    alerts: int = 0                # alert updates (opening, updating and closing ones)
    command_reports: int = 0       # ST[01] verification reports and the replies (17,2), (20,2)
    frames_foreign: int = 0
    frames_unknown_vc: int = 0     # frames of a virtual channel the link does not configure
    idle_frames: int = 0
    ocf_not_clcw: int = 0          # an OCF that is no CLCW (with a command following the CLCWs)


@dataclass
class GroundSummary:
    sync: dict = field(default_factory=dict)
    virtual_channels: dict = field(default_factory=dict)
    packets: dict = field(default_factory=dict)
    images: dict = field(default_factory=dict)
    interrupted: bool = False      # stopped (Ctrl-C) before the input ended
    error: str = ""                # why the decode stopped early, if it did

    def lines(self) -> list[str]:
        s, p = self.sync, self.packets
        lost = sum(v["frames_lost"] for v in self.virtual_channels.values())
        plost = sum(v["packets_lost"] for v in self.virtual_channels.values())
        return [
            f"bytes read {s['bytes_read']}, in good frames {s['bytes_in_frames']}, skipped {s['bytes_skipped']}",
            f"frames good {s['frames_good']}, bad {s['frames_bad']}, lost in gaps {lost}, foreign {p['frames_foreign']}, "
            f"unknown virtual channel {p['frames_unknown_vc']}, idle {p['idle_frames']}",
            f"Reed-Solomon symbols corrected {s['symbols_corrected']}, codewords uncorrectable "
            f"{s['codewords_uncorrectable']}, FECF failures {s['crc_failures']}, slips {s['slips']}, "
            f"inversions {s['inversions']}, locks {s['locks']}, locks lost {s['locks_lost']}",
            f"packets {p['packets']} (idle {p['idle_packets']}), CRC errors {p['packet_crc_errors']}, "
            f"malformed {p['packets_malformed']}, partial dropped {plost}, sequence gaps {p['sequence_gaps']}, "
            f"already archived {p['packets_duplicate']}",
            f"detection reports {p['detection_reports']}, detections {p['detections']}, "
            f"housekeeping {p['housekeeping_reports']}, events {p['events']}, alert updates {p['alerts']}",
        ] + ([f"images complete {self.images['images_complete']}, incomplete {self.images['images_incomplete']}, "
              f"corrupt {self.images['images_corrupt']}"] if self.images else [])


class GroundDecoder:
    """`images`: an ImageAssembler for image products, or None to count them as unknown. `handlers`: APID ->
    a callable given each checked PUS TM packet of that APID whole, instead of the product table (the
    command APID's verification reports, to whoever follows the command)."""

    def __init__(self, config, archive, wallclock=time.time, images=None, handlers=None):
        self.handlers = dict(handlers or {})
        link = config.link
        self.config = config
        self.archive = archive
        self._wallclock = wallclock
        self._spacecraft_id = link.spacecraft_id
        self.cuc = CucCodec(link.time)
        g = config.ground
        self.sync = FrameSynchronizer(frame_layout(link), build_channel_coder(link),
                                      search_errors=g.sync_search_errors, lock_errors=g.sync_lock_errors,
                                      flywheel=g.sync_flywheel, slip_window_bits=g.sync_slip_window_bits,
                                      allow_inverted=g.sync_allow_inverted)
        self.images = images
        # Only configured channels get a reassembler: a corrupted VC id that passed
        # the FECF must not grow the ground's state.
        self.channels: dict[int, VirtualChannelReassembler] = {
            v: VirtualChannelReassembler(v) for v in link.vc_priority}
        self.counters = PacketCounters()
        self._last_sequence: dict[int, int] = {}
        self.uplink_housekeeping: dict | None = None    # the latest uplink counters (HK structure 3)
        self.on_clcw = None             # called with each Clcw the TM frames' OCF carries (FOP-1 of `command`)

    def feed(self, chunk) -> None:
        self._frames(self.sync.feed(chunk), self._wallclock())
        self.archive.commit()

    def finish(self) -> GroundSummary:
        self._frames(self.sync.finish(), self._wallclock())
        if self.images is not None:
            self.images.finish(self._wallclock())
        self.archive.commit()
        return self.summary()

    def _frames(self, frames, received_at: float) -> None:
        c = self.counters
        channels = self.channels
        for frame in frames:
            if frame.spacecraft_id != self._spacecraft_id:
                c.frames_foreign += 1
                continue
            if frame.ocf is not None and self.on_clcw is not None:
                try:
                    clcw = Clcw.unpack(frame.ocf)
                except ValueError:
                    c.ocf_not_clcw += 1
                else:
                    self.on_clcw(clcw)
            channel = channels.get(frame.virtual_channel_id)
            if channel is None:
                if frame.virtual_channel_id == IDLE_VCID:
                    c.idle_frames += 1
                else:
                    c.frames_unknown_vc += 1
                continue
            for packet in channel.feed(frame):
                self._packet(packet, frame.virtual_channel_id, received_at)

    def summary(self) -> GroundSummary:
        return GroundSummary(sync=asdict(self.sync.counters),
                             virtual_channels={v: asdict(c.counters) for v, c in self.channels.items()},
                             packets=asdict(self.counters),
                             images=asdict(self.images.counters) if self.images is not None else {})

    def _packet(self, raw: bytes, vcid: int, received_at: float) -> None:
        c = self.counters
        c.packets += 1
        # The reassembler hands over whole packets: at least a primary header and one octet.
        apid, sequence_count = packet_key(raw)
        if apid == IDLE_APID:
            c.idle_packets += 1
            return
        last = self._last_sequence.get(apid)
        if last is not None and sequence_count != (last + 1) & MAX_SEQUENCE_COUNT:
            c.sequence_gaps += 1
        self._last_sequence[apid] = sequence_count
        try:
            tm = PusTm.unpack(raw, self.cuc.length)
        except ChecksumMismatch as exc:
            c.packet_crc_errors += 1
            log.debug("APID %d: %s", apid, exc)
            return
        except LinkError as exc:
            c.packets_malformed += 1
            log.debug("APID %d: %s", apid, exc)
            return
        identity = PacketIdentity(self._spacecraft_id, vcid, tm.apid, tm.sequence_count, bytes(tm.time),
                                  tm.message_type_counter)
        packet_id = self.archive.packet(received_at, identity, tm.time_reference_status, tm.service, tm.subtype,
                                        len(raw))
        if packet_id is None:
            c.packets_duplicate += 1
            return
        try:
            self._product(tm, packet_id, received_at)
        except (cs.ConstructError, LinkError, ValueError) as exc:
            # Hostile or damaged source data that passed the CRC: counted, and the ground carries on.
            c.packets_malformed += 1
            log.warning("APID %d service %d,%d: undecodable source data: %s", tm.apid, tm.service, tm.subtype, exc)

    def _product(self, tm: PusTm, packet_id: int, received_at: float) -> None:
        c = self.counters
        handler = self.handlers.get(tm.apid)
        if handler is not None:
            handler(tm)
            return
        key = (tm.apid, tm.service, tm.subtype)
        if key == (products.APID_DETECTIONS, products.SERVICE_DETECTIONS, products.SUBTYPE_DETECTION_REPORT):
            report = products.DetectionReport.unpack(tm.data, self.cuc.length)
            frame_time = self._unix_time(report.frame_time, tm.time_reference_status)
            self.archive.detections(packet_id, received_at, report.frame_index, frame_time, report.detections)
            c.detection_reports += 1
            c.detections += len(report.detections)
        elif (key == (products.APID_HOUSEKEEPING, products.SERVICE_HOUSEKEEPING, products.SUBTYPE_HK_REPORT)
              and tm.data[:2] == products.HK_STRUCTURE_UPLINK.to_bytes(2, "big")):
            values = products.UPLINK_HOUSEKEEPING.parse(tm.data)
            self.uplink_housekeeping = {n: values[n] for n in products.UPLINK_HOUSEKEEPING_FIELDS}
            self.archive.uplink_housekeeping(packet_id, received_at, self._packet_time(tm), tm.sequence_count,
                                             self.uplink_housekeeping)
            c.uplink_housekeeping_reports += 1
        elif key == (products.APID_HOUSEKEEPING, products.SERVICE_HOUSEKEEPING, products.SUBTYPE_HK_REPORT):
            values = products.HOUSEKEEPING_REPORT.parse(tm.data)
            self.archive.housekeeping(packet_id, received_at, self._packet_time(tm), tm.sequence_count,
                                      {n: values[n] for n in products.HOUSEKEEPING_FIELDS})
            c.housekeeping_reports += 1
        elif (tm.apid in products.ALERT_APIDS and tm.service == products.SERVICE_ALERTS
              and tm.subtype in (products.SUBTYPE_ALERT_UPDATE, products.SUBTYPE_ALERT_CLOSED)):
            alert = products.AlertUpdate.unpack(tm.data, self.cuc.length, tm.subtype)
            self.archive.alert(packet_id, received_at, self._unix_time(alert.frame_time, tm.time_reference_status),
                               self._unix_time(alert.first_time, tm.time_reference_status), alert)
            c.alerts += 1
        elif tm.apid == products.APID_EVENTS and tm.service == products.SERVICE_EVENTS:
            event = products.EVENT_REPORT.parse(tm.data)
            self.archive.event(packet_id, received_at, self._packet_time(tm), tm.subtype, event.event_id, event.text)
            c.events += 1
        elif tm.service == services.SERVICE_VERIFICATION or key[1:] in COMMAND_REPLIES:
            report = CommandReport.of(tm.service, tm.subtype, tm.data)
            self.archive.command_report(packet_id, received_at, self._packet_time(tm), tm.apid, tm.service,
                                        tm.subtype, report)
            c.command_reports += 1
        elif (tm.apid in products.IMAGE_APIDS and tm.service == products.SERVICE_IMAGES
              and self.images is not None):
            self.images.segment(tm.subtype, tm.data, received_at)
        else:
            c.packets_unknown += 1

    def _packet_time(self, tm: PusTm) -> float | None:
        return self._unix_time(tm.time, tm.time_reference_status)

    def _unix_time(self, field: bytes, status: int) -> float | None:
        """POSIX time of a CUC field; None when the flight said its clock was out of range, or the time
        precedes UTC's leap-second table (a board that booted without its real-time clock)."""
        if status != products.TIME_STATUS_VALID:
            self.counters.times_invalid += 1
            return None
        try:
            # Exact (Fraction) conversion: only for the products that store it, not per packet.
            return self.cuc.to_unix(self.cuc.decode(field))
        except ValueError:
            self.counters.times_invalid += 1
            return None
