"""Image products on board: lossless chips around detections, near-lossless quick-look frames.

Both are compressed with CCSDS 123 (its header makes each product describe
itself) and cut into segments that fit one packet each. Which detections get
a chip, and how often a quick-look goes, is set in the config: the link is
narrow, and imagery waits behind alerts on a lower-priority virtual channel.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kestrel.codecs import ccsds123
from kestrel.settings import Settings, setting


@dataclass(frozen=True)
class ImagingConfig(Settings):
    chips_per_frame: int = setting(1, "most lossless chips sent per frame, brightest detections first (0: none)",
                                   low=0, high=64)
    chip_size: int = setting(16, "chip side (px), centred on the detection, clipped at the frame edge", low=2, high=256)
    chip_min_snr: float = setting(8.0, "only detections at least this significant get a chip", low=0)
    quicklook_period_s: float = setting(10.0, "seconds between near-lossless quick-look frames (0: none)",
                                        low=0, high=86400)
    quicklook_max_error: int = setting(4, "quick-look absolute error bound per pixel (counts; 0 is lossless)",
                                       low=0, high=255)
    quicklook_binning: int = setting(1, "finest quick-look binning (1: full resolution); the scheduler bins "
                                     "further, and sends less often, as the line rate requires", low=1, high=16)
    segment_octets: int = setting(1024, "compressed octets carried per image packet", low=64, high=60000)
    bits: int = setting(14, "sensor sample depth (bits)", low=2, high=16)


@dataclass(frozen=True)
class ImageProduct:
    subtype: int
    x0: int
    y0: int
    pixels: np.ndarray     # what was compressed (binned for a quick-look)
    max_error: int
    compressed: bytes
    track: tuple[int, int] | None = None    # a track chip's (track id, frame of its sequence)


def chip_window(x: float, y: float, size: int, shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """(x0, y0, width, height) of a size x size window centred on (x, y), kept inside the frame."""
    height, width = shape
    w, h = min(size, width), min(size, height)
    x0 = int(np.clip(round(x) - w // 2, 0, width - w))
    y0 = int(np.clip(round(y) - h // 2, 0, height - h))
    return x0, y0, w, h


def make_track_chip(frame: np.ndarray, x: float, y: float, track: tuple[int, int], config: ImagingConfig,
                    subtype: int) -> ImageProduct:
    """A lossless chip centred on a track's position, the frame the tracker put it there."""
    x0, y0, w, h = chip_window(x, y, config.chip_size, frame.shape)
    pixels = np.ascontiguousarray(frame[y0:y0 + h, x0:x0 + w])
    return ImageProduct(subtype, x0, y0, pixels, 0, ccsds123.encode(pixels, bits=config.bits), track)


def make_chips(frame: np.ndarray, detections: np.ndarray, config: ImagingConfig, subtype: int) -> list[ImageProduct]:
    chosen = detections[detections["snr"] >= config.chip_min_snr][: config.chips_per_frame]
    chips = []
    for det in chosen:
        x0, y0, w, h = chip_window(float(det["x"]), float(det["y"]), config.chip_size, frame.shape)
        pixels = np.ascontiguousarray(frame[y0:y0 + h, x0:x0 + w])
        chips.append(ImageProduct(subtype, x0, y0, pixels, 0, ccsds123.encode(pixels, bits=config.bits)))
    return chips


def bin_frame(frame: np.ndarray, factor: int) -> np.ndarray:
    if factor == 1:
        return frame
    h, w = (frame.shape[0] // factor) * factor, (frame.shape[1] // factor) * factor
    binned = frame[:h, :w].reshape(h // factor, factor, w // factor, factor).mean(axis=(1, 3))
    return np.rint(binned).astype(np.uint16)


def make_quicklook(frame: np.ndarray, config: ImagingConfig, subtype: int) -> ImageProduct:
    pixels = np.ascontiguousarray(bin_frame(frame, config.quicklook_binning))
    data = ccsds123.encode(pixels, bits=config.bits, max_error=config.quicklook_max_error)
    return ImageProduct(subtype, 0, 0, pixels, config.quicklook_max_error, data)


def segments(compressed: bytes, segment_octets: int) -> list[bytes]:
    """The pieces of a compressed product, one a packet.

    Each piece travels in a stand-alone PUS packet (sequence flags '11', as
    ECSS-E-ST-70-41C asks); the segment header, not the packet header, says
    where a piece belongs.
    """
    return [compressed[i:i + segment_octets] for i in range(0, len(compressed), segment_octets)] or [b""]
