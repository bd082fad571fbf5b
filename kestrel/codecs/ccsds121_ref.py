"""Plain-Python twin of the CCSDS 121.0-B-3 adaptive entropy coder kernel.

Slow on purpose: every code option is costed exhaustively and bits travel as a
string of '0'/'1', so the rules of the standard are easy to read and check.
The Cython kernel (``flight.kernels.ccsds121``) must produce the same bytes and
the same samples; tests/test_ccsds121.py holds it to that.

Option choice, which fixes the bytes among equally short streams:
  * lowest k among equally short split-sample options;
  * split-sample only when strictly shorter than second extension and no
    compression; second extension only when strictly shorter than no
    compression.
A last partial block is completed by repeating the last sample, and the last
reference sample interval ends after its last (partial) block, as libaec does.
"""
from __future__ import annotations

import numpy as np

from kestrel.codecs.ccsds121 import CompressedDataError, code_parameters, output_dtype_for

SEGMENT_BLOCKS = 64  # zero-block runs never cross a 64-block segment
ROS_FS = 4  # FS value that codes "remainder of segment"


def _triangle(s: int) -> int:
    return s * (s + 1) // 2


def _map_residuals(u: list[int], umax: int) -> list[int]:
    """Unit-delay prediction and mapping of one interval (offset-binary samples).

    The first entry is the reference sample's slot and maps to 0.
    """
    mapped = [0]
    for prev, cur in zip(u, u[1:]):
        delta = cur - prev
        theta = min(prev, umax - prev)
        if 0 <= delta <= theta:
            mapped.append(2 * delta)
        elif -theta <= delta < 0:
            mapped.append(-2 * delta - 1)
        else:
            mapped.append(theta + abs(delta))
    return mapped


def _unmap(prev: int, d: int, umax: int) -> int:
    theta = min(prev, umax - prev)
    if d <= 2 * theta:
        return prev - (d + 1) // 2 if d & 1 else prev + d // 2
    return d if prev <= umax - prev else umax - d


def _fs(q: int) -> str:
    return "0" * q + "1"


def _bin(v: int, width: int) -> str:
    return format(v, f"0{width}b") if width else ""


def _zero_run_code(run: int, at_end: bool) -> str:
    if at_end and run > 4:
        return _fs(ROS_FS)
    return _fs(run if run >= 5 else run - 1)


def _block_code(d: list[int], ref: int | None, n: int, id_len: int, kmax: int) -> str:
    """Shortest code of one non-zero block under the tie-break in the module doc."""
    coded = d[1:] if ref is not None else d
    head_ref = _bin(ref, n) if ref is not None else ""
    nc = (_bin((1 << id_len) - 1, id_len) + "".join(_bin(v, n) for v in ([ref] if ref is not None else []) + coded))
    best = nc
    best_len = len(coded) * n
    se_len = 1 + sum(_triangle(a + b) + b + 1 for a, b in zip(d[0::2], d[1::2]))
    if se_len < best_len:
        best_len = se_len
        best = (_bin(0, id_len) + "1" + head_ref
                + "".join(_fs(_triangle(a + b) + b) for a, b in zip(d[0::2], d[1::2])))
    for k in range(kmax + 1):
        split_len = sum((v >> k) + 1 + k for v in coded)
        if split_len < best_len:
            best_len = split_len
            best = (_bin(k + 1, id_len) + head_ref + "".join(_fs(v >> k) for v in coded)
                    + "".join(_bin(v & ((1 << k) - 1), k) for v in coded))
    return best


