"""CCSDS 121.0-B-3 against the standard's reference vectors.

Reads the standard test vectors from the ``conformance_dir`` fixture
(shared/conformance/ccsds121, parameters in its README.md): every coded
stream decodes exactly, and every stream the README calls encodable is
reproduced byte for byte by the kernel and by the plain-Python twin.
"""
import re

import numpy as np

from kestrel.codecs.ccsds121 import CompressedDataError, decode, encode
from kestrel.codecs.ccsds121_ref import decode_ref, encode_ref

ALL_OPTIONS = re.compile(r"test_p(?P<p>256|512)n(?P<n>\d+)(?P<set>-basic|-restricted)?\.rz")
LOW_ENTROPY = re.compile(r"(?P<stem>Lowset\d_8bit)\.n(?P<n>\d+)(?P<set>-basic|-restricted)?\.rz")


def vector_cases(root):
    """(coded file, sample file, parameters) for each .rz, parameters from the README table."""
    folder = root / "ccsds121"
    cases = []
    for rz in sorted((folder / "AllOptions").glob("*.rz")):
        m = ALL_OPTIONS.fullmatch(rz.name)
        cases.append((rz, rz.with_name(f"test_p{m['p']}n{m['n']}.dat"),
                      dict(bits=int(m["n"]), block_size=16, rsi=16 if m["p"] == "256" else 32,
                           restricted=m["set"] == "-restricted")))
    for rz in sorted((folder / "LowEntropyOptions").glob("*.rz")):
        m = LOW_ENTROPY.fullmatch(rz.name)
        cases.append((rz, rz.with_name(f"{m['stem']}.dat"),
                      dict(bits=int(m["n"]), block_size=16, rsi=64, restricted=m["set"] == "-restricted")))
    sar = folder / "ExtendedParameters" / "sar32bit.dat"
    cases.append((sar.with_name("sar32bit.j16.r256.rz"), sar, dict(bits=32, block_size=16, rsi=256, pad_rsi=True)))
    cases.append((sar.with_name("sar32bit.j64.r4096.rz"), sar, dict(bits=32, block_size=64, rsi=4096, pad_rsi=True)))
    return cases


def read_samples(path, bits):
    # .dat files are little-endian, 1 byte a sample for n <= 8, 2 for n <= 16, 4 above.
    width = 1 if bits <= 8 else 2 if bits <= 16 else 4
    return np.fromfile(path, dtype=f"<u{width}")


def test_every_vector_decodes_and_encodes_exactly(conformance_dir):
    cases = vector_cases(conformance_dir)
    # Every coded stream in the folder is one of the cases: a vector added or renamed cannot go unrun.
    assert sorted(rz for rz, _, _ in cases) == sorted((conformance_dir / "ccsds121").rglob("*.rz"))
    assert len(cases) == 74
    failures = []
    for rz, dat, options in cases:
        samples = read_samples(dat, options["bits"])
        coded = rz.read_bytes()
        if not np.array_equal(decode(coded, samples.size, **options), samples):
            failures.append(f"decode {rz.name}")
        if encode(samples, **options) != coded:
            failures.append(f"encode {rz.name}")
    assert not failures, failures


def test_reference_twin_matches_the_small_vectors(conformance_dir):
    for rz, dat, options in vector_cases(conformance_dir):
        samples = read_samples(dat, options["bits"])
        if samples.size > 4096:
            continue  # the twin is slow; the 1 MB SAR vectors are the kernel's job
        coded = rz.read_bytes()
        assert encode_ref(samples, **options) == coded, rz.name
        np.testing.assert_array_equal(decode_ref(coded, samples.size, **options), samples, err_msg=rz.name)


def test_corrupted_vector_never_crashes(conformance_dir):
    rz, dat, options = vector_cases(conformance_dir)[-2]
    samples = read_samples(dat, options["bits"])
    coded = np.frombuffer(rz.read_bytes(), np.uint8)
    rng = np.random.default_rng(0)
    for _ in range(50):
        damaged = coded.copy()
        damaged[rng.integers(0, damaged.size, 5)] ^= rng.integers(1, 256, 5).astype(np.uint8)
        try:
            out = decode(bytes(damaged), samples.size, **options)
        except CompressedDataError:
            continue
        assert out.shape == samples.shape
