# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -ffp-contract=off
"""Single-frame point-target detection stages (flight.kernels.detect).

The wrapper in flight/detection.py checks shapes, dtypes and contiguity and
allocates every buffer; that is what makes the unchecked directives above
safe.  Each stage has a numpy twin in flight/detection_ref.py and
tests/test_detection.py proves they agree; -ffp-contract=off keeps the C
arithmetic in the same rounding order as numpy so the twins agree exactly.
"""
from libc.math cimport log, sqrt, atan2, M_PI, NAN
from libc.stdint cimport uint8_t, uint16_t, int32_t, int64_t

include "components.pxi"

# MAD of a normal distribution times this is its standard deviation.
cdef double MAD_TO_SIGMA = 1.482602218505602

# Columns of the measurement table returned by measure_components.
COLUMNS = ("x", "y", "sigma_x", "sigma_y", "flux", "snr", "peak", "npix", "a", "b", "theta")
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
    N_COLUMNS


cdef inline void _swap(int32_t* a, Py_ssize_t i, Py_ssize_t j) noexcept nogil:
    cdef int32_t t = a[i]
    a[i] = a[j]
    a[j] = t


cdef int32_t _select(int32_t* a, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """Reorder a[0:n] so a[k] is the k-th smallest and a[:k] <= a[k]."""
    cdef Py_ssize_t lo = 0, hi = n - 1, i, j, mid
    cdef int32_t pivot
    while hi > lo:
        mid = lo + (hi - lo) // 2
        # median of three as pivot keeps sorted or constant tiles linear
        if a[mid] < a[lo]:
            _swap(a, mid, lo)
        if a[hi] < a[lo]:
            _swap(a, hi, lo)
        if a[hi] < a[mid]:
            _swap(a, hi, mid)
        pivot = a[mid]
        i = lo
        j = hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                _swap(a, i, j)
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return a[k]


cdef int64_t _twice_median(int32_t* a, Py_ssize_t n) noexcept nogil:
    """Twice the median of a[0:n] (exact in integers, numpy's even-n rule)."""
    cdef Py_ssize_t k2 = n // 2, i
    cdef int32_t upper = _select(a, n, k2)
    cdef int32_t lower
    if n % 2 == 1:
        return 2 * <int64_t>upper
    lower = a[0]
    for i in range(1, k2):
        if a[i] > lower:
            lower = a[i]
    return <int64_t>lower + <int64_t>upper


def tile_statistics(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                    Py_ssize_t tile, Py_ssize_t min_valid,
                    double[:, ::1] median_out, double[:, ::1] sigma_out,
                    int32_t[::1] scratch):
    """Per-tile median and MAD-sigma of good pixels; NaN where fewer than min_valid."""
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1]
    cdef Py_ssize_t gh = median_out.shape[0], gw = median_out.shape[1]
    cdef Py_ssize_t ty, tx, y, x, n, y1, x1
    cdef int64_t med2, mad4
    cdef int32_t* buf = &scratch[0]
    with nogil:
        for ty in range(gh):
            y1 = min((ty + 1) * tile, H)
            for tx in range(gw):
                x1 = min((tx + 1) * tile, W)
                n = 0
                for y in range(ty * tile, y1):
                    for x in range(tx * tile, x1):
                        if not bad[y, x]:
                            buf[n] = frame[y, x]
                            n += 1
                if n < min_valid or n == 0:
                    median_out[ty, tx] = NAN
                    sigma_out[ty, tx] = NAN
                    continue
                med2 = _twice_median(buf, n)
                for y in range(n):
                    buf[y] = <int32_t>(2 * <int64_t>buf[y] - med2 if 2 * <int64_t>buf[y] >= med2
                                       else med2 - 2 * <int64_t>buf[y])
                mad4 = _twice_median(buf, n)
                median_out[ty, tx] = med2 * 0.5
                sigma_out[ty, tx] = MAD_TO_SIGMA * (mad4 * 0.25)


def interpolate_grid(const double[:, ::1] grid,
                     const int32_t[::1] iy0, const int32_t[::1] iy1, const double[::1] wy,
                     const int32_t[::1] ix0, const int32_t[::1] ix1, const double[::1] wx,
                     float[:, ::1] out):
    """Bilinear map from tile values; per-row/column indices and weights precomputed."""
    cdef Py_ssize_t H = out.shape[0], W = out.shape[1], y, x
    cdef double a, b, c, d, fy, fx
    with nogil:
        for y in range(H):
            fy = wy[y]
            for x in range(W):
                fx = wx[x]
                a = grid[iy0[y], ix0[x]]
                b = grid[iy0[y], ix1[x]]
                c = grid[iy1[y], ix0[x]]
                d = grid[iy1[y], ix1[x]]
                out[y, x] = <float>((1.0 - fy) * ((1.0 - fx) * a + fx * b)
                                    + fy * ((1.0 - fx) * c + fx * d))


def label_above_threshold(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                          const float[:, ::1] background, const float[:, ::1] noise,
                          double k_sigma, int32_t[:, ::1] labels,
                          int32_t[::1] parent, int32_t[::1] remap):
    """8-connected labels of good pixels with frame - background > k_sigma * noise.

    Labels are 1..n in raster order of each component's first pixel (the
    scipy.ndimage.label convention), 0 elsewhere.  parent and remap need
    H * ((W + 1) // 2) + 1 entries: a new provisional label needs an
    unlabelled left neighbour, so a row holds at most ceil(W/2) of them.
    Returns n.
    """
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1], y, x
    cdef int32_t next_label = 1, lab, other, n = 0
    cdef int32_t* par = &parent[0]
    cdef int32_t* rmp = &remap[0]
    with nogil:
        par[0] = 0
        for y in range(H):
            for x in range(W):
                if bad[y, x] or not (<double>frame[y, x] - <double>background[y, x]
                                     > k_sigma * <double>noise[y, x]):
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


