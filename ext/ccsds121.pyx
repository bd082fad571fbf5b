# cython: language_level=3
# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CCSDS 121.0-B-3 adaptive entropy coder: encode and decode kernels.

Callers are flight.codecs.ccsds121.encode/decode, which check every parameter
and the sample range, and hand the decoder an input copy followed by
READ_PADDING zero bytes. The unchecked directives above rely on that; the
kernels themselves check every length read from the compressed stream.
tests/test_ccsds121.py proves these kernels equal flight/codecs/ccsds121_ref.py.
"""
from cpython.ref cimport PyObject, Py_XDECREF
from libc.math cimport sqrt
from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t

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

# Bytes the decoder may read past the end of the stream before it checks the
# position again: one block of at most 64 samples (id, ref, 64 FS windows of
# 57 bits, 64 x 32 binary bits) plus one 8-byte load.
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
    cdef Py_ssize_t written
    cdef uint32_t seen = 0
    cdef PyObject *out = new_bytes(NULL, bound)
    cdef uint8_t *dst
    if out == NULL:
        raise MemoryError(f"cannot allocate {bound} bytes for the coded stream")
    dst = <uint8_t *>bytes_data(out)
    if count:
        with nogil:
            written = encode_stream(&samples[0], count, dst, &c, &seen)
    else:
        written = 0
    if _PyBytes_Resize(&out, written) < 0:
        raise MemoryError("cannot shrink the coded stream")
    result = <object>out
    Py_XDECREF(out)
    return result, seen


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


cdef int decode_stream(const uint8_t *buf, uint64_t nbits, sample_t *out, Py_ssize_t count,
                       const Coder *c, int64_t *where) noexcept nogil:
    cdef uint32_t d[MAX_BLOCK]
    cdef BitReader r
    cdef Py_ssize_t i = 0, left, nblocks, b, run, zeros, z
    cdef int J = c.J, m, j, k, option, status = 0
    cdef int nc_option = (1 << c.id_len) - 1
    cdef bint has_ref
    cdef uint32_t u = 0, ref_raw, zero_out, lsb
    cdef uint64_t g, s, q, second
    r.buf = buf
    r.pos = 0
    r.limit = nbits
    while i < count and status == 0:
        if c.pad_rsi and i > 0:
            r.pos = (r.pos + 7) & ~(<uint64_t>7)
        left = count - i
        nblocks = min(<Py_ssize_t>c.rsi, (left + J - 1) // J)
        b = 0
        while b < nblocks:
            if r.pos > r.limit:
                status = TRUNCATED
                break
            has_ref = c.preprocess and b == 0
            m = J - has_ref
            option = get_bits(&r, c.id_len)
            if option == 0:
                option = get_bits(&r, 1)
            else:
                option += 1           # 2 .. nc_option + 1 are split k=0.. and no compression
            if has_ref:
                ref_raw = get_bits(&r, c.n)
                u = ref_raw ^ c.flip
                out[i] = <sample_t>(u - c.flip)
                i += 1
            if option == 0:
                g = get_fs(&r)
                run = <Py_ssize_t>(g + 1) if g < 4096 else 4096 * 64
                if run == ROS_FS + 1:
                    run = min(c.rsi - b, SEGMENT_BLOCKS - b % SEGMENT_BLOCKS)
                elif run > ROS_FS + 1:
                    run -= 1
                if b + run > c.rsi:
                    status = ZERO_RUN_TOO_LONG
                    break
                zeros = run * J - has_ref
                if zeros > count - i:
                    zeros = count - i
                zero_out = (u - c.flip) if c.preprocess else 0
                for z in range(zeros):
                    out[i + z] = <sample_t>zero_out
                i += zeros
                b += run
                continue
            if option == 1:
                for j in range(0, J, 2):
                    g = get_fs(&r)
                    s = pair_sum(g)
                    second = g - triangle(s)
                    if s - second > c.mask or second > c.mask:
                        status = BAD_SECOND_EXTENSION
                        break
                    d[j] = <uint32_t>(s - second)
                    d[j + 1] = <uint32_t>second
                if status:
                    break
                i = put_samples(out, i, count, d + has_ref, m, &u, c)
            elif option == nc_option + 1:
                for j in range(m):
                    d[j] = get_bits(&r, c.n)
                i = put_samples(out, i, count, d, m, &u, c)
            else:
                k = option - 2
                if read_split_msbs(&r, d, m, k, c.mask >> k):
                    status = SAMPLE_OUT_OF_RANGE
                    break
                if k:
                    for j in range(m):
                        d[j] |= get_bits(&r, k)
                i = put_samples(out, i, count, d, m, &u, c)
            b += 1
    if r.pos > r.limit:
        # Whatever went wrong, it happened on bits past the end of the stream.
        status = TRUNCATED
    where[0] = <int64_t>(r.pos if r.pos <= r.limit else r.limit)
    where[1] = i
    return status


def decode_samples(const uint8_t[::1] padded, Py_ssize_t nbytes, sample_t[::1] out, int bits,
                   int block_size, int rsi, int id_len, int kmax, bint preprocess, bint signed,
                   bint pad_rsi, int64_t[::1] where):
    """Decode len(out) samples from padded[:nbytes]; padded holds READ_PADDING more bytes.

    Returns a status code (OK or a failure); where receives the bit position
    reached and the number of samples written.
    """
    cdef Coder c = make_coder(bits, block_size, rsi, id_len, kmax, preprocess, signed, pad_rsi)
    cdef Py_ssize_t count = out.shape[0]
    cdef int status = 0
    if padded.shape[0] < nbytes + READ_PADDING or where.shape[0] < 2:
        raise ValueError("decode_samples needs READ_PADDING bytes after the stream and 2 slots in where")
    if count == 0:
        where[0] = 0
        where[1] = 0
        return OK
    with nogil:
        status = decode_stream(&padded[0], <uint64_t>nbytes * 8, &out[0], count, &c, &where[0])
    return status
