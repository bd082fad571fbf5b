"""The bench demo end to end: flight and ground as separate processes over paced pseudo-terminals."""
import json
import subprocess
import sys


def test_demo_passes_and_capture_decodes_identically(tmp_path):
    out, capture = tmp_path / "out", tmp_path / "downlink.bin"
    # The default pass, as the README runs it (20 s of cloudy scene), plus outputs kept.
    result = subprocess.run([sys.executable, "-m", "hil", "demo", "--out", str(out),
                             "--capture", str(capture)], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "RESULT: PASS" in result.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["frames_processed"] == 200 == report["reports_received"]
    assert report["targets_detected"] >= 1
    assert report["bytes_over_link"] == capture.stat().st_size > 0
    # The recorded bytes decode offline to the same products.
    again = subprocess.run([sys.executable, "-m", "ground", "decode", str(capture), "--out", str(tmp_path / "again")],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0
    live = json.loads((out / "summary.json").read_text())
    offline = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert offline["packets"]["detections"] == live["packets"]["detections"] == report["detections_received"]
    assert offline["sync"]["frames_good"] == live["sync"]["frames_good"]


def test_demo_on_recorded_frames(tmp_path):
    frames = tmp_path / "frames"
    made = subprocess.run([sys.executable, "-m", "hil", "scene", "--count", "15", "--out", str(frames)],
                          capture_output=True, text=True, timeout=120)
    assert made.returncode == 0 and len(list(frames.glob("*.npy"))) == 15
    result = subprocess.run([sys.executable, "-m", "hil", "demo", "--frames", str(frames), "--out", str(tmp_path / "o")],
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no truth: recorded frames" in result.stdout
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["frames_processed"] == 15 == report["reports_received"] and not report["truth"]


def test_damaged_demo_capture_decodes_and_counts_what_it_dropped(tmp_path):
    """A recorded downlink with flipped bits and injected garbage: no exception, drops counted."""
    import random

    frames = tmp_path / "frames"
    subprocess.run([sys.executable, "-m", "hil", "scene", "--count", "20", "--out", str(frames)],
                   check=True, capture_output=True, timeout=120)
    capture = tmp_path / "clean.bin"
    made = subprocess.run([sys.executable, "-m", "hil", "demo", "--frames", str(frames), "--capture", str(capture)],
                          capture_output=True, text=True, timeout=180)
    assert made.returncode == 0, made.stdout + made.stderr
    data = bytearray(capture.read_bytes())
    rnd = random.Random(7)
    for _ in range(40):
        data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    for _ in range(5):
        at = rnd.randrange(len(data))
        data[at:at] = rnd.randbytes(rnd.randint(1, 300))
    damaged = tmp_path / "damaged.bin"
    damaged.write_bytes(bytes(data))
    result = subprocess.run([sys.executable, "-m", "ground", "decode", str(damaged), "--out", str(tmp_path / "out")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    sync = summary["sync"]
    assert sync["frames_bad"] > 0 and sync["bytes_skipped"] > 0
    assert sync["bytes_read"] == len(data) == sync["bytes_in_frames"] + sync["bytes_skipped"]
    # The link is Reed-Solomon coded by default: flipped bits are corrected, inserted garbage costs frames.
    assert sync["symbols_corrected"] > 0
    assert 0 < summary["packets"]["detection_reports"] <= 20
