"""The flight executive: one fixed-rate loop from sensor to the store, and on to the downlink.

Each cycle reads a frame, runs the detector (the kernel releases the GIL, so
the downlink writer keeps the radio busy meanwhile), stores a detection
report and imagery, and every housekeeping period a housekeeping report.
Every product is committed to the store (one transaction a cycle) before it
is offered to the link; the scheduler decides what the next frame carries,
by class and budget, so what the link cannot carry waits in the store, or is
dropped by its class's stated rule, and is never a failed run. A bad frame or a failed
stage becomes an event and a counter; the loop carries on. So do a radio port
that is lost (the downlink reopens it; one event as the outage begins and one
as it ends) and a clock the CUC field cannot hold (packets carry the field's
limit, flagged; one event as it begins and one as it ends).
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import threading
import time
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np

from kestrel import products
from kestrel.link.errors import Rejection
from kestrel.link.sdls import associations_from_config, load_key, note_active_key, rotated_key_path
from kestrel.link.timecode import CucCodec

from . import imaging
from .alerts import AlertPublisher
from .classifier import FrameHistory, open_filter
from .commands import CommandHandler
from .detection import Detector
from .geolocation import Geolocator
from .modes import Cause, Mode, ModeMachine
from .parameters import ParameterStore, apply_parameters
from .rategroups import RateGroup, RateGroupDriver, TickSource, divisor_for
from .scheduler import DownlinkScheduler, QuicklookPlanner, packet_octets_per_second
from .sensor import FrameLimits, SensorError, open_sensor
from .store import ProductClass, ProductStore, StoreError
from .telemetry import Stamp, TelemetryPacketFactory
from .timecorrelation import TimeCorrelation
from .uplink import CommandReceiver, UplinkPath

log = logging.getLogger(__name__)


@dataclass
class ExecutiveCounters:
    frames_processed: int = 0
    frames_failed: int = 0
    loop_time_last_us: int = 0
    loop_time_max_us: int = 0
    detections_total: int = 0
    images_sent: int = 0
    errors: int = 0
    store_errors: int = 0


def class_channels(link) -> dict[ProductClass, int]:
    """The virtual channel each product class rides."""
    return {ProductClass.ALERT: link.vc_events, ProductClass.ALERT_UPDATE: link.vc_events,
            ProductClass.EVENT: link.vc_events,
            ProductClass.VERIFICATION: link.vc_events, ProductClass.DETECTIONS: link.vc_detections,
            ProductClass.HOUSEKEEPING: link.vc_housekeeping, ProductClass.CHIP: link.vc_images,
            ProductClass.QUICKLOOK: link.vc_images, ProductClass.BULK: link.vc_images}


class ExecutiveFiles:
    """Where the store and the parameters live; the ones the config leaves empty in a temporary directory."""

    def __init__(self, config):
        self._temporary = None
        self.store = config.store.path or self._temporary_path("store.sqlite")
        self.parameters = config.flight.parameters_path or self._temporary_path("parameters.json")

    def _temporary_path(self, name: str) -> str:
        if self._temporary is None:
            self._temporary = tempfile.TemporaryDirectory(prefix="kestrel-flight-")
            log.info("no path configured for the store or the parameters: kept in %s until the program ends",
                     self._temporary.name)
        return str(Path(self._temporary.name) / name)

    def cleanup(self) -> None:
        if self._temporary is not None:
            self._temporary.cleanup()


class Executive:
    """`reload_config()`: the configuration read again (for ST[08] reload_config), or None where there is none."""

    def __init__(self, config, downlink, stop: threading.Event, sensor=None,
                 clock=time.monotonic, wallclock=time.time, store: ProductStore | None = None, reload_config=None):
        self.files = ExecutiveFiles(config)
        # Events from other components (store drops, parameters, modes) are sent from the loop.
        self._pending_events: list[tuple[int, int, str]] = []
        self.parameters = ParameterStore(self.files.parameters, config=config, on_change=self._parameter_changed)
        if config.flight.parameters_path:      # a temporary file starts empty every time: nothing to say
            for problem in self.parameters.load_errors:
                self._pending_events.append((products.EVENT_MEDIUM, products.EVENT_PARAMETER, problem))
        # What the ground set by command outlives a restart: it overrides the file's values.
        self.config = config = apply_parameters(config, self.parameters.commanded())
        self._reload_config = reload_config
        self.downlink = downlink
        self.stop = stop
        self._clock = clock
        self._wallclock = wallclock
        self.time = TimeCorrelation(self.parameters, wallclock, clock, on_jump=self._clock_jumped)
        self.modes = ModeMachine(self._mode_changed)
        self.sensor = sensor if sensor is not None else open_sensor(
            config.sensor.source, FrameLimits(config.sensor.max_frame_pixels))
        self.detector = Detector(config.detection, self.sensor.shape,
                                 calibration_bad_pixels=self.sensor.calibration_bad_pixels)
        # The false-alarm filter's weights: a missing, corrupt or foreign file stops the start (ValueError).
        self._open_classifier(config)
        locate = (Geolocator(config.geolocation, self.sensor.shape).locate
                  if config.geolocation.configured else None)
        self.alerts = AlertPublisher(config.tracking, self.sensor.shape, locate)
        if store is None:
            store = ProductStore(replace(config.store, path=self.files.store), clock, self._store_event)
        self.store = store
        self.scheduler = DownlinkScheduler(store, class_channels(config.link), config.scheduler.budgets())
        # Quick-looks sized and timed to their share of the line: the finest binning that fits.
        self.quicklooks = QuicklookPlanner(self.sensor.shape, config.scheduler, config.imaging.segment_octets,
                                           period_s=config.imaging.quicklook_period_s or 1.0,
                                           min_binning=config.imaging.quicklook_binning)
        self._line_octets_per_s = packet_octets_per_second(config.link)
        self._quicklook_bits_per_pixel: float | None = None
        downlink.set_source(self.scheduler.next_packet, lambda: self.scheduler.next_packet(urgent_only=True))
        # make() reads the store's next count and put() commits it: one producer at a time.
        self._send_lock = threading.Lock()
        self.packets = TelemetryPacketFactory(CucCodec(config.link.time), config.link.destination_id, self.time.now,
                                              store.next_sequence_count)
        self.commands = CommandHandler(self, config.uplink.command_apid)
        self.uplink = self._uplink(config, downlink, clock)
        self.housekeeping_structures = {products.HK_STRUCTURE_FLIGHT: True}
        if self.uplink.path is not None:
            self.housekeeping_structures[products.HK_STRUCTURE_UPLINK] = True
        self._housekeeping_period_s = config.flight.housekeeping_period_s
        self.counters = ExecutiveCounters()
        self.heartbeat = 0              # one a cycle: the health monitor's proof that the loop moves
        self.driver: RateGroupDriver | None = None
        self._started = clock()
        self._next_product_id = 0
        self._next_quicklook = clock()
        self._next_store_error_event = clock()
        # Faults reported as events so far; a report refused by a full queue is tried again next cycle.
        self._outages_reported = 0
        self._reconnects_reported = 0
        self._clock_fault_reported = False

    def _uplink(self, config, downlink, clock) -> CommandReceiver:
        """The receive direction: CLTUs through frames, SDLS and FARM-1 (its CLCW in the TM frames' OCF), or
        the bench's bare TC packets."""
        uplink = config.uplink
        if uplink.mode == "bare_tc":
            self._pending_events.append((products.EVENT_MEDIUM, products.EVENT_UPLINK_SECURITY,
                                         "uplink in bench mode: bare TC packets, no frames, COP-1 or security"))
            return CommandReceiver(lambda: downlink.port, clock)
        self.associations, problems = associations_from_config(uplink)
        for problem in problems:
            log.error("uplink: %s", problem)
            self._pending_events.append((products.EVENT_HIGH, products.EVENT_UPLINK_SECURITY, problem))
        if not self.associations:
            self._pending_events.append((products.EVENT_MEDIUM, products.EVENT_UPLINK_SECURITY,
                                         "uplink unauthenticated: no security association is configured, clear "
                                         "AD, BD and control frames are accepted"))
        receiver = CommandReceiver(lambda: downlink.port, clock, path_factory=lambda room: UplinkPath(
            config.link, uplink, self.associations, room, clock))
        downlink.mux.ocf_source = receiver.clcw
        return receiver

    def rekey_sa(self, spi: int, number: int) -> None:
        """ST[08] rekey_sa: the SA takes key `number` from uplink.key_dir; noted so a restart keeps it.
        ValueError (the command's failure reason) when it cannot."""
        uplink = self.config.uplink
        path = self.uplink.path
        if path is None or spi not in path.associations.by_spi:
            raise ValueError(f"no security association has SPI {spi}")
        if not uplink.key_dir:
            raise ValueError("uplink.key_dir is not configured: no key to rotate to")
        key = load_key(rotated_key_path(uplink.key_dir, number))       # KeyFileError is a ValueError
        note_active_key(uplink.counter_dir, spi, number)
        self.uplink.rekey(spi, key)
        self._pending_events.append((products.EVENT_INFO, products.EVENT_UPLINK_SECURITY,
                                     f"SA {spi} rekeyed to key {number}"))

    def uplink_housekeeping(self) -> dict | None:
        """The uplink's counters (HK structure 3): every rejection by its reason."""
        path = self.uplink.path
        if path is None:
            return None
        c = self.uplink.counters
        farm = path.farms[self.config.uplink.command_vcid]
        sas = path.associations.by_spi.values()
        values = dict(authenticated=int(path.authenticated), sas_operational=sum(sa.operational for sa in sas),
                      sas_configured=len(sas), farm_state=int(farm.state), farm_vr=farm.vr,
                      farm_b_counter=farm.farm_b_counter, cltu_bits_corrected=c.bits_corrected,
                      frames_accepted=c.frames_accepted, frames_rejected=c.frames_rejected,
                      commands_queued=c.commands_received)
        values.update({reason.value: c.rejections[reason] for reason in Rejection})
        values = {k: min(int(v), 0xFFFFFFFF if k not in products.UPLINK_SMALL_FIELDS else 0xFF)
                  for k, v in values.items()}
        self._send(ProductClass.HOUSEKEEPING, products.APID_HOUSEKEEPING, products.SERVICE_HOUSEKEEPING,
                   products.SUBTYPE_HK_REPORT, products.UPLINK_HOUSEKEEPING.build(values))
        return values

    # --- products -------------------------------------------------------------
    def _store_event(self, severity: int, event_id: int, text: str) -> None:
        self._pending_events.append((severity, event_id, text))

    def post_event(self, severity: int, event_id: int, text: str) -> None:
        """An event from another thread (health): sent from the loop, in order."""
        self._pending_events.append((severity, event_id, text))

    # --- operations for commands (flight.commands) -------------------------------
    def send_tm(self, cls: ProductClass, apid: int, service: int, subtype: int, data: bytes) -> bool:
        return self._send(cls, apid, service, subtype, data)

    def request_quicklook(self) -> None:
        self._next_quicklook = float("-inf")

    def reset_counters(self) -> None:
        self.counters = ExecutiveCounters()

    def _open_classifier(self, config) -> None:
        self.classifier = open_filter(config.classifier, self.sensor.shape)
        self.frame_history = (FrameHistory(self.sensor.shape, self.classifier.lag)
                              if self.classifier is not None else None)

    def classify(self, pixels, detections):
        """The filter's score of each detection (NaN until `lag` frames are seen), or None when it is off."""
        if self.classifier is None:
            return None
        current = self.frame_history.push(pixels)
        past = self.frame_history.past()
        if past is None:
            return np.full(len(detections), np.nan)
        return self.classifier.score(current, past, detections)

    def reload_config(self) -> None:
        """ST[08] reload_config: the file read again, the commanded parameters kept; refused whole if bad."""
        if self._reload_config is None:
            raise ValueError("this program was started without a configuration file to reload")
        fresh = apply_parameters(self._reload_config(), self.parameters.commanded())
        if fresh.sensor != self.config.sensor or fresh.link != self.config.link or fresh.store != self.config.store:
            raise ValueError("sensor, link and store settings change only with a restart")
        self._apply(fresh)

    def _apply(self, config) -> None:
        if config.detection != self.config.detection:
            # A new threshold or model: the detector starts its background afresh.
            self.detector = Detector(config.detection, self.sensor.shape,
                                     calibration_bad_pixels=self.sensor.calibration_bad_pixels)
        if config.classifier != self.config.classifier:
            # New weights (or the filter on or off): refused whole, the old filter kept, if they are unusable.
            self._open_classifier(config)
        self.config = config
        self._housekeeping_period_s = config.flight.housekeeping_period_s

    def _parameter_changed(self, name: str, value) -> None:
        self._pending_events.append((products.EVENT_INFO, products.EVENT_PARAMETER, f"{name} = {value!r}"))
        if not name.startswith("time."):
            self._apply(apply_parameters(self.config, {name: value}))

    def _mode_changed(self, old: Mode, new: Mode, cause: Cause, reason: str) -> None:
        self._pending_events.append((products.EVENT_MEDIUM if cause == Cause.FAULT else products.EVENT_INFO,
                                     products.EVENT_MODE, f"mode {old.name} -> {new.name} ({cause.value}"
                                     + (f": {reason})" if reason else ")")))

    def _clock_jumped(self, step_s: float) -> None:
        self._pending_events.append((products.EVENT_MEDIUM, products.EVENT_CLOCK_JUMP,
                                     f"system clock stepped {step_s:+.3f} s; packet times follow it"))

    def _send(self, cls: ProductClass, apid: int, service: int, subtype: int, data: bytes,
              stamp: Stamp | None = None) -> bool:
        """Commit one product to the store; False when its class's drop rule dropped it or the store failed."""
        with self._send_lock:
            packet = self.packets.make(apid, service, subtype, data, stamp)
            try:
                kept = self.store.put(cls, packet, self.packets.last_unix) is not None
            except StoreError as exc:
                self.counters.store_errors += 1
                self._store_failure(str(exc))
                return False
        self.downlink.notify()
        return kept

    def _store_failure(self, text: str) -> None:
        # The store cannot keep this product (disk full, read-only): said once a housekeeping period.
        now = self._clock()
        if now >= self._next_store_error_event:
            self._next_store_error_event = now + self.config.flight.housekeeping_period_s
            log.error("store: %s", text)
            self._pending_events.append((products.EVENT_HIGH, products.EVENT_STORE_ERROR, text))

    def _send_pending_events(self) -> None:
        pending, self._pending_events = self._pending_events, []
        for severity, event_id, text in pending:
            self.event(severity, event_id, text)

    def event(self, severity: int, event_id: int, text: str, quiet: bool = False) -> bool:
        """Log and send an event; False if its queue refused it. `quiet`: another component logged it."""
        level = logging.INFO if severity == products.EVENT_INFO else logging.WARNING
        log.log(logging.DEBUG if quiet else level, "event %d: %s", event_id, text)
        data = products.EVENT_REPORT.build(dict(event_id=event_id, text=text.encode("utf8")[:255].decode("utf8", "ignore")))
        return self._send(ProductClass.EVENT, products.APID_EVENTS, products.SERVICE_EVENTS, severity, data)

    def report_faults(self) -> None:
        """Radio port outages and an out-of-range clock: one event as each begins, one as it ends."""
        d = self.downlink
        if d.link_outages > self._outages_reported:
            # The downlink logged the outage; the event carries it to the ground, after the reconnect.
            if self.event(products.EVENT_MEDIUM, products.EVENT_LINK_ERROR,
                          f"radio port lost: {d.link_error}; reopening it, queued data waits", quiet=True):
                self._outages_reported = d.link_outages
        if self._reconnects_reported < d.link_reconnects and self._reconnects_reported < self._outages_reported:
            if self.event(products.EVENT_LOW, products.EVENT_LINK_RESTORED,
                          f"radio port back after {d.last_outage_s:.1f} s down; outages so far "
                          f"{d.link_reconnects}, {d.link_down_s():.0f} s down in all", quiet=True):
                self._reconnects_reported = d.link_reconnects
        p = self.packets
        if p.time_error is not None and not self._clock_fault_reported:
            if self.event(products.EVENT_MEDIUM, products.EVENT_TIME_ERROR, p.time_error):
                self._clock_fault_reported = True
        elif p.time_error is None and self._clock_fault_reported:
            if self.event(products.EVENT_INFO, products.EVENT_TIME_ERROR,
                          f"clock back in the CUC field's range ({p.time_errors} packets stamped with its limit)"):
                self._clock_fault_reported = False

    def send_image(self, product: imaging.ImageProduct, frame_index: int, frame_time: bytes) -> None:
        fmt = products.image_segment_format(len(frame_time), product.subtype)
        pieces = imaging.segments(product.compressed, self.config.imaging.segment_octets)
        product_id = self._next_product_id
        self._next_product_id = (product_id + 1) & 0xFFFFFFFF
        height, width = product.pixels.shape
        track = dict(zip(("track_id", "track_frame"), product.track or ()))
        for index, piece in enumerate(pieces):
            data = fmt.build(dict(product_id=product_id, frame_index=frame_index, frame_time=frame_time,
                                  x0=product.x0, y0=product.y0, width=width, height=height,
                                  max_error=product.max_error, segment_index=index,
                                  segment_count=len(pieces), data=piece, **track))
            if product.subtype != products.SUBTYPE_QUICKLOOK:
                cls, apid = ProductClass.CHIP, products.APID_IMAGES
            else:
                cls, apid = ProductClass.QUICKLOOK, products.APID_QUICKLOOK
            self._send(cls, apid, products.SERVICE_IMAGES, product.subtype, data)
        self.counters.images_sent += 1

    def images(self, index: int, pixels, detections, frame_time: bytes) -> None:
        cfg = self.config.imaging
        # An alert's chip sequence goes before the frame's other chips: it is what the ground asked about.
        chips = [imaging.make_track_chip(pixels, due.x, due.y, (due.track_id, due.track_frame), cfg,
                                         products.SUBTYPE_TRACK_CHIP) for due in self.alerts.chips_due]
        if cfg.chips_per_frame:
            chips += imaging.make_chips(pixels, detections, cfg, products.SUBTYPE_CHIP)
        for chip in chips:
            self.send_image(chip, index, frame_time)
        now = self._clock()
        if cfg.quicklook_period_s and now >= self._next_quicklook:
            plan = self.quicklooks.plan(self._line_octets_per_s, self._quicklook_bits_per_pixel)
            if plan is None:
                return
            self._next_quicklook = now + plan.period_s
            quicklook = imaging.make_quicklook(pixels, replace(cfg, quicklook_binning=plan.binning),
                                               products.SUBTYPE_QUICKLOOK)
            # What this one compressed to guides the next plan.
            self._quicklook_bits_per_pixel = max(0.05, 8 * len(quicklook.compressed) / quicklook.pixels.size)
            self.send_image(quicklook, index, frame_time)

    def housekeeping(self) -> dict:
        values = {f.name: getattr(self.counters, f.name) for f in fields(self.counters)}
        values.update(
            uptime_s=int(self._clock() - self._started),
            packets_sent=self.downlink.packets_sent,
            packets_dropped=self.downlink.packets_dropped,
            bytes_sent=self.downlink.bytes_sent,
            frames_sent=self.downlink.cadus_sent,
            queue_octets=self.downlink.queued_octets(),
            store_unsent_octets=sum(self.store.unsent_octets),
            store_held_octets=sum(self.store.held_octets(c) for c in ProductClass),
            store_dropped=self.store.total("dropped"),
            link_outages=self.downlink.link_outages,
            link_reconnects=self.downlink.link_reconnects,
            link_down_s=self.downlink.link_down_s(),
            cadus_interrupted=self.downlink.cadus_interrupted,
            time_errors=self.packets.time_errors,
            mode=self.modes.mode,
            commands_accepted=self.commands.counters.accepted,
            commands_rejected=self.commands.counters.rejected,
            commands_failed=self.commands.counters.failed,
            uplink_octets=self.uplink.counters.octets_read,
            clock_jumps=self.time.clock_jumps,
        )
        groups = self.driver.groups if self.driver is not None else ()
        values.update(loop_overruns=sum(g.overruns for g in groups), cycle_slips=sum(g.slips for g in groups),
                      ticks_missed=self.driver.ticks.ticks_missed if groups else 0,
                      tick_jitter_p99_us=self.driver.ticks.jitter.percentile(99) * 1e6 if groups else 0)
        values["errors"] += self.downlink.write_errors
        values = {k: min(int(v), 0xFFFFFFFF) for k, v in values.items()}
        offset_s, drift_ppm, _ = self.time.correlation()
        values.update(time_offset_s=offset_s, time_drift_ppm=drift_ppm)
        data = products.HOUSEKEEPING_REPORT.build(values)
        self._send(ProductClass.HOUSEKEEPING, products.APID_HOUSEKEEPING,
                   products.SERVICE_HOUSEKEEPING, products.SUBTYPE_HK_REPORT, data)
        return values

    # --- the loop ----------------------------------------------------------------
    def cycle(self) -> bool:
        """One frame through the pipeline, as the mode allows; False when the sensor has no more frames.

        SAFE reads no frame; STANDBY reads and detects (the background model stays warm) and sends
        nothing; OBSERVE is the mission."""
        c = self.counters
        if not self.modes.sensing:
            return True
        try:
            item = self.sensor.read()
        except SensorError as exc:
            c.frames_failed += 1
            c.errors += 1
            self.event(products.EVENT_MEDIUM, products.EVENT_SENSOR_ERROR, str(exc))
            return True
        if item is None:
            return False
        index, pixels = item
        frame_stamp = self.packets.now()
        try:
            detections = self.detector.process(pixels)
        except ValueError as exc:
            c.frames_failed += 1
            c.errors += 1
            self.event(products.EVENT_MEDIUM, products.EVENT_DETECTION_ERROR, f"frame {index}: {exc}")
            return True
        try:
            scores = self.classify(pixels, detections)
        except ValueError as exc:
            scores = None
            c.errors += 1
            self.event(products.EVENT_MEDIUM, products.EVENT_DETECTION_ERROR, f"frame {index}: classifier: {exc}")
        if not self.modes.observing:
            c.frames_processed += 1
            return True
        frame_time = self.packets.encode(frame_stamp)
        # Alerts first (an urgent put commits at once), then the report: imagery must never delay
        # what the detections say.
        self.alerts_for(index, frame_stamp, detections, scores, self.detector.faint, self.detector.settled)
        report = products.DetectionReport(index, frame_time, detections)
        self._send(ProductClass.DETECTIONS, products.APID_DETECTIONS, products.SERVICE_DETECTIONS,
                   products.SUBTYPE_DETECTION_REPORT, report.pack(), frame_stamp)
        c.frames_processed += 1
        c.detections_total += len(detections)
        try:
            self.images(index, pixels, detections, frame_time)
        except ValueError as exc:
            c.errors += 1
            self.event(products.EVENT_MEDIUM, products.EVENT_IMAGE_ERROR, f"frame {index}: {exc}")
        return True

    def alerts_for(self, index: int, frame_stamp: Stamp, detections, scores=None, faint=None,
                   births: bool = True) -> None:
        """The frame's detections (and faint detections, which only continue tracks) through the tracker,
        starting tracks if `births`; each alert opened, updated or closed goes to the store."""
        frame_time = self.packets.encode(frame_stamp)
        unix_time = (self.packets.cuc.to_unix(frame_stamp.ticks)
                     if frame_stamp.status == products.TIME_STATUS_VALID else None)
        try:
            updates = self.alerts.frame(index, frame_time, unix_time, detections, scores,
                                        self.detector.scene_offset(), faint, births)
        except ValueError as exc:
            self.counters.errors += 1
            self.event(products.EVENT_MEDIUM, products.EVENT_TRACKING_ERROR, f"frame {index}: {exc}")
            return
        for alert in updates:
            # An opening goes before every later state of alerts the ground already has: in a burst
            # (tracks ending together, say) the new threat does not wait behind their closes.
            if alert.update == 0:
                cls, apid = ProductClass.ALERT, products.APID_ALERT_OPENINGS
            else:
                cls, apid = ProductClass.ALERT_UPDATE, products.APID_ALERTS
            self._send(cls, apid, products.SERVICE_ALERTS, alert.subtype,
                       alert.pack(), frame_stamp)

    def commanding(self) -> None:
        """The commands received since the last cycle, each to its verification reports."""
        for tc in self.uplink.take():
            self.commands.handle(tc)

    # --- rate group members --------------------------------------------------------
    def _sensing(self) -> None:
        started = self._clock()
        self._frames_attempted += self.modes.sensing
        if not self.cycle():
            self._sensor_done = True
        elapsed = self._clock() - started
        self.counters.loop_time_last_us = int(elapsed * 1e6)
        self.counters.loop_time_max_us = max(self.counters.loop_time_max_us, self.counters.loop_time_last_us)

    def _housekeeping(self) -> None:
        self.time.check()
        if self.housekeeping_structures[products.HK_STRUCTURE_FLIGHT]:
            self.housekeeping()
        if self.housekeeping_structures.get(products.HK_STRUCTURE_UPLINK):
            self.uplink_housekeeping()

    def set_housekeeping_period(self, structure: int, seconds: float) -> None:
        self._housekeeping_period_s = seconds
        if self.driver is not None:
            self.driver.groups[1].retime(divisor_for(seconds, self.driver.ticks.rate_hz), self.driver.ticks.index)

    def run(self) -> ExecutiveCounters:
        """The loop: one tick source at the frame rate, divided among the sensing group (every tick) and
        the housekeeping group (every housekeeping period); commands between them, each tick one store
        transaction."""
        cfg = self.config
        rate = cfg.sensor.frame_rate_hz
        self.event(products.EVENT_INFO, products.EVENT_STARTED,
                   f"kestrel-flight started, {self.sensor.shape[1]}x{self.sensor.shape[0]} frames at {rate:g} Hz")
        self.modes.enter(Mode[cfg.flight.start_mode], Cause.START, "started")
        if hasattr(self.downlink.port, "read"):
            self.uplink.start()
        self.report_faults()
        self._send_pending_events()
        self.housekeeping()
        ticks = TickSource(rate, self._clock, wait=self.stop.wait)
        self.driver = RateGroupDriver(ticks, [
            RateGroup("sensing", 1, [self._sensing]),
            RateGroup("housekeeping", divisor_for(self._housekeeping_period_s, rate), [self._housekeeping],
                      offset=0)])
        self._frames_attempted = 0
        self._sensor_done = False
        # Tick 0 is now; housekeeping was just sent, so its group starts one period on.
        self.driver.groups[1].retime(self.driver.groups[1].divisor, 0)
        while not self.stop.is_set():
            if cfg.sensor.max_frames and self._frames_attempted >= cfg.sensor.max_frames:
                break
            index = ticks.next()
            if index is None:
                break
            self.heartbeat += 1
            try:
                with self._cycle_batch():
                    self.commanding()
                    self.driver.dispatch(index)
                    self.report_faults()
                    self._send_pending_events()
            except StoreError as exc:
                # The cycle's batch could not commit (disk full): its products were never stored; counted and
                # said as a single put's failure is, and the loop flies on.
                self.counters.store_errors += 1
                self._store_failure(str(exc))
            self.downlink.notify()
            if self._sensor_done:
                break
        self.uplink.stop()
        self.commanding()
        self.report_faults()
        self._send_pending_events()
        self.event(products.EVENT_INFO, products.EVENT_STOPPING,
                   f"kestrel-flight stopping after {self.counters.frames_processed} frames")
        self.housekeeping()
        self.downlink.notify()
        return self.counters

    def _cycle_batch(self):
        """The store's batch, or nothing when the store cannot write (the products go to the event path)."""
        return self.store.batch() if self.store.read_only is None else contextlib.nullcontext()

    def close(self) -> None:
        """Close the store (after the downlink has stopped taking from it)."""
        self.uplink.stop()
        self.store.close()
        self.files.cleanup()
