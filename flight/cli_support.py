"""What the three programs share on the command line: config, logging, one-line errors."""
from __future__ import annotations

import argparse
import logging
import sys

from .config import ConfigError, KestrelConfig, load_config, render_defaults

LOG_LEVELS = ("debug", "info", "warning", "error")


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


def setup(parser: argparse.ArgumentParser, args: argparse.Namespace) -> KestrelConfig:
    """Logging and configuration from parsed arguments; exits with one clear line on a bad config."""
    if args.log_level:
        level = getattr(logging, args.log_level.upper())
    else:
        level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s %(message)s", stream=sys.stderr)
    if args.print_config:
        sys.stdout.write(render_defaults())
        raise SystemExit(0)
    try:
        return load_config(args.config)
    except ConfigError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")


def fail(parser: argparse.ArgumentParser, message: str, status: int = 1):
    parser.exit(status, f"{parser.prog}: error: {message}\n")
