"""CCSDS 123.0-B-2 benchmark against its peers on a synthetic infrared scene.

Peers measured in the same run: CCSDS 121 via libaec (imagecodecs.aec_encode,
J=16, r=128, with preprocessing), JPEG-LS (CharLS via imagecodecs) and zstd
level 3. Goal: >= 5 % fewer bits/sample than CCSDS 121 losslessly and
>= 50 Msamples/s encoding. Run:

    cd /work/main && /work/venv/bin/python -m pytest tests/perf/test_perf_ccsds123.py -m perf -s
"""
import statistics
import time

import numpy as np
import pytest

from flight.codecs import ccsds123

imagecodecs = pytest.importorskip("imagecodecs")

REPEATS = 5


def infrared_scene(size: int, seed: int = 123) -> np.ndarray:
    """Deterministic 14-bit uint16 scene that looks like a staring IR frame:
    smooth warm Earth background with cloud structure, a cold limb region,
    column fixed-pattern offsets, a few hot point sources and Gaussian
    temporal noise of a few DN."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / size
    background = 6000 + 2500 * np.exp(-((xx - 0.45) ** 2 + (yy - 0.55) ** 2) / 0.18)
    clouds = np.zeros((size, size))
    for octave in range(1, 7):
        freq = 2.0**octave
        amp = 900.0 / freq**1.2
        phase = rng.uniform(0, 2 * np.pi, 4)
        clouds += amp * np.sin(2 * np.pi * freq * xx + phase[0] + 1.5 * np.sin(2 * np.pi * freq * yy + phase[1]))
        clouds += amp * np.sin(2 * np.pi * freq * yy + phase[2] + 1.5 * np.sin(2 * np.pi * freq * xx + phase[3]))
    limb = np.where(np.hypot(xx - 0.5, yy - 0.5) > 0.62, -3500.0, 0.0)
    column_offsets = rng.normal(0, 6, size)[np.newaxis, :]
    scene = background + clouds + limb + column_offsets
    for _ in range(12):
        cy, cx = rng.uniform(0, size, 2)
        scene += 4000 * np.exp(-((yy * size - cy) ** 2 + (xx * size - cx) ** 2) / 2.5)
    scene += rng.normal(0, 4.0, (size, size))
    return np.clip(np.rint(scene), 0, (1 << 14) - 1).astype(np.uint16)


def _median_seconds(fn, repeats=REPEATS):
    times = []
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def _peers(image):
    peers = {
        "CCSDS 123 (ours)": (lambda: ccsds123.encode(image, bits=14), ccsds123.decode),
        "CCSDS 121 libaec": (
            lambda: imagecodecs.aec_encode(
                image, bitspersample=14, flags=imagecodecs.AEC.FLAG.DATA_PREPROCESS, blocksize=16, rsi=128
            ),
            None,
        ),
        "zstd 3": (lambda: imagecodecs.zstd_encode(image, level=3), None),
    }
    if imagecodecs.JPEGLS.available:
        peers["JPEG-LS CharLS"] = (lambda: imagecodecs.jpegls_encode(image), None)
    return peers


@pytest.mark.perf
@pytest.mark.parametrize("size", [1024, 2048])
def test_lossless_vs_peers(size):
    image = infrared_scene(size)
    n = image.size
    rows = {}
    for name, (enc, dec) in _peers(image).items():
        seconds, data = _median_seconds(enc, 3 if size > 1024 else REPEATS)
        rows[name] = (8 * len(data) / n, n / seconds / 1e6, data)
    ours = rows["CCSDS 123 (ours)"]
    dec_seconds, decoded = _median_seconds(lambda: ccsds123.decode(ours[2]), 3)
    np.testing.assert_array_equal(decoded, image)
    ref_bps = rows["CCSDS 121 libaec"][0]
    print(f"\n### lossless, {size}x{size} 14-bit IR scene (median of repeats)\n")
    print("| codec | bits/sample | vs CCSDS 121 | encode MS/s |")
    print("|---|---:|---:|---:|")
    for name, (bps, msps, _) in rows.items():
        print(f"| {name} | {bps:.3f} | {100 * (bps / ref_bps - 1):+.1f} % | {msps:.1f} |")
    print(f"\nCCSDS 123 decode: {n / dec_seconds / 1e6:.1f} MS/s")
    assert ours[0] < ref_bps, "CCSDS 123 should beat CCSDS 121 on this scene"


@pytest.mark.perf
def test_near_lossless_bits():
    image = infrared_scene(1024)
    print("\n### near-lossless, 1024x1024 14-bit IR scene\n")
    print("| max error | bits/sample | max abs error seen | encode MS/s |")
    print("|---:|---:|---:|---:|")
    last = None
    for max_error in (0, 1, 2, 4, 8):
        seconds, data = _median_seconds(lambda: ccsds123.encode(image, bits=14, max_error=max_error), 3)
        decoded = ccsds123.decode(data)
        err = int(np.abs(decoded.astype(np.int32) - image).max())
        assert err <= max_error
        bps = 8 * len(data) / image.size
        print(f"| {max_error} | {bps:.3f} | {err} | {image.size / seconds / 1e6:.1f} |")
        if last is not None:
            assert bps < last
        last = bps
