"""The tracker's kernel (flight.kernels.tracking) against its numpy twin (flight/tracking_ref.py): every
call on the same drawn state gives the same arrays, whole trackers built on either make the same
associations and reports, and the kernel refuses indices and arrays that do not fit before its loops run."""
import math

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from flight import tracking_ref
from flight.kernels import tracking as kernel
from flight.tracking import Tracker, TrackerConfig
from kestrel.products import DETECTION_DTYPE

# The kernel sums in its own order and inverts the 3 x 3 normal matrix in closed form (numpy: LAPACK),
# so the twins agree to rounding, not to the bit.
RTOL, ATOL = 1e-9, 1e-9


def drawn_state(rng, cap, models, hist):
    """Track arrays as the tracker keeps them: positive definite covariances, probabilities that sum to 1,
    history rings holding distinct frame indices."""
    a = rng.normal(0, 1, (cap, models, 4, 4)) * rng.uniform(0.05, 2, (cap, models, 1, 1))
    mu = rng.uniform(0.01, 1, (cap, models))
    h_n = rng.integers(1, 3 * hist, cap)
    h_t = np.zeros((cap, hist))
    for s in range(cap):
        frames = np.sort(rng.choice(200, h_n[s], replace=False)).astype(float)
        for i, f in enumerate(frames):
            h_t[s, i % hist] = f
    return {
        # The models of one track stay near each other (they saw the same detections).
        "x": rng.uniform(-50, 1100, (cap, 1, 4)) + rng.normal(0, 0.5, (cap, models, 4)),
        "P": a @ np.swapaxes(a, -1, -2) + np.eye(4) * rng.uniform(0.01, 5, (cap, models, 1, 1)),
        "mu": mu / mu.sum(1, keepdims=True),
        "window": rng.integers(0, 1 << 16, cap), "age": rng.integers(1, 50, cap),
        "misses": rng.integers(0, 5, cap), "hits": rng.integers(1, 50, cap),
        "score": rng.normal(0, 10, cap), "flux": rng.uniform(0, 1e4, cap),
        "h_t": h_t, "h_x": rng.uniform(0, 1024, (cap, hist)), "h_y": rng.uniform(0, 1024, (cap, hist)),
        "h_f": rng.normal(6, 1, (cap, hist)), "h_r": rng.uniform(0.01, 1, (cap, hist)), "h_n": h_n,
    }


def twin_tables(rng, cap, models, hist, min_hits):
    arrays = drawn_state(rng, cap, models, hist)
    p = rng.uniform(0.01, 0.4)
    Q = rng.uniform(0.001, 0.5, (models, 1, 1)) * np.array(
        [[1 / 3, 0, 1 / 2, 0], [0, 1 / 3, 0, 1 / 2], [1 / 2, 0, 1, 0], [0, 1 / 2, 0, 1]])
    switch = np.array([[1 - p, p], [p, 1 - p]]) if models == 2 else np.ones((1, 1))
    args = (Q, switch, rng.normal(10, 2), math.log(0.1), rng.uniform(0.5, 10), min_hits)
    ours = {k: v.copy() for k, v in arrays.items()}
    theirs = {k: v.copy() for k, v in arrays.items()}
    return (kernel.TrackTable(ours, *args), ours), (tracking_ref.TrackTable(theirs, *args), theirs)


def assert_same(ours, theirs):
    for name in ours:
        if ours[name].dtype.kind == "i":
            np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
        else:
            np.testing.assert_allclose(ours[name], theirs[name], rtol=RTOL, atol=ATOL, err_msg=name)


def drawn_detections(rng, n):
    z = np.ascontiguousarray(rng.uniform(0, 1024, (n, 2)))
    return z, rng.uniform(0.01, 2, n), rng.uniform(0.01, 2, n), rng.uniform(0, 5000, n)


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 12), st.sampled_from([1, 2]), st.integers(6, 20), st.integers(0, 12),
       st.integers(0, 2**32 - 1))
