# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -ffp-contract=off -fno-math-errno
"""Temporal point-target detection stages (flight.kernels.detect_temporal).

Per frame, on buffers the wrapper (flight/detection.py) checked and allocated:

  register_shift     sub-pixel shift of the scene since the last frame, by
                     robust Gauss-Newton on a sparse pixel grid
  warp_separable     the background model, held in scene coordinates, warped
                     to the frame by separable cubic interpolation (and the
                     clipped residual warped back to update it)
  residual_and_hot   residual = frame - prediction, clipped update, and a
                     persistent-residual score that finds pixels gone hot
  apply_update       model += rate * warped update
  matched_filter     separable PSF filter of the residual and the CFAR
                     statistic Z = filtered / sqrt(its temporal variance)
  find_peaks         local maxima of the statistic within the components
  measure_targets    per peak: centroid on the filtered residual, flux,
                     SNR, shape and a sharpness that marks cosmic-ray hits

Arithmetic is in double, stored as float32, in the order of the numpy twin
in flight/detection_ref.py (-ffp-contract=off keeps that rounding).
"""
from libc.math cimport log, sqrt, atan2, floor, fabs, M_PI
from libc.stdint cimport uint8_t, uint16_t, int32_t, int64_t
from libc.stdlib cimport malloc, free

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


def warp_separable(const float[:, ::1] src, Py_ssize_t oy, Py_ssize_t ox,
                   const double[::1] wy, const double[::1] wx,
                   float[:, ::1] scratch, float[:, ::1] out, uint8_t[:, ::1] outside):
    """out[y, x] = sum_ij wy[i] wx[j] src[y + oy + i - 1, x + ox + j - 1] (4x4 taps).

    A uniform shift makes the cubic interpolation separable: 8 multiply-adds
    a pixel.  Where a tap falls outside src, out is 0 and outside is 1.
    """
    cdef Py_ssize_t H = src.shape[0], W = src.shape[1], y, x, j, ys
    # columns whose 4 taps lie inside src: x + ox - 1 >= 0 and x + ox + 2 < W
    cdef Py_ssize_t x0 = min(max(1 - ox, 0), W), x1 = max(min(W - 2 - ox, W), x0)
    cdef double w0 = wx[0], w1 = wx[1], w2 = wx[2], w3 = wx[3]
    cdef double v0 = wy[0], v1 = wy[1], v2 = wy[2], v3 = wy[3]
    cdef const float* s_row
    cdef float* t_row
    cdef float* o_row
    cdef const float* r0
    cdef const float* r1
    cdef const float* r2
    cdef const float* r3
    cdef uint8_t* m_row
    with nogil:
        # row-vector loops (x innermost, contiguous) so the compiler vectorises them;
        # each pixel still sums its taps in the twin's order, so results are bit-identical
        for y in range(H):
            s_row = &src[y, 0] + ox - 1
            t_row = &scratch[y, 0]
            for x in range(x0):
                t_row[x] = 0.0
            for x in range(x0, x1):
                t_row[x] = <float>((((0.0 + w0 * s_row[x]) + w1 * s_row[x + 1])
                                    + w2 * s_row[x + 2]) + w3 * s_row[x + 3])
            for x in range(x1, W):
                t_row[x] = 0.0
        for y in range(H):
            ys = y + oy - 1
            o_row = &out[y, 0]
            m_row = &outside[y, 0]
            if ys < 0 or ys + 3 >= H:
                for x in range(W):
                    o_row[x] = 0.0
                    m_row[x] = 1
                continue
            r0 = &scratch[ys, 0]
            r1 = &scratch[ys + 1, 0]
            r2 = &scratch[ys + 2, 0]
            r3 = &scratch[ys + 3, 0]
            for x in range(x0):
                o_row[x] = 0.0
                m_row[x] = 1
            for x in range(x0, x1):
                o_row[x] = <float>((((0.0 + v0 * r0[x]) + v1 * r1[x]) + v2 * r2[x]) + v3 * r3[x])
                m_row[x] = 0
            for x in range(x1, W):
                o_row[x] = 0.0
                m_row[x] = 1


