"""kestrel-ground: decode a recording or listen to a radio port."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import serial

from kestrel.cli import EXIT_USAGE, add_common_arguments, fail, run_program, setup
from kestrel.link.port import PortError, open_port
from kestrel.link.timecode import CucCodec

from .archive import GroundArchive
from .config import GroundProgramConfig
from .decoder import GroundDecoder
from .images import ImageAssembler


def image_assembler(config, out: Path, archive: GroundArchive) -> ImageAssembler:
    cuc = CucCodec(config.link.time)
    return ImageAssembler(out, cuc.length, cuc, archive)


log = logging.getLogger("kestrel-ground")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kestrel-ground", description="Kestrel ground station decoder.")
    add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    decode = sub.add_parser("decode", help="decode a recorded byte stream (CADUs) from FILE")
    decode.add_argument("file", metavar="FILE")
    decode.add_argument("--out", metavar="DIR", required=True, help="directory for detections.jsonl and archive.sqlite")
    listen = sub.add_parser("listen", help="decode live from a radio port until stopped")
    listen.add_argument("--port", metavar="URL", required=True, help="any pyserial URL")
    listen.add_argument("--out", metavar="DIR", required=True, help="directory for detections.jsonl and archive.sqlite")
    listen.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    for p in (decode, listen):
        add_common_arguments(p, subcommand=True)
    return parser


def _finish(decoder: GroundDecoder, archive: GroundArchive, out: Path) -> None:
    summary = decoder.finish()
    archive.close()
    (out / "summary.json").write_text(json.dumps(asdict(summary), indent=2))
    for line in summary.lines():
        print(line)


def decode_file(config, path: Path, out: Path, parser) -> int:
    try:
        stream = path.open("rb")
    except OSError as exc:
        fail(parser, f"cannot read {path}: {exc.strerror}")
    archive = GroundArchive(out)
    decoder = GroundDecoder(config, archive, images=image_assembler(config, out, archive))
    with stream:
        while chunk := stream.read(1 << 16):
            decoder.feed(chunk)
    _finish(decoder, archive, out)
    return 0


def listen(config, url: str, out: Path, duration: float | None, parser) -> int:
    try:
        port = open_port(url, config.link.baud, timeout=0.1)
    except PortError as exc:
        fail(parser, str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    archive = GroundArchive(out)
    decoder = GroundDecoder(config, archive, images=image_assembler(config, out, archive))
    # Say so once the port is open: whoever started us (the bench) waits for
    # this before the other end may talk, since opening a port drops what
    # was already waiting in it.
    print(f"kestrel-ground: listening on {url}", flush=True)
    started = last_byte = time.monotonic()
    idle_exit = config.ground.idle_exit_s
    try:
        while not stop.is_set():
            try:
                chunk = port.read(config.ground.read_size)
            except (serial.SerialException, OSError) as exc:
                # The far end went away (a socket closed, a USB radio unplugged):
                # keep what was decoded and end the pass.
                log.warning("port %s: %s; ending the pass", url, exc)
                break
            now = time.monotonic()
            if chunk:
                decoder.feed(chunk)
                last_byte = now
            if duration is not None and now - started >= duration:
                break
            if idle_exit and now - last_byte >= idle_exit:
                break
    finally:
        port.close()
        _finish(decoder, archive, out)
    return 0


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and not args.print_config:
        parser.print_usage(sys.stderr)
        fail(parser, "a command is required: decode or listen", EXIT_USAGE)
    config = setup(parser, args, GroundProgramConfig)
    out = Path(args.out)
    if args.command == "decode":
        return decode_file(config, Path(args.file), out, parser)
    return listen(config, args.port, out, args.duration, parser)


def main(argv=None) -> int:
    return run_program("kestrel-ground", _main, argv)
