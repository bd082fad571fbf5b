# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -ffp-contract=off -fno-math-errno -fno-trapping-math
"""Temporal point-target detection stages (flight.kernels.detect_temporal).

Per frame, on buffers the wrapper (flight/detection.py) checked and allocated:

  register_shift     sub-pixel shift of the scene since the last frame, by
                     robust Gauss-Newton on a sparse pixel grid (gathered once
                     into columns, then 4 points a step, branch-free)
  register_blocks    the same Gauss-Newton on block means, for terrain whose
                     pixel-scale gradient is mostly noise
  detect_pass        one pass down the frame, a few rows in flight at a time
                     (rolling row buffers that stay in L1/L2):
                       model (scene coordinates) -> separable cubic warp ->
                       prediction -> residual, clipped update (hot-pixel score
                       on every hot_every-th row, in turn) -> separable
                       matched filter -> F^2 > k^2 variance (Z > k with no
                       root or division per pixel), variance update ->
                       candidate list (Z = F / sqrt(variance) for those
                       only) -> hold the update above the gate -> warp the
                       update back -> model += alpha * update
                     Adjacent loops over the same columns are fused where
                     the data allow (the x-warp of the newest model row
                     into the residual loop; the column filter, threshold
                     count and variance update; the back-warp and the model
                     update), each sum still in the twin's order.
                     Only a sparse list of above-threshold pixels and the
                     residual near them (all that measurement reads) leave
                     the pass.  Compiled for the baseline instruction set and,
                     on x86_64, for AVX2 too, picked at run time (see
                     isa_paths below).
  shift_cells        whole-pixel move of a state array in place (re-anchoring)
  lagged_band        lagged_sources' filtered model difference and its scan,
                     one band of rows
  fill_new_cells     the cells re-anchoring brought into view, from the frame
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
from libc.math cimport log, exp, sqrt, sqrtf, atan2, floor, fabs, isfinite, M_PI, NAN
from libc.stdint cimport uint8_t, uint16_t, int32_t, uint32_t, int64_t, uint64_t, uintptr_t
from libc.string cimport memcpy, memmove

include "components.pxi"

import numpy as np

# measure_targets' Gaussian fit (_gaussian_fit): limits of one Gauss-Newton step, of the final
# width (px) and of the final position's distance from the log-parabola vertex, and the
# damping that keeps a flat window's normal matrix invertible
cdef extern from *:
    """
    #define KESTREL_FIT_STEP_PX 0.5
    #define KESTREL_FIT_WIDTH_STEP 0.3
    #define KESTREL_FIT_WIDTH_LOW 0.3
    #define KESTREL_FIT_WIDTH_HIGH 4.0
    #define KESTREL_FIT_REACH_PX 1.0
    #define KESTREL_FIT_DAMPING 1e-9
    #define KESTREL_FIT_CONVERGED_PX 1e-3
    #define KESTREL_CRB_PER_PEAK 0.79788456080286536  /* sqrt(2 / pi) */
    """
    double FIT_STEP_PX "KESTREL_FIT_STEP_PX"
    double FIT_WIDTH_STEP "KESTREL_FIT_WIDTH_STEP"
    double FIT_WIDTH_LOW "KESTREL_FIT_WIDTH_LOW"
    double FIT_WIDTH_HIGH "KESTREL_FIT_WIDTH_HIGH"
    double FIT_REACH_PX "KESTREL_FIT_REACH_PX"
    double FIT_DAMPING "KESTREL_FIT_DAMPING"
    double FIT_CONVERGED_PX "KESTREL_FIT_CONVERGED_PX"
    double CRB_PER_PEAK "KESTREL_CRB_PER_PEAK"

cdef enum:
    FIT_MAX_RADIUS = 8   # widest window (Chebyshev px) of the Gaussian fit

# Row buffers and state rows never overlap within one loop: saying so lets the compiler
# vectorise loops that touch many rows without run-time overlap checks.
cdef extern from *:
    ctypedef float* f32_out "float *__restrict__"
    ctypedef const float* f32_in "const float *__restrict__"
    ctypedef const uint16_t* u16_in "const uint16_t *__restrict__"

# Bits of the bad-pixel mask.
cdef enum:
    BAD_CALIBRATION = 1
    BAD_DETECTED = 2
BAD_BITS = {"calibration": BAD_CALIBRATION, "detected": BAD_DETECTED}

COLUMNS = ("x", "y", "sigma_x", "sigma_y", "flux", "snr", "peak", "npix", "a", "b", "theta",
           "sharpness", "line_fraction")
cdef enum:
    # a hit adds this to a cell's persistence byte, which loses a quarter a frame: always
    # hit, it settles at 252; persistence fraction f is the byte f * PERSIST_FULL
    PERSIST_STEP = 63
PERSIST_FULL = 4 * PERSIST_STEP
cdef enum:
    MAX_TAPS = 33
    CAND_BLOCK = 32  # candidate search: columns counted at once before a closer look

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
    C_LINE
    N_COLUMNS


# ---------------------------------------------------------------------------
# Instruction sets.  One build must run on any x86_64 (SSE2 is all the baseline
# promises) and on the Raspberry Pi (aarch64, armv7), yet AVX2 nearly halves the
# per-pixel pass where the CPU has it.  So the pass (_pass_rows and every helper
# it calls, forced inline by KESTREL_HOT) is compiled into two entry points from
# one source, one plain and one for AVX2, and detect_pass picks at run time.  On
# other machines both are the same plain code.  Explicit dispatch rather than
# target_clones: both paths stay callable, so a test can prove they give the same
# bits, and no ifunc resolver is needed (musl and static builds lack one).  The
# AVX2 target adds no FMA and the module builds with -ffp-contract=off, so no
# path fuses multiply-adds: every path rounds as the numpy twin does.
# ---------------------------------------------------------------------------
cdef extern from *:
    """
    #if defined(__GNUC__) || defined(__clang__)
    #define KESTREL_HOT __attribute__((always_inline))
    #else
    #define KESTREL_HOT
    #endif
    #if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    #define KESTREL_HAVE_AVX2_PATH 1
    #define KESTREL_TARGET_AVX2 __attribute__((target("avx2")))
    static int kestrel_cpu_has_avx2(void) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") != 0;
    }
    #else
    #define KESTREL_HAVE_AVX2_PATH 0
    #define KESTREL_TARGET_AVX2
    static int kestrel_cpu_has_avx2(void) { return 0; }
    #endif
    """
    # return types that carry the function attribute (void: no result variable to mislabel)
    ctypedef void hot_void "KESTREL_HOT void"
    ctypedef void avx2_void "KESTREL_TARGET_AVX2 void"
    int _cpu_has_avx2 "kestrel_cpu_has_avx2" () noexcept nogil

cdef enum:
    ISA_BASELINE = 0
    ISA_AVX2 = 1


def isa_paths():
    """The instruction-set paths of detect_pass this CPU can run, baseline first."""
    return ("baseline", "avx2") if _cpu_has_avx2() else ("baseline",)


cdef int _isa_code(str isa) except -1:
    """isa ('best' or one of isa_paths()) as an ISA_ code; ValueError otherwise."""
    paths = isa_paths()
    if isa == "best":
        isa = paths[len(paths) - 1]
    elif isa not in paths:
        raise ValueError(f"isa must be 'best' or one of {paths} on this CPU, got {isa!r}")
    return ISA_AVX2 if isa == "avx2" else ISA_BASELINE


def best_isa():
    """The path detect_pass takes with isa='best'."""
    paths = isa_paths()
    return paths[len(paths) - 1]


cdef inline hot_void _cubic_row(f32_in src, f32_out dst, Py_ssize_t x0, Py_ssize_t x1,
                                float w0, float w1, float w2, float w3) noexcept nogil:
    """dst[x] = w . src[x .. x+3] for x in [x0, x1), summed left to right (as the twin)."""
    cdef Py_ssize_t x
    for x in range(x0, x1):
        dst[x] = ((w0 * src[x] + w1 * src[x + 1]) + w2 * src[x + 2]) + w3 * src[x + 3]


cdef inline hot_void _residual_row(f32_in m0, f32_in m1, f32_in m2, f32_in src, f32_out m3,
                                   u16_in frame, f32_out residual, f32_out clipped,
                                   Py_ssize_t x0, Py_ssize_t x1, float w0, float w1, float w2,
                                   float w3, float v0, float v1, float v2, float v3,
                                   float read_var, float inv_gain, float clip_low,
                                   float clip_high) noexcept nogil:
    """Prediction (cubic down the x-warped model rows m0..m3), residual and its clipped copy
    for columns x0..x1 of one row.  The newest row m3 is warped from the model row src
    (_cubic_row) in the same loop."""
    cdef Py_ssize_t x
    cdef float p, rr, sigma, q
    for x in range(x0, x1):
        q = ((w0 * src[x] + w1 * src[x + 1]) + w2 * src[x + 2]) + w3 * src[x + 3]
        m3[x] = q
        p = ((v0 * m0[x] + v1 * m1[x]) + v2 * m2[x]) + v3 * q
        rr = <float>frame[x] - p
        sigma = sqrtf(read_var + _maxf(p, 0.0) * inv_gain)
        residual[x] = rr
        clipped[x] = _clampf(rr, -clip_low * sigma, clip_high * sigma)


cdef inline hot_void _residual_hot_row(f32_in m0, f32_in m1, f32_in m2, f32_in src,
                                       f32_out m3, u16_in frame, f32_out residual,
                                       f32_out clipped, f32_out s_row, unsigned char* level_row,
                                       Py_ssize_t x0, Py_ssize_t x1, float w0, float w1,
                                       float w2, float w3, float v0, float v1, float v2, float v3,
                                       float read_var, float inv_gain, float clip_low,
                                       float clip_high, float hot_keep, float hot_rate,
                                       float hot_on, float hot_off) noexcept nogil:
    """_residual_row on a row the hot score visits, which shares its sigma: the score, and
    in level_row whether it is beyond hot_on (2) or hot_off only (1)."""
    cdef Py_ssize_t x
    cdef float p, rr, sigma, q, score, mag
    for x in range(x0, x1):
        q = ((w0 * src[x] + w1 * src[x + 1]) + w2 * src[x + 2]) + w3 * src[x + 3]
        m3[x] = q
        p = ((v0 * m0[x] + v1 * m1[x]) + v2 * m2[x]) + v3 * q
        rr = <float>frame[x] - p
        sigma = sqrtf(read_var + _maxf(p, 0.0) * inv_gain)
        residual[x] = rr
        clipped[x] = _clampf(rr, -clip_low * sigma, clip_high * sigma)
        q = _clampf(rr / sigma, -20.0, 20.0)
        score = hot_keep * s_row[x] + hot_rate * q
        s_row[x] = score
        mag = _maxf(score, -score)
        level_row[x] = <unsigned char>(mag > hot_on) + <unsigned char>(mag > hot_off)


cdef inline hot_void _mark_hot(const unsigned char* level_row, unsigned char* b_row,
                               Py_ssize_t x0, Py_ssize_t x1) noexcept nogil:
    """Bad bits from the hot levels: set beyond hot_on, kept beyond hot_off, calibration
    bits untouched.  Bytes only, branch-free: vectorises."""
    cdef Py_ssize_t x
    cdef unsigned char old, lv
    for x in range(x0, x1):
        old = b_row[x]
        lv = level_row[x]
        b_row[x] = (old & BAD_CALIBRATION) | ((lv >> 1) << 1) | ((lv & (old >> 1)) << 1)


cdef inline hot_void _zero_bad(const unsigned char* b_row, f32_out residual, f32_out clipped,
                               Py_ssize_t x0, Py_ssize_t x1) noexcept nogil:
    """residual = clipped = 0 on the bad pixels of columns x0..x1.  They are few: clean
    32-byte stretches are skipped four words at a time."""
    cdef Py_ssize_t x = x0
    cdef uint64_t w0, w1, w2, w3
    while x < x1:
        if x + 32 <= x1:
            memcpy(&w0, b_row + x, 8)  # unaligned loads, portably
            memcpy(&w1, b_row + x + 8, 8)
            memcpy(&w2, b_row + x + 16, 8)
            memcpy(&w3, b_row + x + 24, 8)
            if (w0 | w1 | w2 | w3) == 0:
                x += 32
                continue
        if b_row[x]:
            residual[x] = 0.0
            clipped[x] = 0.0
        x += 1


cdef inline hot_void _count_above(f32_in acc, f32_in v, Py_ssize_t x0, Py_ssize_t x1,
                                  float k2, int* count) noexcept nogil:
    """Adds to count[0] the columns x0..x1 above the threshold, F > 0 and F^2 > k^2 V with
    V = v[x]: Z > k with no root and no division."""
    cdef Py_ssize_t x
    cdef float fa
    cdef int n = 0
    for x in range(x0, x1):
        fa = acc[x]
        n += (fa > 0.0) & (fa * fa > k2 * v[x])
    count[0] += n


cdef inline hot_void _learn(f32_in acc, f32_out v, const uint8_t* pc, uint8_t p_hold,
                            Py_ssize_t x0, Py_ssize_t x1, float k2,
                            float clip2, float rate, float keep, float hold, float hold_keep,
                            float floor_) noexcept nogil:
    """Variance update of columns x0..x1, each with a cell v[x] of its own; held where
    F > 0 and F^2 > k2 v, or where the cell's persistence pc[x] was above p_hold."""
    cdef Py_ssize_t x
    cdef float vv, fa, f2, q
    cdef int above
    for x in range(x0, x1):
        vv = v[x]
        fa = acc[x]
        f2 = fa * fa
        above = ((fa > 0.0) & (f2 > k2 * vv)) | (pc[x] > p_hold)
        q = clip2 * vv
        f2 = q if q < f2 else f2
        # above the threshold it may be a target: learn from it only slowly
        vv = (hold_keep * vv + hold * f2) if above else (keep * vv + rate * f2)
        v[x] = vv if vv > floor_ else floor_


