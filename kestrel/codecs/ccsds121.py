"""CCSDS 121.0-B-3 lossless compression (adaptive entropy coder, unit-delay preprocessor).

``encode``/``decode`` mirror imagecodecs' ``aec_encode``/``aec_decode``: the coded
stream has no header, so the sample count, width, block size J, reference
sample interval (in blocks) and flags travel out of band. Streams are
bit-exact with the CCSDS reference vectors and interoperate with libaec
(``pad_rsi`` is libaec's non-standard AEC_PAD_RSI).

The work happens in ``flight.kernels.ccsds121``; this module checks
parameters and samples once, so the kernel can run without checks and
without the GIL. ``kestrel.codecs.ccsds121_ref`` is its plain-Python twin.
"""
from __future__ import annotations

import numpy as np

BLOCK_SIZES = (8, 16, 32, 64)
MAX_RSI = 4096
MAX_BITS = 32


class CompressedDataError(ValueError):
    """The coded stream is truncated or corrupt."""


def code_parameters(bits: int, restricted: bool) -> tuple[int, int]:
    """(option id length, largest split k) of the basic or restricted code set."""
    if restricted:
        if bits > 4:
            raise ValueError(f"the restricted code set needs bits <= 4, got {bits}")
        id_len = 1 if bits <= 2 else 2
    else:
        id_len = 3 if bits <= 8 else 4 if bits <= 16 else 5
    return id_len, (1 << id_len) - 3


def output_dtype_for(bits: int, signed: bool) -> np.dtype:
    width = 8 if bits <= 8 else 16 if bits <= 16 else 32
    return np.dtype(f"{'int' if signed else 'uint'}{width}")


def _check_options(bits, block_size, rsi, restricted) -> tuple[int, int]:
    if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
        raise ValueError(f"bits must be an integer in 1..{MAX_BITS}, got {bits!r}")
    if block_size not in BLOCK_SIZES:
        raise ValueError(f"block_size must be one of {BLOCK_SIZES}, got {block_size!r}")
    if not isinstance(rsi, (int, np.integer)) or not 1 <= rsi <= MAX_RSI:
        raise ValueError(f"rsi must be an integer in 1..{MAX_RSI} blocks, got {rsi!r}")
    return code_parameters(int(bits), bool(restricted))


def _kernel():
    # Imported on first use so the reference twin can share this module's
    # helpers on a checkout where the kernel is not built yet.
    from flight.kernels import ccsds121
    return ccsds121


def _samples_for_kernel(samples, bits: int, signed: bool) -> np.ndarray:
    """1-D native uint8/16/32 view holding each sample's n-bit pattern in its low bits."""
    a = np.asarray(samples)
    if a.dtype.kind not in "ui":
        raise ValueError(f"samples must be integers, got dtype {a.dtype}")
    a = a.reshape(-1)
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    else:
        lo, hi = 0, (1 << bits) - 1
    native = a.dtype.byteorder in "=|"
    fits_kernel = native and a.dtype.itemsize <= 4 and (a.dtype.kind == "i") == signed
    if signed or not fits_kernel:
        # The kernel checks unsigned widths itself (one OR per sample); other
        # inputs are range-checked here before their bits are reinterpreted.
        if a.size and (a.min() < lo or a.max() > hi):
            raise ValueError(f"samples must lie in {lo}..{hi} for {bits}-bit "
                             f"{'signed' if signed else 'unsigned'} data, got {a.min()}..{a.max()}")
    if not fits_kernel:
        a = a.astype(output_dtype_for(bits, signed))
    return np.ascontiguousarray(a).view(f"u{a.dtype.itemsize}")


def max_encoded_size(count: int, bits: int, block_size: int = 16, rsi: int = 128,
                     restricted: bool = False) -> int:
    """Bytes an ``out`` buffer for ``encode`` needs for ``count`` samples.

    Above the raw size (no-compression blocks plus option ids), with slack for
    the encoder's whole-word stores.
    """
    id_len, _ = _check_options(bits, block_size, rsi, restricted)
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    return _kernel().encoded_size_bound(int(count), int(bits), block_size, int(rsi), id_len)


def _writable_bytes(out) -> memoryview:
    try:
        view = memoryview(out)
    except TypeError:
        raise TypeError(f"out must be a writable buffer (bytearray, numpy array), got "
                        f"{type(out).__name__}") from None
    if view.readonly:
        raise ValueError("out must be writable")
    if not view.c_contiguous:
        raise ValueError("out must be C-contiguous")
    return view.cast("B")


