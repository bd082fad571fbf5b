"""Run a fuzz campaign on one uplink parser (or all four, one after the other).

    python -m tests.fuzz.run --parser cltu --runs 1000000                  # atheris, coverage-guided
    python -m tests.fuzz.run --parser all --runs 1000000 --engine random   # seeded random bytes, no coverage

`--engine atheris` (the default when atheris imports) instruments kestrel and flight and lets libFuzzer
mutate the bytes the harness reads its choices from; it stops at the first failure, saving the input as
crash-* (or timeout-* for a hang past --timeout) in --artifacts, as libFuzzer does. `--engine random`
feeds seeded random bytes through the same harness with no coverage feedback; it records every failure
(its exception type, the first input of each kind saved in --artifacts) and goes on. Both print one
summary line: runs, seconds, inputs/s, property violations, foreign exception types, hangs.
Exit status 0 only when there were none.
"""
from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import random
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

PARSERS = ("cltu", "tcframe", "sdls", "pus")


class Hang(BaseException):
    """An input ran past --timeout (BaseException: no harness `except Exception` may swallow it)."""


def harness(parser: str):
    return importlib.import_module(f"tests.fuzz.{parser}").Harness()


def close(h) -> None:
    if hasattr(h, "close"):
        h.close()


def run_random(parser: str, runs: int, seed: int, max_len: int, timeout: float, artifacts: Path) -> dict:
    """Seeded random inputs through the harness; every failure recorded, the campaign goes on."""
    h = harness(parser)
    rng = random.Random(seed)
    failures: Counter = Counter()
    saved = set()
    slowest = 0.0

    def alarm(signum, frame):
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    start = time.perf_counter()
    try:
        for _ in range(runs):
            data = rng.randbytes(rng.randrange(max_len + 1))
            begun = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                h.one_input(data)
            except Hang:
                kind = "hang"
            except Exception as exc:     # noqa: BLE001 - the campaign's job is to catch and name any type
                kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
            else:
                kind = None
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            slowest = max(slowest, time.perf_counter() - begun)
            if kind is not None:
                failures[kind] += 1
                if kind not in saved:
                    saved.add(kind)
                    artifacts.mkdir(parents=True, exist_ok=True)
                    name = f"{parser}-{kind.rsplit('.', 1)[-1]}-{hashlib.sha1(data).hexdigest()[:12]}"
                    (artifacts / name).write_bytes(data)
    finally:
        signal.signal(signal.SIGALRM, previous)
        close(h)
    seconds = time.perf_counter() - start
    violations = failures.pop("tests.fuzz.common.PropertyViolation", 0)
    hangs = failures.pop("hang", 0)
    return dict(parser=parser, engine="random", seed=seed, runs=runs, seconds=round(seconds, 1),
                inputs_per_s=round(runs / seconds), property_violations=violations, hangs=hangs,
                foreign_exceptions=dict(failures), slowest_input_ms=round(1000 * slowest, 1))


def run_atheris(parser: str, runs: int, seed: int, max_len: int, timeout: float, artifacts: Path) -> None:
    """libFuzzer drives; it exits the process when done (or at the first failure) with its own report."""
    import atheris

    with atheris.instrument_imports(include=["kestrel", "flight", "tests.fuzz"]):
        h = harness(parser)
    count = 0
    start = time.perf_counter()

    def one(data: bytes) -> None:
        nonlocal count
        count += 1
        h.one_input(data)
        if count == runs:
            seconds = time.perf_counter() - start
            print(json.dumps(dict(parser=parser, engine="atheris", seed=seed, runs=count, seconds=round(seconds, 1),
                                  inputs_per_s=round(count / seconds), property_violations=0, hangs=0,
                                  foreign_exceptions={})), flush=True)
            close(h)

    artifacts.mkdir(parents=True, exist_ok=True)
    atheris.Setup([sys.argv[0], f"-runs={runs}", f"-seed={seed}", f"-max_len={max_len}",
                   f"-timeout={max(1, round(timeout))}", f"-artifact_prefix={artifacts}/{parser}-",
                   "-print_final_stats=1", "-len_control=0"], one)
    atheris.Fuzz()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--parser", choices=PARSERS + ("all",), required=True)
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per parser (default 10^6)")
    parser.add_argument("--engine", choices=("atheris", "random"), default=None,
                        help="default: atheris when it imports, else random")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--max-len", type=int, default=512, help="longest input, octets")
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds one input may take before it is a hang (wall clock: a loaded machine needs room)")
    parser.add_argument("--artifacts", type=Path, default=Path(tempfile.gettempdir()) / "kestrel-fuzz",
                        help="where failing inputs are saved")
    args = parser.parse_args(argv)
    engine = args.engine
    if engine is None:
        try:
            import atheris  # noqa: F401
            engine = "atheris"
        except ImportError:
            engine = "random"
            print("atheris is not installed: the coverage-free random engine runs instead", file=sys.stderr)
    if engine == "atheris":
        if args.parser == "all":
            parser.error("atheris runs one parser per process: name one")
        run_atheris(args.parser, args.runs, args.seed, args.max_len, args.timeout, args.artifacts)
        return 0          # not reached: libFuzzer exits
    clean = True
    for name in PARSERS if args.parser == "all" else (args.parser,):
        summary = run_random(name, args.runs, args.seed, args.max_len, args.timeout, args.artifacts)
        print(json.dumps(summary), flush=True)
        clean &= not (summary["property_violations"] or summary["hangs"] or summary["foreign_exceptions"])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main())