def encode_ref(samples, bits: int, block_size: int = 16, rsi: int = 128, preprocess: bool = True,
               restricted: bool = False, signed: bool = False, pad_rsi: bool = False) -> bytes:
    n, J = bits, block_size
    id_len, kmax = code_parameters(n, restricted)
    mask = (1 << n) - 1
    flip = 1 << (n - 1) if signed else 0
    raw = [int(v) & mask for v in np.asarray(samples).ravel().tolist()]
    out: list[str] = []
    interval = rsi * J
    for start in range(0, len(raw), interval):
        chunk = raw[start:start + interval]
        nblocks = -(-len(chunk) // J)
        chunk = chunk + [chunk[-1]] * (nblocks * J - len(chunk))
        mapped = _map_residuals([v ^ flip for v in chunk], mask) if preprocess else chunk
        run, run_ref = 0, None
        for b in range(nblocks):
            d = mapped[b * J:(b + 1) * J]
            ref = chunk[0] if (preprocess and b == 0) else None
            at_end = b == nblocks - 1 or (b + 1) % SEGMENT_BLOCKS == 0
            if not any(d):
                if run == 0:
                    run_ref = ref
                run += 1
                if at_end:
                    out.append(_bin(0, id_len + 1) + (_bin(run_ref, n) if run_ref is not None else "")
                               + _zero_run_code(run, True))
                    run = 0
                continue
            if run:
                out.append(_bin(0, id_len + 1) + (_bin(run_ref, n) if run_ref is not None else "")
                           + _zero_run_code(run, False))
                run = 0
            out.append(_block_code(d, ref, n, id_len, kmax))
        if pad_rsi:
            out.append("0" * (-len("".join(out)) % 8))
    stream = "".join(out)
    stream += "0" * (-len(stream) % 8)
    return int(stream, 2).to_bytes(len(stream) // 8, "big") if stream else b""


class _BitReader:
    def __init__(self, data: bytes):
        self.bits = "".join(format(b, "08b") for b in data)
        self.pos = 0

    def take(self, width: int) -> int:
        if self.pos + width > len(self.bits):
            raise CompressedDataError(f"stream truncated: need {width} bits at bit {self.pos}, "
                                      f"have {len(self.bits) - self.pos}")
        v = int(self.bits[self.pos:self.pos + width], 2) if width else 0
        self.pos += width
        return v

    def fs(self) -> int:
        end = self.bits.find("1", self.pos)
        if end < 0:
            raise CompressedDataError(f"stream truncated inside a fundamental sequence at bit {self.pos}")
        q = end - self.pos
        self.pos = end + 1
        return q

    def align(self) -> None:
        self.pos += -self.pos % 8


def decode_ref(data, count: int, bits: int, block_size: int = 16, rsi: int = 128, preprocess: bool = True,
               restricted: bool = False, signed: bool = False, pad_rsi: bool = False) -> np.ndarray:
    n, J = bits, block_size
    id_len, kmax = code_parameters(n, restricted)
    mask = (1 << n) - 1
    flip = 1 << (n - 1) if signed else 0
    reader = _BitReader(bytes(data))
    raw: list[int] = []
    while len(raw) < count:
        if pad_rsi and raw:
            reader.align()
        left = count - len(raw)
        nblocks = min(rsi, -(-left // J))
        mapped: list[int] = []
        ref_value = None
        b = 0
        while b < nblocks:
            has_ref = preprocess and b == 0
            m = J - 1 if has_ref else J
            option = reader.take(id_len)
            if option == 0:
                second_ext = reader.take(1)
                if has_ref:
                    ref_value = reader.take(n)
                if second_ext:
                    pairs = []
                    for _ in range(J // 2):
                        g = reader.fs()
                        s = 0
                        while _triangle(s + 1) <= g:
                            s += 1
                        if s > 2 * mask:
                            raise CompressedDataError(f"second-extension code {g} out of range at bit {reader.pos}")
                        second = g - _triangle(s)
                        pairs += [s - second, second]
                    block = pairs[1:] if has_ref else pairs
                    nblocks_coded = 1
                else:
                    fs = reader.fs()
                    run = fs + 1
                    if run == ROS_FS + 1:
                        run = min(rsi - b, SEGMENT_BLOCKS - b % SEGMENT_BLOCKS)
                    elif run > ROS_FS + 1:
                        run -= 1
                    if b + run > rsi:
                        raise CompressedDataError(f"zero-block run of {run} crosses the reference interval "
                                                  f"at bit {reader.pos}")
                    block = [0] * (run * J - (1 if has_ref else 0))
                    nblocks_coded = run
            elif option == (1 << id_len) - 1:
                if has_ref:
                    ref_value = reader.take(n)
                block = [reader.take(n) for _ in range(m)]
                nblocks_coded = 1
            else:
                k = option - 1
                if has_ref:
                    ref_value = reader.take(n)
                msbs = [reader.fs() for _ in range(m)]
                block = [(q << k) | reader.take(k) for q in msbs]
                nblocks_coded = 1
            if any(v > mask for v in block):
                raise CompressedDataError(f"mapped sample exceeds {n} bits before bit {reader.pos}")
            mapped += block
            b += nblocks_coded
        if preprocess:
            u = ref_value ^ flip
            values = [ref_value]
            for d in mapped:
                u = _unmap(u, d, mask)
                values.append(u ^ flip)
        else:
            values = mapped
        raw += values[:left]
    sign = flip
    out = [((v ^ sign) - sign) for v in raw] if signed else raw
    return np.array(out, dtype=output_dtype_for(n, signed))

