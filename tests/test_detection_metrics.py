"""hil.metrics tests. References: hand-made detections/truth, and the Fisher
information of a pixel-sampled Gaussian computed numerically for the CRB."""
import math

import numpy as np
import pytest

from hil import metrics
from hil.scene import TRUTH_DTYPE

DETS = [("x", "f4"), ("y", "f4"), ("snr", "f4")]


def truth_rows(rows):
    return np.array(rows, TRUTH_DTYPE)


def test_match_is_one_to_one_and_nearest_first():
    truth = truth_rows([(0, 10.0, 10.0, 8, 1000, 1), (1, 11.0, 10.0, 8, 1000, 1)])
    dets = np.array([(10.9, 10.0, 9.0), (30.0, 30.0, 6.0)], DETS)
    assigned, used = metrics.match(dets, truth)
    assert list(assigned) == [-1, 0]  # det 0 is nearer truth 1 and taken by it
    assert list(used) == [True, False]
    assigned, used = metrics.match(np.zeros(0, DETS), truth)
    assert list(assigned) == [-1, -1] and len(used) == 0


def test_snr_class_is_nearest_in_log():
    got = metrics.snr_class(np.array([3.0, 6.2, 6.4, 30.0]), (5.0, 8.0, 12.0, 20.0))
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
    assert metrics.crb_radial(truth)[0] == pytest.approx(math.sqrt(2 / info), rel=1e-3)


def test_score_counts_and_threshold_sweep():
    s = metrics.Score(classes=(5.0, 8.0))
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
    assert metrics.main(["table", "--frames", "14", "--size", "64"]) == 0
    out = capsys.readouterr().out
    assert out.count("| clear |") == 2 and out.count("| heavy |") == 2
    assert metrics.main(["sweep", "--frames", "14", "--size", "64", "--kind", "heavy"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ") and
             line[2].isdigit()]
    fa = [float(line.split("|")[2]) for line in lines]
    assert len(fa) == 8 and fa == sorted(fa, reverse=True)
    with pytest.raises(SystemExit):
        metrics.main(["table", "--frames", "5"])
