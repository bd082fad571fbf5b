"""kestrel-hil: the test bench."""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from kestrel.cli import EXIT_USAGE, add_common_arguments, count, fail, run_program, seconds, setup

from .config import KestrelConfig


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kestrel-hil", description="Kestrel hardware-in-the-loop bench.")
    add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = sub.add_parser("demo", help="run flight and ground over a paced pseudo-serial link and score the pass")
    add_common_arguments(demo, subcommand=True)
    demo.add_argument("--frames", metavar="DIR", help="fly recorded .npy frames instead of the simulated scene")
    demo.add_argument("--capture", metavar="FILE", help="write the exact downlink bytes to FILE")
    demo.add_argument("--out", metavar="DIR", help="keep the ground's outputs and report.json in DIR")
    demo.add_argument("--duration", type=seconds, metavar="S", help="seconds of scene (default hil.duration_s)")
    metrics = sub.add_parser("metrics", help="score the detector against simulated truth: "
                             "'table' (Pd per SNR class, false alarms, centroid vs Cramer-Rao), 'sweep' (Pd vs FA), "
                             "'tracks' (alerts: targets alerted, frames to first alert, false alerts, GOSPA, purity) "
                             "or 'family' (Pd per SNR and speed class per kind over drawn scenes, development or "
                             "held-out seeds)")
    add_common_arguments(metrics, subcommand=True)
    metrics.add_argument("what", choices=("table", "sweep", "tracks", "family"))
    metrics.add_argument("--frames", type=count, help="frames per scene (default 200; family 80)")
    metrics.add_argument("--size", type=count, default=256, help="frame side in pixels (default 256)")
    metrics.add_argument("--seed", type=count, default=3, help="scene seed (tracks: the first of --seeds seeds)")
    metrics.add_argument("--seeds", type=count, default=1, help="tracks: how many consecutive seeds (default 1)")
    metrics.add_argument("--kind", default="cloudy", choices=("clear", "cloudy", "heavy"), help="sweep and tracks: scene kind")
    metrics.add_argument("--no-calibration", action="store_true",
                         help="sweep and family: without the calibration map")
    seeds = metrics.add_mutually_exclusive_group()
    seeds.add_argument("--held-out", action="store_true",
                       help="family and tracks: the scene family's held-out seeds (for reporting only; never tune on them)")
    seeds.add_argument("--development", action="store_true", help="family and tracks: the scene family's development seeds")
    metrics.add_argument("--scenes", type=count, default=12, help="family and tracks: how many family scenes (default 12)")
    metrics.add_argument("--skip", type=count, default=0, help="family: start at this scene of the seed range")
    metrics.add_argument("--max-side", type=count, default=1024,
                         help="family: cap on frame width and height (default 1024; the family draws 256..2048)")
    metrics.add_argument("--jobs", type=count, default=1, help="family: scenes run in this many processes")
    metrics.add_argument("--json", metavar="FILE", help="family and tracks: also write the figures as JSON to FILE")
    run = sub.add_parser("run", help="fly scenarios (shipped names or TOML files) over the impaired radio and judge "
                         "each against its bars; exit 0 only if every bar of every scenario is met")
    add_common_arguments(run, subcommand=True)
    run.add_argument("scenarios", nargs="*", metavar="SCENARIO", help="a shipped scenario's name or a .toml file")
    run.add_argument("--list", action="store_true", help="print the shipped scenarios, one per line, and stop")
    run.add_argument("--all", action="store_true", help="run every shipped scenario")
    run.add_argument("--out", metavar="DIR", default="hil-campaign",
                     help="reports (report.md, report.html, result.json per scenario; junit.xml) and each run's "
                     "outputs (default ./hil-campaign)")
    run.add_argument("--jobs", type=count, default=1, metavar="N", help="scenarios run at once (default 1)")
    run.add_argument("--flight-port", metavar="URL",
                     help="real-hardware mode: the board's port, as the flight program on the board opens it (the "
                     "bench prints the command to start there); needs --ground-port")
    run.add_argument("--ground-port", metavar="URL",
                     help="real-hardware mode: the bench's end of the real line to the board (device, socket://, "
                     "rfc2217://); the bench starts neither the flight program nor the simulated radio")
    run.add_argument("--board-timeout", type=seconds, default=120.0, metavar="S",
                     help="real-hardware mode: seconds to wait for the board's first octet (default 120)")
    scene = sub.add_parser("scene", help="write simulated frames as .npy files")
    add_common_arguments(scene, subcommand=True)
    scene.add_argument("--count", type=count, default=100, help="number of frames")
    scene.add_argument("--out", metavar="DIR", required=True)
    return parser


