"""numpy twin of flight.kernels.classifier: the same features and the same forest, written again.

It shares nothing with the kernel but the weights' arrays; tests/test_classifier.py
holds the two to the same bits.
"""
from __future__ import annotations

import numpy as np


def chip_features_ref(frame: np.ndarray, past: np.ndarray, cx: np.ndarray, cy: np.ndarray,
                      scale: np.ndarray, snr: np.ndarray, radius: int) -> np.ndarray:
    side = 2 * radius + 1
    offsets = np.arange(-radius, radius + 1)
    rows = cy.astype(np.intp)[:, None, None] + offsets[None, :, None]
    cols = cx.astype(np.intp)[:, None, None] + offsets[None, None, :]
    now = frame[rows, cols].astype(np.float64)                         # (n, side, side)
    then = past[rows, cols].astype(np.float64)
    border = np.ones((side, side), bool)
    border[1:-1, 1:-1] = False
    ring = now[:, border].sum(axis=1) / border.sum()                    # integers: exact in any order
    s = scale.astype(np.float64)[:, None, None]
    raw = ((now - ring[:, None, None]) / s).astype(np.float32)
    resid = ((now - then) / s).astype(np.float32)
    n = len(cx)
    return np.concatenate([raw.reshape(n, side * side), resid.reshape(n, side * side),
                           snr.astype(np.float32)[:, None]], axis=1)


def forest_ref(x: np.ndarray, feature, threshold, left, right, value, roots, base: float) -> np.ndarray:
    """Raw score per row: every row walks every tree a level at a time."""
    n = len(x)
    rows = np.arange(n)
    total = np.full(n, float(base))
    for root in np.asarray(roots).tolist():
        node = np.full(n, root, np.int64)
        while True:
            f = feature[node]
            inner = f >= 0
            if not inner.any():
                break
            go_left = x[rows, np.where(inner, f, 0)].astype(np.float64) <= threshold[node]
            node = np.where(inner, np.where(go_left, left[node], right[node]), node)
        total = total + value[node]
    return total


def score_ref(x: np.ndarray, weights) -> np.ndarray:
    raw = forest_ref(x, weights.feature, weights.threshold, weights.left, weights.right, weights.value,
                     weights.roots, weights.base)
    return 1.0 / (1.0 + np.exp(-raw))
