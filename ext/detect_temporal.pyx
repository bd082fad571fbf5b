# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -ffp-contract=off -fno-math-errno -fno-trapping-math
"""Temporal point-target detection stages (flight.kernels.detect_temporal).

Per frame, on buffers the wrapper (flight/detection.py) checked and allocated:

  register_shift     sub-pixel shift of the scene since the last frame, by
                     robust Gauss-Newton on a sparse pixel grid
  detect_pass        one pass down the frame, a few rows in flight at a time
                     (rolling row buffers that stay in L1/L2):
                       model (scene coordinates) -> separable cubic warp ->
                       prediction -> residual, hot-pixel score, clipped update
                       -> separable matched filter -> Z = filtered /
                       sqrt(variance), variance update -> Z > k: candidate list
                       -> hold the update under candidates -> warp the update
                       back -> model += alpha * update
                     Only the residual (for measurement) and a sparse list of
                     above-threshold pixels leave the pass.
  label_candidates   8-connected components of the good candidates, by
                     union-find over the candidate list alone
  find_peaks         local maxima of Z among the candidates
  measure_targets    per peak: centroid on the filtered residual, flux, SNR,
                     shape and a sharpness that marks cosmic-ray hits

Pixel arithmetic is float32 (the state is float32 anyway, and float32 is
twice the SIMD width of double), done in the order of the numpy twin in
flight/detection_ref.py, which works in float32 too; -ffp-contract=off stops
the compiler fusing multiply-adds (aarch64 does by default), so the two stay
bit-identical.  Measurement and registration sums are in double.
"""
from libc.math cimport log, sqrt, sqrtf, atan2, floor, fabs, M_PI
from libc.stdint cimport uint8_t, uint16_t, int32_t, int64_t, uint64_t
from libc.string cimport memcpy

# Bits of the bad-pixel mask.
cdef enum:
    BAD_CALIBRATION = 1
    BAD_DETECTED = 2
BAD_BITS = {"calibration": BAD_CALIBRATION, "detected": BAD_DETECTED}

COLUMNS = ("x", "y", "sigma_x", "sigma_y", "flux", "snr", "peak", "npix", "a", "b", "theta",
           "sharpness")
cdef enum:
    MAX_TAPS = 33

cdef enum:
    C_X = 0
    C_Y
    C_SX
    C_SY
    C_FLUX
    C_SNR
    C_PEAK
    C_NPIX
    C_A
    C_B
    C_THETA
    C_SHARP
    N_COLUMNS


def scratch_rows(Py_ssize_t n_taps):
    """Rows of width W + n_taps - 1 that detect_pass needs as scratch."""
    return 4 + 4 + 2 * n_taps + 4


cdef inline double _bilinear(const float[:, ::1] img, double y, double x) noexcept nogil:
    """Bilinear sample; caller keeps (y, x) inside [0, H-1] x [0, W-1]."""
    cdef Py_ssize_t H = img.shape[0], W = img.shape[1]
    cdef Py_ssize_t y0 = <Py_ssize_t>floor(y), x0 = <Py_ssize_t>floor(x), y1, x1
    cdef double fy, fx
    if y0 > H - 2:
        y0 = H - 2
    if x0 > W - 2:
        x0 = W - 2
    fy = y - y0
    fx = x - x0
    y1 = y0 + 1
    x1 = x0 + 1
    return ((1.0 - fy) * ((1.0 - fx) * img[y0, x0] + fx * img[y0, x1])
            + fy * ((1.0 - fx) * img[y1, x0] + fx * img[y1, x1]))


