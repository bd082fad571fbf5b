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
    temporal noise sigma at the target. Optional (off by default, used by the
    scene family, hil.scene_family): log-uniform speeds, targets that hold
    still for a while before moving, pairs of targets whose paths cross, and
    targets routed across a bright cloud edge;
  * residual gain non-uniformity (sensor-fixed);
  * shot noise (``gain`` electrons per count; 1 by default, so counts are
    electrons) and read noise;
  * hot and dead pixels (sensor-fixed; only some listed in the calibration map,
    as pixels keep turning hot in orbit) and single-frame cosmic-ray hits;
  * 14-bit quantisation.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

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


class _TargetPlan(NamedTuple):
    """One target lifetime: start (sensor px at birth), own motion, PSF, and frames it first holds still."""

    x0: float
    y0: float
    speed: float
    heading: float
    kind: str
    sigma: float
    turn: float     # rad/frame, curved tracks
    hold: int

    def displacement(self, age: int) -> tuple[float, float]:
        """Own motion over the ground after `age` frames of life."""
        moving = max(age - self.hold, 0)
        if self.kind == "curved":
            if abs(self.turn * moving) > 1e-9:
                r = self.speed / self.turn
                return (r * (math.sin(self.heading + self.turn * moving) - math.sin(self.heading)),
                        -r * (math.cos(self.heading + self.turn * moving) - math.cos(self.heading)))
            return 0.0, 0.0
        return self.speed * moving * math.cos(self.heading), self.speed * moving * math.sin(self.heading)


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
    gain: float = setting(1.0, "sensor gain (electrons per count): shot noise variance is signal / gain "
                          "(counts squared)", above=0, high=1000)
    frame_rate_hz: float = setting(10.0, "frame rate (Hz), for time stamps", above=0, high=10000)
    target_lifetime: int = setting(40, "frames a target lives before a new one replaces it", low=1)
    speed_range: tuple[float, float] = setting((0.2, 5.0), "target speed range (px/frame)", low=0, high=100)
    speed_distribution: str = setting("uniform", "how target speeds are drawn from speed_range",
                                      choices=("uniform", "log-uniform"))
    stationary_fraction: float = setting(0.0, "fraction of targets that hold still (on the ground) for part of "
                                         "their life before they move", low=0, high=1)
    crossing_fraction: float = setting(0.0, "fraction of odd target slots whose path crosses the previous "
                                       "slot's target (same birth frame)", low=0, high=1)
    cloud_edge_fraction: float = setting(0.0, "fraction of targets routed across a bright cloud edge "
                                         "(cloudy and heavy scenes)", low=0, high=1)
    psf_sigma_range: tuple[float, float] = setting((0.7, 1.2), "target PSF Gaussian sigma range (px)",
                                                   above=0, high=16)
    optics_sigma: float = setting(1.0, "optical blur applied to the Earth scene (px)", low=0, high=16)
    terrain: tuple[float, float] = setting((0.02, 3.2), "terrain (relative contrast, spectral slope)",
                                           low=0, high=10)
    clouds: tuple[float, ...] = setting((), "clouds (amplitude counts, cover fraction, edge gain, texture "
                                        "slope); empty: the kind's own", low=0, high=ADC_MAX)
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
        if len(self.terrain) != 2:
            raise ConfigurationError(f"terrain must be (contrast, slope), got {self.terrain}")
        if self.clouds and (len(self.clouds) != 4 or self.clouds[1] > 1):
            raise ConfigurationError(f"clouds must be empty or (amplitude, cover 0..1, edge gain, slope), "
                                     f"got {self.clouds}")
        if self.speed_distribution == "log-uniform" and self.speed_range[0] <= 0:
            raise ConfigurationError(f"a log-uniform speed_range must start above 0, got {self.speed_range}")
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
        amp, cover, edge_gain, slope = c.clouds or _CLOUDS[c.kind]
        terrain_contrast, terrain_slope = c.terrain
        terrain = _fractal(self._world_shape, terrain_slope, static, c.optics_sigma)
        world = c.background * (1.0 + terrain_contrast * terrain)
        # world pixels on a sunlit cloud rim, where targets may be routed to cross an edge
        self._edge_points = np.zeros(0, np.int64)
        if amp > 0:
            body = _fractal(self._world_shape, slope, static, 0.0)
            texture = _fractal(self._world_shape, 2.4, static, 0.0)
            cut = np.quantile(body, 1.0 - cover)
            opacity = np.clip((body - cut) / 0.35, 0.0, 1.0)
            opacity = opacity * opacity * (3.0 - 2.0 * opacity)
            edges = 4.0 * opacity * (1.0 - opacity)
            cloud = amp * (opacity * (1.0 + 0.25 * texture) + edge_gain * edges)
            if c.cloud_edge_fraction > 0:
                self._edge_points = np.flatnonzero(edges > 0.8)
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
    def _crosses_previous(self, k: int) -> bool:
        """Whether slot k (odd) flies a target whose path crosses slot k - 1's, lifetime for lifetime."""
        c = self.config
        return bool(k % 2 and c.crossing_fraction > 0
                    and np.random.default_rng([c.seed, 9, k]).random() < c.crossing_fraction)

    def _slot_phase(self, k: int) -> int:
        """Frames by which slot k's lifetimes are staggered; a crossing slot shares its partner's births."""
        if self._crosses_previous(k):
            k -= 1
        return (k * self.config.target_lifetime) // max(self.config.n_targets, 1)

    def _cycle_age(self, k: int, index: int) -> tuple[int, int]:
        return divmod(index + self._slot_phase(k), self.config.target_lifetime)

    def _target_plan(self, k: int, cycle: int, birth: int) -> _TargetPlan:
        """Everything fixed for one lifetime of slot k: drawn from (seed, k, cycle) alone."""
        c = self.config
        life = c.target_lifetime
        rng = np.random.default_rng([c.seed, 7, k, cycle])
        margin = c.edge_margin + 2
        x0 = rng.uniform(margin, c.width - 1 - margin)
        y0 = rng.uniform(margin, c.height - 1 - margin)
        if c.speed_distribution == "log-uniform":
            speed = math.exp(rng.uniform(math.log(c.speed_range[0]), math.log(c.speed_range[1])))
        else:
            speed = rng.uniform(*c.speed_range)
        heading = rng.uniform(0, 2 * math.pi)
        kind = TRACK_KINDS[int(rng.integers(len(TRACK_KINDS)))]
        sigma = rng.uniform(*c.psf_sigma_range)
        turn = 0.0
        if kind == "curved":
            turn = rng.choice((-1.0, 1.0)) * rng.uniform(0.03, 0.1)  # rad/frame
        plan = _TargetPlan(x0, y0, speed, heading, kind, sigma, turn, hold=0)
        # Draws for the optional behaviours come after the ones above, so a scene without them is unchanged.
        if c.stationary_fraction > 0 and rng.random() < c.stationary_fraction:
            plan = plan._replace(hold=int(rng.integers(max(life // 8, 1), max(life // 2, 2))))
        # a crossing or edge target meets its mark at an age by which, at its own speed, it has not gone far,
        # so the meeting is usually in view
        meet = int(min(rng.uniform(0.2, 0.8) * life, 0.3 * min(c.width, c.height) / max(speed, 1e-3)))
        if self._crosses_previous(k):
            partner = self._target_plan(k - 1, cycle, birth)
            px, py = partner.displacement(meet)
            dx, dy = plan.displacement(meet)
            plan = plan._replace(x0=partner.x0 + px - dx, y0=partner.y0 + py - dy)
        elif self._edge_points.size and rng.random() < c.cloud_edge_fraction:
            plan = self._route_across_edge(plan, rng, birth, meet)
        return plan

    def _route_across_edge(self, plan: _TargetPlan, rng: np.random.Generator, birth: int, meet: int) -> _TargetPlan:
        """Place the target so that at age `meet` it sits on a cloud-rim world pixel that is then in view."""
        c = self.config
        side_y, side_x = self._world_shape
        ox_b, oy_b = self.platform_offset(birth)
        ox_m, oy_m = self.platform_offset(birth + meet)
        margin = c.edge_margin + 2
        dx, dy = plan.displacement(meet)
        for flat in rng.choice(self._edge_points, size=min(64, self._edge_points.size)):
            wy, wx = divmod(int(flat), side_x)
            # a world pixel W is seen at sensor position W - offset (the canvas is periodic)
            sx, sy = (wx - ox_m) % side_x, (wy - oy_m) % side_y
            if margin <= sx <= c.width - 1 - margin and margin <= sy <= c.height - 1 - margin:
                # the target's sensor position at age a is x0 + d(a) - (offset(birth + a) - offset(birth))
                return plan._replace(x0=sx - dx + (ox_m - ox_b), y0=sy - dy + (oy_m - oy_b))
        return plan

    def _target_state(self, k: int, index: int):
        """(x, y, snr, sigma, kind, speed) of target k at frame index, in sensor coordinates; speed is
        its own (over the ground, px/frame) at that frame: 0 while it holds still."""
        c = self.config
        life = c.target_lifetime
        cycle, age = self._cycle_age(k, index)
        plan = self._target_plan(k, cycle, index - age)
        dx, dy = plan.displacement(age)
        snr = float(c.snr_values[k % len(c.snr_values)])
        if plan.kind == "rising":
            # boost plume: brightens through its life to the class SNR at mid-life and beyond
            snr *= min(1.0, 0.5 + age / life)
        # the platform moves the scene: targets share the apparent drift and jitter
        ox0, oy0 = self.platform_offset(index - age)
        ox, oy = self.platform_offset(index)
        speed = plan.speed if age >= plan.hold else 0.0
        return plan.x0 + dx - (ox - ox0), plan.y0 + dy - (oy - oy0), snr, plan.sigma, plan.kind, speed

    def track_id(self, k: int, index: int) -> int:
        """The id of the track slot k flies at frame index: a new id for each lifetime."""
        return k + self.config.n_targets * self._cycle_age(k, index)[0]

    def targets(self, index: int) -> list[tuple[int, float, float, float, float, str]]:
        """All targets at frame index, visible or not: (track id, x, y, snr, sigma, track kind)."""
        return [(self.track_id(k, index), *self._target_state(k, index)[:5]) for k in range(self.config.n_targets)]

    def target_speeds(self, index: int) -> dict[int, float]:
        """Track id -> the target's own speed over the ground at frame index (px/frame; 0 while it holds)."""
        return {self.track_id(k, index): self._target_state(k, index)[5] for k in range(self.config.n_targets)}

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
            noise = math.sqrt(c.read_noise**2 + max(local, 0.0) / c.gain)
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
        noisy = signal + np.sqrt(np.maximum(signal, 0.0) / c.gain + c.read_noise**2) * rng.standard_normal(signal.shape)
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