cdef struct Persistence:
    float p2            # a hit: F > 0 and F^2 > p2 V
    float pk2           # a persistent source is a candidate from F^2 > pk2 V
    uint8_t hold        # persistence above this holds the model and the variance
    uint8_t detect      # persistence at least this makes a candidate of F^2 > pk2 V


cdef inline int _persist_learn(f32_in acc, f32_in vold, uint8_t* pr, uint8_t* flags,
                               Py_ssize_t x0, Py_ssize_t x1, Persistence ps) noexcept nogil:
    """_persist_row for columns x0..x1 whose cells pr[x] learn: branch-free, so it vectorises."""
    cdef Py_ssize_t x
    cdef float fa, f2, vv
    cdef int pos, flag, n = 0
    cdef uint8_t pc
    for x in range(x0, x1):
        fa = acc[x]
        vv = vold[x]
        f2 = fa * fa
        pos = fa > 0.0
        pc = pr[x]
        pc = <uint8_t>(pc - (pc >> 2) + PERSIST_STEP * (pos & (f2 > ps.p2 * vv)))
        pr[x] = pc
        flag = (pc > ps.hold) | (((pc >= ps.detect) & pos & (f2 > ps.pk2 * vv)) << 1)
        flags[x] = <uint8_t>flag
        n += flag != 0
    return n


cdef inline int _persist_read(f32_in acc, f32_in vold, const uint8_t* pr, uint8_t* flags,
                              Py_ssize_t x0, Py_ssize_t x1, Persistence ps) noexcept nogil:
    """_persist_row for columns x0..x1 whose cells pr[x] do not learn."""
    cdef Py_ssize_t x
    cdef float fa
    cdef int flag, n = 0
    cdef uint8_t pc
    for x in range(x0, x1):
        fa = acc[x]
        pc = pr[x]
        flag = (pc > ps.hold) | (((pc >= ps.detect) & (fa > 0.0) & (fa * fa > ps.pk2 * vold[x])) << 1)
        flags[x] = <uint8_t>flag
        n += flag != 0
    return n


cdef inline int _persist_row(f32_in acc, f32_in vold, uint8_t* p_row, uint8_t* flags,
                             Py_ssize_t W, Py_ssize_t vx, Py_ssize_t xa, Py_ssize_t xb,
                             Py_ssize_t la, Py_ssize_t lb, Persistence ps) noexcept nogil:
    """The persistence of each column's cell (x + vx clamped, as the variance's), updated
    where the variance learns (columns la..lb, within the unclamped xa..xb): P <- P - P / 4,
    + PERSIST_STEP on a hit F > 0 and F^2 > p2 V, exact in bytes; then flags[x] = 1 if P >
    hold, | 2 if P >= detect and F^2 > pk2 V (V as column x read it, in vold).  Clamped
    columns share their cells but never learn.  Returns how many columns have a flag."""
    cdef Py_ssize_t x
    cdef int n = 0
    for x in range(0, xa):
        n += _persist_read(acc, vold, p_row + min(max(x + vx, 0), W - 1) - x, flags, x, x + 1, ps)
    n += _persist_read(acc, vold, p_row + vx, flags, xa, la, ps)
    n += _persist_learn(acc, vold, p_row + vx, flags, la, lb, ps)
    n += _persist_read(acc, vold, p_row + vx, flags, lb, xb, ps)
    for x in range(xb, W):
        n += _persist_read(acc, vold, p_row + min(max(x + vx, 0), W - 1) - x, flags, x, x + 1, ps)
    return n


cdef inline hot_void _scan_candidates(f32_in acc, f32_in v, Py_ssize_t x0, Py_ssize_t x1,
                                      Py_ssize_t row, Py_ssize_t W, float k2, float g2,
                                      const unsigned char* b_row, const uint8_t* flags,
                                      f32_out c_row,
                                      int32_t* cand_index, float* cand_z, Py_ssize_t cap,
                                      Py_ssize_t* ncand) noexcept nogil:
    """Columns x0..x1 above the threshold (V = v[x]) onto the candidate list, with
    Z = F / sqrt(V); the model update is held (c_row = 0) on good pixels above the hold
    gate (g2 <= k2: F > 0 and F^2 > g2 V), so a target's wings are not learned either.
    flags (_persist_row): bit 1 holds the model too, bit 2 makes a candidate."""
    cdef Py_ssize_t x, blk, blk_end, n = ncand[0]
    cdef float fa
    cdef int count
    blk = x0
    while blk < x1:
        blk_end = min(blk + CAND_BLOCK, x1)
        count = 0
        for x in range(blk, blk_end):  # vectorises: most blocks hold none
            fa = acc[x]
            count += ((fa > 0.0) & (fa * fa > g2 * v[x])) | (flags[x] != 0)
        if count:
            for x in range(blk, blk_end):
                fa = acc[x]
                if (fa > 0.0 and fa * fa > g2 * v[x]) or flags[x] != 0:
                    if ((fa > 0.0 and fa * fa > k2 * v[x]) or flags[x] & 2) and n < cap:
                        cand_index[n] = <int32_t>(row * W + x)
                        cand_z[n] = fa / sqrtf(v[x])
                        n += 1
                    if b_row[x] == 0 and ((fa > 0.0 and fa * fa > g2 * v[x]) or flags[x] & 1):
                        c_row[x] = 0.0
        blk = blk_end
    ncand[0] = n


cdef inline hot_void _warp_update_row(f32_in src, f32_out h_row, f32_in r0, f32_in r1,
                                      f32_in r2, f32_in alpha_c, f32_out m_row, Py_ssize_t x0,
                                      Py_ssize_t x1, float w0, float w1, float w2, float w3,
                                      float v0, float v1, float v2, float v3,
                                      float alpha_r) noexcept nogil:
    """The held update row warped along x into h_row (as _cubic_row), and in the same loop
    model row += max(alpha_r, alpha_c) x (cubic down the x-warped update rows r0, r1, r2,
    h_row): one pass over the columns, the twin's sums in the twin's order."""
    cdef Py_ssize_t x
    cdef float h, t
    for x in range(x0, x1):
        h = ((w0 * src[x] + w1 * src[x + 1]) + w2 * src[x + 2]) + w3 * src[x + 3]
        h_row[x] = h
        t = alpha_c[x]
        t = alpha_r if alpha_r > t else t
        m_row[x] = m_row[x] + t * (((v0 * r0[x] + v1 * r1[x]) + v2 * r2[x]) + v3 * h)


cdef inline hot_void _filter_row(f32_in pad, f32_out out, Py_ssize_t W, Py_ssize_t r,
                                 const float* tap) noexcept nogil:
    """out[x] = symmetric taps along a row padded with r zeros each side: the centre tap,
    then the pairs outwards (the order the twin sums in).  Radius 2 in one pass."""
    cdef Py_ssize_t x, k
    cdef float t0 = tap[r], t1, t2
    if r == 2:
        t1 = tap[3]
        t2 = tap[4]
        for x in range(W):
            out[x] = (t0 * pad[x + 2] + t1 * (pad[x + 1] + pad[x + 3])) + t2 * (pad[x] + pad[x + 4])
        return
    for x in range(W):
        out[x] = t0 * pad[x + r]
    for k in range(1, r + 1):
        t1 = tap[r + k]
        for x in range(W):
            out[x] = out[x] + t1 * (pad[x + r - k] + pad[x + r + k])


cdef inline hot_void _filter_col(float** rows, f32_out out, Py_ssize_t W, Py_ssize_t r,
                                 const float* tap) noexcept nogil:
    """out[x] = symmetric taps down the column of rows[0 .. 2r] (row y - r .. y + r), in
    _filter_row's order.  Radius 2 in one pass."""
    cdef Py_ssize_t x, k
    cdef float t0 = tap[r], t1, t2
    cdef f32_in a
    cdef f32_in b
    cdef f32_in c
    cdef f32_in d
    cdef f32_in e
    if r == 2:
        t1 = tap[3]
        t2 = tap[4]
        a = rows[0]
        b = rows[1]
        c = rows[2]
        d = rows[3]
        e = rows[4]
        for x in range(W):
            out[x] = (t0 * c[x] + t1 * (b[x] + d[x])) + t2 * (a[x] + e[x])
        return
    c = rows[r]
    for x in range(W):
        out[x] = t0 * c[x]
    for k in range(1, r + 1):
        t1 = tap[r + k]
        a = rows[r - k]
        e = rows[r + k]
        for x in range(W):
            out[x] = out[x] + t1 * (a[x] + e[x])


cdef inline hot_void _filter5_count(float** rows, f32_out out, f32_in v, f32_out vold,
                                    Py_ssize_t x0, Py_ssize_t x1, float t0, float t1, float t2,
                                    float k2, int* count) noexcept nogil:
    """_filter_col (radius 2) and _count_above fused for columns x0..x1, keeping each
    column's variance as read in vold (the scan reads it after the cells learn)."""
    cdef Py_ssize_t x
    cdef float fa, vv
    cdef int n = 0
    cdef f32_in a = rows[0]
    cdef f32_in b = rows[1]
    cdef f32_in c = rows[2]
    cdef f32_in d = rows[3]
    cdef f32_in e = rows[4]
    for x in range(x0, x1):
        fa = (t0 * c[x] + t1 * (b[x] + d[x])) + t2 * (a[x] + e[x])
        out[x] = fa
        vv = v[x]
        vold[x] = vv
        n += (fa > 0.0) & (fa * fa > k2 * vv)
    count[0] += n


cdef inline hot_void _filter5_count_learn(float** rows, f32_out out, f32_out v, f32_out vold,
                                          const uint8_t* pc, uint8_t p_hold,
                                          Py_ssize_t x0, Py_ssize_t x1, float t0, float t1,
                                          float t2, float k2, float m2, float clip2, float rate,
                                          float keep, float hold, float hold_keep,
                                          float floor_, int* count) noexcept nogil:
    """_filter5_count and _learn fused: one read of each variance cell, the old value kept
    in vold for the scan; the variance is held above k2 or where the persistence pc[x] was
    above p_hold, the count is of those above m2."""
    cdef Py_ssize_t x
    cdef float fa, vv, f2, q
    cdef int above, n = 0
    cdef f32_in a = rows[0]
    cdef f32_in b = rows[1]
    cdef f32_in c = rows[2]
    cdef f32_in d = rows[3]
    cdef f32_in e = rows[4]
    for x in range(x0, x1):
        fa = (t0 * c[x] + t1 * (b[x] + d[x])) + t2 * (a[x] + e[x])
        out[x] = fa
        vv = v[x]
        vold[x] = vv
        f2 = fa * fa
        above = ((fa > 0.0) & (f2 > k2 * vv)) | (pc[x] > p_hold)
        n += (fa > 0.0) & (f2 > m2 * vv)
        q = clip2 * vv
        f2 = q if q < f2 else f2
        vv = (hold_keep * vv + hold * f2) if above else (keep * vv + rate * f2)
        v[x] = vv if vv > floor_ else floor_
    count[0] += n


cdef inline hot_void _filter5_range(float** rows, f32_out out, Py_ssize_t x0, Py_ssize_t x1,
                                    float t0, float t1, float t2) noexcept nogil:
    """_filter_col (radius 2) for columns x0..x1."""
    cdef Py_ssize_t x
    cdef f32_in a = rows[0]
    cdef f32_in b = rows[1]
    cdef f32_in c = rows[2]
    cdef f32_in d = rows[3]
    cdef f32_in e = rows[4]
    for x in range(x0, x1):
        out[x] = (t0 * c[x] + t1 * (b[x] + d[x])) + t2 * (a[x] + e[x])


# float-typed helpers: a bare literal like 0.0 would make Cython compute in double
cdef inline float _clampf(float v, float lo, float hi) noexcept nogil:
    """v limited to [lo, hi] (lo <= hi): a max then a min, one instruction each on SIMD."""
    v = v if v > lo else lo
    return v if v < hi else hi


cdef inline float _maxf(float a, float b) noexcept nogil:
    return a if a > b else b


cdef inline float _minf(float a, float b) noexcept nogil:
    return a if a < b else b


