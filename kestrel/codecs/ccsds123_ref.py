"""Plain-Python reference of the CCSDS 123.0-B-2 predictor, sample-adaptive
coder and hybrid coder, written equation by equation from the standard
(section numbers in comments). Slow on purpose: it is the twin that the
Cython kernel (ext/ccsds123.pyx) must match bit for bit.

Samples are indexed s[z, y, x]; t = y * nx + x.
"""
from __future__ import annotations

import numpy as np

from kestrel.codecs.ccsds123 import Ccsds123Params, low_entropy_codes


def _sgn(v: int) -> int:
    return (v > 0) - (v < 0)


def _clip(v: int, lo: int, hi: int) -> int:
    return lo if v < lo else hi if v > hi else v


def _mod_star(v: int, r: int) -> int:
    # 4.7.1: signed residue of v modulo 2**R, in [-2**(R-1), 2**(R-1)).
    half = 1 << (r - 1)
    return ((v + half) % (1 << r)) - half


class Predictor:
    """State of the adaptive predictor for one image (section 4)."""

    def __init__(self, p: Ccsds123Params):
        self.p = p
        self.rep = np.zeros((p.nz, p.ny, p.nx), dtype=np.int64)  # s''
        self.diff = np.zeros(p.nz, dtype=np.int64)  # d_z(t) of the current t
        omega = p.weight_resolution
        self.wmin, self.wmax = -(1 << (omega + 2)), (1 << (omega + 2)) - 1
        self.weights = []
        # 4.6.3.2 default weight initialisation.
        for z in range(p.nz):
            w = [0, 0, 0] if p.full_prediction else []
            spectral = []
            for i in range(min(z, p.prediction_bands)):
                spectral.append((7 << omega) // 8 if i == 0 else spectral[-1] // 8)
            self.weights.append(w + spectral)
        self.abs_limits = p.limits_array("absolute_limits")
        self.rel_limits = p.limits_array("relative_limits")

    def local_sum(self, z, y, x) -> int:
        # 4.4, equations for the four local sum types (on representatives).
        s, p = self.rep, self.p
        kind = p.local_sum_type
        if kind == 0:  # wide neighbour-oriented
            if y > 0 and 0 < x < p.nx - 1:
                return s[z, y, x - 1] + s[z, y - 1, x - 1] + s[z, y - 1, x] + s[z, y - 1, x + 1]
            if y == 0:
                return 4 * s[z, y, x - 1]
            if x == 0:
                return 2 * (s[z, y - 1, x] + s[z, y - 1, x + 1])
            return s[z, y, x - 1] + s[z, y - 1, x - 1] + 2 * s[z, y - 1, x]
        if kind == 1:  # narrow neighbour-oriented
            if y > 0 and 0 < x < p.nx - 1:
                return s[z, y - 1, x - 1] + 2 * s[z, y - 1, x] + s[z, y - 1, x + 1]
            if y == 0:
                return 4 * s[z - 1, y, x - 1] if z > 0 else 4 * p.smid
            if x == 0:
                return 2 * (s[z, y - 1, x] + s[z, y - 1, x + 1])
            return 2 * (s[z, y - 1, x - 1] + s[z, y - 1, x])
        if kind == 2:  # wide column-oriented
            return 4 * s[z, y - 1, x] if y > 0 else 4 * s[z, y, x - 1]
        # narrow column-oriented
        if y > 0:
            return 4 * s[z, y - 1, x]
        return 4 * s[z - 1, y, x - 1] if z > 0 else 4 * p.smid

    def directional(self, z, y, x, sigma) -> list[int]:
        # 4.5.2 directional local differences N, W, NW.
        s = self.rep
        if y == 0:
            return [0, 0, 0]
        north = 4 * s[z, y - 1, x] - sigma
        if x == 0:
            return [north, north, north]
        return [north, 4 * s[z, y, x - 1] - sigma, 4 * s[z, y - 1, x - 1] - sigma]

    def max_error(self, z, s_hat) -> int:
        # 4.8.2: absolute, relative, or the smaller of both.
        p = self.p
        limits = []
        if p.absolute_limits is not None:
            limits.append(int(self.abs_limits[z]))
        if p.relative_limits is not None:
            limits.append((int(self.rel_limits[z]) * abs(s_hat)) >> p.dynamic_range)
        return min(limits) if limits else 0

    def step(self, z, y, x, sample=None, delta=None):
        """Predict s_z(t); with ``sample`` return the mapped quantizer index,
        with ``delta`` (decoding) return the reconstructed sample."""
        p = self.p
        t = y * p.nx + x
        omega = p.weight_resolution
        pstar = min(z, p.prediction_bands)
        if t == 0:
            # 4.7.3 first sample of a band: previous band's sample or mid value.
            s_tilde = 2 * int(self.rep[z - 1, 0, 0]) if (pstar > 0) else 2 * p.smid
            s_check = None
            u = []
            sigma = 0
            m = 0
        else:
            sigma = int(self.local_sum(z, y, x))
            u = [int(v) for v in (self.directional(z, y, x, sigma) if p.full_prediction else [])]
            u += [int(self.diff[z - i]) for i in range(1, pstar + 1)]
            d_hat = sum(w * ui for w, ui in zip(self.weights[z], u))  # 4.7.1
            s_check = _clip(
                _mod_star(d_hat + (1 << omega) * (sigma - 4 * p.smid), p.register_size)
                + (1 << (omega + 2)) * p.smid
                + (1 << (omega + 1)),
                (1 << (omega + 2)) * p.smin,
                (1 << (omega + 2)) * p.smax + (1 << (omega + 1)),
            )
            s_tilde = s_check >> (omega + 1)  # 4.7.2
        s_hat = s_tilde >> 1  # 4.7.3
        if t > 0:
            m = self.max_error(z, s_hat)
        # 4.11 mapped quantizer index bounds.
        if t == 0:
            theta = min(s_hat - p.smin, p.smax - s_hat)
        else:
            theta = min((s_hat - p.smin + m) // (2 * m + 1), (p.smax - s_hat + m) // (2 * m + 1))

        if sample is not None:
            residual = int(sample) - s_hat
            q = residual if t == 0 else _sgn(residual) * ((abs(residual) + m) // (2 * m + 1))  # 4.8.1
            aq = abs(q)
            if aq > theta:
                delta_out = aq + theta
            elif 0 <= (q if s_tilde % 2 == 0 else -q) <= theta:
                delta_out = 2 * aq
            else:
                delta_out = 2 * aq - 1
        else:
            delta_in = int(delta)
            if delta_in > 2 * theta:
                aq = delta_in - theta
                lower_side = (s_hat - p.smin + m) // (2 * m + 1) if t > 0 else s_hat - p.smin
                q = aq if lower_side == theta else -aq
            elif delta_in % 2 == 0:
                q = delta_in // 2 if s_tilde % 2 == 0 else -(delta_in // 2)
            else:
                q = -((delta_in + 1) // 2) if s_tilde % 2 == 0 else (delta_in + 1) // 2

        # 4.9 clipped quantizer bin centre and sample representative.
        unclipped = s_hat + q * (2 * m + 1)
        if sample is None and not (p.smin - m <= unclipped <= p.smax + m):
            raise ValueError("decoded sample outside the dynamic range")
        s_prime = _clip(unclipped, p.smin, p.smax)
        if t == 0:
            rep = s_prime
        else:
            th, phi, psi = p.representative_resolution, p.damping, p.offset
            num = (
                4 * ((1 << th) - phi) * ((s_prime << omega) - _sgn(q) * m * psi * (1 << (omega - th)))
                + phi * s_check
                - phi * (1 << (omega + 1))
            )
            rep = ((num >> (omega + th + 1)) + 1) >> 1
        self.rep[z, y, x] = rep

        if t > 0:
            # 4.10 weight update from the double-resolution prediction error.
            err = 2 * s_prime - s_tilde
            rho = _clip(p.nu_min + ((t - p.nx) >> p.t_inc_log2), p.nu_min, p.nu_max) + p.dynamic_range - omega
            sign = 1 if err >= 0 else -1
            w = self.weights[z]
            for i, ui in enumerate(u):
                v = sign * ui
                step = (v + (1 << rho)) >> (rho + 1) if rho >= 0 else ((v << -rho) + 1) >> 1
                w[i] = _clip(w[i] + step, self.wmin, self.wmax)
            self.diff[z] = 4 * rep - sigma  # 4.5.1 central local difference
        return delta_out if sample is not None else s_prime


def mapped_indices(image: np.ndarray, p: Ccsds123Params) -> np.ndarray:
    """Section 4: mapped quantizer indices delta[z, y, x] of ``image``."""
    pred = Predictor(p)
    out = np.zeros((p.nz, p.ny, p.nx), dtype=np.int64)
    for y in range(p.ny):
        for x in range(p.nx):
            for z in range(p.nz):
                out[z, y, x] = pred.step(z, y, x, sample=image[z, y, x])
    return out


def reconstruct(delta: np.ndarray, p: Ccsds123Params) -> np.ndarray:
    """Inverse of ``mapped_indices``: the decoded samples."""
    pred = Predictor(p)
    out = np.zeros((p.nz, p.ny, p.nx), dtype=np.int64)
    for y in range(p.ny):
        for x in range(p.nx):
            for z in range(p.nz):
                out[z, y, x] = pred.step(z, y, x, delta=delta[z, y, x])
    return out


def encoding_order(p: Ccsds123Params):
    """(z, y, x) in the order samples appear in the body (5.4.2)."""
    if p.sample_order == "bsq":
        for z in range(p.nz):
            for y in range(p.ny):
                for x in range(p.nx):
                    yield z, y, x
        return
    m = p.interleaving_depth
    for y in range(p.ny):
        for z0 in range(0, p.nz, m):
            for x in range(p.nx):
                for z in range(z0, min(z0 + m, p.nz)):
                    yield z, y, x


class _CoderState:
    """5.4.3.2 adaptive code selection statistics for one band."""

    def __init__(self, p: Ccsds123Params):
        self.counter = 1 << p.initial_count_exponent
        self.accumulator = ((3 * (1 << (p.accumulator_init_constant + 6)) - 49) * self.counter) >> 7
        self.p = p

    def k(self) -> int:
        threshold = self.accumulator + ((49 * self.counter) >> 7)
        k = 0
        while k < self.p.dynamic_range - 2 and self.counter << (k + 1) <= threshold:
            k += 1
        return k

    def update(self, delta: int) -> None:
        if self.counter < (1 << self.p.rescaling_counter_size) - 1:
            self.accumulator += delta
            self.counter += 1
        else:
            self.accumulator = (self.accumulator + delta + 1) >> 1
            self.counter = (self.counter + 1) >> 1


def encode_body(delta: np.ndarray, p: Ccsds123Params) -> bytes:
    """5.4.3: sample-adaptive codewords for every delta, padded to B bytes."""
    bits: list[str] = []
    states = [_CoderState(p) for _ in range(p.nz)]
    for z, y, x in encoding_order(p):
        d = int(delta[z, y, x])
        if y == 0 and x == 0:
            bits.append(format(d, f"0{p.dynamic_range}b"))
            continue
        st = states[z]
        k = st.k()
        if d >> k < p.unary_length_limit:
            bits.append("0" * (d >> k) + "1" + (format(d & ((1 << k) - 1), f"0{k}b") if k else ""))
        else:
            bits.append("0" * p.unary_length_limit + format(d, f"0{p.dynamic_range}b"))
        st.update(d)
    text = "".join(bits)
    word = 8 * p.output_word_size
    text += "0" * (-len(text) % word)
    return int(text, 2).to_bytes(len(text) // 8, "big") if text else b""


def decode_body(body: bytes, p: Ccsds123Params) -> np.ndarray:
    """Inverse of ``encode_body``; raises ValueError when the body runs out."""
    text = "".join(format(b, "08b") for b in body)
    pos = 0

    def take(n):
        nonlocal pos
        if pos + n > len(text):
            raise ValueError("body truncated")
        value = int(text[pos : pos + n], 2) if n else 0
        pos += n
        return value

    delta = np.zeros((p.nz, p.ny, p.nx), dtype=np.int64)
    states = [_CoderState(p) for _ in range(p.nz)]
    for z, y, x in encoding_order(p):
        if y == 0 and x == 0:
            delta[z, y, x] = take(p.dynamic_range)
            continue
        st = states[z]
        k = st.k()
        zeros = 0
        while zeros < p.unary_length_limit and take(1) == 0:
            zeros += 1
        d = take(p.dynamic_range) if zeros == p.unary_length_limit else (zeros << k) | take(k)
        delta[z, y, x] = d
        st.update(d)
    return delta


# ------------------------------------------------------------- hybrid coder


def _hybrid_counter(t: int, p: Ccsds123Params) -> int:
    """Gamma(t) of 5.4.3.3: 2**gamma0 at t = 0, +1 per sample, halved
    (rounding up) when it would pass 2**gamma* - 1."""
    cnt = 1 << p.initial_count_exponent
    for _ in range(t):
        cnt = cnt + 1 if cnt < (1 << p.rescaling_counter_size) - 1 else (cnt + 1) >> 1
    return cnt


def _high_entropy_k(acc: int, cnt: int, p: Ccsds123Params) -> int:
    # Largest k <= D - 2 with cnt * 2**(k + 2) <= acc + floor(49 cnt / 2**5).
    k = 0
    while k < p.dynamic_range - 2 and cnt << (k + 3) <= acc + (49 * cnt >> 5):
        k += 1
    return k


def _code_index(acc: int, cnt: int, codes) -> int | None:
    """None for the high-entropy method, else the low-entropy code index:
    the largest i with acc * 2**14 < cnt * T_i."""
    if acc << 14 >= cnt * codes[0].threshold:
        return None
    return max(i for i, code in enumerate(codes) if acc << 14 < cnt * code.threshold)


def _reversed_gpo2(j: int, k: int, p: Ccsds123Params) -> str:
    # k low bits, a 1, then the unary part as zeros (read backwards it is
    # the GPO2 word); past the unary limit, j in D bits then u_max zeros.
    q = j >> k
    if q < p.unary_length_limit:
        return (format(j & ((1 << k) - 1), f"0{k}b") if k else "") + "1" + "0" * q
    return format(j, f"0{p.dynamic_range}b") + "0" * p.unary_length_limit


def encode_body_hybrid(delta: np.ndarray, p: Ccsds123Params) -> bytes:
    """5.4.3.3: the hybrid coder's body for every delta, padded to B bytes."""
    codes = low_entropy_codes()
    bits: list[str] = []
    cnt = [1 << p.initial_count_exponent] * p.nz
    acc = [4 * c for c in cnt]  # encoder's choice; not transmitted
    prefixes: list[tuple] = [()] * 16
    for z, y, x in encoding_order(p):
        d = int(delta[z, y, x])
        if y == 0 and x == 0:
            bits.append(format(d, f"0{p.dynamic_range}b"))
            continue
        if cnt[z] < (1 << p.rescaling_counter_size) - 1:
            acc[z] += 4 * d
            cnt[z] += 1
        else:
            bits.append(str(acc[z] & 1))
            acc[z] = (acc[z] + 4 * d + 1) >> 1
            cnt[z] = (cnt[z] + 1) >> 1
        i = _code_index(acc[z], cnt[z], codes)
        if i is None:
            bits.append(_reversed_gpo2(d, _high_entropy_k(acc[z], cnt[z], p), p))
            continue
        code = codes[i]
        if d > code.limit:
            bits.append(_reversed_gpo2(d - code.limit - 1, 0, p))
        prefixes[i] += (min(d, code.limit + 1),)
        if prefixes[i] in code.codewords:
            bits.append(code.codewords[prefixes[i]])
            prefixes[i] = ()
    bits += [code.flush[prefixes[i]] for i, code in enumerate(codes)]
    bits += [format(a, f"0{2 + p.dynamic_range + p.rescaling_counter_size}b") for a in acc]
    bits.append("1")
    text = "".join(bits)
    text += "0" * (-len(text) % (8 * p.output_word_size))
    return int(text, 2).to_bytes(len(text) // 8, "big")


def decode_body_hybrid(body: bytes, p: Ccsds123Params) -> np.ndarray:
    """Inverse of ``encode_body_hybrid``, reading the body from its end;
    raises ValueError on a truncated or inconsistent body."""
    codes = low_entropy_codes()
    text = "".join(format(b, "08b") for b in body).rstrip("0")
    if not text:
        raise ValueError("no terminating 1 bit")
    text = text[:-1]

    def take_back(n):
        nonlocal text
        if n > len(text):
            raise ValueError("body truncated")
        value = int(text[len(text) - n :], 2) if n else 0
        text = text[: len(text) - n]
        return value

    def word_back(table):
        # Suffix-free words: extend from the end until one matches.
        for n in range(1, 33):
            tail = text[len(text) - n :] if n <= len(text) else None
            if tail is None:
                raise ValueError("body truncated")
            for key, word in table.items():
                if word == tail:
                    take_back(n)
                    return key
        raise ValueError("no codeword matches")

    def gpo2_back(k):
        zeros = 0
        while zeros < p.unary_length_limit:
            if take_back(1):
                return (zeros << k) | take_back(k)
            zeros += 1
        return take_back(p.dynamic_range)

    acc = [0] * p.nz
    for z in reversed(range(p.nz)):
        acc[z] = take_back(2 + p.dynamic_range + p.rescaling_counter_size)
    pending: list[list[int]] = [[] for _ in codes]
    for i in reversed(range(16)):
        pending[i] = list(word_back(codes[i].flush))
    delta = np.zeros((p.nz, p.ny, p.nx), dtype=np.int64)
    for z, y, x in reversed(list(encoding_order(p))):
        t = y * p.nx + x
        if t == 0:
            delta[z, y, x] = take_back(p.dynamic_range)
            continue
        cnt, before = _hybrid_counter(t, p), _hybrid_counter(t - 1, p)
        i = _code_index(acc[z], cnt, codes)
        if i is None:
            d = gpo2_back(_high_entropy_k(acc[z], cnt, p))
        else:
            if not pending[i]:
                pending[i] = list(word_back({k: w for k, w in codes[i].codewords.items()}))
            d = pending[i].pop()
            if d > codes[i].limit:
                d = gpo2_back(0) + codes[i].limit + 1
        if before == (1 << p.rescaling_counter_size) - 1:
            acc[z] = 2 * acc[z] - 4 * d - take_back(1)
        else:
            acc[z] -= 4 * d
        if acc[z] < 0:
            raise ValueError("inconsistent accumulator")
        delta[z, y, x] = d
    if text or any(pending):
        raise ValueError("bits or symbols left over")
    return delta
