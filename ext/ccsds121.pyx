# cython: language_level=3
# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CCSDS 121.0-B-3 adaptive entropy coder: encode and decode kernels.

Callers are flight.codecs.ccsds121.encode/decode, which check every parameter
and the sample range. The unchecked directives above rely on that; the
kernels themselves check every length read from the compressed stream, size
the encoder's output, and read the caller's stream in place only where a
whole block of reads stays inside it (a padded copy serves the tail).
tests/test_ccsds121.py proves these kernels equal flight/codecs/ccsds121_ref.py.
"""
from cpython.ref cimport PyObject, Py_XDECREF
from libc.math cimport sqrt
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t

cdef extern from *:
    """
    #include <stdint.h>
    #include <string.h>
    #if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    #define CCSDS121_BE32(v) (v)
    #define CCSDS121_BE64(v) (v)
    #else
    #define CCSDS121_BE32(v) __builtin_bswap32(v)
    #define CCSDS121_BE64(v) __builtin_bswap64(v)
    #endif
    static inline void ccsds121_store_be32(unsigned char *p, uint32_t v) {
        v = CCSDS121_BE32(v);
        memcpy(p, &v, 4);
    }
    static inline void ccsds121_store_be64(unsigned char *p, uint64_t v) {
        v = CCSDS121_BE64(v);
        memcpy(p, &v, 8);
    }
    static inline uint64_t ccsds121_load_be64(const unsigned char *p) {
        uint64_t v;
        memcpy(&v, p, 8);
        return CCSDS121_BE64(v);
    }
    static inline int ccsds121_clz64(uint64_t v) { return __builtin_clzll(v); }
    static inline int ccsds121_bitlen64(uint64_t v) { return v ? 64 - __builtin_clzll(v) : 0; }
    """
    void store_be32 "ccsds121_store_be32"(uint8_t *p, uint32_t v) noexcept nogil
    void store_be64 "ccsds121_store_be64"(uint8_t *p, uint64_t v) noexcept nogil
    uint64_t load_be64 "ccsds121_load_be64"(const uint8_t *p) noexcept nogil
    int clz64 "ccsds121_clz64"(uint64_t v) noexcept nogil
    int bitlen64 "ccsds121_bitlen64"(uint64_t v) noexcept nogil

cdef extern from "Python.h":
    # Declared returning a borrowed pointer so that the bytes object can be
    # shrunk in place with _PyBytes_Resize instead of copied.
    PyObject* new_bytes "PyBytes_FromStringAndSize"(const char *v, Py_ssize_t n)
    char* bytes_data "PyBytes_AS_STRING"(PyObject *o) noexcept nogil
    int _PyBytes_Resize(PyObject **o, Py_ssize_t n)

ctypedef fused sample_t:
    uint8_t
    uint16_t
    uint32_t

cdef enum:
    # Bytes the decoder may read past the start of a block before it checks
    # the position again: one block of at most 64 samples (id, ref, 64 FS
    # windows of 57 bits, 64 x 32 binary bits) plus one 8-byte load.
    READ_PADDING = 1024

cdef enum:
    SEGMENT_BLOCKS = 64     # zero-block runs never cross a 64-block segment
    ROS_FS = 4              # FS value coding "remainder of segment"
    MAX_BLOCK = 64

# Decoder status codes, mapped to messages by flight.codecs.ccsds121.
cdef enum Status:
    OK = 0
    TRUNCATED = 1
    BAD_SECOND_EXTENSION = 2
    ZERO_RUN_TOO_LONG = 3
    SAMPLE_OUT_OF_RANGE = 4
    NEEDS_TAIL = 5          # internal: finish from the padded copy of the tail
    OUT_OF_MEMORY = 6


cdef struct Coder:
    int n
    int J
    int rsi
    int id_len
    int kmax            # largest useful k, or -1 when the code set has no split options
    int preprocess
    int pad_rsi
    uint32_t mask       # also xmax of the offset-binary samples
    uint32_t flip       # sign bit when samples are signed, else 0


cdef Coder make_coder(int bits, int block_size, int rsi, int id_len, int kmax,
                      bint preprocess, bint signed, bint pad_rsi):
    cdef Coder c
    c.n = bits
    c.J = block_size
    c.rsi = rsi
    c.id_len = id_len
    # k >= n never beats no-compression, so the search stops below n.
    c.kmax = min(kmax, bits - 1)
    c.preprocess = preprocess
    c.pad_rsi = pad_rsi
    c.mask = <uint32_t>((<uint64_t>1 << bits) - 1)
    c.flip = (<uint32_t>1 << (bits - 1)) if signed else 0
    return c


# ---------------------------------------------------------------- bit writer

cdef struct BitWriter:
    uint64_t acc        # pending bits, left-aligned
    unsigned used       # pending bit count, < 8 between calls
    uint8_t *out


cdef inline void put_bits(BitWriter *w, uint64_t v, unsigned width) noexcept nogil:
    # width in 1..56 and v < 2**width. Stores 8 bytes every time and
    # advances by the whole bytes filled: no data-dependent branch.
    cdef unsigned whole
    w.acc |= v << (64 - w.used - width)
    w.used += width
    store_be64(w.out, w.acc)
    whole = w.used >> 3
    w.out += whole
    w.acc <<= whole * 8
    w.used &= 7


cdef inline void put_fs(BitWriter *w, uint64_t q) noexcept nogil:
    while q >= 48:
        put_bits(w, 0, 48)
        q -= 48
    put_bits(w, 1, <unsigned>q + 1)


cdef inline void put_fs_pair(BitWriter *w, uint64_t a, uint64_t b) noexcept nogil:
    # Two fundamental sequences in one store when they fit.
    if a + b + 2 <= 56:
        put_bits(w, ((<uint64_t>1) << (b + 1)) | 1, <unsigned>(a + b + 2))
    else:
        put_fs(w, a)
        put_fs(w, b)


cdef inline void pad_to_byte(BitWriter *w) noexcept nogil:
    if w.used:
        w.out += 1
        w.acc = 0
        w.used = 0


cdef inline void finish(BitWriter *w) noexcept nogil:
    pad_to_byte(w)


# ------------------------------------------------------------------- encoder

cdef inline uint32_t map_residual(uint32_t p, uint32_t c, uint32_t xmax) noexcept nogil:
    # Unit-delay prediction error mapped to a non-negative integer (CCSDS
    # 121.0-B-3 section 4.3). Written as selects, not branches: the sign of
    # the residual is a coin toss on noisy data.
    cdef int64_t delta = <int64_t>c - <int64_t>p
    cdef uint64_t size = <uint64_t>(-delta if delta < 0 else delta)
    cdef uint64_t theta = p if p < xmax - p else xmax - p
    cdef uint64_t inside = 2 * size - <uint64_t>(delta < 0)
    return <uint32_t>(inside if size <= theta else theta + size)


cdef inline uint64_t map_block(const sample_t *cur, uint32_t prev_raw, uint32_t *d,
                               int J, uint32_t mask, uint32_t flip, uint32_t *seen) noexcept nogil:
    cdef int i
    cdef uint32_t orv = <uint32_t>cur[0]
    cdef uint64_t total
    d[0] = map_residual((prev_raw & mask) ^ flip, (<uint32_t>cur[0] & mask) ^ flip, mask)
    total = d[0]
    for i in range(1, J):
        orv |= <uint32_t>cur[i]
        d[i] = map_residual((<uint32_t>cur[i - 1] & mask) ^ flip, (<uint32_t>cur[i] & mask) ^ flip, mask)
        total += d[i]
    seen[0] |= orv
    return total


cdef inline uint64_t copy_block(const sample_t *cur, uint32_t *d, int J, uint32_t mask,
                                uint32_t *seen) noexcept nogil:
    cdef int i
    cdef uint32_t orv = 0
    cdef uint64_t total = 0
    for i in range(J):
        orv |= <uint32_t>cur[i]
        d[i] = <uint32_t>cur[i] & mask
        total += d[i]
    seen[0] |= orv
    return total


cdef inline uint64_t fs_bits(const uint32_t *d, int J, int k) noexcept nogil:
    cdef int i
    cdef uint64_t total = 0
    for i in range(J):
        total += d[i] >> k
    return total


cdef inline uint64_t best_split(const uint32_t *d, int J, int m, uint64_t total, int kmax,
                                int *k_out) noexcept nogil:
    # The split length is convex in k, so the lowest k among equally short
    # options is the first local minimum. floor(log2(mean)) is almost always
    # within one of it: cost k-1, k, k+1 in one pass, walk on only from an edge.
    cdef int k = bitlen64(total // <uint64_t>m) - 1
    cdef int i, lo, hi
    cdef uint64_t below = 0, here = 0, above = 0, length, other
    if k < 1:
        k = 1
    if k > kmax - 1:
        k = kmax - 1
    if k < 1:
        # kmax <= 1: at most two options, cost them directly.
        length = fs_bits(d, J, 0) + <uint64_t>m
        k = 0
        if kmax == 1:
            other = fs_bits(d, J, 1) + <uint64_t>m * 2
            if other < length:
                length = other
                k = 1
        k_out[0] = k
        return length
    for i in range(J):
        below += d[i] >> (k - 1)
        here += d[i] >> k
        above += d[i] >> (k + 1)
    below += <uint64_t>m * k
    here += <uint64_t>m * (k + 1)
    above += <uint64_t>m * (k + 2)
    if below <= here:
        k -= 1
        length = below
        while k > 0:
            other = fs_bits(d, J, k - 1) + <uint64_t>m * k
            if other > length:
                break
            length = other
            k -= 1
    elif above < here:
        k += 1
        length = above
        while k < kmax:
            other = fs_bits(d, J, k + 1) + <uint64_t>m * (k + 2)
            if other >= length:
                break
            length = other
            k += 1
    else:
        length = here
    k_out[0] = k
    return length


cdef inline uint64_t second_extension_bits(const uint32_t *d, int J, uint64_t limit) noexcept nogil:
    cdef int j
    cdef uint64_t s, length = 1
    for j in range(0, J, 2):
        s = <uint64_t>d[j] + d[j + 1]
        length += s * (s + 1) // 2 + d[j + 1] + 1
        if length > limit:
            break
    return length


cdef inline void put_zero_run(BitWriter *w, const Coder *c, int run, bint at_end,
                              bint has_ref, uint32_t ref_raw) noexcept nogil:
    put_bits(w, 0, c.id_len + 1)
    if has_ref:
        put_bits(w, ref_raw, c.n)
    if at_end and run > 4:
        put_fs(w, ROS_FS)
    elif run >= 5:
        put_fs(w, run)
    else:
        put_fs(w, run - 1)


cdef void put_block(BitWriter *sink, const Coder *c, const uint32_t *d, uint64_t total,
                           bint has_ref, uint32_t ref_raw) noexcept nogil:
    cdef int J = c.J, m = c.J - has_ref, i, j, k = 0
    cdef uint64_t best = <uint64_t>m * c.n
    cdef uint64_t split = <uint64_t>-1, se, bound, s
    cdef uint64_t P = <uint64_t>(J // 2)
    cdef int option = 0        # 0 no compression, 1 second extension, 2 split
    cdef uint32_t kmask
    # A register copy of the writer: through the pointer every put would
    # wait on a store-to-load round trip.
    cdef BitWriter local = sink[0]
    cdef BitWriter *w = &local
    if c.kmax >= 0:
        split = best_split(d, J, m, total, c.kmax, &k)
    # Second extension wins ties against split but not against no
    # compression; its cost is at least 1 + P + S(S+P)/(2P) (Jensen), which
    # rules it out cheaply on busy blocks.
    bound = best - 1 if best - 1 < split else split
    if total <= (1 << 20) and bound >= 1 + P and total * (total + P) <= 2 * P * (bound - 1 - P):
        se = second_extension_bits(d, J, bound)
        if se <= bound:
            best = se
            option = 1
    if option == 0 and split < best:
        option = 2
    if option == 2:
        put_bits(w, k + 1, c.id_len)
        if has_ref:
            put_bits(w, ref_raw, c.n)
        i = has_ref
        if has_ref:
            put_fs(w, d[1] >> k)
            i = 2
        while i < J:
            put_fs_pair(w, d[i] >> k, d[i + 1] >> k)
            i += 2
        if k:
            kmask = (<uint32_t>1 << k) - 1
            i = has_ref
            if has_ref:
                put_bits(w, d[1] & kmask, k)
                i = 2
            if k <= 28:
                while i < J:
                    put_bits(w, (<uint64_t>(d[i] & kmask) << k) | (d[i + 1] & kmask), 2 * k)
                    i += 2
            else:
                while i < J:
                    put_bits(w, d[i] & kmask, k)
                    i += 1
    elif option == 1:
        put_bits(w, 1, c.id_len + 1)
        if has_ref:
            put_bits(w, ref_raw, c.n)
        for j in range(0, J, 2):
            s = <uint64_t>d[j] + d[j + 1]
            put_fs(w, s * (s + 1) // 2 + d[j + 1])
    else:
        put_bits(w, (<uint32_t>1 << c.id_len) - 1, c.id_len)
        if has_ref:
            put_bits(w, ref_raw, c.n)
        for i in range(has_ref, J):
            put_bits(w, d[i], c.n)
    sink[0] = local


# ------------------------------------------------------- narrow-sample encoder
#
# For n <= NARROW_BITS every mapped value and every block sum fits 32 bits, so
# mapping a block and costing split options are plain int32 lane arithmetic
# that gcc -O3 vectorises with the baseline ISA (SSE2 on x86_64, NEON on
# aarch64): no -march, so one build runs on any x86_64 and on the Pi. Each is
# compiled once per block size, so the loops are fully unrolled. The estimate
# of k from the block sum is within one of the best on nearly every block
# (the previous block's k is not: image texture changes too fast), so one
# costing pass usually settles it. Output packs up to eight codes a store.

cdef enum:
    NARROW_BITS = 26        # J * (2**n - 1) < 2**32 for J <= 64
    STORE_BITS = 56         # put_bits width limit


cdef inline uint32_t map_narrow(const sample_t *prev, const sample_t *cur, uint32_t *d, int J,
                               uint32_t mask, uint32_t flip, uint32_t *seen) noexcept nogil:
    # Same mapping as map_residual, branch-free in int32 so it vectorises:
    # zigzag (2|delta| - (delta < 0)) inside [-theta, theta], theta + |delta|
    # outside. Returns the block sum.
    cdef int i
    cdef int32_t xmax = <int32_t>mask, p, v, delta, neg, size, theta, z
    cdef uint32_t total = 0, orv = 0, r
    for i in range(J):
        orv |= <uint32_t>cur[i]
        p = <int32_t>((<uint32_t>prev[i] & mask) ^ flip)
        v = <int32_t>((<uint32_t>cur[i] & mask) ^ flip)
        delta = v - p
        neg = delta >> 31
        size = (delta ^ neg) - neg
        theta = p if p < xmax - p else xmax - p
        z = (delta + delta) ^ neg
        r = <uint32_t>(z if size <= theta else theta + size)
        d[i] = r
        total += r
    seen[0] |= orv
    return total


cdef inline uint32_t copy_narrow(const sample_t *cur, uint32_t *d, int J, uint32_t mask,
                                 uint32_t *seen) noexcept nogil:
    cdef int i
    cdef uint32_t total = 0, orv = 0, r
    for i in range(J):
        orv |= <uint32_t>cur[i]
        r = <uint32_t>cur[i] & mask
        d[i] = r
        total += r
    seen[0] |= orv
    return total


cdef inline void cost_near(const uint32_t *d, int J, int k, uint32_t *sums) noexcept nogil:
    # sum(d >> s) for s = k-1, k, k+1 in one pass.
    cdef int i
    cdef uint32_t t1 = 0, t2 = 0, t3 = 0
    for i in range(J):
        t1 += d[i] >> (k - 1)
        t2 += d[i] >> k
        t3 += d[i] >> (k + 1)
    sums[0] = t1
    sums[1] = t2
    sums[2] = t3


cdef inline uint32_t block_pass(const sample_t *prev, const sample_t *cur, uint32_t *d, int J,
                                const Coder *c, uint32_t *seen) noexcept nogil:
    # A constant J per call lets gcc unroll and vectorise each copy fully.
    if c.preprocess:
        if J == 16:
            return map_narrow(prev, cur, d, 16, c.mask, c.flip, seen)
        elif J == 32:
            return map_narrow(prev, cur, d, 32, c.mask, c.flip, seen)
        elif J == 8:
            return map_narrow(prev, cur, d, 8, c.mask, c.flip, seen)
        return map_narrow(prev, cur, d, 64, c.mask, c.flip, seen)
    if J == 16:
        return copy_narrow(cur, d, 16, c.mask, seen)
    elif J == 32:
        return copy_narrow(cur, d, 32, c.mask, seen)
    elif J == 8:
        return copy_narrow(cur, d, 8, c.mask, seen)
    return copy_narrow(cur, d, 64, c.mask, seen)


cdef inline void cost_pass(const uint32_t *d, int J, int k, uint32_t *sums) noexcept nogil:
    if J == 16:
        cost_near(d, 16, k, sums)
    elif J == 32:
        cost_near(d, 32, k, sums)
    elif J == 8:
        cost_near(d, 8, k, sums)
    else:
        cost_near(d, 64, k, sums)


cdef inline uint32_t fs_bits32(const uint32_t *d, int J, int k) noexcept nogil:
    cdef int i
    cdef uint32_t total = 0
    for i in range(J):
        total += d[i] >> k
    return total


cdef inline uint64_t walk_split(const uint32_t *d, int J, const uint32_t *sums, int kmax,
                                int *k_io) noexcept nogil:
    # Lowest k among equally short split options, from the costs of k-1, k,
    # k+1 (1 <= k < kmax): the length is convex in k (see best_split).
    cdef int k = k_io[0]
    cdef uint64_t m = <uint64_t>J, length, other
    cdef uint64_t below = sums[0] + m * k
    cdef uint64_t here = sums[1] + m * (k + 1)
    cdef uint64_t above = sums[2] + m * (k + 2)
    if below <= here:
        k -= 1
        length = below
        while k > 0:
            other = fs_bits32(d, J, k - 1) + m * k
            if other > length:
                break
            length = other
            k -= 1
    elif above < here:
        k += 1
        length = above
        while k < kmax:
            other = fs_bits32(d, J, k + 1) + m * (k + 2)
            if other >= length:
                break
            length = other
            k += 1
    else:
        length = here
    k_io[0] = k
    return length


cdef inline void put_fs_group(BitWriter *w, const uint32_t *d, int k, uint64_t head,
                              uint64_t head_len) noexcept nogil:
    # head (head_len bits, possibly none) then eight fundamental sequences, as
    # one store when they fit; built as a tree to keep the dependency chain short.
    cdef uint64_t q0 = d[0] >> k, q1 = d[1] >> k, q2 = d[2] >> k, q3 = d[3] >> k
    cdef uint64_t q4 = d[4] >> k, q5 = d[5] >> k, q6 = d[6] >> k, q7 = d[7] >> k
    cdef uint64_t w01 = q0 + q1 + 2, w23 = q2 + q3 + 2, w45 = q4 + q5 + 2, w67 = q6 + q7 + 2
    cdef uint64_t v03, v47
    if head_len + w01 + w23 + w45 + w67 <= STORE_BITS:
        v03 = (((((<uint64_t>1) << (q1 + 1)) | 1) << w23) | ((<uint64_t>1) << (q3 + 1)) | 1)
        v47 = (((((<uint64_t>1) << (q5 + 1)) | 1) << w67) | ((<uint64_t>1) << (q7 + 1)) | 1)
        put_bits(w, (((head << (w01 + w23)) | v03) << (w45 + w67)) | v47,
                 <unsigned>(head_len + w01 + w23 + w45 + w67))
    else:
        if head_len:
            put_bits(w, head, <unsigned>head_len)
        put_fs_pair(w, q0, q1)
        put_fs_pair(w, q2, q3)
        put_fs_pair(w, q4, q5)
        put_fs_pair(w, q6, q7)


cdef inline void put_low_group(BitWriter *w, const uint32_t *d, int k) noexcept nogil:
    # The k low bits of eight samples in as few stores as fit: 8, 4 or 2 a store.
    cdef uint64_t km = ((<uint64_t>1) << k) - 1
    cdef uint64_t p01 = ((d[0] & km) << k) | (d[1] & km)
    cdef uint64_t p23 = ((d[2] & km) << k) | (d[3] & km)
    cdef uint64_t p45 = ((d[4] & km) << k) | (d[5] & km)
    cdef uint64_t p67 = ((d[6] & km) << k) | (d[7] & km)
    if 8 * k <= STORE_BITS:
        put_bits(w, (((p01 << 2 * k) | p23) << 4 * k) | (p45 << 2 * k) | p67, 8 * k)
    elif 4 * k <= STORE_BITS:
        put_bits(w, (p01 << 2 * k) | p23, 4 * k)
        put_bits(w, (p45 << 2 * k) | p67, 4 * k)
    else:
        put_bits(w, p01, 2 * k)
        put_bits(w, p23, 2 * k)
        put_bits(w, p45, 2 * k)
        put_bits(w, p67, 2 * k)


cdef inline void put_block_narrow(BitWriter *w, const Coder *c, const uint32_t *d,
                                  uint32_t total) noexcept nogil:
    # A block without a reference sample, n <= NARROW_BITS, 2 <= kmax: same
    # option rules, so the same bytes, as put_block.
    cdef int J = c.J, i, k
    cdef uint64_t best = <uint64_t>J * c.n
    cdef uint64_t split, se, bound
    cdef uint64_t P = <uint64_t>(J // 2)
    cdef int option = 0        # 0 no compression, 1 second extension, 2 split
    cdef uint32_t sums[3]
    # floor(log2(mean)) is within one of the best k on nearly every block.
    k = bitlen64(total // <uint32_t>J) - 1
    if k > c.kmax - 1:
        k = c.kmax - 1
    if k < 1:
        k = 1
    cost_pass(d, J, k, sums)
    split = walk_split(d, J, sums, c.kmax, &k)
    bound = best - 1 if best - 1 < split else split
    if total <= (1 << 20) and bound >= 1 + P and \
            <uint64_t>total * (total + P) <= 2 * P * (bound - 1 - P):
        se = second_extension_bits(d, J, bound)
        if se <= bound:
            best = se
            option = 1
    if option == 0 and split < best:
        option = 2
    if option == 2:
        put_fs_group(w, d, k, k + 1, c.id_len)
        for i in range(8, J, 8):
            put_fs_group(w, d + i, k, 0, 0)
        if k:
            for i in range(0, J, 8):
                put_low_group(w, d + i, k)
    elif option == 1:
        put_bits(w, 1, c.id_len + 1)
        for i in range(0, J, 2):
            se = <uint64_t>d[i] + d[i + 1]
            put_fs(w, se * (se + 1) // 2 + d[i + 1])
    else:
        put_bits(w, (<uint32_t>1 << c.id_len) - 1, c.id_len)
        for i in range(0, J, 2):
            put_bits(w, (<uint64_t>d[i] << c.n) | d[i + 1], 2 * c.n)


cdef Py_ssize_t encode_stream_narrow(const sample_t *x, Py_ssize_t count, uint8_t *out,
                                     const Coder *c, uint32_t *seen) noexcept nogil:
    cdef uint32_t d[MAX_BLOCK]
    cdef sample_t edge[MAX_BLOCK + 1]      # [previous sample, block] when x cannot serve
    cdef BitWriter w, hot
    cdef const sample_t *cur
    cdef const sample_t *prev
    cdef Py_ssize_t start = 0, base, nblocks, b, avail, i
    cdef int J = c.J, run
    cdef bint has_ref, run_ref, at_end
    cdef uint32_t ref_raw, run_ref_raw = 0, total
    w.acc = 0
    w.used = 0
    w.out = out
    while start < count:
        nblocks = min(<Py_ssize_t>c.rsi, (count - start + J - 1) // J)
        run = 0
        run_ref = False
        for b in range(nblocks):
            base = start + b * J
            if b > 0 and base + J <= count:
                prev = x + base - 1
                cur = x + base
            else:
                # The reference block predicts its first sample from itself;
                # libaec completes a last partial block with its last sample.
                avail = count - base
                for i in range(J):
                    edge[i + 1] = x[base + (i if i < avail else avail - 1)]
                edge[0] = edge[1] if b == 0 else x[base - 1]
                prev = edge
                cur = edge + 1
            total = block_pass(prev, cur, d, J, c, seen)
            has_ref = c.preprocess and b == 0
            ref_raw = <uint32_t>cur[0] & c.mask
            at_end = b == nblocks - 1 or (b + 1) % SEGMENT_BLOCKS == 0
            if total == 0:
                if run == 0:
                    run_ref = has_ref
                    run_ref_raw = ref_raw
                run += 1
                if at_end:
                    put_zero_run(&w, c, run, True, run_ref, run_ref_raw)
                    run = 0
                continue
            if run:
                put_zero_run(&w, c, run, False, run_ref, run_ref_raw)
                run = 0
            if has_ref:
                put_block(&w, c, d, total, True, ref_raw)
            else:
                # A register copy of the writer for the common block: w's
                # address escapes to the rare calls above.
                hot = w
                put_block_narrow(&hot, c, d, total)
                w = hot
        if c.pad_rsi:
            pad_to_byte(&w)
        start += nblocks * J
    finish(&w)
    return w.out - out


cdef Py_ssize_t encode_stream(const sample_t *x, Py_ssize_t count, uint8_t *out,
                              const Coder *c, uint32_t *seen) noexcept nogil:
    cdef uint32_t d[MAX_BLOCK]
    cdef sample_t tail[MAX_BLOCK]
    cdef BitWriter w
    cdef const sample_t *cur
    cdef Py_ssize_t start = 0, base, nblocks, b, avail, i
    cdef int J = c.J, run
    cdef bint has_ref, run_ref, at_end
    cdef uint32_t ref_raw, run_ref_raw = 0
    cdef uint64_t total
    w.acc = 0
    w.used = 0
    w.out = out
    while start < count:
        nblocks = min(<Py_ssize_t>c.rsi, (count - start + J - 1) // J)
        run = 0
        run_ref = False
        for b in range(nblocks):
            base = start + b * J
            if base + J <= count:
                cur = x + base
            else:
                # libaec completes a last partial block with its last sample.
                avail = count - base
                for i in range(J):
                    tail[i] = x[base + (i if i < avail else avail - 1)]
                cur = tail
            has_ref = c.preprocess and b == 0
            ref_raw = <uint32_t>cur[0] & c.mask
            if c.preprocess:
                total = map_block(cur, <uint32_t>(cur[0] if b == 0 else x[base - 1]), d,
                                  J, c.mask, c.flip, seen)
            else:
                total = copy_block(cur, d, J, c.mask, seen)
            at_end = b == nblocks - 1 or (b + 1) % SEGMENT_BLOCKS == 0
            if total == 0:
                if run == 0:
                    run_ref = has_ref
                    run_ref_raw = ref_raw
                run += 1
                if at_end:
                    put_zero_run(&w, c, run, True, run_ref, run_ref_raw)
                    run = 0
                continue
            if run:
                put_zero_run(&w, c, run, False, run_ref, run_ref_raw)
                run = 0
            put_block(&w, c, d, total, has_ref, ref_raw)
        if c.pad_rsi:
            pad_to_byte(&w)
        start += nblocks * J
    finish(&w)
    return w.out - out


cdef Py_ssize_t run_encoder(const sample_t *x, Py_ssize_t count, uint8_t *dst, const Coder *c,
                           uint32_t *seen) noexcept nogil:
    if count == 0:
        return 0
    if c.n <= NARROW_BITS and c.kmax >= 2:
        return encode_stream_narrow(x, count, dst, c, seen)
    return encode_stream(x, count, dst, c, seen)


def encoded_size_bound(Py_ssize_t count, int bits, int block_size, int rsi, int id_len):
    """Bytes that always hold the coded stream, plus slack for 8-byte stores."""
    cdef Py_ssize_t nblocks = (count + block_size - 1) // block_size
    cdef Py_ssize_t nrsi = (nblocks + rsi - 1) // rsi
    # Per block: a no-compression block or a zero run (id, flag, ref, FS <= 64).
    cdef Py_ssize_t per_block = id_len + 1 + bits + max(block_size * bits, 65)
    return (nblocks * per_block + nrsi * 8) // 8 + 16


def encode_samples(const sample_t[::1] samples, int bits, int block_size, int rsi, int id_len,
                   int kmax, bint preprocess, bint signed, bint pad_rsi):
    """Code samples (n-bit values in the low bits of each element).

    Returns (stream bytes, OR of all input elements); the caller rejects the
    result when the OR shows bits above n.
    """
    cdef Coder c = make_coder(bits, block_size, rsi, id_len, kmax, preprocess, signed, pad_rsi)
    cdef Py_ssize_t count = samples.shape[0]
    cdef Py_ssize_t bound = encoded_size_bound(count, bits, block_size, rsi, id_len)
    cdef Py_ssize_t written = 0
    cdef uint32_t seen = 0
    cdef PyObject *out = new_bytes(NULL, bound)
    cdef uint8_t *dst
    if out == NULL:
        raise MemoryError(f"cannot allocate {bound} bytes for the coded stream")
    dst = <uint8_t *>bytes_data(out)
    if count:
        with nogil:
            written = run_encoder(&samples[0], count, dst, &c, &seen)
    if _PyBytes_Resize(&out, written) < 0:
        raise MemoryError("cannot shrink the coded stream")
    result = <object>out
    Py_XDECREF(out)
    return result, seen


def encode_samples_into(const sample_t[::1] samples, uint8_t[::1] out, int bits, int block_size,
                        int rsi, int id_len, int kmax, bint preprocess, bint signed, bint pad_rsi):
    """Code samples into out, which must hold encoded_size_bound bytes.

    Returns (bytes written, OR of all input elements).
    """
    cdef Coder c = make_coder(bits, block_size, rsi, id_len, kmax, preprocess, signed, pad_rsi)
    cdef Py_ssize_t count = samples.shape[0]
    cdef Py_ssize_t bound = encoded_size_bound(count, bits, block_size, rsi, id_len)
    cdef Py_ssize_t written = 0
    cdef uint32_t seen = 0
    if out.shape[0] < bound:
        raise ValueError(f"out holds {out.shape[0]} bytes, the coded stream may need {bound}")
    if count:
        with nogil:
            written = run_encoder(&samples[0], count, &out[0], &c, &seen)
    return written, seen


# ------------------------------------------------------------------- decoder

cdef struct BitReader:
    const uint8_t *buf
    uint64_t pos
    uint64_t limit      # bits of real stream; buf holds READ_PADDING more bytes


cdef inline uint32_t get_bits(BitReader *r, unsigned width) noexcept nogil:
    # width in 1..32; at least 57 valid bits sit in the window.
    cdef uint64_t window = load_be64(r.buf + (r.pos >> 3)) << (r.pos & 7)
    r.pos += width
    return <uint32_t>(window >> (64 - width))


cdef inline uint64_t get_fs(BitReader *r) noexcept nogil:
    cdef uint64_t window = load_be64(r.buf + (r.pos >> 3)) << (r.pos & 7)
    cdef uint64_t q = 0
    cdef int z
    while window == 0:
        # A run of zeros longer than a window: step over it, but never walk
        # past the stream (the caller sees pos > limit and reports truncation).
        q += 64 - (r.pos & 7)
        r.pos += 64 - (r.pos & 7)
        if r.pos > r.limit:
            r.pos = r.limit + 1
            return q
        window = load_be64(r.buf + (r.pos >> 3))
    z = clz64(window)
    r.pos += z + 1
    return q + z


cdef inline bint read_split_msbs(BitReader *r, uint32_t *d, int m, int k,
                                 uint64_t qmax) noexcept nogil:
    # Fundamental sequences of one split block, decoded from a register
    # window: the serial chain per sample is clz and shift, not a reload.
    # Returns True when a value would not fit the sample width.
    cdef uint64_t pos = r.pos
    cdef uint64_t window = load_be64(r.buf + (pos >> 3)) << (pos & 7)
    cdef uint64_t q
    cdef int j, z
    for j in range(m):
        if window == 0:
            window = load_be64(r.buf + (pos >> 3)) << (pos & 7)
            if window == 0:
                r.pos = pos
                q = get_fs(r)
                pos = r.pos
                window = load_be64(r.buf + (pos >> 3)) << (pos & 7)
                if q > qmax:
                    return True
                d[j] = <uint32_t>q << k
                continue
        z = clz64(window)
        window = (window << z) << 1
        pos += z + 1
        if <uint64_t>z > qmax:
            r.pos = pos
            return True
        d[j] = <uint32_t>z << k
    r.pos = pos
    return False


cdef inline uint64_t triangle(uint64_t s) noexcept nogil:
    return s * (s + 1) // 2


cdef inline uint64_t pair_sum(uint64_t g) noexcept nogil:
    # Largest s with s(s+1)/2 <= g.
    cdef uint64_t s
    if g < 91:
        s = 0
        while triangle(s + 1) <= g:
            s += 1
        return s
    s = <uint64_t>((sqrt(8.0 * <double>g + 1.0) - 1.0) / 2.0)
    while s and triangle(s) > g:
        s -= 1
    while triangle(s + 1) <= g:
        s += 1
    return s


cdef inline uint32_t unmap(uint32_t u, uint32_t dv, uint32_t xmax) noexcept nogil:
    cdef uint32_t theta = u if u < xmax - u else xmax - u
    if (dv >> 1) + (dv & 1) <= theta:
        # even: +d/2, odd: -(d+1)/2, in two's complement without a branch
        return u + ((dv >> 1) ^ (~((dv & 1) - 1)))
    return dv if u <= xmax - u else xmax - dv


cdef inline Py_ssize_t put_samples(sample_t *out, Py_ssize_t i, Py_ssize_t count,
                                   const uint32_t *d, int m, uint32_t *u,
                                   const Coder *c) noexcept nogil:
    cdef int j
    cdef int take = m if count - i >= m else <int>(count - i)
    cdef uint32_t v = u[0]
    if c.preprocess:
        for j in range(take):
            v = unmap(v, d[j], c.mask)
            out[i + j] = <sample_t>(v - c.flip)
        u[0] = v
    else:
        for j in range(take):
            out[i + j] = <sample_t>((d[j] ^ c.flip) - c.flip)
    return i + take


cdef struct DecodeState:
    Py_ssize_t i            # samples written
    Py_ssize_t b            # next block of the current interval
    Py_ssize_t nblocks      # blocks in the current interval (0: none begun)
    uint32_t u              # last sample, offset binary


cdef int decode_blocks(BitReader *r, sample_t *out, Py_ssize_t count, const Coder *c,
                       DecodeState *st, bint soft_limit) noexcept nogil:
    # Decodes block after block from st until count samples or a failure.
    # With soft_limit, r.limit is not the end of the stream but the last bit
    # from which a whole block can be read in place: a block that reaches past
    # it is undone and NEEDS_TAIL returned, so the caller can finish from a
    # padded copy of the tail.
    cdef uint32_t d[MAX_BLOCK]
    cdef DecodeState saved
    cdef uint64_t saved_pos
    cdef Py_ssize_t i = st.i, run, zeros, z
    cdef int J = c.J, m, j, k, option, status = 0
    cdef int nc_option = (1 << c.id_len) - 1
    cdef bint has_ref
    cdef uint32_t u = st.u, ref_raw, zero_out
    cdef uint64_t g, s, second
    while i < count:
        st.i = i
        st.u = u
        saved = st[0]
        saved_pos = r.pos
        if st.b == st.nblocks:
            if c.pad_rsi and i > 0:
                r.pos = (r.pos + 7) & ~(<uint64_t>7)
            st.nblocks = min(<Py_ssize_t>c.rsi, (count - i + J - 1) // J)
            st.b = 0
        if r.pos > r.limit:
            status = TRUNCATED
        else:
            has_ref = c.preprocess and st.b == 0
            m = J - has_ref
            option = get_bits(r, c.id_len)
            if option == 0:
                option = get_bits(r, 1)
            else:
                option += 1           # 2 .. nc_option + 1 are split k=0.. and no compression
            if has_ref:
                ref_raw = get_bits(r, c.n)
                u = ref_raw ^ c.flip
                out[i] = <sample_t>(u - c.flip)
                i += 1
            if option == 0:
                g = get_fs(r)
                run = <Py_ssize_t>(g + 1) if g < 4096 else 4096 * 64
                if run == ROS_FS + 1:
                    run = min(c.rsi - st.b, SEGMENT_BLOCKS - st.b % SEGMENT_BLOCKS)
                elif run > ROS_FS + 1:
                    run -= 1
                if st.b + run > c.rsi:
                    status = ZERO_RUN_TOO_LONG
                else:
                    zeros = run * J - has_ref
                    if zeros > count - i:
                        zeros = count - i
                    zero_out = (u - c.flip) if c.preprocess else 0
                    for z in range(zeros):
                        out[i + z] = <sample_t>zero_out
                    i += zeros
                    st.b += run
            else:
                if option == 1:
                    for j in range(0, J, 2):
                        g = get_fs(r)
                        s = pair_sum(g)
                        second = g - triangle(s)
                        if s - second > c.mask or second > c.mask:
                            status = BAD_SECOND_EXTENSION
                            break
                        d[j] = <uint32_t>(s - second)
                        d[j + 1] = <uint32_t>second
                    if status == 0:
                        i = put_samples(out, i, count, d + has_ref, m, &u, c)
                elif option == nc_option + 1:
                    for j in range(m):
                        d[j] = get_bits(r, c.n)
                    i = put_samples(out, i, count, d, m, &u, c)
                else:
                    k = option - 2
                    if read_split_msbs(r, d, m, k, c.mask >> k):
                        status = SAMPLE_OUT_OF_RANGE
                    else:
                        if k:
                            for j in range(m):
                                d[j] |= get_bits(r, k)
                        i = put_samples(out, i, count, d, m, &u, c)
                st.b += 1
        if r.pos > r.limit:
            if soft_limit:
                st[0] = saved
                r.pos = saved_pos
                return NEEDS_TAIL
            # Whatever went wrong, it happened on bits past the end of the stream.
            status = TRUNCATED
        if status:
            break
    st.i = i
    st.u = u
    return status


cdef int decode_stream(const uint8_t *buf, Py_ssize_t nbytes, sample_t *out, Py_ssize_t count,
                       const Coder *c, int64_t *where) noexcept nogil:
    # Reads the caller's buffer in place while a whole block of reads stays
    # inside it, then the last stretch from a copy padded with READ_PADDING
    # zero bytes.
    cdef BitReader r
    cdef DecodeState st
    cdef int status = NEEDS_TAIL
    cdef Py_ssize_t tail_start = 0, tail_len
    cdef uint8_t *tail
    st.i = 0
    st.b = 0
    st.nblocks = 0
    st.u = 0
    r.buf = buf
    r.pos = 0
    if nbytes > READ_PADDING:
        r.limit = <uint64_t>(nbytes - READ_PADDING) * 8
        status = decode_blocks(&r, out, count, c, &st, True)
    if status == NEEDS_TAIL:
        tail_start = <Py_ssize_t>(r.pos >> 3)
        tail_len = nbytes - tail_start
        tail = <uint8_t *>calloc(tail_len + READ_PADDING, 1)
        if tail == NULL:
            return OUT_OF_MEMORY
        if tail_len:
            memcpy(tail, buf + tail_start, tail_len)
        r.buf = tail
        r.pos -= <uint64_t>tail_start * 8
        r.limit = <uint64_t>tail_len * 8
        status = decode_blocks(&r, out, count, c, &st, False)
        free(tail)
    where[0] = <int64_t>(r.pos if r.pos <= r.limit else r.limit) + <int64_t>tail_start * 8
    where[1] = st.i
    return status


def decode_samples(const uint8_t[::1] stream, sample_t[::1] out, int bits, int block_size,
                   int rsi, int id_len, int kmax, bint preprocess, bint signed, bint pad_rsi,
                   int64_t[::1] where):
    """Decode len(out) samples from the stream, read in place.

    Returns a status code (OK or a failure); where receives the bit position
    reached and the number of samples written.
    """
    cdef Coder c = make_coder(bits, block_size, rsi, id_len, kmax, preprocess, signed, pad_rsi)
    cdef Py_ssize_t count = out.shape[0], nbytes = stream.shape[0]
    cdef const uint8_t *buf = NULL
    cdef int status = 0
    if where.shape[0] < 2:
        raise ValueError("decode_samples needs 2 slots in where")
    where[0] = 0
    where[1] = 0
    if count == 0:
        return OK
    if nbytes:
        buf = &stream[0]
    with nogil:
        status = decode_stream(buf, nbytes, &out[0], count, &c, &where[0])
    if status == OUT_OF_MEMORY:
        raise MemoryError(f"cannot allocate {READ_PADDING} bytes past the stream tail")
    return status