def register_shift(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                   const float[:, ::1] model, double read_var, double inv_gain,
                   double dx0, double dy0, Py_ssize_t stride, Py_ssize_t margin,
                   double clip_sigma, int iterations, double[::1] out):
    """Shift (dx, dy) with frame(p) ~ model(p + d), starting from (dx0, dy0).

    Gauss-Newton on the sparse grid (every stride-th row and column, margin
    away from the edges).  Pixels in the bad mask or whose residual exceeds
    clip_sigma noise sigmas in the last iteration (twice that in the one before...) (hot pixels gone unnoticed, targets, cosmic
    rays) carry no weight, which is what makes the estimate robust.
    out <- (dx, dy, used samples, det of the normal matrix / samples^2).
    """
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1], y, x
    cdef double dx = dx0, dy = dy0, sy, sx, m, gx, gy, r, lim
    cdef double axx, axy, ayy, bx, by, det, ddx, ddy, clip
    cdef Py_ssize_t n = 0, gy_, gx_
    cdef int it
    with nogil:
        det = 0.0
        for it in range(iterations):
            # coarse to fine: a far first guess leaves large residuals on every
            # edge, so the outlier cut starts wide and halves each iteration
            clip = clip_sigma * (1 << (iterations - 1 - it))
            axx = axy = ayy = bx = by = 0.0
            n = 0
            for gy_ in range((H - 2 * margin + stride - 1) // stride):
                y = margin + gy_ * stride
                sy = y + dy
                if sy < 1.0 or sy > H - 2.0:
                    continue
                for gx_ in range((W - 2 * margin + stride - 1) // stride):
                    x = margin + gx_ * stride
                    sx = x + dx
                    if sx < 1.0 or sx > W - 2.0 or bad[y, x]:
                        continue
                    m = _bilinear(model, sy, sx)
                    r = <double>frame[y, x] - m
                    lim = clip * clip * (read_var + max(m, 0.0) * inv_gain)
                    if r * r > lim:
                        continue
                    gx = 0.5 * (_bilinear(model, sy, sx + 1.0) - _bilinear(model, sy, sx - 1.0))
                    gy = 0.5 * (_bilinear(model, sy + 1.0, sx) - _bilinear(model, sy - 1.0, sx))
                    axx += gx * gx
                    axy += gx * gy
                    ayy += gy * gy
                    bx += gx * r
                    by += gy * r
                    n += 1
            det = axx * ayy - axy * axy
            if n == 0 or det <= 1e-12 * (axx + ayy) * (axx + ayy) or det <= 0.0:
                det = 0.0
                break
            ddx = (ayy * bx - axy * by) / det
            ddy = (axx * by - axy * bx) / det
            # a step beyond 2 px is not a linearisation we trust
            ddx = min(max(ddx, -2.0), 2.0)
            ddy = min(max(ddy, -2.0), 2.0)
            dx += ddx
            dy += ddy
        out[0] = dx
        out[1] = dy
        out[2] = n
        out[3] = det / (<double>n * n) if n > 0 else 0.0


cdef inline void _cubic_row(const float* src, float* dst, Py_ssize_t x0, Py_ssize_t x1,
                            float w0, float w1, float w2, float w3) noexcept nogil:
    """dst[x] = w . src[x .. x+3] for x in [x0, x1), summed left to right (as the twin)."""
    cdef Py_ssize_t x
    for x in range(x0, x1):
        dst[x] = ((w0 * src[x] + w1 * src[x + 1]) + w2 * src[x + 2]) + w3 * src[x + 3]


cdef inline void _cubic_col(const float* r0, const float* r1, const float* r2, const float* r3,
                            float* dst, Py_ssize_t x0, Py_ssize_t x1,
                            float v0, float v1, float v2, float v3) noexcept nogil:
    cdef Py_ssize_t x
    for x in range(x0, x1):
        dst[x] = ((v0 * r0[x] + v1 * r1[x]) + v2 * r2[x]) + v3 * r3[x]


# float-typed helpers: a bare literal like 0.0 would make Cython compute in double
cdef inline float _clampf(float v, float lo, float hi) noexcept nogil:
    return lo if v < lo else (hi if v > hi else v)


cdef inline float _maxf(float a, float b) noexcept nogil:
    return a if a > b else b


cdef inline float _minf(float a, float b) noexcept nogil:
    return a if a < b else b


def detect_pass(const uint16_t[:, ::1] frame, uint8_t[:, ::1] bad,
                float[:, ::1] model, uint16_t[:, ::1] age, float[:, ::1] variance,
                float[:, ::1] hot_score, float[:, ::1] residual,
                Py_ssize_t oy, Py_ssize_t ox, const float[::1] wy, const float[::1] wx,
                Py_ssize_t uy, Py_ssize_t ux, const float[::1] uwy, const float[::1] uwx,
                const float[::1] taps, Py_ssize_t vy, Py_ssize_t vx,
                Py_ssize_t learn_y0, Py_ssize_t learn_y1, Py_ssize_t learn_x0, Py_ssize_t learn_x1,
                double clip_sigma, double clip_low, double read_var, double inv_gain,
                double hot_rate, double hot_on, double hot_off,
                double variance_rate, double variance_clip, double variance_floor,
                double k_sigma, double hold_rate, double model_rate,
                float[:, ::1] scratch, int32_t[::1] cand_index, float[::1] cand_z,
                int32_t[::1] row_start):
    """One frame of the temporal model, in one pass down the rows.  Returns the
    number of candidates (pixels with Z > k_sigma, bad ones included, raster order).

    The model M and the variance V of the filtered residual live in scene
    coordinates, the hot score S and the bad mask in sensor coordinates.
    Row by row, with the rows of each stage lagging the one before:

      P   = M warped by (oy, ox, wy, wx): separable 4x4 cubic, taps summed in
            order; where a tap falls outside M the pixel is 'outside'
      R   = frame - P; sigma = sqrt(read_var + max(P, 0) * inv_gain)
      S   = (1 - hot_rate) S + hot_rate clip(R / sigma, +-20); |S| > hot_on
            marks the pixel bad (BAD_DETECTED) until |S| <= hot_off
      C   = R clipped to [-clip_low, clip_sigma] sigma  (the model's update)
      R, C are 0 on bad pixels and outside
      F   = R (*) taps (*) taps, zero outside the frame
      Z   = F / sqrt(V[y + vy, x + vx] clamped); V <- EMA of F^2 capped at
            variance_clip^2 V, at hold_rate where Z > k_sigma, only inside
            the learn window; clamped columns share a cell: raster order
      Z > k_sigma: candidate (index y * W + x, Z); C = 0 there if good, so a
            slow target does not fade into the background
      U   = C warped back by (uy, ux, uwy, uwx); M += alpha U, alpha =
            max(model_rate, 1 / (age + 1)), age += 1, where U had data.

    Each model row is read into the warp buffer before the update reaches
    it: the update of row u waits for residual rows up to u + uy + 2 + r,
    and uy + oy >= -1.  row_start[y] is the first candidate of row y;
    row_start[H] the count.
    """
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1]
    cdef Py_ssize_t nt = taps.shape[0], r = nt // 2
    cdef Py_ssize_t PW = W + 2 * r
    cdef Py_ssize_t cap = cand_index.shape[0]
    if nt > MAX_TAPS or nt % 2 == 0:
        raise ValueError(f"taps must be an odd count up to {MAX_TAPS}, got {nt}")
    if scratch.shape[0] < scratch_rows(nt) or scratch.shape[1] < PW:
        raise ValueError(f"scratch must be at least ({scratch_rows(nt)}, {PW}), "
                         f"got ({scratch.shape[0]}, {scratch.shape[1]})")
    if row_start.shape[0] < H + 1:
        raise ValueError(f"row_start needs {H + 1} entries, got {row_start.shape[0]}")
    cdef Py_ssize_t SW = scratch.shape[1]
    cdef float* base = &scratch[0, 0]
    cdef float* mh = base                    # 4 rows: model rows warped along x
    cdef float* uh = base + 4 * SW           # 4 rows: update rows warped along x
    cdef float* hres = base + 8 * SW         # nt rows: residual filtered along x
    cdef float* clp = base + (8 + nt) * SW   # nt rows: clipped residual, until held
    cdef float* pad = base + (8 + 2 * nt) * SW   # residual row with r zeros each side
    cdef float* acc = pad + SW               # prediction, then filtered row
    cdef float* zrow = acc + SW              # Z row
    # columns whose 4 warp taps lie inside: x + ox - 1 >= 0 and x + ox + 2 < W
    cdef Py_ssize_t x0 = min(max(1 - ox, 0), W), x1 = max(min(W - 2 - ox, W), x0)
    cdef Py_ssize_t u0 = min(max(1 - ux, 0), W), u1 = max(min(W - 2 - ux, W), u0)
    cdef float w0 = wx[0], w1 = wx[1], w2 = wx[2], w3 = wx[3]
    cdef float v0 = wy[0], v1 = wy[1], v2 = wy[2], v3 = wy[3]
    cdef float uw0 = uwx[0], uw1 = uwx[1], uw2 = uwx[2], uw3 = uwx[3]
    cdef float uv0 = uwy[0], uv1 = uwy[1], uv2 = uwy[2], uv3 = uwy[3]
    cdef float tap[MAX_TAPS]
    cdef float f_clip = <float>clip_sigma, f_low = <float>clip_low
    cdef float f_rv = <float>read_var, f_ig = <float>inv_gain
    cdef float f_hr = <float>hot_rate, f_hkeep = <float>(1.0 - hot_rate)
    cdef float f_on = <float>hot_on, f_off = <float>hot_off
    cdef float f_rate = <float>variance_rate, f_keep = <float>(1.0 - variance_rate)
    cdef float f_hold = <float>hold_rate, f_hold_keep = <float>(1.0 - hold_rate)
    cdef float f_clip2 = <float>(variance_clip * variance_clip), f_floor = <float>variance_floor
    cdef float f_k = <float>k_sigma, f_mrate = <float>model_rate, f_one = 1.0
    cdef Py_ssize_t s, a, b, c, u, x, k, row, ys, next_m, vyy, vxx, xa, xb, la, lb, ncand = 0
    cdef const uint16_t* f_row
    cdef uint8_t* b_row
    cdef float* s_row
    cdef float* res_row
    cdef float* c_row
    cdef float* h_row
    cdef float* v_row
    cdef float* m_row
    cdef uint16_t* a_row
    cdef float p, rr, sigma, q, score, mag, t, v, fa, f2, z, uu, keep, upd, alpha
    cdef uint8_t bb, old, lv
    cdef uint8_t* level_row = <uint8_t*>(zrow + SW)  # W bytes fit in one float row
    cdef int count, level
    cdef uint64_t word
    cdef bint first
    for k in range(nt):
        tap[k] = taps[k]
    with nogil:
        for x in range(r):
            pad[x] = 0.0
            pad[W + r + x] = 0.0
        # Z columns whose variance cell no other pixel of the row reads
        xa = min(-vx + 1 if vx < 0 else 0, W)
        xb = max(min(W - 1 - vx if vx > 0 else W, W), xa)
        next_m = oy - 1
        for s in range(H + r):
            # ---- stage A: prediction, residual, hot score, clipped update of row a
            a = s
            if a < H:
                while next_m <= a + oy + 2:
                    if 0 <= next_m < H:
                        _cubic_row(&model[next_m, 0] + ox - 1, mh + (next_m & 3) * SW,
                                   x0, x1, w0, w1, w2, w3)
                    next_m += 1
                res_row = &residual[a, 0]
                c_row = clp + (a % nt) * SW
                ys = a + oy - 1
                if ys < 0 or ys + 3 >= H:
                    for x in range(W):
                        res_row[x] = 0.0
                        c_row[x] = 0.0
                else:
                    _cubic_col(mh + (ys & 3) * SW, mh + ((ys + 1) & 3) * SW,
                               mh + ((ys + 2) & 3) * SW, mh + ((ys + 3) & 3) * SW,
                               acc, x0, x1, v0, v1, v2, v3)
                    f_row = &frame[a, 0]
                    b_row = &bad[a, 0]
                    s_row = &hot_score[a, 0]
                    for x in range(x0):
                        res_row[x] = 0.0
                        c_row[x] = 0.0
                    # float-only loop (vectorises); the bad-mask logic follows on bytes
                    for x in range(x0, x1):
                        p = acc[x]
                        rr = <float>f_row[x] - p
                        sigma = sqrtf(f_rv + _maxf(p, 0.0) * f_ig)
                        q = _clampf(rr / sigma, -20.0, 20.0)
                        score = f_hkeep * s_row[x] + f_hr * q
                        s_row[x] = score
                        mag = _maxf(score, -score)
                        # 2: beyond hot_on, 1: beyond hot_off only
                        level_row[x] = <uint8_t>(mag > f_on) + <uint8_t>(mag > f_off)
                        res_row[x] = rr
                        c_row[x] = _clampf(rr, -f_low * sigma, f_clip * sigma)
                    for x in range(x0, x1):  # bytes only, branch-free: vectorises
                        old = b_row[x]
                        lv = level_row[x]
                        b_row[x] = (old & BAD_CALIBRATION) | ((lv >> 1) << 1) | (
                            (lv & (old >> 1)) << 1)
                    # bad pixels are few: skip clean 8-byte words
                    x = x0
                    while x < x1:
                        if x + 8 <= x1:
                            memcpy(&word, b_row + x, 8)  # an unaligned load, portably
                            if word == 0:
                                x += 8
                                continue
                        if b_row[x]:
                            res_row[x] = 0.0
                            c_row[x] = 0.0
                        x += 1
                    for x in range(x1, W):
                        res_row[x] = 0.0
                        c_row[x] = 0.0
                # matched filter along x, into the ring
                for x in range(W):
                    pad[x + r] = res_row[x]
                h_row = hres + (a % nt) * SW
                t = tap[0]
                for x in range(W):
                    h_row[x] = t * pad[x]
                for k in range(1, nt):
                    t = tap[k]
                    for x in range(W):
                        h_row[x] = h_row[x] + t * pad[x + k]
            # ---- stage B: filter along y, Z, variance, candidates of row b
            b = s - r
            if b < 0:
                continue
            first = True
            for k in range(nt):
                row = b + k - r
                if row < 0 or row >= H:
                    continue
                t = tap[k]
                h_row = hres + (row % nt) * SW
                if first:
                    for x in range(W):
                        acc[x] = t * h_row[x]
                    first = False
                else:
                    for x in range(W):
                        acc[x] = acc[x] + t * h_row[x]
            vyy = min(max(b + vy, 0), H - 1)
            v_row = &variance[vyy, 0]
            if learn_y0 <= b < learn_y1:
                la = min(max(learn_x0, xa), xb)
                lb = min(max(learn_x1, la), xb)
            else:
                la = lb = xb
            for x in range(xa, la):
                zrow[x] = acc[x] / sqrtf(v_row[x + vx])
            for x in range(la, lb):
                v = v_row[x + vx]
                fa = acc[x]
                z = fa / sqrtf(v)
                zrow[x] = z
                f2 = fa * fa
                q = f_clip2 * v
                f2 = q if q < f2 else f2
                # above the threshold it may be a target: learn from it only slowly
                uu = f_hold if z > f_k else f_rate
                keep = f_hold_keep if z > f_k else f_keep
                v = keep * v + uu * f2
                v_row[x + vx] = v if v > f_floor else f_floor
            for x in range(lb, xb):
                zrow[x] = acc[x] / sqrtf(v_row[x + vx])
            # clamped columns share a cell: raster order, each reading the last update
            for x in range(W):
                if xa <= x < xb:
                    continue
                vxx = min(max(x + vx, 0), W - 1)
                v = v_row[vxx]
                fa = acc[x]
                z = fa / sqrtf(v)
                zrow[x] = z
                if b < learn_y0 or b >= learn_y1 or x < learn_x0 or x >= learn_x1:
                    continue
                f2 = fa * fa
                q = f_clip2 * v
                f2 = q if q < f2 else f2
                if z > f_k:
                    v = f_hold_keep * v + f_hold * f2
                else:
                    v = f_keep * v + f_rate * f2
                v_row[vxx] = v if v > f_floor else f_floor
            row_start[b] = <int32_t>ncand
            count = 0
            for x in range(W):
                count += zrow[x] > f_k
            if count:
                c_row = clp + (b % nt) * SW
                b_row = &bad[b, 0]
                for x in range(W):
                    if zrow[x] > f_k:
                        if ncand < cap:
                            cand_index[ncand] = <int32_t>(b * W + x)
                            cand_z[ncand] = zrow[x]
                            ncand += 1
                        if b_row[x] == 0:
                            c_row[x] = 0.0
            # ---- stage C: warp the held update of row c = b back, update model row u
            c = b
            h_row = uh + (c & 3) * SW
            c_row = clp + (c % nt) * SW
            _cubic_row(c_row + ux - 1, h_row, u0, u1, uw0, uw1, uw2, uw3)
            u = c - uy - 2
            if c >= 3 and 0 <= u < H:
                _cubic_col(uh + ((c - 3) & 3) * SW, uh + ((c - 2) & 3) * SW,
                           uh + ((c - 1) & 3) * SW, h_row, acc, u0, u1, uv0, uv1, uv2, uv3)
                m_row = &model[u, 0]
                a_row = &age[u, 0]
                for x in range(u0, u1):
                    alpha = f_one / (<float>a_row[x] + f_one)
                    alpha = alpha if alpha > f_mrate else f_mrate
                    m_row[x] = m_row[x] + alpha * acc[x]
                    a_row[x] = a_row[x] + (a_row[x] < 65535)
        row_start[H] = <int32_t>ncand
    return ncand


cdef inline int32_t _find(int32_t* parent, int32_t i) noexcept nogil:
    cdef int32_t root = i, nxt
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


cdef inline void _union(int32_t* parent, int32_t a, int32_t b) noexcept nogil:
    a = _find(parent, a)
    b = _find(parent, b)
    if a < b:
        parent[b] = a
    elif b < a:
        parent[a] = b


def label_candidates(const int32_t[::1] cand_index, const int32_t[::1] row_start,
                     Py_ssize_t n, Py_ssize_t W, const uint8_t[:, ::1] bad,
                     int32_t[::1] parent, int32_t[::1] labels, int32_t[::1] sizes):
    """8-connected components of the good candidates, found in the candidate list
    alone (raster order, so a pixel's neighbours above sit in the previous row's
    run).  labels[i] <- component of candidate i, 1..m in raster order of each
    component's first pixel (the scipy.ndimage.label convention), 0 for a bad
    pixel; sizes[j - 1] <- pixels in component j.  Returns m."""
    cdef Py_ssize_t H = row_start.shape[0] - 1, i, y, x, p, q, lo, hi, idx, m = 0
    cdef const uint8_t* flat = &bad[0, 0]
    cdef int32_t* par = &parent[0]
    cdef int32_t root
    if n == 0:
        return 0
    with nogil:
        p = 0
        for i in range(n):
            idx = cand_index[i]
            if flat[idx]:
                par[i] = -1
                continue
            par[i] = <int32_t>i
            y = idx // W
            x = idx - y * W
            if x > 0 and i > 0 and cand_index[i - 1] == idx - 1 and par[i - 1] >= 0:
                _union(par, <int32_t>i, <int32_t>(i - 1))
            if y == 0:
                continue
            lo = row_start[y - 1]
            hi = row_start[y]
            if p < lo:
                p = lo
            # run of the row above: the pointer only moves forward along a row
            while p < hi and cand_index[p] < idx - W - 1:
                p += 1
            q = p
            while q < hi and cand_index[q] <= idx - W + 1:
                if par[q] >= 0:
                    _union(par, <int32_t>i, <int32_t>q)
                q += 1
        # roots are each component's first candidate (union keeps the smaller index)
        for i in range(n):
            if par[i] < 0:
                labels[i] = 0
                continue
            root = _find(par, <int32_t>i)
            if root == i:
                m += 1
                labels[i] = <int32_t>m
                sizes[m - 1] = 1
            else:
                labels[i] = labels[root]
                sizes[labels[i] - 1] += 1
    return m


cdef inline Py_ssize_t _lower_bound(const int32_t* a, Py_ssize_t lo, Py_ssize_t hi,
                                    int32_t value) noexcept nogil:
    cdef Py_ssize_t mid
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def find_peaks(const int32_t[::1] cand_index, const float[::1] cand_z,
               const int32_t[::1] labels, const int32_t[::1] row_start, Py_ssize_t n,
               Py_ssize_t W, Py_ssize_t radius, int32_t[::1] peaks):
    """Labelled candidates that are the local maximum of Z over a (2*radius+1)^2
    window (ties to the first in raster order), in raster order.  Returns the count.

    Two targets closer than their footprints merge into one component; a peak
    per component would lose the fainter.  Pixels not in the candidate list
    have Z <= k_sigma < any candidate's Z, so the list is all the window
    comparison needs."""
    cdef Py_ssize_t H = row_start.shape[0] - 1, i, j, y, x, yy, xa, xb, count = 0
    cdef Py_ssize_t cap = peaks.shape[0]
    cdef float z, o
    cdef bint is_peak
    with nogil:
        for i in range(n):
            if labels[i] == 0:
                continue
            y = cand_index[i] // W
            x = cand_index[i] - y * W
            z = cand_z[i]
            is_peak = True
            xa = max(x - radius, 0)
            xb = min(x + radius, W - 1)
            for yy in range(max(y - radius, 0), min(y + radius + 1, H)):
                j = _lower_bound(&cand_index[0], row_start[yy], row_start[yy + 1],
                                 <int32_t>(yy * W + xa))
                while j < row_start[yy + 1] and cand_index[j] <= yy * W + xb:
                    o = cand_z[j]
                    if o > z or (o == z and j < i):
                        is_peak = False
                        break
                    j += 1
                if not is_peak:
                    break
            if is_peak and count < cap:
                peaks[count] = <int32_t>i
                count += 1
    return count


cdef inline float _residual_at(const float[:, ::1] residual, Py_ssize_t y,
                               Py_ssize_t x) noexcept nogil:
    if x < 0 or x >= residual.shape[1]:
        return 0.0
    return residual[y, x]


cdef float _filtered_at(const float[:, ::1] residual, const float* tap, Py_ssize_t nt,
                        Py_ssize_t y, Py_ssize_t x) noexcept nogil:
    """The matched-filter output at (y, x), summed in detect_pass's order (same bits)."""
    cdef Py_ssize_t H = residual.shape[0], r = nt // 2, k, j, row
    cdef float h, out = 0.0
    cdef bint first = True
    for k in range(nt):
        row = y + k - r
        if row < 0 or row >= H:
            continue
        h = tap[0] * _residual_at(residual, row, x - r)
        for j in range(1, nt):
            h = h + tap[j] * _residual_at(residual, row, x - r + j)
        if first:
            out = tap[k] * h
            first = False
        else:
            out = out + tap[k] * h
    return out


cdef inline double _log_parabola(double left, double centre, double right,
                                 double fallback) noexcept nogil:
    cdef double den
    if left > 0.0 and right > 0.0 and centre > 0.0:
        den = log(left) - 2.0 * log(centre) + log(right)
        if den < 0.0:
            return (log(left) - log(right)) / (2.0 * den)
    return fallback


def measure_targets(const uint16_t[:, ::1] frame, const float[:, ::1] residual,
                    const float[::1] taps, const int32_t[::1] cand_index,
                    const float[::1] cand_z, const int32_t[::1] labels,
                    const int32_t[::1] sizes, const int32_t[::1] peaks, Py_ssize_t n,
                    Py_ssize_t radius, double psf_sigma, double read_var, double inv_gain,
                    double[:, ::1] out):
    """One row per peak (columns as COLUMNS).

    The centroid is the log-parabola vertex through the filtered residual at
    the peak and its row/column neighbours: the matched-filter output of a
    Gaussian PSF is again a Gaussian, so the fit is unbiased and uses the
    whole PSF's signal rather than three noisy pixels.  Flux and shape come
    from the residual in the (2*radius+1)^2 window; sharpness is the peak
    residual pixel over the 3x3 residual sum, near 1 for a cosmic ray or a
    single hot pixel and below ~0.4 for an optical PSF; npix is the size of
    the peak's component.  The noise at the peak uses the prediction there,
    frame - residual (the peak is a good pixel with model data).
    """
    cdef Py_ssize_t H = residual.shape[0], W = residual.shape[1], nt = taps.shape[0]
    cdef Py_ssize_t y, x, i, ci, py, px, y0, y1, x0, x1, qy, qx, k
    cdef double s, flux, wsum, sxx, syy, sxy, xc, yc, dx, dy, half, root
    cdef double sigma_n, crb, c, peak_r, sum3, pred
    cdef float tap[MAX_TAPS]
    if nt > MAX_TAPS:
        raise ValueError(f"at most {MAX_TAPS} filter taps, got {nt}")
    for k in range(nt):
        tap[k] = taps[k]
    with nogil:
        for i in range(n):
            ci = peaks[i]
            py = cand_index[ci] // W
            px = cand_index[ci] - py * W
            c = _filtered_at(residual, tap, nt, py, px)
            dx = 0.0
            dy = 0.0
            if 0 < px < W - 1:
                dx = _log_parabola(_filtered_at(residual, tap, nt, py, px - 1), c,
                                   _filtered_at(residual, tap, nt, py, px + 1), 0.0)
            if 0 < py < H - 1:
                dy = _log_parabola(_filtered_at(residual, tap, nt, py - 1, px), c,
                                   _filtered_at(residual, tap, nt, py + 1, px), 0.0)
            dx = min(max(dx, -1.0), 1.0)
            dy = min(max(dy, -1.0), 1.0)
            xc = px + dx
            yc = py + dy
            # the residual peak pixel nearest the centroid, for sharpness and peak
            qy = <Py_ssize_t>floor(yc + 0.5)
            qx = <Py_ssize_t>floor(xc + 0.5)
            qy = min(max(qy, 0), H - 1)
            qx = min(max(qx, 0), W - 1)
            peak_r = -1e300
            sum3 = 0.0
            for y in range(max(qy - 1, 0), min(qy + 2, H)):
                for x in range(max(qx - 1, 0), min(qx + 2, W)):
                    s = <double>residual[y, x]
                    sum3 += s
                    if s > peak_r:
                        peak_r = s
            y0 = max(py - radius, 0)
            y1 = min(py + radius + 1, H)
            x0 = max(px - radius, 0)
            x1 = min(px + radius + 1, W)
            flux = 0.0
            wsum = 0.0
            sxx = 0.0
            syy = 0.0
            sxy = 0.0
            for y in range(y0, y1):
                for x in range(x0, x1):
                    s = <double>residual[y, x]
                    flux += s
                    if s > 0.0:
                        wsum += s
                        sxx += s * (x - xc) * (x - xc)
                        syy += s * (y - yc) * (y - yc)
                        sxy += s * (x - xc) * (y - yc)
            if wsum > 0.0:
                sxx /= wsum
                syy /= wsum
                sxy /= wsum
            half = 0.5 * (sxx + syy)
            root = sqrt(0.25 * (sxx - syy) * (sxx - syy) + sxy * sxy)
            pred = <double>frame[py, px] - <double>residual[py, px]
            sigma_n = sqrt(read_var + max(pred, 0.0) * inv_gain)
            if flux > 0.0:
                crb = min(sqrt(8.0 * M_PI) * psf_sigma * psf_sigma * sigma_n / flux, 1.0)
            else:
                crb = 1.0
            out[i, C_X] = xc
            out[i, C_Y] = yc
            out[i, C_SX] = crb
            out[i, C_SY] = crb
            out[i, C_FLUX] = flux
            out[i, C_SNR] = <double>cand_z[ci]
            out[i, C_NPIX] = sizes[labels[ci] - 1]
            out[i, C_PEAK] = peak_r
            out[i, C_A] = sqrt(half + root)
            out[i, C_B] = sqrt(max(half - root, 0.0))
            out[i, C_THETA] = 0.5 * atan2(2.0 * sxy, sxx - syy)
            out[i, C_SHARP] = peak_r / sum3 if sum3 > 0.0 else 1.0
    return n
