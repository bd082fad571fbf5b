# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CCSDS 123.0-B-2 predictor, sample-adaptive and hybrid coders (kernel).

flight/codecs/ccsds123.py validates the image and parameters, allocates the
buffers and calls ``encode_body`` / ``decode_body``; the twin in
flight/codecs/ccsds123_ref.py is the reference tests compare against.

A band predicted from itself alone with the common options (see
``_fast_eligible``) takes a fused one-pass path: predictor and coder
interleaved per sample with weights, statistics and bit buffers in locals.
Everything else runs in two passes without the GIL:
  encode: predictor (image -> mapped indices delta) then coder (delta -> bits
          in the requested sample order);
  decode: decoder (bits -> delta) then inverse predictor (delta -> image).
That split is exact because the predictor of band z at t depends only on
earlier t and bands z-1..z-P at the same t, and each band's coder statistics
evolve in t order whatever the interleaving.

Unchecked indexing is safe because the wrapper checks shapes and the
predictor clips every representative into [smin, smax], so even a corrupt
body keeps all arithmetic in range (|weights| <= 2**21, |local differences|
<= 2**19, at most 18 weights: well inside int64).
"""
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t

import numpy as np

cdef extern from *:
    int clzll "__builtin_clzll"(unsigned long long) nogil

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    /* Big-endian 8-byte load and 4-byte store through memcpy: one unaligned
       access each, correct on either host byte order. */
    static inline uint64_t kestrel_load_be64(const uint8_t* p) {
        uint64_t v;
        memcpy(&v, p, 8);
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
        return v;
    #else
        return __builtin_bswap64(v);
    #endif
    }
    static inline void kestrel_store_be32(uint8_t* p, uint32_t v) {
    #if !(defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__)
        v = __builtin_bswap32(v);
    #endif
        memcpy(p, &v, 4);
    }
    """
    uint64_t load_be64 "kestrel_load_be64"(const uint8_t* p) nogil
    void store_be32 "kestrel_store_be32"(uint8_t* p, uint32_t v) nogil

cdef enum:
    MAX_WEIGHTS = 18

cdef struct Config:
    int64_t nx, ny, nz
    int D
    int64_t smin, smax, smid
    int bsq, depth
    int P, full, lstype, R, omega, tinc_log2, nu_min, nu_max
    int use_abs, use_rel
    int theta, phi, psi
    int u_max, gamma_star, gamma0, k_init, word_bytes, hybrid


cdef Config _config(dict c) except *:
    cdef Config cfg
    cfg.nx = c["nx"]; cfg.ny = c["ny"]; cfg.nz = c["nz"]
    cfg.D = c["dynamic_range"]
    cfg.smin = c["smin"]; cfg.smax = c["smax"]; cfg.smid = c["smid"]
    cfg.bsq = c["bsq"]; cfg.depth = c["depth"]
    cfg.P = c["prediction_bands"]; cfg.full = c["full_prediction"]
    cfg.lstype = c["local_sum_type"]; cfg.R = c["register_size"]
    cfg.omega = c["omega"]; cfg.tinc_log2 = c["t_inc_log2"]
    cfg.nu_min = c["nu_min"]; cfg.nu_max = c["nu_max"]
    cfg.use_abs = c["use_absolute"]; cfg.use_rel = c["use_relative"]
    cfg.theta = c["theta"]; cfg.phi = c["damping"]; cfg.psi = c["offset"]
    cfg.u_max = c["u_max"]; cfg.gamma_star = c["gamma_star"]
    cfg.gamma0 = c["gamma0"]; cfg.k_init = c["k_init"]
    cfg.word_bytes = c["word_bytes"]
    cfg.hybrid = c.get("hybrid", 0)
    if cfg.P > 15 or cfg.P < 0 or not (2 <= cfg.D <= 16) or cfg.omega > 19:
        raise ValueError(f"kernel config out of range: P={cfg.P} D={cfg.D} omega={cfg.omega}")
    if cfg.bsq == 0 and not (1 <= cfg.depth <= cfg.nz):
        raise ValueError(f"interleaving depth {cfg.depth} not in 1..{cfg.nz}")
    return cfg


