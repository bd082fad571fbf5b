"""kestrel-flight: the onboard program."""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import signal
import sys
import threading
from pathlib import Path

from kestrel import products
from kestrel.cli import EXIT_RESTART, EXIT_STORAGE, EXIT_USAGE, add_common_arguments, count, fail, run_program, setup
from kestrel.config import ConfigError, load_config
from kestrel.link.port import PortError, open_port

from .config import FlightProgramConfig
from .downlink import Downlink
from .executive import Executive
from .health import HealthMonitor, HealthThread, SdNotify
from .sensor import SensorError
from .store import StoreError

log = logging.getLogger("kestrel-flight")
# How long a restart asked for by health waits for the loop to stop by itself.
LOOP_STOP_WAIT_S = 2.0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kestrel-flight",
        description="Run the Kestrel payload: frames -> detection -> packets -> TM frames -> radio port.",
        epilog="`kestrel-flight bundle --arch aarch64|armhf|native --out DIR` builds the installer for a "
               "single-board computer (see its --help).")
    add_common_arguments(parser)
    parser.add_argument("--port", metavar="URL", help="radio port, any pyserial URL (device, pty, socket://, loop://)")
    parser.add_argument("--source", metavar="URL", help="frame source URL (sensor.source): npy:DIR, sim://KIND?...")
    parser.add_argument("--frames", metavar="DIR", help="read .npy frames from DIR (the same as --source npy:DIR)")
    parser.add_argument("--max-frames", type=count, metavar="N", help="stop after N frames")
    parser.add_argument("--store", metavar="FILE", help="the store's SQLite file (store.path); products wait "
                        "there until the ground acknowledges them")
    return parser


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    config = setup(parser, args, FlightProgramConfig)
    changes = {}
    if args.source and args.frames:
        fail(parser, "give --source or --frames, not both", EXIT_USAGE)
    if args.source:
        changes["source"] = args.source
    if args.frames:
        changes["source"] = f"npy:{args.frames}"
    if args.max_frames is not None:
        changes["max_frames"] = args.max_frames
    try:
        config = dataclasses.replace(config, sensor=dataclasses.replace(config.sensor, **changes))
        if args.store:
            config = dataclasses.replace(config, store=dataclasses.replace(config.store, path=args.store))
    except ValueError as exc:
        fail(parser, str(exc), EXIT_USAGE)
    url = args.port or config.flight.port

    def reopen():
        """The radio port, opened anew: at start, and by the downlink after the port is lost."""
        return open_port(url, config.link.baud, timeout=0.1, write_timeout=None)

    try:
        port = reopen()
    except PortError as exc:
        fail(parser, str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    downlink = Downlink(config.link, port, reopen=reopen, reconnect=config.flight.reconnect)
    def reload_config():
        if not args.config:
            raise ValueError("started without --config: there is no file to read again")
        try:
            return load_config(args.config, FlightProgramConfig)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    try:
        executive = Executive(config, downlink, stop, reload_config=reload_config)
    except (SensorError, ValueError) as exc:
        downlink.close()
        fail(parser, str(exc))
    except StoreError as exc:
        downlink.close()
        fail(parser, str(exc), EXIT_STORAGE)
    restart: list[str] = []

    def stalled(name: str, stalled_s: float, alive: bool) -> None:
        text = (f"{name} moves again after {stalled_s:.1f} s" if alive
                else f"{name} has shown no progress for {stalled_s:.1f} s")
        log.warning("health: %s", text)
        executive.post_event(products.EVENT_INFO if alive else products.EVENT_HIGH, products.EVENT_HEALTH, text)

    loop_returned = threading.Event()

    def restart_cleanly(reason: str) -> None:
        # Stop, flush what waits, and exit for the service manager to start a fresh program. The loop
        # may be stuck in a call that never returns (a sensor read): then this thread does the stopping.
        log.error("health: %s; stopping to be restarted", reason)
        restart.append(reason)
        stop.set()
        if loop_returned.wait(LOOP_STOP_WAIT_S):
            return     # the main thread stops and flushes as at any end
        log.error("health: the executive loop does not stop; flushing and exiting from the health thread")
        notifier.stopping(f"restarting: {reason}")
        downlink.stop(config.flight.flush_timeout_s)
        downlink.close()
        executive.store.close()
        logging.shutdown()
        os._exit(EXIT_RESTART)

    notifier = SdNotify()
    health = HealthThread(HealthMonitor(
        {"executive": lambda: executive.heartbeat, "downlink": lambda: downlink.heartbeat,
         "uplink": lambda: executive.uplink.heartbeat}, notifier, on_event=stalled, on_restart=restart_cleanly,
        config=config.health))
    downlink.start()
    health.start()
    notifier.ready("observing" if config.flight.start_mode == "OBSERVE" else config.flight.start_mode.lower())
    try:
        counters = executive.run()
    finally:
        loop_returned.set()
        notifier.stopping(f"restarting: {restart[0]}" if restart else None)
        health.stop()
        drained = downlink.stop(config.flight.flush_timeout_s)
        downlink.close()   # the port it holds now: the one opened here, or a reopened one
        waiting = sum(executive.store.unsent_octets)
        executive.close()
    log.info("stopped: %d frames, %d detections, %d octets sent; radio port outages %d, %.0f s down in all; "
             "%d octets wait in the store for the next pass", counters.frames_processed, counters.detections_total,
             downlink.bytes_sent, downlink.link_outages, downlink.link_down_s(), waiting)
    if restart:
        return EXIT_RESTART
    return 0 if drained else 1


def bundle_main(argv) -> int:
    from .bundle import BundleError, make_bundle

    parser = argparse.ArgumentParser(
        prog="kestrel-flight bundle",
        description="Build the tarball that installs the flight program on a single-board computer: its wheels "
                    "for the target, the default config, a systemd unit, install.sh and SHA256SUMS.")
    parser.add_argument("--arch", required=True, choices=("aarch64", "armhf", "native"),
                        help="target; other than this machine's own, built in an emulated Debian root "
                             "(needs root, qemu-user-static, binfmt_misc and mmdebstrap)")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the tarball goes")
    args = parser.parse_args(argv)
    try:
        tarball = make_bundle(args.arch, Path(args.out))
    except BundleError as exc:
        parser.exit(1, f"kestrel-flight bundle: error: {exc}\n")
    print(tarball)
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bundle"]:
        return bundle_main(argv[1:])
    return run_program("kestrel-flight", _main, argv)