def encode(samples, bits: int, block_size: int = 16, rsi: int = 128, preprocess: bool = True,
           restricted: bool = False, signed: bool = False, pad_rsi: bool = False, out=None):
    """Compress integer samples of ``bits`` bits; returns the coded stream.

    ``rsi`` is the reference sample interval in blocks. Samples are read in C
    order and must lie in the unsigned (or, with ``signed``, two's complement)
    range of ``bits``.

    Without ``out`` the stream comes back as ``bytes``. With ``out``, a
    writable buffer of at least ``max_encoded_size`` bytes reused from call to
    call, the stream is written there and a memoryview of its first
    ``len(stream)`` bytes comes back; nothing is allocated, and the view is
    only good until ``out`` is written again. Bytes of ``out`` past the
    stream are scratch.
    """
    id_len, kmax = _check_options(bits, block_size, rsi, restricted)
    x = _samples_for_kernel(samples, bits, signed)
    args = (bits, block_size, rsi, id_len, kmax, bool(preprocess), bool(signed), bool(pad_rsi))
    if out is None:
        stream, seen = _kernel().encode_samples(x, *args)
    else:
        view = _writable_bytes(out)
        written, seen = _kernel().encode_samples_into(x, view, *args)
        stream = view[:written]
    if not signed and seen >> bits:
        raise ValueError(f"samples must lie in 0..{(1 << bits) - 1} for {bits}-bit unsigned data, "
                         f"got maximum {int(np.max(x))}")
    return stream


_FAILURES = {
    1: "stream truncated",
    2: "second-extension code out of range",
    3: "zero-block run crosses the end of the reference sample interval",
    4: "split-sample value exceeds the sample width",
}


def min_coded_bits(count: int, bits: int, block_size: int, rsi: int, id_len: int,
                   preprocess: bool) -> int:
    """Fewest bits any stream of ``count`` samples can take, conforming or not.

    Every code takes at least id_len + 2 bits (option id, zero-block flag, a
    one-bit FS) and covers at most 64 blocks for that: a remainder-of-segment
    run ends at the segment, and a longer run spells its length in its FS.
    Each interval also carries its n-bit reference when preprocessed.
    """
    nblocks = -(-count // block_size)
    full, rest = divmod(nblocks, rsi)
    ref = bits if preprocess else 0

    def interval_bits(blocks):
        return -(-blocks // 64) * (id_len + 2) + ref

    return full * interval_bits(rsi) + (interval_bits(rest) if rest else 0)


def _decode_output(out, count: int, bits: int, signed: bool) -> np.ndarray:
    dtype = output_dtype_for(bits, signed)
    if out is None:
        return np.empty(count, dtype=dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy array, got {type(out).__name__}")
    if out.dtype != dtype or out.size != count:
        raise ValueError(f"out must be {dtype} with {count} elements, got {out.dtype} with {out.size}")
    if not (out.flags.c_contiguous and out.flags.writeable):
        raise ValueError("out must be C-contiguous and writable")
    return out


def decode(data, count: int, bits: int, block_size: int = 16, rsi: int = 128, preprocess: bool = True,
           restricted: bool = False, signed: bool = False, pad_rsi: bool = False, out=None) -> np.ndarray:
    """Decompress ``count`` samples; dtype uint8/16/32 by ``bits`` (int* when ``signed``).

    ``data`` is any C-contiguous buffer and is read in place. ``out``, when
    given, is a C-contiguous numpy array of that dtype and ``count`` elements
    (any shape) that receives the samples and is returned.

    Raises CompressedDataError when the stream ends early, is too short to
    hold ``count`` samples at all (checked before anything is allocated), or
    holds codes no encoder could have written. Bytes after the last sample
    are ignored.
    """
    id_len, kmax = _check_options(bits, block_size, rsi, restricted)
    if not isinstance(count, (int, np.integer)) or count < 0:
        raise ValueError(f"count must be a non-negative integer, got {count!r}")
    count = int(count)
    stream = memoryview(data).cast("B")
    needed = min_coded_bits(count, bits, block_size, rsi, id_len, preprocess)
    if needed > stream.nbytes * 8:
        raise CompressedDataError(f"stream truncated: {count} samples need at least {needed} bits, "
                                  f"the stream has {stream.nbytes * 8}")
    result = _decode_output(out, count, bits, signed)
    flat = result.reshape(-1)
    where = np.zeros(2, dtype=np.int64)
    status = _kernel().decode_samples(stream, flat.view(f"u{flat.itemsize}"), bits, block_size, rsi,
                                      id_len, kmax, bool(preprocess), bool(signed), bool(pad_rsi), where)
    if status:
        raise CompressedDataError(f"{_FAILURES.get(status, f'status {status}')} at bit {where[0]} of "
                                  f"{stream.nbytes * 8}, after {where[1]} of {count} samples")
    return result
