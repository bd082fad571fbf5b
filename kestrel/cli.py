"""What the three programs share on the command line: config, logging, one-line errors.

`run_program` is the top of every program: an error we expected was already
turned into one line and an exit status; anything else is a defect of ours,
reported as one line that names a log file holding the traceback, with its
own exit status so that a script can tell the two apart.
"""
from __future__ import annotations

import argparse
import datetime
import logging
import math
import os
import sys
import tempfile
import traceback
from pathlib import Path

from .config import ConfigError, load_config, render_defaults

LOG_LEVELS = ("debug", "info", "warning", "error")

EXIT_FAILURE = 1        # the run did not do all it should (a port failed, data left unsent)
EXIT_USAGE = 2          # bad arguments or configuration
EXIT_STORAGE = 3        # what we keep could not be written (disk full, read-only, locked): nothing was reported lost
EXIT_INTERNAL = 70      # a defect of ours (sysexits EX_SOFTWARE); the traceback is in a log file
EXIT_RESTART = 75       # a component stalled: the program stopped cleanly to be restarted (EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # stopped by Ctrl-C before it could finish cleanly


def seconds(text: str) -> float:
    """An argparse type: a finite, positive number of seconds (NaN would never end a pass)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of seconds above 0, got {text!r}")
    return value


def count(text: str) -> int:
    """An argparse type: a whole number >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def add_common_arguments(parser: argparse.ArgumentParser, subcommand: bool = False) -> None:
    """The shared options; a subcommand takes them too, without resetting what came before it."""
    kept = {"default": argparse.SUPPRESS} if subcommand else {}
    parser.add_argument("--config", metavar="FILE", help="TOML configuration; every key has a default (see --print-config)",
                        **kept)
    parser.add_argument("--print-config", action="store_true", help="print the default configuration, documented, and exit",
                        **kept)
    parser.add_argument("-v", "--verbose", action="count", help="more log output (-v info, -vv debug)",
                        **(kept or {"default": 0}))
    parser.add_argument("--log-level", choices=LOG_LEVELS, help="log level (default warning)", **kept)


def setup(parser: argparse.ArgumentParser, args: argparse.Namespace, root):
    """Logging and the program's configuration (root: its sections); one clear line on a bad config."""
    if args.log_level:
        level = getattr(logging, args.log_level.upper())
    else:
        level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.print_config:
        sys.stdout.write(render_defaults(root))
        raise SystemExit(0)
    try:
        return load_config(args.config, root)
    except ConfigError as exc:
        parser.exit(EXIT_USAGE, f"{parser.prog}: error: {exc}\n")


def fail(parser: argparse.ArgumentParser, message: str, status: int = EXIT_FAILURE):
    parser.exit(status, f"{parser.prog}: error: {message}\n")


def crash_log_directory() -> Path:
    """Where tracebacks of internal errors go: $KESTREL_CRASH_DIR, else the temporary directory."""
    return Path(os.environ.get("KESTREL_CRASH_DIR") or tempfile.gettempdir())


def run_program(prog: str, main, argv=None) -> int:
    """Run `main(argv)`; an unexpected exception becomes one line, a log file and EXIT_INTERNAL."""
    try:
        return main(argv)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence: say where the traceback went
        stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
        text = "".join(traceback.format_exception(exc))
        try:
            directory = crash_log_directory()
            directory.mkdir(parents=True, exist_ok=True)
            path = directory / f"{prog}-crash-{stamp}-{os.getpid()}.log"
            path.write_text(f"{prog} {' '.join(sys.argv[1:] if argv is None else argv)}\n{text}")
            where = f"traceback in {path}"
        except OSError as write_error:
            where = f"traceback could not be saved ({write_error.strerror}):\n{text}"
        print(f"{prog}: internal error: {type(exc).__name__}: {exc} ({where})", file=sys.stderr)
        return EXIT_INTERNAL