def _main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None and not args.print_config:
        parser.print_usage(sys.stderr)
        fail(parser, "a command is required: demo, metrics or scene", EXIT_USAGE)
    config = setup(parser, args, KestrelConfig)
    if args.command == "scene":
        from .scene import SceneSimulator, write_npy_frames

        if args.count < 1:
            fail(parser, f"--count must be >= 1, got {args.count}", EXIT_USAGE)
        paths = write_npy_frames(SceneSimulator(config.scene), args.count, args.out)
        print(f"wrote {len(paths)} frames to {args.out}")
        return 0
    if args.command == "metrics":
        from . import metrics

        if args.frames is None:
            args.frames = 80 if args.what == "family" else 200
        if args.frames <= config.hil.warmup_frames or args.size < 32:
            fail(parser, f"--frames must exceed hil.warmup_frames ({config.hil.warmup_frames}) "
                 f"and --size be at least 32", EXIT_USAGE)
        if args.what == "family":
            return _metrics_family(parser, args, config)
        if args.what == "tracks":
            return _metrics_tracks(parser, args, config)
        elif args.what == "table":
            metrics.table(args.frames, args.size, args.seed, config=config.detection, hil=config.hil)
        else:
            metrics.sweep(args.kind, args.frames, args.size, args.seed,
                          with_calibration=not args.no_calibration, config=config.detection, hil=config.hil)
        return 0
    if args.command == "run":
        return _run(parser, args, config)
    from .demo import run_demo

    frames = Path(args.frames) if args.frames else None
    if frames is not None and not frames.is_dir():
        fail(parser, f"--frames {frames}: not a directory", EXIT_USAGE)
    try:
        report = run_demo(config, args.config, Path(args.out) if args.out else None, frames,
                          Path(args.capture) if args.capture else None, args.duration)
    except (OSError, ValueError, RuntimeError) as exc:
        fail(parser, str(exc))
    print(report.text())
    return 0 if report.passed else 1


def _metrics_family(parser, args, config) -> int:
    from . import metrics

    if not (args.held_out or args.development):
        fail(parser, "metrics family needs --held-out (report only) or --development (develop and tune)", EXIT_USAGE)
    seeds = _family_seeds(parser, args)
    run = metrics.FamilyRun(seeds, args.frames, args.max_side, not args.no_calibration, config.detection,
                            config.hil.warmup_frames)
    report = metrics.family(run, args.jobs, args.held_out)
    _write_json(parser, args.json, report)
    return 0


def _write_json(parser, path: str | None, report: dict) -> None:
    """`--json FILE`: the figures as strict JSON (a target never alerted has latency null, not Infinity)."""
    import json
    import math

    def strict(value):
        if isinstance(value, dict):
            return {k: strict(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [strict(v) for v in value]
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(strict(report), f, indent=1, allow_nan=False)
    except OSError as exc:
        fail(parser, f"--json {path}: {exc}")


def _family_seeds(parser, args) -> tuple[int, ...]:
    from .scene_family import family_seed

    if args.scenes < 1 or args.jobs < 1 or args.max_side < 64:
        fail(parser, f"--scenes and --jobs must be >= 1 and --max-side >= 64, got {args.scenes}, {args.jobs}, "
             f"{args.max_side}", EXIT_USAGE)
    try:
        return tuple(family_seed(args.skip + i, args.held_out) for i in range(args.scenes))
    except ValueError as exc:
        fail(parser, str(exc), EXIT_USAGE)


def _metrics_tracks(parser, args, config) -> int:
    """Tracks on the simulator's own scenes (--seed/--seeds/--kind/--size), or on the scene family's
    (--held-out or --development, --scenes, --skip, --max-side): one table per scene kind."""
    from . import metrics
    from .scene_family import draw_scene

    if args.held_out or args.development:
        scenes = [draw_scene(seed, args.max_side) for seed in _family_seeds(parser, args)]
        label = "HELD-OUT family" if args.held_out else "development family"
    else:
        scenes = [metrics.scene_for(args.kind, args.size, seed)
                  for seed in range(args.seed, args.seed + max(args.seeds, 1))]
        label = ""
    report = metrics.track_table(scenes, args.frames, tracker=config.tracking, detector=config.detection,
                                 hil=config.hil, label=label)
    _write_json(parser, args.json, report)
    return 0


def _run(parser, args, config) -> int:
    from .scenario import ScenarioError, resolve, shipped

    if args.list:
        for name in shipped():
            print(name)
        return 0
    names = list(shipped()) if args.all else args.scenarios
    if not names:
        fail(parser, "run needs SCENARIO names or files, or --all (--list names the shipped ones)", EXIT_USAGE)
    if args.jobs < 1:
        fail(parser, f"--jobs must be >= 1, got {args.jobs}", EXIT_USAGE)
    ports = None
    if args.flight_port or args.ground_port:
        if not (args.flight_port and args.ground_port):
            fail(parser, "real-hardware mode needs both --flight-port and --ground-port", EXIT_USAGE)
        from .campaign_hardware import HardwarePorts

        ports = HardwarePorts(args.flight_port, args.ground_port, args.board_timeout)
    try:
        scenarios = [resolve(name) for name in names]
    except ScenarioError as exc:
        fail(parser, str(exc), EXIT_USAGE)
    if len({s.name for s in scenarios}) != len(scenarios):
        fail(parser, "two scenarios have one name; their reports would share a directory", EXIT_USAGE)
    from .campaign import run_campaign
    from .campaign_report import write_reports

    out = Path(args.out)
    started = time.monotonic()
    results = run_campaign(scenarios, config, args.config, out, jobs=args.jobs,
                           progress=lambda line: print(line, flush=True), ports=ports)
    write_reports(results, out)
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'} {r.name}")
        for skipped in r.skipped:
            print(f"  [SKIPPED] {skipped['fault']}: {skipped['reason']}")
        for bar in r.bars:
            if not bar.passed:
                print(f"  [FAIL] {bar.name}: {bar.evidence}")
    passed = all(r.passed for r in results)
    print(f"{sum(r.passed for r in results)} of {len(results)} scenarios passed in {time.monotonic() - started:.0f} s; "
          f"reports in {out} (junit.xml, <scenario>/report.md)")
    return 0 if passed else 1


def main(argv=None) -> int:
    return run_program("kestrel-hil", _main, argv)
