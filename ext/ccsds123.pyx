# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CCSDS 123.0-B-2 predictor and sample-adaptive coder (kernel).

flight/codecs/ccsds123.py validates the image and parameters, allocates the
buffers and calls ``encode_body`` / ``decode_body``; the twin in
flight/codecs/ccsds123_ref.py is the reference tests compare against.

Both directions run in two passes without the GIL:
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
from libc.stdlib cimport free, malloc

import numpy as np

cdef extern from *:
    int clzll "__builtin_clzll"(unsigned long long) nogil

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
    int u_max, gamma_star, gamma0, k_init, word_bytes


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
    cdef uint32_t v
    # n <= 32 and nbits < 32 on entry, so acc never holds more than 64 bits.
    bw.acc = (bw.acc << n) | value
    bw.nbits += n
    if bw.nbits >= 32:
        bw.nbits -= 32
        v = <uint32_t>(bw.acc >> bw.nbits)
        bw.out[bw.pos] = <uint8_t>(v >> 24)
        bw.out[bw.pos + 1] = <uint8_t>(v >> 16)
        bw.out[bw.pos + 2] = <uint8_t>(v >> 8)
        bw.out[bw.pos + 3] = <uint8_t>v
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
    # Fill with zeros to a whole output word (5.4.1).
    total_bits = bw.pos * 8 + bw.nbits
    word_bits = 8 * c.word_bytes
    fill = (word_bits - total_bits % word_bits) % word_bits
    while fill > 0:
        n = fill if fill < 32 else 32
        _put(&bw, 0, <int>n)
        fill -= n
    # Flush whatever whole bytes remain (nbits is now a multiple of 8).
    while bw.nbits >= 8:
        bw.nbits -= 8
        bw.out[bw.pos] = <uint8_t>(bw.acc >> bw.nbits)
        bw.pos += 1
    return bw.pos


cdef struct BitReader:
    const uint8_t* data
    int64_t size
    int64_t pos        # next byte to load
    uint64_t window    # unread bits, left-aligned
    int nbits          # valid bits in window (zeros past the end count too)
    int64_t consumed   # bits taken so far


cdef inline void _refill(BitReader* br) noexcept nogil:
    while br.nbits <= 56:
        if br.pos < br.size:
            br.window |= (<uint64_t>br.data[br.pos]) << (56 - br.nbits)
        br.pos += 1
        br.nbits += 8


cdef inline uint64_t _take(BitReader* br, int n) noexcept nogil:
    cdef uint64_t v
    if n == 0:
        return 0
    _refill(br)
    v = br.window >> (64 - n)
    br.window <<= n
    br.nbits -= n
    br.consumed += n
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
    br.data = data; br.size = size; br.pos = 0; br.window = 0; br.nbits = 0; br.consumed = 0
    for z in range(c.nz):
        cnt[z] = (<int64_t>1) << c.gamma0
        acc[z] = ((3 * ((<int64_t>1) << (c.k_init + 6)) - 49) * cnt[z]) >> 7
    if c.bsq:
        for z in range(c.nz):
            idx = z * plane
            delta[idx] = <uint32_t>_take(&br, c.D)
            for t in range(1, plane):
                delta[idx + t] = <uint32_t>_decode_one(&br, c, &acc[z], &cnt[z])
            if br.consumed > size * 8:
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
            if br.consumed > size * 8:
                return 1
    return 1 if br.consumed > size * 8 else 0


cdef _check_cube(arr, Config* c, name):
    if tuple(arr.shape) != (c.nz, c.ny, c.nx):
        raise ValueError(f"{name}: expected shape {(c.nz, c.ny, c.nx)}, got {tuple(arr.shape)}")


def encode_body(const int32_t[:, :, ::1] image, const int64_t[::1] abs_lim,
                const int64_t[::1] rel_lim, dict config, uint8_t[::1] out):
    """Predict and code ``image`` (bands, rows, cols) into ``out``; return
    the number of body bytes written."""
    cdef Config c = _config(config)
    _check_cube(image, &c, "image")
    if abs_lim.shape[0] < c.nz or rel_lim.shape[0] < c.nz:
        raise ValueError(f"error limits: expected {c.nz} per band")
    cdef int64_t n = c.nx * c.ny * c.nz
    if out.shape[0] < (n * (c.u_max + c.D)) // 8 + 2 * c.word_bytes + 8:
        raise ValueError("out: too small for the worst-case body")
    delta_arr = np.empty(n, dtype=np.uint32)
    rep_arr = np.empty(n, dtype=np.int32)
    weights_arr = np.zeros(c.nz * MAX_WEIGHTS, dtype=np.int64)
    state_arr = np.zeros(3 * c.nz, dtype=np.int64)
    cdef uint32_t[::1] delta = delta_arr
    cdef int32_t[::1] rep = rep_arr
    cdef int64_t[::1] weights = weights_arr
    cdef int64_t[::1] state = state_arr
    cdef int64_t nbytes
    with nogil:
        _predict_pass(&c, &image[0, 0, 0], &delta[0], &rep[0], NULL, &weights[0], &state[0],
                      &abs_lim[0], &rel_lim[0], 0)
        nbytes = _code_pass(&c, &delta[0], &state[c.nz], &state[2 * c.nz], &out[0])
    return nbytes


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
                const int64_t[::1] rel_lim, dict config, int32_t[:, :, ::1] out):
    """Decode a body into ``out`` (bands, rows, cols). Returns 0, or 1 when
    the body is truncated, 2 when a sample decodes out of range."""
    cdef Config c = _config(config)
    _check_cube(out, &c, "out")
    if abs_lim.shape[0] < c.nz or rel_lim.shape[0] < c.nz:
        raise ValueError(f"error limits: expected {c.nz} per band")
    cdef int64_t n = c.nx * c.ny * c.nz
    delta_arr = np.empty(n, dtype=np.uint32)
    rep_arr = np.empty(n, dtype=np.int32)
    weights_arr = np.zeros(c.nz * MAX_WEIGHTS, dtype=np.int64)
    state_arr = np.zeros(3 * c.nz, dtype=np.int64)
    cdef uint32_t[::1] delta = delta_arr
    cdef int32_t[::1] rep = rep_arr
    cdef int64_t[::1] weights = weights_arr
    cdef int64_t[::1] state = state_arr
    cdef const uint8_t* data = &body[0] if body.shape[0] > 0 else NULL
    cdef int64_t size = body.shape[0]
    cdef int status
    with nogil:
        status = _decode_pass(&c, data, size, &delta[0], &state[c.nz], &state[2 * c.nz])
        if status == 0:
            status = _predict_pass(&c, NULL, &delta[0], &rep[0], &out[0, 0, 0], &weights[0],
                                   &state[0], &abs_lim[0], &rel_lim[0], 1)
    return status
