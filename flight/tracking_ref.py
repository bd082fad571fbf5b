"""numpy twin of flight.kernels.tracking: the tracker's numbers across all tracks at once, written in numpy.

This is the tracker's filter arithmetic as it was before the kernel, kept as the
reference: `TrackTable` here and the kernel's `TrackTable` take the same state
arrays and the same calls, and tests/test_tracking_kernel.py holds the two to the
same results. It shares nothing with the kernel but the arrays it is given.

The arrays (cap = track slots, M = motion models, H = history ring length):
    x (cap, M, 4), P (cap, M, 4, 4), mu (cap, M)        state, covariance, model probabilities
    window, age, misses, hits (cap,) int64              M-of-N hit bits (newest lowest) and counts
    score, flux (cap,)                                  track log-likelihood ratio, last flux
    h_t, h_x, h_y, h_f, h_r (cap, H), h_n (cap,) int64  history ring: frame, x, y, ln flux, variance
"""
from __future__ import annotations

import math

import numpy as np

_F = np.array([[1.0, 0, 1, 0], [0, 1.0, 0, 1], [0, 0, 1.0, 0], [0, 0, 0, 1.0]])
MAX_WIDEN2 = 4.0      # the kernel's: the speed sigma widens by the scatter at most a factor of 2
FIT_COLUMNS = ("vx", "vy", "v_sigma", "trend", "trend_sigma", "ax", "ay", "accel_sigma")


