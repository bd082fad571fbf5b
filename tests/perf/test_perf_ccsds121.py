"""CCSDS 121 throughput and bits/sample against libaec (the peer), same parameters, same run.

Block sizes 8, 16, 32 and 64 on 1024^2 and 2048^2 scenes. Three comparisons,
each with both coders called the same way: encode returning a fresh stream,
encode into a reused caller buffer (out=), decode into a reused array (out=).
Before timing, each call is checked: each coder decodes the other's stream
back to the samples, and ours is never longer than libaec's. Times are CPU
time of the calling thread (tests/perf/timing.py), medians of alternated runs.

Run: cd /work/main && . .venv/bin/activate && pytest tests/perf/test_perf_ccsds121.py -m perf -s
"""
import numpy as np
import pytest

from kestrel.codecs.ccsds121 import decode, encode, max_encoded_size

imagecodecs = pytest.importorskip("imagecodecs")

from tests.perf.scenes import project_scene  # noqa: E402
from tests.perf.timing import alternated_medians  # noqa: E402

BITS = 14
RSI = 128
REPEATS = 21


def paired_medians(ours, theirs) -> list[float]:
    return alternated_medians(ours, theirs, repeats=REPEATS, warm=False)


@pytest.mark.perf
@pytest.mark.parametrize("size", [1024, 2048])
def test_throughput_against_libaec(size):
    samples = project_scene(size).ravel()
    flags = int(imagecodecs.AEC.FLAG.DATA_PREPROCESS)
    mega = samples.size / 1e6
    rows = []
    for J in (8, 16, 32, 64):
        params = dict(block_size=J, rsi=RSI)
        aec = dict(bitspersample=BITS, flags=flags, blocksize=J, rsi=RSI)
        ours = encode(samples, BITS, **params)
        theirs = imagecodecs.aec_encode(samples, **aec)
        # Reused buffers on both sides: encode(out=) and aec_encode(out=) write
        # into the caller's memory, decode(out=) likewise.
        our_buffer = bytearray(max_encoded_size(samples.size, BITS, **params))
        their_buffer = bytearray(len(our_buffer))
        decoded = np.empty_like(samples)
        # Every call that is timed below is first checked: each side decodes
        # the other's stream, out= paths give the same, ours is never longer.
        assert len(ours) <= len(theirs)
        assert bytes(encode(samples, BITS, **params, out=our_buffer)) == ours
        assert bytes(imagecodecs.aec_encode(samples, **aec, out=their_buffer)) == theirs
        for stream, decoder in ((ours, lambda s: decode(s, samples.size, BITS, **params, out=decoded)),
                                (theirs, lambda s: imagecodecs.aec_decode(s, **aec, out=decoded))):
            decoded[:] = 0
            decoder(stream)
            assert np.array_equal(decoded, samples)
        assert np.array_equal(imagecodecs.aec_decode(ours, **aec, out=np.empty_like(samples)), samples)
        assert np.array_equal(decode(theirs, samples.size, BITS, **params), samples)
        enc = paired_medians(lambda: encode(samples, BITS, **params),
                             lambda: imagecodecs.aec_encode(samples, **aec))
        enc_out = paired_medians(lambda: encode(samples, BITS, **params, out=our_buffer),
                                 lambda: imagecodecs.aec_encode(samples, **aec, out=their_buffer))
        dec = paired_medians(lambda: decode(ours, samples.size, BITS, **params, out=decoded),
                             lambda: imagecodecs.aec_decode(theirs, **aec, out=decoded))
        rows.append((J, *(mega / t for t in enc + enc_out + dec),
                     len(ours) * 8 / samples.size, len(theirs) * 8 / samples.size))
    print(f"\n\nCCSDS 121, {size}x{size} 14-bit IR scene, rsi={RSI}, medians of {REPEATS} "
          "alternated runs (Msamples/s, thread CPU time)\n")
    print("| J | encode ours | libaec | ratio | encode out= ours | libaec | ratio "
          "| decode out= ours | libaec | ratio | bits/sample ours | libaec |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for J, eo, el, po, pl, do, dl, bo, bl in rows:
        print(f"| {J} | {eo:.0f} | {el:.0f} | {eo / el:.2f}x | {po:.0f} | {pl:.0f} | {po / pl:.2f}x "
              f"| {do:.0f} | {dl:.0f} | {do / dl:.2f}x | {bo:.4f} | {bl:.4f} |")
