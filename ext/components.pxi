# Shared by the detection kernels (textually included): union-find over pixel
# or candidate indices, and the sub-pixel vertex of a peak. Nothing here
# touches Python objects; every function runs without the GIL.
from libc.math cimport log
from libc.stdint cimport int32_t


cdef inline int32_t _find(int32_t* parent, int32_t i) noexcept nogil:
    cdef int32_t root = i, nxt
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression keeps later finds short
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


cdef inline int32_t _union(int32_t* parent, int32_t a, int32_t b) noexcept nogil:
    """Join the sets of a and b under the smaller root (labels then follow raster order)."""
    a = _find(parent, a)
    b = _find(parent, b)
    if a < b:
        parent[b] = a
        return a
    if b < a:
        parent[a] = b
    return b


cdef inline double _log_parabola(double left, double centre, double right,
                                 double fallback) noexcept nogil:
    """Vertex offset of the parabola through the logs (a Gaussian's peak), or fallback if no peak."""
    cdef double den
    if left > 0.0 and right > 0.0 and centre > 0.0:
        den = log(left) - 2.0 * log(centre) + log(right)
        if den < 0.0:
            return (log(left) - log(right)) / (2.0 * den)
    return fallback
