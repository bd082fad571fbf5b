"""Frame sources by URL: npy: built in, sim:// plugged in by the bench through its entry point."""
import numpy as np
import pytest

from flight.sensor import FrameLimits, SensorError, npy_directory, open_sensor, source_schemes
from hil.scene import SceneConfig, SceneSimulator, write_npy_frames
from hil.sim_source import scene_from_url, scene_url

LIMITS = FrameLimits(max_pixels=4096 * 4096)


def test_the_bench_registers_sim_and_the_flight_program_opens_it_by_url():
    assert "sim" in source_schemes() and "npy" in source_schemes()
    source = open_sensor("sim://heavy?seed=7&width=64&height=48", LIMITS)
    reference = SceneSimulator(SceneConfig(kind="heavy", seed=7, width=64, height=48))
    assert source.shape == (48, 64)
    for expected_index in range(3):
        index, pixels = source.read()
        assert index == expected_index
        np.testing.assert_array_equal(pixels, reference.frame(index)[0])
    np.testing.assert_array_equal(source.calibration_bad_pixels, reference.calibration_bad_pixels())


@pytest.mark.parametrize("scene", [
    SceneConfig(),
    SceneConfig(kind="clear", seed=3, width=512, height=300, snr_values=(3.0, 5.5), speed_range=(0.05, 8.0)),
    SceneConfig(drift=(-0.25, 1.5), jitter_rms=0.0, hot_level=(1.0, 2.5)),
])
def test_scene_urls_round_trip(scene):
    assert scene_from_url(scene_url(scene)) == scene


@pytest.mark.parametrize("url, message", [
    ("sim://foggy", "kind must be one of"),
    ("sim://clear?wdith=5", "unknown scene setting 'wdith'"),
    ("sim://clear?width=abc", "scene setting width: 'abc' is not an integer"),
    ("sim://clear?width=4", "width must be 16..8192, got 4"),
    ("sim://clear?speed_range=1", "speed_range must be an array of 2 values"),
    ("sim://clear?width=8192&height=8192", "exceeds sensor.max_frame_pixels"),
    ("camera://0", "no frame source for 'camera://0': known schemes are npy:, sim:"),
    ("frames", "no frame source for 'frames'"),
])
def test_bad_source_urls_are_one_clear_error(url, message):
    with pytest.raises(SensorError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_sensor(url, FrameLimits(max_pixels=4096 * 4096))


def test_npy_urls_name_a_directory(tmp_path, monkeypatch):
    assert npy_directory("npy:frames") == "frames"
    assert npy_directory("npy://frames/a") == "frames/a"
    assert npy_directory("npy:///abs/frames") == "/abs/frames"
    write_npy_frames(SceneSimulator(SceneConfig(width=32, height=32)), 2, tmp_path / "f")
    monkeypatch.chdir(tmp_path)
    assert open_sensor("npy:f", LIMITS).shape == (32, 32)
    assert open_sensor(f"npy://{tmp_path}/f", LIMITS).shape == (32, 32)


def test_a_frame_larger_than_the_limit_is_refused_before_it_is_read(tmp_path):
    (tmp_path / "f").mkdir()
    np.save(tmp_path / "f" / "a.npy", np.zeros((64, 64), np.uint16))
    with pytest.raises(SensorError, match="64x64 frame has 4096 pixels, more than sensor.max_frame_pixels 1000"):
        open_sensor(f"npy:{tmp_path}/f", FrameLimits(max_pixels=1000))
    # A header that declares a huge frame over a short file: refused by shape, nothing allocated.
    header = np.lib.format.header_data_from_array_1_0(np.zeros((8192, 8192), np.uint16))
    with open(tmp_path / "f" / "b.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        handle.write(b"\0" * 1000)
    source = open_sensor(f"npy:{tmp_path}/f", LIMITS)
    source.read()
    with pytest.raises(SensorError, match="b.npy: "):
        source.read()