cdef inline hot_void _clamped_columns(const float* acc, float* vold, float* v_row,
                                      const uint8_t* p_row, uint8_t p_hold,
                                      Py_ssize_t x0, Py_ssize_t x1, Py_ssize_t vx, Py_ssize_t W,
                                      bint learn_in_row, Py_ssize_t learn_x0,
                                      Py_ssize_t learn_x1, bint hold_in_row, Py_ssize_t hold_x0,
                                      Py_ssize_t hold_x1, float k2, float m2, float clip2,
                                      float rate, float keep, float hold, float hold_keep,
                                      float young_clip2, float young_rate,
                                      float floor_, int* count) noexcept nogil:
    """detect_pass's threshold and variance update for columns x0..x1 whose variance cell
    (x + vx clamped to the row) other columns share: in raster order, each reading the
    last update (held above k2, in cells hold_x0..hold_x1 of a row that holds; the cells
    outside learn with young_clip2 and young_rate).  Adds the count above m2 to count[0]."""
    cdef Py_ssize_t x, vxx
    cdef float v, fa, f2, q
    cdef int above, inside
    for x in range(x0, x1):
        vxx = min(max(x + vx, 0), W - 1)
        v = v_row[vxx]
        vold[x] = v
        fa = acc[x]
        f2 = fa * fa
        above = ((fa > 0.0) & (f2 > k2 * v)) | (p_row[vxx] > p_hold)
        inside = hold_in_row & (vxx >= hold_x0) & (vxx < hold_x1)
        above = above & inside
        count[0] += (fa > 0.0) & (f2 > m2 * v)
        if not learn_in_row or x < learn_x0 or x >= learn_x1:
            continue
        q = (clip2 if inside else young_clip2) * v
        f2 = q if q < f2 else f2
        if above:
            v = hold_keep * v + hold * f2
        else:
            v = keep * v + (rate if inside else young_rate) * f2
        v_row[vxx] = v if v > floor_ else floor_