def test_every_call_of_the_kernel_equals_the_twin(cap, models, hist, n_det, seed):
    rng = np.random.default_rng(seed)
    min_hits = int(rng.integers(4, hist + 1))
    (table, ours), (twin, theirs) = twin_tables(rng, cap, models, hist, min_hits)
    slots = np.sort(rng.choice(cap, rng.integers(0, cap + 1), replace=False)).astype(np.intp)
    z, rx, ry, flux = drawn_detections(rng, n_det)
    good = rng.random(n_det) < 0.8
    for t in (table, twin):
        t.predict(slots)
    assert_same(ours, theirs)
    k = len(slots)
    got, want = np.empty((k, n_det)), np.empty((k, n_det))
    table.distance(slots, z, rx, ry, good.view(np.uint8), got)
    twin.distance(slots, z, rx, ry, good.view(np.uint8), want)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    assert np.isinf(got[:, ~good]).all()
    pairs = min(k, n_det)
    dets = rng.permutation(n_det)[:pairs].astype(np.intp)
    frame = float(rng.integers(200, 300))
    for t in (table, twin):
        t.update(slots[:pairs], dets, z, rx, ry, flux, frame)
        t.miss(slots[pairs:])
    assert_same(ours, theirs)
    got_x, got_P, want_x, want_P = np.empty((k, 4)), np.empty((k, 4, 4)), np.empty((k, 4)), np.empty((k, 4, 4))
    table.combine(slots, got_x, got_P)
    twin.combine(slots, want_x, want_P)
    np.testing.assert_allclose(got_x, want_x, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(got_P, want_P, rtol=RTOL, atol=ATOL)
    got, want = np.empty((k, 8)), np.empty((k, 8))
    table.fits(slots, got)
    twin.fits(slots, want)
    np.testing.assert_allclose(got, want, rtol=1e-7, atol=1e-7)     # a parabola's residuals: more rounding
    free = np.setdiff1d(np.arange(cap), slots)[:n_det].astype(np.intp)
    for t in (table, twin):
        t.birth(free, np.arange(len(free), dtype=np.intp), z, rx, ry, flux, frame)
    assert_same(ours, theirs)


def test_fits_of_short_histories_are_nan_or_infinite_as_the_twin_says():
    rng = np.random.default_rng(3)
    (table, ours), (twin, theirs) = twin_tables(rng, 3, 2, 8, 6)
    for arrays in (ours, theirs):
        arrays["h_n"][:] = [1, 2, 5]
    slots = np.arange(3, dtype=np.intp)
    got, want = np.empty((3, 8)), np.empty((3, 8))
    table.fits(slots, got)
    twin.fits(slots, want)
    np.testing.assert_allclose(got, want, rtol=1e-9)
    assert np.isnan(got[0, :2]).all() and got[0, 2] == np.inf and np.isfinite(got[1, :3]).all()
    assert np.isnan(got[:, 3:]).all()


def scene(seed, frames=40, size=256):
    """A few straight or turning targets, clutter, occasional NaN positions and skipped frames."""
    rng = np.random.default_rng(seed)
    targets = int(rng.integers(1, 5))
    pos = rng.uniform(30, size - 30, (targets, 2))
    vel = rng.uniform(-3, 3, (targets, 2))
    turn = rng.uniform(-0.1, 0.1, targets)
    out = []
    index = 0
    for i in range(frames):
        index += 1 + int(rng.random() < 0.05)
        clutter = rng.uniform(2, size - 2, (int(rng.integers(0, 8)), 2))
        seen = pos[rng.random(targets) < 0.9]
        points = np.concatenate([seen + rng.normal(0, 0.2, seen.shape), clutter])
        d = np.zeros(len(points), DETECTION_DTYPE)
        d["x"], d["y"] = points[:, 0], points[:, 1]
        d["sigma_x"], d["sigma_y"] = rng.uniform(0.02, 0.5, len(d)), rng.uniform(0.02, 0.5, len(d))
        d["flux"] = rng.uniform(100, 2000, len(d)) * math.exp(0.03 * i)
        d["snr"] = 10
        if len(d) and rng.random() < 0.1:
            d["x"][0] = np.nan
        out.append((index, d, rng.uniform(0, 1, len(d))))
        c, s = np.cos(turn), np.sin(turn)
        vel = np.stack([c * vel[:, 0] - s * vel[:, 1], s * vel[:, 0] + c * vel[:, 1]], 1)
        pos = pos + vel
    return out


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["cv", "imm"]), st.integers(0, 2**32 - 1))
def test_trackers_on_the_kernel_and_on_the_twin_agree(model, seed):
    config = TrackerConfig(model=model, max_tracks=24)
    ours, theirs = Tracker(config, (256, 256)), Tracker(config, (256, 256), table=tracking_ref.TrackTable)
    for index, d, scores in scene(seed):
        a, b = ours.update(index, d, index, scores), theirs.update(index, d, index, scores)
        assert a.associations == b.associations
        for ra, rb in zip(a.confirmed + a.ended, b.confirmed + b.ended, strict=True):
            assert (ra.track_id, ra.kind, ra.evidence, ra.kind_evidence, ra.end, ra.hits, ra.alertable) == (
                rb.track_id, rb.kind, rb.evidence, rb.kind_evidence, rb.end, rb.hits, rb.alertable)
            np.testing.assert_allclose(ra.state, rb.state, rtol=RTOL, atol=ATOL)
            np.testing.assert_allclose(ra.covariance, rb.covariance, rtol=RTOL, atol=ATOL)
            for name in ("trend", "speed", "accel_along", "accel_across", "accel_sigma", "score",
                         "manoeuvre_probability", "classifier_score"):
                assert getattr(ra, name) == pytest.approx(getattr(rb, name), rel=1e-7, abs=1e-7), name
    assert ours.counters == theirs.counters