def residual_and_hot(const uint16_t[:, ::1] frame, uint8_t[:, ::1] bad,
                     const float[:, ::1] prediction, const uint8_t[:, ::1] outside,
                     float[:, ::1] residual, float[:, ::1] clipped, float[:, ::1] hot_score,
                     double clip_sigma, double clip_low, double read_var, double inv_gain,
                     double hot_rate, double hot_on, double hot_off):
    """residual = frame - prediction (0 on bad pixels and where the model has no data);
    clipped = residual clipped to [-clip_low, clip_sigma] * sigma, the model's update;
    hot_score = slow average of residual / sigma at each sensor pixel.

    The scene drifts and a pixel gone hot (or dead) stays: a score beyond
    +-hot_on marks the pixel bad (bit BAD_DETECTED) until it is back within
    +-hot_off.  Positive residuals are clipped tight: targets, cosmic rays
    and hot pixels are positive.  Negative ones get a wider bound so the model
    follows a scene that darkens, yet a dead pixel not in the calibration map
    cannot dig a hole into the model that the drift then carries onto good
    pixels as a false alarm.
    """
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1], y, x
    cdef double p, r, sigma, score
    cdef uint8_t b
    with nogil:
        for y in range(H):
            for x in range(W):
                if outside[y, x]:
                    residual[y, x] = 0.0
                    clipped[y, x] = 0.0
                    continue
                p = <double>prediction[y, x]
                r = <double>frame[y, x] - p
                sigma = sqrt(read_var + max(p, 0.0) * inv_gain)
                score = ((1.0 - hot_rate) * <double>hot_score[y, x]
                         + hot_rate * min(max(r / sigma, -20.0), 20.0))
                hot_score[y, x] = <float>score
                b = bad[y, x] & BAD_CALIBRATION
                if fabs(score) > hot_on or ((bad[y, x] & BAD_DETECTED) and fabs(score) > hot_off):
                    b = b | BAD_DETECTED
                bad[y, x] = b
                if b:
                    residual[y, x] = 0.0
                    clipped[y, x] = 0.0
                    continue
                residual[y, x] = <float>r
                clipped[y, x] = <float>max(min(r, clip_sigma * sigma), -clip_low * sigma)


def hold_detected(float[:, ::1] clipped, const int32_t[:, ::1] labels):
    """No model update under this frame's components: a slow target sits on the
    same pixels for many frames and would otherwise fade into the background."""
    cdef Py_ssize_t H = clipped.shape[0], W = clipped.shape[1], y, x
    with nogil:
        for y in range(H):
            for x in range(W):
                if labels[y, x]:
                    clipped[y, x] = 0.0


def apply_update(float[:, ::1] model, const float[:, ::1] update,
                 const uint8_t[:, ::1] outside, uint16_t[:, ::1] age, double rate):
    """model += alpha * update where the update had data, alpha = max(rate, 1/(age+1)).

    age counts the frames each model cell has seen.  A cell the drift has
    just brought into view holds one frame; it averages the next ones at the
    running-mean rate instead of keeping that first noisy sample for 1/rate
    frames, which would flag its noise and misalignment as targets.
    """
    cdef Py_ssize_t H = model.shape[0], W = model.shape[1], y, x
    cdef double alpha
    with nogil:
        for y in range(H):
            for x in range(W):
                if not outside[y, x]:
                    alpha = max(rate, 1.0 / (<double>age[y, x] + 1.0))
                    model[y, x] = <float>(<double>model[y, x] + alpha * <double>update[y, x])
                    if age[y, x] < 65535:
                        age[y, x] += 1


