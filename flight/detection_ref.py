"""Plain numpy/Python twin of flight.kernels.detect, stage by stage.

Slow on purpose: it says what each kernel stage computes in the most direct
form, and tests/test_detection.py demands the kernel give the same answer.
The single-frame twins work in float64, the temporal ones in float32, each in
the same order as its kernel, so that the thresholded pixel sets agree exactly.
"""
from __future__ import annotations

import math

import numpy as np

from flight.detection import (
    DetectorConfig, _good_median, bad_pixel_mask, check_frame, check_shape, fill_invalid_tiles,
    interpolation_axis, to_detections,
)
from kestrel.products import DETECTION_DTYPE

MAD_TO_SIGMA = 1.482602218505602
# The measurement table: the record's fields in order, then the temporal pipeline's sharpness
# and line fraction.
N_COLUMNS = len(DETECTION_DTYPE.names)


def tile_statistics(frame, bad, tile, min_valid):
    h, w = frame.shape
    gh, gw = -(-h // tile), -(-w // tile)
    median = np.full((gh, gw), np.nan)
    sigma = np.full((gh, gw), np.nan)
    for ty in range(gh):
        for tx in range(gw):
            block = frame[ty * tile:(ty + 1) * tile, tx * tile:(tx + 1) * tile]
            good = block[bad[ty * tile:(ty + 1) * tile, tx * tile:(tx + 1) * tile] == 0]
            if good.size < min_valid or good.size == 0:
                continue
            vals = good.astype(np.float64)
            med = np.median(vals)
            median[ty, tx] = med
            sigma[ty, tx] = MAD_TO_SIGMA * np.median(np.abs(vals - med))
    return median, sigma


def interpolate_grid(grid, iy, ix):
    iy0, iy1, wy = iy
    ix0, ix1, wx = ix
    fy = wy[:, None]
    fx = wx[None, :]
    a = grid[iy0][:, ix0]
    b = grid[iy0][:, ix1]
    c = grid[iy1][:, ix0]
    d = grid[iy1][:, ix1]
    return ((1.0 - fy) * ((1.0 - fx) * a + fx * b) + fy * ((1.0 - fx) * c + fx * d)).astype(np.float32)


def label_above_threshold(frame, bad, background, noise, k_sigma):
    """8-connected components by union-find over the above-threshold pixels."""
    signal = frame.astype(np.float64) - background.astype(np.float64)
    above = (signal > k_sigma * noise.astype(np.float64)) & (bad == 0)
    h, w = frame.shape
    coords = [tuple(p) for p in np.argwhere(above)]  # raster order
    index = {p: i for i, p in enumerate(coords)}
    parent = list(range(len(coords)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (y, x) in enumerate(coords):
        for dy, dx in ((0, -1), (-1, -1), (-1, 0), (-1, 1)):
            j = index.get((y + dy, x + dx))
            if j is not None:
                ri, rj = find(i), find(j)
                if ri != rj:
                    parent[max(ri, rj)] = min(ri, rj)
    labels = np.zeros((h, w), np.int32)
    root_label: dict[int, int] = {}
    for i, (y, x) in enumerate(coords):
        labels[y, x] = root_label.setdefault(find(i), len(root_label) + 1)
    return labels, len(root_label)


def _gauss3(left, centre, right):
    """Log-parabola vertex offset, or None where the three points do not make a peak."""
    if left > 0.0 and right > 0.0 and centre > 0.0:
        den = math.log(left) - 2.0 * math.log(centre) + math.log(right)
        if den < 0.0:
            return (math.log(left) - math.log(right)) / (2.0 * den)
    return None


def measure_components(frame, bad, background, noise, labels, n, radius, psf_sigma):
    h, w = frame.shape
    sig_img = frame.astype(np.float64) - background.astype(np.float64)
    out = np.zeros((n, N_COLUMNS))
    for i in range(n):
        ys, xs = np.nonzero(labels == i + 1)  # raster order
        significance = sig_img[ys, xs] / noise[ys, xs].astype(np.float64)
        k = int(np.argmax(significance))  # first maximum, as the kernel's strict '>'
        py, px = int(ys[k]), int(xs[k])
        good = bad == 0
        win = (slice(max(py - radius, 0), min(py + radius + 1, h)),
               slice(max(px - radius, 0), min(px + radius + 1, w)))
        flux = 0.0
        for y in range(win[0].start, win[0].stop):
            for x in range(win[1].start, win[1].stop):
                if good[y, x]:
                    flux += sig_img[y, x]
        wsum = sx = sy = 0.0
        for y in range(max(py - 1, 0), min(py + 2, h)):
            for x in range(max(px - 1, 0), min(px + 2, w)):
                s = sig_img[y, x]
                if good[y, x] and s > 0.0:
                    wsum += s
                    sx += s * (x - px)
                    sy += s * (y - py)
        centre = sig_img[py, px]
        dx = sx / wsum if wsum > 0.0 else 0.0
        dy = sy / wsum if wsum > 0.0 else 0.0
        if 0 < px < w - 1 and 0 < py < h - 1 and good[py - 1:py + 2, px - 1:px + 2].all():
            block = sig_img[py - 1:py + 2, px - 1:px + 2]
            cols = [block[0, j] + block[1, j] + block[2, j] for j in range(3)]
            rows = [block[i, 0] + block[i, 1] + block[i, 2] for i in range(3)]
            fit = _gauss3(*cols)
            dx = dx if fit is None else fit
            fit = _gauss3(*rows)
            dy = dy if fit is None else fit
        xc = px + min(max(dx, -1.0), 1.0)
        yc = py + min(max(dy, -1.0), 1.0)
        wsum = sxx = syy = sxy = 0.0
        for y in range(win[0].start, win[0].stop):
            for x in range(win[1].start, win[1].stop):
                s = sig_img[y, x]
                if good[y, x] and s > 0.0:
                    wsum += s
                    sxx += s * (x - xc) * (x - xc)
                    syy += s * (y - yc) * (y - yc)
                    sxy += s * (x - xc) * (y - yc)
        if wsum > 0.0:
            sxx, syy, sxy = sxx / wsum, syy / wsum, sxy / wsum
        half = 0.5 * (sxx + syy)
        root = math.sqrt(0.25 * (sxx - syy) * (sxx - syy) + sxy * sxy)
        sigma_n = float(noise[py, px])
        crb = min(math.sqrt(8.0 * math.pi) * psf_sigma ** 2 * sigma_n / flux, 1.0) if flux > 0 else 1.0
        out[i] = (xc, yc, crb, crb, flux, significance[k], centre, len(ys),
                  math.sqrt(half + root), math.sqrt(max(half - root, 0.0)),
                  0.5 * math.atan2(2.0 * sxy, sxx - syy))
    return out


class SingleFrameDetector:
    """Reference single-frame detector: flight.detection.SingleFrameDetector in numpy."""

    def __init__(self, config: DetectorConfig, shape: tuple[int, int],
                 calibration_bad_pixels: np.ndarray | None = None) -> None:
        self.config = config
        self.shape = check_shape(shape)
        self.bad = bad_pixel_mask(calibration_bad_pixels, self.shape)
        t = config.tile_size
        self._iy = interpolation_axis(self.shape[0], t)
        self._ix = interpolation_axis(self.shape[1], t)
        self._min_valid = max(1, int(np.ceil(config.min_tile_fraction * t * t)))
        self.frames_processed = 0

    def process(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame, self.shape)
        cfg = self.config
        median, sigma = tile_statistics(frame, self.bad, cfg.tile_size, self._min_valid)
        fill_invalid_tiles(median, sigma, cfg.noise_floor)
        self.background = interpolate_grid(median, self._iy, self._ix)
        self.noise = interpolate_grid(sigma, self._iy, self._ix)
        self.labels, n = label_above_threshold(frame, self.bad, self.background, self.noise,
                                               float(cfg.k_sigma))
        table = measure_components(frame, self.bad, self.background, self.noise, self.labels, n,
                                   cfg.aperture_radius, float(cfg.psf_sigma))
        self.frames_processed += 1
        return to_detections(table, cfg)


# ---------------------------------------------------------------------------
# Temporal pipeline twins (flight.kernels.detect_temporal)
# ---------------------------------------------------------------------------
BAD_CALIBRATION, BAD_DETECTED = 1, 2


# the 12 model reads of a registration point, as (row, column) offsets from its whole-pixel
# shift: the bilinear read's 2 x 2, and one more either side for its central differences
REGISTRATION_READS = ((0, -1), (0, 0), (0, 1), (0, 2), (1, -1), (1, 0), (1, 1), (1, 2),
                      (-1, 0), (-1, 1), (2, 0), (2, 1))


def _gauss_newton(gather, read_var, inv_gain, dx, dy, clip_sigma, iterations):
    """The registration's robust Gauss-Newton over the points gather(iy, ix) returns
    (frame values, {read offset: model values}); the 9 values of REGISTRATION_OUT."""
    det, n, s = 0.0, 0, dict(rr=0.0, mm=0.0, axx=0.0, axy=0.0, ayy=0.0)
    for it in range(iterations):
        clip = clip_sigma * 2 ** (iterations - 1 - it)
        iy, ix = math.floor(dy), math.floor(dx)
        fy, fx = dy - iy, dx - ix
        cy, cx = 1.0 - fy, 1.0 - fx
        f, reads = gather(iy, ix)

        def hx(dr, dc):  # bilinear along x in read row dr, between columns dc and dc + 1
            return cx * reads[dr, dc] + fx * reads[dr, dc + 1]
        h00, h10 = hx(0, 0), hx(1, 0)
        m = cy * h00 + fy * h10
        r = f - m
        keep = r * r <= clip * clip * (read_var + np.maximum(m, 0.0) * inv_gain)
        gx = 0.5 * ((cy * hx(0, 1) + fy * hx(1, 1)) - (cy * hx(0, -1) + fy * hx(1, -1)))
        gy = 0.5 * ((cy * h10 + fy * hx(2, 0)) - (cy * hx(-1, 0) + fy * h00))
        gx, gy, r, m = gx[keep], gy[keep], r[keep], m[keep]
        s = dict(axx=(gx * gx).sum(), axy=(gx * gy).sum(), ayy=(gy * gy).sum(), rr=(r * r).sum(),
                 mm=m.sum())
        bx, by = (gx * r).sum(), (gy * r).sum()
        n = len(r)
        det = s["axx"] * s["ayy"] - s["axy"] ** 2
        if n == 0 or det <= 1e-12 * (s["axx"] + s["ayy"]) ** 2 or det <= 0.0:
            det = 0.0
            break
        dx += min(max((s["ayy"] * bx - s["axy"] * by) / det, -2.0), 2.0)
        dy += min(max((s["axx"] * by - s["axy"] * bx) / det, -2.0), 2.0)
    per = 1.0 / n if n else 0.0
    return np.array([dx, dy, n, det * per * per, s["rr"] * per, s["mm"] * per,
                     s["axx"] * per, s["axy"] * per, s["ayy"] * per])


def register_shift(frame, bad, model, read_var, inv_gain, dx0, dy0, stride, margin,
                   clip_sigma, iterations):
    """Robust Gauss-Newton translation on the sparse grid; the 9 values of REGISTRATION_OUT.

    Bilinear reads of the model at p + d and one pixel either side, with the
    weights of d's fraction shared by every grid point."""
    h, w = frame.shape
    ys, xs = np.meshgrid(np.arange(margin, h - margin, stride), np.arange(margin, w - margin, stride),
                         indexing="ij")
    ys, xs = ys.ravel(), xs.ravel()
    m64 = model.astype(np.float64)

    def gather(iy, ix):
        y0, x0 = ys + iy, xs + ix
        ok = (y0 >= 1) & (y0 + 2 <= h - 1) & (x0 >= 1) & (x0 + 2 <= w - 1) & (bad[ys, xs] == 0)
        y, x, y0, x0 = ys[ok], xs[ok], y0[ok], x0[ok]
        return frame[y, x].astype(np.float64), {k: m64[y0 + k[0], x0 + k[1]] for k in REGISTRATION_READS}
    return _gauss_newton(gather, read_var, inv_gain, dx0, dy0, clip_sigma, iterations)


def register_blocks(frame, bad, model, read_var, inv_gain, dx0, dy0, block, margin,
                    clip_sigma, iterations):
    """register_shift on block means: each whole block x block block from margin on is one
    point, its frame mean over good pixels (none where fewer than half are good) against the
    model's mean over the block moved by each read offset; a mean's noise is a pixel's over
    block^2."""
    h, w = frame.shape
    ny, nx = max(h - 2 * margin, 0) // block, max(w - 2 * margin, 0) // block
    good = bad == 0
    fsum = np.where(good, frame, 0).astype(np.float64)
    fmean = np.full((ny, nx), np.nan)
    for by in range(ny):
        for bx in range(nx):
            rows = slice(margin + by * block, margin + (by + 1) * block)
            cols = slice(margin + bx * block, margin + (bx + 1) * block)
            count = good[rows, cols].sum()
            if 2 * count >= block * block:
                fmean[by, bx] = fsum[rows, cols].sum() / count
    m64 = model.astype(np.float64)
    inv = 1.0 / (block * block)

    def gather(iy, ix):
        f, reads = [], {k: [] for k in REGISTRATION_READS}
        for by in range(ny):
            y0 = margin + by * block + iy
            if y0 < 1 or y0 + block + 1 > h - 1:
                continue
            # the model's column sums over the block's rows, moved by 0, -1, 1 and 2 rows
            c = {0: np.cumsum(m64[y0:y0 + block], axis=0)[-1]}
            c[-1] = c[0] + m64[y0 - 1] - m64[y0 + block - 1]
            c[1] = c[0] - m64[y0] + m64[y0 + block]
            c[2] = c[1] - m64[y0 + 1] + m64[y0 + block + 1]
            # running sums along the row from column lo; a window's sum is a difference of two
            lo, hi = max(margin + ix - 1, 0), min(margin + nx * block + ix + 2, w)
            p = {dr: np.concatenate([[0.0], np.cumsum(cs[lo:hi])]) for dr, cs in c.items()}
            for bx in range(nx):
                x0 = margin + bx * block + ix
                if x0 < 1 or x0 + block + 1 > w - 1 or not np.isfinite(fmean[by, bx]):
                    continue
                f.append(fmean[by, bx])
                u = x0 - lo
                for (dr, dc), values in reads.items():
                    values.append(F32((p[dr][u + dc + block] - p[dr][u + dc]) * inv))
        return np.array(f, F32).astype(np.float64), {k: np.array(v, np.float64) for k, v in reads.items()}
    b2 = float(block * block)
    return _gauss_newton(gather, read_var / b2, inv_gain / b2, dx0, dy0, clip_sigma, iterations)


F32 = np.float32
# a hit adds this to a cell's persistence byte, which loses a quarter a frame (detect_pass's P)
PERSIST_STEP = 63


def warp_separable(src, oy, ox, wy, wx):
    """Separable 4x4 cubic interpolation in float32, taps summed left to right;
    (out, outside): out[y, x] = sum_ij wy[i] wx[j] src[y + oy + i - 1, x + ox + j - 1],
    0 and outside = 1 where a tap falls outside src."""
    h, w = src.shape
    s = src.astype(F32)
    wy, wx = np.asarray(wy, F32), np.asarray(wx, F32)
    xs = np.arange(w) + ox - 1
    okx = (xs >= 0) & (xs + 3 < w)
    scratch = np.zeros((h, w), F32)
    acc = wx[0] * s[:, xs[okx]]
    for j in range(1, 4):
        acc = acc + wx[j] * s[:, xs[okx] + j]
    scratch[:, okx] = acc
    ys = np.arange(h) + oy - 1
    oky = (ys >= 0) & (ys + 3 < h)
    out = np.zeros((h, w), F32)
    acc = wy[0] * scratch[ys[oky], :]
    for j in range(1, 4):
        acc = acc + wy[j] * scratch[ys[oky] + j, :]
    out[oky, :] = acc
    inside = oky[:, None] & okx[None, :]
    out[~inside] = 0.0
    return out, (~inside).astype(np.uint8)


def _clamp(v, lo, hi):
    v = np.where(v > lo, v, lo)
    return np.where(v < hi, v, hi)


def residual_and_hot(frame, bad, prediction, outside, hot_score, clip_sigma, clip_low, read_var,
                     inv_gain, hot_rate, hot_on, hot_off, hot_every=1, hot_phase=0):
    """(residual, clipped, hot_score, bad) as detect_pass computes them (float32); the hot
    score and the pixels it marks change on rows y % hot_every == hot_phase only."""
    p = prediction.astype(F32)
    r = frame.astype(F32) - p
    sigma = np.sqrt(F32(read_var) + np.where(p > 0, p, F32(0)) * F32(inv_gain))
    q = _clamp(r / sigma, F32(-20), F32(20))
    score = F32(1.0 - hot_rate) * hot_score.astype(F32) + F32(hot_rate) * q
    visited = (np.arange(frame.shape[0]) % hot_every == hot_phase)[:, None]
    inside = (outside == 0) & visited
    new_score = np.where(inside, score, hot_score).astype(F32)
    mag = np.abs(score)
    hot = (mag > F32(hot_on)) | (((bad & BAD_DETECTED) != 0) & (mag > F32(hot_off)))
    new_bad = np.where(inside, (bad & BAD_CALIBRATION) | np.where(hot, BAD_DETECTED, 0), bad)
    new_bad = new_bad.astype(np.uint8)
    use = (outside == 0) & (new_bad == 0)
    residual = np.where(use, r, F32(0)).astype(F32)
    clipped = np.where(use, _clamp(r, -F32(clip_low) * sigma, F32(clip_sigma) * sigma),
                       F32(0)).astype(F32)
    return residual, clipped, new_score, new_bad


def apply_update(model, update, outside, row_age, col_age, rate):
    """(model, row_age, col_age) after the update: a running mean while a cell is young,
    then rate; a cell is as old as the younger of its row and column."""
    def alpha(age):
        a = F32(1) / (age.astype(F32) + F32(1))
        return np.where(a > F32(rate), a, F32(rate))
    a_row, a_col = alpha(row_age)[:, None], alpha(col_age)[None, :]
    a = np.where(a_row > a_col, a_row, a_col)
    inside = outside == 0
    new_model = np.where(inside, model.astype(F32) + a * update.astype(F32), model).astype(F32)
    rows, cols = inside.any(axis=1), inside.any(axis=0)

    def older(age, seen):
        return np.where(seen, np.minimum(age.astype(np.int64) + 1, 65535), age).astype(np.uint16)
    return new_model, older(row_age, rows), older(col_age, cols)


def filter_separable(residual, taps):
    """residual (*) taps along x then y, zero outside, float32; the taps are symmetric and
    summed centre first, then the pairs outwards."""
    h, w = residual.shape
    r = len(taps) // 2
    taps = np.asarray(taps, F32)
    pad = np.zeros((h + 2 * r, w + 2 * r), F32)
    pad[r:r + h, r:r + w] = residual
    rows = taps[r] * pad[:, r:r + w]
    for k in range(1, r + 1):
        rows = rows + taps[r + k] * (pad[:, r - k:r - k + w] + pad[:, r + k:r + k + w])
    acc = taps[r] * rows[r:r + h]
    for k in range(1, r + 1):
        acc = acc + taps[r + k] * (rows[r - k:r - k + h] + rows[r + k:r + k + h])
    return acc


def matched_filter(residual, taps, variance, vy, vx, rate, clip, variance_floor, hold_z, hold_rate,
                   learn=(0, 2**31, 0, 2**31), gate_z=None, model_z=None, persist=None,
                   persistence=(0.0, 0.0, 255, 255), hold_window=(0, 2**31, 0, 2**31),
                   variance_gain=1.0, young_variance=None):
    """(filtered, zscore, above, gated, held, new variance) as detect_pass computes them
    (float32): above is F > 0 and F^2 > k^2 V (k = hold_z), gated F > 0 and F^2 > g^2 V
    (g = gate_z, k if None) or the cell's persistence was above its hold byte (the
    variance learns at hold_rate there), held F > 0 and F^2 > m^2 V (m = model_z, g if None)
    or the persistence is above its hold byte (the model is held there), zscore F / sqrt(V)
    with the V each pixel read.  persist (uint8, updated in place where the variance
    learns, as detect_pass's P) and persistence = (p, pk, hold, detect): a pixel whose
    persistence is at least detect and F > 0 and F^2 > pk^2 V is above too.  The variance
    learns at hold_rate only in cells (rows y0..y1, columns x0..x1 of hold_window); each
    frame's term is times variance_gain, and outside hold_window the clip and gain are
    young_variance's (clip, gain), where given."""
    h, w = residual.shape
    acc = filter_separable(residual, taps)
    variance = variance.astype(F32).copy()
    zscore = np.empty((h, w), F32)
    above = np.empty((h, w), bool)
    gated = np.empty((h, w), bool)
    held = np.empty((h, w), bool)
    k2 = F32(hold_z * hold_z)
    g2 = k2 if gate_z is None else F32(gate_z * gate_z)
    m2 = g2 if model_z is None else F32(model_z * model_z)
    if persist is None:
        persist = np.zeros((h, w), np.uint8)
    p_sigma, p_k, p_hold, p_detect = persistence
    p2, pk2 = F32(p_sigma * p_sigma), F32(p_k * p_k)
    keep_rate, keep_hold = F32(1.0 - rate), F32(1.0 - hold_rate)
    young_clip, young_gain = (clip, variance_gain) if young_variance is None else young_variance
    young_rate, young_clip2 = F32(rate * young_gain), F32(young_clip * young_clip)
    rate, hold_rate = F32(rate * variance_gain), F32(hold_rate * variance_gain)
    clip2 = F32(clip * clip)
    floor, hold_z = F32(variance_floor), F32(hold_z)
    # pixels read the variance cell (y + vy, x + vx) clamped: done in raster order
    # because clamped edge pixels share a cell, each reading the previous update
    for y in range(h):
        vyy = min(max(y + vy, 0), h - 1)
        for x in range(w):
            vxx = min(max(x + vx, 0), w - 1)
            v = variance[vyy, vxx]
            pc = int(persist[vyy, vxx])
            a = acc[y, x]
            zscore[y, x] = a / np.sqrt(v)
            above[y, x] = a > 0 and a * a > k2 * v
            gated[y, x] = hit = (a > 0 and a * a > g2 * v) or pc > p_hold
            held[y, x] = a > 0 and a * a > m2 * v
            if learn[0] <= y < learn[1] and learn[2] <= x < learn[3]:
                holds = hold_window[0] <= vyy < hold_window[1] and hold_window[2] <= vxx < hold_window[3]
                f2 = min(a * a, (clip2 if holds else young_clip2) * v)
                u, keep = ((hold_rate, keep_hold) if hit and holds
                           else (rate, keep_rate) if holds else (young_rate, keep_rate))
                nv = keep * v + u * f2
                variance[vyy, vxx] = nv if nv > floor else floor
                # the persistence learns after, from the V the pixel read
                pc = pc - (pc >> 2) + (PERSIST_STEP if a > 0 and a * a > p2 * v else 0)
                persist[vyy, vxx] = pc
            held[y, x] |= pc > p_hold
            above[y, x] |= pc >= p_detect and a > 0 and a * a > pk2 * v
    return acc, zscore, above, gated, held, variance


def detect_pass(frame, bad, model, row_age, col_age, variance, hot_score, offset, taps, config,
                variance_floor, hot_phase=0, persist=None, free=False):
    """The twin of the kernel's one pass, stage by stage on whole arrays.

    Returns a dict of the new state (model, row_age, col_age, variance, hot_score, bad), the
    residual, filtered and zscore maps, and the candidates (flat index, Z)."""
    from flight import detection as d
    cfg = config
    window = d.variance_hold_window(row_age, col_age, free, cfg)
    if persist is None:
        persist = np.zeros(frame.shape, np.uint8)
    fx, fy = offset
    (oy, wy), (ox, wx) = d.split_shift(fy), d.split_shift(fx)
    (uy, uwy), (ux, uwx) = d.split_shift(-fy), d.split_shift(-fx)
    prediction, outside = warp_separable(model, oy, ox, d.as_weights(wy), d.as_weights(wx))
    residual, clipped, hot_score, bad = residual_and_hot(
        frame, bad, prediction, outside, hot_score, cfg.model_clip, cfg.model_clip_low,
        cfg.read_noise**2, 1.0 / cfg.gain, d.visit_rate(cfg.hot_rate, cfg.hot_every), cfg.hot_on,
        cfg.hot_off, cfg.hot_every, hot_phase)
    filtered, zscore, above, gated, held, variance = matched_filter(
        residual, d.as_weights(taps), variance, int(round(fy)), int(round(fx)), cfg.variance_rate,
        cfg.variance_clip, variance_floor, d.candidate_sigma(cfg), cfg.variance_rate * cfg.variance_hold,
        d.learn_window(frame.shape, oy, ox, len(taps) // 2), d.gate_sigma(cfg), d.hold_sigma(cfg),
        persist, d.persistence(cfg), window, **d.variance_learning(cfg, free))
    clipped = np.where(held & (bad == 0), F32(0), clipped)  # hold the model above its gate
    update, outside_u = warp_separable(clipped, uy, ux, d.as_weights(uwy), d.as_weights(uwx))
    model, row_age, col_age = apply_update(model, update, outside_u, row_age, col_age,
                                           cfg.model_rate)
    index = np.flatnonzero(above).astype(np.int32)
    return dict(model=model, row_age=row_age, col_age=col_age, variance=variance,
                persist=persist, hot_score=hot_score, bad=bad, residual=residual, filtered=filtered, zscore=zscore,
                above=above, cand_index=index, cand_z=zscore.ravel()[index])


def shift_cells(array, ky, kx):
    """Twin of the kernel's shift_cells: array(u) <- array(u + k), vacated cells repeat the
    nearest kept edge (numpy copies overlapping slices correctly)."""
    from flight.detection import moved_axis
    h, w = array.shape
    sy, dy, vy = moved_axis(h, ky)
    sx, dx, vx = moved_axis(w, kx)
    array[dy, dx] = array[sy, sx]
    if ky:
        array[vy, :] = array[h - ky - 1 if ky > 0 else -ky, :]
    if kx:
        edge = w - kx - 1 if kx > 0 else -kx
        array[:, vx] = array[:, edge:edge + 1]


def label_above(above, bad):
    """Components of the good pixels above the threshold (via the union-find twin above)."""
    h, w = above.shape
    frame = (above & (bad == 0)).astype(np.uint16)
    zeros = np.zeros((h, w), np.float32)
    return label_above_threshold(frame, np.zeros((h, w), np.uint8), zeros,
                                 np.ones((h, w), np.float32), 0.5)


def find_peaks(zscore, labels, n, radius):
    """(component sizes, flat indices of the local maxima of zscore among labelled pixels)."""
    h, w = zscore.shape
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:n + 1].astype(np.int32)
    peaks = []
    competing = np.where(labels != 0, zscore, -np.inf)  # bad pixels do not compete
    for y, x in np.argwhere(labels != 0):  # raster order
        z = zscore[y, x]
        window = competing[max(y - radius, 0):y + radius + 1, max(x - radius, 0):x + radius + 1]
        wy, wx = np.mgrid[max(y - radius, 0):min(y + radius + 1, h), max(x - radius, 0):min(x + radius + 1, w)]
        earlier = (wy < y) | ((wy == y) & (wx < x))
        if not np.any((window > z) | ((window == z) & earlier)):
            peaks.append(y * w + x)
    return sizes, np.array(peaks, np.int64)


def gaussian_fit(residual, bad, py, px, r, sigma, iterations, xc, yc):
    """Twin of the kernel's _gaussian_fit: (x, y, peak) of a circular Gaussian fitted by
    Gauss-Newton to the good residual pixels within r of (py, px), from (xc, yc) and width
    sigma, or None where the fit does not hold."""
    from flight import detection as d
    limits = d.GAUSSIAN_FIT
    h, w = residual.shape
    r = min(r, limits["max_radius"])
    ys, xs = np.mgrid[max(py - r, 0):min(py + r + 1, h), max(px - r, 0):min(px + r + 1, w)]
    good = bad[ys, xs] == 0
    ys, xs = ys[good].astype(np.float64), xs[good].astype(np.float64)
    data = residual[ys.astype(int), xs.astype(int)].astype(np.float64)
    cx, cy, s = xc, yc, sigma
    g = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2.0 * s * s))
    if not np.sum(g * g) > 0.0:
        return None
    amp = np.sum(data * g) / np.sum(g * g)
    for _ in range(iterations):
        dx, dy = xs - cx, ys - cy
        d2, s2 = dx * dx + dy * dy, s * s
        g = np.exp(-d2 / (2.0 * s2))
        jac = np.stack([amp * g * dx / s2, amp * g * dy / s2, g, amp * g * d2 / (s2 * s)], axis=1)
        normal = jac.T @ jac + limits["damping"] * np.eye(4)
        try:
            step = np.linalg.solve(normal, jac.T @ (data - amp * g))
        except np.linalg.LinAlgError:
            return None
        cx += min(max(step[0], -limits["step_px"]), limits["step_px"])
        cy += min(max(step[1], -limits["step_px"]), limits["step_px"])
        amp += step[2]
        s += min(max(step[3], -limits["width_step"] * s), limits["width_step"] * s)
        if abs(step[0]) < limits["converged_px"] and abs(step[1]) < limits["converged_px"]:
            break
    low, high = limits["width_range"]
    if (math.isfinite(cx) and math.isfinite(cy) and amp > 0.0 and low < s < high
            and abs(cx - xc) <= limits["reach_px"] and abs(cy - yc) <= limits["reach_px"]):
        return cx, cy, amp
    return None


def measure_targets(frame, residual, filtered, zscore, labels, sizes, peaks, radius, psf_sigma,
                    read_var, inv_gain, bad=None, fit_radius=0, fit_iterations=0):
    h, w = residual.shape
    res = residual.astype(np.float64)
    filt = filtered.astype(np.float64)
    out = np.zeros((len(peaks), N_COLUMNS + 2))
    for i, index in enumerate(peaks):
        py, px = divmod(int(index), w)
        c = filt[py, px]
        dx = dy = 0.0
        if 0 < px < w - 1:
            fit = _gauss3(filt[py, px - 1], c, filt[py, px + 1])
            dx = 0.0 if fit is None else fit
        if 0 < py < h - 1:
            fit = _gauss3(filt[py - 1, px], c, filt[py + 1, px])
            dy = 0.0 if fit is None else fit
        xc = px + min(max(dx, -1.0), 1.0)
        yc = py + min(max(dy, -1.0), 1.0)
        qy = min(max(int(math.floor(yc + 0.5)), 0), h - 1)
        qx = min(max(int(math.floor(xc + 0.5)), 0), w - 1)
        peak_r, sum3 = -1e300, 0.0
        lines = [0.0, 0.0, 0.0, 0.0]  # the row, column, diagonal and anti-diagonal through (qy, qx)
        for y in range(max(qy - 1, 0), min(qy + 2, h)):
            for x in range(max(qx - 1, 0), min(qx + 2, w)):
                sum3 += res[y, x]
                peak_r = max(peak_r, res[y, x])
                for k, on in enumerate((y == qy, x == qx, y - qy == x - qx, y - qy == qx - x)):
                    if on:
                        lines[k] += res[y, x]
        flux = wsum = sxx = syy = sxy = 0.0
        for y in range(max(py - radius, 0), min(py + radius + 1, h)):
            for x in range(max(px - radius, 0), min(px + radius + 1, w)):
                s = res[y, x]
                flux += s
                if s > 0.0:
                    wsum += s
                    sxx += s * (x - xc) * (x - xc)
                    syy += s * (y - yc) * (y - yc)
                    sxy += s * (x - xc) * (y - yc)
        if wsum > 0.0:
            sxx, syy, sxy = sxx / wsum, syy / wsum, sxy / wsum
        half = 0.5 * (sxx + syy)
        root = math.sqrt(0.25 * (sxx - syy) * (sxx - syy) + sxy * sxy)
        prediction = float(frame[py, px]) - res[py, px]
        sigma_n = math.sqrt(read_var + max(prediction, 0.0) * inv_gain)
        crb = min(math.sqrt(8.0 * math.pi) * psf_sigma ** 2 * sigma_n / flux, 1.0) if flux > 0 else 1.0
        fx, fy = xc, yc
        fit = gaussian_fit(res, bad, py, px, fit_radius, psf_sigma, fit_iterations, xc, yc) if fit_iterations > 0 else None
        if fit is not None:
            fx, fy, peak = fit
            crb = min(math.sqrt(2.0 / math.pi) * sigma_n / peak, 1.0)
        out[i] = (fx, fy, crb, crb, flux, float(zscore[py, px]), peak_r, sizes[labels[py, px] - 1],
                  math.sqrt(half + root),
                  math.sqrt(max(half - root, 0.0)), 0.5 * math.atan2(2.0 * sxy, sxx - syy),
                  peak_r / sum3 if sum3 > 0.0 else 1.0,
                  min(max(max(lines[0], lines[1]), max(lines[2], lines[3])) / sum3, 1.0) if sum3 > 0.0 else 1.0)
    return out


def bilinear_at(image: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Bilinear samples of image at (ys, xs), clamped to the image."""
    h, w = image.shape
    ys = np.clip(ys, 0.0, h - 1.0)
    xs = np.clip(xs, 0.0, w - 1.0)
    y0 = np.minimum(np.floor(ys).astype(np.int64), h - 2)
    x0 = np.minimum(np.floor(xs).astype(np.int64), w - 2)
    fy, fx = ys - y0, xs - x0
    im = image.astype(np.float64)
    return ((1.0 - fy) * ((1.0 - fx) * im[y0, x0] + fx * im[y0, x0 + 1])
            + fy * ((1.0 - fx) * im[y0 + 1, x0] + fx * im[y0 + 1, x0 + 1]))


def repaired_samples(frame: np.ndarray, bad: np.ndarray, ys: np.ndarray,
                     xs: np.ndarray) -> np.ndarray:
    """bilinear_at(fill_bad(frame, bad != 0), ys, xs), repairing only the window the samples
    read (bad: nonzero where bad)."""
    h, w = frame.shape
    ys = np.clip(ys, 0.0, h - 1.0)
    xs = np.clip(xs, 0.0, w - 1.0)
    y0 = np.minimum(np.floor(ys).astype(np.int64), h - 2)
    x0 = np.minimum(np.floor(xs).astype(np.int64), w - 2)
    wy0, wy1, wx0, wx1 = y0.min(), y0.max() + 2, x0.min(), x0.max() + 2
    window = frame[wy0:wy1, wx0:wx1].astype(np.float32)
    for y, x in np.argwhere(bad[wy0:wy1, wx0:wx1]):
        window[y, x] = _good_median(frame, bad, y + wy0, x + wx0)
    # integer shifts of in-range coordinates are exact: the same samples as on the whole frame
    return bilinear_at(window, ys - wy0, xs - wx0)


def fill_new_cells(frame, bad, model, variance, rows, cols, fy, fx, config, taps):
    """Twin of flight.detection.fill_new_cells (the kernel's): the new cells (rows, cols)
    from this frame, repaired and resampled in numpy; variance no lower than white noise."""
    ys, xs = np.meshgrid(np.arange(model.shape[0])[rows], np.arange(model.shape[1])[cols],
                         indexing="ij")
    if not ys.size:
        return
    fresh = repaired_samples(frame, bad, ys - fy, xs - fx).astype(np.float32)
    model[rows, cols] = fresh
    # white shot+read noise, doubled (one noisy frame), through the filter: in float32 from
    # float32 read variance and gain, as the kernel computes it (hints are seldom exact)
    pixel_var = F32(config.read_noise**2) + np.maximum(fresh, F32(0)) / F32(config.gain)
    white = (F32(2) * pixel_var) * F32(float(np.sum(np.asarray(taps, np.float64) ** 2)) ** 2)
    np.maximum(variance[rows, cols], white, out=variance[rows, cols])


class TemporalDetector:
    """Reference temporal detector: flight.detection.TemporalDetector, stage by stage in numpy."""

    def __init__(self, config: DetectorConfig, shape, calibration_bad_pixels=None) -> None:
        from flight import detection as d
        self._d = d
        self.config = config
        self.shape = check_shape(shape)
        self.calibration = bad_pixel_mask(calibration_bad_pixels, self.shape)
        self.bad = self.calibration.copy()
        self.taps = d.filter_taps(config)
        self.model = self.variance = None
        self.hot_score = np.zeros(self.shape, np.float32)
        self.persist = np.zeros(self.shape, np.uint8)
        self.lagged = None
        self.sources_taken_back = 0
        self.row_age = np.zeros(self.shape[0], np.uint16)
        self.col_age = np.zeros(self.shape[1], np.uint16)
        self.offset = np.zeros(2)
        self.drift = np.zeros(2)
        self.frames_processed = 0
        self.faint = np.empty(0, DETECTION_DTYPE)
        self.seed_sources = d.SeedSources(np.zeros((0, 2)))
        self.seed_learned = 0
        self.floor_ratio = 0.0
        self.residual_noise_scale = 1.0
        self.usual_inliers = float(d.registration_points(self.shape, config.register_stride,
                                                         config.register_margin))
        self.registration_retries = 0
        self.block_registrations = 0

    def process(self, frame):
        d, cfg = self._d, self.config
        check_frame(frame, self.shape)
        if self.frames_processed == 0:
            self.model, self.noise_scale, self.seed_sources = d.seed_state(
                frame, self.bad, self.hot_score, cfg, self.taps)
            self.sensor = d.noise_hints(cfg, self.noise_scale)
            self.variance = d.initial_variance(self.model, self.sensor, self.taps)
            self.lagged = self.model.copy()
            self.row_age[...] = 1
            self.col_age[...] = 1
            self.frames_processed = 1
            return np.empty(0, DETECTION_DTYPE)
        sensor = self.sensor
        read_var, inv_gain = sensor.read_noise**2, 1.0 / sensor.gain
        guess = self.offset + self.drift

        def measure(gx, gy):
            return register_shift(frame, self.bad, self.model, read_var, inv_gain, float(gx),
                                  float(gy), cfg.register_stride, cfg.register_margin,
                                  cfg.register_clip, cfg.register_iterations)
        def measure_blocks(gx, gy):
            return register_blocks(frame, self.bad, self.model, read_var, inv_gain, float(gx),
                                   float(gy), cfg.register_block, cfg.register_margin,
                                   cfg.register_clip, cfg.register_iterations)
        fine, retried = d.robust_registration(measure, guess, self.usual_inliers, cfg.register_retry)
        self.registration_retries += retried
        reg, by_blocks = d.checked_by_blocks(fine, measure_blocks, read_var, inv_gain, cfg)
        self.block_registrations += by_blocks
        self.usual_inliers = d.usual_inliers(self.usual_inliers, reg[2])
        self.drift += cfg.drift_rate * ((reg[:2] - self.offset) - self.drift)
        self.offset = reg[:2].copy()
        if np.any(np.abs(self.offset) > d.REANCHOR_PX):
            kx, ky = (int(v) for v in np.rint(self.offset))
            self.offset -= (kx, ky)
            d.reanchor(self.model, self.variance, self.row_age, self.col_age, frame, self.bad, ky, kx,
                       float(self.offset[1]), float(self.offset[0]), sensor, self.taps,
                       shift=shift_cells, fill=fill_new_cells)
            d.shift_persistence(self.persist, ky, kx)
            d.shift_lagged(self.lagged, self.model, ky, kx, shift_cells)
            self.seed_sources.moved(ky, kx, self.shape)
        fx, fy = float(self.offset[0]), float(self.offset[1])
        if self.frames_processed == 1:
            self.residual_noise_scale = d.remeasured_noise(frame, self.bad, self.model, self.variance,
                                                           fy, fx, self.noise_scale, cfg)
        free = d.variance_free(self.frames_processed, cfg)
        held = self.seed_sources.variance_around(self.variance, d.seed_hold_radius(cfg)) if free else []
        out = detect_pass(frame, self.bad, self.model, self.row_age, self.col_age, self.variance,
                          self.hot_score, (fx, fy), self.taps,
                          sensor, d.VARIANCE_FLOOR, self.frames_processed % cfg.hot_every,
                          self.persist, free)
        self.model, self.variance = out["model"], out["variance"]
        d.put_back_variance(self.variance, held)
        self.row_age, self.col_age = out["row_age"], out["col_age"]
        self.floor_ratio = d.keep_variance_floor(self.variance, self.model, self.row_age, self.col_age,
                                                 self.frames_processed, self.floor_ratio, sensor, self.taps)
        self.sources_taken_back += d.lagged_sources(self.model, self.lagged, self.variance,
                                                    self.row_age, self.col_age,
                                                    self.frames_processed, cfg, self.taps)
        self.hot_score, self.bad, self.residual = out["hot_score"], out["bad"], out["residual"]
        self.zscore = out["zscore"]
        self.labels, n = label_above(out["above"], self.bad)
        sizes, peaks = find_peaks(self.zscore, self.labels, n, cfg.peak_radius)
        n_strong = len(peaks)
        if len(peaks) and d.faint_on(cfg):
            # the strong candidates' peaks alone first, then the faint peaks beside none of them
            pixels = np.flatnonzero(self.labels)
            strong = np.zeros(self.labels.size, bool)
            strong[pixels] = d.strong_candidates(self.zscore.ravel()[pixels], pixels, self.persist,
                                                 int(round(self.offset[1])), int(round(self.offset[0])), cfg)
            _, strong_peaks = find_peaks(self.zscore, np.where(strong.reshape(self.labels.shape),
                                                               self.labels, 0), n, cfg.peak_radius)
            faint = peaks[d.faint_peaks(peaks, strong_peaks, strong[peaks], self.shape[1], cfg.peak_radius)]
            peaks, n_strong = np.concatenate([strong_peaks, faint]), len(strong_peaks)
        table = measure_targets(frame, self.residual, out["filtered"], self.zscore, self.labels,
                                sizes, peaks, cfg.aperture_radius, float(cfg.psf_sigma), read_var,
                                inv_gain, self.bad, d.residual_reach(cfg), cfg.centroid_fit_iterations)
        self.frames_processed += 1
        detections, self.faint = d.finish_detections(table, cfg, np.arange(len(peaks)) >= n_strong)
        if len(self.seed_sources):
            self.seed_learned += self.seed_sources.watch(detections, self.offset, self.frames_processed,
                                                         self.model, self.lagged, cfg)
        return detections


class Detector:
    """Reference detector, same interface and results as flight.detection.Detector."""

    def __init__(self, config: DetectorConfig, shape, calibration_bad_pixels=None) -> None:
        kind = TemporalDetector if config.mode == "temporal" else SingleFrameDetector
        self.config = config
        self.pipeline = kind(config, shape, calibration_bad_pixels)
        self.shape = self.pipeline.shape

    def process(self, frame):
        return self.pipeline.process(frame)
