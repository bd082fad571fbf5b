"""The shared TOML configuration: documented defaults and ranges, unknown keys refused,
bad values named, each program reading its own sections of the one file."""
import dataclasses
import tomllib

import pytest

from flight.config import FlightProgramConfig
from ground.config import GroundProgramConfig
from hil.config import KestrelConfig
from kestrel.config import FILE_SECTIONS, ConfigError, config_from_dict, load_config, render_defaults

ROOTS = {"flight": FlightProgramConfig, "ground": GroundProgramConfig, "hil": KestrelConfig}


def test_rendered_defaults_parse_back_to_the_defaults():
    for root in ROOTS.values():
        text = render_defaults(root)
        assert config_from_dict(tomllib.loads(text), root) == root()
        # Every key is documented: each assignment line follows a comment line.
        lines = text.splitlines()
        for i, line in enumerate(lines):
            if " = " in line and not line.startswith("#"):
                assert lines[i - 1].startswith("# ") and len(lines[i - 1]) > 4, line


def test_ranges_are_printed_beside_the_defaults():
    text = render_defaults(GroundProgramConfig)
    assert "# octets asked of the port or file per read [1..16777216]\nread_size = 4096" in text


def test_each_program_owns_its_sections_and_the_bench_reads_them_all():
    names = {root: {f.name for f in dataclasses.fields(cls)} for root, cls in ROOTS.items()}
    assert names["hil"] == set(FILE_SECTIONS)
    for program in ("flight", "ground"):
        for section in names[program]:
            assert FILE_SECTIONS[section] in (program, "kestrel"), section
    # Each section is declared by one class, whichever program reads it.
    for section in names["flight"] & names["ground"]:
        assert type(getattr(FlightProgramConfig(), section)) is type(getattr(GroundProgramConfig(), section))


def test_a_program_leaves_other_programs_sections_to_them(tmp_path):
    path = tmp_path / "k.toml"
    path.write_text("[ground]\nread_size = 0\n[sensor]\nframe_rate_hz = 5\n")
    assert load_config(path, FlightProgramConfig).sensor.frame_rate_hz == 5.0
    with pytest.raises(ConfigError, match=r"read_size must be 1\.\.16777216, got 0"):
        load_config(path, GroundProgramConfig)
    with pytest.raises(ConfigError, match="read_size"):
        load_config(path, KestrelConfig)


def test_missing_file_is_all_defaults_and_values_override(tmp_path):
    assert load_config(None, KestrelConfig) == KestrelConfig()
    path = tmp_path / "k.toml"
    path.write_text('[link]\nframe_length = 1115\nreed_solomon = true\ninterleave_depth = 5\n'
                    '[link.time]\nfine_octets = 3\n[sensor]\nframe_rate_hz = 5\n')
    config = load_config(path, KestrelConfig)
    assert config.link.frame_length == 1115 and config.link.interleave_depth == 5
    assert config.link.time.fine_octets == 3
    assert config.sensor.frame_rate_hz == 5.0 and isinstance(config.sensor.frame_rate_hz, float)
    assert config.detection == KestrelConfig().detection


def test_the_link_is_reed_solomon_coded_by_default():
    link = KestrelConfig().link
    assert link.reed_solomon and link.interleave_depth == 1 and link.frame_length == 223


@pytest.mark.parametrize("text, message", [
    ("[link]\nframe_lenght = 100\n", "unknown key 'link.frame_lenght'"),
    ("[linc]\n", "unknown key 'linc'"),
    ("[link]\nframe_length = '100'\n", "link.frame_length must be an integer"),
    ("[link]\nrandomize = 1\n", "link.randomize must be true or false"),
    ("[link]\nreed_solomon = true\nframe_length = 1200\ninterleave_depth = 5\n", "does not fit Reed-Solomon"),
    ("[link]\ninterleave_depth = 6\n", "interleave_depth must be one of"),
    ("[link]\nvc_detections = 3\n", "not among vc_priority"),
    ("[link]\nreed_solomon = false\nframe_length = 5\n", "frame_length must be 8..2048, got 5"),
    ("[link]\nreed_solomon = false\nframe_length = 8\n", "TM frame length must be 9..2048"),
    ("[link]\nspacecraft_id = 5000\n", "spacecraft_id must be 0..1023, got 5000"),
    ("[link]\ndestination_id = 99999\n", "destination_id must be 0..65535"),
    ("[link.time]\ncoarse_octets = 9\n", "coarse_octets must be 1..7"),
    ("[link.time]\ncoarse_octets = 1\n", "coarse_octets 1 counts 256 s, fewer than"),
    ("[link.time]\nmission_end = '1950-01-01T00:00:00'\n", "must come after the epoch"),
    ("[link.time]\nepoch = 'yesterday'\n", "is not an ISO 8601 instant"),
    ("[ground]\nsync_search_errors = 4\nsync_lock_errors = 2\n", "sync_lock_errors (2) must be at least"),
    ("[ground]\nsync_flywheel = -1\n", "sync_flywheel must be 0..64"),
    ("[ground]\nread_size = 0\n", "read_size must be 1..16777216, got 0"),
    ("[hil]\nduration_s = nan\n", "duration_s must be a finite number"),
    ("[hil]\nduration_s = inf\n", "duration_s must be a finite number"),
    ("[detection]\nk_sigma = -1\n", "k_sigma must be > 0"),
    ("[detection]\nhot_off = 8.0\n", "hot_off (8.0) must not exceed hot_on"),
    ("[scene]\nspeed_range = [3.0]\n", "scene.speed_range must be an array of 2 values"),
    ("link = 3\n", "link must be a table"),
    ("[link\n", "not valid TOML"),
])
def test_bad_configs_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path, KestrelConfig)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_a_file_that_is_not_utf8_is_one_line(tmp_path):
    path = tmp_path / "latin1.toml"
    path.write_bytes("[flight]\nport = 'caf\xe9'\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=r"is not UTF-8 text \(octet 20\)"):
        load_config(path, KestrelConfig)


def test_absent_file_and_directory_are_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml", KestrelConfig)
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path, KestrelConfig)


def test_virtual_channel_list_is_checked_once_for_flight_and_ground(tmp_path):
    for bad, message in (("[0, 7]", "vc_priority must be 0..6"), ("[1, 1]", "vc_priority must list distinct"),
                         ("[]", "vc_priority must list distinct"), ("[0, 9]", "vc_priority must be 0..6")):
        path = tmp_path / "vc.toml"
        path.write_text(f"[link]\nvc_priority = {bad}\nvc_housekeeping = 0\nvc_events = 0\n"
                        "vc_detections = 0\nvc_images = 0\n")
        for root in (FlightProgramConfig, GroundProgramConfig):
            with pytest.raises(ConfigError, match=message):
                load_config(path, root)
