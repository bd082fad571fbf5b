"""The shared TOML configuration: documented defaults, unknown keys refused, bad values named."""
import tomllib

import pytest

from flight.config import ConfigError, KestrelConfig, config_from_dict, load_config, render_defaults


def test_rendered_defaults_parse_back_to_the_defaults():
    text = render_defaults()
    assert config_from_dict(tomllib.loads(text)) == KestrelConfig()
    # Every key is documented: each assignment line follows a comment line.
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if " = " in line and not line.startswith("#"):
            assert lines[i - 1].startswith("# ") and len(lines[i - 1]) > 4, line


def test_missing_file_is_all_defaults_and_values_override(tmp_path):
    assert load_config(None) == KestrelConfig()
    path = tmp_path / "k.toml"
    path.write_text('[link]\nframe_length = 1115\nreed_solomon = true\ninterleave_depth = 5\n'
                    '[link.time]\nfine_octets = 3\n[sensor]\nframe_rate_hz = 5\n')
    config = load_config(path)
    assert config.link.frame_length == 1115 and config.link.interleave_depth == 5
    assert config.link.time.fine_octets == 3
    assert config.sensor.frame_rate_hz == 5.0 and isinstance(config.sensor.frame_rate_hz, float)
    assert config.detection == KestrelConfig().detection


@pytest.mark.parametrize("text, message", [
    ("[link]\nframe_lenght = 100\n", "unknown key 'link.frame_lenght'"),
    ("[linc]\n", "unknown key 'linc'"),
    ("[link]\nframe_length = '100'\n", "link.frame_length must be an integer"),
    ("[link]\nrandomize = 1\n", "link.randomize must be true or false"),
    ("[link]\nreed_solomon = true\nframe_length = 1200\ninterleave_depth = 5\n", "does not fit Reed-Solomon"),
    ("[link]\ninterleave_depth = 6\n", "interleave_depth must be one of"),
    ("[link]\nvc_detections = 3\n", "not among vc_priority"),
    ("[link.time]\ncoarse_octets = 9\n", "coarse_octets"),
    ("[sensor]\nsource = 'camera'\n", "sensor source must be"),
    ("[detection]\nk_sigma = -1\n", "k_sigma"),
    ("link = 3\n", "link must be a table"),
    ("[link\n", "not valid TOML"),
])
def test_bad_configs_are_named(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


def test_absent_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.toml")


def test_virtual_channel_list_is_checked_once_for_flight_and_ground(tmp_path):
    for bad in ("[0, 7]", "[1, 1]", "[]", "[0, 9]"):
        path = tmp_path / "vc.toml"
        path.write_text(f"[link]\nvc_priority = {bad}\nvc_housekeeping = 0\nvc_events = 0\n"
                        "vc_detections = 0\nvc_images = 0\n")
        with pytest.raises(ConfigError, match="vc_priority must list distinct virtual channels 0..6"):
            load_config(path)