def matched_filter(const float[:, ::1] residual, const double[::1] taps,
                   float[:, ::1] scratch, float[:, ::1] filtered, float[:, ::1] zscore,
                   float[:, ::1] variance, Py_ssize_t vy, Py_ssize_t vx,
                   double rate, double clip, double variance_floor, double hold_z,
                   double hold_rate, Py_ssize_t learn_y0, Py_ssize_t learn_y1,
                   Py_ssize_t learn_x0, Py_ssize_t learn_x1):
    """filtered = residual (*) taps (*) taps (separable, zero outside the frame);
    zscore = filtered / sqrt(variance); then variance <- EMA of filtered^2,
    variance being held in model (scene) coordinates, read at (y + vy, x + vx)
    clamped to the array, so clutter noise stays with the clouds that make it;
    each step's sample capped at clip^2 * variance so a target sitting on a
    pixel raises its own noise estimate only slowly.  Only pixels in rows
    [learn_y0, learn_y1) and columns [learn_x0, learn_x1) update the variance:
    elsewhere the filter reaches where the model had no data and the residual
    is a zero fill, which would teach the variance a noise that is not there.
    """
    cdef Py_ssize_t H = residual.shape[0], W = residual.shape[1], y, x, k, nt
    cdef Py_ssize_t r = taps.shape[0] // 2, vyy, vxx, xa, xb, la, lb
    cdef double acc, v, f2, z, u, t
    cdef double tap[MAX_TAPS]
    cdef double* pad
    cdef double* row
    cdef const float* res_row
    cdef float* v_row
    cdef float* f_row
    cdef float* z_row
    if taps.shape[0] > MAX_TAPS:
        raise ValueError(f"at most {MAX_TAPS} filter taps, got {taps.shape[0]}")
    nt = taps.shape[0]
    for k in range(nt):
        tap[k] = taps[k]
    pad = <double*>malloc((W + 2 * r) * sizeof(double))
    row = <double*>malloc(W * sizeof(double))
    if pad == NULL or row == NULL:
        free(pad)
        free(row)
        raise MemoryError("matched_filter row buffers")
    # Row-vector loops (x innermost) vectorise; each pixel sums its taps in the
    # twin's order (a zero pad adds exact zeros), so results are bit-identical.
    with nogil:
        for k in range(r):
            pad[k] = 0.0
            pad[W + r + k] = 0.0
        for y in range(H):
            res_row = &residual[y, 0]
            for x in range(W):
                pad[x + r] = res_row[x]
            for x in range(W):
                row[x] = 0.0
            for k in range(nt):
                t = tap[k]
                for x in range(W):
                    row[x] = row[x] + t * pad[x + k]
            f_row = &scratch[y, 0]
            for x in range(W):
                f_row[x] = <float>row[x]
        # columns whose variance cell x + vx no other pixel of the row reads: not clamped,
        # and not the edge cell that the clamped ones share
        xa = min(-vx + 1 if vx < 0 else 0, W)
        xb = max(min(W - 1 - vx if vx > 0 else W, W), xa)
        for y in range(H):
            for x in range(W):
                row[x] = 0.0
            for k in range(nt):
                if y + k - r < 0 or y + k - r >= H:
                    continue
                t = tap[k]
                res_row = &scratch[y + k - r, 0]
                for x in range(W):
                    row[x] = row[x] + t * res_row[x]
            f_row = &filtered[y, 0]
            z_row = &zscore[y, 0]
            vyy = min(max(y + vy, 0), H - 1)
            v_row = &variance[vyy, 0]
            for x in range(W):
                f_row[x] = <float>row[x]
            if learn_y0 <= y < learn_y1:
                la = min(max(learn_x0, xa), xb)
                lb = min(max(learn_x1, la), xb)
            else:
                la = lb = xb
            for x in range(xa, la):
                z_row[x] = <float>(row[x] / sqrt(<double>v_row[x + vx]))
            for x in range(la, lb):
                v = <double>v_row[x + vx]
                acc = row[x]
                z = acc / sqrt(v)
                z_row[x] = <float>z
                f2 = min(acc * acc, clip * clip * v)
                # above the threshold it may be a target: learn from it only slowly
                u = hold_rate if z > hold_z else rate
                v_row[x + vx] = <float>max((1.0 - u) * v + u * f2, variance_floor)
            for x in range(lb, xb):
                z_row[x] = <float>(row[x] / sqrt(<double>v_row[x + vx]))
            # clamped columns share a cell: raster order, each reading the last update
            for x in range(W):
                if xa <= x < xb:
                    continue
                vxx = min(max(x + vx, 0), W - 1)
                v = <double>v_row[vxx]
                acc = row[x]
                z = acc / sqrt(v)
                z_row[x] = <float>z
                if y < learn_y0 or y >= learn_y1 or x < learn_x0 or x >= learn_x1:
                    continue
                f2 = min(acc * acc, clip * clip * v)
                u = hold_rate if z > hold_z else rate
                v_row[vxx] = <float>max((1.0 - u) * v + u * f2, variance_floor)
    free(pad)
    free(row)


