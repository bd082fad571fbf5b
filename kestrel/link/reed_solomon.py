"""CCSDS 131.0-B Reed-Solomon (255,223), E = 16: the public codec.

Symbols are in the dual (Berlekamp) basis on the wire, ``depth`` codewords
are interleaved symbol by symbol (I = 1, 2, 3, 4, 5, 8) and each may be
shortened by a virtual fill of leading zeros that are never sent. A
codeblock is the transfer frame (``data_length`` bytes) followed by the
interleaved parity (``32 * depth`` bytes).

Inputs are checked here, once; the Cython kernel ``flight.kernels.reed_solomon``
then runs a whole codeblock without the GIL. ``kestrel.link.reed_solomon_ref``
is its plain twin.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from flight.kernels.reed_solomon import ReedSolomonKernel

# The codec's constants, named where RS is declared (kestrel.link.coding) and used by its callers from here.
from .coding import (RS_CORRECTABLE_SYMBOLS as CORRECTABLE_SYMBOLS, RS_DATA_SYMBOLS as DATA_SYMBOLS,  # noqa: F401
                     RS_DEPTHS as DEPTHS, RS_PARITY_SYMBOLS as PARITY_SYMBOLS)

MAX_VIRTUAL_FILL = DATA_SYMBOLS - 1


@dataclass(frozen=True)
class DecodeResult:
    """Outcome of decoding one codeblock.

    ``corrected[i]`` is the number of symbols corrected in codeword i (0 for
    a codeword that failed). ``uncorrectable_codewords`` lists the codewords
    that could not be corrected: their symbols in ``data`` are exactly as
    received, while the other codewords of the block are still corrected.
    """

    data: bytes
    corrected: tuple[int, ...]
    uncorrectable_codewords: tuple[int, ...]

    @property
    def uncorrectable(self) -> bool:
        return bool(self.uncorrectable_codewords)


def _byte_view(buffer, name: str, writable: bool = False) -> memoryview:
    try:
        view = memoryview(buffer)
    except TypeError:
        raise TypeError(f"{name} must be a bytes-like object, got {type(buffer).__name__}") from None
    if not view.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if writable and view.readonly:
        raise ValueError(f"{name} must be writable, got a read-only {type(buffer).__name__}")
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view


class ReedSolomonCodec:
    """Encoder and decoder for one codeblock geometry; tables are built once."""

    def __init__(self, depth: int, virtual_fill: int = 0):
        if isinstance(depth, bool) or not isinstance(depth, (int, np.integer)) or depth not in DEPTHS:
            raise ValueError(f"interleaving depth must be one of {DEPTHS}, got {depth!r}")
        if (isinstance(virtual_fill, bool) or not isinstance(virtual_fill, (int, np.integer))
                or not 0 <= virtual_fill <= MAX_VIRTUAL_FILL):
            raise ValueError(f"virtual fill must be an integer in 0..{MAX_VIRTUAL_FILL}, got {virtual_fill!r}")
        self._kernel = ReedSolomonKernel(int(depth), int(virtual_fill))
        self.depth = int(depth)
        self.virtual_fill = int(virtual_fill)
        self.data_length = self._kernel.data_length
        self.codeblock_length = self._kernel.codeblock_length

    def __repr__(self) -> str:
        return f"ReedSolomonCodec(depth={self.depth}, virtual_fill={self.virtual_fill})"

    def encode(self, data) -> bytes:
        """Codeblock for one transfer frame: the data, then interleaved parity."""
        view = _byte_view(data, "data")
        if view.nbytes != self.data_length:
            raise ValueError(f"data must be {self.data_length} bytes for {self!r}, got {view.nbytes}")
        out = bytearray(self.codeblock_length)
        self._kernel.encode_into(view, out)
        return bytes(out)

    def encode_into(self, data, out) -> None:
        """Encode into a caller's buffer of ``codeblock_length`` bytes (no allocation)."""
        view = _byte_view(data, "data")
        target = _byte_view(out, "out", writable=True)
        if view.nbytes != self.data_length:
            raise ValueError(f"data must be {self.data_length} bytes for {self!r}, got {view.nbytes}")
        if target.nbytes != self.codeblock_length:
            raise ValueError(f"out must be {self.codeblock_length} bytes for {self!r}, got {target.nbytes}")
        self._kernel.encode_into(view, target)

    def decode(self, codeblock) -> DecodeResult:
        """Correct a received codeblock; never raises for corrupted content."""
        view = self._check_codeblock(codeblock)
        out = bytearray(self.data_length)
        counts = np.empty(self.depth, dtype=np.int32)
        self._kernel.decode_into(view, out, counts)
        failed = tuple(int(i) for i in np.flatnonzero(counts < 0))
        corrected = tuple(max(int(c), 0) for c in counts)
        return DecodeResult(bytes(out), corrected, failed)

    def decode_into(self, codeblock, out, counts: np.ndarray | None = None) -> np.ndarray:
        """Correct ``codeblock`` into ``out`` without allocating (the ground hot path).

        ``out`` is writable, of ``data_length`` bytes or of the whole
        ``codeblock_length`` (then the parity is corrected too); it may be the
        codeblock itself for in-place correction. Returns ``counts`` (int32,
        one per codeword: symbols corrected, -1 if uncorrectable), filling the
        caller's array when one is given.
        """
        view = self._check_codeblock(codeblock)
        target = _byte_view(out, "out", writable=True)
        if target.nbytes not in (self.data_length, self.codeblock_length):
            raise ValueError(f"out must be {self.data_length} or {self.codeblock_length} bytes "
                             f"for {self!r}, got {target.nbytes}")
        if counts is None:
            counts = np.empty(self.depth, dtype=np.int32)
        elif not (isinstance(counts, np.ndarray) and counts.dtype == np.int32
                  and counts.shape == (self.depth,) and counts.flags.c_contiguous and counts.flags.writeable):
            raise ValueError(f"counts must be a writable contiguous int32 array of shape ({self.depth},)")
        self._kernel.decode_into(view, target, counts)
        return counts

    def _check_codeblock(self, codeblock) -> memoryview:
        view = _byte_view(codeblock, "codeblock")
        if view.nbytes != self.codeblock_length:
            raise ValueError(f"codeblock must be {self.codeblock_length} bytes for {self!r}, got {view.nbytes}")
        return view
