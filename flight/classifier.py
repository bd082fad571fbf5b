"""The learned false-alarm filter: a score in [0, 1] per detection, from chips around it.

For each detection the filter reads a (2r+1)^2 chip of the frame around it
(less the mean of the chip's border ring: the local background) and the same
window of the frame `lag` frames earlier subtracted from the frame's (the
temporal residual). A target moving at 0.2-5 px/frame has moved 0.8-20 px in
4 frames, so it leaves a positive residual; a hot pixel, a glint or cloud
fixed to the sensor stays and cancels; a cosmic-ray hit shows in the residual
too, but its raw chip is one sharp pixel, not a PSF. Both channels are divided
by the detection's own noise scale, flux / snr (the detector's noise over its
aperture): the filter sees contrast, not counts. The last feature is the SNR.

The model is a forest of gradient-boosted trees, trained on the ground
(hil.train_classifier) and shipped as a small versioned file (below). The
score feeds the track score; it never removes a detection.

Weights file (little-endian), format version 1:

    header   magic "KCLF", version u16, layout u16 (1: raw chip, residual chip, snr),
             radius u8, lag u8, n_features u16, n_trees u32, n_nodes u32, base f64
    arrays   roots i32[n_trees], feature i32[n_nodes] (-1: leaf), threshold f64[n_nodes],
             left i32[n_nodes], right i32[n_nodes], value f64[n_nodes] (learning rate folded in)
    trailer  CRC-32 (zlib) u32 of everything before it

Node i of a tree is a leaf when feature[i] < 0; otherwise the walk goes left when
x[feature[i]] <= threshold[i]. A child always comes after its parent, so every
walk ends.
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from flight.kernels import classifier as _kernel
from kestrel.settings import Settings, setting

MAGIC = b"KCLF"
FORMAT_VERSION = 1
LAYOUT_RAW_RESIDUAL_SNR = 1
HEADER = struct.Struct("<4sHHBBHIId")
TRAILER = struct.Struct("<I")
DEFAULT_WEIGHTS = "classifier.kclf"     # package data of flight/data


class ClassifierFileError(ValueError):
    """A weights file that cannot be used: missing, truncated, corrupt, or of another version or layout."""


@dataclass(frozen=True)
class ClassifierConfig(Settings):
    """The learned false-alarm filter; its score feeds the track score (tracking.classifier_weight)."""

    mode: str = setting("on", "on: score every detection; off: no filter (scores 0.5, the track score's "
                        "neutral value)", choices=("on", "off"))
    weights: str = setting("", "weights file (format in flight/classifier.py); empty: the one shipped with "
                           "the program")


@dataclass(frozen=True)
class Weights:
    """A forest and the chips it was trained on."""

    radius: int
    lag: int
    base: float
    roots: np.ndarray       # int32 (trees,)
    feature: np.ndarray     # int32 (nodes,)
    threshold: np.ndarray   # float64
    left: np.ndarray        # int32
    right: np.ndarray       # int32
    value: np.ndarray       # float64

    @property
    def n_features(self) -> int:
        return feature_count(self.radius)

    def pack(self) -> bytes:
        head = HEADER.pack(MAGIC, FORMAT_VERSION, LAYOUT_RAW_RESIDUAL_SNR, self.radius, self.lag,
                           self.n_features, len(self.roots), len(self.feature), float(self.base))
        body = b"".join(np.ascontiguousarray(a, dtype=d).tobytes() for a, d in self._arrays())
        data = head + body
        return data + TRAILER.pack(zlib.crc32(data))

    def _arrays(self):
        return ((self.roots, "<i4"), (self.feature, "<i4"), (self.threshold, "<f8"), (self.left, "<i4"),
                (self.right, "<i4"), (self.value, "<f8"))

    @classmethod
    def unpack(cls, data: bytes) -> "Weights":
        if len(data) < HEADER.size + TRAILER.size:
            raise ClassifierFileError(f"weights file too short: {len(data)} octets, a header needs "
                                      f"{HEADER.size + TRAILER.size}")
        magic, version, layout, radius, lag, n_features, n_trees, n_nodes, base = HEADER.unpack_from(data)
        if magic != MAGIC:
            raise ClassifierFileError(f"not a weights file: magic {magic!r}, expected {MAGIC!r}")
        if version != FORMAT_VERSION:
            raise ClassifierFileError(f"weights format version {version}, this program reads {FORMAT_VERSION}")
        if layout != LAYOUT_RAW_RESIDUAL_SNR:
            raise ClassifierFileError(f"feature layout {layout}, this program computes {LAYOUT_RAW_RESIDUAL_SNR}")
        expected = HEADER.size + 4 * n_trees + (4 + 8 + 4 + 4 + 8) * n_nodes + TRAILER.size
        if len(data) != expected:
            raise ClassifierFileError(f"weights file of {len(data)} octets, its header ({n_trees} trees, "
                                      f"{n_nodes} nodes) says {expected}")
        (crc,) = TRAILER.unpack_from(data, len(data) - TRAILER.size)
        if zlib.crc32(data[:-TRAILER.size]) != crc:
            raise ClassifierFileError("weights file corrupt: CRC-32 mismatch")
        if radius < 1 or lag < 1:
            raise ClassifierFileError(f"chip radius {radius} and lag {lag} must be at least 1")
        if n_features != feature_count(radius):
            raise ClassifierFileError(f"{n_features} features, layout {layout} with radius {radius} has "
                                      f"{feature_count(radius)}")
        offset = HEADER.size
        arrays = []
        for count, dtype in ((n_trees, "<i4"), (n_nodes, "<i4"), (n_nodes, "<f8"), (n_nodes, "<i4"),
                             (n_nodes, "<i4"), (n_nodes, "<f8")):
            a = np.frombuffer(data, dtype, count, offset)
            offset += a.nbytes
            arrays.append(np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("=")))
        weights = cls(radius, lag, base, *arrays)
        weights.check()
        return weights

    def check(self) -> None:
        """Every walk stays in its tree and ends: what lets the kernel run unchecked."""
        n = len(self.feature)
        for a in (self.threshold, self.left, self.right, self.value):
            if len(a) != n:
                raise ClassifierFileError("node arrays of different lengths")
        if not (np.isfinite(self.threshold).all() and np.isfinite(self.value).all() and np.isfinite(self.base)):
            raise ClassifierFileError("non-finite threshold, leaf value or base")
        if len(self.roots) and (self.roots.min() < 0 or self.roots.max() >= n):
            raise ClassifierFileError("a tree root outside the node table")
        if (self.feature >= self.n_features).any():
            raise ClassifierFileError(f"a node reads a feature beyond the {self.n_features} there are")
        inner = np.flatnonzero(self.feature >= 0)
        nodes = inner.astype(np.int64)
        for child in (self.left[inner], self.right[inner]):
            if ((child <= nodes) | (child >= n)).any():
                raise ClassifierFileError("a child before its parent or outside the node table")


def feature_count(radius: int) -> int:
    side = 2 * radius + 1
    return 2 * side * side + 1


def load_weights(path: str | Path | None = None) -> Weights:
    """The weights at path, or the ones shipped with the program; ClassifierFileError if unusable."""
    try:
        if path:
            data = Path(path).read_bytes()
        else:
            data = resources.files("flight.data").joinpath(DEFAULT_WEIGHTS).read_bytes()
    except OSError as exc:
        raise ClassifierFileError(f"weights file {path or DEFAULT_WEIGHTS}: {exc.strerror or exc}") from None
    return Weights.unpack(data)


def noise_scale(detections: np.ndarray) -> np.ndarray:
    """flux / snr of each detection (the detector's noise over its aperture), 1 where that is not usable."""
    flux = detections["flux"].astype(np.float64)
    snr = detections["snr"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = flux / snr
    return np.where(np.isfinite(scale) & (scale > 1e-3), scale, 1.0).astype(np.float32)


def chip_centres(detections: np.ndarray, shape: tuple[int, int], radius: int) -> tuple[np.ndarray, np.ndarray]:
    """Nearest pixel to each detection, moved inwards so its chip lies inside the frame."""
    h, w = shape
    x = np.nan_to_num(detections["x"].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    y = np.nan_to_num(detections["y"].astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    cx = np.clip(np.rint(x), radius, w - 1 - radius).astype(np.int32)
    cy = np.clip(np.rint(y), radius, h - 1 - radius).astype(np.int32)
    return cx, cy


def features(frame: np.ndarray, past: np.ndarray, detections: np.ndarray, radius: int) -> np.ndarray:
    """The feature rows (layout 1) of the detections in frame; past is the frame `lag` frames earlier."""
    shape = frame.shape if isinstance(frame, np.ndarray) else None
    for name, a in (("frame", frame), ("past", past)):
        if not (isinstance(a, np.ndarray) and a.dtype == np.uint16 and a.ndim == 2 and a.shape == shape
                and a.flags.c_contiguous):
            raise ValueError(f"{name} must be a C-contiguous 2-D uint16 array, both of one shape")
    side = 2 * radius + 1
    if radius < 1 or shape[0] < side or shape[1] < side:
        raise ValueError(f"chips of radius {radius} do not fit frames of {shape}")
    cx, cy = chip_centres(detections, shape, radius)
    out = np.empty((len(detections), feature_count(radius)), np.float32)
    _kernel.chip_features(frame, past, cx, cy, noise_scale(detections),
                          np.ascontiguousarray(detections["snr"], np.float32), radius, out)
    return out


class FalseAlarmFilter:
    """`score(frame, past, detections)`: the probability that each detection is a real target.

    Built once from checked weights; `past` is the frame `weights.lag` frames before `frame`."""

    def __init__(self, weights: Weights, shape: tuple[int, int]):
        side = 2 * weights.radius + 1
        if shape[0] < side or shape[1] < side:
            raise ValueError(f"frames of {shape} are smaller than the classifier's {side}x{side} chips")
        self.weights = weights
        self.shape = (int(shape[0]), int(shape[1]))
        self.lag = weights.lag
        self._forest = _kernel.Forest(weights.feature, weights.threshold, weights.left, weights.right,
                                      weights.value, weights.roots, weights.base, weights.n_features)

    def features(self, frame: np.ndarray, past: np.ndarray, detections: np.ndarray) -> np.ndarray:
        return features(frame, past, detections, self.weights.radius)

    def decision(self, features: np.ndarray) -> np.ndarray:
        features = np.ascontiguousarray(features, np.float32)
        if features.ndim != 2 or features.shape[1] != self.weights.n_features:
            raise ValueError(f"features must be (n, {self.weights.n_features}), got {features.shape}")
        out = np.empty(len(features), np.float64)
        self._forest.decision(features, out)
        return out

    def score(self, frame: np.ndarray, past: np.ndarray, detections: np.ndarray) -> np.ndarray:
        raw = self.decision(self.features(frame, past, detections))
        return 1.0 / (1.0 + np.exp(-raw))


class FrameHistory:
    """The last `lag` + 1 frames, copied into buffers allocated once: `push(frame)`, then `past()` is the
    frame `lag` pushes before it (None until there is one)."""

    def __init__(self, shape: tuple[int, int], lag: int):
        if lag < 1:
            raise ValueError(f"lag must be at least 1, got {lag}")
        self.lag = lag
        self._ring = np.zeros((lag + 1, *shape), np.uint16)
        self._pushed = 0

    def push(self, frame: np.ndarray) -> np.ndarray:
        slot = self._ring[self._pushed % len(self._ring)]
        np.copyto(slot, frame)
        self._pushed += 1
        return slot

    def past(self) -> np.ndarray | None:
        if self._pushed <= self.lag:
            return None
        return self._ring[(self._pushed - 1 - self.lag) % len(self._ring)]


def open_filter(config: ClassifierConfig, shape: tuple[int, int]) -> FalseAlarmFilter | None:
    """The filter the config asks for (None when off); ClassifierFileError when its weights are unusable."""
    if config.mode == "off":
        return None
    return FalseAlarmFilter(load_weights(config.weights or None), shape)