cdef inline hot_void _copy_near_candidates(f32_in src, f32_out dst, const int32_t* cand_index,
                                           Py_ssize_t lo, Py_ssize_t hi, Py_ssize_t W,
                                           Py_ssize_t reach) noexcept nogil:
    """dst[x] = src[x] within reach columns of candidates lo..hi (of any row): the whole row
    where they are many, since then their windows cover most of it anyway."""
    cdef Py_ssize_t i, x, xa, xb, idx
    if (hi - lo) * (2 * reach + 1) >= W:
        memcpy(dst, src, W * sizeof(float))
        return
    for i in range(lo, hi):
        idx = cand_index[i]
        x = idx - (idx // W) * W
        xa = max(x - reach, 0)
        xb = min(x + reach + 1, W)
        memcpy(dst + xa, src + xa, (xb - xa) * sizeof(float))


ctypedef struct PassArgs:
    # state and frame, C-contiguous H x W (W x 1 for the ages)
    const uint16_t* frame
    uint8_t* bad
    float* model
    float* variance
    float* hot_score
    float* residual
    uint16_t* row_age
    uint16_t* col_age
    Py_ssize_t H
    Py_ssize_t W
    # warp of the model onto the frame, and of the update back
    Py_ssize_t oy
    Py_ssize_t ox
    Py_ssize_t uy
    Py_ssize_t ux
    float wy[4]
    float wx[4]
    float uwy[4]
    float uwx[4]
    # matched filter
    float tap[MAX_TAPS]
    Py_ssize_t nt
    # variance cell offset and learn window
    Py_ssize_t vy
    Py_ssize_t vx
    Py_ssize_t learn_y0
    Py_ssize_t learn_y1
    Py_ssize_t learn_x0
    Py_ssize_t learn_x1
    # cells whose variance may be held: rows hold_y0..hold_y1, columns hold_x0..hold_x1
    Py_ssize_t hold_y0
    Py_ssize_t hold_y1
    Py_ssize_t hold_x0
    Py_ssize_t hold_x1
    Py_ssize_t reach
    Py_ssize_t hot_every
    Py_ssize_t hot_phase
    float clip
    float clip_low
    float read_var
    float inv_gain
    float hot_rate
    float hot_keep
    float hot_on
    float hot_off
    float variance_rate
    float variance_keep
    float variance_clip2
    float young_rate              # what variance_rate and variance_clip2 are outside the hold window
    float young_clip2
    float variance_floor
    float k2
    float g2
    float m2
    uint8_t* persist
    Persistence ps
    float hold_rate
    float hold_keep
    float model_rate
    # scratch rows of width SW, and the candidate list
    float* scratch
    Py_ssize_t SW
    int32_t* cand_index
    float* cand_z
    Py_ssize_t cap
    int32_t* row_start


def scratch_rows(Py_ssize_t n_taps, Py_ssize_t reach):
    """Rows of width W + n_taps - 1 that detect_pass needs as scratch."""
    return 4 + 4 + (n_taps + 1) + n_taps + (reach + n_taps // 2 + 1) + 4


cdef inline hot_void _pass_rows(PassArgs* p, Py_ssize_t* n_out) noexcept nogil:
    """detect_pass's loop (see there), on checked buffers."""
    cdef Py_ssize_t H = p.H, W = p.W, SW = p.SW, nt = p.nt, r = nt // 2
    cdef Py_ssize_t oy = p.oy, ox = p.ox, uy = p.uy, ux = p.ux, vy = p.vy, vx = p.vx
    cdef Py_ssize_t reach = p.reach, cap = p.cap
    cdef Py_ssize_t depth = reach + r + 1    # residual rows held until their fate is known
    cdef float* mh = p.scratch               # 4 rows: model rows warped along x
    cdef float* uh = mh + 4 * SW             # 4 rows: update rows warped along x
    cdef float* hres = uh + 4 * SW           # nt rows: residual filtered along x
    cdef float* hzero = hres + nt * SW       # the filtered row of a row outside: zeros
    cdef float* clp = hzero + SW             # nt rows: clipped residual, until held
    cdef float* rring = clp + nt * SW        # depth rows: residual, r zeros each side
    cdef float* acc = rring + depth * SW     # filtered row
    cdef float* vold = acc + SW              # variance each clamped column read
    cdef float* alpha_c = vold + SW          # model rate per column, from col_age
    cdef uint8_t* level_row = <uint8_t*>(alpha_c + SW)  # W bytes fit in one float row
    cdef uint8_t* flags = level_row + SW     # and W more: the persistence flags of row b
    cdef const float* tap = p.tap
    # columns whose 4 warp taps lie inside: x + ox - 1 >= 0 and x + ox + 2 < W
    cdef Py_ssize_t x0 = min(max(1 - ox, 0), W), x1 = max(min(W - 2 - ox, W), x0)
    cdef Py_ssize_t u0 = min(max(1 - ux, 0), W), u1 = max(min(W - 2 - ux, W), u0)
    # model rows the update reaches (stage C below)
    cdef Py_ssize_t ur0 = max(1 - uy, 0), ur1 = min(H - 2 - uy, H)
    cdef float w0 = p.wx[0], w1 = p.wx[1], w2 = p.wx[2], w3 = p.wx[3]
    cdef float v0 = p.wy[0], v1 = p.wy[1], v2 = p.wy[2], v3 = p.wy[3]
    cdef float uw0 = p.uwx[0], uw1 = p.uwx[1], uw2 = p.uwx[2], uw3 = p.uwx[3]
    cdef float uv0 = p.uwy[0], uv1 = p.uwy[1], uv2 = p.uwy[2], uv3 = p.uwy[3]
    cdef float f_rv = p.read_var, f_ig = p.inv_gain, f_k2 = p.k2, f_g2 = p.g2, f_m2 = p.m2
    cdef float f_rate = p.variance_rate, f_keep = p.variance_keep
    cdef float f_hold = p.hold_rate, f_hold_keep = p.hold_keep
    cdef float f_clip2 = p.variance_clip2, f_floor = p.variance_floor
    cdef float y_rate = p.young_rate, y_clip2 = p.young_clip2
    cdef float f_mrate = p.model_rate, f_one = 1.0, f_zero = 0.0
    cdef Py_ssize_t s, a, b, c, u, x, ys, y, next_m, vyy, xa, xb, la, lb, ha, hb
    cdef Py_ssize_t ncand = 0
    cdef const uint16_t* f_row
    cdef uint8_t* b_row
    cdef float* c_row
    cdef float* h_row
    cdef float* prow
    cdef float* m0
    cdef float* m1
    cdef float* m2
    cdef float* m3
    cdef float* h_rows[MAX_TAPS]
    cdef float* v_row
    cdef uint8_t* p_row
    cdef float ar
    cdef int count
    cdef bint learn_in_row, hold_in_row
    cdef int inside
    for s in range(depth):
        for x in range(r):
            rring[s * SW + x] = 0.0
            rring[s * SW + W + r + x] = 0.0
    for x in range(W):
        hzero[x] = 0.0
    for x in range(W):
        ar = f_one / (<float>p.col_age[x] + f_one)
        alpha_c[x] = ar if ar > f_mrate else f_mrate
    # Z columns whose variance cell no other pixel of the row reads
    xa = min(-vx + 1 if vx < 0 else 0, W)
    xb = max(min(W - 1 - vx if vx > 0 else W, W), xa)
    next_m = oy - 1
    for s in range(H + r + reach):
        # ---- stage A: prediction, residual, clipped update (hot score) of row a
        a = s
        if a < H:
            ys = a + oy - 1
            inside = ys >= 0 and ys + 3 < H
            # where the row is predicted, its newest model row (ys + 3) is warped along x in
            # the residual loop itself
            while next_m <= a + oy + 2 - inside:
                if 0 <= next_m < H:
                    _cubic_row(p.model + next_m * W + ox - 1, mh + (next_m & 3) * SW,
                               x0, x1, w0, w1, w2, w3)
                next_m += 1
            next_m += inside
            c_row = clp + (a % nt) * SW
            prow = rring + (a % depth) * SW + r
            if not inside:
                for x in range(W):
                    prow[x] = 0.0
                    c_row[x] = 0.0
            else:
                m0 = mh + (ys & 3) * SW
                m1 = mh + ((ys + 1) & 3) * SW
                m2 = mh + ((ys + 2) & 3) * SW
                m3 = mh + ((ys + 3) & 3) * SW
                f_row = p.frame + a * W
                b_row = p.bad + a * W
                for x in range(x0):
                    prow[x] = 0.0
                    c_row[x] = 0.0
                if a % p.hot_every == p.hot_phase:
                    _residual_hot_row(m0, m1, m2, p.model + (ys + 3) * W + ox - 1, m3, f_row,
                                      prow, c_row, p.hot_score + a * W, level_row, x0, x1,
                                      w0, w1, w2, w3, v0, v1, v2, v3, f_rv, f_ig,
                                      p.clip_low, p.clip, p.hot_keep, p.hot_rate, p.hot_on,
                                      p.hot_off)
                    _mark_hot(level_row, b_row, x0, x1)
                else:
                    _residual_row(m0, m1, m2, p.model + (ys + 3) * W + ox - 1, m3, f_row, prow,
                                  c_row, x0, x1, w0, w1, w2, w3, v0, v1, v2, v3, f_rv, f_ig,
                                  p.clip_low, p.clip)
                _zero_bad(b_row, prow, c_row, x0, x1)
                for x in range(x1, W):
                    prow[x] = 0.0
                    c_row[x] = 0.0
            # matched filter along x, into the ring: centre, then pairs outwards
            _filter_row(prow - r, hres + (a % nt) * SW, W, r, tap)
        # ---- stage B: filter along y, threshold, variance, candidates of row b
        b = s - r
        if 0 <= b < H:
            for c in range(-r, r + 1):
                h_rows[c + r] = hres + ((b + c) % nt) * SW if 0 <= b + c < H else hzero
            vyy = min(max(b + vy, 0), H - 1)
            v_row = p.variance + vyy * W
            p_row = p.persist + vyy * W
            learn_in_row = p.learn_y0 <= b < p.learn_y1
            if learn_in_row:
                la = min(max(p.learn_x0, xa), xb)
                lb = min(max(p.learn_x1, la), xb)
            else:
                la = lb = xb
            # columns la..ha and hb..lb learn outside the hold window: never held
            hold_in_row = p.hold_y0 <= vyy < p.hold_y1
            if hold_in_row:
                ha = min(max(p.hold_x0 - vx, la), lb)
                hb = min(max(p.hold_x1 - vx, ha), lb)
            else:
                ha = hb = lb
            count = 0
            if r == 2:
                # the common radius: filter, threshold count and variance update in one loop;
                # vold keeps what the scan must read
                _filter5_range(h_rows, acc, 0, xa, tap[2], tap[3], tap[4])
                _filter5_range(h_rows, acc, xb, W, tap[2], tap[3], tap[4])
                _filter5_count(h_rows, acc, v_row + vx, vold, xa, la, tap[2], tap[3], tap[4],
                               f_m2, &count)
                _filter5_count_learn(h_rows, acc, v_row + vx, vold, p_row + vx, 255, la, ha,
                                     tap[2], tap[3], tap[4], f_g2, f_m2, y_clip2, y_rate, f_keep,
                                     y_rate, f_keep, f_floor, &count)
                _filter5_count_learn(h_rows, acc, v_row + vx, vold, p_row + vx, p.ps.hold, ha, hb,
                                     tap[2], tap[3],
                                     tap[4], f_g2, f_m2, f_clip2, f_rate, f_keep, f_hold,
                                     f_hold_keep, f_floor, &count)
                _filter5_count_learn(h_rows, acc, v_row + vx, vold, p_row + vx, 255, hb, lb,
                                     tap[2], tap[3], tap[4], f_g2, f_m2, y_clip2, y_rate, f_keep,
                                     y_rate, f_keep, f_floor, &count)
                _filter5_count(h_rows, acc, v_row + vx, vold, lb, xb, tap[2], tap[3], tap[4],
                               f_m2, &count)
            else:
                _filter_col(h_rows, acc, W, r, tap)
                _count_above(acc, v_row + vx, xa, xb, f_m2, &count)
                for x in range(xa, xb):
                    vold[x] = v_row[x + vx]
            # clamped columns share a cell: raster order, each reading the last update (which
            # vold keeps for the scan); no unclamped column reads their cells
            _clamped_columns(acc, vold, v_row, p_row, p.ps.hold, 0, xa, vx, W, learn_in_row, p.learn_x0,
                             p.learn_x1, hold_in_row, p.hold_x0, p.hold_x1, f_g2, f_m2, f_clip2,
                             f_rate, f_keep, f_hold, f_hold_keep, y_clip2, y_rate, f_floor, &count)
            _clamped_columns(acc, vold, v_row, p_row, p.ps.hold, xb, W, vx, W, learn_in_row, p.learn_x0,
                             p.learn_x1, hold_in_row, p.hold_x0, p.hold_x1, f_g2, f_m2, f_clip2,
                             f_rate, f_keep, f_hold, f_hold_keep, y_clip2, y_rate, f_floor, &count)
            if r != 2:
                # vold holds what the scan reads, so the unclamped cells can learn first
                _learn(acc, v_row + vx, p_row + vx, 255, la, ha, f_g2, y_clip2, y_rate,
                       f_keep, y_rate, f_keep, f_floor)
                _learn(acc, v_row + vx, p_row + vx, p.ps.hold, ha, hb, f_g2, f_clip2, f_rate,
                       f_keep, f_hold, f_hold_keep, f_floor)
                _learn(acc, v_row + vx, p_row + vx, 255, hb, lb, f_g2, y_clip2, y_rate,
                       f_keep, y_rate, f_keep, f_floor)
            # the persistence learns after the variance, whose hold read it as it was
            count += _persist_row(acc, vold, p_row, flags, W, vx, xa, xb, la, lb, p.ps)
            p.row_start[b] = <int32_t>ncand
            if count:
                c_row = clp + (b % nt) * SW
                b_row = p.bad + b * W
                _scan_candidates(acc, vold, 0, W, b, W, f_k2, f_m2, b_row, flags, c_row,
                                 p.cand_index, p.cand_z, cap, &ncand)
            p.row_start[b + 1] = <int32_t>ncand  # until row b + 1 starts: the residual below
            # ---- stage C: warp the held update of row c = b back, update model row u
            c = b
            h_row = uh + (c & 3) * SW
            c_row = clp + (c % nt) * SW
            u = c - uy - 2
            if c >= 3 and 0 <= u < H:
                m0 = uh + ((c - 3) & 3) * SW
                m1 = uh + ((c - 2) & 3) * SW
                m2 = uh + ((c - 1) & 3) * SW
                ar = f_one / (<float>p.row_age[u] + f_one)
                ar = ar if ar > f_mrate else f_mrate
                _warp_update_row(c_row + ux - 1, h_row, m0, m1, m2, alpha_c, p.model + u * W,
                                 u0, u1, uw0, uw1, uw2, uw3, uv0, uv1, uv2, uv3, ar)
            else:
                _cubic_row(c_row + ux - 1, h_row, u0, u1, uw0, uw1, uw2, uw3)
        # ---- residual row y out, near the candidates of rows y - reach .. y + reach only
        y = s - r - reach
        if y >= 0:
            _copy_near_candidates(rring + (y % depth) * SW + r, p.residual + y * W,
                                  p.cand_index, p.row_start[max(y - reach, 0)],
                                  p.row_start[min(y + reach, H - 1) + 1], W, reach)
    p.row_start[H] = <int32_t>ncand
    if ur0 < ur1 and u0 < u1:
        for u in range(ur0, ur1):
            p.row_age[u] = p.row_age[u] + (p.row_age[u] < 65535)
        for x in range(u0, u1):
            p.col_age[x] = p.col_age[x] + (p.col_age[x] < 65535)
    n_out[0] = ncand


cdef avx2_void _pass_rows_avx2(PassArgs* p, Py_ssize_t* n_out) noexcept nogil:
    _pass_rows(p, n_out)


cdef void _pass_rows_baseline(PassArgs* p, Py_ssize_t* n_out) noexcept nogil:
    _pass_rows(p, n_out)


cdef int _check_plane(str name, Py_ssize_t h, Py_ssize_t w, Py_ssize_t H,
                     Py_ssize_t W) except -1:
    if h != H or w != W:
        raise ValueError(f"{name} must have the frame's shape ({H}, {W}), got ({h}, {w})")
    return 0


def detect_pass(const uint16_t[:, ::1] frame, uint8_t[:, ::1] bad,
                float[:, ::1] model, float[:, ::1] variance,
                float[:, ::1] hot_score, float[:, ::1] residual,
                uint16_t[::1] row_age, uint16_t[::1] col_age,
                Py_ssize_t oy, Py_ssize_t ox, const float[::1] wy, const float[::1] wx,
                Py_ssize_t uy, Py_ssize_t ux, const float[::1] uwy, const float[::1] uwx,
                const float[::1] taps, Py_ssize_t vy, Py_ssize_t vx,
                Py_ssize_t learn_y0, Py_ssize_t learn_y1, Py_ssize_t learn_x0, Py_ssize_t learn_x1,
                double clip_sigma, double clip_low, double read_var, double inv_gain,
                double hot_rate, double hot_on, double hot_off,
                Py_ssize_t hot_every, Py_ssize_t hot_phase,
                double variance_rate, double variance_clip, double variance_floor,
                double k_sigma, double gate_sigma, double hold_sigma, double hold_rate,
                double model_rate,
                Py_ssize_t reach,
                float[:, ::1] scratch, int32_t[::1] cand_index, float[::1] cand_z,
                int32_t[::1] row_start, str isa="best", uint8_t[:, ::1] persist=None,
                persistence=(0.0, 0.0, 255, 255), hold_window=None, double variance_gain=1.0,
                young_variance=None):
    """One frame of the temporal model, in one pass down the rows.  Returns the
    number of candidates (pixels with Z > k_sigma, bad ones included, raster order).

    The model M and the variance V of the filtered residual live in scene
    coordinates, the hot score S and the bad mask in sensor coordinates; the
    age of model cell (u, v) is min(row_age[u], col_age[v]).  Row by row, with
    the rows of each stage lagging the one before:

      P   = M warped by (oy, ox, wy, wx): separable 4x4 cubic, taps summed in
            order; where a tap falls outside M the pixel is 'outside'
      R   = frame - P; sigma = sqrt(read_var + max(P, 0) * inv_gain)
      C   = R clipped to [-clip_low, clip_sigma] sigma  (the model's update)
      on rows y with y % hot_every == hot_phase only (the score changes
      slowly; hot_rate is the rate per visit):
      S   = (1 - hot_rate) S + hot_rate clip(R / sigma, +-20); |S| > hot_on
            marks the pixel bad (BAD_DETECTED) until |S| <= hot_off
      R, C are 0 on bad pixels and outside
      F   = R (*) taps (*) taps, zero outside the frame; the taps are
            symmetric and summed centre first, then the pairs outwards
      A   = F > 0 and F^2 > k^2 V[y + vy, x + vx] (clamped): Z > k without
            a root or a division per pixel; Z = F / sqrt(V) for A only
      G   = F > 0 and F^2 > g^2 V, g = gate_sigma <= k_sigma: a compact
            positive residual (a target and its wings, A included)
      H   = F > 0 and F^2 > h^2 V, h = hold_sigma <= g: G included
      V  <- EMA of min(F^2, variance_clip^2 V), at hold_rate where G, only
            inside the learn window, floored, each frame's term times
            variance_gain (which unbiases the clip); outside hold_window the
            clip and gain are young_variance's (clip, gain), where given;
            clamped columns share a cell:
            raster order.  A target does not teach V that it is noise;
            the slow hold_rate is the cap that lets a lasting change in the
            scene be learned in the end (V grows until G no longer holds).
            V is held in cells of hold_window = (y0, y1, x0, x1) only (None:
            everywhere): elsewhere G and P leave its rate alone
      P   = persistence byte of the cell (as V's), where V learns: P - P // 4,
            + PERSIST_STEP on a hit F > 0 and F^2 > p^2 V; the V above was held
            (hold_rate) where P was above `hold`, and the pixel is a candidate
            if P >= `detect` and F > 0 and F^2 > pk^2 V, its model held if P
            > `hold` (persistence = (p, pk, hold, detect); the default never
            holds nor detects; persist None: a zero array of its own).  Noise
            rarely passes p sigma frames on end; a slow target, which the
            model and V would otherwise learn, does
      A:  candidate (index y * W + x, Z); H: C = 0 there if good, so a slow
            target does not fade into the background (a lower gate than G's:
            a hold costs the model a frame, where V held on noise would be
            biased low and raise the false alarms)
      U   = C warped back by (uy, ux, uwy, uwx); M += alpha U, alpha =
            max(model_rate, 1 / (age + 1)), where U had data; then row_age
            and col_age count the rows and columns that were updated.

    R goes to `residual` only within `reach` pixels (Chebyshev) of a
    candidate, which is all that measurement reads; elsewhere `residual`
    keeps what it held.  Each model row is read into the warp buffer before
    the update reaches it: the update of row u waits for residual rows up to
    u + uy + 2 + r, and uy + oy >= -1.  row_start[y] is the first candidate
    of row y; row_start[H] the count.  isa picks the instruction-set path
    ('best', or one of isa_paths()); every path gives the same bits.
    """
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1]
    cdef Py_ssize_t nt = taps.shape[0], r = nt // 2
    cdef Py_ssize_t PW = W + 2 * r
    cdef Py_ssize_t k, n = 0
    cdef PassArgs args
    if nt > MAX_TAPS or nt % 2 == 0:
        raise ValueError(f"taps must be an odd count up to {MAX_TAPS}, got {nt}")
    for k in range(r):
        if taps[k] != taps[nt - 1 - k]:
            raise ValueError(f"taps must be symmetric, got {list(taps)}")
    if reach < 0:
        raise ValueError(f"reach must be >= 0, got {reach}")
    if not 0.0 <= gate_sigma <= k_sigma:
        raise ValueError(f"gate_sigma must lie in [0, k_sigma = {k_sigma}], got {gate_sigma}")
    if not 0.0 <= hold_sigma <= gate_sigma:
        raise ValueError(f"hold_sigma must lie in [0, gate_sigma = {gate_sigma}], got {hold_sigma}")
    _check_plane("bad", bad.shape[0], bad.shape[1], H, W)
    _check_plane("model", model.shape[0], model.shape[1], H, W)
    _check_plane("variance", variance.shape[0], variance.shape[1], H, W)
    _check_plane("hot_score", hot_score.shape[0], hot_score.shape[1], H, W)
    _check_plane("residual", residual.shape[0], residual.shape[1], H, W)
    if persist is None:
        persist = np.zeros((H, W), np.uint8)
    _check_plane("persist", persist.shape[0], persist.shape[1], H, W)
    p_sigma, p_k, p_hold, p_detect = persistence
    if not (0 <= p_hold <= 255 and 0 <= p_detect <= 255):
        raise ValueError(f"persistence hold and detect must be bytes, got {p_hold}, {p_detect}")
    if wy.shape[0] != 4 or wx.shape[0] != 4 or uwy.shape[0] != 4 or uwx.shape[0] != 4:
        raise ValueError(f"wy, wx, uwy, uwx must hold 4 cubic weights each, got "
                         f"{wy.shape[0]}, {wx.shape[0]}, {uwy.shape[0]}, {uwx.shape[0]}")
    if scratch.shape[0] < scratch_rows(nt, reach) or scratch.shape[1] < PW:
        raise ValueError(f"scratch must be at least ({scratch_rows(nt, reach)}, {PW}), "
                         f"got ({scratch.shape[0]}, {scratch.shape[1]})")
    if row_start.shape[0] < H + 1:
        raise ValueError(f"row_start needs {H + 1} entries, got {row_start.shape[0]}")
    if cand_z.shape[0] < cand_index.shape[0]:
        raise ValueError(f"cand_z needs {cand_index.shape[0]} entries, got {cand_z.shape[0]}")
    if row_age.shape[0] != H or col_age.shape[0] != W:
        raise ValueError(f"row_age, col_age must have {H}, {W} entries, "
                         f"got {row_age.shape[0]}, {col_age.shape[0]}")
    if hot_every < 1 or not 0 <= hot_phase < hot_every:
        raise ValueError(f"need hot_every >= 1 and 0 <= hot_phase < hot_every, "
                         f"got {hot_every}, {hot_phase}")
    cdef int isa_code = _isa_code(isa)
    args.frame = &frame[0, 0]
    args.bad = &bad[0, 0]
    args.model = &model[0, 0]
    args.variance = &variance[0, 0]
    args.persist = &persist[0, 0]
    args.ps.p2 = <float>(p_sigma * p_sigma)
    args.ps.pk2 = <float>(p_k * p_k)
    args.ps.hold = <uint8_t>p_hold
    args.ps.detect = <uint8_t>p_detect
    args.hot_score = &hot_score[0, 0]
    args.residual = &residual[0, 0]
    args.row_age = &row_age[0]
    args.col_age = &col_age[0]
    args.H = H
    args.W = W
    args.oy = oy
    args.ox = ox
    args.uy = uy
    args.ux = ux
    for k in range(4):
        args.wy[k] = wy[k]
        args.wx[k] = wx[k]
        args.uwy[k] = uwy[k]
        args.uwx[k] = uwx[k]
    for k in range(nt):
        args.tap[k] = taps[k]
    args.nt = nt
    args.vy = vy
    args.vx = vx
    args.learn_y0 = learn_y0
    args.learn_y1 = learn_y1
    args.learn_x0 = learn_x0
    args.learn_x1 = learn_x1
    hy0, hy1, hx0, hx1 = (0, H, 0, W) if hold_window is None else hold_window
    args.hold_y0 = min(max(<Py_ssize_t>hy0, 0), H)
    args.hold_y1 = min(max(<Py_ssize_t>hy1, 0), H)
    args.hold_x0 = min(max(<Py_ssize_t>hx0, 0), W)
    args.hold_x1 = min(max(<Py_ssize_t>hx1, 0), W)
    args.reach = reach
    args.hot_every = hot_every
    args.hot_phase = hot_phase
    args.clip = <float>clip_sigma
    args.clip_low = <float>clip_low
    args.read_var = <float>read_var
    args.inv_gain = <float>inv_gain
    args.hot_rate = <float>hot_rate
    args.hot_keep = <float>(1.0 - hot_rate)
    args.hot_on = <float>hot_on
    args.hot_off = <float>hot_off
    # variance_gain scales what a frame adds, not what it keeps: the clipped update's bias
    args.variance_rate = <float>(variance_rate * variance_gain)
    args.variance_keep = <float>(1.0 - variance_rate)
    args.variance_clip2 = <float>(variance_clip * variance_clip)
    young_clip, young_gain = (variance_clip, variance_gain) if young_variance is None else young_variance
    args.young_rate = <float>(variance_rate * young_gain)
    args.young_clip2 = <float>(young_clip * young_clip)
    args.variance_floor = <float>variance_floor
    args.k2 = <float>(k_sigma * k_sigma)
    args.g2 = <float>(gate_sigma * gate_sigma)
    args.m2 = <float>(hold_sigma * hold_sigma)
    args.hold_rate = <float>(hold_rate * variance_gain)
    args.hold_keep = <float>(1.0 - hold_rate)
    args.model_rate = <float>model_rate
    args.scratch = &scratch[0, 0]
    args.SW = scratch.shape[1]
    args.cand_index = &cand_index[0] if cand_index.shape[0] else NULL
    args.cand_z = &cand_z[0] if cand_z.shape[0] else NULL
    args.cap = cand_index.shape[0]
    args.row_start = &row_start[0]
    with nogil:
        if isa_code == ISA_AVX2:
            _pass_rows_avx2(&args, &n)
        else:
            _pass_rows_baseline(&args, &n)
    return n


# ---------------------------------------------------------------------------
# Registration sums.  Every grid point's model reads (12 floats) and frame value
# are gathered once into structure-of-arrays columns while the whole-pixel part
# of the shift stays put (it rarely moves between Gauss-Newton iterations); each
# iteration is then one branch-free pass over contiguous columns, 4 points a
# step in double (GCC vector extensions: two SSE2 or one AVX2 op per step, the
# same lanes and the same sum order on every path).  Outliers are masked to zero
# rather than skipped.
# ---------------------------------------------------------------------------
cdef extern from *:
    """
    enum { KREG_F, KREG_A0, KREG_A1, KREG_A2, KREG_A3, KREG_B0, KREG_B1, KREG_B2, KREG_B3,
           KREG_M0, KREG_M1, KREG_T0, KREG_T1, KREG_COLUMNS };
    typedef struct { double axx, axy, ayy, bx, by, rr, mm; Py_ssize_t n; } kestrel_reg_sums;
    typedef double kreg_v4d __attribute__((vector_size(32)));
    typedef long long kreg_v4l __attribute__((vector_size(32)));
    typedef float kreg_v4f __attribute__((vector_size(16)));

    /* macros, not functions: a vector-typed return changes the ABI between paths */
    #define KREG_LOAD(p, v) do { kreg_v4f f_; memcpy(&f_, (p), sizeof f_); \
                                 (v) = __builtin_convertvector(f_, kreg_v4d); } while (0)
    #define KREG_AND(v, m) ((kreg_v4d)((kreg_v4l)(v) & (m)))

    /* cols: npad points (a multiple of 4) in blocks of 4, each block KREG_COLUMNS rows of 4
       floats (the loads of a step are adjacent); padding points hold a NaN frame value so
       that the clip test drops them. */
    static inline __attribute__((always_inline)) void kestrel_reg_sums_body(
            const float *cols, Py_ssize_t npad, double fx, double fy,
            double clip, double read_var, double inv_gain, kestrel_reg_sums *out) {
        const kreg_v4d zero = {0.0, 0.0, 0.0, 0.0};
        kreg_v4d vfx = zero + fx, vfy = zero + fy, vcx = zero + (1.0 - fx), vcy = zero + (1.0 - fy);
        kreg_v4d half = zero + 0.5, vclip2 = zero + clip * clip, vrv = zero + read_var;
        kreg_v4d vig = zero + inv_gain;
        double axx = 0.0, axy = 0.0, ayy = 0.0, bx = 0.0, by = 0.0, rr = 0.0, mm = 0.0;
        kreg_v4l cnt = {0, 0, 0, 0};
        Py_ssize_t i;
        for (i = 0; i < npad; i += 4) {
            const float *c = cols + i * KREG_COLUMNS;
            kreg_v4d a0, a1, a2, a3, b0, b1, b2, b3, fv, m0v, m1v, t0v, t1v;
            KREG_LOAD(c + 4 * KREG_A0, a0); KREG_LOAD(c + 4 * KREG_A1, a1);
            KREG_LOAD(c + 4 * KREG_A2, a2); KREG_LOAD(c + 4 * KREG_A3, a3);
            KREG_LOAD(c + 4 * KREG_B0, b0); KREG_LOAD(c + 4 * KREG_B1, b1);
            KREG_LOAD(c + 4 * KREG_B2, b2); KREG_LOAD(c + 4 * KREG_B3, b3);
            KREG_LOAD(c + 4 * KREG_F, fv);
            KREG_LOAD(c + 4 * KREG_M0, m0v); KREG_LOAD(c + 4 * KREG_M1, m1v);
            KREG_LOAD(c + 4 * KREG_T0, t0v); KREG_LOAD(c + 4 * KREG_T1, t1v);
            kreg_v4d h00 = vcx * a1 + vfx * a2, h10 = vcx * b1 + vfx * b2;
            kreg_v4d m = vcy * h00 + vfy * h10;
            kreg_v4d r = fv - m;
            kreg_v4d lim = vclip2 * (vrv + KREG_AND(m, m > zero) * vig);
            kreg_v4l keep = r * r <= lim;
            kreg_v4d h0m = vcx * a0 + vfx * a1, h0p = vcx * a2 + vfx * a3;
            kreg_v4d h1m = vcx * b0 + vfx * b1, h1p = vcx * b2 + vfx * b3;
            kreg_v4d hm0 = vcx * m0v + vfx * m1v, h20 = vcx * t0v + vfx * t1v;
            kreg_v4d gx = KREG_AND(half * ((vcy * h0p + vfy * h1p) - (vcy * h0m + vfy * h1m)), keep);
            kreg_v4d gy = KREG_AND(half * ((vcy * h10 + vfy * h20) - (vcy * hm0 + vfy * h00)), keep);
            r = KREG_AND(r, keep);
            kreg_v4d pxx = gx * gx, pxy = gx * gy, pyy = gy * gy, pbx = gx * r, pby = gy * r;
            kreg_v4d prr = r * r, pmm = KREG_AND(m, keep);
            /* the sums run point by point in raster order, as a plain loop would add them: the
               seven chains are independent, so this costs little, and the result does not
               depend on the vector width (a masked point adds +0.0: no change) */
            for (int l = 0; l < 4; l++) {
                axx += pxx[l];
                axy += pxy[l];
                ayy += pyy[l];
                bx += pbx[l];
                by += pby[l];
                rr += prr[l];
                mm += pmm[l];
            }
            cnt -= keep;
        }
        out->axx = axx;
        out->axy = axy;
        out->ayy = ayy;
        out->bx = bx;
        out->by = by;
        out->rr = rr;
        out->mm = mm;
        out->n = (Py_ssize_t)((cnt[0] + cnt[1]) + (cnt[2] + cnt[3]));
    }

    static void kestrel_reg_sums_baseline(const float *cols, Py_ssize_t npad,
            double fx, double fy, double clip, double read_var, double inv_gain,
            kestrel_reg_sums *out) {
        kestrel_reg_sums_body(cols, npad, fx, fy, clip, read_var, inv_gain, out);
    }

    static KESTREL_TARGET_AVX2 void kestrel_reg_sums_avx2(const float *cols,
            Py_ssize_t npad, double fx, double fy, double clip, double read_var,
            double inv_gain, kestrel_reg_sums *out) {
        kestrel_reg_sums_body(cols, npad, fx, fy, clip, read_var, inv_gain, out);
    }
    """
    enum:
        KREG_F, KREG_A0, KREG_A1, KREG_A2, KREG_A3, KREG_B0, KREG_B1, KREG_B2, KREG_B3
        KREG_M0, KREG_M1, KREG_T0, KREG_T1, KREG_COLUMNS
    ctypedef struct kestrel_reg_sums:
        double axx, axy, ayy, bx, by, rr, mm
        Py_ssize_t n
    void _reg_sums_baseline "kestrel_reg_sums_baseline" (
        const float* cols, Py_ssize_t npad, double fx, double fy, double clip,
        double read_var, double inv_gain, kestrel_reg_sums* out) noexcept nogil
    void _reg_sums_avx2 "kestrel_reg_sums_avx2" (
        const float* cols, Py_ssize_t npad, double fx, double fy, double clip,
        double read_var, double inv_gain, kestrel_reg_sums* out) noexcept nogil


cdef inline Py_ssize_t _grid_count(Py_ssize_t n, Py_ssize_t stride, Py_ssize_t margin) noexcept nogil:
    return (n - 2 * margin + stride - 1) // stride if n > 2 * margin else 0


def register_scratch_size(Py_ssize_t H, Py_ssize_t W, Py_ssize_t stride, Py_ssize_t margin):
    """float32 entries register_shift needs as scratch for an H x W frame."""
    if stride < 1 or margin < 0:
        raise ValueError(f"need stride >= 1 and margin >= 0, got {stride}, {margin}")
    cdef Py_ssize_t cap = (_grid_count(H, stride, margin) * _grid_count(W, stride, margin) + 7) & ~3
    return KREG_COLUMNS * cap


cdef Py_ssize_t _gather_grid(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                             const float[:, ::1] model, Py_ssize_t stride, Py_ssize_t margin,
                             Py_ssize_t ny, Py_ssize_t nx, Py_ssize_t iy, Py_ssize_t ix,
                             float* cols) noexcept nogil:
    """The usable grid points (good, every read inside the model) for the whole-pixel shift
    (iy, ix), in raster order, into the columns; padded with NaN frame values to a multiple
    of 4.  Returns the padded count."""
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1], gy_, gx_, y, x, y0, x0, n = 0, blk
    cdef const float* rm
    cdef const float* r0
    cdef const float* r1
    cdef const float* r2
    cdef Py_ssize_t k
    for gy_ in range(ny):
        y = margin + gy_ * stride
        y0 = y + iy
        if y0 < 1 or y0 + 2 > H - 1:
            continue
        rm = &model[y0 - 1, 0]
        r0 = &model[y0, 0]
        r1 = &model[y0 + 1, 0]
        r2 = &model[y0 + 2, 0]
        for gx_ in range(nx):
            x = margin + gx_ * stride
            x0 = x + ix
            if x0 < 1 or x0 + 2 > W - 1 or bad[y, x]:
                continue
            blk = (n >> 2) * (4 * KREG_COLUMNS) + (n & 3)
            cols[blk + 4 * KREG_F] = <float>frame[y, x]
            cols[blk + 4 * KREG_A0] = r0[x0 - 1]
            cols[blk + 4 * KREG_A1] = r0[x0]
            cols[blk + 4 * KREG_A2] = r0[x0 + 1]
            cols[blk + 4 * KREG_A3] = r0[x0 + 2]
            cols[blk + 4 * KREG_B0] = r1[x0 - 1]
            cols[blk + 4 * KREG_B1] = r1[x0]
            cols[blk + 4 * KREG_B2] = r1[x0 + 1]
            cols[blk + 4 * KREG_B3] = r1[x0 + 2]
            cols[blk + 4 * KREG_M0] = rm[x0]
            cols[blk + 4 * KREG_M1] = rm[x0 + 1]
            cols[blk + 4 * KREG_T0] = r2[x0]
            cols[blk + 4 * KREG_T1] = r2[x0 + 1]
            n += 1
    while n & 3:
        blk = (n >> 2) * (4 * KREG_COLUMNS) + (n & 3)
        cols[blk + 4 * KREG_F] = <float>NAN
        for k in range(KREG_A0, KREG_COLUMNS):
            cols[blk + 4 * k] = 0.0
        n += 1
    return n