cdef inline int32_t _find(int32_t* parent, int32_t i) noexcept nogil:
    cdef int32_t root = i, nxt
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


cdef inline int32_t _union(int32_t* parent, int32_t a, int32_t b) noexcept nogil:
    a = _find(parent, a)
    b = _find(parent, b)
    if a < b:
        parent[b] = a
        return a
    parent[a] = b
    return b


def label_above(const float[:, ::1] zscore, const uint8_t[:, ::1] bad, double k_sigma,
                int32_t[:, ::1] labels, int32_t[::1] parent, int32_t[::1] remap):
    """8-connected labels of good pixels with zscore > k_sigma, 1..n in raster order."""
    cdef Py_ssize_t H = zscore.shape[0], W = zscore.shape[1], y, x
    cdef int32_t next_label = 1, lab, other, n = 0
    cdef int32_t* par = &parent[0]
    cdef int32_t* rmp = &remap[0]
    with nogil:
        for y in range(H):
            for x in range(W):
                if bad[y, x] or not (<double>zscore[y, x] > k_sigma):
                    labels[y, x] = 0
                    continue
                lab = 0
                if x > 0 and labels[y, x - 1]:
                    lab = labels[y, x - 1]
                if y > 0:
                    if x > 0 and labels[y - 1, x - 1]:
                        other = labels[y - 1, x - 1]
                        lab = other if lab == 0 else _union(par, lab, other)
                    if labels[y - 1, x]:
                        other = labels[y - 1, x]
                        lab = other if lab == 0 else _union(par, lab, other)
                    if x + 1 < W and labels[y - 1, x + 1]:
                        other = labels[y - 1, x + 1]
                        lab = other if lab == 0 else _union(par, lab, other)
                if lab == 0:
                    lab = next_label
                    par[lab] = lab
                    rmp[lab] = 0
                    next_label += 1
                labels[y, x] = lab
        for y in range(H):
            for x in range(W):
                lab = labels[y, x]
                if lab:
                    lab = _find(par, lab)
                    if rmp[lab] == 0:
                        n += 1
                        rmp[lab] = n
                    labels[y, x] = rmp[lab]
    return n


cdef inline double _log_parabola(double left, double centre, double right,
                                 double fallback) noexcept nogil:
    cdef double den
    if left > 0.0 and right > 0.0 and centre > 0.0:
        den = log(left) - 2.0 * log(centre) + log(right)
        if den < 0.0:
            return (log(left) - log(right)) / (2.0 * den)
    return fallback


