"""A hypothesis campaign over configurations, ports and output directories: no traceback, ever.

Configurations are drawn from the declarations themselves (every section,
key, type and declared range, values at and beyond the bounds, wrong types,
NaN, huge numbers, unknown keys). Each must either be refused with one
ConfigError or give a configuration from which every flight and ground
object builds and runs a little. A smaller set runs the installed programs
with such a file, a drawn port URL and a drawn output directory, and reads
their stderr for a traceback.

Short by default; `KESTREL_CAMPAIGN_EXAMPLES=2000 pytest tests/test_config_campaign.py`
runs the long campaign.
"""
import dataclasses
import math
import os
import subprocess
import sys
import time
import typing

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings, strategies as st

from flight.config import FlightProgramConfig
from flight.detection import Detector
from flight.multiplexer import MasterChannelMultiplexer
from flight.telemetry import TelemetryPacketFactory
from ground.config import GroundProgramConfig
from ground.decoder import GroundDecoder
from hil.config import KestrelConfig
from kestrel.config import ConfigError, config_from_dict, load_config
from kestrel.link.config import build_channel_coder, frame_layout
from kestrel.link.timecode import CucCodec
from tests.support import NullArchive

LONG = int(os.environ.get("KESTREL_CAMPAIGN_EXAMPLES", "0"))
QUICK = dict(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
PROGRAMS = dict(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))


def near(bound, integer: bool):
    if integer:
        return st.sampled_from([bound - 1, bound, bound + 1])
    return st.sampled_from([bound - 1e-9, bound, bound + 1e-9, bound * 2, bound / 2])


def value_for(field: dataclasses.Field, hint):
    """Plausible, boundary and hostile values for one declared setting."""
    m = field.metadata
    hostile = st.one_of(st.text(max_size=8), st.booleans(), st.just(float("nan")), st.just(float("inf")),
                        st.integers(-2**70, 2**70), st.lists(st.integers(), max_size=3), st.just({}))
    if dataclasses.is_dataclass(hint):
        return st.one_of(table_for(hint), table_for(hint), hostile)
    origin = typing.get_origin(hint)
    if origin is tuple:
        args = typing.get_args(hint)
        item = value_for(field, args[0])
        length = st.integers(0, 4) if args[-1] is Ellipsis else st.sampled_from([len(args), len(args), 1, 3])
        return st.one_of(length.flatmap(lambda n: st.lists(item, min_size=n, max_size=n)), hostile)
    if m.get("choices") is not None:
        return st.one_of(st.sampled_from(list(m["choices"])), st.sampled_from(list(m["choices"])), hostile)
    if hint is bool:
        return st.one_of(st.booleans(), st.booleans(), hostile)
    if hint in (int, float):
        integer = hint is int
        bounds = [b for b in (m.get("low"), m.get("high"), m.get("above")) if b is not None]
        base = st.integers(-10, 10**6) if integer else st.floats(-10.0, 1e6, allow_nan=False)
        candidates = [base, base] + [near(b, integer) for b in bounds]
        return st.one_of(*candidates, hostile)
    if hint is str:
        return st.one_of(st.sampled_from(["", "2030-01-01T00:00:00", "1958-01-01T00:00:00", "2200-01-01T00:00:00",
                                          "sim://clear?width=32&height=32", "npy:/nonexistent", "loop://"]),
                         hostile)
    return hostile


def table_for(cls):
    hints = typing.get_type_hints(cls)
    fields = {f.name: value_for(f, hints[f.name]) for f in dataclasses.fields(cls)}
    # A few keys a table, as a real file sets: most drawn files are then usable, and each key still varies.
    known = st.lists(st.sampled_from(sorted(fields)), max_size=3, unique=True).flatmap(
        lambda keys: st.fixed_dictionaries({k: fields[k] for k in keys}))
    unknown = st.dictionaries(st.text(min_size=1, max_size=6), st.integers(), max_size=1)
    return st.one_of(known, known, known, st.builds(lambda a, b: {**a, **b}, known, unknown))


CONFIG_TABLES = table_for(KestrelConfig)


