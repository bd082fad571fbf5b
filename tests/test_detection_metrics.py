"""hil.metrics tests. References: hand-made detections/truth, and the Fisher
information of a pixel-sampled Gaussian computed numerically for the CRB."""
import json
import math

import numpy as np
import pytest

from hil import cli, report, scoring
from hil.config import HilConfig
from hil.scene import TRUTH_DTYPE

DETS = [("x", "f4"), ("y", "f4"), ("snr", "f4")]


def truth_rows(rows):
    return np.array(rows, TRUTH_DTYPE)


def test_match_is_one_to_one_and_nearest_first():
    truth = truth_rows([(0, 10.0, 10.0, 8, 1000, 1), (1, 11.0, 10.0, 8, 1000, 1)])
    dets = np.array([(10.9, 10.0, 9.0), (30.0, 30.0, 6.0)], DETS)
    assigned, used = scoring.match(dets, truth, 1.5)
    assert list(assigned) == [-1, 0]  # det 0 is nearer truth 1 and taken by it
    assert list(used) == [True, False]
    assigned, used = scoring.match(np.zeros(0, DETS), truth, 1.5)
    assert list(assigned) == [-1, -1] and len(used) == 0


def test_snr_class_is_nearest_in_log():
    got = scoring.snr_class(np.array([3.0, 6.2, 6.4, 30.0]), (5.0, 8.0, 12.0, 20.0))
    assert list(got) == [5.0, 5.0, 8.0, 20.0]


def test_crb_matches_numeric_fisher_information():
    sigma, flux, noise = 1.0, 3000.0, 45.0
    snr = flux / (2 * math.pi * sigma**2) / noise
    truth = truth_rows([(0, 5.0, 5.0, snr, flux, sigma)])
    # Fisher information of x for a finely sampled Gaussian with white noise
    step = 0.05
    g = np.arange(-8, 8, step)
    xx, yy = np.meshgrid(g, g)
    mu = flux / (2 * math.pi * sigma**2) * np.exp(-(xx**2 + yy**2) / (2 * sigma**2))
    dmu = mu * xx / sigma**2
    info = (dmu**2).sum() * step**2 / noise**2  # noise per unit area
    assert scoring.crb_radial(truth)[0] == pytest.approx(math.sqrt(2 / info), rel=1e-3)


def test_score_counts_and_threshold_sweep():
    s = scoring.Score(classes=(5.0, 8.0), radius=1.5)
    truth = truth_rows([(0, 10, 10, 5, 800, 1), (1, 40, 40, 8, 1300, 1)])
    s.add(np.array([(10.2, 10.0, 6.0), (40.0, 40.1, 9.0), (70, 70, 5.5)], DETS), truth)
    s.add(np.array([(40.0, 40.0, 4.0)], DETS), truth)
    assert s.frames == 2 and s.false_alarms == 1
    assert s.pd(5.0) == 0.5 and s.pd(8.0) == 1.0
    assert s.rms(5.0) == pytest.approx(0.2, abs=1e-5)
    pd, fa = s.at_threshold(5.8)
    assert pd == {5.0: 0.5, 8.0: 0.5} and fa == 0.0
    pd, fa = s.at_threshold(5.0)
    assert fa == 0.5


def test_table_and_sweep_commands_run(capsys):
    assert cli.main(["metrics", "table", "--frames", "14", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert out.count("| clear |") == 2 and out.count("| heavy |") == 2
    assert cli.main(["metrics", "sweep", "--frames", "14", "--size", "64", "--kind", "heavy"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and
             line[2].isdigit()]
    fa = [float(line.split("|")[2]) for line in lines]
    assert len(fa) == 8 and fa == sorted(fa, reverse=True)
    with pytest.raises(SystemExit):
        cli.main(["metrics", "table", "--frames", "5"])


def test_the_demo_verdict_scores_as_metrics_does():
    """Two targets 1 px apart and one detection between them: one hit, one miss, no false alarm,
    in the demo's report exactly as in the metrics' Score (one to one, one radius, log SNR classes)."""
    hil_config = HilConfig(match_radius_px=1.5, warmup_frames=1)
    truth = truth_rows([(0, 10.0, 10.0, 7.0, 800, 1), (1, 11.0, 10.0, 13.0, 1300, 1)])
    detections = [{"frame_index": i, "x": 10.6, "y": 10.0, "snr": 9.0} for i in range(3)]
    detections.append({"frame_index": 2, "x": 40.0, "y": 40.0, "snr": 5.0})
    pass_report = report.PassReport(3, 3, 3, 4, 0, 0.0, 0.0, True)
    report._score_truth(pass_report, detections, [0, 1, 2], lambda i: truth, hil_config, (5.0, 8.0, 12.0))
    reference = scoring.Score(classes=(5.0, 8.0, 12.0), radius=1.5)
    for i in (1, 2):
        frame = [d for d in detections if d["frame_index"] == i]
        reference.add(np.array([(d["x"], d["y"], d["snr"]) for d in frame], DETS), truth)
    assert pass_report.frames_scored == 2
    assert pass_report.target_frames == {"8": [0, 2], "12": [2, 2]}
    assert {c: reference.pd(c) for c in (8.0, 12.0)} == {8.0: 0.0, 12.0: 1.0}
    assert pass_report.false_alarms == reference.false_alarms == 1
    assert pass_report.centroid_rms_px == pytest.approx(reference.rms_all()) == pytest.approx(0.4)


def test_tracks_command_scores_family_scenes_per_kind(tmp_path, capsys):
    """`metrics tracks --development` draws its scenes from the family (not the simulator's fixed kinds):
    one table per kind of the drawn scenes, and the JSON holds each kind's summary with the seeds used."""
    out_json = tmp_path / "tracks.json"
    args = ["metrics", "tracks", "--development", "--scenes", "3", "--skip", "3", "--max-side", "128",
            "--frames", "30", "--json", str(out_json)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    # strict JSON: a target never alerted has latency null, not the non-standard Infinity
    report = json.loads(out_json.read_text(), parse_constant=lambda c: pytest.fail(f"non-standard JSON {c}"))
    # family seeds 3, 4, 5: one scene of each kind (the family takes the kind from seed mod 3)
    assert sorted(report) == ["clear", "cloudy", "heavy"]
    assert sorted(s for r in report.values() for s in r["seeds"]) == [3, 4, 5]
    assert text.count("tracks, development family ") == 3
    for summary in report.values():
        assert set(summary["confirmed_by_snr"]) <= {"3", "5", "8", "12"}
        # Alerts come from confirmed tracks: every target alerted is also tracked, and slow confirmed
        # tracks (never alerted) can only add to the tracked count.
        tracked = summary["confirmed_tracks"]
        assert tracked["alert_tracks"] >= summary["alert_tracks"]
        for cls, (hit, total) in summary["confirmed_by_snr"].items():
            assert tracked["confirmed_by_snr"][cls][1] == total and tracked["confirmed_by_snr"][cls][0] >= hit
    assert "confirmed tracks of any kind" in text
    with pytest.raises(SystemExit):
        cli.main(["metrics", "tracks", "--development", "--scenes", "1", "--max-side", "32"])
