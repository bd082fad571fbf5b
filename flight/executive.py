"""The flight executive: one fixed-rate loop from sensor to downlink.

Each cycle reads a frame, runs the detector (the kernel releases the GIL, so
the downlink writer keeps the radio busy meanwhile), sends a detection report,
and every housekeeping period a housekeeping report. A bad frame or a failed
stage becomes an event and a counter; the loop carries on. So do a radio port
that is lost (the downlink reopens it; one event as the outage begins and one
as it ends) and a clock the CUC field cannot hold (packets carry the field's
limit, flagged; one event as it begins and one as it ends).
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields

from kestrel import products
from kestrel.link.timecode import CucCodec

from . import imaging
from .detection import Detector
from .sensor import FrameLimits, SensorError, open_sensor
from .telemetry import Stamp, TelemetryPacketFactory

log = logging.getLogger(__name__)


@dataclass
class ExecutiveCounters:
    frames_processed: int = 0
    frames_failed: int = 0
    loop_time_last_us: int = 0
    loop_time_max_us: int = 0
    loop_overruns: int = 0
    detections_total: int = 0
    images_sent: int = 0
    errors: int = 0


class Executive:
    def __init__(self, config, downlink, stop: threading.Event, sensor=None,
                 clock=time.monotonic, wallclock=time.time):
        self.config = config
        self.downlink = downlink
        self.stop = stop
        self._clock = clock
        self.sensor = sensor if sensor is not None else open_sensor(
            config.sensor.source, FrameLimits(config.sensor.max_frame_pixels))
        self.detector = Detector(config.detection, self.sensor.shape,
                                 calibration_bad_pixels=self.sensor.calibration_bad_pixels)
        self.packets = TelemetryPacketFactory(CucCodec(config.link.time), config.link.destination_id, wallclock)
        self.counters = ExecutiveCounters()
        self._started = clock()
        self._next_product_id = 0
        self._next_quicklook = clock()
        self._next_overflow_event = clock()
        # Faults reported as events so far; a report refused by a full queue is tried again next cycle.
        self._outages_reported = 0
        self._reconnects_reported = 0
        self._clock_fault_reported = False

    # --- products -------------------------------------------------------------
    def _send(self, vcid: int, apid: int, service: int, subtype: int, data: bytes,
              stamp: Stamp | None = None) -> bool:
        if self.downlink.submit(vcid, self.packets.make(apid, service, subtype, data, stamp)):
            return True
        # The link is slower than the data: say so, at most once a housekeeping
        # period, rather than once per refused packet.
        now = self._clock()
        if now >= self._next_overflow_event:
            self._next_overflow_event = now + self.config.flight.housekeeping_period_s
            self.event(products.EVENT_MEDIUM, products.EVENT_QUEUE_OVERFLOW,
                       f"virtual channel {vcid} queue full: {self.downlink.packets_dropped} packets dropped so far")
        return False

    def event(self, severity: int, event_id: int, text: str, quiet: bool = False) -> bool:
        """Log and send an event; False if its queue refused it. `quiet`: another component logged it."""
        level = logging.INFO if severity == products.EVENT_INFO else logging.WARNING
        log.log(logging.DEBUG if quiet else level, "event %d: %s", event_id, text)
        data = products.EVENT_REPORT.build(dict(event_id=event_id, text=text.encode("utf8")[:255].decode("utf8", "ignore")))
        return self._send(self.config.link.vc_events, products.APID_EVENTS, products.SERVICE_EVENTS, severity, data)

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
        fmt = products.image_segment_format(len(frame_time))
        pieces = imaging.segments(product.compressed, self.config.imaging.segment_octets)
        product_id = self._next_product_id
        self._next_product_id = (product_id + 1) & 0xFFFFFFFF
        height, width = product.pixels.shape
        for index, piece in enumerate(pieces):
            data = fmt.build(dict(product_id=product_id, frame_index=frame_index, frame_time=frame_time,
                                  x0=product.x0, y0=product.y0, width=width, height=height,
                                  max_error=product.max_error, segment_index=index,
                                  segment_count=len(pieces), data=piece))
            self._send(self.config.link.vc_images, products.APID_IMAGES, products.SERVICE_IMAGES,
                       product.subtype, data)
        self.counters.images_sent += 1

    def images(self, index: int, pixels, detections, frame_time: bytes) -> None:
        cfg = self.config.imaging
        chips = imaging.make_chips(pixels, detections, cfg, products.SUBTYPE_CHIP) if cfg.chips_per_frame else []
        for chip in chips:
            self.send_image(chip, index, frame_time)
        now = self._clock()
        if cfg.quicklook_period_s and now >= self._next_quicklook:
            self._next_quicklook = now + cfg.quicklook_period_s
            self.send_image(imaging.make_quicklook(pixels, cfg, products.SUBTYPE_QUICKLOOK), index, frame_time)

    def housekeeping(self) -> dict:
        values = {f.name: getattr(self.counters, f.name) for f in fields(self.counters)}
        values.update(
            uptime_s=int(self._clock() - self._started),
            packets_sent=self.downlink.packets_sent,
            packets_dropped=self.downlink.packets_dropped,
            bytes_sent=self.downlink.bytes_sent,
            frames_sent=self.downlink.cadus_sent,
            queue_octets=self.downlink.queued_octets(),
            link_outages=self.downlink.link_outages,
            link_reconnects=self.downlink.link_reconnects,
            link_down_s=self.downlink.link_down_s(),
            cadus_interrupted=self.downlink.cadus_interrupted,
            time_errors=self.packets.time_errors,
        )
        values["errors"] += self.downlink.write_errors
        values = {k: min(int(v), 0xFFFFFFFF) for k, v in values.items()}
        data = products.HOUSEKEEPING_REPORT.build(values)
        self._send(self.config.link.vc_housekeeping, products.APID_HOUSEKEEPING,
                   products.SERVICE_HOUSEKEEPING, products.SUBTYPE_HK_REPORT, data)
        return values

    # --- the loop ----------------------------------------------------------------
    def cycle(self) -> bool:
        """One frame through the pipeline; False when the sensor has no more frames."""
        c = self.counters
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
        frame_time = self.packets.encode(frame_stamp)
        report = products.DetectionReport(index, frame_time, detections)
        # The report goes first: imagery must never delay what the detections say.
        self._send(self.config.link.vc_detections, products.APID_DETECTIONS, products.SERVICE_DETECTIONS,
                   products.SUBTYPE_DETECTION_REPORT, report.pack(), frame_stamp)
        c.frames_processed += 1
        c.detections_total += len(detections)
        try:
            self.images(index, pixels, detections, frame_time)
        except ValueError as exc:
            c.errors += 1
            self.event(products.EVENT_MEDIUM, products.EVENT_IMAGE_ERROR, f"frame {index}: {exc}")
        return True

    def run(self) -> ExecutiveCounters:
        cfg = self.config
        period = 1.0 / cfg.sensor.frame_rate_hz
        hk_period = cfg.flight.housekeeping_period_s
        self.event(products.EVENT_INFO, products.EVENT_STARTED,
                   f"kestrel-flight started, {self.sensor.shape[1]}x{self.sensor.shape[0]} frames at {cfg.sensor.frame_rate_hz:g} Hz")
        self.report_faults()
        self.housekeeping()
        next_tick = next_hk = self._clock()
        next_hk += hk_period
        attempts = 0
        while not self.stop.is_set():
            if cfg.sensor.max_frames and attempts >= cfg.sensor.max_frames:
                break
            started = self._clock()
            attempts += 1
            if not self.cycle():
                break
            self.report_faults()
            elapsed = self._clock() - started
            self.counters.loop_time_last_us = int(elapsed * 1e6)
            self.counters.loop_time_max_us = max(self.counters.loop_time_max_us, self.counters.loop_time_last_us)
            now = self._clock()
            if now >= next_hk:
                self.housekeeping()
                next_hk += hk_period * max(1, int((now - next_hk) // hk_period) + 1)
            next_tick += period
            delay = next_tick - self._clock()
            if delay < 0:
                self.counters.loop_overruns += 1
                next_tick = self._clock()
            else:
                self.stop.wait(delay)
        self.report_faults()
        self.event(products.EVENT_INFO, products.EVENT_STOPPING,
                   f"kestrel-flight stopping after {self.counters.frames_processed} frames")
        self.housekeeping()
        return self.counters