cdef inline Py_ssize_t _block_count(Py_ssize_t n, Py_ssize_t block, Py_ssize_t margin) noexcept nogil:
    """Whole blocks of side block along n pixels, margin away from either end."""
    return (n - 2 * margin) // block if n > 2 * margin else 0


cdef void _frame_blocks(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad, Py_ssize_t block,
                        Py_ssize_t margin, Py_ssize_t nby, Py_ssize_t nbx, float* fmean,
                        uint32_t* acc) noexcept nogil:
    """Each block's mean over its good pixels into fmean (NaN where fewer than half are
    good); acc holds 2 W integers (column sums and good counts of one row of blocks: whole
    numbers, so exact in any order)."""
    cdef Py_ssize_t W = frame.shape[1], by, bx, r, x, x_end = margin + nbx * block, Y
    cdef uint32_t* cnt = acc + W
    cdef uint32_t g
    cdef uint64_t total, good
    for by in range(nby):
        Y = margin + by * block
        for x in range(margin, x_end):
            acc[x] = 0
            cnt[x] = 0
        for r in range(block):
            for x in range(margin, x_end):
                # arithmetic, not a branch: the loop vectorises
                g = bad[Y + r, x] == 0
                acc[x] += g * frame[Y + r, x]
                cnt[x] += g
        for bx in range(nbx):
            total = 0
            good = 0
            for x in range(margin + bx * block, margin + (bx + 1) * block):
                total += acc[x]
                good += cnt[x]
            fmean[by * nbx + bx] = (<float>(<double>total / <double>good)
                                    if 2 * good >= <uint64_t>(block * block) else <float>NAN)