def exercise(config: KestrelConfig) -> None:
    """What the flight program and the ground station build from a config at start, and a little use."""
    link = config.link
    layout, coder = frame_layout(link), build_channel_coder(link)
    cuc = CucCodec(link.time)
    packets = TelemetryPacketFactory(cuc, link.destination_id, time.time)
    mux = MasterChannelMultiplexer(link.spacecraft_id, layout, tuple(link.vc_priority),
                                   max_pending_octets=link.max_pending_octets)
    mux.push(link.vc_detections, packets.make(110, 130, 1, b"\x00" * 40))
    # Every frame the packet takes (a 9-octet frame carries one octet of it), then two idle frames.
    frames = []
    while (frame := mux.next_frame(flush=True)) is not None:
        frames.append(frame)
    stream = b"".join(coder.encode(f) for f in frames + [mux.idle_frame(), mux.idle_frame()])
    decoder = GroundDecoder(config, NullArchive())
    decoder.feed(stream)
    summary = decoder.finish()
    assert summary.packets["packets"] >= 1
    Detector(config.detection, (32, 32)).process(np.full((32, 32), 100, np.uint16))


@given(CONFIG_TABLES)
@settings(**(dict(QUICK, max_examples=LONG) if LONG else QUICK))
def test_every_drawn_config_is_refused_in_one_line_or_works(table):
    try:
        config = config_from_dict(table, KestrelConfig)
    except ConfigError as exc:
        event("refused")
        assert "\n" not in str(exc) and str(exc)
        return
    event("accepted")
    exercise(config)


def toml_text(table: dict, prefix: str = "") -> str:
    """A TOML rendering of a drawn table (values TOML cannot hold are written as strings)."""
    lines, tables = [], []
    for key, value in table.items():
        name = '"' + key.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
        if isinstance(value, dict):
            tables.append((prefix + name, value))
        else:
            lines.append(f"{name} = {toml_value(value)}")
    text = "\n".join(lines) + "\n"
    for name, value in tables:
        text += f"[{name}]\n" + toml_text(value, name + ".")
    return text


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, int):
        return str(value) if -2**63 <= value < 2**63 else f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}"
    return '"' + str(value).encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'


OUT_DIRS = st.sampled_from(["new", "nested/deeper", "existing-file", "dev-null", "existing-dir"])
PORTS = st.sampled_from(["loop://", "socket://127.0.0.1:1", "/dev/nonexistent-tty", "nonsense://x", "", "rfc2217://"])


def output_dir(kind: str, root):
    if kind == "existing-file":
        (root / "file").write_text("x")
        return root / "file"
    if kind == "dev-null":
        return "/dev/null"
    if kind == "existing-dir":
        (root / "dir").mkdir(exist_ok=True)
        return root / "dir"
    return root / kind


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    from tests.test_flight_to_ground import fly, small_config

    stream, _ = fly(small_config())
    path = tmp_path_factory.mktemp("rec") / "pass.bin"
    path.write_bytes(stream)
    return path


def run(args, timeout=60):
    return subprocess.run([sys.executable, "-m", *map(str, args)], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


@given(table=CONFIG_TABLES, out=OUT_DIRS, port=PORTS)
@settings(**(dict(PROGRAMS, max_examples=max(12, LONG // 20)) if LONG else PROGRAMS))
def test_the_programs_never_print_a_traceback(tmp_path_factory, recording, table, out, port):
    root = tmp_path_factory.mktemp("campaign")
    config = root / "k.toml"
    config.write_text(toml_text(table))
    where = output_dir(out, root)
    results = [
        run(["ground", "--config", config, "decode", recording, "--out", where]),
        run(["ground", "--config", config, "listen", "--port", port or "loop://", "--out", where,
             "--duration", "0.2"]),
        run(["flight", "--config", config, "--port", port or "loop://", "--max-frames", "2",
             "--source", "sim://clear?width=32&height=32"]),
    ]
    for result, root in zip(results, (GroundProgramConfig, GroundProgramConfig, FlightProgramConfig)):
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode in (0, 1, 2, 3, 130), (result.returncode, result.stderr)
        if result.returncode:
            assert result.stderr.strip(), "a failure says why"
        try:
            load_config(config, root)
        except ConfigError:
            # A config the program cannot use is refused before anything else happens.
            assert result.returncode == 2 and "error:" in result.stderr, result.stderr