cdef inline int64_t _clip(int64_t v, int64_t lo, int64_t hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef inline int64_t _sgn(int64_t v) noexcept nogil:
    return (v > 0) - (v < 0)


cdef inline int64_t _mod_star(int64_t v, int R) noexcept nogil:
    cdef uint64_t half, mask
    if R >= 64:
        return v
    half = (<uint64_t>1) << (R - 1)
    mask = ((<uint64_t>1) << R) - 1
    return <int64_t>(((<uint64_t>v + half) & mask)) - <int64_t>half


cdef inline int64_t _local_sum(const Config* c, const int32_t* rep, int64_t z, int64_t y,
                               int64_t x) noexcept nogil:
    # 4.4; rep points at band z's plane, rep - plane at band z-1's.
    cdef int64_t nx = c.nx
    cdef const int32_t* cur = rep + y * nx + x
    cdef const int32_t* up = cur - nx
    cdef int kind = c.lstype
    if kind == 0:
        if y > 0:
            if 0 < x < nx - 1:
                return <int64_t>(cur - 1)[0] + (up - 1)[0] + up[0] + up[1]
            if x == 0:
                return 2 * (<int64_t>up[0] + up[1])
            return <int64_t>(cur - 1)[0] + (up - 1)[0] + 2 * <int64_t>up[0]
        return 4 * <int64_t>(cur - 1)[0]
    if kind == 1:
        if y > 0:
            if 0 < x < nx - 1:
                return <int64_t>(up - 1)[0] + 2 * <int64_t>up[0] + up[1]
            if x == 0:
                return 2 * (<int64_t>up[0] + up[1])
            return 2 * (<int64_t>(up - 1)[0] + up[0])
        if z > 0:
            return 4 * <int64_t>(cur - c.nx * c.ny - 1)[0]
        return 4 * c.smid
    if y > 0:
        return 4 * <int64_t>up[0]
    if kind == 2 or z > 0:
        if kind == 2:
            return 4 * <int64_t>(cur - 1)[0]
        return 4 * <int64_t>(cur - c.nx * c.ny - 1)[0]
    return 4 * c.smid


cdef int _predict_pass(const Config* cfg, const int32_t* image, uint32_t* delta,
                       int32_t* rep, int32_t* out, int64_t* weights, int64_t* diff,
                       const int64_t* abs_lim, const int64_t* rel_lim,
                       int decoding) noexcept nogil:
    """Encoding: image -> delta. Decoding: delta -> out. Returns 0 or 2
    (a decoded value outside the dynamic range)."""
    # Config copied to locals: stores into the int64 weight arrays could
    # otherwise alias it and force reloads in the hot loop.
    cdef Config cl = cfg[0]
    cdef const Config* c = &cl
    cdef int64_t nx = cl.nx, ny = cl.ny, nz = cl.nz
    cdef int64_t plane = nx * ny
    cdef int omega = cl.omega, D = cl.D, R = cl.R, P = cl.P, lstype = cl.lstype
    cdef int nu_min = cl.nu_min, nu_max = cl.nu_max, tinc_log2 = cl.tinc_log2
    cdef int use_abs = cl.use_abs, use_rel = cl.use_rel
    cdef int64_t wmin = -((<int64_t>1) << (omega + 2)), wmax = ((<int64_t>1) << (omega + 2)) - 1
    cdef int64_t smin = cl.smin, smax = cl.smax, smid = cl.smid
    cdef int nd = 3 if cl.full else 0
    cdef int64_t u[MAX_WEIGHTS]
    cdef int64_t x, y, z, t, idx, sigma, d_hat, s_check, s_tilde, s_hat, m, theta
    cdef int64_t residual, q, aq, qs, d, unclipped, s_prime, rep_v, num, err, lower, upper, v, step
    cdef int64_t two_m1, flip, rho_add, rho_mul, w0, w1, w2
    cdef int pstar, ncomp, i, rho_shift
    cdef int rho = 0
    cdef int64_t* w
    cdef const int32_t* cur
    cdef int th = cl.theta, phi = cl.phi, psi = cl.psi
    cdef int64_t high_lo = smin << (omega + 2)
    cdef int64_t high_hi = (smax << (omega + 2)) + ((<int64_t>1) << (omega + 1))
    cdef int64_t high_mid = (smid << (omega + 2)) + ((<int64_t>1) << (omega + 1))
    cdef int64_t mid4 = 4 * smid

    # 4.6.3.2 default weight initialisation.
    for z in range(nz):
        w = weights + z * MAX_WEIGHTS
        for i in range(MAX_WEIGHTS):
            w[i] = 0
        pstar = <int>(z if z < P else P)
        for i in range(pstar):
            w[nd + i] = ((<int64_t>7) << omega) // 8 if i == 0 else w[nd + i - 1] // 8

    for y in range(ny):
        for x in range(nx):
            t = y * nx + x
            if t > 0:
                rho = <int>_clip(nu_min + ((t - nx) >> tinc_log2), nu_min, nu_max) + D - omega
            # Weight step (4.10.3) as (v * rho_mul + rho_add) >> rho_shift.
            if rho >= 0:
                rho_mul = 1
                rho_add = (<int64_t>1) << rho
                rho_shift = rho + 1
            else:
                rho_mul = (<int64_t>1) << (-rho)
                rho_add = 1
                rho_shift = 1
            for z in range(nz):
                idx = z * plane + t
                pstar = <int>(z if z < P else P)
                m = 0
                sigma = 0
                s_check = 0
                ncomp = 0
                w = weights + z * MAX_WEIGHTS
                if t == 0:
                    s_tilde = 2 * <int64_t>rep[idx - plane] if pstar > 0 else 2 * smid
                else:
                    cur = rep + idx
                    if lstype == 0 and y > 0 and 0 < x < nx - 1:
                        sigma = <int64_t>(cur - 1)[0] + (cur - nx - 1)[0] + (cur - nx)[0] + (cur - nx + 1)[0]
                    else:
                        sigma = _local_sum(c, rep + z * plane, z, y, x)
                    if nd:
                        if y == 0:
                            u[0] = 0; u[1] = 0; u[2] = 0
                        else:
                            u[0] = 4 * <int64_t>(cur - nx)[0] - sigma
                            if x == 0:
                                u[1] = u[0]; u[2] = u[0]
                            else:
                                u[1] = 4 * <int64_t>(cur - 1)[0] - sigma
                                u[2] = 4 * <int64_t>(cur - nx - 1)[0] - sigma
                    for i in range(pstar):
                        u[nd + i] = diff[z - 1 - i]
                    ncomp = nd + pstar
                    if ncomp == 3:
                        d_hat = w[0] * u[0] + w[1] * u[1] + w[2] * u[2]
                    else:
                        d_hat = 0
                        for i in range(ncomp):
                            d_hat += w[i] * u[i]
                    s_check = _mod_star(d_hat + ((sigma - mid4) << omega), R) + high_mid
                    s_check = _clip(s_check, high_lo, high_hi)
                    s_tilde = s_check >> (omega + 1)
                s_hat = s_tilde >> 1
                if t > 0 and (use_abs or use_rel):
                    # 4.8.2 maximum error.
                    m = abs_lim[z] if use_abs else 0x7FFFFFFF
                    if use_rel:
                        v = (rel_lim[z] * (s_hat if s_hat >= 0 else -s_hat)) >> D
                        if v < m:
                            m = v
                two_m1 = 2 * m + 1
                # 4.11 theta: room between the prediction and each end.
                if m == 0:
                    lower = s_hat - smin
                    upper = smax - s_hat
                else:
                    lower = (s_hat - smin + m) // two_m1
                    upper = (smax - s_hat + m) // two_m1
                theta = lower if lower < upper else upper
                flip = -(s_tilde & 1)  # 0 or -1: (-1)**s_tilde as a sign mask

                if not decoding:
                    residual = <int64_t>image[idx] - s_hat
                    if m == 0:
                        q = residual
                    else:
                        q = _sgn(residual) * (((residual if residual >= 0 else -residual) + m) // two_m1)
                    aq = q if q >= 0 else -q
                    qs = (q ^ flip) - flip
                    # With |q| <= theta only the sign test of 4.11 remains.
                    d = aq + theta if aq > theta else 2 * aq - (qs < 0)
                    delta[idx] = <uint32_t>d
                else:
                    d = delta[idx]
                    if d > 2 * theta:
                        aq = d - theta
                        q = aq if lower == theta else -aq
                    else:
                        q = (d + 1) >> 1
                        if (d & 1) == 0:
                            q = (q ^ flip) - flip
                        else:
                            q = -((q ^ flip) - flip)
                unclipped = s_hat + q * two_m1
                if decoding and (unclipped < smin - m or unclipped > smax + m):
                    return 2
                s_prime = _clip(unclipped, smin, smax)
                if decoding:
                    out[idx] = <int32_t>s_prime
                if t == 0 or (phi == 0 and psi == 0):
                    rep_v = s_prime
                else:
                    # 4.9 sample representative with damping phi and offset psi.
                    num = (4 * (((<int64_t>1) << th) - phi)
                           * ((s_prime << omega) - _sgn(q) * m * psi * ((<int64_t>1) << (omega - th)))
                           + phi * s_check - phi * ((<int64_t>1) << (omega + 1)))
                    rep_v = ((num >> (omega + th + 1)) + 1) >> 1
                rep[idx] = <int32_t>rep_v
                if t > 0:
                    # 4.10 weight update, then this band's central local difference.
                    err = 2 * s_prime - s_tilde
                    flip = err >> 63  # 0 or -1: sgn+(err) as a sign mask
                    if ncomp == 3:
                        w0 = w[0] + (((((u[0] ^ flip) - flip) * rho_mul) + rho_add) >> rho_shift)
                        w1 = w[1] + (((((u[1] ^ flip) - flip) * rho_mul) + rho_add) >> rho_shift)
                        w2 = w[2] + (((((u[2] ^ flip) - flip) * rho_mul) + rho_add) >> rho_shift)
                        w[0] = _clip(w0, wmin, wmax)
                        w[1] = _clip(w1, wmin, wmax)
                        w[2] = _clip(w2, wmin, wmax)
                    else:
                        for i in range(ncomp):
                            step = ((((u[i] ^ flip) - flip) * rho_mul) + rho_add) >> rho_shift
                            w[i] = _clip(w[i] + step, wmin, wmax)
                    diff[z] = 4 * rep_v - sigma
    return 0


cdef inline int _select_k(int64_t acc, int64_t cnt, int kmax) noexcept nogil:
    # 5.4.3.2.3: largest k <= D-2 with cnt * 2**k <= acc + floor(49 cnt / 2**7).
    cdef int64_t threshold = acc + ((49 * cnt) >> 7)
    cdef int k
    if cnt > threshold:
        return 0
    # Bit-length difference is k or k + 1; one comparison settles it.
    k = clzll(<uint64_t>cnt) - clzll(<uint64_t>threshold)
    if (cnt << k) > threshold:
        k -= 1
    return k if k < kmax else kmax


cdef struct BitWriter:
    uint8_t* out
    int64_t pos
    uint64_t acc
    int nbits


cdef inline void _put(BitWriter* bw, uint64_t value, int n) noexcept nogil:
    # n <= 32 and nbits < 32 on entry, so acc never holds more than 64 bits.
    bw.acc = (bw.acc << n) | value
    bw.nbits += n
    if bw.nbits >= 32:
        bw.nbits -= 32
        store_be32(bw.out + bw.pos, <uint32_t>(bw.acc >> bw.nbits))
        bw.pos += 4


cdef inline void _code_one(BitWriter* bw, const Config* c, int64_t d, int64_t* acc,
                           int64_t* cnt) noexcept nogil:
    cdef int k = _select_k(acc[0], cnt[0], c.D - 2)
    cdef int64_t quotient = d >> k
    if quotient < c.u_max:
        # quotient zeros, a one, then the k low bits of d: one write when it fits.
        if quotient + 1 + k <= 32:
            _put(bw, ((<uint64_t>1) << k) | <uint64_t>(d & (((<int64_t>1) << k) - 1)), <int>quotient + 1 + k)
        else:
            _put(bw, 1, <int>quotient + 1)
            if k:
                _put(bw, <uint64_t>(d & (((<int64_t>1) << k) - 1)), k)
    else:
        _put(bw, 0, c.u_max)
        _put(bw, <uint64_t>d, c.D)
    # 5.4.3.2.2 statistics update.
    if cnt[0] < ((<int64_t>1) << c.gamma_star) - 1:
        acc[0] += d
        cnt[0] += 1
    else:
        acc[0] = (acc[0] + d + 1) >> 1
        cnt[0] = (cnt[0] + 1) >> 1


cdef int64_t _code_pass(const Config* c, const uint32_t* delta, int64_t* acc, int64_t* cnt,
                        uint8_t* out) noexcept nogil:
    cdef BitWriter bw
    cdef int64_t plane = c.nx * c.ny
    cdef int64_t x, y, z, z0, z1, t, idx
    cdef int64_t total_bits, word_bits, fill, n
    bw.out = out; bw.pos = 0; bw.acc = 0; bw.nbits = 0
    for z in range(c.nz):
        cnt[z] = (<int64_t>1) << c.gamma0
        acc[z] = ((3 * ((<int64_t>1) << (c.k_init + 6)) - 49) * cnt[z]) >> 7
    if c.bsq:
        for z in range(c.nz):
            idx = z * plane
            _put(&bw, delta[idx], c.D)
            for t in range(1, plane):
                _code_one(&bw, c, delta[idx + t], &acc[z], &cnt[z])
    else:
        for y in range(c.ny):
            z0 = 0
            while z0 < c.nz:
                z1 = z0 + c.depth if z0 + c.depth < c.nz else c.nz
                for x in range(c.nx):
                    t = y * c.nx + x
                    for z in range(z0, z1):
                        if t == 0:
                            _put(&bw, delta[z * plane], c.D)
                        else:
                            _code_one(&bw, c, delta[z * plane + t], &acc[z], &cnt[z])
                z0 = z1
    return _finish(&bw, c.word_bytes)


cdef int64_t _finish(BitWriter* bw, int word_bytes) noexcept nogil:
    """Fill with zeros to a whole output word (5.4.1), flush, return bytes."""
    cdef int64_t total_bits = bw.pos * 8 + bw.nbits
    cdef int64_t word_bits = 8 * word_bytes
    cdef int64_t fill = (word_bits - total_bits % word_bits) % word_bits
    cdef int64_t n
    while fill > 0:
        n = fill if fill < 32 else 32
        _put(bw, 0, <int>n)
        fill -= n
    # nbits is now a multiple of 8.
    while bw.nbits >= 8:
        bw.nbits -= 8
        bw.out[bw.pos] = <uint8_t>(bw.acc >> bw.nbits)
        bw.pos += 1
    return bw.pos


cdef struct BitReader:
    const uint8_t* data
    int64_t size
    int64_t pos        # bytes loaded so far (bytes past the end load as zeros)
    uint64_t window    # unread bits, left-aligned
    int nbits          # valid bits in window; bits taken = 8 * pos - nbits


cdef inline void _refill(BitReader* br) noexcept nogil:
    # Afterwards at least 56 bits are valid: enough for any one codeword
    # (u_max + D <= 48), so each sample needs one refill.
    if br.nbits > 56:
        return
    if br.pos + 8 <= br.size:
        # One unaligned big-endian load. Bits of a partly counted byte are
        # ORed again, identically, by the next refill.
        br.window |= load_be64(br.data + br.pos) >> br.nbits
        br.pos += (63 - br.nbits) >> 3
        br.nbits |= 56
        return
    while br.nbits <= 56:
        if br.pos < br.size:
            br.window |= (<uint64_t>br.data[br.pos]) << (56 - br.nbits)
        br.pos += 1
        br.nbits += 8


cdef inline int64_t _consumed(const BitReader* br) noexcept nogil:
    return 8 * br.pos - br.nbits


cdef inline uint64_t _take(BitReader* br, int n) noexcept nogil:
    cdef uint64_t v
    if n == 0:
        return 0
    _refill(br)
    v = br.window >> (64 - n)
    br.window <<= n
    br.nbits -= n
    return v


cdef inline int64_t _decode_one(BitReader* br, const Config* c, int64_t* acc,
                                int64_t* cnt) noexcept nogil:
    cdef int k = _select_k(acc[0], cnt[0], c.D - 2)
    cdef int zeros
    cdef int64_t d
    _refill(br)
    if (br.window >> (64 - c.u_max)) == 0:
        _take(br, c.u_max)
        d = <int64_t>_take(br, c.D)
    else:
        zeros = clzll(br.window)
        _take(br, zeros + 1)
        d = ((<int64_t>zeros) << k) | <int64_t>_take(br, k)
    if cnt[0] < ((<int64_t>1) << c.gamma_star) - 1:
        acc[0] += d
        cnt[0] += 1
    else:
        acc[0] = (acc[0] + d + 1) >> 1
        cnt[0] = (cnt[0] + 1) >> 1
    return d


cdef int _decode_pass(const Config* c, const uint8_t* data, int64_t size, uint32_t* delta,
                      int64_t* acc, int64_t* cnt) noexcept nogil:
    """Bits -> delta. Returns 1 when the body is too short."""
    cdef BitReader br
    cdef int64_t plane = c.nx * c.ny
    cdef int64_t x, y, z, z0, z1, t, idx
    br.data = data; br.size = size; br.pos = 0; br.window = 0; br.nbits = 0
    for z in range(c.nz):
        cnt[z] = (<int64_t>1) << c.gamma0
        acc[z] = ((3 * ((<int64_t>1) << (c.k_init + 6)) - 49) * cnt[z]) >> 7
    if c.bsq:
        for z in range(c.nz):
            idx = z * plane
            delta[idx] = <uint32_t>_take(&br, c.D)
            for t in range(1, plane):
                delta[idx + t] = <uint32_t>_decode_one(&br, c, &acc[z], &cnt[z])
            if _consumed(&br) > size * 8:
                return 1
    else:
        for y in range(c.ny):
            z0 = 0
            while z0 < c.nz:
                z1 = z0 + c.depth if z0 + c.depth < c.nz else c.nz
                for x in range(c.nx):
                    t = y * c.nx + x
                    for z in range(z0, z1):
                        if t == 0:
                            delta[z * plane] = <uint32_t>_take(&br, c.D)
                        else:
                            delta[z * plane + t] = <uint32_t>_decode_one(&br, c, &acc[z], &cnt[z])
                z0 = z1
            if _consumed(&br) > size * 8:
                return 1
    return 1 if _consumed(&br) > size * 8 else 0


# ------------------------------------------------------------- hybrid coder
#
# 5.4.3.3. Statistics are updated with the current sample before its code is
# chosen (so a decoder running backwards knows them), a rescaling emits the
# accumulator's low bit, high-entropy samples get reversed length-limited
# GPO2 words, low-entropy ones feed one of 16 variable-to-variable codes
# whose output words are suffix-free. The body ends with each code's flush
# word, the final accumulators and a 1 bit; decoding runs from that end.

cdef enum:
    HYBRID_CODES = 16
    HYBRID_STACK = 260      # longest input codeword is 256 symbols
    THRESHOLD_SHIFT = 14


cdef struct HTab:
    const int32_t* enc_child       # [node * 16 + symbol]: child node, or -(1 + codeword)
    const uint32_t* cw_bits
    const uint8_t* cw_len
    const int32_t* code_root
    const uint32_t* flush_bits      # per node: flush word of that prefix
    const uint8_t* flush_len
    const int32_t* rev_next        # [node * 2 + bit], read last bit first
    const int32_t* rev_code_root
    const int32_t* rev_flush_root
    const int32_t* cw_sym_start
    const int32_t* cw_sym_len
    const int32_t* node_sym_start
    const int32_t* node_sym_len
    const uint8_t* symbols
    const int64_t* limits
    const int64_t* thresholds


cdef class HybridTables:
    """The 16 low-entropy codes as flat arrays (built once by the wrapper)."""
    cdef readonly dict arrays
    cdef HTab tab

    def __init__(self, dict arrays):
        self.arrays = arrays
        cdef const int32_t[::1] enc_child = arrays["enc_child"]
        cdef const uint32_t[::1] cw_bits = arrays["cw_bits"]
        cdef const uint8_t[::1] cw_len = arrays["cw_len"]
        cdef const int32_t[::1] code_root = arrays["code_root"]
        cdef const uint32_t[::1] flush_bits = arrays["flush_bits"]
        cdef const uint8_t[::1] flush_len = arrays["flush_len"]
        cdef const int32_t[::1] rev_next = arrays["rev_next"]
        cdef const int32_t[::1] rev_code_root = arrays["rev_code_root"]
        cdef const int32_t[::1] rev_flush_root = arrays["rev_flush_root"]
        cdef const int32_t[::1] cw_sym_start = arrays["cw_sym_start"]
        cdef const int32_t[::1] cw_sym_len = arrays["cw_sym_len"]
        cdef const int32_t[::1] node_sym_start = arrays["node_sym_start"]
        cdef const int32_t[::1] node_sym_len = arrays["node_sym_len"]
        cdef const uint8_t[::1] symbols = arrays["symbols"]
        cdef const int64_t[::1] limits = arrays["limits"]
        cdef const int64_t[::1] thresholds = arrays["thresholds"]
        if code_root.shape[0] != HYBRID_CODES or limits.shape[0] != HYBRID_CODES:
            raise ValueError("hybrid tables: expected 16 codes")
        # The arrays stay referenced by self.arrays, so the pointers stay valid.
        self.tab.enc_child = &enc_child[0]; self.tab.cw_bits = &cw_bits[0]
        self.tab.cw_len = &cw_len[0]; self.tab.code_root = &code_root[0]
        self.tab.flush_bits = &flush_bits[0]; self.tab.flush_len = &flush_len[0]
        self.tab.rev_next = &rev_next[0]; self.tab.rev_code_root = &rev_code_root[0]
        self.tab.rev_flush_root = &rev_flush_root[0]; self.tab.cw_sym_start = &cw_sym_start[0]
        self.tab.cw_sym_len = &cw_sym_len[0]; self.tab.node_sym_start = &node_sym_start[0]
        self.tab.node_sym_len = &node_sym_len[0]; self.tab.symbols = &symbols[0]
        self.tab.limits = &limits[0]; self.tab.thresholds = &thresholds[0]


cdef inline int _high_entropy_k(int64_t acc, int64_t cnt, int kmax) noexcept nogil:
    # Largest k <= kmax with cnt * 2**(k + 2) <= acc + floor(49 cnt / 2**5).
    cdef int64_t threshold = acc + ((49 * cnt) >> 5)
    cdef int k
    if (cnt << 2) > threshold:
        return 0
    k = clzll(<uint64_t>cnt) - clzll(<uint64_t>threshold)
    if (cnt << k) > threshold:
        k -= 1
    k -= 2
    return k if k < kmax else kmax


cdef inline int _code_index(const HTab* T, int64_t scaled_acc, int64_t cnt) noexcept nogil:
    # Largest i with acc * 2**14 < cnt * T_i (thresholds decrease with i).
    cdef int i = 0
    while i < HYBRID_CODES - 1 and scaled_acc < cnt * T.thresholds[i + 1]:
        i += 1
    return i


cdef inline void _put_reversed_gpo2(BitWriter* bw, int64_t j, int k, int u_max, int D) noexcept nogil:
    # The k low bits of j, a 1, then floor(j / 2**k) zeros; or, past u_max,
    # j in D bits then u_max zeros.
    cdef int64_t q = j >> k
    if q < u_max:
        _put(bw, ((<uint64_t>(j & ((<int64_t>1 << k) - 1))) << 1) | 1, k + 1)
        if q:
            _put(bw, 0, <int>q)
    else:
        _put(bw, <uint64_t>j, D)
        _put(bw, 0, u_max)


cdef int64_t _hybrid_code_pass(const Config* c, const uint32_t* delta, const HTab* T,
                               int64_t* acc, int64_t* cnt, uint8_t* out) noexcept nogil:
    cdef BitWriter bw
    cdef int64_t plane = c.nx * c.ny
    cdef int64_t x, y, z, z0, z1, t, d, idx, scaled, nxt
    cdef int64_t cnt_limit = ((<int64_t>1) << c.gamma_star) - 1
    cdef int32_t prefix[HYBRID_CODES]
    cdef int i, k, acc_bits = 2 + c.D + c.gamma_star
    bw.out = out; bw.pos = 0; bw.acc = 0; bw.nbits = 0
    for i in range(HYBRID_CODES):
        prefix[i] = T.code_root[i]
    for z in range(c.nz):
        cnt[z] = (<int64_t>1) << c.gamma0
        acc[z] = 4 * cnt[z]  # the encoder's choice; the decoder never needs it
    z = 0; y = 0; x = 0
    z0 = 0; z1 = c.nz if c.bsq else (c.depth if c.depth < c.nz else c.nz)
    # One loop over the body's sample order (5.4.2), BSQ or BI.
    while True:
        t = y * c.nx + x
        d = delta[z * plane + t]
        if t == 0:
            _put(&bw, <uint64_t>d, c.D)
        else:
            if cnt[z] < cnt_limit:
                acc[z] += 4 * d
                cnt[z] += 1
            else:
                _put(&bw, <uint64_t>(acc[z] & 1), 1)
                acc[z] = (acc[z] + 4 * d + 1) >> 1
                cnt[z] = (cnt[z] + 1) >> 1
            scaled = acc[z] << THRESHOLD_SHIFT
            if scaled >= cnt[z] * T.thresholds[0]:
                k = _high_entropy_k(acc[z], cnt[z], c.D - 2)
                _put_reversed_gpo2(&bw, d, k, c.u_max, c.D)
            else:
                i = _code_index(T, scaled, cnt[z])
                if d <= T.limits[i]:
                    nxt = T.enc_child[prefix[i] * 16 + d]
                else:
                    _put_reversed_gpo2(&bw, d - T.limits[i] - 1, 0, c.u_max, c.D)
                    nxt = T.enc_child[prefix[i] * 16 + T.limits[i] + 1]
                if nxt < 0:
                    idx = -nxt - 1
                    _put(&bw, T.cw_bits[idx], T.cw_len[idx])
                    prefix[i] = T.code_root[i]
                else:
                    prefix[i] = <int32_t>nxt
        # Advance to the next sample in body order.
        if c.bsq:
            x += 1
            if x == c.nx:
                x = 0; y += 1
                if y == c.ny:
                    y = 0; z += 1
                    if z == c.nz:
                        break
        else:
            z += 1
            if z == z1:
                z = z0; x += 1
                if x == c.nx:
                    x = 0; z0 = z1; z = z0
                    if z0 == c.nz:
                        z0 = 0; z = 0; y += 1
                        if y == c.ny:
                            break
                    z1 = z0 + c.depth if z0 + c.depth < c.nz else c.nz
    # Image tail: flush words, final accumulators, then a 1 marks the end.
    for i in range(HYBRID_CODES):
        _put(&bw, T.flush_bits[prefix[i]], T.flush_len[prefix[i]])
    for z in range(c.nz):
        _put(&bw, <uint64_t>acc[z], acc_bits)
    _put(&bw, 1, 1)
    return _finish(&bw, c.word_bytes)


cdef struct RevReader:
    const uint8_t* data
    int64_t cur     # bits before this index are still unread
    int bad         # set when a read runs past the start


cdef inline int64_t _read_back(RevReader* r, int n) noexcept nogil:
    # The n bits just before the cursor, as a big-endian number (n <= 32).
    cdef int64_t start, first, last, b
    cdef uint64_t w = 0
    if n == 0:
        return 0
    if n > r.cur:
        r.bad = 1
        r.cur = 0
        return 0
    start = r.cur - n
    first = start >> 3
    last = (r.cur - 1) >> 3
    for b in range(first, last + 1):
        w = (w << 8) | r.data[b]
    w >>= 8 * (last + 1) - r.cur
    r.cur = start
    return <int64_t>(w & (((<uint64_t>1) << n) - 1))


cdef inline int64_t _read_reversed_gpo2(RevReader* r, int k, int u_max, int D) noexcept nogil:
    cdef int zeros = 0
    cdef int64_t low
    while zeros < u_max:
        if _read_back(r, 1):
            low = _read_back(r, k)
            return ((<int64_t>zeros) << k) | low
        if r.bad:
            return 0
        zeros += 1
    return _read_back(r, D)


cdef inline int32_t _read_word_back(RevReader* r, const int32_t* rev_next, int32_t node) noexcept nogil:
    # Walk the reversed-word trie until a leaf; returns its value.
    cdef int32_t nxt
    while True:
        nxt = rev_next[node * 2 + _read_back(r, 1)]
        if r.bad:
            return 0
        if nxt < 0:
            return -nxt - 1
        node = nxt


cdef inline void _push_symbols(uint8_t* stack, int* depth, const uint8_t* seq, int n) noexcept nogil:
    cdef int j
    for j in range(n):
        stack[depth[0] + j] = seq[j]
    depth[0] += n


cdef int _hybrid_decode_pass(const Config* c, const uint8_t* data, int64_t size, uint32_t* delta,
                             const HTab* T, int64_t* acc) noexcept nogil:
    """Bits -> delta, reading the body backwards. Returns 0, 1 (truncated)
    or 3 (inconsistent hybrid body)."""
    cdef RevReader r
    cdef int64_t plane = c.nx * c.ny
    cdef int64_t end, x, y, z, z0, z1, t, d, a, scaled, cnt, c0, half, t1, phase, acc_cap, ngroups, g
    cdef int i, k, leaf, rescaled
    cdef int acc_bits = 2 + c.D + c.gamma_star
    cdef uint8_t stacks[HYBRID_CODES * HYBRID_STACK]
    cdef int depth[HYBRID_CODES]
    cdef uint8_t sym
    # The last 1 bit closes the body; only fill (less than a word) may follow.
    end = size
    while end > 0 and data[end - 1] == 0:
        end -= 1
    if end == 0:
        return 1
    r.data = data
    r.cur = 8 * end - 1
    sym = data[end - 1]
    while (sym & 1) == 0:
        sym >>= 1
        r.cur -= 1
    if size * 8 - r.cur > 8 * c.word_bytes:
        return 3
    r.bad = 0
    acc_cap = (<int64_t>1) << (acc_bits + 1)
    for z in range(c.nz - 1, -1, -1):
        acc[z] = _read_back(&r, acc_bits)
    for i in range(HYBRID_CODES - 1, -1, -1):
        depth[i] = 0
        leaf = _read_word_back(&r, T.rev_next, T.rev_flush_root[i])
        _push_symbols(&stacks[i * HYBRID_STACK], &depth[i], &T.symbols[T.node_sym_start[leaf]],
                      T.node_sym_len[leaf])
    if r.bad:
        return 1
    # Counter: 2**gamma0 + t up to 2**gamma* - 1 (at t1), then period half.
    c0 = (<int64_t>1) << c.gamma0
    half = (<int64_t>1) << (c.gamma_star - 1)
    t1 = 2 * half - 1 - c0
    ngroups = 1 if c.bsq else (c.nz + c.depth - 1) // c.depth
    # Exact reverse of the body's sample order.
    z = c.nz - 1; y = c.ny - 1; x = c.nx - 1
    g = ngroups - 1
    z0 = 0 if c.bsq else g * c.depth
    z1 = c.nz
    while True:
        t = y * c.nx + x
        if t == 0:
            d = _read_back(&r, c.D)
        else:
            if t <= t1:
                cnt = c0 + t
                rescaled = 0
            else:
                phase = (t - t1 - 1) % half
                cnt = half + phase
                rescaled = phase == 0
            a = acc[z]
            scaled = a << THRESHOLD_SHIFT
            if scaled >= cnt * T.thresholds[0]:
                k = _high_entropy_k(a, cnt, c.D - 2)
                d = _read_reversed_gpo2(&r, k, c.u_max, c.D)
            else:
                i = _code_index(T, scaled, cnt)
                if depth[i] == 0:
                    leaf = _read_word_back(&r, T.rev_next, T.rev_code_root[i])
                    if r.bad:
                        return 1
                    _push_symbols(&stacks[i * HYBRID_STACK], &depth[i], &T.symbols[T.cw_sym_start[leaf]],
                                  T.cw_sym_len[leaf])
                depth[i] -= 1
                d = stacks[i * HYBRID_STACK + depth[i]]
                if d > T.limits[i]:
                    d = _read_reversed_gpo2(&r, 0, c.u_max, c.D) + T.limits[i] + 1
            # Undo this sample's statistics update (4 delta added, or halved
            # after adding with the old low bit sent first).
            if rescaled:
                a = 2 * a - 4 * d - _read_back(&r, 1)
            else:
                a = a - 4 * d
            if a < 0 or a >= acc_cap:
                return 3
            acc[z] = a
        if r.bad:
            return 1
        delta[z * plane + t] = <uint32_t>d
        # Step back to the previous sample in body order.
        if c.bsq:
            x -= 1
            if x < 0:
                x = c.nx - 1; y -= 1
                if y < 0:
                    y = c.ny - 1; z -= 1
                    if z < 0:
                        break
        else:
            z -= 1
            if z < z0:
                z = z1 - 1; x -= 1
                if x < 0:
                    x = c.nx - 1; g -= 1
                    if g < 0:
                        g = ngroups - 1; y -= 1
                        if y < 0:
                            break
                    z0 = g * c.depth
                    z1 = z0 + c.depth if z0 + c.depth < c.nz else c.nz
                    z = z1 - 1
    if r.cur != 0:
        return 3
    for i in range(HYBRID_CODES):
        if depth[i]:
            return 3
    return 0


# ----------------------------------------------------------------- fast path
#
# A band predicted from itself alone (no previous bands), with full
# prediction, the wide neighbour-oriented local sum, R = 64, no damping or
# offset (so the representative is the reconstructed sample) and a fixed
# absolute error limit: the common single-band infrared case. The predictor
# and the coder run fused, sample by sample, with the three weights, the
# coder statistics and the bit buffers in locals, so the only serial chain
# is the weight update (encoding, lossless) or weights + previous sample
# (decoding, near-lossless). The general passes above stay the definition;
# tests require byte-identical output from both.

cdef enum:
    MAGIC_SHIFT = 40


cdef int _fast_predictor_ok(const Config* c) noexcept nogil:
    return (c.full and c.lstype == 0 and c.nx >= 2 and c.R == 64
            and c.phi == 0 and c.psi == 0 and not c.use_rel
            and (c.nz == 1 or (c.bsq and c.P == 0)))


cdef int _fast_eligible(const Config* c) noexcept nogil:
    # Fused predictor + coder; the hybrid coder only borrows the predictor
    # (it needs the whole delta array: its decoder runs backwards).
    return _fast_predictor_ok(c) and not c.hybrid


cdef inline uint64_t _magic(int64_t divisor) noexcept nogil:
    # floor(n / divisor) == (n * magic) >> 40 exactly for 0 <= n < 2**17 and
    # divisor < 2**17: the error n * (magic - 2**40 / divisor) < 2**17 stays
    # below 2**40 / divisor.
    return ((<uint64_t>1) << MAGIC_SHIFT) // <uint64_t>divisor + 1


cdef inline int64_t _divide(int64_t n, uint64_t magic) noexcept nogil:
    return <int64_t>((<uint64_t>n * magic) >> MAGIC_SHIFT)


cdef inline void _rho_step(const Config* c, int64_t t, int64_t* half_mul, int64_t* add,
                           int* shift) noexcept nogil:
    # 4.10.3 weight step for the rho at t. For rho < 0 it is
    # ((v << -rho) + 1) >> 1 = v * 2**(-rho - 1) exactly (v << -rho is even):
    # half_mul. For rho >= 0 (half_mul = 0) it is (v + add) >> shift.
    cdef int rho = <int>_clip(c.nu_min + ((t - c.nx) >> c.tinc_log2), c.nu_min, c.nu_max) + c.D - c.omega
    if rho >= 0:
        half_mul[0] = 0
        add[0] = (<int64_t>1) << rho
        shift[0] = rho + 1
    else:
        half_mul[0] = (<int64_t>1) << (-rho - 1)
        add[0] = 0
        shift[0] = 0


cdef inline int64_t _weight_step(int64_t u, int64_t mask, int64_t half_mul, int64_t add,
                                 int shift) noexcept nogil:
    # mask = -1 when the prediction error is negative (v = -u), else 0.
    cdef int64_t v
    if half_mul:
        v = u * half_mul  # known before the error sign: off the critical path
        return (v ^ mask) - mask
    v = (u ^ mask) - mask
    return (v + add) >> shift


cdef inline int64_t _map_index(int64_t q, int64_t theta, int64_t flip) noexcept nogil:
    # 4.11 with flip = -(s_tilde & 1). The sign of q is noise, so it is
    # handled with masks: a branch on it would be mispredicted half the time.
    cdef int64_t sign = q >> 63
    cdef int64_t aq = (q ^ sign) - sign
    cdef int64_t qs = (q ^ flip) - flip
    return aq + theta if aq > theta else 2 * aq + (qs >> 63)


cdef inline void _code_sample(BitWriter* bw, int64_t d, int64_t* acc, int64_t* cnt, int kmax,
                              int u_max, int D, int64_t cnt_limit) noexcept nogil:
    cdef int k = _select_k(acc[0], cnt[0], kmax)
    cdef int64_t quotient = d >> k
    if quotient < u_max:
        if quotient + 1 + k <= 32:
            _put(bw, ((<uint64_t>1) << k) | <uint64_t>(d & (((<int64_t>1) << k) - 1)), <int>quotient + 1 + k)
        else:
            _put(bw, 1, <int>quotient + 1)
            if k:
                _put(bw, <uint64_t>(d & (((<int64_t>1) << k) - 1)), k)
    else:
        _put(bw, 0, u_max)
        _put(bw, <uint64_t>d, D)
    if cnt[0] < cnt_limit:
        acc[0] += d
        cnt[0] += 1
    else:
        acc[0] = (acc[0] + d + 1) >> 1
        cnt[0] = (cnt[0] + 1) >> 1


cdef inline int64_t _decode_sample(BitReader* br, int64_t* acc, int64_t* cnt, int kmax,
                                   int u_max, int D, int64_t cnt_limit) noexcept nogil:
    cdef int k = _select_k(acc[0], cnt[0], kmax)
    cdef int zeros, n
    cdef int64_t d
    cdef uint64_t win
    _refill(br)
    win = br.window
    if (win >> (64 - u_max)) == 0:
        d = <int64_t>((win << u_max) >> (64 - D))
        n = u_max + D
    else:
        zeros = clzll(win)
        # k low bits after the terminating one; ">> 1 >> (63 - k)" is
        # ">> (64 - k)" without the undefined shift by 64 when k = 0.
        d = ((<int64_t>zeros) << k) | <int64_t>(((win << (zeros + 1)) >> 1) >> (63 - k))
        n = zeros + 1 + k
    br.window = win << n
    br.nbits -= n
    if cnt[0] < cnt_limit:
        acc[0] += d
        cnt[0] += 1
    else:
        acc[0] = (acc[0] + d + 1) >> 1
        cnt[0] = (cnt[0] + 1) >> 1
    return d


cdef inline void _coder_init(const Config* c, int64_t* acc, int64_t* cnt) noexcept nogil:
    cnt[0] = (<int64_t>1) << c.gamma0
    acc[0] = ((3 * ((<int64_t>1) << (c.k_init + 6)) - 49) * cnt[0]) >> 7


cdef void _encode_band_lossless(const Config* c, const int32_t* img, BitWriter* bw,
                                uint32_t* delta_out) noexcept nogil:
    """Lossless: the representatives are the input samples, known up
    front, so only the weights carry a dependency from sample to sample.
    With ``delta_out`` the mapped indices are stored instead of coded."""
    cdef int64_t nx = c.nx, ny = c.ny
    cdef int omega = c.omega
    cdef int64_t smin = c.smin, smax = c.smax, smid = c.smid, mid4 = 4 * c.smid
    cdef int64_t high_lo = smin << (omega + 2)
    cdef int64_t high_hi = (smax << (omega + 2)) + ((<int64_t>1) << (omega + 1))
    cdef int64_t high_mid = (smid << (omega + 2)) + ((<int64_t>1) << (omega + 1))
    cdef int64_t wmin = -((<int64_t>1) << (omega + 2)), wmax = ((<int64_t>1) << (omega + 2)) - 1
    cdef uint64_t wspan = <uint64_t>(wmax - wmin)
    cdef int64_t t_sat = nx + ((<int64_t>(c.nu_max - c.nu_min)) << c.tinc_log2)
    cdef int kmax = c.D - 2, u_max = c.u_max, D = c.D
    cdef int64_t cnt_limit = ((<int64_t>1) << c.gamma_star) - 1
    cdef int64_t acc, cnt, mul, add
    cdef int shift
    cdef int64_t w0 = 0, w1 = 0, w2 = 0
    cdef int64_t x, y, t, x0, s, N, W, NW, NE, sigma, u0, u1, u2, base, dhat, raw
    cdef int64_t s_tilde, s_hat, theta, thr, d, neg
    cdef BitWriter lbw  # a local copy the compiler keeps in registers
    if delta_out == NULL:
        lbw = bw[0]
    cdef const int32_t* cur
    cdef const int32_t* up
    _coder_init(c, &acc, &cnt)
    _rho_step(c, 1, &mul, &add, &shift)
    # t = 0: predicted by the mid value, sent as D raw bits.
    theta = smid - smin if smid - smin < smax - smid else smax - smid
    d = _map_index(img[0] - smid, theta, 0)
    if delta_out != NULL:
        delta_out[0] = <uint32_t>d
    else:
        _put(&lbw, <uint64_t>d, D)
    for y in range(ny):
        cur = img + y * nx
        up = cur - nx
        x0 = 1 if y == 0 else 0
        for x in range(x0, nx):
            t = y * nx + x
            s = cur[x]
            if y > 0 and 0 < x < nx - 1:
                N = up[x]; NW = up[x - 1]; NE = up[x + 1]; W = cur[x - 1]
                sigma = W + NW + N + NE
                u0 = 4 * N - sigma; u1 = 4 * W - sigma; u2 = 4 * NW - sigma
            elif y == 0:
                sigma = 4 * <int64_t>cur[x - 1]
                u0 = 0; u1 = 0; u2 = 0
            elif x == 0:
                N = up[0]
                sigma = 2 * (N + up[1])
                u0 = 4 * N - sigma; u1 = u0; u2 = u0
            else:
                N = up[x]; NW = up[x - 1]; W = cur[x - 1]
                sigma = W + NW + 2 * N
                u0 = 4 * N - sigma; u1 = 4 * W - sigma; u2 = 4 * NW - sigma
            if t <= t_sat:
                _rho_step(c, t, &mul, &add, &shift)
            base = ((sigma - mid4) << omega) + high_mid
            # err = 2s - s_tilde < 0 exactly when the unclipped s_check
            # reaches (2s + 1) * 2**(omega + 1): the clip never changes
            # that comparison, so it is settled before s_tilde is known.
            thr = ((2 * s + 1) << (omega + 1)) - base
            dhat = w0 * u0 + w1 * u1 + w2 * u2
            neg = (thr - 1 - dhat) >> 63  # -1 when err < 0
            w0 += _weight_step(u0, neg, mul, add, shift)
            w1 += _weight_step(u1, neg, mul, add, shift)
            w2 += _weight_step(u2, neg, mul, add, shift)
            # Clipping is rare: a predictable branch instead of min/max
            # keeps it off the critical path.
            if <uint64_t>(w0 - wmin) > wspan:
                w0 = _clip(w0, wmin, wmax)
            if <uint64_t>(w1 - wmin) > wspan:
                w1 = _clip(w1, wmin, wmax)
            if <uint64_t>(w2 - wmin) > wspan:
                w2 = _clip(w2, wmin, wmax)
            raw = dhat + base
            if raw < high_lo or raw > high_hi:
                raw = _clip(raw, high_lo, high_hi)
            s_tilde = raw >> (omega + 1)
            s_hat = s_tilde >> 1
            theta = s_hat - smin if s_hat - smin < smax - s_hat else smax - s_hat
            d = _map_index(s - s_hat, theta, -(s_tilde & 1))
            if delta_out != NULL:
                delta_out[t] = <uint32_t>d
            else:
                _code_sample(&lbw, d, &acc, &cnt, kmax, u_max, D, cnt_limit)
    if delta_out == NULL:
        bw[0] = lbw


cdef int _band_reconstructing(const Config* c, const int32_t* img, int32_t* rep, int ring,
                              int64_t m, BitWriter* bw, BitReader* br,
                              uint32_t* delta_io) noexcept nogil:
    """Near-lossless encoding (img given, bw) or decoding (img NULL, br) of
    one band. rep receives the reconstructed samples: the whole plane, or
    with ``ring`` two alternating rows. With ``delta_io`` the mapped indices
    are stored (encoding) or read (decoding) there instead of the bits.
    Returns 0, or 2 when a decoded sample falls outside the dynamic range."""
    cdef int decoding = img == NULL
    cdef int64_t nx = c.nx, ny = c.ny
    cdef int omega = c.omega
    cdef int64_t smin = c.smin, smax = c.smax, smid = c.smid, mid4 = 4 * c.smid
    cdef int64_t high_lo = smin << (omega + 2)
    cdef int64_t high_hi = (smax << (omega + 2)) + ((<int64_t>1) << (omega + 1))
    cdef int64_t high_mid = (smid << (omega + 2)) + ((<int64_t>1) << (omega + 1))
    cdef int64_t wmin = -((<int64_t>1) << (omega + 2)), wmax = ((<int64_t>1) << (omega + 2)) - 1
    cdef uint64_t wspan = <uint64_t>(wmax - wmin)
    cdef int64_t t_sat = nx + ((<int64_t>(c.nu_max - c.nu_min)) << c.tinc_log2)
    cdef int kmax = c.D - 2, u_max = c.u_max, D = c.D
    cdef int64_t cnt_limit = ((<int64_t>1) << c.gamma_star) - 1
    cdef int64_t two_m1 = 2 * m + 1
    cdef uint64_t magic = _magic(two_m1)
    cdef int64_t acc, cnt, mul, add
    cdef int shift
    cdef int64_t w0 = 0, w1 = 0, w2 = 0
    cdef int64_t x, y, t, mt, N, W = 0, NW, NE, sigma, u0, u1, u2, dhat, raw
    cdef int64_t s_tilde, s_hat, lower, upper, theta, flip, d, q, aq, residual, s_prime, sign
    cdef BitWriter lbw
    cdef BitReader lbr
    if delta_io == NULL:
        if decoding:
            lbr = br[0]
        else:
            lbw = bw[0]
    cdef int32_t* cur
    cdef const int32_t* up = NULL
    _coder_init(c, &acc, &cnt)
    _rho_step(c, 1, &mul, &add, &shift)
    for y in range(ny):
        cur = rep + ((y & 1) if ring else y) * nx
        if y > 0:
            up = rep + (((y - 1) & 1) if ring else y - 1) * nx
        for x in range(nx):
            t = y * nx + x
            if y > 0 and 0 < x < nx - 1:
                N = up[x]; NW = up[x - 1]; NE = up[x + 1]
                sigma = W + NW + N + NE
                u0 = 4 * N - sigma; u1 = 4 * W - sigma; u2 = 4 * NW - sigma
            elif y == 0:
                sigma = 4 * W
                u0 = 0; u1 = 0; u2 = 0
            elif x == 0:
                N = up[0]
                sigma = 2 * (N + up[1])
                u0 = 4 * N - sigma; u1 = u0; u2 = u0
            else:
                N = up[x]; NW = up[x - 1]
                sigma = W + NW + 2 * N
                u0 = 4 * N - sigma; u1 = 4 * W - sigma; u2 = 4 * NW - sigma
            if t == 0:
                s_tilde = 2 * smid
                mt = 0
            else:
                if t <= t_sat:
                    _rho_step(c, t, &mul, &add, &shift)
                dhat = w0 * u0 + w1 * u1 + w2 * u2
                raw = dhat + ((sigma - mid4) << omega) + high_mid
                if raw < high_lo or raw > high_hi:
                    raw = _clip(raw, high_lo, high_hi)
                s_tilde = raw >> (omega + 1)
                mt = m
            s_hat = s_tilde >> 1
            if mt == 0:
                lower = s_hat - smin
                upper = smax - s_hat
            else:
                lower = _divide(s_hat - smin + m, magic)
                upper = _divide(smax - s_hat + m, magic)
            theta = lower if lower < upper else upper
            flip = -(s_tilde & 1)
            if decoding:
                if delta_io != NULL:
                    d = delta_io[t]
                elif t == 0:
                    _refill(&lbr)
                    d = <int64_t>(lbr.window >> (64 - D))
                    lbr.window <<= D
                    lbr.nbits -= D
                else:
                    d = _decode_sample(&lbr, &acc, &cnt, kmax, u_max, D, cnt_limit)
                if d > 2 * theta:
                    aq = d - theta
                    q = aq if lower == theta else -aq
                else:
                    # Even d: q = +-(d / 2), odd d: -+((d + 1) / 2), the sign
                    # flipped by the parity of s_tilde; masks, not branches.
                    sign = flip ^ -(d & 1)
                    q = (((d + 1) >> 1) ^ sign) - sign
            else:
                residual = img[t] - s_hat
                if mt == 0:
                    q = residual
                else:
                    sign = residual >> 63
                    q = _divide(((residual ^ sign) - sign) + m, magic)
                    q = (q ^ sign) - sign
                d = _map_index(q, theta, flip)
                if delta_io != NULL:
                    delta_io[t] = <uint32_t>d
                elif t == 0:
                    _put(&lbw, <uint64_t>d, D)
                else:
                    _code_sample(&lbw, d, &acc, &cnt, kmax, u_max, D, cnt_limit)
            s_prime = s_hat + (q * two_m1 if mt else q)
            if s_prime < smin or s_prime > smax:
                if decoding and (s_prime < smin - mt or s_prime > smax + mt):
                    if delta_io == NULL:
                        br[0] = lbr
                    return 2
                s_prime = _clip(s_prime, smin, smax)
            cur[x] = <int32_t>s_prime
            W = s_prime
            if t > 0:
                sign = (2 * s_prime - s_tilde) >> 63  # -1 when err < 0
                w0 += _weight_step(u0, sign, mul, add, shift)
                w1 += _weight_step(u1, sign, mul, add, shift)
                w2 += _weight_step(u2, sign, mul, add, shift)
                if <uint64_t>(w0 - wmin) > wspan:
                    w0 = _clip(w0, wmin, wmax)
                if <uint64_t>(w1 - wmin) > wspan:
                    w1 = _clip(w1, wmin, wmax)
                if <uint64_t>(w2 - wmin) > wspan:
                    w2 = _clip(w2, wmin, wmax)
        if decoding and delta_io == NULL and _consumed(&lbr) > lbr.size * 8:
            br[0] = lbr
            return 1
    if delta_io == NULL:
        if decoding:
            br[0] = lbr
        else:
            bw[0] = lbw
    return 0


cdef _check_cube(arr, Config* c, name):
    if tuple(arr.shape) != (c.nz, c.ny, c.nx):
        raise ValueError(f"{name}: expected shape {(c.nz, c.ny, c.nx)}, got {tuple(arr.shape)}")


def encode_body(const int32_t[:, :, ::1] image, const int64_t[::1] abs_lim,
                const int64_t[::1] rel_lim, dict config, uint8_t[::1] out, bint fast=True,
                HybridTables tables=None):
    """Predict and code ``image`` (bands, rows, cols) into ``out``; return
    the number of body bytes written. ``fast=False`` forces the general
    two-pass code (tests compare the two)."""
    cdef Config c = _config(config)
    _check_cube(image, &c, "image")
    if abs_lim.shape[0] < c.nz or rel_lim.shape[0] < c.nz:
        raise ValueError(f"error limits: expected {c.nz} per band")
    cdef int64_t n = c.nx * c.ny * c.nz
    if out.shape[0] < (n * (c.u_max + c.D + (22 if c.hybrid else 0))) // 8 + 2 * c.word_bytes + 8:
        raise ValueError("out: too small for the worst-case body")
    if c.hybrid and tables is None:
        raise ValueError("tables: the hybrid coder needs HybridTables")
    if fast and _fast_eligible(&c):
        return _encode_fast(&c, image, abs_lim, out)
    delta_arr = np.empty(n, dtype=np.uint32)
    rep_arr = np.empty(n, dtype=np.int32)
    weights_arr = np.zeros(c.nz * MAX_WEIGHTS, dtype=np.int64)
    state_arr = np.zeros(3 * c.nz, dtype=np.int64)
    cdef uint32_t[::1] delta = delta_arr
    cdef int32_t[::1] rep = rep_arr
    cdef int64_t[::1] weights = weights_arr
    cdef int64_t[::1] state = state_arr
    cdef int64_t nbytes
    cdef HTab tab
    if c.hybrid:
        tab = tables.tab
    cdef int fast_predictor = fast and _fast_predictor_ok(&c)
    cdef int64_t z, m, plane = c.nx * c.ny
    with nogil:
        if fast_predictor:
            for z in range(c.nz):
                m = abs_lim[z] if c.use_abs else 0
                if m == 0:
                    _encode_band_lossless(&c, &image[z, 0, 0], NULL, &delta[z * plane])
                else:
                    _band_reconstructing(&c, &image[z, 0, 0], &rep[0], 1, m, NULL, NULL, &delta[z * plane])
        else:
            _predict_pass(&c, &image[0, 0, 0], &delta[0], &rep[0], NULL, &weights[0], &state[0],
                          &abs_lim[0], &rel_lim[0], 0)
        if c.hybrid:
            nbytes = _hybrid_code_pass(&c, &delta[0], &tab, &state[c.nz], &state[2 * c.nz], &out[0])
        else:
            nbytes = _code_pass(&c, &delta[0], &state[c.nz], &state[2 * c.nz], &out[0])
    return nbytes


cdef int64_t _encode_fast(Config* c, const int32_t[:, :, ::1] image, const int64_t[::1] abs_lim,
                          uint8_t[::1] out):
    ring_arr = np.empty(2 * c.nx, dtype=np.int32)
    cdef int32_t[::1] ring = ring_arr
    cdef BitWriter bw
    cdef int64_t z, m, nbytes
    bw.out = &out[0]; bw.pos = 0; bw.acc = 0; bw.nbits = 0
    with nogil:
        for z in range(c.nz):
            m = abs_lim[z] if c.use_abs else 0
            if m == 0:
                _encode_band_lossless(c, &image[z, 0, 0], &bw, NULL)
            else:
                _band_reconstructing(c, &image[z, 0, 0], &ring[0], 1, m, &bw, NULL, NULL)
        nbytes = _finish(&bw, c.word_bytes)
    return nbytes


def fast_path_applies(dict config):
    """Whether encode_body/decode_body take the fused single-band path."""
    cdef Config c = _config(config)
    return bool(_fast_eligible(&c))


def mapped_indices(const int32_t[:, :, ::1] image, const int64_t[::1] abs_lim,
                   const int64_t[::1] rel_lim, dict config):
    """The predictor's mapped quantizer indices (for tests against the twin)."""
    cdef Config c = _config(config)
    _check_cube(image, &c, "image")
    cdef int64_t n = c.nx * c.ny * c.nz
    delta_arr = np.empty((c.nz, c.ny, c.nx), dtype=np.uint32)
    rep_arr = np.empty(n, dtype=np.int32)
    weights_arr = np.zeros(c.nz * MAX_WEIGHTS, dtype=np.int64)
    diff_arr = np.zeros(c.nz, dtype=np.int64)
    cdef uint32_t[:, :, ::1] delta = delta_arr
    cdef int32_t[::1] rep = rep_arr
    cdef int64_t[::1] weights = weights_arr
    cdef int64_t[::1] diff = diff_arr
    with nogil:
        _predict_pass(&c, &image[0, 0, 0], &delta[0, 0, 0], &rep[0], NULL, &weights[0],
                      &diff[0], &abs_lim[0], &rel_lim[0], 0)
    return delta_arr


def decode_body(const uint8_t[::1] body, const int64_t[::1] abs_lim,
                const int64_t[::1] rel_lim, dict config, int32_t[:, :, ::1] out, bint fast=True,
                HybridTables tables=None):
    """Decode a body into ``out`` (bands, rows, cols). Returns 0, or 1 when
    the body is truncated, 2 when a sample decodes out of range, 3 when a
    hybrid body is inconsistent."""
    cdef Config c = _config(config)
    _check_cube(out, &c, "out")
    if abs_lim.shape[0] < c.nz or rel_lim.shape[0] < c.nz:
        raise ValueError(f"error limits: expected {c.nz} per band")
    cdef int64_t n = c.nx * c.ny * c.nz
    cdef const uint8_t* data = &body[0] if body.shape[0] > 0 else NULL
    cdef int64_t size = body.shape[0]
    cdef int status = 0
    cdef BitReader br
    cdef int64_t z
    if fast and _fast_eligible(&c):
        br.data = data; br.size = size; br.pos = 0; br.window = 0; br.nbits = 0
        with nogil:
            for z in range(c.nz):
                status = _band_reconstructing(&c, NULL, &out[z, 0, 0], 0,
                                              abs_lim[z] if c.use_abs else 0, NULL, &br, NULL)
                if status:
                    break
        # A truncated body decodes into garbage first: report the cause.
        return 1 if _consumed(&br) > size * 8 else status
    delta_arr = np.empty(n, dtype=np.uint32)
    rep_arr = np.empty(n, dtype=np.int32)
    weights_arr = np.zeros(c.nz * MAX_WEIGHTS, dtype=np.int64)
    state_arr = np.zeros(3 * c.nz, dtype=np.int64)
    cdef uint32_t[::1] delta = delta_arr
    cdef int32_t[::1] rep = rep_arr
    cdef int64_t[::1] weights = weights_arr
    cdef int64_t[::1] state = state_arr
    cdef HTab tab
    cdef int fast_predictor = fast and _fast_predictor_ok(&c)
    if c.hybrid:
        if tables is None:
            raise ValueError("tables: the hybrid coder needs HybridTables")
        tab = tables.tab
    with nogil:
        if c.hybrid:
            status = _hybrid_decode_pass(&c, data, size, &delta[0], &tab, &state[c.nz])
        else:
            status = _decode_pass(&c, data, size, &delta[0], &state[c.nz], &state[2 * c.nz])
        if status == 0 and fast_predictor:
            for z in range(c.nz):
                status = _band_reconstructing(&c, NULL, &out[z, 0, 0], 0, abs_lim[z] if c.use_abs else 0,
                                              NULL, NULL, &delta[z * c.nx * c.ny])
                if status:
                    break
        elif status == 0:
            status = _predict_pass(&c, NULL, &delta[0], &rep[0], &out[0, 0, 0], &weights[0],
                                   &state[0], &abs_lim[0], &rel_lim[0], 1)
    return status
