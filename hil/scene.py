"""Infrared scene simulator for the bench: 14-bit frames with ground truth.

Deterministic by (seed, frame index): everything static (cloud world, sensor
defects, non-uniformity) comes from the seed alone, and everything that
changes per frame (noise, jitter, cosmic rays, which targets are where) from
(seed, index), so ``frame(i)`` is the same whichever process asks, in any order.

Model, in the order it is applied:
  * an Earth scene on a periodic "world" canvas: a weak fractal terrain plus,
    for cloudy/heavy scenes, fractal clouds with bright (sunlit) edges, blurred
    by the optics; the platform drifts across it with sub-pixel jitter;
  * point targets (pixel-integrated Gaussian PSF, sigma 0.7-1.2 px) on
    straight, curved (manoeuvring glide vehicle) and rising-intensity (boost
    plume) tracks at 0.2-5 px/frame; SNR is the PSF peak amplitude over the
    temporal noise sigma at the target;
  * residual gain non-uniformity (sensor-fixed);
  * shot noise (counts are electrons) and read noise;
  * hot and dead pixels (sensor-fixed; only some listed in the calibration map,
    as pixels keep turning hot in orbit) and single-frame cosmic-ray hits;
  * 14-bit quantisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kestrel.settings import ConfigurationError, Settings, describe, setting

ADC_MAX = 2**14 - 1

# One row per target visible in a frame.
#   target     track id (one per target lifetime; a slot reused later gets a new id)
#   x, y       true PSF centre, pixel coordinates (column, row), pixel centres at integers
#   snr        PSF peak amplitude over temporal noise sigma at the target
#   flux       total target counts
#   sigma_psf  PSF Gaussian sigma (px)
TRUTH_DTYPE = np.dtype([("target", "u4"), ("x", "f4"), ("y", "f4"), ("snr", "f4"),
                        ("flux", "f4"), ("sigma_psf", "f4")])

SCENE_KINDS = ("clear", "cloudy", "heavy")
TRACK_KINDS = ("straight", "curved", "rising")

# Per kind: cloud amplitude (counts), cover fraction, edge gain, texture slope.
_CLOUDS = {
    "clear": (0.0, 0.0, 0.0, 3.0),
    "cloudy": (1500.0, 0.4, 0.6, 3.0),
    "heavy": (3500.0, 0.65, 1.0, 2.6),
}


@dataclass(frozen=True)
class SceneConfig(Settings):
    """Scene parameters; every one has a documented default and range (see describe())."""

    width: int = setting(256, "frame width (px)", low=16, high=8192)
    height: int = setting(256, "frame height (px)", low=16, high=8192)
    seed: int = setting(1, "seed; with the frame index it fixes every frame", low=0, high=2**63 - 1)
    kind: str = setting("cloudy", "scene kind", choices=SCENE_KINDS)
    n_targets: int = setting(6, "targets present at any time (each lives target_lifetime frames)", low=0, high=10000)
    snr_values: tuple[float, ...] = setting((5.0, 8.0, 12.0, 20.0), "SNR classes, assigned to targets in turn",
                                            above=0)
    background: float = setting(2000.0, "mean clear-sky background (counts)", low=0, high=ADC_MAX)
    read_noise: float = setting(10.0, "read noise sigma (counts)", low=0, high=1000)
    frame_rate_hz: float = setting(10.0, "frame rate (Hz), for time stamps", above=0, high=10000)
    target_lifetime: int = setting(40, "frames a target lives before a new one replaces it", low=1)
    speed_range: tuple[float, float] = setting((0.2, 5.0), "target speed range (px/frame)", low=0, high=100)
    psf_sigma_range: tuple[float, float] = setting((0.7, 1.2), "target PSF Gaussian sigma range (px)",
                                                   above=0, high=16)
    optics_sigma: float = setting(1.0, "optical blur applied to the Earth scene (px)", low=0, high=16)
    drift: tuple[float, float] = setting((0.31, 0.17), "platform drift across the scene (x, y px/frame)",
                                         low=-100, high=100)
    jitter_rms: float = setting(0.3, "platform jitter, rms per axis (px), independent per frame", low=0, high=100)
    nonuniformity: float = setting(0.003, "residual pixel gain non-uniformity (relative rms)", low=0, high=1)
    hot_pixel_fraction: float = setting(3e-4, "fraction of pixels that are hot", low=0, high=1)
    hot_listed_fraction: float = setting(0.5, "fraction of hot pixels listed in the calibration map", low=0, high=1)
    hot_level: tuple[float, float] = setting((300.0, 6000.0), "hot pixel excess range (counts)", low=0, high=ADC_MAX)
    dead_pixel_fraction: float = setting(1e-4, "fraction of dead pixels (all listed in the map)", low=0, high=1)
    cosmic_rate: float = setting(16.0, "mean cosmic-ray hits per frame per megapixel", low=0, high=1e6)
    cosmic_level: tuple[float, float] = setting((300.0, 8000.0), "cosmic-ray deposit range (counts)",
                                                low=0, high=ADC_MAX)
    edge_margin: int = setting(4, "targets closer than this to the frame edge are not in the truth", low=0)

    def check(self) -> None:
        if not self.snr_values:
            raise ConfigurationError("snr_values must not be empty")
        for name in ("speed_range", "psf_sigma_range", "hot_level", "cosmic_level"):
            low, high = getattr(self, name)
            if low > high:
                raise ConfigurationError(f"{name} must be (low, high) with low <= high, got {getattr(self, name)}")

    @classmethod
    def describe(cls) -> list[tuple[str, object, str]]:
        return describe(cls)


def _fractal(shape, slope: float, rng: np.random.Generator, blur_sigma: float) -> np.ndarray:
    """Periodic fractal field (power ~ f^-slope), zero mean, unit std, optics-blurred."""
    h, w = shape
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f2 = fy * fy + fx * fx
    f2[0, 0] = 1.0
    amp = f2 ** (-slope / 4.0)
    amp[0, 0] = 0.0
    spec = amp * (rng.normal(size=f2.shape) + 1j * rng.normal(size=f2.shape))
    field_ = np.fft.irfft2(spec, s=shape)
    field_ = (field_ - field_.mean()) / field_.std()
    if blur_sigma > 0:
        mtf = np.exp(-2.0 * math.pi**2 * blur_sigma**2 * (fy * fy + fx * fx))
        field_ = np.fft.irfft2(np.fft.rfft2(field_) * mtf, s=shape)
    return field_


def _phi(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + _erf(z / math.sqrt(2.0)))


_erf = np.frompyfunc(math.erf, 1, 1)


def pixel_psf(x: float, y: float, sigma: float, flux: float, radius: int):
    """Pixel-integrated Gaussian: (row slice start, col start, 2-D stamp of counts)."""
    cx, cy = int(round(x)), int(round(y))
    xs = np.arange(cx - radius, cx + radius + 1, dtype=np.float64)
    ys = np.arange(cy - radius, cy + radius + 1, dtype=np.float64)
    ex = (_phi((xs + 0.5 - x) / sigma) - _phi((xs - 0.5 - x) / sigma)).astype(np.float64)
    ey = (_phi((ys + 0.5 - y) / sigma) - _phi((ys - 0.5 - y) / sigma)).astype(np.float64)
    return cy - radius, cx - radius, flux * np.outer(ey, ex)


class SceneSimulator:
    """Frames and truth for a SceneConfig; frame(i) is a pure function of (config, i)."""

    def __init__(self, config: SceneConfig) -> None:
        self.config = config
        c = config
        h, w = c.height, c.width
        static = np.random.default_rng([c.seed, 0x5CE7E])
        side = 1 << int(math.ceil(math.log2(max(h, w) + 64)))
        self._world_shape = (side, side)
        amp, cover, edge_gain, slope = _CLOUDS[c.kind]
        terrain = _fractal(self._world_shape, 3.2, static, c.optics_sigma)
        world = c.background * (1.0 + 0.02 * terrain)
        if amp > 0:
            body = _fractal(self._world_shape, slope, static, 0.0)
            texture = _fractal(self._world_shape, 2.4, static, 0.0)
            cut = np.quantile(body, 1.0 - cover)
            opacity = np.clip((body - cut) / 0.35, 0.0, 1.0)
            opacity = opacity * opacity * (3.0 - 2.0 * opacity)
            edges = 4.0 * opacity * (1.0 - opacity)
            cloud = amp * (opacity * (1.0 + 0.25 * texture) + edge_gain * edges)
            blurred = np.fft.irfft2(
                np.fft.rfft2(cloud)
                * np.exp(-2.0 * math.pi**2 * c.optics_sigma**2
                         * (np.fft.fftfreq(side)[:, None] ** 2 + np.fft.rfftfreq(side)[None, :] ** 2)),
                s=self._world_shape)
            world = world + blurred
        self._world = world.astype(np.float32)
        self._gain = (1.0 + c.nonuniformity * static.normal(size=(h, w))).astype(np.float32)
        npx = h * w
        n_hot = int(round(c.hot_pixel_fraction * npx))
        n_dead = int(round(c.dead_pixel_fraction * npx))
        picks = static.choice(npx, size=n_hot + n_dead, replace=False)
        self._hot_index = picks[:n_hot]
        self._hot_level = static.uniform(*c.hot_level, size=n_hot).astype(np.float32)
        self._hot_listed = static.random(n_hot) < c.hot_listed_fraction
        self._dead_index = picks[n_hot:]

    # -- platform -----------------------------------------------------------------
    def platform_offset(self, index: int) -> tuple[float, float]:
        """(x, y) of the sensor origin on the world canvas: drift plus jitter."""
        c = self.config
        # targets born before frame 0 need offsets at negative indices: fold them to a seed key
        key = 2 * index if index >= 0 else -2 * index - 1
        rng = np.random.default_rng([c.seed, key, 1])
        jx, jy = rng.normal(0.0, c.jitter_rms, size=2) if c.jitter_rms > 0 else (0.0, 0.0)
        return c.drift[0] * index + jx, c.drift[1] * index + jy

    def _scene(self, index: int) -> np.ndarray:
        """Noiseless Earth scene seen by the sensor (bilinear sample of the periodic world)."""
        c = self.config
        ox, oy = self.platform_offset(index)
        sh, sw = self._world_shape
        ix, iy = math.floor(ox), math.floor(oy)
        fx, fy = ox - ix, oy - iy
        rows0 = (iy + np.arange(c.height)) % sh
        rows1 = (rows0 + 1) % sh
        cols0 = (ix + np.arange(c.width)) % sw
        cols1 = (cols0 + 1) % sw
        top = self._world[rows0]
        bot = self._world[rows1]
        return ((1 - fy) * ((1 - fx) * top[:, cols0] + fx * top[:, cols1])
                + fy * ((1 - fx) * bot[:, cols0] + fx * bot[:, cols1]))

    # -- targets ------------------------------------------------------------------
    def _target_state(self, k: int, index: int):
        """(x, y, snr, sigma, kind) of target k at frame index, in sensor coordinates."""
        c = self.config
        life = c.target_lifetime
        shifted = index + (k * life) // max(c.n_targets, 1)
        cycle, age = divmod(shifted, life)
        rng = np.random.default_rng([c.seed, 7, k, cycle])
        margin = c.edge_margin + 2
        x0 = rng.uniform(margin, c.width - 1 - margin)
        y0 = rng.uniform(margin, c.height - 1 - margin)
        speed = rng.uniform(*c.speed_range)
        heading = rng.uniform(0, 2 * math.pi)
        kind = TRACK_KINDS[int(rng.integers(len(TRACK_KINDS)))]
        sigma = rng.uniform(*c.psf_sigma_range)
        snr = float(c.snr_values[k % len(c.snr_values)])
        if kind == "curved":
            turn = rng.choice((-1.0, 1.0)) * rng.uniform(0.03, 0.1)  # rad/frame
            if abs(turn * age) > 1e-9:
                r = speed / turn
                dx = r * (math.sin(heading + turn * age) - math.sin(heading))
                dy = -r * (math.cos(heading + turn * age) - math.cos(heading))
            else:
                dx = dy = 0.0
        else:
            dx = speed * age * math.cos(heading)
            dy = speed * age * math.sin(heading)
        if kind == "rising":
            # boost plume: brightens through its life to the class SNR at mid-life and beyond
            snr *= min(1.0, 0.5 + age / life)
        # the platform moves the scene: targets share the apparent drift and jitter
        ox0, oy0 = self.platform_offset(index - age)
        ox, oy = self.platform_offset(index)
        return x0 + dx - (ox - ox0), y0 + dy - (oy - oy0), snr, sigma, kind

    def track_id(self, k: int, index: int) -> int:
        """The id of the track slot k flies at frame index: a new id for each lifetime."""
        c = self.config
        cycle = (index + (k * c.target_lifetime) // max(c.n_targets, 1)) // c.target_lifetime
        return k + c.n_targets * cycle

    def targets(self, index: int) -> list[tuple[int, float, float, float, float, str]]:
        """All targets at frame index, visible or not: (track id, x, y, snr, sigma, track kind)."""
        return [(self.track_id(k, index), *self._target_state(k, index)) for k in range(self.config.n_targets)]

    # -- frames -------------------------------------------------------------------
    def frame(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(frame uint16 14-bit (H, W), truth rows of TRUTH_DTYPE for visible targets)."""
        if index < 0:
            raise ValueError(f"frame index must be >= 0, got {index}")
        c = self.config
        h, w = c.height, c.width
        rng = np.random.default_rng([c.seed, index, 2])
        scene = self._scene(index).astype(np.float64)
        signal = scene.copy()
        truth = []
        for k, x, y, snr, sigma, _kind in self.targets(index):
            if not (c.edge_margin <= x <= w - 1 - c.edge_margin
                    and c.edge_margin <= y <= h - 1 - c.edge_margin):
                continue
            local = scene[int(round(y)), int(round(x))]
            noise = math.sqrt(c.read_noise**2 + max(local, 0.0))
            flux = snr * noise * 2.0 * math.pi * sigma * sigma
            r = int(math.ceil(4 * sigma))
            y0, x0, stamp = pixel_psf(x, y, sigma, flux, r)
            ys, xs = slice(max(y0, 0), min(y0 + stamp.shape[0], h)), slice(max(x0, 0), min(x0 + stamp.shape[1], w))
            signal[ys, xs] += stamp[ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
            truth.append((k, x, y, snr, flux, sigma))
        signal *= self._gain
        flat = signal.reshape(-1)
        flat[self._hot_index] += self._hot_level
        flat[self._dead_index] = 0.0
        noisy = signal + np.sqrt(np.maximum(signal, 0.0) + c.read_noise**2) * rng.standard_normal(signal.shape)
        noisy.reshape(-1)[self._dead_index] = rng.normal(0.0, c.read_noise, self._dead_index.size)
        self._add_cosmic_rays(noisy, rng)
        frame = np.clip(np.rint(noisy), 0, ADC_MAX).astype(np.uint16)
        return frame, np.array(truth, dtype=TRUTH_DTYPE)

    def _add_cosmic_rays(self, image: np.ndarray, rng: np.random.Generator) -> None:
        """Single-frame hits: a pixel, or a short streak of 2-3 pixels, of large deposit."""
        c = self.config
        h, w = image.shape
        n = rng.poisson(c.cosmic_rate * h * w / 1e6)
        for _ in range(n):
            y, x = int(rng.integers(1, h - 1)), int(rng.integers(1, w - 1))
            level = rng.uniform(*c.cosmic_level)
            length = int(rng.integers(1, 4))
            dy, dx = ((0, 1), (1, 0), (1, 1), (1, -1))[int(rng.integers(4))]
            for step in range(length):
                yy, xx = y + step * dy, x + step * dx
                if 0 <= yy < h and 0 <= xx < w:
                    image[yy, xx] += level * (0.6 ** step)

    # -- sensor defects -----------------------------------------------------------
    def calibration_bad_pixels(self) -> np.ndarray:
        """bool (H, W): the pixels the calibration map lists (dead, and hot known on ground)."""
        c = self.config
        mask = np.zeros(c.height * c.width, bool)
        mask[self._dead_index] = True
        mask[self._hot_index[self._hot_listed]] = True
        return mask.reshape(c.height, c.width)

    def defective_pixels(self) -> np.ndarray:
        """bool (H, W): every hot or dead pixel, listed or not (truth for tests)."""
        c = self.config
        mask = np.zeros(c.height * c.width, bool)
        mask[self._dead_index] = True
        mask[self._hot_index] = True
        return mask.reshape(c.height, c.width)


def write_npy_frames(sim: SceneSimulator, count: int, directory) -> list[Path]:
    """Write frames 0..count-1 as frame_000000.npy ... (name order is time order)."""
    if count < 0:
        raise ValueError(f"count must be >= 0, got {count}")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = directory / f"frame_{i:06d}.npy"
        np.save(path, sim.frame(i)[0])
        paths.append(path)
    return paths