cdef Py_ssize_t _gather_blocks(const float[:, ::1] model, const float* fmean, Py_ssize_t block,
                               Py_ssize_t margin, Py_ssize_t nby, Py_ssize_t nbx,
                               Py_ssize_t iy, Py_ssize_t ix, float* cols, double* acc) noexcept nogil:
    """_gather_grid's columns for the blocks: a block's frame mean, and the means of the model
    over the block moved by the whole-pixel shift (iy, ix) and by the 12 one-pixel offsets
    around it that the bilinear read and its central differences use.  Since every pixel of a
    block shares the shift's fraction, those 12 means give the bilinear read of the block's
    mean exactly: the Gauss-Newton sums are the grid's, one point per block.  A block is used
    where its frame mean is known and every read lies inside the model.  acc holds 8 W + 4
    doubles: the model's column sums over a row of blocks, at row offsets 0, -1, 1 and 2, and
    their running sums along the row, whose differences are the window sums (a sum of
    block terms per window would be a chain of dependent adds, 12 per block)."""
    cdef Py_ssize_t H = model.shape[0], W = model.shape[1], by, bx, r, x, y0, x0, n = 0, blk, k
    cdef Py_ssize_t lo, hi, u
    cdef double* c0 = acc
    cdef double* cm = acc + W
    cdef double* c1 = acc + 2 * W
    cdef double* c2 = acc + 3 * W
    cdef double* p0 = acc + 4 * W
    cdef double* pm = p0 + (W + 1)
    cdef double* p1 = pm + (W + 1)
    cdef double* p2 = p1 + (W + 1)
    cdef const float* row
    cdef double inv = 1.0 / <double>(block * block)
    for by in range(nby):
        y0 = margin + by * block + iy
        if y0 < 1 or y0 + block + 1 > H - 1:
            continue
        lo = max(margin + ix - 1, 0)
        hi = min(margin + nbx * block + ix + 2, W)
        for x in range(lo, hi):
            c0[x] = 0.0
        for r in range(block):
            row = &model[y0 + r, 0]
            for x in range(lo, hi):
                c0[x] += row[x]
        for x in range(lo, hi):
            cm[x] = c0[x] + model[y0 - 1, x] - model[y0 + block - 1, x]
            c1[x] = c0[x] - model[y0, x] + model[y0 + block, x]
            c2[x] = c1[x] - model[y0 + 1, x] + model[y0 + block + 1, x]
        # p[u] = sum of c[lo .. lo + u - 1], four independent chains
        p0[0] = pm[0] = p1[0] = p2[0] = 0.0
        for x in range(lo, hi):
            u = x - lo
            p0[u + 1] = p0[u] + c0[x]
            pm[u + 1] = pm[u] + cm[x]
            p1[u + 1] = p1[u] + c1[x]
            p2[u + 1] = p2[u] + c2[x]
        for bx in range(nbx):
            x0 = margin + bx * block + ix
            if x0 < 1 or x0 + block + 1 > W - 1 or not isfinite(fmean[by * nbx + bx]):
                continue
            u = x0 - lo  # the window over columns x0 + d .. x0 + d + block - 1
            blk = (n >> 2) * (4 * KREG_COLUMNS) + (n & 3)
            cols[blk + 4 * KREG_F] = fmean[by * nbx + bx]
            cols[blk + 4 * KREG_A0] = <float>((p0[u - 1 + block] - p0[u - 1]) * inv)
            cols[blk + 4 * KREG_A1] = <float>((p0[u + block] - p0[u]) * inv)
            cols[blk + 4 * KREG_A2] = <float>((p0[u + 1 + block] - p0[u + 1]) * inv)
            cols[blk + 4 * KREG_A3] = <float>((p0[u + 2 + block] - p0[u + 2]) * inv)
            cols[blk + 4 * KREG_B0] = <float>((p1[u - 1 + block] - p1[u - 1]) * inv)
            cols[blk + 4 * KREG_B1] = <float>((p1[u + block] - p1[u]) * inv)
            cols[blk + 4 * KREG_B2] = <float>((p1[u + 1 + block] - p1[u + 1]) * inv)
            cols[blk + 4 * KREG_B3] = <float>((p1[u + 2 + block] - p1[u + 2]) * inv)
            cols[blk + 4 * KREG_M0] = <float>((pm[u + block] - pm[u]) * inv)
            cols[blk + 4 * KREG_M1] = <float>((pm[u + 1 + block] - pm[u + 1]) * inv)
            cols[blk + 4 * KREG_T0] = <float>((p2[u + block] - p2[u]) * inv)
            cols[blk + 4 * KREG_T1] = <float>((p2[u + 1 + block] - p2[u + 1]) * inv)
            n += 1
    while n & 3:
        blk = (n >> 2) * (4 * KREG_COLUMNS) + (n & 3)
        cols[blk + 4 * KREG_F] = <float>NAN
        for k in range(KREG_A0, KREG_COLUMNS):
            cols[blk + 4 * k] = 0.0
        n += 1
    return n


cdef void _gauss_newton(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                        const float[:, ::1] model, double read_var, double inv_gain,
                        double dx, double dy, Py_ssize_t stride, Py_ssize_t margin,
                        double clip_sigma, int iterations, Py_ssize_t block, const float* fmean,
                        double* acc, float* cols, int isa_code, double* res) noexcept nogil:
    """register_shift's and register_blocks' iterations: res <- (dx, dy, n, det/n^2, mean
    squared residual, mean model level, axx/n, axy/n, ayy/n) of the last sums taken.  block 0
    gathers the pixel grid, else the blocks (fmean, acc as _gather_blocks takes them)."""
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1], iy, ix, gy = 0, gx = 0
    cdef Py_ssize_t n = 0, npad = 0, ny, nx
    cdef double det = 0.0, ddx, ddy, clip, fy, fx
    cdef kestrel_reg_sums s
    cdef bint gathered = False
    cdef int it
    s.axx = s.axy = s.ayy = s.bx = s.by = s.rr = s.mm = 0.0
    s.n = 0
    if block:
        ny = _block_count(H, block, margin)
        nx = _block_count(W, block, margin)
    else:
        ny = _grid_count(H, stride, margin)
        nx = _grid_count(W, stride, margin)
    for it in range(iterations):
        # coarse to fine: a far first guess leaves large residuals on every
        # edge, so the outlier cut starts wide and halves each iteration
        clip = clip_sigma * (1 << (iterations - 1 - it))
        iy = <Py_ssize_t>floor(dy)
        ix = <Py_ssize_t>floor(dx)
        fy = dy - iy
        fx = dx - ix
        if not gathered or iy != gy or ix != gx:
            if block:
                npad = _gather_blocks(model, fmean, block, margin, ny, nx, iy, ix, cols, acc)
            else:
                npad = _gather_grid(frame, bad, model, stride, margin, ny, nx, iy, ix, cols)
            gathered = True
            gy = iy
            gx = ix
        if isa_code == ISA_AVX2:
            _reg_sums_avx2(cols, npad, fx, fy, clip, read_var, inv_gain, &s)
        else:
            _reg_sums_baseline(cols, npad, fx, fy, clip, read_var, inv_gain, &s)
        n = s.n
        det = s.axx * s.ayy - s.axy * s.axy
        if n == 0 or det <= 1e-12 * (s.axx + s.ayy) * (s.axx + s.ayy) or det <= 0.0:
            det = 0.0
            break
        ddx = (s.ayy * s.bx - s.axy * s.by) / det
        ddy = (s.axx * s.by - s.axy * s.bx) / det
        # a step beyond 2 px is not a linearisation we trust
        ddx = min(max(ddx, -2.0), 2.0)
        ddy = min(max(ddy, -2.0), 2.0)
        dx += ddx
        dy += ddy
    res[0] = dx
    res[1] = dy
    res[2] = n
    res[3] = det / (<double>n * n) if n > 0 else 0.0
    res[4] = s.rr / n if n > 0 else 0.0
    res[5] = s.mm / n if n > 0 else 0.0
    res[6] = s.axx / n if n > 0 else 0.0
    res[7] = s.axy / n if n > 0 else 0.0
    res[8] = s.ayy / n if n > 0 else 0.0


REGISTRATION_OUT = ("dx", "dy", "samples", "det", "mean_square_residual", "mean_level",
                    "axx", "axy", "ayy")


cdef float[::1] _registration_checks(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                                     const float[:, ::1] model, double[::1] out, Py_ssize_t least,
                                     float[::1] scratch, Py_ssize_t size):
    """register_shift's and register_blocks' argument checks; the scratch to use (allocated
    here if None)."""
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1]
    _check_plane("bad", bad.shape[0], bad.shape[1], H, W)
    _check_plane("model", model.shape[0], model.shape[1], H, W)
    if out.shape[0] < least:
        raise ValueError(f"out needs {least} entries, got {out.shape[0]}")
    if scratch is None:
        return np.empty(size, np.float32)
    if scratch.shape[0] < size:
        raise ValueError(f"scratch needs {size} entries, got {scratch.shape[0]}")
    return scratch


cdef void _copy_out(const double* res, double[::1] out) noexcept:
    cdef Py_ssize_t k
    for k in range(min(out.shape[0], 9)):
        out[k] = res[k]


def register_shift(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                   const float[:, ::1] model, double read_var, double inv_gain,
                   double dx0, double dy0, Py_ssize_t stride, Py_ssize_t margin,
                   double clip_sigma, int iterations, double[::1] out,
                   float[::1] scratch=None, str isa="best"):
    """Shift (dx, dy) with frame(p) ~ model(p + d), starting from (dx0, dy0).

    Gauss-Newton on the sparse grid (every stride-th row and column, margin
    away from the edges).  The model is read bilinearly at p + d, and its
    gradient as central differences of bilinear reads one pixel either side;
    every grid point shares the fraction of d, so the weights are worked out
    once per iteration.  A point is used where all those reads lie inside
    the model, it is good in the bad mask, and its residual is within
    clip_sigma noise sigmas in the last iteration (twice that in the one
    before...): hot pixels gone unnoticed, targets and cosmic rays carry no
    weight, which is what makes the estimate robust.
    out <- (dx, dy, used samples, det of the normal matrix / samples^2), and
    where out is longer, the rest of REGISTRATION_OUT from the last iteration's
    sums: mean squared residual and mean model level over the samples kept,
    and the normal matrix / samples (up to 9 entries).
    scratch (register_scratch_size entries; allocated here if None) holds the
    gathered grid; isa picks the path as detect_pass's does (same bits).
    """
    cdef double res[9]
    scratch = _registration_checks(frame, bad, model, out, 4, scratch, register_scratch_size(
        frame.shape[0], frame.shape[1], stride, margin))
    cdef int isa_code = _isa_code(isa)
    cdef float* cols = &scratch[0]
    with nogil:
        _gauss_newton(frame, bad, model, read_var, inv_gain, dx0, dy0, stride, margin,
                      clip_sigma, iterations, 0, NULL, NULL, cols, isa_code, res)
    _copy_out(res, out)


