"""kestrel-flight: the onboard program."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import threading

from .cli_support import add_common_arguments, fail, setup
from .downlink import Downlink
from .executive import Executive
from .link.port import PortError, open_port
from .sensor import SensorError

log = logging.getLogger("kestrel-flight")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kestrel-flight",
        description="Run the Kestrel payload: frames -> detection -> packets -> TM frames -> radio port.")
    add_common_arguments(parser)
    parser.add_argument("--port", metavar="URL", help="radio port, any pyserial URL (device, pty, socket://, loop://)")
    parser.add_argument("--frames", metavar="DIR", help="read .npy frames from DIR instead of the simulated scene")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop after N frames")
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = setup(parser, args)
    sensor = config.sensor
    if args.frames:
        sensor = dataclasses.replace(sensor, source="npy", directory=args.frames)
    if args.max_frames is not None:
        if args.max_frames < 0:
            fail(parser, f"--max-frames must be >= 0, got {args.max_frames}", 2)
        sensor = dataclasses.replace(sensor, max_frames=args.max_frames)
    config = dataclasses.replace(config, sensor=sensor)
    url = args.port or config.flight.port
    try:
        port = open_port(url, config.link.baud, timeout=0.1, write_timeout=None)
    except PortError as exc:
        fail(parser, str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    downlink = Downlink(config.link, port)
    try:
        executive = Executive(config, downlink, stop)
    except (SensorError, ValueError) as exc:
        port.close()
        fail(parser, str(exc))
    downlink.start()
    try:
        counters = executive.run()
    finally:
        drained = downlink.stop(config.flight.flush_timeout_s)
        port.close()
    log.info("stopped: %d frames, %d detections, %d octets sent", counters.frames_processed,
             counters.detections_total, downlink.bytes_sent)
    return 0 if drained else 1
