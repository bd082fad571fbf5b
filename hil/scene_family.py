"""The scene family: a SceneConfig drawn from one integer, the family seed (issue 10).

One simulator scene is one sensor, one sky and one set of targets; a detector
tuned on it can learn that scene rather than the problem. The family draws
every scene setting from wide ranges instead:

  * kind by seed (clear, cloudy, heavy in turn, so consecutive seeds are balanced);
  * frame width and height each log-uniform 256..2048 px (multiples of 32),
    then capped at ``max_side`` so runs stay affordable; the cap changes no
    other draw;
  * target speed 0.05..8 px/frame over the ground, log-uniform per target;
    targets already in view in the first frame (lifetimes are staggered),
    a quarter holding still for a while and then moving, targets appearing
    mid-pass, pairs whose paths cross, and targets routed across a bright
    cloud rim; SNR classes 3, 5, 8, 12;
  * PSF sigma 0.6..2 px (a per-scene optic, +-10 % per target);
  * gain 0.5..4 e-/DN and read noise 5..40 DN, log-uniform; these are the
    sensor's truth and are NOT given to the detector, which keeps its own
    defaults (a real sensor's differ from any configuration and drift);
  * clutter: mean level, terrain contrast and spectral slope, cloud
    amplitude, cover, texture slope and rim brightness;
  * platform drift 0.02..1.5 px/frame in any direction and jitter
    0.02..1 px rms, log-uniform; defects and cosmic rays of varying density.

Seeds. Family seeds below HELD_OUT_FIRST (2**40 + 20000) are DEVELOPMENT
seeds: use them to develop, tune and test. Seeds from HELD_OUT_FIRST upward
are HELD-OUT: they are for reporting the figures (`kestrel-hil metrics family
--held-out`) and nothing else. No test, sweep or tuning run may use them or
assert on quality levels measured with them; tests/test_scene_family.py checks
that only this module and the metrics command name them.
"""
from __future__ import annotations

import math

import numpy as np

from .scene import SCENE_KINDS, SceneConfig

HELD_OUT_FIRST = 2**40 + 20000
"""The first held-out family seed; every seed below it is a development seed."""

MIN_SIDE, MAX_SIDE = 256, 2048
SPEED_RANGE = (0.05, 8.0)        # px/frame over the ground, log-uniform
PSF_SIGMA_RANGE = (0.6, 2.0)     # px
GAIN_RANGE = (0.5, 4.0)          # electrons per DN, log-uniform
READ_NOISE_RANGE = (5.0, 40.0)   # DN, log-uniform
SNR_CLASSES = (3.0, 5.0, 8.0, 12.0)
_FAMILY_STREAM = 0xFA3117        # keeps the family's draws apart from the simulator's own streams


def family_seed(index: int, held_out: bool) -> int:
    """The family seed of scene `index` (0, 1, ...) of the development or the held-out range."""
    if index < 0:
        raise ValueError(f"scene index must be >= 0, got {index}")
    if not held_out and index >= HELD_OUT_FIRST:
        raise ValueError(f"development scene index must be < {HELD_OUT_FIRST}, got {index}")
    return HELD_OUT_FIRST + index if held_out else index


def is_held_out(seed: int) -> bool:
    return seed >= HELD_OUT_FIRST


def _log_uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return math.exp(rng.uniform(math.log(low), math.log(high)))


def draw_scene(seed: int, max_side: int = MAX_SIDE) -> SceneConfig:
    """The family's scene for `seed`, its sides capped at `max_side` (deterministic per seed)."""
    if seed < 0:
        raise ValueError(f"family seed must be >= 0, got {seed}")
    if max_side < 16:
        raise ValueError(f"max_side must be >= 16, got {max_side}")
    rng = np.random.default_rng([seed, _FAMILY_STREAM])
    kind = SCENE_KINDS[seed % len(SCENE_KINDS)]
    width, height = (32 * round(_log_uniform(rng, MIN_SIDE, MAX_SIDE) / 32) for _ in range(2))
    psf = rng.uniform(*PSF_SIGMA_RANGE)
    gain = _log_uniform(rng, *GAIN_RANGE)
    read_noise = _log_uniform(rng, *READ_NOISE_RANGE)
    background = _log_uniform(rng, 1000.0, 4000.0)
    terrain = (_log_uniform(rng, 0.005, 0.05), rng.uniform(2.4, 3.6))
    # (amplitude counts, cover, rim gain, texture slope); clear scenes have none
    cloudy = (rng.uniform(800.0, 2500.0), rng.uniform(0.25, 0.5), rng.uniform(0.0, 1.5), rng.uniform(2.2, 3.4))
    heavy = (rng.uniform(2500.0, 5000.0), rng.uniform(0.55, 0.8), rng.uniform(0.3, 1.5), rng.uniform(2.2, 3.2))
    clouds = {"clear": (0.0, 0.0, 0.0, 3.0), "cloudy": cloudy, "heavy": heavy}[kind]
    drift_speed, drift_heading = _log_uniform(rng, 0.02, 1.5), rng.uniform(0.0, 2 * math.pi)
    jitter = _log_uniform(rng, 0.02, 1.0)
    density = rng.uniform(40.0, 100.0)   # targets per megapixel
    lifetime = int(rng.integers(40, 301))
    nonuniformity = _log_uniform(rng, 0.001, 0.01)
    hot = _log_uniform(rng, 1e-4, 1e-3)
    cosmic = rng.uniform(0.0, 40.0)
    width, height = min(width, max_side), min(height, max_side)
    return SceneConfig(
        width=width, height=height, seed=seed, kind=kind,
        n_targets=max(8, round(density * width * height / 1e6)), snr_values=SNR_CLASSES,
        background=background, read_noise=read_noise, gain=gain, target_lifetime=lifetime,
        speed_range=SPEED_RANGE, speed_distribution="log-uniform", stationary_fraction=0.25,
        crossing_fraction=0.3, cloud_edge_fraction=0.3 if kind != "clear" else 0.0,
        psf_sigma_range=(max(PSF_SIGMA_RANGE[0], 0.9 * psf), min(PSF_SIGMA_RANGE[1], 1.1 * psf)),
        optics_sigma=psf, terrain=terrain, clouds=clouds,
        drift=(drift_speed * math.cos(drift_heading), drift_speed * math.sin(drift_heading)),
        jitter_rms=jitter, nonuniformity=nonuniformity, hot_pixel_fraction=hot, cosmic_rate=cosmic)