def register_block_scratch_size(Py_ssize_t H, Py_ssize_t W, Py_ssize_t block, Py_ssize_t margin):
    """float32 entries register_blocks needs as scratch for an H x W frame."""
    if block < 2 or margin < 0:
        raise ValueError(f"need block >= 2 and margin >= 0, got {block}, {margin}")
    cdef Py_ssize_t cap = (_block_count(H, block, margin) * _block_count(W, block, margin) + 7) & ~3
    # the columns, the frame's block means, and 8 W + 4 doubles (16 W + 8 floats) of column
    # sums and their running sums, 8-byte aligned
    return KREG_COLUMNS * cap + cap + 16 * W + 10


def register_blocks(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                    const float[:, ::1] model, double read_var, double inv_gain,
                    double dx0, double dy0, Py_ssize_t block, Py_ssize_t margin,
                    double clip_sigma, int iterations, double[::1] out,
                    float[::1] scratch=None, str isa="best"):
    """register_shift's Gauss-Newton on block means: frame block B ~ the model's mean over
    B + d, one sample per block x block block (whole blocks from margin on).

    The mean of a bilinear read over a block is the bilinear read of shifted block means, so
    this is the same estimate with each block as one point.  Why: on terrain of low contrast
    the pixel grid's model gradient is mostly noise, and Gauss-Newton with a noisy gradient
    shrinks every step towards its start (errors in variables); a block's mean gradient keeps
    the terrain's slow slopes and has block^2 times less noise variance.  Frame block means
    take the good pixels only (a block with fewer than half good is not used); the model's
    take every pixel.  read_var and inv_gain are a pixel's: a block mean's noise is theirs
    over block^2.  out <- the 9 REGISTRATION_OUT values, as register_shift's."""
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1], ny, nx, cap
    cdef double res[9]
    scratch = _registration_checks(frame, bad, model, out, 9, scratch,
                                   register_block_scratch_size(H, W, block, margin))
    cdef int isa_code = _isa_code(isa)
    ny = _block_count(H, block, margin)
    nx = _block_count(W, block, margin)
    cap = (ny * nx + 7) & ~3
    cdef float* cols = &scratch[0]
    cdef float* fmean = cols + KREG_COLUMNS * cap
    # 8-byte aligned doubles inside the float scratch
    cdef uintptr_t at = <uintptr_t>(fmean + cap)
    cdef double* acc = <double*>((at + 7) & ~(<uintptr_t>7))
    cdef double b2 = <double>(block * block)
    with nogil:
        _frame_blocks(frame, bad, block, margin, ny, nx, fmean, <uint32_t*>acc)
        _gauss_newton(frame, bad, model, read_var / b2, inv_gain / b2, dx0, dy0, 0, margin,
                      clip_sigma, iterations, block, fmean, acc, cols, isa_code, res)
    _copy_out(res, out)


def shift_cells(float[:, ::1] array, Py_ssize_t ky, Py_ssize_t kx):
    """array(u) <- array(u + k) in place, integer k with |ky| < H and |kx| < W (exact);
    vacated cells repeat the nearest kept edge.  Row by row with memmove, in the order
    that reads every row before it is overwritten: no copy of the whole state."""
    cdef Py_ssize_t H = array.shape[0], W = array.shape[1], i, y, src, n, x, x0, x1, edge
    cdef float* row
    if not (-H < ky < H and -W < kx < W):
        raise ValueError(f"shift ({ky}, {kx}) must be smaller than the array {H}x{W}")
    n = W - (kx if kx > 0 else -kx)
    with nogil:
        for i in range(H - (ky if ky > 0 else -ky)):
            y = i if ky >= 0 else H - 1 - i
            src = y + ky
            memmove(&array[y, 0] + (0 if kx >= 0 else -kx), &array[src, 0] + (kx if kx > 0 else 0),
                    n * sizeof(float))
        if kx != 0:
            if kx > 0:
                x0 = W - kx
                x1 = W
                edge = W - kx - 1
            else:
                x0 = 0
                x1 = -kx
                edge = -kx
            for y in range(H):
                row = &array[y, 0]
                for x in range(x0, x1):
                    row[x] = row[edge]
        if ky > 0:
            for y in range(H - ky, H):
                memcpy(&array[y, 0], &array[H - ky - 1, 0], W * sizeof(float))
        elif ky < 0:
            for y in range(-ky):
                memcpy(&array[y, 0], &array[-ky, 0], W * sizeof(float))


cdef inline void _column_in_turn(const float** rows, f32_out out, Py_ssize_t W,
                                 const float* tap, Py_ssize_t nt) noexcept nogil:
    """out[x] = 0 + tap[0] rows[0][x] + tap[1] rows[1][x] + ..., in that order."""
    cdef Py_ssize_t x, k
    cdef float t = tap[0], zero = 0.0
    cdef f32_in src = rows[0]
    for x in range(W):
        out[x] = zero + t * src[x]
    for k in range(1, nt):
        t = tap[k]
        src = rows[k]
        for x in range(W):
            out[x] = out[x] + t * src[x]


cdef inline void _taps_in_turn(f32_in src, f32_out out, Py_ssize_t W,
                               const float* tap, Py_ssize_t nt) noexcept nogil:
    """out[x] = 0 + tap[0] src[x] + tap[1] src[x + 1] + ..., summed in that order
    (separable_filter's: its sums start from 0, so -0.0 becomes +0.0)."""
    cdef Py_ssize_t x, k
    cdef float t = tap[0], zero = 0.0
    for x in range(W):
        out[x] = zero + t * src[x]
    for k in range(1, nt):
        t = tap[k]
        for x in range(W):
            out[x] = out[x] + t * src[x + k]


cdef inline float _clamped_at(const float* g, Py_ssize_t rows, Py_ssize_t W, Py_ssize_t y,
                              Py_ssize_t x) noexcept nogil:
    return g[min(max(y, 0), rows - 1) * W + min(max(x, 0), W - 1)]


def lagged_band(const float[:, ::1] model, const float[:, ::1] lagged,
                const float[:, ::1] variance, const uint16_t[::1] row_age,
                const uint16_t[::1] col_age, Py_ssize_t a0, Py_ssize_t a1, Py_ssize_t y0,
                Py_ssize_t y1, Py_ssize_t lag, const float[::1] taps, float noise_factor,
                float sigma2, Py_ssize_t radius, float[:, ::1] g, float[:, ::1] h,
                float[::1] pad_row, int32_t[::1] ys, int32_t[::1] xs):
    """lagged_sources' scan of one band (flight/detection.py; lagged_band there is its twin).

    g[i] = (model - lagged)[a0 + i] filtered by taps along x, then along y, for
    0 <= i < a1 - a0, edges repeated (rows beyond a0 .. a1 - 1 are those rows:
    np.pad(mode='edge') of that slice), every sum in separable_filter's order;
    h holds the x-filtered rows.  Then the cells of rows y0 .. y1 - 1 with
    row_age > lag, col_age > lag, G > 0, G^2 > sigma2 * (noise_factor * V),
    G at least each of its 8 neighbours and above every cell of the ring
    `radius` px out (g's edges repeated), in raster order: their row in g into
    ys, their column into xs.  Returns how many (at most len(ys))."""
    cdef Py_ssize_t H = model.shape[0], W = model.shape[1], nt = taps.shape[0], r = nt // 2
    cdef Py_ssize_t rows = a1 - a0, i, k, x, y, dy, dx, n = 0, cap = ys.shape[0]
    cdef float gv
    cdef float* pad
    cdef const float* gp
    cdef const float* hp
    cdef const float* vp
    cdef const float* tap = &taps[0]
    cdef const float* rows_of_h[MAX_TAPS]
    cdef bint peak
    if not (0 <= a0 <= y0 <= y1 <= a1 <= H) or nt % 2 == 0 or nt > MAX_TAPS or radius < 1:
        raise ValueError(f"need 0 <= a0 <= y0 <= y1 <= a1 <= {H}, odd taps (at most {MAX_TAPS}) "
                         f"and radius >= 1, got {a0}, {y0}, {y1}, {a1}, {nt} taps, {radius}")
    for name, a in (("lagged", lagged), ("variance", variance)):
        _check_plane(name, a.shape[0], a.shape[1], H, W)
    if g.shape[0] < rows or h.shape[0] < rows or g.shape[1] != W or h.shape[1] != W:
        raise ValueError(f"g and h need {rows} rows of {W}, got {g.shape[0]}x{g.shape[1]}, "
                         f"{h.shape[0]}x{h.shape[1]}")
    if pad_row.shape[0] < W + 2 * r or xs.shape[0] < cap:
        raise ValueError(f"pad_row needs {W + 2 * r} entries and xs as many as ys")
    if row_age.shape[0] != H or col_age.shape[0] != W:
        raise ValueError(f"row_age, col_age must have {H}, {W} entries")
    if rows == 0:
        return 0
    pad = &pad_row[0]
    gp = &g[0, 0]
    with nogil:
        for i in range(rows):
            y = a0 + i
            for x in range(W):
                pad[r + x] = model[y, x] - lagged[y, x]
            for x in range(r):
                pad[x] = pad[r]
                pad[r + W + x] = pad[r + W - 1]
            _taps_in_turn(pad, &h[i, 0], W, tap, nt)
        hp = &h[0, 0]
        for i in range(rows):
            for k in range(nt):  # the column's rows, edges repeated
                rows_of_h[k] = hp + min(max(i - r + k, 0), rows - 1) * W
            _column_in_turn(rows_of_h, &g[i, 0], W, tap, nt)
        for y in range(y0, y1):
            if row_age[y] <= lag:
                continue
            i = y - a0
            vp = &variance[y, 0]
            for x in range(W):
                gv = gp[i * W + x]
                # one branch, seldom taken, rather than three, one of them a coin toss (G > 0)
                if not ((gv > 0.0) & (gv * gv > sigma2 * (noise_factor * vp[x])) & (col_age[x] > lag)):
                    continue
                peak = True
                for dy in range(-radius, radius + 1):
                    for dx in range(-radius, radius + 1):
                        if dy == 0 and dx == 0:
                            continue
                        if dy == -radius or dy == radius or dx == -radius or dx == radius:
                            peak = gv > _clamped_at(gp, rows, W, i + dy, x + dx)
                        elif -1 <= dy <= 1 and -1 <= dx <= 1:
                            peak = gv >= _clamped_at(gp, rows, W, i + dy, x + dx)
                        if not peak:
                            break
                    if not peak:
                        break
                if peak:
                    if n < cap:
                        ys[n] = <int32_t>i
                        xs[n] = <int32_t>x
                    n += 1
    return n


cdef inline double _repaired_at(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                                Py_ssize_t y, Py_ssize_t x, double fallback,
                                Py_ssize_t* missing) noexcept nogil:
    """frame[y, x], or for a bad pixel the median of its good 3x3 neighbours (fallback, and
    one more missing, if it has none): flight.detection.fill_bad's repair, one pixel."""
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1], yy, xx, n = 0, i, j
    cdef uint16_t vals[9]
    cdef uint16_t v
    if not bad[y, x]:
        return frame[y, x]
    for yy in range(max(y - 1, 0), min(y + 2, H)):
        for xx in range(max(x - 1, 0), min(x + 2, W)):
            if not bad[yy, xx]:
                v = frame[yy, xx]
                i = n
                while i > 0 and vals[i - 1] > v:  # insertion: at most 8 values
                    vals[i] = vals[i - 1]
                    i -= 1
                vals[i] = v
                n += 1
    if n == 0:
        missing[0] += 1
        return fallback
    j = n // 2
    if n & 1:
        return vals[j]
    return (<double>vals[j - 1] + <double>vals[j]) / 2.0


