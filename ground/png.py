"""A minimal PNG writer (grayscale, 8 or 16 bit) from the standard library, for people to look at images."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of a 2-D uint8 or uint16 array."""
    if image.ndim != 2 or image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"PNG needs a 2-D uint8 or uint16 array, got {image.ndim}-D {image.dtype}")
    height, width = image.shape
    depth = 8 if image.dtype == np.uint8 else 16
    rows = np.ascontiguousarray(image.astype(">u2") if depth == 16 else image)
    raw = b"".join(b"\x00" + rows[y].tobytes() for y in range(height))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, depth, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def display_stretch(image: np.ndarray) -> np.ndarray:
    """8-bit view for a person: 0.5-99.5 percentile stretch (a 14-bit scene is dark as raw counts)."""
    lo, hi = np.percentile(image, [0.5, 99.5]) if image.size else (0, 1)
    if hi <= lo:
        hi = lo + 1
    return np.clip((image.astype(np.float64) - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)


def write_png(path: str | Path, image: np.ndarray) -> None:
    Path(path).write_bytes(encode_png(image))
