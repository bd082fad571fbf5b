# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The tracker's per-track arithmetic (flight.kernels.tracking).

`TrackTable` holds the tracker's state arrays (flight/tracking.py allocates
them once; layout in flight/tracking_ref.py) and runs, for the tracks (slots)
named in each call, without the GIL and without a Python object per track:

    predict    IMM mixing (two models) and the constant-velocity step
    miss       a frame without a detection: score, M-of-N bits, counts
    combine    the models' mixture as one Gaussian
    distance   Mahalanobis distance of every detection to every track
    update     Kalman update, model probabilities, score, bits, history ring
    birth      new tracks at rest
    fits       straight-line velocity, ln-flux trend and parabola acceleration
               from each track's history ring

The numpy profile of the tracker was mostly numpy's per-call cost on arrays of
a few dozen tracks; here each call is one loop over the tracks. Every call
checks its slot and detection indices and lengths before the loop (cheap next
to the loop), which is what makes the unchecked directives safe.
flight/tracking_ref.py is the numpy twin; tests/test_tracking_kernel.py holds
the two together.
"""
from libc.math cimport exp, log, sqrt, INFINITY, NAN
from libc.stdint cimport int64_t

cdef enum:
    MAX_MODELS = 2

# The speed sigma widens by the scatter about the line at most this factor squared (a factor of 2): past
# it, the scatter of clear-sky frames whose registration misses by about 1 px held back true movers.
cdef double MAX_WIDEN2 = 4.0
cdef double TWO_PI = 6.283185307179586        # 2 pi in double, as the twin's 2 * math.pi (M_PI is not ISO C)

FIT_COLUMNS = ("vx", "vy", "v_sigma", "trend", "trend_sigma", "ax", "ay", "accel_sigma")


cdef int _check_indices(const Py_ssize_t[::1] index, Py_ssize_t limit, str name) except -1:
    cdef Py_ssize_t i
    for i in range(index.shape[0]):
        if index[i] < 0 or index[i] >= limit:
            raise IndexError(f"{name}[{i}] = {index[i]} is outside 0..{limit - 1}")
    return 0


cdef int _check_detections(const Py_ssize_t[::1] dets, const double[:, ::1] z, const double[::1] rx,
                           const double[::1] ry) except -1:
    cdef Py_ssize_t n = z.shape[0]
    if z.shape[1] != 2 or rx.shape[0] != n or ry.shape[0] != n:
        raise ValueError(f"detections: z must be (n, 2) and rx, ry (n,); got z {tuple(z.shape)[:2]}, "
                         f"rx ({rx.shape[0]},), ry ({ry.shape[0]},)")
    _check_indices(dets, n, "dets")
    return 0


cdef class TrackTable:
    """The tracker's arithmetic on its state arrays, which it shares with the tracker (no copies)."""

    cdef double[:, :, ::1] x
    cdef double[:, :, :, ::1] P
    cdef double[:, ::1] mu
    cdef int64_t[::1] window, age, misses, hits, h_n
    cdef double[::1] score, flux
    cdef double[:, ::1] h_t, h_x, h_y, h_f, h_r
    cdef double Q[MAX_MODELS][4][4]
    cdef double switch[MAX_MODELS][MAX_MODELS]
    cdef double log_pd, log_miss, v2
    cdef Py_ssize_t cap, models, hist, min_hits

    def __init__(self, dict arrays, Q, switch, double log_pd, double log_miss, double initial_speed_var,
                 Py_ssize_t classify_min_hits):
        cdef Py_ssize_t m, i, j
        self.x, self.P, self.mu = arrays["x"], arrays["P"], arrays["mu"]
        self.window, self.age, self.misses = arrays["window"], arrays["age"], arrays["misses"]
        self.hits, self.h_n = arrays["hits"], arrays["h_n"]
        self.score, self.flux = arrays["score"], arrays["flux"]
        self.h_t, self.h_x, self.h_y = arrays["h_t"], arrays["h_x"], arrays["h_y"]
        self.h_f, self.h_r = arrays["h_f"], arrays["h_r"]
        self.cap, self.models, self.hist = self.x.shape[0], self.x.shape[1], self.h_t.shape[1]
        if not 1 <= self.models <= MAX_MODELS or self.x.shape[2] != 4:
            raise ValueError(f"x must be (slots, 1 or 2 models, 4), got {tuple(self.x.shape)[:3]}")
        if tuple(self.P.shape)[:4] != (self.cap, self.models, 4, 4) or tuple(self.mu.shape)[:2] != (
                self.cap, self.models):
            raise ValueError("P must be (slots, models, 4, 4) and mu (slots, models), as x")
        for name in ("window", "age", "misses", "hits", "h_n", "score", "flux"):
            if arrays[name].shape != (self.cap,):
                raise ValueError(f"{name} must have one entry per slot ({self.cap}), got {arrays[name].shape}")
        for name in ("h_t", "h_x", "h_y", "h_f", "h_r"):
            if arrays[name].shape != (self.cap, self.hist) or self.hist < 1:
                raise ValueError(f"{name} must be (slots, history) as h_t, got {arrays[name].shape}")
        cdef const double[:, :, ::1] q = Q
        cdef const double[:, ::1] s = switch
        if tuple(q.shape)[:3] != (self.models, 4, 4) or tuple(s.shape)[:2] != (self.models, self.models):
            raise ValueError("Q must be (models, 4, 4) and switch (models, models)")
        for m in range(self.models):
            for i in range(4):
                for j in range(4):
                    self.Q[m][i][j] = q[m, i, j]
            for i in range(self.models):
                self.switch[m][i] = s[m, i]
        self.log_pd, self.log_miss, self.v2 = log_pd, log_miss, initial_speed_var
        self.min_hits = classify_min_hits

    def predict(self, const Py_ssize_t[::1] slots):
        """One frame ahead: IMM mixing (two models), then the constant-velocity step with its process noise."""
        _check_indices(slots, self.cap, "slots")
        cdef Py_ssize_t n, s, i, j, k, l, M = self.models
        cdef double c[MAX_MODELS]
        cdef double mix[MAX_MODELS][MAX_MODELS]
        cdef double x0[MAX_MODELS][4]
        cdef double P0[MAX_MODELS][4][4]
        cdef double dk
        cdef double a[4][4]
        with nogil:
            for n in range(slots.shape[0]):
                s = slots[n]
                if M > 1:
                    for j in range(M):
                        c[j] = 0.0
                        for i in range(M):
                            c[j] += self.mu[s, i] * self.switch[i][j]
                    for i in range(M):
                        for j in range(M):
                            mix[i][j] = self.switch[i][j] * self.mu[s, i] / (c[j] if c[j] > 1e-300 else 1e-300)
                    for j in range(M):
                        for k in range(4):
                            x0[j][k] = 0.0
                            for i in range(M):
                                x0[j][k] += mix[i][j] * self.x[s, i, k]
                        for k in range(4):
                            for l in range(4):
                                P0[j][k][l] = 0.0
                        for i in range(M):
                            for k in range(4):
                                dk = self.x[s, i, k] - x0[j][k]
                                for l in range(4):
                                    P0[j][k][l] += mix[i][j] * (self.P[s, i, k, l]
                                                                + dk * (self.x[s, i, l] - x0[j][l]))
                    for j in range(M):
                        self.mu[s, j] = c[j]
                        for k in range(4):
                            self.x[s, j, k] = x0[j][k]
                            for l in range(4):
                                self.P[s, j, k, l] = P0[j][k][l]
                for j in range(M):
                    # x <- F x, P <- F P F^T + Q with F the constant-velocity step (dt = 1 frame).
                    self.x[s, j, 0] += self.x[s, j, 2]
                    self.x[s, j, 1] += self.x[s, j, 3]
                    for k in range(4):
                        for l in range(4):
                            a[k][l] = self.P[s, j, k, l]
                    for l in range(4):
                        a[0][l] += a[2][l]
                        a[1][l] += a[3][l]
                    for k in range(4):
                        a[k][0] += a[k][2]
                        a[k][1] += a[k][3]
                    for k in range(4):
                        for l in range(4):
                            self.P[s, j, k, l] = a[k][l] + self.Q[j][k][l]

    def miss(self, const Py_ssize_t[::1] slots):
        """A frame without a detection for these tracks."""
        _check_indices(slots, self.cap, "slots")
        cdef Py_ssize_t n, s
        with nogil:
            for n in range(slots.shape[0]):
                s = slots[n]
                self.score[s] += self.log_miss
                self.window[s] = (self.window[s] << 1) & 0xFFFF
                self.misses[s] += 1
                self.age[s] += 1

    cdef void _combine(self, Py_ssize_t s, double xc[4], double Pc[4][4]) noexcept nogil:
        cdef Py_ssize_t j, k, l
        cdef double w
        for k in range(4):
            xc[k] = 0.0
            for l in range(4):
                Pc[k][l] = 0.0
        if self.models == 1:
            for k in range(4):
                xc[k] = self.x[s, 0, k]
                for l in range(4):
                    Pc[k][l] = self.P[s, 0, k, l]
            return
        for j in range(self.models):
            w = self.mu[s, j]
            for k in range(4):
                xc[k] += w * self.x[s, j, k]
        for j in range(self.models):
            w = self.mu[s, j]
            for k in range(4):
                for l in range(4):
                    Pc[k][l] += w * (self.P[s, j, k, l] + (self.x[s, j, k] - xc[k]) * (self.x[s, j, l] - xc[l]))

    def combine(self, const Py_ssize_t[::1] slots, double[:, ::1] xc, double[:, :, ::1] Pc):
        """xc (k, 4), Pc (k, 4, 4): the models' mixture as one Gaussian (the model itself with one)."""
        _check_indices(slots, self.cap, "slots")
        if xc.shape[0] < slots.shape[0] or xc.shape[1] != 4 or Pc.shape[0] < slots.shape[0] or \
                Pc.shape[1] != 4 or Pc.shape[2] != 4:
            raise ValueError(f"xc must be ({slots.shape[0]}, 4) and Pc ({slots.shape[0]}, 4, 4)")
        cdef Py_ssize_t n, k, l
        cdef double x1[4]
        cdef double P1[4][4]
        with nogil:
            for n in range(slots.shape[0]):
                self._combine(slots[n], x1, P1)
                for k in range(4):
                    xc[n, k] = x1[k]
                    for l in range(4):
                        Pc[n, k, l] = P1[k][l]

    def distance(self, const Py_ssize_t[::1] slots, const double[:, ::1] z, const double[::1] rx,
                 const double[::1] ry, const unsigned char[::1] good, double[:, ::1] out):
        """out (k, n): Mahalanobis distance of each detection to each track's position; inf where not good."""
        _check_indices(slots, self.cap, "slots")
        cdef Py_ssize_t nd = z.shape[0]
        if z.shape[1] != 2 or rx.shape[0] != nd or ry.shape[0] != nd or good.shape[0] != nd:
            raise ValueError("z must be (n, 2) and rx, ry, good (n,)")
        if out.shape[0] != slots.shape[0] or out.shape[1] != nd:
            raise ValueError(f"out must be ({slots.shape[0]}, {nd}), got {tuple(out.shape)[:2]}")
        cdef Py_ssize_t n, d
        cdef double x1[4]
        cdef double P1[4][4]
        cdef double s11, s22, s12, nu1, nu2, det
        with nogil:
            for n in range(slots.shape[0]):
                self._combine(slots[n], x1, P1)
                for d in range(nd):
                    if not good[d]:
                        out[n, d] = INFINITY
                        continue
                    s11 = P1[0][0] + rx[d]
                    s22 = P1[1][1] + ry[d]
                    s12 = P1[0][1]
                    nu1 = z[d, 0] - x1[0]
                    nu2 = z[d, 1] - x1[1]
                    det = s11 * s22 - s12 * s12
                    out[n, d] = sqrt((s22 * nu1 * nu1 - 2 * s12 * nu1 * nu2 + s11 * nu2 * nu2) / det)

    def update(self, const Py_ssize_t[::1] slots, const Py_ssize_t[::1] dets, const double[:, ::1] z,
               const double[::1] rx, const double[::1] ry, const double[::1] flux, double frame_index):
        """Kalman update of track slots[i] with detection dets[i]; model probabilities, score, M-of-N
        bits, counts and the history ring follow."""
        _check_indices(slots, self.cap, "slots")
        _check_detections(dets, z, rx, ry)
        if flux.shape[0] != z.shape[0]:
            raise ValueError("flux must have one entry per detection")
        if dets.shape[0] != slots.shape[0]:
            raise ValueError(f"one detection per slot: {slots.shape[0]} slots, {dets.shape[0]} detections")
        cdef Py_ssize_t n, s, d, j, k, l, pos, M = self.models
        cdef double s11, s22, s12, det, i11, i22, i12, nu1, nu2, d2, top, total, w
        cdef double a[4][4]
        cdef double K[4][2]
        cdef double ll[MAX_MODELS]
        with nogil:
            for n in range(slots.shape[0]):
                s = slots[n]
                d = dets[n]
                for j in range(M):
                    for k in range(4):
                        for l in range(4):
                            a[k][l] = self.P[s, j, k, l]
                    s11 = a[0][0] + rx[d]
                    s22 = a[1][1] + ry[d]
                    s12 = a[0][1]
                    det = s11 * s22 - s12 * s12
                    i11, i22, i12 = s22 / det, s11 / det, -s12 / det
                    nu1 = z[d, 0] - self.x[s, j, 0]
                    nu2 = z[d, 1] - self.x[s, j, 1]
                    for k in range(4):          # K = P H^T S^-1
                        K[k][0] = a[k][0] * i11 + a[k][1] * i12
                        K[k][1] = a[k][0] * i12 + a[k][1] * i22
                        self.x[s, j, k] += K[k][0] * nu1 + K[k][1] * nu2
                    for k in range(4):          # P - K H P, then symmetric
                        for l in range(4):
                            self.P[s, j, k, l] = a[k][l] - (K[k][0] * a[l][0] + K[k][1] * a[l][1])
                    for k in range(4):
                        for l in range(k + 1, 4):
                            w = 0.5 * (self.P[s, j, k, l] + self.P[s, j, l, k])
                            self.P[s, j, k, l] = w
                            self.P[s, j, l, k] = w
                    d2 = nu1 * (i11 * nu1 + i12 * nu2) + nu2 * (i12 * nu1 + i22 * nu2)
                    ll[j] = -0.5 * d2 - log(TWO_PI * sqrt(det))
                if M > 1:
                    top = -INFINITY
                    for j in range(M):
                        ll[j] += log(self.mu[s, j] if self.mu[s, j] > 1e-300 else 1e-300)
                        if ll[j] > top:
                            top = ll[j]
                    total = 0.0
                    for j in range(M):
                        ll[j] = exp(ll[j] - top)
                        total += ll[j]
                    for j in range(M):
                        self.mu[s, j] = ll[j] / total
                    ll[0] = top + log(total)            # ln sum_j c_j L_j
                self.score[s] += self.log_pd + ll[0]
                self.window[s] = ((self.window[s] << 1) | 1) & 0xFFFF
                self.misses[s] = 0
                self.hits[s] += 1
                self.age[s] += 1
                pos = self.h_n[s] % self.hist
                self.h_t[s, pos] = frame_index
                self.h_x[s, pos] = z[d, 0]
                self.h_y[s, pos] = z[d, 1]
                self.h_f[s, pos] = log(flux[d] if flux[d] > 1e-3 else 1e-3)
                self.h_r[s, pos] = 0.5 * (rx[d] + ry[d])
                self.h_n[s] += 1
                self.flux[s] = flux[d]

    def birth(self, const Py_ssize_t[::1] slots, const Py_ssize_t[::1] dets, const double[:, ::1] z,
              const double[::1] rx, const double[::1] ry, const double[::1] flux, double frame_index):
        """New tracks in slots[i] at detection dets[i]: at rest, velocity sigma from the configuration."""
        _check_indices(slots, self.cap, "slots")
        _check_detections(dets, z, rx, ry)
        if flux.shape[0] != z.shape[0] or dets.shape[0] != slots.shape[0]:
            raise ValueError("flux must have one entry per detection, dets one per slot")
        cdef Py_ssize_t n, s, d, j, k, l
        with nogil:
            for n in range(slots.shape[0]):
                s = slots[n]
                d = dets[n]
                for j in range(self.models):
                    for k in range(4):
                        self.x[s, j, k] = 0.0
                        for l in range(4):
                            self.P[s, j, k, l] = 0.0
                    self.x[s, j, 0] = z[d, 0]
                    self.x[s, j, 1] = z[d, 1]
                    self.P[s, j, 0, 0] = rx[d]
                    self.P[s, j, 1, 1] = ry[d]
                    self.P[s, j, 2, 2] = self.v2
                    self.P[s, j, 3, 3] = self.v2
                    self.mu[s, j] = 1.0 / self.models
                self.window[s] = 1
                self.age[s] = 1
                self.misses[s] = 0
                self.hits[s] = 1
                self.score[s] = 0.0
                self.h_t[s, 0] = frame_index
                self.h_x[s, 0] = z[d, 0]
                self.h_y[s, 0] = z[d, 1]
                self.h_f[s, 0] = log(flux[d] if flux[d] > 1e-3 else 1e-3)
                self.h_r[s, 0] = 0.5 * (rx[d] + ry[d])
                self.h_n[s] = 1
                self.flux[s] = flux[d]

    def fits(self, const Py_ssize_t[::1] slots, double[:, ::1] out):
        """out (k, 8), columns FIT_COLUMNS: from each track's history ring, mean velocity and its sigma
        (from 2 detections; from 3, widened by the scatter about the line where it exceeds the
        detections' variances), and with classify_min_hits the ln-flux trend, its sigma, acceleration and
        its sigma (NaN before)."""
        _check_indices(slots, self.cap, "slots")
        if out.shape[0] < slots.shape[0] or out.shape[1] != 8:
            raise ValueError(f"out must be ({slots.shape[0]}, 8), got {tuple(out.shape)[:2]}")
        cdef Py_ssize_t n, s, j, m
        cdef double count, tmean, mx, my, sf, stt, sxt, syt, srt, sft, tc, slope, s2, r, st
        cdef double S1, S2, S3, S4, bx0, bx1, bx2, by0, by1, by2, ux0, ux1, ux2, uy0, uy1, uy2, rp, e, rss, ers
        cdef double n00, n01, n02, n11, n12, n22, c00, c01, c02, c11, c12, c22, det
        with nogil:
            for n in range(slots.shape[0]):
                s = slots[n]
                m = self.h_n[s] if self.h_n[s] < self.hist else self.hist
                count = m if m > 1 else 1
                tmean, mx, my, sf = 0.0, 0.0, 0.0, 0.0
                for j in range(m):
                    tmean += self.h_t[s, j]
                    mx += self.h_x[s, j]
                    my += self.h_y[s, j]
                    sf += self.h_f[s, j]
                tmean, mx, my, sf = tmean / count, mx / count, my / count, sf / count
                stt, sxt, syt, srt, sft = 0.0, 0.0, 0.0, 0.0, 0.0
                for j in range(m):
                    tc = self.h_t[s, j] - tmean
                    stt += tc * tc
                    sxt += tc * (self.h_x[s, j] - mx)
                    syt += tc * (self.h_y[s, j] - my)
                    srt += tc * tc * self.h_r[s, j]
                    sft += tc * (self.h_f[s, j] - sf)
                out[n, 0] = sxt / stt
                out[n, 1] = syt / stt
                out[n, 2] = sqrt(srt) / stt if m >= 2 else INFINITY
                if m >= 3:
                    # Scatter about the line beyond what the detections' variances allow widens the sigma.
                    rss, ers = 0.0, 0.0
                    for j in range(m):
                        tc = self.h_t[s, j] - tmean
                        e = self.h_x[s, j] - mx - out[n, 0] * tc
                        rss += e * e
                        e = self.h_y[s, j] - my - out[n, 1] * tc
                        rss += e * e
                        ers += self.h_r[s, j] * (1.0 - 1.0 / count - tc * tc / stt)
                    if ers > 0 and rss > 2 * ers:
                        out[n, 2] *= sqrt(min(rss / (2 * ers), MAX_WIDEN2))
                if m < self.min_hits:
                    for j in range(3, 8):
                        out[n, j] = NAN
                    continue
                st = stt if stt > 1e-12 else 1e-12
                slope = sft / st
                s2 = 0.0
                for j in range(m):
                    tc = self.h_t[s, j] - tmean
                    r = self.h_f[s, j] - sf - slope * tc
                    s2 += r * r
                s2 /= (count - 2) if count - 2 > 1 else 1
                out[n, 3] = slope
                out[n, 4] = sqrt(s2 / st)
                # Parabola in x and y on the design (1, t, t^2): normal equations, a tiny ridge, 3 x 3 inverse.
                S1, S2, S3, S4 = 0.0, 0.0, 0.0, 0.0
                ux0, ux1, ux2, uy0, uy1, uy2 = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0
                for j in range(m):
                    tc = self.h_t[s, j] - tmean
                    S1 += tc
                    S2 += tc * tc
                    S3 += tc * tc * tc
                    S4 += tc * tc * tc * tc
                    ux0 += self.h_x[s, j]
                    ux1 += tc * self.h_x[s, j]
                    ux2 += tc * tc * self.h_x[s, j]
                    uy0 += self.h_y[s, j]
                    uy1 += tc * self.h_y[s, j]
                    uy2 += tc * tc * self.h_y[s, j]
                n00, n01, n02, n11, n12, n22 = m + 1e-9, S1, S2, S2 + 1e-9, S3, S4 + 1e-9
                c00 = n11 * n22 - n12 * n12
                c01 = n02 * n12 - n01 * n22
                c02 = n01 * n12 - n02 * n11
                c11 = n00 * n22 - n02 * n02
                c12 = n01 * n02 - n00 * n12
                c22 = n00 * n11 - n01 * n01
                det = n00 * c00 + n01 * c01 + n02 * c02
                c00, c01, c02, c11, c12, c22 = c00 / det, c01 / det, c02 / det, c11 / det, c12 / det, c22 / det
                bx0 = c00 * ux0 + c01 * ux1 + c02 * ux2
                bx1 = c01 * ux0 + c11 * ux1 + c12 * ux2
                bx2 = c02 * ux0 + c12 * ux1 + c22 * ux2
                by0 = c00 * uy0 + c01 * uy1 + c02 * uy2
                by1 = c01 * uy0 + c11 * uy1 + c12 * uy2
                by2 = c02 * uy0 + c12 * uy1 + c22 * uy2
                rp = 0.0
                for j in range(m):
                    tc = self.h_t[s, j] - tmean
                    e = self.h_x[s, j] - (bx0 + bx1 * tc + bx2 * tc * tc)
                    rp += e * e
                    e = self.h_y[s, j] - (by0 + by1 * tc + by2 * tc * tc)
                    rp += e * e
                rp /= 2 * (count - 3) if 2 * (count - 3) > 1 else 1
                out[n, 5] = 2 * bx2
                out[n, 6] = 2 * by2
                out[n, 7] = 2 * sqrt(rp * c22)
