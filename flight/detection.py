"""Point-target detection: the public API over flight.kernels.detect.

A Detector is built once for a sensor shape; ``process(frame)`` checks the
frame, then runs the kernel stages (each releases the GIL) on buffers
allocated here at start-up:

    tile statistics (median, MAD sigma) -> bilinear background and noise maps
    -> k-sigma threshold + 8-connected components -> per-component measurement

The result is one structured array of DETECTION_DTYPE, most significant first.
flight/detection_ref.py is the numpy twin with the same interface.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, replace

import numpy as np

from flight.kernels import detect as _kernel
from flight.kernels import detect_temporal as _temporal

from kestrel.products import DETECTION_COLUMN, DETECTION_DTYPE
from kestrel.settings import ConfigurationError, Settings, describe, setting


def _check_kernel_columns(kernel, extra: tuple[str, ...] = ()) -> None:
    """The kernel's measurement table must lay out DETECTION_DTYPE's fields in order, then `extra`."""
    expected = tuple(DETECTION_DTYPE.names) + extra
    if tuple(kernel.COLUMNS) != expected:
        raise ImportError(f"{kernel.__name__} measures columns {kernel.COLUMNS}, "
                          f"kestrel.products.DETECTION_DTYPE needs {expected}: rebuild the kernels")


_check_kernel_columns(_kernel)
_check_kernel_columns(_temporal, ("sharpness", "line_fraction"))
SHARPNESS_COLUMN = len(DETECTION_DTYPE.names)
LINE_COLUMN = SHARPNESS_COLUMN + 1

FRAME_DTYPE = np.dtype(np.uint16)

# The model is moved by whole pixels once the offset exceeds this, keeping it over the view.
REANCHOR_PX = 4.0

# Lowest variance of the filtered residual (counts^2): keeps Z finite on a flat, noiseless scene.
VARIANCE_FLOOR = 1e-6
# the kernel clamps the hot score's input to this many noise sigmas (detect_pass)
SCORE_CLIP = 20.0
BAD_DETECTED = _temporal.BAD_BITS["detected"]
# the limits of measure_targets' Gaussian fit of the centroid (centroid_fit_iterations)
GAUSSIAN_FIT = _temporal.fit_constants()
MAD_TO_SIGMA = 1.482602218505602  # sigma of a normal distribution over its median absolute deviation
# the noise the data show is taken to lie within this factor (in variance) of the hints
NOISE_SCALE_LIMIT = 64.0
CLUTTER_LEAST_CELLS = 64  # mature cells clutter_gain needs to measure a gain
# keep_variance_floor: the ratio is measured this often (frames) on every FLOOR_STRIDE-th row and
# column of mature cells, and each frame floors one FLOOR_BANDS-th of the rows, in turn (the
# variance learns at a few per cent a frame: a cell floored every FLOOR_BANDS frames is enough)
FLOOR_MEASURE_EVERY = 32
FLOOR_STRIDE = 8
FLOOR_BANDS = 8
NOISE_ROW_STRIDE = 4  # residual_noise_scale reads every 4th row: ~8 rows of each 32-px tile
NOISE_MARGIN = 4
FREE_CLIP = 1000.0  # sigmas: no clip (variance_learning)
# lagged_sources: a source the model gained keeps this share of its filtered peak above the
# mean of its ring seed_ring px out if it is compact (a PSF of sigma <= 2 px keeps ~0.7 at 3 px;
# a cloud that grows, sigma 6, ~0.1)
LAG_COMPACT = 0.5
# compact_sources: a seed-frame source's ring departs from a plane by less than this many noise
# sigmas plus this fraction of the source's contrast (a PSF's wings on the square ring: < 0.1)
SEED_SMOOTH, SEED_SHAPE = 2.5, 0.1
# ... and the scene around it (the ring 2 seed_ring + 1 px away) departs from a plane by less
# than this many pixel noise sigmas: a target on textured cloud is left to be found once it moves
SEED_BACKGROUND = 1.5  # bad-mask bit of a pixel found bad from the data


@dataclass(frozen=True)
class DetectorConfig(Settings):
    """Detector parameters; every one has a documented default and range."""

    k_sigma: float = setting(5.0, "threshold in units of the local noise sigma (CFAR level)", above=0)
    min_pixels: int = setting(1, "smallest connected component (pixels) reported as a detection", low=1)
    max_detections: int = setting(256, "most detections reported per frame, most significant first",
                                  low=1, high=65535)
    tile_size: int = setting(32, "side (px) of the background/noise estimation tiles", low=4, high=4096)
    min_tile_fraction: float = setting(
        0.25, "fraction of good pixels a tile needs for its own estimate, else the grid median", above=0, high=1)
    noise_floor: float = setting(1.0, "lowest noise sigma (counts) used, guards flat/saturated tiles", above=0)
    aperture_radius: int = setting(2, "half-size (px) of the square window for flux and shape", low=1, high=32)
    psf_sigma: float = setting(1.0, "expected PSF Gaussian sigma (px): matched filter and centroid uncertainty",
                               above=0, high=16)
    mode: str = setting("temporal", "pipeline: temporal (registered background model) | single (one frame)",
                        choices=("temporal", "single"))
    read_noise: float = setting(10.0, "sensor read noise sigma (counts), for the shot+read noise model", low=0)
    gain: float = setting(1.0, "sensor gain (electrons per count), for the shot noise model", above=0)
    filter_radius: int = setting(2, "half-width (px) of the separable Gaussian matched filter", low=1, high=16)
    model_rate: float = setting(0.05, "background model update rate per frame (temporal mode)", above=0, high=1)
    model_clip: float = setting(2.5, "positive residuals update the model at most this many noise sigmas", above=0)
    model_clip_low: float = setting(5.0, "negative residuals update the model at most this many noise sigmas", above=0)
    variance_rate: float = setting(0.03, "update rate of the per-pixel variance of the filtered residual",
                                   above=0, high=1)
    variance_clip: float = setting(
        1.75, "a frame raises the variance at most as by this many sigmas (its term unbiased on noise: "
        "variance_gain), in the cells where the variance may be held (variance_hold_age): a slow "
        "target's own residual and wings, on the same cells for tens of frames, taught the "
        "variance at 2.5 that they were noise", low=1)
    variance_clip_young: float = setting(
        2.5, "variance_clip of the cells younger than variance_hold_age (a strip a drift brought "
        "into view): their variance starts from an estimate and must be free to rise fast; at "
        "1.75 a development heavy-cloud scene drifting 1.4 px/frame went from 3.4 to 8.6 false "
        "alarms a frame", low=1)
    variance_hold: float = setting(
        0.1, "variance rate multiplier where the statistic is above the gate (gate_sigma)", low=0, high=1)
    variance_hold_age: int = setting(
        32, "the variance is held (gate_sigma, persist_hold) only in cells at least this many "
        "frames old, or as old as the seed's, rows and columns (hold_window): a cell a drift "
        "brings into view starts from "
        "an estimate, and one held while that estimate is too low stays too low, its clutter a "
        "false alarm frame after frame (a heavy-cloud development scene drifting 1.4 px/frame made "
        "20 a frame in the strip entering view; 0: held from the first frame)", low=0, high=65535)
    variance_free_frames: int = setting(
        12, "frames after the seed over which the variance is held nowhere (variance_hold_window) "
        "but around the compact sources the seed kept out (SeedSources.variance_around), and "
        "learns without a clip (variance_learning): it starts from the sensor's noise "
        "(remeasured_noise), and the clutter's must be free to rise above it at once; held from "
        "the start, a sharp heavy-cloud scene drifting 1.4 px/frame made 5.5-11.7 false alarms a "
        "frame over frames 10-39, 2.7-2.8 with 12 free frames (0: held from the start)",
        low=0, high=65535)
    gate_sigma: float = setting(
        3.0, "a positive statistic above this many sigmas (at most k_sigma) is a compact source being "
        "watched: the model is not updated there and the variance learns it at the held rate only",
        low=0, high=50)
    hold_sigma: float = setting(
        3.0, "a positive statistic above this many sigmas (at most gate_sigma) holds the background "
        "model there, so that a slow target's core and wings are not learned (on development "
        "scenes 2 found more of the targets slower than 0.3 px/frame, but the hold on noise "
        "biases the model low and raised false alarms by half)", low=0, high=50)
    persist_sigma: float = setting(
        2.5, "a positive statistic above this many sigmas is a hit for the persistence of its "
        "scene cell, which counts the recent frames with one (a quarter forgotten each frame)",
        above=0, high=50)
    persist_hold: float = setting(
        0.5, "persistence (0..1) above which the model and the variance are held there: a slow "
        "target, which they would learn, persists; noise seldom passes persist_sigma frames on "
        "end (above 1: never)", low=0, high=2)
    persist_detect: float = setting(
        0.75, "persistence (0..1) from which a positive statistic above persist_k is a candidate "
        "too: a faint source that stays is found (above 1: never)", low=0, high=2)
    persist_k: float = setting(
        4.0, "threshold (sigmas) of a persistent candidate (at most k_sigma)", above=0, high=50)
    hot_rate: float = setting(0.02, "update rate of the per-pixel persistent-residual (hot pixel) score",
                              above=0, high=1)
    hot_on: float = setting(
        7.0, "persistent residual (pixel noise sigmas) that marks a pixel as gone hot: above what "
        "a slow target's peak pixel keeps up while it sits on it (at 3.5 the peak pixels of slow "
        "targets were marked, in 14 % of the slow misses on development scenes, and the "
        "centroids of the rest bent round the hole; pixels hot from the start are found by the "
        "seed, and one going hot by less is a fixed source that the tracker flags, never alerts)",
        low=0)
    hot_off: float = setting(1.5, "score below which a pixel marked hot is trusted again (at most hot_on)", low=0)
    hot_every: int = setting(
        2, "the hot score visits one row in this many per frame, in turn (hot_rate stays per frame)", low=1, high=64)
    register_stride: int = setting(8, "registration uses every n-th row and column", low=1, high=256)
    register_margin: int = setting(8, "registration ignores this many pixels at each edge", low=2, high=1024)
    register_clip: float = setting(4.0, "registration ignores pixels whose residual exceeds this many sigmas", above=0)
    register_iterations: int = setting(3, "Gauss-Newton iterations of the registration", low=0, high=50)
    register_retry: float = setting(
        0.98, "a registration that keeps fewer than this fraction of its usual inliers has not "
        "converged (a jump beyond its reach): it is tried again from starting points around "
        "the guess and the one keeping most is taken (0: never; 0.95 let a development scene "
        "with 1 px rms of jitter and a sharp PSF settle 0.5-1 px off, keeping 0.952-0.965, "
        "with 250 false alarms each time; a converged one kept 0.993 or more)", low=0, high=1)
    register_block: int = setting(
        16, "side (px) of the blocks whose means check the registration on terrain of low "
        "contrast (register_blocks; 0: no check)", low=0, high=256)
    register_block_sigma: float = setting(
        0.3, "the blocks' estimate replaces the pixel grid's only if its standard error is below "
        "this (px): the terrain's slow slopes pin it (with 0.5, clear 128^2 test scenes, 49 blocks "
        "at 0.4-0.6 px, took estimates no better than the grid's, and nearly still targets' Pd "
        "fell from .73 to .23)", above=0)
    register_block_texture: float = setting(
        1.5, "the blocks are measured only where the pixel grid's mean squared model gradient "
        "(both axes) is below this many times a pixel's noise variance: above, the terrain "
        "pins the grid's Gauss-Newton and the check costs 0.9 ms at 1024^2 for nothing (on "
        "the development family every estimate the blocks replaced had 1.0 or less, textured "
        "cloud 3-60; the speed benchmark's smooth cloudy scene has 1.8-2.1, and there the "
        "blocks agreed with the grid within 0.025 px)", above=0)
    register_block_residual: float = setting(
        25.0, "... and its mean squared block residual is below this many times the noise's: the "
        "blocks fit (moving cloud makes them disagree, and there the pixel grid is the better "
        "estimate)", above=0)
    variance_floor_quantile: float = setting(
        0.2, "the variance of the filtered residual is kept at least this quantile, over mature "
        "cells, of its ratio to the shot+read noise model, times that model at the cell's "
        "level: an estimate from ~1/variance_rate frames runs 20-30 % low often enough that, "
        "in clear sky, such cells made most false alarms (0: no floor but a constant)",
        low=0, high=1)
    lag_frames: int = setting(
        24, "every row of the model is compared, once every this many frames, with itself this "
        "many frames before; a compact source it gained since (a target slower than the model's "
        "memory, or one in view from the seed frame, that the model learned) is taken back out "
        "(lagged_sources); 0: off", low=0, high=4096)
    lag_sigma: float = setting(
        5.0, "a compact source the model gained over lag_frames must beat this many sigmas of "
        "the noise of that difference (two model estimates lag_frames apart)", above=0)
    clutter_band: int = setting(
        16, "rows or columns of mature model beside the cells a drift brings into view on which the "
        "residual variance per unit of scene curvature is measured, to add to the new cells' variance "
        "(0: new cells start from white noise and their neighbour's variance only)",
        low=0, high=256)
    drift_rate: float = setting(0.2, "update rate of the drift estimate that seeds the registration", low=0, high=1)
    faint_sigma: float = setting(
        4.0, "statistic (sigmas) down to which peaks below k_sigma are measured too, as faint "
        "detections: never reported and never the start of a track, but the tracker may use one "
        "to continue a track whose gate it falls in, where noise this high is rare; k_sigma or "
        "above turns them off", above=0, high=50)
    settle_frames: int = setting(
        10, "frames after the seed whose detections start no track (Detector.settled): the variance "
        "starts from the white-noise model and learns the scene's clutter over the first frames, when "
        "false alarms run far higher (on development heavy-cloud scenes 6-60 per 1024^2 frame over "
        "frames 1-9, about 4 from frame 15)", low=0, high=100000)
    peak_radius: int = setting(2, "a detection is a local maximum of the statistic over this radius (px)",
                               low=1, high=8)
    centroid_fit_iterations: int = setting(
        2, "Gauss-Newton steps of the Gaussian (position, amplitude, width) fitted to the "
        "residual around each peak for its position, from the log-parabola vertex of the "
        "matched filter (0: the vertex alone).  On 24 development family scenes the centroid "
        "error at SNR >= 8 went from 1.99 / 2.29 / 2.04 times the Cramer-Rao bound (clear, "
        "cloudy, heavy) to 1.87 / 2.19 / 1.91 with 1 step, 1.83 / 2.11 / 1.84 with 2, 1.88 / "
        "2.12 / 1.87 with 3 and 1.92 / 2.13 / 1.89 with 5: further steps fit the width to "
        "the part of a slow target the model has not learned; each step costs ~0.6 us a peak",
        low=0, high=50)
    max_sharpness: float = setting(0.5, "peak pixel / 3x3 sum above which a hit is a cosmic ray or hot pixel",
                                   above=0, high=1)
    max_line_fraction: float = setting(
        0.8, "share of the 3x3 residual around a hit on one line of three pixels through its "
        "centre above which the hit is a cosmic-ray track (1-3 pixels in a line put ~0.9 "
        "there; an optical PSF of sigma >= 0.6 px at most ~0.65, however it moves; the share is "
        "at most 1, so 1 turns the test off)",
        above=0, high=1)
    seed_sigma: float = setting(
        5.0, "a compact source in the seed frame (matched filter over its ring's mean, in noise or "
        "local clutter sigmas) beyond this is kept out of the model", above=0)
    seed_check: int = setting(
        9, "frames after the seed over which the compact sources the seed kept out of the model are "
        "watched (SeedSources): those that did not move are learned then, from what the seed frame held "
        "there, the rest stay out as targets and are looked at again at 3 seed_check; 9 learns them "
        "with the tenth frame, when the detector has settled (settle_frames); 0: none are kept out, "
        "a target in view from the first frame is learned as the scene", low=0, high=1000)
    seed_still: float = setting(
        0.45, "a compact source the seed kept out whose detections moved less than this (px) over "
        "the frames seen is learned", above=0, high=16)
    seed_motion_sigma: float = setting(
        4.0, "a compact source the seed kept out is a target, kept out, if a line fitted to its "
        "detections has a velocity this many standard errors from zero (and moved seed_still)",
        above=0)
    seed_ring: int = setting(3, "radius (px) of the ring that tells a compact source from an edge in the seed frame",
                             low=2, high=16)
    simd: str = setting(
        "best", "instruction set of the temporal pass: best (the fastest this CPU runs; all give "
        "the same bits) | baseline", choices=("best", "baseline"))

    def check(self) -> None:
        if self.hot_off > self.hot_on:
            raise ConfigurationError(f"hot_off ({self.hot_off}) must not exceed hot_on ({self.hot_on})")

    @classmethod
    def describe(cls) -> list[tuple[str, object, str]]:
        return describe(cls)


def check_frame(frame: np.ndarray, shape: tuple[int, int]) -> None:
    """Raise ValueError (expected vs actual) unless frame is a C-contiguous uint16 of shape."""
    if not isinstance(frame, np.ndarray):
        raise ValueError(f"frame must be a numpy.ndarray, got {type(frame).__name__}")
    if frame.ndim != 2:
        raise ValueError(f"frame must be 2-D, got {frame.ndim}-D")
    if frame.dtype != FRAME_DTYPE:
        raise ValueError(f"frame dtype must be uint16, got {frame.dtype}")
    if frame.shape != tuple(shape):
        raise ValueError(f"frame shape must be {tuple(shape)}, got {frame.shape}")
    if not frame.flags.c_contiguous:
        raise ValueError("frame must be C-contiguous, got a strided view")


def check_shape(shape) -> tuple[int, int]:
    shape = tuple(int(s) for s in shape)
    if len(shape) != 2 or min(shape) < 3:
        raise ValueError(f"shape must be (height, width) with both >= 3, got {shape}")
    return shape


def bad_pixel_mask(calibration_bad_pixels, shape: tuple[int, int]) -> np.ndarray:
    """The calibration map as a C-contiguous uint8 mask (1 = bad), zeros if none."""
    if calibration_bad_pixels is None:
        return np.zeros(shape, np.uint8)
    mask = np.asarray(calibration_bad_pixels)
    if mask.shape != tuple(shape):
        raise ValueError(f"calibration_bad_pixels shape must be {tuple(shape)}, got {mask.shape}")
    return np.ascontiguousarray(mask != 0, dtype=np.uint8)


def interpolation_axis(length: int, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel (lower tile, upper tile, weight) for bilinear interpolation between tile centres.

    Tile centres are the middle of each tile's pixels (the last tile may be
    short); pixels beyond the outer centres take the outer tile's value.
    """
    starts = np.arange(0, length, tile)
    ends = np.minimum(starts + tile, length)
    centres = (starts + ends - 1) * 0.5
    pos = np.arange(length, dtype=np.float64)
    upper = np.searchsorted(centres, pos, side="right")
    lo = np.clip(upper - 1, 0, len(centres) - 1)
    hi = np.clip(upper, 0, len(centres) - 1)
    span = centres[hi] - centres[lo]
    weight = np.where(span > 0, (pos - centres[lo]) / np.where(span > 0, span, 1.0), 0.0)
    return lo.astype(np.int32), hi.astype(np.int32), np.ascontiguousarray(weight)


