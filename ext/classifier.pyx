# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
# distutils: extra_compile_args = -ffp-contract=off
"""The learned false-alarm filter's two stages (flight.kernels.classifier).

    chip_features: for each candidate, a (2r+1)^2 chip of the frame less its border
                   ring's mean, the same window of the frame `lag` frames earlier
                   subtracted from it, both over the candidate's noise scale, and its SNR
    Forest.decision: the raw score of a forest of binary decision trees (gradient
                   boosting: the sum of one leaf value per tree, plus the base)

flight/classifier.py checks every array (shapes, dtypes, contiguity, chip centres
inside the frame) and every tree (node indices in range, children after their
parent, features in range) before these run: that is what makes the unchecked
directives above safe.  flight/classifier_ref.py is the numpy twin; the pixel
sums are integers, exact in double, and -ffp-contract=off keeps the rest in
numpy's rounding order, so the twins agree bit for bit.
"""
from libc.stdint cimport uint16_t, int32_t


def chip_features(const uint16_t[:, ::1] frame, const uint16_t[:, ::1] past, const int32_t[::1] cx,
                  const int32_t[::1] cy, const float[::1] scale, const float[::1] snr, int radius,
                  float[:, ::1] out):
    """out[i] = raw chip (row-major), residual chip (row-major), snr; chips centred on (cx[i], cy[i])."""
    cdef Py_ssize_t n = cx.shape[0], i, dy, dx, k
    cdef Py_ssize_t side = 2 * radius + 1, area = side * side
    cdef Py_ssize_t x0, y0
    cdef double ring, s
    with nogil:
        for i in range(n):
            x0 = cx[i] - radius
            y0 = cy[i] - radius
            ring = 0.0
            for dx in range(side):
                ring = ring + frame[y0, x0 + dx] + frame[y0 + side - 1, x0 + dx]
            for dy in range(1, side - 1):
                ring = ring + frame[y0 + dy, x0] + frame[y0 + dy, x0 + side - 1]
            ring = ring / (4 * side - 4)
            s = scale[i]
            k = 0
            for dy in range(side):
                for dx in range(side):
                    out[i, k] = <float>((frame[y0 + dy, x0 + dx] - ring) / s)
                    out[i, area + k] = <float>((<double>frame[y0 + dy, x0 + dx]
                                                - <double>past[y0 + dy, x0 + dx]) / s)
                    k += 1
            out[i, 2 * area] = snr[i]


cdef class Forest:
    """A forest built once from checked arrays (flight.classifier.load_weights checks them).

    Node i is a leaf when feature[i] < 0; otherwise go to left[i] when x[feature[i]] <= threshold[i],
    else right[i]. Tree t starts at roots[t]. The raw score is base + the sum of the leaves' values,
    added tree by tree in order.

    The walk is branchless, which is why it keeps its own tables: child[2 i + (not x <= threshold)] is
    the next node, a leaf is its own two children (feature 0, so the comparison reads a real feature),
    and every tree takes `depth` steps, the deepest tree's. Four rows go down each tree together, so
    their loads overlap; a data-dependent branch per level mispredicted about half the time on
    weights whose splits are not lopsided."""

    cdef const int32_t[::1] child
    cdef const int32_t[::1] split_feature
    cdef const double[::1] threshold
    cdef const double[::1] value
    cdef const int32_t[::1] roots
    cdef double base
    cdef int depth
    cdef readonly int n_features

    def __init__(self, const int32_t[::1] feature, const double[::1] threshold, const int32_t[::1] left,
                 const int32_t[::1] right, const double[::1] value, const int32_t[::1] roots, double base,
                 int n_features):
        import numpy as np

        feat = np.asarray(feature)
        leaf = feat < 0
        nodes = np.arange(len(feat), dtype=np.int32)
        child = np.empty(2 * len(feat), np.int32)
        child[0::2] = np.where(leaf, nodes, np.asarray(left))
        child[1::2] = np.where(leaf, nodes, np.asarray(right))
        self.child = child
        self.split_feature = np.where(leaf, 0, feat).astype(np.int32)
        self.threshold = threshold
        self.value = value
        self.roots = roots
        self.base = base
        self.n_features = n_features
        # Children come after their parent (checked), so one pass in node order gives each node's depth.
        level = np.zeros(len(feat), np.int64)
        for i in range(len(feat)):
            if not leaf[i]:
                level[left[i]] = level[i] + 1
                level[right[i]] = level[i] + 1
        self.depth = int(level.max()) if len(feat) else 0

    def decision(self, const float[:, ::1] x, double[::1] out):
        """out[i] = raw score of row i of x."""
        cdef Py_ssize_t n = x.shape[0], i = 0, t, j, trees = self.roots.shape[0]
        cdef int d, depth = self.depth
        cdef int32_t node[4]
        cdef double total[4]
        cdef const int32_t[::1] child = self.child
        cdef const int32_t[::1] feature = self.split_feature
        cdef const double[::1] threshold = self.threshold
        with nogil:
            while i + 4 <= n:
                for j in range(4):
                    total[j] = self.base
                for t in range(trees):
                    for j in range(4):
                        node[j] = self.roots[t]
                    for d in range(depth):
                        for j in range(4):
                            node[j] = child[2 * node[j] + <int>(not (x[i + j, feature[node[j]]]
                                                                   <= threshold[node[j]]))]
                    for j in range(4):
                        total[j] = total[j] + self.value[node[j]]
                for j in range(4):
                    out[i + j] = total[j]
                i += 4
            while i < n:
                total[0] = self.base
                for t in range(trees):
                    node[0] = self.roots[t]
                    for d in range(depth):
                        node[0] = child[2 * node[0] + <int>(not (x[i, feature[node[0]]] <= threshold[node[0]]))]
                    total[0] = total[0] + self.value[node[0]]
                out[i] = total[0]
                i += 1
