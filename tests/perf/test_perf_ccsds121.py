"""CCSDS 121 throughput and bits/sample against libaec (the peer), same parameters, same run.

Run: cd /work/main && /work/venv/bin/python -m pytest tests/perf/test_perf_ccsds121.py -m perf -s
"""
import time

import numpy as np
import pytest

from flight.codecs.ccsds121 import decode, encode

imagecodecs = pytest.importorskip("imagecodecs")

BITS = 14
RSI = 128
REPEATS = 15


def infrared_scene(size: int, seed: int = 7) -> np.ndarray:
    """Deterministic 14-bit IR-like frame: smooth background, bright cloud
    decks (low-pass noise, ~40 px correlation), sensor noise of 10 DN."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    background = 5000 + 2000 * x + 1200 * np.sin(2.5 * y + 0.7) * np.cos(1.7 * x)
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    field = np.fft.rfft2(rng.standard_normal((size, size)))
    field *= np.exp(-(fx ** 2 + fy ** 2) * 40.0 ** 2)
    clouds = np.fft.irfft2(field, s=(size, size))
    clouds /= clouds.std()
    frame = background + 1500 * np.clip(clouds - 0.3, 0, None) + rng.normal(0, 10, (size, size))
    return np.clip(np.rint(frame), 0, (1 << BITS) - 1).astype(np.uint16)


def median_seconds(fn) -> float:
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


@pytest.mark.perf
@pytest.mark.parametrize("size", [1024, 2048])
def test_throughput_against_libaec(size):
    samples = infrared_scene(size).ravel()
    flags = int(imagecodecs.AEC.FLAG.DATA_PREPROCESS)
    mega = samples.size / 1e6
    rows = []
    for block_size in (16, 32):
        ours = encode(samples, BITS, block_size=block_size, rsi=RSI)
        theirs = imagecodecs.aec_encode(samples, bitspersample=BITS, flags=flags, blocksize=block_size, rsi=RSI)
        out = np.empty_like(samples)
        assert np.array_equal(decode(ours, samples.size, BITS, block_size=block_size, rsi=RSI), samples)
        t_enc_ours = median_seconds(lambda: encode(samples, BITS, block_size=block_size, rsi=RSI))
        t_enc_libaec = median_seconds(lambda: imagecodecs.aec_encode(
            samples, bitspersample=BITS, flags=flags, blocksize=block_size, rsi=RSI))
        t_dec_ours = median_seconds(lambda: decode(ours, samples.size, BITS, block_size=block_size, rsi=RSI))
        t_dec_libaec = median_seconds(lambda: imagecodecs.aec_decode(
            theirs, bitspersample=BITS, flags=flags, blocksize=block_size, rsi=RSI, out=out))
        rows.append((block_size, mega / t_enc_ours, mega / t_enc_libaec, mega / t_dec_ours, mega / t_dec_libaec,
                     len(ours) * 8 / samples.size, len(theirs) * 8 / samples.size))
        assert len(ours) <= len(theirs)
    print(f"\n\nCCSDS 121, {size}x{size} 14-bit IR scene, rsi={RSI}, medians of {REPEATS} (Msamples/s)\n")
    print("| J | encode ours | encode libaec | ratio | decode ours | decode libaec | ratio | bits/sample ours | libaec |")
    print("|---|---|---|---|---|---|---|---|---|")
    for J, eo, el, do, dl, bo, bl in rows:
        print(f"| {J} | {eo:.0f} | {el:.0f} | {eo / el:.2f}x | {do:.0f} | {dl:.0f} | {do / dl:.2f}x | {bo:.4f} | {bl:.4f} |")