def find_peaks(const float[:, ::1] zscore, const int32_t[:, ::1] labels, Py_ssize_t n,
               Py_ssize_t radius, int32_t[::1] component_size, int64_t[::1] peak_index):
    """Local maxima of zscore over a (2*radius+1)^2 window, among labelled pixels.

    Two targets closer than their footprints merge into one component; a
    peak per component would lose the fainter.  Ties go to the first pixel in
    raster order.  component_size[i] <- pixels in component i+1.  Returns the
    number of peaks written to peak_index (y * W + x, raster order), at most
    its length.
    """
    cdef Py_ssize_t H = zscore.shape[0], W = zscore.shape[1], y, x, yy, xx, count = 0
    cdef Py_ssize_t cap = peak_index.shape[0]
    cdef int32_t lab
    cdef float z, o
    cdef bint is_peak
    with nogil:
        for y in range(n):
            component_size[y] = 0
        for y in range(H):
            for x in range(W):
                lab = labels[y, x]
                if lab == 0:
                    continue
                component_size[lab - 1] += 1
                z = zscore[y, x]
                is_peak = True
                for yy in range(max(y - radius, 0), min(y + radius + 1, H)):
                    for xx in range(max(x - radius, 0), min(x + radius + 1, W)):
                        o = zscore[yy, xx]
                        if o > z or (o == z and (yy < y or (yy == y and xx < x))):
                            is_peak = False
                            break
                    if not is_peak:
                        break
                if is_peak and count < cap:
                    peak_index[count] = y * W + x
                    count += 1
    return count


def measure_targets(const float[:, ::1] residual, const float[:, ::1] filtered,
                    const float[:, ::1] zscore, const int32_t[:, ::1] labels,
                    const int32_t[::1] component_size, const int64_t[::1] peak_index,
                    Py_ssize_t n, Py_ssize_t radius,
                    double psf_sigma, double read_var, double inv_gain,
                    const float[:, ::1] model, double[:, ::1] out):
    """One row per peak (columns as COLUMNS).

    The centroid is the log-parabola vertex through the filtered
    residual at the peak and its row/column neighbours: the matched-filter
    output of a Gaussian PSF is again a Gaussian, so the fit is unbiased and
    uses the whole PSF's signal rather than three noisy pixels.  Flux and
    shape come from the residual in the (2*radius+1)^2 window; sharpness is
    the peak residual pixel over the 3x3 residual sum, near 1 for a cosmic
    ray or a single hot pixel and below ~0.4 for an optical PSF; npix is the
    size of the peak's component.
    """
    cdef Py_ssize_t H = residual.shape[0], W = residual.shape[1]
    cdef Py_ssize_t y, x, i, py, px, y0, y1, x0, x1, qy, qx
    cdef double s, flux, wsum, sxx, syy, sxy, xc, yc, dx, dy, half, root
    cdef double sigma_n, crb, c, peak_r, sum3
    with nogil:
        for i in range(n):
            py = peak_index[i] // W
            px = peak_index[i] % W
            c = <double>filtered[py, px]
            dx = 0.0
            dy = 0.0
            if 0 < px < W - 1:
                dx = _log_parabola(<double>filtered[py, px - 1], c, <double>filtered[py, px + 1], 0.0)
            if 0 < py < H - 1:
                dy = _log_parabola(<double>filtered[py - 1, px], c, <double>filtered[py + 1, px], 0.0)
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
            sigma_n = sqrt(read_var + max(<double>model[py, px], 0.0) * inv_gain)
            if flux > 0.0:
                crb = min(sqrt(8.0 * M_PI) * psf_sigma * psf_sigma * sigma_n / flux, 1.0)
            else:
                crb = 1.0
            out[i, C_X] = xc
            out[i, C_Y] = yc
            out[i, C_SX] = crb
            out[i, C_SY] = crb
            out[i, C_FLUX] = flux
            out[i, C_SNR] = <double>zscore[py, px]
            out[i, C_NPIX] = component_size[labels[py, px] - 1]
            out[i, C_PEAK] = peak_r
            out[i, C_A] = sqrt(half + root)
            out[i, C_B] = sqrt(max(half - root, 0.0))
            out[i, C_THETA] = 0.5 * atan2(2.0 * sxy, sxx - syy)
            out[i, C_SHARP] = peak_r / sum3 if sum3 > 0.0 else 1.0
    return n