def fill_new_cells(const uint16_t[:, ::1] frame, const uint8_t[:, ::1] bad,
                   float[:, ::1] model, float[:, ::1] variance, Py_ssize_t y0, Py_ssize_t y1,
                   Py_ssize_t x0, Py_ssize_t x1, double fy, double fx, double read_var,
                   double gain, double white_gain, double fallback):
    """Cells [y0, y1) x [x0, x1) that re-anchoring brought into view start from this frame:
    model <- the frame, bad pixels repaired, read bilinearly at (y - fy, x - fx) (clamped
    to the frame), in double, then float32; variance <- max(variance, white) with the
    white-noise variance white = white_gain (read_var + max(model, 0) / gain), in float32
    as flight.detection.initial_variance computes it.  A bad pixel with no good neighbour
    takes `fallback`; returns how many samples needed it (the caller passes the frame
    median and calls again if any did, as the twin would)."""
    cdef Py_ssize_t H = frame.shape[0], W = frame.shape[1], y, x, iy, ix
    cdef Py_ssize_t missing = 0
    cdef double sy, sx, ty, tx, a, b, c, d, val
    cdef float m, rv = <float>read_var, g = <float>gain, wg = <float>white_gain, wv
    _check_plane("bad", bad.shape[0], bad.shape[1], H, W)
    _check_plane("model", model.shape[0], model.shape[1], H, W)
    _check_plane("variance", variance.shape[0], variance.shape[1], H, W)
    if H < 2 or W < 2:
        raise ValueError(f"frame must be at least 2x2, got {H}x{W}")
    if not (0 <= y0 <= y1 <= H and 0 <= x0 <= x1 <= W):
        raise ValueError(f"cells [{y0}, {y1}) x [{x0}, {x1}) must lie in the frame {H}x{W}")
    with nogil:
        for y in range(y0, y1):
            sy = min(max(<double>y - fy, 0.0), H - 1.0)
            iy = min(<Py_ssize_t>floor(sy), H - 2)
            ty = sy - iy
            for x in range(x0, x1):
                sx = min(max(<double>x - fx, 0.0), W - 1.0)
                ix = min(<Py_ssize_t>floor(sx), W - 2)
                tx = sx - ix
                # each sample through float32, as the twin's repaired float32 window holds it
                a = <float>_repaired_at(frame, bad, iy, ix, fallback, &missing)
                b = <float>_repaired_at(frame, bad, iy, ix + 1, fallback, &missing)
                c = <float>_repaired_at(frame, bad, iy + 1, ix, fallback, &missing)
                d = <float>_repaired_at(frame, bad, iy + 1, ix + 1, fallback, &missing)
                val = ((1.0 - ty) * ((1.0 - tx) * a + tx * b)
                       + ty * ((1.0 - tx) * c + tx * d))
                m = <float>val
                model[y, x] = m
                wv = rv + _maxf(m, 0.0) / g
                wv = (<float>2.0 * wv) * wg
                if wv > variance[y, x]:
                    variance[y, x] = wv
    return missing


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
    """Labelled candidates that are the local maximum of Z among the labelled candidates of
    a (2*radius+1)^2 window (ties to the first in raster order), in raster order.  Returns
    the count.  Bad pixels (label 0) do not compete: a target centred on one is reported at
    its best good neighbour rather than lost.

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
                    if labels[j] != 0 and (o > z or (o == z and j < i)):
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


cdef inline float _filtered_row_at(const float[:, ::1] residual, const float* tap, Py_ssize_t r,
                                   Py_ssize_t row, Py_ssize_t x) noexcept nogil:
    """The row pass of the matched filter at (row, x): 0 for a row outside."""
    cdef Py_ssize_t k
    cdef float h
    if row < 0 or row >= residual.shape[0]:
        return 0.0
    h = tap[r] * _residual_at(residual, row, x)
    for k in range(1, r + 1):
        h = h + tap[r + k] * (_residual_at(residual, row, x - k) + _residual_at(residual, row, x + k))
    return h


cdef float _filtered_at(const float[:, ::1] residual, const float* tap, Py_ssize_t nt,
                        Py_ssize_t y, Py_ssize_t x) noexcept nogil:
    """The matched-filter output at (y, x), summed in detect_pass's order (same bits)."""
    cdef Py_ssize_t r = nt // 2, k
    cdef float out = tap[r] * _filtered_row_at(residual, tap, r, y, x)
    for k in range(1, r + 1):
        out = out + tap[r + k] * (_filtered_row_at(residual, tap, r, y - k, x)
                                  + _filtered_row_at(residual, tap, r, y + k, x))
    return out


cdef bint _solve4(double[4][5] a, double* step) noexcept nogil:
    """Gaussian elimination with partial pivoting of the 4x4 system a | a[:, 4]; False if singular."""
    cdef int i, j, k, best
    cdef double t, f
    for k in range(4):
        best = k
        for i in range(k + 1, 4):
            if fabs(a[i][k]) > fabs(a[best][k]):
                best = i
        if not fabs(a[best][k]) > 1e-300:
            return False
        if best != k:
            for j in range(5):
                t = a[k][j]
                a[k][j] = a[best][j]
                a[best][j] = t
        for i in range(k + 1, 4):
            f = a[i][k] / a[k][k]
            for j in range(k, 5):
                a[i][j] -= f * a[k][j]
    for k in range(3, -1, -1):
        t = a[k][4]
        for j in range(k + 1, 4):
            t -= a[k][j] * step[j]
        step[k] = t / a[k][k]
    return True


cdef inline void _gaussian_axis(Py_ssize_t a0, Py_ssize_t a1, double centre, double sigma,
                                double* out) noexcept nogil:
    """out[a - a0] = exp(-(a - centre)^2 / (2 sigma^2)) for a in a0 .. a1 - 1."""
    cdef Py_ssize_t a
    cdef double d
    for a in range(a0, a1):
        d = a - centre
        out[a - a0] = exp(-d * d / (2.0 * sigma * sigma))


cdef bint _gaussian_fit(const float[:, ::1] residual, const uint8_t[:, ::1] bad,
                        Py_ssize_t py, Py_ssize_t px, Py_ssize_t r, double sigma, int iterations,
                        double* xc, double* yc, double* peak) noexcept nogil:
    """Least-squares fit of a circular Gaussian (position, amplitude, width) to the residual's
    good pixels within r (Chebyshev) of the peak (py, px), from (xc, yc) and width sigma, by
    Gauss-Newton (at most `iterations` steps, fewer once a step moves the position by less than
    FIT_CONVERGED_PX); each step moves the position at most FIT_STEP_PX and the width at most
    FIT_WIDTH_STEP of itself.  Writes the position and returns True if the fit ends with a
    positive amplitude, a width between FIT_WIDTH_LOW and FIT_WIDTH_HIGH and within FIT_REACH_PX of the start
    in each axis, with the fitted amplitude in peak; else leaves (xc, yc) as they were.  The numpy twin is
    detection_ref.gaussian_fit."""
    cdef Py_ssize_t H = residual.shape[0], W = residual.shape[1], y, x, y0, y1, x0, x1
    cdef int it, i, j
    cdef double cx = xc[0], cy = yc[0], s = sigma, amp, num = 0.0, den = 0.0
    cdef double dx, dy, d2, s2, g, rr
    cdef double gx[2 * FIT_MAX_RADIUS + 1]
    cdef double gy[2 * FIT_MAX_RADIUS + 1]
    cdef double jac[4]
    cdef double step[4]
    cdef double a[4][5]
    r = min(r, FIT_MAX_RADIUS)
    y0 = max(py - r, 0)
    y1 = min(py + r + 1, H)
    x0 = max(px - r, 0)
    x1 = min(px + r + 1, W)
    # the Gaussian is separable: one exp per row and per column of the window, not per pixel.
    # The starting amplitude needs two sums, not the steps' normal equations: a pass of the
    # steps' loop with amplitude 0 gives the same bits but made the fit 27 % slower
    _gaussian_axis(x0, x1, cx, s, gx)
    _gaussian_axis(y0, y1, cy, s, gy)
    for y in range(y0, y1):
        for x in range(x0, x1):
            if bad[y, x]:
                continue
            g = gx[x - x0] * gy[y - y0]
            num += <double>residual[y, x] * g
            den += g * g
    if not den > 0.0:
        return False
    amp = num / den
    for it in range(iterations):
        for i in range(4):
            for j in range(5):
                a[i][j] = 0.0
        s2 = s * s
        _gaussian_axis(x0, x1, cx, s, gx)
        _gaussian_axis(y0, y1, cy, s, gy)
        for y in range(y0, y1):
            for x in range(x0, x1):
                if bad[y, x]:
                    continue
                dx = x - cx
                dy = y - cy
                d2 = dx * dx + dy * dy
                g = gx[x - x0] * gy[y - y0]
                jac[0] = amp * g * dx / s2
                jac[1] = amp * g * dy / s2
                jac[2] = g
                jac[3] = amp * g * d2 / (s2 * s)
                rr = <double>residual[y, x] - amp * g
                for i in range(4):
                    for j in range(i, 4):
                        a[i][j] += jac[i] * jac[j]
                    a[i][4] += jac[i] * rr
        for i in range(4):
            a[i][i] += FIT_DAMPING
            for j in range(i):
                a[i][j] = a[j][i]
        if not _solve4(a, step):
            return False
        cx += min(max(step[0], -FIT_STEP_PX), FIT_STEP_PX)
        cy += min(max(step[1], -FIT_STEP_PX), FIT_STEP_PX)
        amp += step[2]
        s += min(max(step[3], -FIT_WIDTH_STEP * s), FIT_WIDTH_STEP * s)
        if fabs(step[0]) < FIT_CONVERGED_PX and fabs(step[1]) < FIT_CONVERGED_PX:
            break
    if not (isfinite(cx) and isfinite(cy) and amp > 0.0 and FIT_WIDTH_LOW < s < FIT_WIDTH_HIGH
            and fabs(cx - xc[0]) <= FIT_REACH_PX and fabs(cy - yc[0]) <= FIT_REACH_PX):
        return False
    xc[0] = cx
    yc[0] = cy
    peak[0] = amp
    return True


def fit_constants():
    """The Gaussian fit's constants, for the numpy twin: step and reach (px), width step and
    range, damping, widest window and convergence (px)."""
    return {"step_px": FIT_STEP_PX, "width_step": FIT_WIDTH_STEP,
            "width_range": (FIT_WIDTH_LOW, FIT_WIDTH_HIGH),
            "reach_px": FIT_REACH_PX, "damping": FIT_DAMPING, "max_radius": FIT_MAX_RADIUS,
            "converged_px": FIT_CONVERGED_PX}


def measure_targets(const uint16_t[:, ::1] frame, const float[:, ::1] residual,
                    const float[::1] taps, const int32_t[::1] cand_index,
                    const float[::1] cand_z, const int32_t[::1] labels,
                    const int32_t[::1] sizes, const int32_t[::1] peaks, Py_ssize_t n,
                    Py_ssize_t radius, double psf_sigma, double read_var, double inv_gain,
                    double[:, ::1] out, const uint8_t[:, ::1] bad, Py_ssize_t fit_radius,
                    int fit_iterations):
    """One row per peak (columns as COLUMNS).

    The centroid is the log-parabola vertex through the filtered residual at
    the peak and its row/column neighbours: the matched-filter output of a
    Gaussian PSF is again a Gaussian, so the fit is unbiased and uses the
    whole PSF's signal rather than three noisy pixels.  With fit_iterations > 0 the
    reported position is then that of a Gaussian fitted (position, amplitude and width:
    _gaussian_fit) to the residual's good pixels within fit_radius of the peak, where the
    fit holds, and the Cramer-Rao bound (sigma_x, sigma_y) is the fitted Gaussian's; the
    vertex stays the centre of the shape and sharpness measures.  Flux and shape come
    from the residual in the (2*radius+1)^2 window; sharpness is the peak
    residual pixel over the 3x3 residual sum, near 1 for a cosmic ray or a
    single hot pixel and below ~0.4 for an optical PSF; npix is the size of
    the peak's component.  The noise at the peak uses the prediction there,
    frame - residual (the peak is a good pixel with model data).
    """
    cdef Py_ssize_t H = residual.shape[0], W = residual.shape[1], nt = taps.shape[0]
    cdef Py_ssize_t y, x, i, ci, py, px, y0, y1, x0, x1, qy, qx, k
    cdef double s, flux, wsum, sxx, syy, sxy, xc, yc, dx, dy, half, root
    cdef double sigma_n, crb, c, peak_r, sum3, pred, row3, col3, diag3, anti3, amp = 0.0
    cdef float tap[MAX_TAPS]
    if nt > MAX_TAPS:
        raise ValueError(f"at most {MAX_TAPS} filter taps, got {nt}")
    if bad.shape[0] != residual.shape[0] or bad.shape[1] != residual.shape[1]:
        raise ValueError(f"bad must be {residual.shape[0]} x {residual.shape[1]}, got "
                         f"{bad.shape[0]} x {bad.shape[1]}")
    if out.shape[1] != N_COLUMNS or out.shape[0] < n or peaks.shape[0] < n:
        raise ValueError(f"out must be at least {n} x {N_COLUMNS} (COLUMNS) and peaks hold {n}, got "
                         f"{out.shape[0]} x {out.shape[1]} and {peaks.shape[0]}")
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
            row3 = 0.0
            col3 = 0.0
            diag3 = 0.0
            anti3 = 0.0
            for y in range(max(qy - 1, 0), min(qy + 2, H)):
                for x in range(max(qx - 1, 0), min(qx + 2, W)):
                    s = <double>residual[y, x]
                    sum3 += s
                    if s > peak_r:
                        peak_r = s
                    if y == qy:
                        row3 += s
                    if x == qx:
                        col3 += s
                    if y - qy == x - qx:
                        diag3 += s
                    if y - qy == qx - x:
                        anti3 += s
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
            if fit_iterations > 0 and _gaussian_fit(residual, bad, py, px, fit_radius, psf_sigma,
                                                    fit_iterations, &xc, &yc, &amp):
                # a Gaussian's bound per axis is sqrt(8 pi) s^2 sigma_n / (2 pi s^2 A), whatever
                # its width s: the fitted peak A, not psf_sigma and the aperture's flux
                crb = min(CRB_PER_PEAK * sigma_n / amp, 1.0)
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
            out[i, C_LINE] = min(max(max(row3, col3), max(diag3, anti3)) / sum3, 1.0) if sum3 > 0.0 else 1.0
    return n