def test_the_kernel_refuses_indices_and_arrays_that_do_not_fit():
    rng = np.random.default_rng(0)
    (table, _), _ = twin_tables(rng, 4, 2, 8, 6)
    z, rx, ry, flux = drawn_detections(rng, 3)
    with pytest.raises(IndexError, match=r"slots\[1\] = 4 is outside 0..3"):
        table.predict(np.array([0, 4], np.intp))
    with pytest.raises(IndexError, match=r"slots\[0\] = -1"):
        table.miss(np.array([-1], np.intp))
    with pytest.raises(IndexError, match=r"dets\[0\] = 3 is outside 0..2"):
        table.update(np.array([0], np.intp), np.array([3], np.intp), z, rx, ry, flux, 1.0)
    with pytest.raises(ValueError, match="one detection per slot"):
        table.update(np.array([0, 1], np.intp), np.array([0], np.intp), z, rx, ry, flux, 1.0)
    with pytest.raises(ValueError, match="rx"):
        table.birth(np.array([0], np.intp), np.array([0], np.intp), z, rx[:2], ry, flux, 1.0)
    with pytest.raises(ValueError, match="out must be"):
        table.distance(np.array([0], np.intp), z, rx, ry, np.ones(3, np.uint8), np.empty((2, 3)))
    with pytest.raises(ValueError, match="out must be"):
        table.fits(np.array([0, 1], np.intp), np.empty((2, 7)))
    arrays = drawn_state(rng, 4, 2, 8)
    arrays["h_n"] = arrays["h_n"][:3]
    with pytest.raises(ValueError, match="h_n must have one entry per slot"):
        kernel.TrackTable(arrays, np.zeros((2, 4, 4)), np.eye(2), 0.0, 0.0, 1.0, 6)
    arrays = drawn_state(rng, 4, 3, 8)
    with pytest.raises(ValueError, match="1 or 2 models"):
        kernel.TrackTable(arrays, np.zeros((3, 4, 4)), np.eye(3), 0.0, 0.0, 1.0, 6)
    arrays = drawn_state(rng, 4, 2, 8)
    arrays["x"] = arrays["x"].astype(np.float32)
    with pytest.raises(ValueError, match="dtype"):
        kernel.TrackTable(arrays, np.zeros((2, 4, 4)), np.eye(2), 0.0, 0.0, 1.0, 6)
