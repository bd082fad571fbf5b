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
    added tree by tree in order."""

    cdef const int32_t[::1] feature
    cdef const double[::1] threshold
    cdef const int32_t[::1] left
    cdef const int32_t[::1] right
    cdef const double[::1] value
    cdef const int32_t[::1] roots
    cdef double base
    cdef readonly int n_features

    def __init__(self, const int32_t[::1] feature, const double[::1] threshold, const int32_t[::1] left,
                 const int32_t[::1] right, const double[::1] value, const int32_t[::1] roots, double base,
                 int n_features):
        self.feature = feature
        self.threshold = threshold
        self.left = left
        self.right = right
        self.value = value
        self.roots = roots
        self.base = base
        self.n_features = n_features

    def decision(self, const float[:, ::1] x, double[::1] out):
        """out[i] = raw score of row i of x."""
        cdef Py_ssize_t n = x.shape[0], i, t, trees = self.roots.shape[0]
        cdef int32_t node, f
        cdef double total
        with nogil:
            for i in range(n):
                total = self.base
                for t in range(trees):
                    node = self.roots[t]
                    f = self.feature[node]
                    while f >= 0:
                        if x[i, f] <= self.threshold[node]:
                            node = self.left[node]
                        else:
                            node = self.right[node]
                        f = self.feature[node]
                    total = total + self.value[node]
                out[i] = total
