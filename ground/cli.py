"""kestrel-ground: decode a recording or listen to a radio port."""
from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
from dataclasses import asdict
from pathlib import Path

from kestrel.cli import (EXIT_INTERRUPTED, EXIT_STORAGE, EXIT_USAGE, add_common_arguments, fail, run_program, seconds,
                         setup)
from kestrel.link.port import PortError
from kestrel.link.timecode import CucCodec

from .archive import ArchiveError, GroundArchive
from .command import add_command_parser, run_command
from .config import GroundProgramConfig
from .decoder import GroundDecoder
from .images import ImageAssembler
from .listen import RECONNECTABLE_SCHEMES, ListenPass, PassSummary, reconnectable


def image_assembler(config, archive: GroundArchive) -> ImageAssembler:
    cuc = CucCodec(config.link.time)
    return ImageAssembler(cuc.length, cuc, archive)


def open_archive(config, out: Path, parser) -> GroundArchive:
    """The archive in `out`, saying what it already held; one line and EXIT_STORAGE when it cannot be used."""
    try:
        archive = GroundArchive(out, busy_timeout_s=config.ground.archive_busy_timeout_s)
    except ArchiveError as exc:
        fail(parser, str(exc), EXIT_STORAGE)
    print(archive.summary_line(), flush=True)
    return archive


def write_summary(out: Path, summary) -> None:
    """summary.json, replaced whole so that a reader never sees half of one."""
    path = out / "summary.json"
    temporary = path.with_name(path.name + ".tmp")
    try:
        temporary.write_text(json.dumps(asdict(summary), indent=2))
        temporary.replace(path)
    except OSError:
        temporary.unlink(missing_ok=True)
        raise


def archive_failed(parser, decoder: GroundDecoder, archive: GroundArchive, out: Path, exc: ArchiveError) -> int:
    """Stop on a fault of our own storage: say so once, keep what was committed, exit EXIT_STORAGE."""
    log.error("archive failure: %s", exc)
    archive.rollback()
    summary = decoder.summary()
    summary.error = f"archive: {exc}"
    try:
        write_summary(out, summary)
    except OSError as write_error:
        log.error("summary.json not written either: %s", write_error.strerror)
    fail(parser, f"archive: {exc}; what was committed before is kept", EXIT_STORAGE)


log = logging.getLogger("kestrel-ground")
# A recording is read this much at a time; each chunk decoded is one archive transaction.
FILE_CHUNK = 1 << 16


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
    listen.add_argument("--duration", type=seconds, metavar="S", help="stop after S seconds")
    listen.add_argument("--reconnect", action="store_true",
                        help="reopen a socket:// or rfc2217:// source that closes, until stopped; gaps are counted")
    for p in (decode, listen):
        add_common_arguments(p, subcommand=True)
    add_command_parser(sub)
    return parser


def _finish(decoder: GroundDecoder, archive: GroundArchive, out: Path, interrupted: bool = False) -> None:
    summary = decoder.finish()
    summary.interrupted = interrupted
    archive.close()
    write_summary(out, summary)
    for line in summary.lines():
        print(line)


def decode_file(config, path: Path, out: Path, parser) -> int:
    if path.is_dir():
        fail(parser, f"cannot read {path}: it is a directory")
    try:
        stream = path.open("rb")
    except OSError as exc:
        fail(parser, f"cannot read {path}: {exc.strerror}")
    archive = open_archive(config, out, parser)
    decoder = GroundDecoder(config, archive, images=image_assembler(config, archive))
    # Ctrl-C ends the decode between chunks: what was read is decoded and the summary written.
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        with stream:
            while not stop.is_set() and (chunk := stream.read(FILE_CHUNK)):
                decoder.feed(chunk)
        _finish(decoder, archive, out, interrupted=stop.is_set())
    except ArchiveError as exc:
        return archive_failed(parser, decoder, archive, out, exc)
    except OSError as exc:
        archive.close()
        fail(parser, f"reading {path} failed: {exc.strerror}; what was decoded before is kept")
    if stop.is_set():
        print("kestrel-ground: interrupted; the summary covers what was read", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


def listen(config, url: str, out: Path, duration: float | None, parser, reconnect: bool = False) -> int:
    """Decode a live pass. Every octet the port received reaches the decoder: opening the port
    keeps what already waits in it (ground.flush_on_open to drop it), and a peer that closes
    ends the pass only after the octets it sent are decoded. With `reconnect` a lost network
    source is reopened; summary.json's `link` section counts the gaps (ground.listen)."""
    if reconnect and not reconnectable(url):
        schemes = ", ".join(s + "://" for s in RECONNECTABLE_SCHEMES)
        fail(parser, f"--reconnect needs a network port ({schemes}), not {url!r}", EXIT_USAGE)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    link = ListenPass(url, config.link.baud, config.ground, reconnect=reconnect, duration=duration, stop=stop)
    try:
        link.open()
    except PortError as exc:
        fail(parser, str(exc))
    # The first line out: whoever started us may wait for it. From here on what the
    # source sends is kept in the port until the pass reads it.
    print(f"kestrel-ground: listening on {url}", flush=True)
    try:
        archive = open_archive(config, out, parser)
        decoder = GroundDecoder(config, archive, images=image_assembler(config, archive))
        try:
            counters = link.run(decoder.feed)
            summary = PassSummary.of(decoder.finish(), counters)
        except ArchiveError as exc:
            return archive_failed(parser, decoder, archive, out, exc)
    finally:
        link.close()
    archive.close()
    write_summary(out, summary)
    for line in summary.lines():
        print(line)
    return 0


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and not args.print_config:
        parser.print_usage(sys.stderr)
        fail(parser, "a command is required: decode or listen", EXIT_USAGE)
    config = setup(parser, args, GroundProgramConfig)
    if args.command == "command":
        return run_command(config, args, parser)
    out = Path(args.out)
    if args.command == "decode":
        return decode_file(config, Path(args.file), out, parser)
    return listen(config, args.port, out, args.duration, parser, reconnect=args.reconnect)


def main(argv=None) -> int:
    return run_program("kestrel-ground", _main, argv)