def measure_components(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                       const float[:, ::1] background, const float[:, ::1] noise,
                       const int32_t[:, ::1] labels, Py_ssize_t n,
                       Py_ssize_t radius, double psf_sigma,
                       int64_t[::1] peak_index, double[::1] peak_sig,
                       double[:, ::1] out):
    """Fill out[:n] with one row per component (columns as COLUMNS).

    The peak pixel is the component's most significant pixel (first in raster
    order on ties).  Flux and shape use the (2*radius+1)^2 window around it;
    the centroid is a three-point Gaussian (log-parabola) fit through the
    column and row sums of the 3x3 block at the peak, which is unbiased for a
    Gaussian PSF where a 3x3 centre of gravity pulls towards the pixel centre;
    it falls back to the 3x3 centre of gravity (positive weights) at the
    frame edge, next to a bad pixel, or where the sums do not make a peak.
    """
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1]
    cdef Py_ssize_t y, x, i, py, px, y0, y1, x0, x1
    cdef int32_t lab
    cdef double s, sig, flux, wsum, sx, sy, sxx, syy, sxy, xc, yc, dx, dy
    cdef double C, half, root, sigma_n, crb
    cdef double colsum[3]
    cdef double rowsum[3]
    cdef bint whole
    with nogil:
        for i in range(n):
            peak_index[i] = -1
            peak_sig[i] = 0.0
            out[i, C_NPIX] = 0.0
        for y in range(H):
            for x in range(W):
                lab = labels[y, x]
                if lab == 0:
                    continue
                i = lab - 1
                out[i, C_NPIX] += 1.0
                sig = (<double>frame[y, x] - <double>background[y, x]) / <double>noise[y, x]
                if peak_index[i] < 0 or sig > peak_sig[i]:
                    peak_sig[i] = sig
                    peak_index[i] = y * W + x
        for i in range(n):
            py = peak_index[i] // W
            px = peak_index[i] % W
            y0 = max(py - radius, 0)
            y1 = min(py + radius + 1, H)
            x0 = max(px - radius, 0)
            x1 = min(px + radius + 1, W)
            flux = 0.0
            for y in range(y0, y1):
                for x in range(x0, x1):
                    if not bad[y, x]:
                        flux += <double>frame[y, x] - <double>background[y, x]
            # 3x3 centre of gravity with positive weights: the fallback
            wsum = 0.0
            sx = 0.0
            sy = 0.0
            for y in range(max(py - 1, 0), min(py + 2, H)):
                for x in range(max(px - 1, 0), min(px + 2, W)):
                    if bad[y, x]:
                        continue
                    s = <double>frame[y, x] - <double>background[y, x]
                    if s > 0.0:
                        wsum += s
                        sx += s * (x - px)
                        sy += s * (y - py)
            C = <double>frame[py, px] - <double>background[py, px]
            dx = sx / wsum if wsum > 0.0 else 0.0
            dy = sy / wsum if wsum > 0.0 else 0.0
            # log-parabola through 3-pixel column (row) sums of the 3x3 block:
            # a separable Gaussian summed over rows is still a Gaussian in x,
            # and the sums average down the noise of single pixels
            whole = 0 < px < W - 1 and 0 < py < H - 1
            if whole:
                for y in range(3):
                    colsum[y] = 0.0
                    rowsum[y] = 0.0
                for y in range(3):
                    for x in range(3):
                        if bad[py + y - 1, px + x - 1]:
                            whole = False
                        s = <double>frame[py + y - 1, px + x - 1] - <double>background[py + y - 1, px + x - 1]
                        colsum[x] += s
                        rowsum[y] += s
            if whole:
                dx = _log_parabola(colsum[0], colsum[1], colsum[2], dx)
                dy = _log_parabola(rowsum[0], rowsum[1], rowsum[2], dy)
            # a fit leaving the peak pixel's neighbourhood is noise, not signal
            dx = min(max(dx, -1.0), 1.0)
            dy = min(max(dy, -1.0), 1.0)
            xc = px + dx
            yc = py + dy
            # second moments about the centroid, positive weights in the window
            wsum = 0.0
            sxx = 0.0
            syy = 0.0
            sxy = 0.0
            for y in range(y0, y1):
                for x in range(x0, x1):
                    if bad[y, x]:
                        continue
                    s = <double>frame[y, x] - <double>background[y, x]
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
            sigma_n = <double>noise[py, px]
            # Cramer-Rao bound of a Gaussian PSF centroid, background limited
            if flux > 0.0:
                crb = sqrt(8.0 * M_PI) * psf_sigma * psf_sigma * sigma_n / flux
                crb = min(crb, 1.0)
            else:
                crb = 1.0
            out[i, C_X] = xc
            out[i, C_Y] = yc
            out[i, C_SX] = crb
            out[i, C_SY] = crb
            out[i, C_FLUX] = flux
            out[i, C_SNR] = peak_sig[i]
            out[i, C_PEAK] = C
            out[i, C_A] = sqrt(half + root)
            out[i, C_B] = sqrt(max(half - root, 0.0))
            out[i, C_THETA] = 0.5 * atan2(2.0 * sxy, sxx - syy)
    return n