class TrackTable:
    """The tracker's per-track arithmetic on the arrays above, for the tracks (slots) named in each call."""

    def __init__(self, arrays: dict, Q: np.ndarray, switch: np.ndarray, log_pd: float, log_miss: float,
                 initial_speed_var: float, classify_min_hits: int):
        for name in ("x", "P", "mu", "window", "age", "misses", "hits", "score", "flux",
                     "h_t", "h_x", "h_y", "h_f", "h_r", "h_n"):
            setattr(self, name, arrays[name])
        self.models = self.x.shape[1]
        self.Q, self.switch = Q, switch
        self.log_pd, self.log_miss = log_pd, log_miss
        self.v2 = initial_speed_var
        self.min_hits = classify_min_hits

    def predict(self, slots: np.ndarray) -> None:
        """One frame ahead: IMM mixing (M = 2), then the constant-velocity step with its process noise."""
        if not len(slots):
            return
        x, P = self.x[slots], self.P[slots]
        if self.models > 1:
            mu = self.mu[slots]
            predicted = mu @ self.switch                                 # c_j
            mix = self.switch[None] * mu[:, :, None] / np.maximum(predicted[:, None, :], 1e-300)  # mu_{i|j}
            x0 = np.einsum("nij,nik->njk", mix, x)
            dx = x[:, :, None, :] - x0[:, None, :, :]                    # (n, i, j, 4)
            P = np.einsum("nij,nikl->njkl", mix, P) + np.einsum("nij,nijk,nijl->njkl", mix, dx, dx)
            x = x0
            self.mu[slots] = predicted
        x = x @ _F.T
        P = _F @ P @ _F.T + self.Q[None]
        self.x[slots], self.P[slots] = x, P

    def miss(self, slots: np.ndarray) -> None:
        """A frame without a detection for these tracks."""
        if not len(slots):
            return
        self.score[slots] += self.log_miss
        self.window[slots] = (self.window[slots] << 1) & 0xFFFF
        self.misses[slots] += 1
        self.age[slots] += 1

    def combine(self, slots: np.ndarray, xc: np.ndarray, Pc: np.ndarray) -> None:
        """xc (k, 4), Pc (k, 4, 4): the models' mixture as one Gaussian (the model itself when M = 1)."""
        x, P = self.x[slots], self.P[slots]
        if self.models == 1:
            xc[:], Pc[:] = x[:, 0], P[:, 0]
            return
        mu = self.mu[slots]
        xc[:] = np.einsum("nj,njk->nk", mu, x)
        d = x - xc[:, None]
        Pc[:] = np.einsum("nj,njkl->nkl", mu, P + d[..., :, None] * d[..., None, :])

    def distance(self, slots: np.ndarray, z: np.ndarray, rx: np.ndarray, ry: np.ndarray, good: np.ndarray,
                 out: np.ndarray) -> None:
        """out (k, n): Mahalanobis distance of each detection to each track's position; inf where not good."""
        k = len(slots)
        xc, Pc = np.empty((k, 4)), np.empty((k, 4, 4))
        self.combine(slots, xc, Pc)
        s11 = Pc[:, 0, 0, None] + rx[None]
        s22 = Pc[:, 1, 1, None] + ry[None]
        s12 = Pc[:, 0, 1, None]
        nu1 = z[None, :, 0] - xc[:, 0, None]
        nu2 = z[None, :, 1] - xc[:, 1, None]
        det = s11 * s22 - s12 * s12
        out[:] = np.sqrt((s22 * nu1 * nu1 - 2 * s12 * nu1 * nu2 + s11 * nu2 * nu2) / det)
        out[:, ~good.astype(bool)] = np.inf

    def update(self, slots, dets, z, rx, ry, flux, frame_index: int) -> None:
        """Kalman update of track slots[i] with detection dets[i]; model probabilities, score, M-of-N
        bits, counts and the history ring follow."""
        if not len(slots):
            return
        z, rx, ry, flux = z[dets], rx[dets], ry[dets], flux[dets]
        x, P = self.x[slots], self.P[slots]                             # (k, M, 4), (k, M, 4, 4)
        s11 = P[:, :, 0, 0] + rx[:, None]
        s22 = P[:, :, 1, 1] + ry[:, None]
        s12 = P[:, :, 0, 1]
        det = s11 * s22 - s12 * s12
        inv = np.stack([np.stack([s22, -s12], -1), np.stack([-s12, s11], -1)], -2) / det[..., None, None]
        nu = z[:, None, :] - x[:, :, :2]                                # (k, M, 2)
        PHt = P[:, :, :, :2]                                            # P H^T: (k, M, 4, 2)
        K = PHt @ inv                                                   # (k, M, 4, 2)
        x = x + np.einsum("nmij,nmj->nmi", K, nu)
        P = P - K @ np.swapaxes(PHt, -1, -2)
        P = 0.5 * (P + np.swapaxes(P, -1, -2))
        d2 = np.einsum("nmi,nmij,nmj->nm", nu, inv, nu)
        log_like = -0.5 * d2 - np.log(2 * math.pi * np.sqrt(det))      # (k, M)
        mu = self.mu[slots]
        if self.models > 1:
            weighted = np.log(np.maximum(mu, 1e-300)) + log_like
            top = weighted.max(axis=1, keepdims=True)
            w = np.exp(weighted - top)
            self.mu[slots] = w / w.sum(axis=1, keepdims=True)
            log_like = (top[:, 0] + np.log(w.sum(axis=1)))              # ln sum_j c_j L_j
        else:
            log_like = log_like[:, 0]
        self.x[slots], self.P[slots] = x, P
        self.score[slots] += self.log_pd + log_like
        self.window[slots] = ((self.window[slots] << 1) | 1) & 0xFFFF
        self.misses[slots] = 0
        self.hits[slots] += 1
        self.age[slots] += 1
        hist = self.h_t.shape[1]
        pos = self.h_n[slots] % hist
        self.h_t[slots, pos] = frame_index
        self.h_x[slots, pos] = z[:, 0]
        self.h_y[slots, pos] = z[:, 1]
        self.h_f[slots, pos] = np.log(np.maximum(flux, 1e-3))
        self.h_r[slots, pos] = 0.5 * (rx + ry)
        self.h_n[slots] += 1
        self.flux[slots] = flux

    def birth(self, slots, dets, z, rx, ry, flux, frame_index: int) -> None:
        """New tracks in slots[i] at detection dets[i]: at rest, velocity sigma from the configuration."""
        k = len(slots)
        if not k:
            return
        x = np.zeros((k, 4))
        x[:, :2] = z[dets]
        P = np.zeros((k, 4, 4))
        P[:, 0, 0], P[:, 1, 1], P[:, 2, 2], P[:, 3, 3] = rx[dets], ry[dets], self.v2, self.v2
        self.x[slots] = x[:, None]
        self.P[slots] = P[:, None]
        self.mu[slots] = 1.0 / self.models
        self.window[slots] = 1
        self.age[slots] = 1
        self.misses[slots] = 0
        self.hits[slots] = 1
        self.score[slots] = 0.0
        self.h_t[slots, 0] = frame_index
        self.h_x[slots, 0] = z[dets, 0]
        self.h_y[slots, 0] = z[dets, 1]
        self.h_f[slots, 0] = np.log(np.maximum(flux[dets], 1e-3))
        self.h_r[slots, 0] = 0.5 * (rx[dets] + ry[dets])
        self.h_n[slots] = 1
        self.flux[slots] = flux[dets]

    def fits(self, slots: np.ndarray, out: np.ndarray) -> None:
        """out (k, 8), columns FIT_COLUMNS: per track, from its recent detections, the mean velocity (x, y)
        and its sigma per axis (straight line, the measurement noise as the scatter: sound from 2
        detections on; from 3, widened by the scatter about the line where that exceeds it), and where
        there are classify_min_hits, the intensity trend, its sigma, acceleration (x, y) and its sigma
        (NaN before)."""
        hist = self.h_t.shape[1]
        n = np.minimum(self.h_n[slots], hist)
        valid = np.arange(hist)[None, :] < n[:, None]
        w = valid.astype(np.float64)
        t = self.h_t[slots]
        count = np.maximum(w.sum(1), 1)
        tc = t - (w * t).sum(1, keepdims=True) / count[:, None]
        enough = n >= self.min_hits
        # Mean velocity: straight line in x and y, weighted equally, sigma from the measurement variances.
        hx, hy = self.h_x[slots], self.h_y[slots]
        mx, my = (w * hx).sum(1) / count, (w * hy).sum(1) / count
        stt = (w * tc * tc).sum(1)
        with np.errstate(divide="ignore", invalid="ignore"):
            vx = (w * tc * (hx - mx[:, None])).sum(1) / stt
            vy = (w * tc * (hy - my[:, None])).sum(1) / stt
            v_sigma = np.sqrt((w * tc * tc * self.h_r[slots]).sum(1)) / stt
        v_sigma = np.where(n >= 2, v_sigma, np.inf)
        # From 3 detections, scatter about the line beyond what their variances allow widens the sigma:
        # a learned source's residual peak wanders 1-3 px with the jitter, and 4 such detections fit a
        # line of 0.4-1.2 px/frame whose sigma from the Cramer-Rao bounds alone called it moving.
        with np.errstate(divide="ignore", invalid="ignore"):
            ex = w * (hx - mx[:, None] - vx[:, None] * tc)
            ey = w * (hy - my[:, None] - vy[:, None] * tc)
            rss = (ex * ex + ey * ey).sum(1)
            ers = (w * self.h_r[slots] * (1.0 - 1.0 / count[:, None] - tc * tc / stt[:, None])).sum(1)
            ratio = np.where((n >= 3) & (ers > 0) & (rss > 2 * ers), rss / (2 * ers), 1.0)
        v_sigma = v_sigma * np.sqrt(np.minimum(ratio, MAX_WIDEN2))
        # Intensity trend: straight line in ln flux.
        f = self.h_f[slots]
        sf = (w * f).sum(1) / count
        slope = (w * tc * (f - sf[:, None])).sum(1) / np.maximum(stt, 1e-12)
        resid = w * (f - sf[:, None] - slope[:, None] * tc)
        s2 = (resid ** 2).sum(1) / np.maximum(count - 2, 1)
        slope_sigma = np.sqrt(s2 / np.maximum(stt, 1e-12))
        # Acceleration: parabola in x and y, one design for both.
        design = np.stack([np.ones_like(tc), tc, tc * tc], -1) * w[..., None]    # (k, H, 3)
        normal = np.swapaxes(design, 1, 2) @ design + 1e-9 * np.eye(3)
        cov = np.linalg.inv(normal)
        beta_x = cov @ (np.swapaxes(design, 1, 2) @ (w * hx)[..., None])
        beta_y = cov @ (np.swapaxes(design, 1, 2) @ (w * hy)[..., None])
        fit_x = (design @ beta_x)[..., 0]
        fit_y = (design @ beta_y)[..., 0]
        rp = ((w * hx - fit_x) ** 2 + (w * hy - fit_y) ** 2).sum(1)
        sp2 = rp / np.maximum(2 * (count - 3), 1)
        accel_sigma = 2 * np.sqrt(sp2 * cov[:, 2, 2])
        ax, ay = 2 * beta_x[:, 2, 0], 2 * beta_y[:, 2, 0]
        nan = np.where(enough, 1.0, np.nan)
        out[:] = np.stack([vx, vy, v_sigma, slope * nan, slope_sigma * nan, ax * nan, ay * nan,
                           accel_sigma * nan], 1)