def fill_invalid_tiles(median: np.ndarray, sigma: np.ndarray, noise_floor: float) -> None:
    """Tiles without enough good pixels take the grid median; sigma gets the floor (in place)."""
    for grid in (median, sigma):
        missing = np.isnan(grid)
        if missing.any():
            grid[missing] = np.median(grid[~missing]) if (~missing).any() else 0.0
    np.maximum(sigma, noise_floor, out=sigma)


def to_detections(table: np.ndarray, config: DetectorConfig) -> np.ndarray:
    """Measurement table rows -> DETECTION_DTYPE, filtered, sorted by decreasing snr, capped."""
    npix = table[:, DETECTION_COLUMN["npix"]]
    table = table[npix >= config.min_pixels]
    order = np.argsort(-table[:, DETECTION_COLUMN["snr"]], kind="stable")[: config.max_detections]
    table = table[order]
    out = np.empty(len(table), DETECTION_DTYPE)
    for col, name in enumerate(DETECTION_DTYPE.names):
        if name == "npix":
            out[name] = np.minimum(table[:, col], np.iinfo(np.uint16).max)
        else:
            out[name] = table[:, col]
    return out


class SingleFrameDetector:
    """Single-frame detector (tile background, k-sigma, components). Buffers allocated once."""

    def __init__(self, config: DetectorConfig, shape: tuple[int, int],
                 calibration_bad_pixels: np.ndarray | None = None) -> None:
        self.config = config
        self.shape = check_shape(shape)
        h, w = self.shape
        t = config.tile_size
        self.bad = bad_pixel_mask(calibration_bad_pixels, self.shape)
        self.faint = np.empty(0, DETECTION_DTYPE)  # one frame gives no faint detections
        self._iy = interpolation_axis(h, t)
        self._ix = interpolation_axis(w, t)
        grid = (-(-h // t), -(-w // t))
        self._min_valid = max(1, int(np.ceil(config.min_tile_fraction * t * t)))
        self._tile_median = np.empty(grid, np.float64)
        self._tile_sigma = np.empty(grid, np.float64)
        self._scratch = np.empty(t * t, np.int32)
        self.background = np.empty(self.shape, np.float32)
        self.noise = np.empty(self.shape, np.float32)
        self.labels = np.empty(self.shape, np.int32)
        nlab = h * ((w + 1) // 2) + 1
        self._parent = np.empty(nlab, np.int32)
        self._remap = np.empty(nlab, np.int32)
        self.frames_processed = 0

    def process(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame, self.shape)
        cfg = self.config
        _kernel.tile_statistics(frame, self.bad, cfg.tile_size, self._min_valid,
                                self._tile_median, self._tile_sigma, self._scratch)
        fill_invalid_tiles(self._tile_median, self._tile_sigma, cfg.noise_floor)
        _kernel.interpolate_grid(self._tile_median, *self._iy, *self._ix, self.background)
        _kernel.interpolate_grid(self._tile_sigma, *self._iy, *self._ix, self.noise)
        n = _kernel.label_above_threshold(frame, self.bad, self.background, self.noise,
                                          float(cfg.k_sigma), self.labels,
                                          self._parent, self._remap)
        table = np.empty((n, len(_kernel.COLUMNS)), np.float64)
        _kernel.measure_components(frame, self.bad, self.background, self.noise, self.labels, n,
                                   cfg.aperture_radius, float(cfg.psf_sigma),
                                   np.empty(n, np.int64), np.empty(n, np.float64), table)
        self.frames_processed += 1
        return to_detections(table, cfg)


def filter_taps(config: DetectorConfig) -> np.ndarray:
    """Sampled Gaussian PSF, unit sum: the separable matched filter."""
    k = np.arange(-config.filter_radius, config.filter_radius + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (k / config.psf_sigma) ** 2)
    return taps / taps.sum()


def _good_median(frame: np.ndarray, bad: np.ndarray, y: int, x: int) -> float:
    """Median of the good pixels in the 3x3 block around (y, x), else of the whole frame."""
    block = (slice(max(y - 1, 0), y + 2), slice(max(x - 1, 0), x + 2))
    good = frame[block][bad[block] == 0]
    return np.median(good) if good.size else np.median(frame)


def fill_bad(frame: np.ndarray, bad: np.ndarray) -> np.ndarray:
    """float32 copy of frame with bad pixels replaced by the median of their good 3x3
    neighbours."""
    out = frame.astype(np.float32)
    for y, x in np.argwhere(bad):
        out[y, x] = _good_median(frame, bad, y, x)
    return out


def seed_outliers(frame: np.ndarray, bad: np.ndarray,
                  config: DetectorConfig) -> tuple[np.ndarray, np.ndarray]:
    """(dead, spikes): the seed frame's interior good pixels that no optics could make
    (bad: nonzero where already known bad).

    dead: more than SCORE_CLIP noise sigmas below the median of their good 8
    neighbours and under half of it.  spikes: more than seed_sigma noise sigmas
    above that median and above the mean of the ring 2 px out (and seed_sigma
    times the ring's rms departure from its plane: in textured cloud a sharp
    pixel may be the scene), with at least max_sharpness of the 3x3 block's
    excess over that ring in the one pixel: an unlisted hot pixel or a cosmic
    ray.  The optics spread a real
    source (PSF sigma >= 0.5 px puts at most 0.47 of a 3x3 block's flux in its
    centre pixel), so a target is neither.

    The seed frame becomes the scene-fixed model, so either kind would stay in
    it: a dead pixel's hole the drift later shows to good pixels as a bright
    point, held by the hold under candidates; a hot pixel's spike dominates
    the registration's gradients, and since it is fixed on the sensor it pulls
    the measured shift towards zero (on a clear scene the registration lost
    the drift altogether).  Only interior pixels are judged (see below).
    """
    h, w = frame.shape
    pad = np.full((h + 2, w + 2), np.nan)
    pad[1:-1, 1:-1] = np.where(bad != 0, np.nan, frame.astype(np.float64))
    neighbours = np.stack([pad[1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
                           for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx])
    with warnings.catch_warnings():  # a pixel without a good neighbour: NaN, never judged
        warnings.simplefilter("ignore", RuntimeWarning)
        median = np.nanmedian(neighbours, axis=0)
    sigma = np.sqrt(config.read_noise**2 + np.maximum(median, 0.0) / config.gain)
    # a pixel on the border has its neighbours on one side only, so on a steep cloud edge
    # their median need not be its level: those are left to the hot score
    interior = np.zeros((h, w), bool)
    interior[1:-1, 1:-1] = True
    candidate = interior & (bad == 0)
    excess = frame.astype(np.float64) - median
    with np.errstate(invalid="ignore"):
        # and at most half its neighbours' level: a deep dip in sharp cloud texture is no
        # dead pixel, which reads about nothing
        dead = candidate & (excess < -SCORE_CLIP * sigma) & (frame < 0.5 * median)
        bright = candidate & (excess > config.seed_sigma * sigma)
    ys, xs = np.nonzero(bright)
    pad2 = np.full((h + 4, w + 4), np.nan)  # two pixels out: the ring at distance 2
    pad2[2:-2, 2:-2] = pad[1:-1, 1:-1]
    ring = np.array(ring_offsets(2), np.float64)
    values = np.stack([pad2[2 + ys + int(dy), 2 + xs + int(dx)] for dy, dx in ring])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        level = np.nanmean(values, axis=0)
    values = np.where(np.isnan(values), level, values)
    # the ring's departure from its plane (the offsets are symmetric: three sums fit it)
    slope_x = (ring[:, 1:2] * values).sum(axis=0) / np.sum(ring[:, 1] ** 2)
    slope_y = (ring[:, 0:1] * values).sum(axis=0) / np.sum(ring[:, 0] ** 2)
    texture = np.sqrt(np.mean((values - level - ring[:, 1:2] * slope_x - ring[:, 0:1] * slope_y) ** 2,
                              axis=0))
    centre = frame[ys, xs].astype(np.float64) - level
    block_offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]
    spike = np.zeros(len(ys), bool)
    # the level is the mean of the ring 2 px out, beyond a PSF's core: over the symmetric
    # block and ring a slope cancels, and a curved cloud top puts its block 7 times as far
    # above the ring as its centre; a cosmic ray may light two or three pixels, none of
    # them alone that sharp: each pass judges again with the spikes found so far counted as level
    for _ in range(3):
        block = centre + np.nan_to_num(
            np.stack([pad2[2 + ys + dy, 2 + xs + dx] for dy, dx in block_offsets]) - level,
            nan=0.0).sum(axis=0)
        with np.errstate(invalid="ignore"):
            sharp = ((centre > config.seed_sigma * np.maximum(sigma[ys, xs], texture))
                     & (centre >= config.max_sharpness * block))
        if not (sharp & ~spike).any():
            break
        spike |= sharp
        pad2[2 + ys[spike], 2 + xs[spike]] = np.nan
    spikes = np.zeros((h, w), bool)
    spikes[ys[spike], xs[spike]] = True
    return dead, spikes


def separable_filter(image: np.ndarray, taps: np.ndarray, dtype=np.float64) -> np.ndarray:
    """image (*) taps along x then y (in dtype), the edges repeated."""
    h, w = image.shape
    r = len(taps) // 2
    pad = np.pad(image.astype(dtype), r, mode="edge")
    taps = np.asarray(taps, dtype)
    rows = sum(t * pad[:, k:k + w] for k, t in enumerate(taps))
    return sum(t * rows[k:k + h] for k, t in enumerate(taps))


def ring_offsets(radius: int) -> list[tuple[int, int]]:
    """(dy, dx) of the cells at Chebyshev distance `radius`."""
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if max(abs(dy), abs(dx)) == radius]


def clamped_gather(g: np.ndarray, ys: np.ndarray, xs: np.ndarray, offsets) -> np.ndarray:
    """g at (ys + dy, xs + dx) for each (dy, dx) of offsets, g's edges repeated: (len(ys),
    len(offsets))."""
    offsets = np.asarray(offsets).reshape(-1, 2)
    rows = np.clip(ys[:, None] + offsets[:, 0], 0, g.shape[0] - 1)
    cols = np.clip(xs[:, None] + offsets[:, 1], 0, g.shape[1] - 1)
    return g[rows, cols]


NEIGHBOURS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if dy or dx]


def tile_medians(values: np.ndarray, good: np.ndarray, tile: int, least: int = 16,
                 tile_rows: int | None = None) -> np.ndarray:
    """Median of the good values in each block of tile_rows (default tile) x tile (NaN with
    fewer than `least`)."""
    h, w = values.shape
    rows = tile if tile_rows is None else tile_rows
    ny, nx = -(-h // rows), -(-w // tile)
    # blocks side by side, the partial ones at the edges padded with masked cells
    padded = np.full((ny * rows, nx * tile), np.nan)
    padded[:h, :w] = np.where(good, values, np.nan)
    blocks = padded.reshape(ny, rows, nx, tile).swapaxes(1, 2).reshape(ny, nx, rows * tile)
    counts = np.count_nonzero(~np.isnan(blocks), axis=2)
    out = np.full((ny, nx), np.nan)
    enough = counts >= max(least, 1)
    # blocks with as many good values share the median's two ranks; the masked (NaN) cells
    # partition last.  Most blocks are whole, so there are few groups
    for n in np.unique(counts[enough]):
        which = enough & (counts == n)
        middle = np.partition(blocks[which], ((n - 1) // 2, n // 2), axis=1)
        out[which] = (middle[:, (n - 1) // 2] + middle[:, n // 2]) / 2.0
    return out


def tile_noise(values: np.ndarray, good: np.ndarray, tile: int, tile_rows: int | None = None) -> np.ndarray:
    """Per block (as tile_medians): the variance of the good values as their MAD tells it,
    which the few a feature or a target spoils do not move."""
    rows = tile if tile_rows is None else tile_rows
    centre = np.kron(np.nan_to_num(tile_medians(values, good, tile, tile_rows=rows)),
                     np.ones((rows, tile)))[:values.shape[0], :values.shape[1]]
    return (MAD_TO_SIGMA * tile_medians(np.abs(values - centre), good, tile, tile_rows=rows)) ** 2


def noise_ratio(spread: np.ndarray, hint: np.ndarray) -> float:
    """The median over blocks of the measured noise variance over the hinted one (NaN if no
    block has both)."""
    ok = np.isfinite(spread) & (spread > 0) & np.isfinite(hint) & (hint > 0)
    return float(np.median(spread[ok] / hint[ok])) if ok.any() else float("nan")


def seed_noise_scale(frame: np.ndarray, bad: np.ndarray, config: DetectorConfig) -> float:
    """Noise variance of the seed frame over the one the hints (read_noise, gain) give, from
    the data: per tile, the squared MAD sigma of second differences along rows of good
    pixels (6 sigma^2 for white noise; a smooth scene's slope cancels) over 6 times the
    hinted variance at the tile's median; the median over the tiles, so clutter in fewer
    than half of them does not raise it.  1 without enough data."""
    f = frame.astype(np.float64)
    good = (bad[:, 2:] == 0) & (bad[:, 1:-1] == 0) & (bad[:, :-2] == 0)
    second = f[:, 2:] - 2.0 * f[:, 1:-1] + f[:, :-2]
    t = config.tile_size
    level = tile_medians(f[:, 1:-1], good, t)
    ratio = noise_ratio(tile_noise(second, good, t),
                        6.0 * (config.read_noise**2 + np.maximum(level, 0.0) / config.gain))
    return 1.0 if math.isnan(ratio) else float(np.clip(ratio, 1.0 / NOISE_SCALE_LIMIT, NOISE_SCALE_LIMIT))


def residual_noise_scale(frame: np.ndarray, bad: np.ndarray, model: np.ndarray, fy: float, fx: float,
                         config: DetectorConfig, stride: int = NOISE_ROW_STRIDE) -> float:
    """Noise variance over the hints' (as seed_noise_scale) from the first frame after the seed,
    less the seed's model read at the registered offset (fy, fx) (sensor pixel p sees model
    p + f) on every stride-th row: the scene cancels there, so the estimate is the sensor's
    noise, where the seed frame's second differences count the scene's texture too (on
    development scenes they made it 1.1-3 times too high, the more the sharper and cloudier
    the scene).  The model is one noisy frame, resampled by the cubic warp, which adds its
    noise times the warp's weight energy.  NaN when too little of the frame overlaps."""
    h, w = frame.shape
    (oy, wy), (ox, wx) = split_shift(fy), split_shift(fx)
    margin = NOISE_MARGIN
    y0, y1 = margin + max(0, 1 - oy), h - margin - max(0, oy + 2)
    x0, x1 = margin + max(0, 1 - ox), w - margin - max(0, ox + 2)
    if y1 - y0 < stride or x1 - x0 < 2:
        return float("nan")
    ys, xs = np.arange(y0, y1, stride), np.arange(x0, x1)
    warped = np.zeros((len(ys), len(xs)))
    for j in range(4):
        rows = model[ys + oy - 1 + j].astype(np.float64)
        for k in range(4):
            warped += wy[j] * wx[k] * rows[:, xs + ox - 1 + k]
    level = frame[np.ix_(ys, xs)].astype(np.float64)
    good = bad[np.ix_(ys, xs)] == 0
    t = config.tile_size
    rows_per_tile = max(t // stride, 1)
    spread = tile_noise(level - warped, good, t, rows_per_tile)
    energy = float(np.sum(wy**2) * np.sum(wx**2))
    hinted = config.read_noise**2 + np.maximum(tile_medians(level, good, t, tile_rows=rows_per_tile), 0.0) / config.gain
    return noise_ratio(spread, (1.0 + energy) * hinted)


def noise_hints(config: DetectorConfig, scale: float) -> DetectorConfig:
    """config with read noise and gain scaled so that the shot+read variance is `scale` times
    the hinted one at every level: the noise model the kernels are given."""
    return replace(config, read_noise=config.read_noise * math.sqrt(scale), gain=config.gain / scale)


def compact_sources(level: np.ndarray, config: DetectorConfig, taps: np.ndarray) -> np.ndarray:
    """(y, x) of the compact bright sources on a smooth background in a one-frame scene
    `level` (targets already in view when the model is seeded), as an (n, 2) array.

    With G the matched filter of level and a plane fitted to G on the ring seed_ring px
    away, a source is a local maximum of G that beats the ring's maximum (a cloud edge,
    ridge or slope has a ring cell at least as bright), whose contrast (G less the plane)
    beats seed_sigma times the larger of the noise (config's model) and the contrast's own
    spread (MAD) in the tile (clutter texture raises the bar where it is), and whose ring
    departs from its plane by less than SEED_SMOOTH noise sigmas plus SEED_SHAPE of that
    contrast (a curved cloud top does not; a PSF's wings do, by a few per cent).  Targets on
    textured cloud are left to be found once they move."""
    h, w = level.shape
    radius = config.seed_ring
    g = separable_filter(level, taps)
    pad = np.pad(g, radius, mode="edge")
    ring_max = np.full((h, w), -np.inf)
    s0, s1, sx, sy = (np.zeros((h, w)) for _ in range(4))
    offsets = ring_offsets(radius)
    for dy, dx in offsets:
        cell = pad[radius + dy:radius + dy + h, radius + dx:radius + dx + w]
        np.maximum(ring_max, cell, out=ring_max)
        s0 += cell
        s1 += cell * cell
        sx += dx * cell
        sy += dy * cell
    n = len(offsets)
    d2 = sum(dx * dx for _, dx in offsets)  # = sum of dy^2: the ring is symmetric
    mean = s0 / n
    # the ring's offsets are orthogonal to 1 and to each other, so the plane's fit is three sums
    misfit = np.sqrt(np.maximum(s1 / n - mean * mean - (sx * sx + sy * sy) / (d2 * n), 0.0))
    contrast = g - mean
    noise = np.sqrt(config.read_noise**2 + np.maximum(level, 0.0) / config.gain) * float(np.sum(taps**2))
    t = config.tile_size
    everywhere = np.ones((h, w), bool)
    centre = np.kron(np.nan_to_num(tile_medians(contrast, everywhere, t, 1)), np.ones((t, t)))[:h, :w]
    spread = MAD_TO_SIGMA * tile_medians(np.abs(contrast - centre), everywhere, t, 1)
    clutter = np.kron(np.nan_to_num(spread), np.ones((t, t)))[:h, :w]
    peak = ((g > ring_max) & (contrast > config.seed_sigma * np.maximum(noise, clutter))
            & (misfit < SEED_SMOOTH * noise + SEED_SHAPE * contrast))
    ys, xs = np.nonzero(peak)
    local_max = g[ys, xs] >= clamped_gather(g, ys, xs, NEIGHBOURS).max(axis=1, initial=-np.inf)
    ys, xs = ys[local_max], xs[local_max]
    # and on a smooth background: the scene on the ring 2 seed_ring + 1 px away departs from
    # its plane by less than SEED_BACKGROUND pixel noise sigmas (cloud texture does not)
    far = np.array(ring_offsets(2 * radius + 1))
    values = clamped_gather(level, ys, xs, far).astype(np.float64)
    design = np.column_stack([np.ones(len(far)), far[:, 1], far[:, 0]])
    fit = values @ np.linalg.pinv(design).T @ design.T
    rms = np.sqrt(np.mean((values - fit) ** 2, axis=1))
    centre = level[ys, xs].astype(np.float64)
    sigma = np.sqrt(config.read_noise**2 + np.maximum(np.median(values, axis=1), 0.0) / config.gain)
    smooth = rms < SEED_BACKGROUND * sigma
    del centre
    return np.stack([ys[smooth], xs[smooth]], axis=1)


def without_compact_sources(level: np.ndarray, config: DetectorConfig,
                            taps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(level as float32 with each compact source (compact_sources) replaced, over the square
    of radius seed_ring around it, by the plane fitted (least squares) to level on the ring
    one pixel outside that square (clamped to the frame): the scene behind it, as far as one
    frame tells; the sources' (y, x))."""
    out = level.astype(np.float32)
    h, w = level.shape
    radius = config.seed_ring
    ring = np.array(ring_offsets(radius + 1), np.float64)
    design = np.column_stack([np.ones(len(ring)), ring[:, 1], ring[:, 0]])
    box = np.mgrid[-radius:radius + 1, -radius:radius + 1].reshape(2, -1).T
    peaks = compact_sources(level, config, taps)
    for y, x in peaks:
        yy = np.clip(y + ring[:, 0].astype(int), 0, h - 1)
        xx = np.clip(x + ring[:, 1].astype(int), 0, w - 1)
        coef = np.linalg.lstsq(design, level[yy, xx].astype(np.float64), rcond=None)[0]
        by, bx = y + box[:, 0], x + box[:, 1]
        inside = (by >= 0) & (by < h) & (bx >= 0) & (bx < w)
        by, bx, oy, ox = by[inside], bx[inside], box[inside, 0], box[inside, 1]
        out[by, bx] = coef[0] + coef[1] * ox + coef[2] * oy
    return out, peaks


def seed_state(frame: np.ndarray, bad: np.ndarray, hot_score: np.ndarray,
               config: DetectorConfig, taps: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """(model, noise scale, compact sources kept out) from the seed frame.  The noise scale
    is seed_noise_scale (the data's, over the hints'); with the noise model it gives, the
    seed frame's dead pixels and single-pixel spikes found from the data (seed_outliers)
    are marked bad, with the hot score they would reach if seen for long, in place; the model leaves them out and, unless
    seed_check is 0, the compact sources too (without_compact_sources: their (y, x) in model
    cells are returned), so that targets in view from the first frame are found."""
    scale = seed_noise_scale(frame, bad, config)
    sensor = noise_hints(config, scale)
    dead, spikes = seed_outliers(frame, bad, sensor)
    bad[dead | spikes] |= BAD_DETECTED
    # the score they would reach if seen for long: a hot pixel stays marked, a cosmic ray's
    # pixel is trusted again once its score has decayed below hot_off
    hot_score[dead] = -SCORE_CLIP
    hot_score[spikes] = SCORE_CLIP
    filled = fill_bad(frame, bad != 0)
    if config.seed_check == 0:
        return filled, scale, SeedSources(np.zeros((0, 2)))
    model, peaks = without_compact_sources(filled, sensor, taps)
    return model, scale, SeedSources(peaks, filled, config.seed_ring, 3 * config.seed_check)


def nearest_detections(peaks: np.ndarray, detections: np.ndarray, offset,
                       radius: float) -> tuple[np.ndarray, np.ndarray]:
    """(for each model position (y, x) in peaks, the model position of the nearest detection
    within radius px (a detection at sensor p is at model p + f), whether there is one)."""
    if not len(peaks) or not len(detections):
        return peaks.copy(), np.zeros(len(peaks), bool)
    fx, fy = offset
    dy = (detections["y"].astype(np.float64) + fy)[None, :] - peaks[:, 0][:, None]
    dx = (detections["x"].astype(np.float64) + fx)[None, :] - peaks[:, 1][:, None]
    dist = np.hypot(dy, dx)
    best = np.argmin(dist, axis=1)
    rows = np.arange(len(peaks))
    found = dist[rows, best] <= radius
    near = peaks.copy()
    near[found, 0] += dy[rows, best][found]
    near[found, 1] += dx[rows, best][found]
    return near, found


class SeedSources:
    """The compact sources the seed kept out of the model (seed_check > 0), what the seed frame
    held around each, and where the detections put them, frame by frame.

    One frame's detection is not enough to tell a slow target from a fixed source: the centroid
    of a compact cloud feature wanders by a few tenths of a pixel as jitter resamples it, or
    hops between two peaks of its own.  A target's detections move on a line.  So at seed_check
    a straight line is fitted to each source's detections (within seed_ring px), and a source
    moved if its velocity is seed_motion_sigma standard errors from zero and carried it more
    than seed_still px over the frames seen.  Every other source (still, wandering, or seen too
    seldom to tell: fixed, faded or long gone) is the scene: its cells take back what the seed
    frame held there, as the cells around them did.  The sources that moved are watched on to
    frame 3 seed_check and tested again with all their detections: clutter that passed by
    chance is learned then.
    """

    def __init__(self, peaks: np.ndarray, scene: np.ndarray | None = None, radius: int = 0,
                 frames: int = 0) -> None:
        self.peaks = np.asarray(peaks, np.int64).reshape(-1, 2)  # model (y, x), integer cells
        # per source, per frame from the first after the seed: the detection's (dy, dx) from it
        self.seen = np.full((len(self.peaks), frames, 2), np.nan)
        self.radius = radius
        side = 2 * radius + 1
        self.patches = np.zeros((len(self.peaks), side, side), np.float32)
        if len(self.peaks):
            padded = np.pad(np.asarray(scene, np.float32), radius, mode="edge")
            for i, (y, x) in enumerate(self.peaks):
                self.patches[i] = padded[y:y + side, x:x + side]

    def __len__(self) -> int:
        return len(self.peaks)

    def keep(self, which: np.ndarray) -> None:
        """Drop every source but `which` (a mask)."""
        self.peaks, self.seen, self.patches = self.peaks[which], self.seen[which], self.patches[which]

    def moved(self, ky: int, kx: int, shape) -> None:
        """The state moved so that a(u) <- a(u + k): sources follow, those off the model go."""
        self.peaks = self.peaks - np.array([ky, kx])
        h, w = shape
        y, x = self.peaks[:, 0], self.peaks[:, 1]
        self.keep((y >= 0) & (y < h) & (x >= 0) & (x < w))

    def variance_around(self, variance: np.ndarray, radius: int) -> list:
        """Copies of `variance` within `radius` of each source (clipped to it), for
        put_back_variance: where no cell's variance is held (variance_free_frames), a target in
        view from the seed, which the seed kept out of the model, must not teach the variance
        that it is noise either."""
        h, w = variance.shape
        saved = []
        for y, x in self.peaks:
            cells = (slice(max(y - radius, 0), min(y + radius + 1, h)),
                     slice(max(x - radius, 0), min(x + radius + 1, w)))
            saved.append((cells, variance[cells].copy()))
        return saved

    def see(self, detections: np.ndarray, offset, frames_processed: int, config) -> None:
        """Note this frame's nearest detection of each source (frame frames_processed)."""
        peaks = self.peaks.astype(np.float64)
        near, found = nearest_detections(peaks, detections, offset, config.seed_ring)
        t = frames_processed - 2
        if 0 <= t < self.seen.shape[1]:
            self.seen[found, t] = near[found] - peaks[found]

    def moving(self, config) -> np.ndarray:
        """Whether each source's detections so far move on a line (see the class)."""
        seen = ~np.isnan(self.seen[:, :, 0])                     # (source, frame)
        count = seen.sum(axis=1)
        enough = count >= 4                                      # a line and its scatter
        t = np.where(seen[enough], np.arange(self.seen.shape[1], dtype=np.float64), np.nan)
        t -= np.nanmean(t, axis=1, keepdims=True) if len(t) else 0.0
        d = self.seen[enough]
        d -= np.nanmean(d, axis=1, keepdims=True) if len(d) else 0.0
        t0, d0 = np.nan_to_num(t), np.nan_to_num(d)
        tt = np.sum(t0 * t0, axis=1)
        v = np.einsum("ft,fta->fa", t0, d0) / tt[:, None]         # (vy, vx) px/frame
        residual = d0 - t0[:, :, None] * v[:, None, :]
        var_v = np.sum(residual**2, axis=1) / (count[enough] - 2)[:, None] / tt[:, None]
        chi2 = np.sum(v**2 / np.maximum(var_v, 1e-6), axis=1)
        span = np.nanmax(t, axis=1) - np.nanmin(t, axis=1) if len(t) else np.zeros(0)
        out = np.zeros(len(self), bool)
        out[enough] = (chi2 > config.seed_motion_sigma**2) & (np.hypot(v[:, 0], v[:, 1]) * span > config.seed_still)
        return out

    def restore(self, i: int, model: np.ndarray, lagged: np.ndarray) -> None:
        """Give source i's cells back what the seed frame held there.  The lagged snapshot
        (lagged_sources) takes them too: it still holds the cells as the seed left them, without
        the source, and would take the source back out of the model as one the model gained, to
        be a false alarm there ever after."""
        h, w = model.shape
        r = self.radius
        y, x = (int(v) for v in self.peaks[i])
        y0, y1, x0, x1 = max(y - r, 0), min(y + r + 1, h), max(x - r, 0), min(x + r + 1, w)
        patch = self.patches[i][y0 - (y - r):y1 - (y - r), x0 - (x - r):x1 - (x - r)]
        model[y0:y1, x0:x1] = patch
        lagged[y0:y1, x0:x1] = patch

    def watch(self, detections: np.ndarray, offset, frames_processed: int, model: np.ndarray,
              lagged: np.ndarray, config) -> int:
        """One frame's part (frames 2..3 seed_check + 1): note the detections; at seed_check + 1
        learn the sources that did not move, at 3 seed_check + 1 those that no longer do, and
        forget the rest.  Returns the sources learned."""
        self.see(detections, offset, frames_processed, config)
        check = config.seed_check
        if frames_processed not in (check + 1, 3 * check + 1):
            return 0
        moving = self.moving(config)
        for i in np.flatnonzero(~moving):
            self.restore(i, model, lagged)
        self.keep(moving if frames_processed == check + 1 else np.zeros(len(self), bool))
        return int((~moving).sum())


def put_back_variance(variance: np.ndarray, saved: list) -> None:
    """Undo a pass's variance update where SeedSources.variance_around copied it."""
    for cells, values in saved:
        variance[cells] = values


def seed_hold_radius(config: DetectorConfig) -> int:
    """Cells around a seed source whose variance is held over variance_free_frames: its box
    (seed_ring) and the matched filter's reach beyond, plus one for the motion meanwhile."""
    return config.seed_ring + config.filter_radius + 1


def initial_variance(model: np.ndarray, config: DetectorConfig, taps: np.ndarray) -> np.ndarray:
    """Variance of the filtered residual before any is seen: white shot+read noise,
    doubled because the first model is itself one noisy frame."""
    pixel_var = config.read_noise**2 + np.maximum(model, 0.0) / config.gain
    return (2.0 * pixel_var * float(np.sum(taps**2)) ** 2).astype(np.float32)


def candidate_sigma(config: DetectorConfig) -> float:
    """The pass's candidate threshold: k_sigma, or faint_sigma where that is lower, but never
    below the gate (the pass looks for candidates among the gated pixels only)."""
    return float(max(min(config.k_sigma, config.faint_sigma), gate_sigma(config)))


def faint_on(config: DetectorConfig) -> bool:
    """Whether the pass finds candidates below k_sigma (faint_sigma)."""
    return candidate_sigma(config) < config.k_sigma


def strong_candidates(z: np.ndarray, pixels: np.ndarray, persist: np.ndarray, vy: int, vx: int,
                      config: DetectorConfig) -> np.ndarray:
    """Which candidates (statistic z, flat pixel index) the pass would make at k_sigma alone:
    above k_sigma, or candidates by persistence (the persistence of their cell, the variance's,
    at least persist_detect and the statistic above persist_k).  The rest are faint."""
    h, w = persist.shape
    ys, xs = np.divmod(np.asarray(pixels, np.int64), w)
    cell = persist[np.clip(ys + vy, 0, h - 1), np.clip(xs + vx, 0, w - 1)]
    _, persist_k, _, detect = persistence(config)
    return (z > config.k_sigma) | ((cell >= detect) & (z > persist_k))


def faint_peaks(peaks: np.ndarray, strong_peaks: np.ndarray, strong: np.ndarray, width: int,
                radius: int) -> np.ndarray:
    """Which of the peaks among all candidates (flat pixel indices `peaks`, `strong` marking
    those that are strong candidates) are faint detections: not strong, and no strong peak
    (`strong_peaks`) within `radius` (the peak window), so a faint peak never stands for a
    source a detection already reports."""
    py, px = np.divmod(np.asarray(peaks, np.int64)[:, None], width)
    sy, sx = np.divmod(np.asarray(strong_peaks, np.int64)[None, :], width)
    beside = ((np.abs(py - sy) <= radius) & (np.abs(px - sx) <= radius)).any(axis=1)
    return ~strong & ~beside


def finish_detections(table: np.ndarray, config: DetectorConfig,
                      faint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(detections, faint detections): drop sharp hits (cosmic rays, unflagged hot pixels) and
    hits on a line (cosmic-ray tracks), split off the rows `faint` marks, then each as
    to_detections."""
    keep = ((table[:, SHARPNESS_COLUMN] <= config.max_sharpness)
            & (table[:, LINE_COLUMN] <= config.max_line_fraction))
    return (to_detections(table[keep & ~faint, :SHARPNESS_COLUMN], config),
            to_detections(table[keep & faint, :SHARPNESS_COLUMN], config))


def cubic_weights(t: float) -> np.ndarray:
    """Catmull-Rom weights of the samples at -1, 0, 1, 2 for a point t in [0, 1) past 0."""
    t2, t3 = t * t, t * t * t
    return np.array([(-t3 + 2 * t2 - t) / 2, (3 * t3 - 5 * t2 + 2) / 2,
                     (-3 * t3 + 4 * t2 + t) / 2, (t3 - t2) / 2])


def split_shift(shift: float) -> tuple[int, np.ndarray]:
    """Integer part and cubic weights of a shift, for the separable cubic warp (detect_pass)."""
    whole = int(np.floor(shift))
    return whole, cubic_weights(shift - whole)


def learn_window(shape, oy: int, ox: int, radius: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): pixels whose whole matched-filter support lies where the warped model
    (whole-pixel part oy, ox of the offset, 4-tap interpolation) has data."""
    h, w = shape
    return (max(1 - oy, 0) + radius, min(h - 2 - oy, h) - radius,
            max(1 - ox, 0) + radius, min(w - 2 - ox, w) - radius)


def hold_window(row_age: np.ndarray, col_age: np.ndarray, age: int) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the cells where detect_pass may hold the variance, the span of the rows
    and that of the columns at least `age` frames old, or as old as the oldest (the seed frame's
    cells are not young: their variance starts from the seed, and holding it from the start
    keeps the targets in view then out of it).  Cells enter view at the edges, so the young
    ones lie outside the span."""
    if age <= 0 or not len(row_age) or not len(col_age):
        return 0, len(row_age), 0, len(col_age)
    rows = np.flatnonzero(row_age >= min(age, int(row_age.max())))
    cols = np.flatnonzero(col_age >= min(age, int(col_age.max())))
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1


def variance_free(frames_processed: int, config: DetectorConfig) -> bool:
    """Whether the pass after `frames_processed` frames is one of the first variance_free_frames."""
    return frames_processed < config.variance_free_frames


def variance_hold_window(row_age: np.ndarray, col_age: np.ndarray, free: bool,
                         config: DetectorConfig) -> tuple[int, int, int, int]:
    """hold_window at variance_hold_age, or no cell over the free frames (variance_free)."""
    return (0, 0, 0, 0) if free else hold_window(row_age, col_age, config.variance_hold_age)


def remeasured_noise(frame: np.ndarray, bad: np.ndarray, model: np.ndarray, variance: np.ndarray,
                     fy: float, fx: float, scale: float, config: DetectorConfig) -> float:
    """The noise scale after the first frame past the seed: residual_noise_scale where it is
    below the seed's `scale` (both count only more than the noise: the lower is the nearer),
    with the variance, which started from the seed's, scaled to it in place; else `scale`.

    Only the variance (the statistic's noise) takes it.  The pixel noise model that clips the
    model's update, scores hot pixels and gives the detections' SNR keeps the seed's, which
    counts the scene's texture too: with the sensor's alone there, sharp heavy-cloud
    development scenes learned their resampled edges too slowly and made 2-25 times the
    false alarms."""
    measured = residual_noise_scale(frame, bad, model, fy, fx, config)
    if not measured < scale:
        return scale
    # to float32, as the state is: the twin's registration may differ in the last bits
    measured = float(np.float32(max(measured, 1.0 / NOISE_SCALE_LIMIT)))
    variance *= np.float32(measured / scale)
    return measured


def residual_reach(config: DetectorConfig) -> int:
    """Farthest (Chebyshev, px) that measurement reads the residual from a candidate: the
    aperture, the matched filter at the peak's neighbours, the 3x3 around the centroid."""
    return max(config.aperture_radius, config.filter_radius + 1, 2)


def moved_axis(n: int, k: int) -> tuple[slice, slice, slice]:
    """(source, destination, vacated) slices of an axis of n cells moved so that a(u) <- a(u + k)."""
    if k >= 0:
        return slice(k, n), slice(0, n - k), slice(n - k, n)
    return slice(0, n + k), slice(-k, n), slice(0, -k)


def shift_cells(array: np.ndarray, ky: int, kx: int) -> tuple[slice, slice]:
    """array(u) <- array(u + k) in place, integer k (exact); vacated cells repeat the nearest
    kept edge (kernel; detection_ref.shift_cells is its twin).  Returns the vacated (rows,
    columns)."""
    _temporal.shift_cells(array, ky, kx)
    h, w = array.shape
    return moved_axis(h, ky)[2], moved_axis(w, kx)[2]


def shift_ages(ages: np.ndarray, k: int) -> None:
    """ages(u) <- ages(u + k) in place; cells moved in are one frame old."""
    src, dst, vacated = moved_axis(len(ages), k)
    ages[dst] = ages[src].copy()
    ages[vacated] = 1


def slice_bounds(cells: slice, n: int) -> tuple[int, int]:
    """(start, stop) of a unit-step slice of an axis of n cells."""
    start, stop, _ = cells.indices(n)
    return start, max(stop, start)


def fill_new_cells(frame: np.ndarray, bad: np.ndarray, model: np.ndarray, variance: np.ndarray,
                   rows: slice, cols: slice, fy: float, fx: float, config: DetectorConfig,
                   taps: np.ndarray) -> None:
    """Model and variance of the cells (rows, cols) re-anchoring brought into view, from this
    frame (kernel; detection_ref.fill_new_cells is its twin): see reanchor."""
    h, w = model.shape
    (y0, y1), (x0, x1) = slice_bounds(rows, h), slice_bounds(cols, w)
    args = (frame, bad, model, variance, y0, y1, x0, x1, fy, fx, config.read_noise**2,
            config.gain, float(np.sum(taps**2)) ** 2)
    if _temporal.fill_new_cells(*args, np.nan):
        # a bad pixel without a good neighbour: fill_bad's whole-frame median, found only then
        _temporal.fill_new_cells(*args, float(np.median(frame)))


def reanchor(model: np.ndarray, variance: np.ndarray, row_age: np.ndarray, col_age: np.ndarray,
             frame: np.ndarray, bad: np.ndarray, ky: int, kx: int, fy: float, fx: float,
             config: DetectorConfig, taps: np.ndarray, shift=None, fill=None) -> None:
    """Move the scene-fixed state by whole pixels (exact, in place) to keep it over the view.

    (fy, fx) is the offset left after the move.  Cells the drift brought into
    view (whole rows and columns) start from this frame, with its bad pixels
    repaired and resampled at the sub-pixel position they see (a raw copy
    would put a dead pixel's hole or a half-pixel misplaced cloud edge into
    the model); their rows or columns are one frame old, and their residual
    variance is the larger of the white-noise value and that of their nearest
    mature neighbour, since clutter does not stop at the edge of the view, and
    at least what the mature cells beside them show for the same curvature of
    the scene (add_clutter_variance).  Only the state is copied whole; the work on new cells is in proportion to
    their number.  shift moves an array, fill fills new cells (defaults: the
    kernel's shift_cells and fill_new_cells; the twin passes its own).
    """
    h, w = model.shape
    if abs(ky) >= h or abs(kx) >= w:  # lost the scene entirely: start again from this frame
        model[...] = fill_bad(frame, bad != 0)
        variance[...] = initial_variance(model, config, taps)
        row_age[...] = 1
        col_age[...] = 1
        return
    shift = shift or _temporal.shift_cells
    fill = fill or fill_new_cells
    shift(model, ky, kx)
    shift(variance, ky, kx)
    _, kept_rows, vac_rows = moved_axis(h, ky)
    vac_cols = moved_axis(w, kx)[2]
    shift_ages(row_age, ky)
    shift_ages(col_age, kx)
    # the new rows (all columns), then the new columns (the other rows): two thin strips
    for rows, cols in ((vac_rows, slice(0, w)), (kept_rows, vac_cols)):
        fill(frame, bad, model, variance, rows, cols, fy, fx, config, taps)
    add_clutter_variance(model, variance, row_age, col_age, ky, kx, config, taps)


def curvature_power(level: np.ndarray, taps: np.ndarray) -> np.ndarray:
    """The matched-filtered square of the Laplacian of `level` (edges repeated): where the
    scene bends, resampling it at a new sub-pixel position changes it, and the residual
    carries that clutter in proportion."""
    m = np.pad(level.astype(np.float64), 1, mode="edge")
    lap = m[1:-1, :-2] + m[1:-1, 2:] + m[:-2, 1:-1] + m[2:, 1:-1] - 4.0 * m[1:-1, 1:-1]
    return separable_filter(lap * lap, taps)


def clutter_gain(power: np.ndarray, variance: np.ndarray) -> tuple[float, float]:
    """(median variance, least-squares gain of the variance above it on curvature power) over
    the given cells; the gain is never negative, and 0 with too few cells to tell."""
    base = float(np.median(variance)) if variance.size else 0.0
    if variance.size < CLUTTER_LEAST_CELLS:
        return base, 0.0
    p = power.astype(np.float64)
    den = float(np.dot(p, p))
    gain = float(np.dot(p, variance.astype(np.float64) - base)) / den if den > 0.0 else 0.0
    return base, max(gain, 0.0)


def add_clutter_variance(model: np.ndarray, variance: np.ndarray, row_age: np.ndarray,
                         col_age: np.ndarray, ky: int, kx: int, config: DetectorConfig,
                         taps: np.ndarray) -> None:
    """Add to the variance of the cells reanchor brought into view the excess that mature
    cells show for the same curvature (clutter_gain over the clutter_band mature rows or
    columns nearest each new strip): a cloud edge entering the view is as hard to predict
    as those already seen, and the variance would learn that only slowly, being held where
    the statistic is high, so the edge would pass for targets meanwhile.  A cell is mature
    once it has learned for half the variance's time constant, 1 / variance_rate frames:
    on development scenes with a fast drift, waiting the whole constant left the first
    thirty frames' new cells without a gain."""
    band = config.clutter_band
    if band == 0:
        return
    mature = math.ceil(0.5 / config.variance_rate)
    reach = len(taps) // 2 + 1
    for axis, k, ages, other_ages in ((0, ky, row_age, col_age), (1, kx, col_age, row_age)):
        n = model.shape[axis]
        if k == 0 or abs(k) >= n:
            continue
        start, stop = slice_bounds(moved_axis(n, k)[2], n)
        inward = np.arange(start - 1, -1, -1) if k > 0 else np.arange(stop, n)
        grown = inward[ages[inward] >= mature][:band]
        if not len(grown):
            continue
        g0, g1 = int(grown.min()), int(grown.max()) + 1

        def cut(a: int, b: int) -> tuple[slice, slice]:
            lo, hi = slice(max(a - reach, 0), min(b + reach, n)), slice(None)
            return (lo, hi) if axis == 0 else (hi, lo)

        def inner(a: int, b: int) -> tuple[slice, slice]:
            lo = max(a - reach, 0)
            return (slice(a - lo, b - lo), slice(None)) if axis == 0 else (slice(None), slice(a - lo, b - lo))

        ripe = np.isin(np.arange(g0, g1), grown)[:, None] & (other_ages >= mature)[None, :]
        if axis == 1:
            ripe = ripe.T
        known = curvature_power(model[cut(g0, g1)], taps)[inner(g0, g1)]
        seen = variance[cut(g0, g1)][inner(g0, g1)]
        base, gain = clutter_gain(known[ripe], seen[ripe])
        if gain > 0.0:
            power = curvature_power(model[cut(start, stop)], taps)[inner(start, stop)]
            new = variance[cut(start, stop)][inner(start, stop)]
            new += (gain * power).astype(np.float32)


def white_variance_terms(config: DetectorConfig, taps: np.ndarray) -> tuple[float, float]:
    """(a, b): the filtered residual's variance under the shot+read noise model at level M is
    a + b max(M, 0), for a model learned from many frames (initial_variance doubles it)."""
    energy = float(np.sum(taps**2)) ** 2
    return config.read_noise**2 * energy, energy / config.gain


def noise_floor_ratio(variance: np.ndarray, model: np.ndarray, row_age: np.ndarray,
                      col_age: np.ndarray, config: DetectorConfig, taps: np.ndarray) -> float:
    """The variance_floor_quantile of variance / (the noise model's variance at the model's
    level) over mature cells (learned for 1 / variance_rate frames) on every FLOOR_STRIDE-th
    row and column; 0 when there are too few.  Clutter only raises the ratio, so a low
    quantile is the noise's own, wherever the scene is quiet enough."""
    mature = math.ceil(1.0 / config.variance_rate)
    rows = np.flatnonzero(row_age[::FLOOR_STRIDE] >= mature) * FLOOR_STRIDE
    cols = np.flatnonzero(col_age[::FLOOR_STRIDE] >= mature) * FLOOR_STRIDE
    if len(rows) * len(cols) < CLUTTER_LEAST_CELLS:
        return 0.0
    a, b = white_variance_terms(config, taps)
    cells = np.ix_(rows, cols)
    white = a + b * np.maximum(model[cells].astype(np.float64), 0.0)
    return float(np.quantile(variance[cells] / white, config.variance_floor_quantile))


def band_rows(frame_index: int, height: int, bands: int) -> slice:
    """The rows of band frame_index % bands, the frame cut into `bands` bands of rows: a
    per-frame chore on one band at a time visits every row once in `bands` frames."""
    band = frame_index % bands
    return slice(band * height // bands, (band + 1) * height // bands)


def keep_variance_floor(variance: np.ndarray, model: np.ndarray, row_age: np.ndarray,
                        col_age: np.ndarray, frame_index: int, ratio: float,
                        config: DetectorConfig, taps: np.ndarray) -> float:
    """Floor one FLOOR_BANDS-th of the variance rows (which, by frame_index) at ratio times
    the noise model's variance at the model's level, the ratio re-measured (noise_floor_ratio)
    every FLOOR_MEASURE_EVERY frames; returns the ratio in use.  A cell's variance is an EMA
    of ~1 / variance_rate frames, low by a fifth in one cell of ten on white noise, where
    the threshold then passes noise many times as often; the floor lifts those alone, since
    clutter's variance is above it anyway."""
    if config.variance_floor_quantile <= 0.0:
        return 0.0
    if frame_index % FLOOR_MEASURE_EVERY == 0:
        ratio = noise_floor_ratio(variance, model, row_age, col_age, config, taps)
    if ratio <= 0.0:
        return ratio
    rows = band_rows(frame_index, variance.shape[0], FLOOR_BANDS)
    a, b = white_variance_terms(config, taps)
    # in float32 and in place: this runs every frame
    floor = np.maximum(model[rows], np.float32(0.0))
    floor *= np.float32(ratio * b)
    floor += np.float32(ratio * a)
    np.maximum(variance[rows], floor, out=variance[rows])
    return ratio


def lag_noise_factor(config: DetectorConfig) -> np.float32:
    """The variance of the difference of two model estimates lag_frames apart, per unit of
    `variance` (the filtered residual's): each has rate / (2 - rate) of a frame's noise."""
    rate = config.model_rate
    return np.float32(2.0 * rate / (2.0 - rate))


def lagged_band(model: np.ndarray, lagged: np.ndarray, variance: np.ndarray, row_age: np.ndarray,
                col_age: np.ndarray, a0: int, a1: int, y0: int, y1: int, config: DetectorConfig,
                taps: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(g, ys, xs): g the matched filter of (model - lagged) over rows a0 .. a1 - 1 (edges
    repeated); ys (row of g), xs the cells of rows y0 .. y1 - 1 seen since before the snapshot
    where g is positive, beats lag_sigma noise sigmas, is at least each of its 8 neighbours and
    above every cell of the ring seed_ring px out: raster order.  The numpy twin of the kernel's
    lagged_band (LaggedBand)."""
    lag = config.lag_frames
    # float32, as the state
    g = separable_filter(model[a0:a1] - lagged[a0:a1], taps, np.float32)
    noise2 = lag_noise_factor(config) * variance[y0:y1]
    band = g[y0 - a0:y1 - a0]
    seen = (row_age[y0:y1, None] > lag) & (col_age[None, :] > lag)
    ys, xs = np.nonzero(seen & (band > 0.0) & (band * band > np.float32(config.lag_sigma**2) * noise2))
    ys = ys + (y0 - a0)
    centre = g[ys, xs]
    peak = ((centre >= clamped_gather(g, ys, xs, NEIGHBOURS).max(axis=1, initial=-np.inf))
            & (centre > clamped_gather(g, ys, xs, ring_offsets(config.seed_ring)).max(axis=1, initial=-np.inf)))
    return g, ys[peak], xs[peak]


class LaggedBand:
    """lagged_band on the kernel, with buffers for the largest band of a frame this shape: in
    numpy the band's ~60 rows cost 0.2-2.5 ms a 1024^2 frame, up to a third of the detector's."""

    def __init__(self, shape: tuple[int, int], config: DetectorConfig, taps: np.ndarray) -> None:
        h, w = shape
        lag = max(config.lag_frames, 1)
        rows = min(-(-h // lag) + 2 * (len(taps) // 2 + config.seed_ring), h)
        self._g = np.empty((rows, w), np.float32)
        self._h = np.empty((rows, w), np.float32)
        self._pad_row = np.empty(w + len(taps), np.float32)
        self._ys = np.empty(rows * w, np.int32)
        self._xs = np.empty(rows * w, np.int32)

    def __call__(self, model, lagged, variance, row_age, col_age, a0, a1, y0, y1, config, taps):
        n = _temporal.lagged_band(model, lagged, variance, row_age, col_age, a0, a1, y0, y1,
                                  config.lag_frames, as_weights(taps), lag_noise_factor(config),
                                  np.float32(config.lag_sigma**2), config.seed_ring, self._g,
                                  self._h, self._pad_row, self._ys, self._xs)
        return self._g[:a1 - a0], self._ys[:n], self._xs[:n]


def lagged_sources(model: np.ndarray, lagged: np.ndarray, variance: np.ndarray,
                   row_age: np.ndarray, col_age: np.ndarray, frame_index: int,
                   config: DetectorConfig, taps: np.ndarray, scan=lagged_band) -> int:
    """Take back out of the model the compact sources it learned, in one band of rows.

    `lagged` holds each model row as it was when that row was last checked, lag_frames
    frames before.  The model learns at model_rate, so a target slower than about its PSF
    width times model_rate per frame, or one already in the seed frame, sinks into it and its
    residual fades below the threshold.  Over lag_frames such a target has moved on, and the
    model has gained a compact bright source that the old rows lack.  Where the matched
    filter of (model - lagged) has a local maximum above every cell of the ring seed_ring px
    out, and beats that ring's mean by lag_sigma noise sigmas and by LAG_COMPACT of its own
    value, the cells within seed_ring px take the lower of the two models: the scene behind
    the target, as one of them saw it.  The target's residual is then whole again, and the
    model holds it from there.  Cloud that changes over lag_frames is extended, and fails
    the ring tests.

    Only cells seen since before the snapshot are checked (`scan`: lagged_band, or the
    kernel's, LaggedBand).  The band's rows of `lagged` are then refreshed.  Returns how many
    sources were taken back."""
    lag = config.lag_frames
    h, w = model.shape
    if lag <= 0:
        return 0
    rows = band_rows(frame_index, h, lag)
    y0, y1 = rows.start, rows.stop
    if y0 >= y1:
        return 0
    radius = config.seed_ring
    margin = len(taps) // 2 + radius
    a0, a1 = max(y0 - margin, 0), min(y1 + margin, h)
    g, ys, xs = scan(model, lagged, variance, row_age, col_age, a0, a1, y0, y1, config, taps)
    taken = 0
    if len(ys):
        limit = config.lag_sigma * np.sqrt(lag_noise_factor(config) * variance[ys + a0, xs])
        centre = g[ys, xs]
        contrast = centre - clamped_gather(g, ys, xs, ring_offsets(radius)).mean(axis=1)
        compact = (contrast > limit) & (contrast > LAG_COMPACT * centre)
        for y, x in zip(ys[compact] + a0, xs[compact]):
            box = (slice(max(y - radius, 0), y + radius + 1), slice(max(x - radius, 0), x + radius + 1))
            np.minimum(model[box], lagged[box], out=model[box])
            taken += 1
    lagged[rows] = model[rows]
    return taken


def shift_lagged(lagged: np.ndarray, model: np.ndarray, ky: int, kx: int, shift) -> None:
    """Move lagged_sources' snapshot with the model (re-anchoring, after the model moved and its
    new cells were filled): the cells brought into view start equal to the model's."""
    h, w = lagged.shape
    if abs(ky) >= h or abs(kx) >= w:
        lagged[...] = model
        return
    shift(lagged, ky, kx)
    vac_rows, vac_cols = moved_axis(h, ky)[2], moved_axis(w, kx)[2]
    lagged[vac_rows, :] = model[vac_rows, :]
    lagged[:, vac_cols] = model[:, vac_cols]


def variance_gain(clip: float) -> float:
    """What each frame's term of the variance's update is multiplied by, so that on Gaussian
    noise the estimate is unbiased.  A frame adds min(F^2, c^2 V) (c = variance_clip): the clip
    keeps a target's own residual, or its wings, from teaching the variance that it is noise
    (a slow target sits on the same cells for tens of frames), but it also cuts the noise's
    tail, and the estimate settles where V = E[min(F^2, c^2 V)]: 0.90 of the true variance at
    c = 2, 0.975 at 2.5.  With the gain 1 / E[min(z^2, c^2)] (z standard normal) it settles on
    the true variance, and the threshold means what it says."""
    c = float(clip)
    tail = c * math.exp(-0.5 * c * c) / math.sqrt(2.0 * math.pi) + (1.0 - c * c) * 0.5 * math.erfc(c / math.sqrt(2.0))
    return 1.0 / (1.0 - 2.0 * tail)


def variance_learning(config: DetectorConfig, free: bool = False) -> dict:
    """What detect_pass (and its twin's matched_filter) is given for the variance's update
    beyond its rate and clip, as keyword arguments: the gain of variance_clip, and the clip and
    gain of the cells outside the hold window; over the free frames (variance_free: no cell is
    held) there is no clip (FREE_CLIP): the variance starts from the sensor's noise and the
    clutter's, many times that in sharp heavy cloud, must be learned at once."""
    young = FREE_CLIP if free else config.variance_clip_young
    return {"variance_gain": variance_gain(config.variance_clip),
            "young_variance": (young, variance_gain(young))}


def gate_sigma(config: DetectorConfig) -> float:
    """The gate of detect_pass: gate_sigma, but never above the threshold (k_sigma is a
    parameter the ground may lower), so every candidate is held."""
    return float(min(config.gate_sigma, config.k_sigma))


def hold_sigma(config: DetectorConfig) -> float:
    """The model's hold gate of detect_pass: hold_sigma, never above the variance's gate."""
    return float(min(config.hold_sigma, gate_sigma(config)))


def persistence(config: DetectorConfig) -> tuple[float, float, int, int]:
    """detect_pass's persistence: (hit sigma, candidate sigma, hold byte, detect byte); the
    bytes are fractions of the full persistence, 255 (never reached) above 1."""
    full = _temporal.PERSIST_FULL

    def byte(fraction: float, rounding) -> int:
        return 255 if fraction > 1.0 else int(rounding(fraction * full))
    return (float(config.persist_sigma), float(min(config.persist_k, config.k_sigma)),
            byte(config.persist_hold, math.floor), byte(config.persist_detect, math.ceil))


def shift_persistence(persist: np.ndarray, ky: int, kx: int) -> None:
    """persist(u) <- persist(u + k) in place as the model moves; the cells brought into view
    have no history (0)."""
    h, w = persist.shape
    if abs(ky) >= h or abs(kx) >= w:
        persist[...] = 0
        return
    src_y, dst_y, vac_y = moved_axis(h, ky)
    src_x, dst_x, vac_x = moved_axis(w, kx)
    persist[dst_y, dst_x] = persist[src_y, src_x].copy()
    persist[vac_y, :] = 0
    persist[:, vac_x] = 0


def visit_rate(rate: float, every: int) -> float:
    """The rate per visit that, with one visit every `every` frames, forgets as fast as
    `rate` per frame does."""
    return 1.0 - (1.0 - rate) ** every


# the starting points of a registration tried again, around the guess (px): the
# Gauss-Newton converges from about a pixel away in sharp cloud, and a platform jitter of a
# pixel rms makes frame-to-frame jumps of up to 4 px
RETRY_STARTS = tuple((dx, dy) for dy in (-4, -2, -1, 0, 1, 2, 4) for dx in (-4, -2, -1, 0, 1, 2, 4)
                     if (dx or dy) and (max(abs(dx), abs(dy)) == 1 or (dx % 2 == 0 and dy % 2 == 0)))
# the usual inlier count follows a fall at this rate per frame
INLIER_RATE = 0.1
# the blocks' estimate is taken where the pixel grid's is this many of its standard errors
# away, and at least BLOCK_LEAST_PX (with 0.1, a development scene stayed 0.4 px off: the grid
# fell short by 0.1-0.2 px a frame, which the blocks, at 0.016 px, saw and were not let mend)
BLOCK_DEPARTURE = 3.0
BLOCK_LEAST_PX = 0.02


def block_error(blocks: np.ndarray) -> float:
    """The standard error (px, both axes together) of a register_blocks estimate, from its
    mean squared residual and normal matrix (REGISTRATION_OUT); inf if it has none."""
    n, mean_square, axx, axy, ayy = blocks[2], blocks[4], blocks[6], blocks[7], blocks[8]
    det = axx * ayy - axy * axy
    if n < 3 or det <= 0.0:
        return math.inf
    return math.sqrt(mean_square / n * (axx + ayy) / det)


def block_residual_ratio(blocks: np.ndarray, read_var: float, inv_gain: float, block: int) -> float:
    """A register_blocks estimate's mean squared block residual over the noise's."""
    expected = (read_var + max(blocks[5], 0.0) * inv_gain) / (block * block)
    return blocks[4] / expected if expected > 0 else math.inf


def grid_texture(fine: np.ndarray, read_var: float, inv_gain: float) -> float:
    """A register_shift estimate's mean squared model gradient (both axes) over a pixel's
    noise variance at the scene's mean level: near or below 1, the gradient the Gauss-Newton
    steps by is mostly noise."""
    noise = read_var + max(fine[5], 0.0) * inv_gain
    return (fine[6] + fine[8]) / noise if noise > 0 else math.inf


def checked_by_blocks(fine: np.ndarray, measure_blocks, read_var: float, inv_gain: float,
                      config) -> tuple[np.ndarray, bool]:
    """The registration, checked against block means: (dx, dy, ...) and whether the blocks'
    estimate was taken.

    On terrain of low contrast (clear sky over smooth ground) the pixel grid's Gauss-Newton
    uses a model gradient that is mostly noise, and it stops short of the true shift (a
    development scene settled at (0.20, -0.25) px for a true (1.03, -0.37)); the model then
    learns the frame where it was wrongly placed, and the error grew to tens of pixels over
    60 frames.  measure_blocks(gx, gy) (register_blocks from the grid's estimate) sees the
    terrain's slow slopes with block^2 times less noise.  Its estimate is taken only where it
    is precise (register_block_sigma), where the blocks fit (register_block_residual: moving
    cloud makes them disagree, and there the pixel grid is right to 0.05 px) and where the two
    disagree by more than the blocks' error can explain; and the blocks are measured only
    where the grid's own gradient is weak (register_block_texture)."""
    if not config.register_block or grid_texture(fine, read_var, inv_gain) > config.register_block_texture:
        return fine, False
    blocks = measure_blocks(fine[0], fine[1])
    error = block_error(blocks)
    if not (error < config.register_block_sigma
            and block_residual_ratio(blocks, read_var, inv_gain, config.register_block)
            < config.register_block_residual):
        return fine, False
    apart = math.hypot(fine[0] - blocks[0], fine[1] - blocks[1])
    if apart <= BLOCK_DEPARTURE * max(error, BLOCK_LEAST_PX):
        return fine, False
    taken = fine.copy()
    taken[:2] = blocks[:2]
    return taken, True


def robust_registration(measure, guess, usual_inliers: float, retry: float):
    """(dx, dy, inliers, det/n^2) and whether it was tried again: measure(gx, gy) from the
    guess, and if that kept fewer than retry times the usual inliers, the one keeping most
    of it and of measure from each of RETRY_STARTS around the guess.

    The Gauss-Newton registration is local: with a platform jitter of a pixel rms the odd
    frame jumps beyond its reach, it settles on a wrong shift, and that frame's residual
    makes hundreds of false alarms (and is learned into the model).  A wrong shift leaves
    fewer points within the clip, which is what tells it.  Tried again, a frame costs 33
    registrations (an estimate: 33 times the 0.47 ms one took at 1024^2 on the development
    machine, about 15 ms): it is rare."""
    best = np.array(measure(guess[0], guess[1]), np.float64)
    if not (usual_inliers > 0 and best[2] < retry * usual_inliers):
        return best, False
    for dx, dy in RETRY_STARTS:
        tried = measure(guess[0] + dx, guess[1] + dy)
        if tried[2] > best[2]:
            best = np.array(tried, np.float64)
    return best, True


def usual_inliers(previous: float, inliers: float) -> float:
    """The inlier count a converged registration keeps, followed over the frames: up at
    once (the registration cannot keep more points by being wrong), down slowly."""
    if previous <= 0 or inliers > previous:
        return float(inliers)
    return previous + INLIER_RATE * (inliers - previous)


def registration_points(shape, stride: int, margin: int) -> int:
    """Points on the registration's grid: the usual inlier count before any is known."""
    h, w = shape
    return len(range(margin, h - margin, stride)) * len(range(margin, w - margin, stride))


def as_weights(weights: np.ndarray) -> np.ndarray:
    """Interpolation or filter weights as the float32 the kernel computes with."""
    return np.ascontiguousarray(weights, dtype=np.float32)


class TemporalDetector:
    """Registered temporal pipeline: bad pixels -> registration -> background model ->
    matched filter -> CFAR -> components -> centroids -> cosmic-ray rejection.

    The background model and the variance of the filtered residual are held in
    scene coordinates: sensor pixel (y, x) sees model (y + fy, x + fx), with
    the offset f from the registration.  The model is only ever resampled by
    whole pixels (exact) and read through one cubic interpolation per frame,
    so it does not blur as the platform drifts; hot-pixel scores stay in
    sensor coordinates, where hot pixels stay.  Frame 0 only seeds the model
    and returns no detections.

    Per frame the kernel makes one pass over the state (detect_pass) and
    hands back a sparse list of above-threshold pixels and the residual near
    them (``residual`` is this frame's only within residual_reach of a
    candidate); components, peaks and measurements work on those alone.
    """

    def __init__(self, config: DetectorConfig, shape: tuple[int, int],
                 calibration_bad_pixels: np.ndarray | None = None) -> None:
        self.config = config
        self.shape = check_shape(shape)
        self.calibration = bad_pixel_mask(calibration_bad_pixels, self.shape)
        self.bad = self.calibration.copy()  # bit 1 calibration, bit 2 found hot from the data
        self.taps = filter_taps(config)
        self._taps32 = as_weights(self.taps)
        h, w = self.shape
        f32 = lambda: np.zeros(self.shape, np.float32)  # noqa: E731
        self.model, self.residual, self.variance, self.hot_score = f32(), f32(), f32(), f32()
        self.persist = np.zeros(self.shape, np.uint8)  # persistence of each scene cell
        self.lagged = f32()  # model rows as lagged_sources last saw them
        self.sources_taken_back = 0  # by lagged_sources, since the seed
        self._lagged_band = LaggedBand(self.shape, config, self.taps)
        # frames each model row and column has been updated: cell (u, v) is min of the two
        # old (new cells only ever arrive as whole rows and columns)
        self.row_age = np.zeros(h, np.uint16)
        self.col_age = np.zeros(w, np.uint16)
        nt = len(self.taps)
        self._reach = residual_reach(config)
        self._scratch = np.zeros((_temporal.scratch_rows(nt, self._reach), w + nt - 1), np.float32)
        # every pixel could be a candidate (a lost model): np.empty costs no memory until touched
        self._cand_index = np.empty(h * w, np.int32)
        self._cand_z = np.empty(h * w, np.float32)
        self._cand_label = np.empty(h * w, np.int32)
        self._parent = np.empty(h * w, np.int32)
        self._sizes = np.empty(h * w, np.int32)
        self._peaks = np.empty(h * w, np.int32)
        self._row_start = np.zeros(h + 1, np.int32)
        self._reg = np.zeros(len(_temporal.REGISTRATION_OUT), np.float64)
        self._reg_scratch = np.empty(_temporal.register_scratch_size(
            h, w, config.register_stride, config.register_margin), np.float32)
        self._blocks = np.zeros(len(_temporal.REGISTRATION_OUT), np.float64)
        self._block_scratch = np.empty(_temporal.register_block_scratch_size(
            h, w, max(config.register_block, 2), config.register_margin), np.float32)
        self.offset = np.zeros(2)  # (fx, fy): sensor pixel p sees model p + f
        self.drift = np.zeros(2)  # (dx, dy) per frame, seeds the registration
        self.anchor = np.zeros(2)  # (x, y) whole pixels the state has moved by re-anchoring, in all
        self.shift = np.zeros(2)  # last measured frame-to-frame (dx, dy)
        # points the registration keeps, followed over the frames (usual_inliers)
        self.usual_inliers = float(registration_points(self.shape, config.register_stride,
                                                       config.register_margin))
        self.registration_retries = 0  # frames whose registration was tried again
        self.block_registrations = 0  # frames whose registration the blocks' replaced
        # the noise the data show over the hints' (variance), and the config with the hints so
        # scaled: what the kernels are given (set by the seed frame)
        self.noise_scale = 1.0
        # the variance's, re-measured on the first frame after the seed (remeasured_noise)
        self.residual_noise_scale = 1.0
        self.sensor = config
        self.seed_sources = SeedSources(np.zeros((0, 2)))  # what the seed kept out of the model
        self.seed_learned = 0  # of those, found fixed in the scene and learned at seed_check
        self.floor_ratio = 0.0  # keep_variance_floor's, 0 until measured
        self.frames_processed = 0
        self.last_candidates = 0  # peaks before cosmic-ray rejection and capping
        self.last_above = 0  # pixels above threshold
        self.table = np.empty((0, len(_temporal.COLUMNS)))
        self.faint = np.empty(0, DETECTION_DTYPE)  # the last frame's faint detections (faint_sigma)

    @property
    def age(self) -> np.ndarray:
        """Frames each model cell has been updated (a full-frame view, for inspection)."""
        return np.minimum.outer(self.row_age, self.col_age)

    def _white_variance(self, level: np.ndarray) -> np.ndarray:
        return initial_variance(level, self.sensor, self.taps)

    def candidates(self) -> tuple[np.ndarray, np.ndarray]:
        """(flat pixel index, Z) of this frame's above-threshold pixels, raster order."""
        n = self.last_above
        return self._cand_index[:n], self._cand_z[:n]

    def _strong_peaks_first(self, n: int, m: int, vy: int, vx: int) -> tuple[int, int]:
        """With faint candidates among the n, the m peaks found among them all: the peaks of the
        strong candidates alone (as the pass at k_sigma would have found them: a faint candidate
        outshining a persistent source nearby must not take its place), then the faint peaks
        (faint_peaks), in self._peaks.  Returns (strong peaks, all)."""
        cfg, w = self.config, self.shape[1]
        index, labels = self._cand_index[:n], self._cand_label[:n]
        strong = strong_candidates(self._cand_z[:n], index, self.persist, vy, vx, cfg)
        every = self._peaks[:m].copy()
        kept = labels.copy()
        labels[~strong] = 0  # as bad pixels: they neither compete nor peak
        k = _temporal.find_peaks(self._cand_index, self._cand_z, self._cand_label, self._row_start,
                                 n, w, cfg.peak_radius, self._peaks)
        labels[:] = kept
        faint = every[faint_peaks(index[every], index[self._peaks[:k]], strong[every], w,
                                  cfg.peak_radius)]
        self._peaks[k:k + len(faint)] = faint
        return k, k + len(faint)

    def process(self, frame: np.ndarray) -> np.ndarray:
        check_frame(frame, self.shape)
        cfg = self.config
        h, w = self.shape
        if self.frames_processed == 0:
            self.model[...], self.noise_scale, self.seed_sources = seed_state(
                frame, self.bad, self.hot_score, cfg, self.taps)
            self.sensor = noise_hints(cfg, self.noise_scale)
            self.variance[...] = self._white_variance(self.model)
            self.lagged[...] = self.model
            self.row_age[...] = 1
            self.col_age[...] = 1
            self.frames_processed = 1
            return np.empty(0, DETECTION_DTYPE)
        sensor = self.sensor
        read_var, inv_gain = sensor.read_noise**2, 1.0 / sensor.gain
        guess = self.offset + self.drift

        def measure(gx, gy):
            _temporal.register_shift(frame, self.bad, self.model, read_var, inv_gain,
                                     float(gx), float(gy), cfg.register_stride,
                                     cfg.register_margin, cfg.register_clip,
                                     cfg.register_iterations, self._reg, self._reg_scratch,
                                     isa=cfg.simd)
            return self._reg.copy()

        def measure_blocks(gx, gy):
            _temporal.register_blocks(frame, self.bad, self.model, read_var, inv_gain,
                                      float(gx), float(gy), cfg.register_block,
                                      cfg.register_margin, cfg.register_clip,
                                      cfg.register_iterations, self._blocks, self._block_scratch,
                                      isa=cfg.simd)
            return self._blocks
        fine, retried = robust_registration(measure, guess, self.usual_inliers, cfg.register_retry)
        self.registration_retries += retried
        self._reg[:], by_blocks = checked_by_blocks(fine, measure_blocks, read_var, inv_gain, cfg)
        self.block_registrations += by_blocks
        self.usual_inliers = usual_inliers(self.usual_inliers, self._reg[2])
        self.shift = self._reg[:2] - self.offset
        self.drift += cfg.drift_rate * (self.shift - self.drift)
        self.offset = self._reg[:2].copy()
        if np.any(np.abs(self.offset) > REANCHOR_PX):
            kx, ky = (int(v) for v in np.rint(self.offset))
            self.offset -= (kx, ky)
            self.anchor += (kx, ky)
            reanchor(self.model, self.variance, self.row_age, self.col_age, frame, self.bad, ky, kx,
                     float(self.offset[1]), float(self.offset[0]), sensor, self.taps)
            shift_persistence(self.persist, ky, kx)
            shift_lagged(self.lagged, self.model, ky, kx, _temporal.shift_cells)
            self.seed_sources.moved(ky, kx, self.shape)
        fx, fy = float(self.offset[0]), float(self.offset[1])
        if self.frames_processed == 1:
            self.residual_noise_scale = remeasured_noise(frame, self.bad, self.model, self.variance,
                                                         fy, fx, self.noise_scale, cfg)
        free = variance_free(self.frames_processed, cfg)
        held = self.seed_sources.variance_around(self.variance, seed_hold_radius(cfg)) if free else []
        (oy, wy), (ox, wx) = split_shift(fy), split_shift(fx)
        (uy, uwy), (ux, uwx) = split_shift(-fy), split_shift(-fx)
        n = _temporal.detect_pass(
            frame, self.bad, self.model, self.variance, self.hot_score, self.residual,
            self.row_age, self.col_age,
            oy, ox, as_weights(wy), as_weights(wx), uy, ux, as_weights(uwy), as_weights(uwx),
            self._taps32, int(round(fy)), int(round(fx)),
            *learn_window(self.shape, oy, ox, len(self.taps) // 2),
            cfg.model_clip, cfg.model_clip_low, read_var, inv_gain,
            visit_rate(cfg.hot_rate, cfg.hot_every), cfg.hot_on, cfg.hot_off,
            cfg.hot_every, self.frames_processed % cfg.hot_every,
            cfg.variance_rate, cfg.variance_clip, VARIANCE_FLOOR, candidate_sigma(cfg),
            gate_sigma(cfg), hold_sigma(cfg), cfg.variance_rate * cfg.variance_hold,
            cfg.model_rate, self._reach,
            self._scratch, self._cand_index, self._cand_z, self._row_start, isa=cfg.simd,
            persist=self.persist, persistence=persistence(cfg),
            hold_window=variance_hold_window(self.row_age, self.col_age, free, cfg),
            **variance_learning(cfg, free))
        put_back_variance(self.variance, held)
        self.floor_ratio = keep_variance_floor(self.variance, self.model, self.row_age, self.col_age,
                                               self.frames_processed, self.floor_ratio, sensor, self.taps)
        self.sources_taken_back += lagged_sources(self.model, self.lagged, self.variance,
                                                  self.row_age, self.col_age,
                                                  self.frames_processed, cfg, self.taps,
                                                  self._lagged_band)
        self.last_above = n
        c = _temporal.label_candidates(self._cand_index, self._row_start, n, w, self.bad,
                                       self._parent, self._cand_label, self._sizes)
        m = _temporal.find_peaks(self._cand_index, self._cand_z, self._cand_label, self._row_start,
                                 n, w, cfg.peak_radius, self._peaks) if c else 0
        n_strong = m
        if m and faint_on(cfg):
            n_strong, m = self._strong_peaks_first(n, m, int(round(fy)), int(round(fx)))
        table = np.empty((m, len(_temporal.COLUMNS)), np.float64)
        _temporal.measure_targets(frame, self.residual, self._taps32, self._cand_index,
                                  self._cand_z, self._cand_label, self._sizes, self._peaks, m,
                                  cfg.aperture_radius, float(cfg.psf_sigma), read_var, inv_gain,
                                  table, self.bad, self._reach, cfg.centroid_fit_iterations)
        self.frames_processed += 1
        self.last_candidates = m
        self.table = table
        detections, self.faint = finish_detections(table, cfg, np.arange(m) >= n_strong)
        if len(self.seed_sources):
            self.seed_learned += self.seed_sources.watch(detections, self.offset, self.frames_processed,
                                                         self.model, self.lagged, cfg)
        return detections


class Detector:
    """The flight detector: config.mode picks the temporal or the single-frame pipeline.

    ``process(frame)`` returns DETECTION_DTYPE rows, most significant first, at
    most config.max_detections; the pipeline object is ``self.pipeline``.
    """

    def __init__(self, config: DetectorConfig, shape: tuple[int, int],
                 calibration_bad_pixels: np.ndarray | None = None) -> None:
        kind = TemporalDetector if config.mode == "temporal" else SingleFrameDetector
        self.config = config
        self.pipeline = kind(config, shape, calibration_bad_pixels)
        self.shape = self.pipeline.shape

    def process(self, frame: np.ndarray) -> np.ndarray:
        return self.pipeline.process(frame)

    @property
    def settled(self) -> bool:
        """Whether the last frame's detections may start tracks: the temporal pipeline once more than
        settle_frames frames have passed since its seed (the single-frame pipeline always)."""
        pipeline = self.pipeline
        return (not isinstance(pipeline, TemporalDetector)
                or pipeline.frames_processed > self.config.settle_frames)

    @property
    def faint(self) -> np.ndarray:
        """The last frame's faint detections (DetectorConfig.faint_sigma), for the tracker only;
        the single-frame pipeline has none."""
        return self.pipeline.faint

    def scene_offset(self) -> tuple[float, float] | None:
        """(fx, fy): the last frame's sensor pixel p sees the ground point that the first frame's
        pixel p + (fx, fy) saw, px, as the registration measured it (jitter included); None where
        the pipeline does not register frames (single mode)."""
        pipeline = self.pipeline
        if not isinstance(pipeline, TemporalDetector):
            return None
        return (float(pipeline.offset[0] + pipeline.anchor[0]),
                float(pipeline.offset[1] + pipeline.anchor[1]))
