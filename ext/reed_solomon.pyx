# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""CCSDS 131.0-B Reed-Solomon (255,223), E = 16, dual basis, interleaved.

Public API and input checks live in ``flight.link.reed_solomon``; the plain
twin is ``flight.link.reed_solomon_ref``. Bounds and wraparound checks are off
because the kernel methods check every length and the hypothesis test in
tests/test_reed_solomon.py holds the kernel to the twin.

How it is fast:
- The encoder is a byte-wide LFSR whose register (32 parity symbols) lives in
  four 64-bit words, driven by one 256-row table that already folds in both
  dual-basis conversions, so nothing is converted symbol by symbol.
- The decoder runs that same LFSR over the received data and compares with
  the received parity: a clean codeword costs one encoder pass. Otherwise the
  XOR of the two is the remainder r(x) mod g(x) (shortened positions are
  zeros, so this holds for any virtual fill), and the 32 syndromes are taken
  from that degree-31 remainder (64 nibble lookups of a linear-map table, the
  dual-to-conventional conversion folded in) instead of from all 255 symbols.
- Errors: Berlekamp-Massey; a Chien search that evaluates the locator at all
  255 powers at once as XORs of precomputed 256-byte rows (one row per set bit
  of each coefficient), accepting roots at transmitted powers only and
  requiring exactly deg(Lambda) of them; Forney; then the corrected codeword
  is run through the LFSR again. Any failure means "uncorrectable" and the
  received symbols are left as they were.
"""
from libc.stdint cimport uint8_t, uint16_t, uint64_t, int32_t
from libc.string cimport memmove, memset, memcpy

cdef enum:
    SYMBOLS = 255
    DATA_SYMBOLS = 223
    NROOTS = 32
    CORRECTABLE = 16
    FIRST_ROOT = 112
    ROOT_STEP = 11
    FIELD_POLYNOMIAL = 0x187
    # log of zero: any sum with it lands in the zero tail of the exp table,
    # so a product needs no branch for a zero factor.
    LOG_ZERO = 512
    EXP_SIZE = 2 * LOG_ZERO + 1
    CHIEN_WORDS = 32  # 256 bytes: one per power 0..254, and one spare

DEPTHS = (1, 2, 3, 4, 5, 8)

# Rows of the CCSDS matrix T_alpha, most significant bit first (see the twin).
cdef uint8_t[8] T_ALPHA_ROWS = [0x8D, 0xEF, 0xEC, 0x86, 0xFA, 0x99, 0xAF, 0x7B]


ctypedef struct Tables:
    uint8_t exp[EXP_SIZE]          # alpha^i for i < 510, zero beyond
    uint16_t log[256]              # log[0] == LOG_ZERO
    uint8_t to_dual[256]
    uint8_t from_dual[256]
    # lfsr[v][w]: what feedback symbol v (dual basis) XORs into register
    # word w; byte b of word w is parity symbol 8*w+b (dual basis).
    uint64_t lfsr[256][4]
    # The 32 syndromes are a GF(2)-linear function of the 32 remainder
    # symbols (dual basis); split into 64 nibbles, each nibble value selects
    # its contribution to all syndromes (byte j of the 4 words is S_j).
    uint64_t syndrome[2 * NROOTS][16][4]
    # Chien search as a linear map too: chien[8*(i-1)+b] holds, for every
    # power p (byte p), alpha^b * X^-i with X = beta^p. Lambda_i selects the
    # rows of its set bits, so all 255 evaluations are plain word XORs.
    uint64_t chien[8 * CORRECTABLE][CHIEN_WORDS]


cdef inline uint8_t gf_mul(const Tables* t, uint8_t a, uint8_t b) noexcept nogil:
    return t.exp[t.log[a] + t.log[b]]


cdef void build_tables(Tables* t) noexcept nogil:
    cdef int i, j, k, bit, value
    cdef uint8_t image, feedback
    cdef uint8_t generator[NROOTS + 1]
    cdef uint8_t root
    cdef uint64_t word
    memset(t.exp, 0, sizeof(t.exp))
    value = 1
    for i in range(SYMBOLS):
        t.exp[i] = <uint8_t>value
        t.exp[i + SYMBOLS] = <uint8_t>value
        t.log[value] = <uint16_t>i
        value <<= 1
        if value & 0x100:
            value ^= FIELD_POLYNOMIAL
    t.log[0] = LOG_ZERO
    for i in range(256):
        image = 0
        for bit in range(8):
            if i & (1 << bit):
                image ^= T_ALPHA_ROWS[7 - bit]
        t.to_dual[i] = image
        t.from_dual[image] = <uint8_t>i
    # g(x), lowest power first, as the product of (x + beta^j), j = 112..143
    memset(generator, 0, sizeof(generator))
    generator[0] = 1
    for j in range(FIRST_ROOT, FIRST_ROOT + NROOTS):
        root = t.exp[(ROOT_STEP * j) % SYMBOLS]
        for k in range(j - FIRST_ROOT + 1, 0, -1):
            generator[k] = generator[k - 1] ^ gf_mul(t, generator[k], root)
        generator[0] = gf_mul(t, generator[0], root)
    for i in range(256):
        feedback = t.from_dual[i]
        for j in range(4):
            word = 0
            for k in range(8):
                # parity symbol 8*j+k is the coefficient of x^(31-8*j-k)
                word |= (<uint64_t>t.to_dual[gf_mul(t, feedback, generator[NROOTS - 1 - 8 * j - k])]) << (8 * k)
            t.lfsr[i][j] = word
    cdef int nibble, power, exponent
    cdef uint8_t conventional
    memset(t.syndrome, 0, sizeof(t.syndrome))
    for k in range(NROOTS):  # parity symbol k: coefficient of x^(31-k)
        power = NROOTS - 1 - k
        for nibble in range(2):
            for value in range(16):
                conventional = t.from_dual[<uint8_t>(value << (4 * nibble))]
                for j in range(NROOTS):
                    exponent = (ROOT_STEP * (FIRST_ROOT + j) * power) % SYMBOLS
                    t.syndrome[2 * k + nibble][value][j >> 3] |= (
                        (<uint64_t>gf_mul(t, conventional, t.exp[exponent])) << (8 * (j & 7)))
    memset(t.chien, 0, sizeof(t.chien))
    for i in range(1, CORRECTABLE + 1):
        for bit in range(8):
            for power in range(SYMBOLS):
                exponent = (bit + SYMBOLS * ROOT_STEP * CORRECTABLE - ROOT_STEP * i * power) % SYMBOLS
                t.chien[8 * (i - 1) + bit][power >> 3] |= (<uint64_t>t.exp[exponent]) << (8 * (power & 7))


cdef inline void lfsr_parity(const Tables* t, const uint8_t* data, Py_ssize_t stride,
                             Py_ssize_t count, uint64_t* register) noexcept nogil:
    """Parity of ``count`` dual-basis symbols taken every ``stride`` bytes."""
    cdef uint64_t w0 = 0, w1 = 0, w2 = 0, w3 = 0
    cdef const uint64_t* row
    cdef Py_ssize_t k
    for k in range(count):
        row = t.lfsr[(data[k * stride] ^ <uint8_t>w0)]
        w0 = ((w0 >> 8) | (w1 << 56)) ^ row[0]
        w1 = ((w1 >> 8) | (w2 << 56)) ^ row[1]
        w2 = ((w2 >> 8) | (w3 << 56)) ^ row[2]
        w3 = (w3 >> 8) ^ row[3]
    register[0] = w0
    register[1] = w1
    register[2] = w2
    register[3] = w3


cdef inline void gather_parity(const uint8_t* parity, Py_ssize_t stride, uint64_t* register) noexcept nogil:
    cdef int k
    register[0] = register[1] = register[2] = register[3] = 0
    for k in range(NROOTS):
        register[k >> 3] |= (<uint64_t>parity[k * stride]) << (8 * (k & 7))


cdef inline void scatter_parity(const uint64_t* register, uint8_t* parity, Py_ssize_t stride) noexcept nogil:
    cdef int k
    for k in range(NROOTS):
        parity[k * stride] = <uint8_t>(register[k >> 3] >> (8 * (k & 7)))


cdef int berlekamp_massey(const Tables* t, const uint8_t* syndrome, uint8_t* locator) noexcept nogil:
    """Error locator (lowest power first, 33 slots); returns L, or -1 if L > 16."""
    cdef uint8_t previous[NROOTS + 1]
    cdef uint8_t saved[NROOTS + 1]
    cdef uint16_t syndrome_log[NROOTS]
    cdef int complexity = 0, shift = 1, previous_degree = 0
    cdef int r, i, limit
    cdef uint16_t previous_log = 0, scale
    cdef uint8_t discrepancy
    memset(locator, 0, NROOTS + 1)
    memset(previous, 0, sizeof(previous))
    locator[0] = 1
    previous[0] = 1
    for i in range(NROOTS):
        syndrome_log[i] = t.log[syndrome[i]]
    for r in range(NROOTS):
        discrepancy = syndrome[r]
        for i in range(1, complexity + 1):
            discrepancy ^= t.exp[t.log[locator[i]] + syndrome_log[r - i]]
        if discrepancy == 0:
            shift += 1
            continue
        scale = t.log[discrepancy] + SYMBOLS - previous_log
        if scale >= SYMBOLS:
            scale -= SYMBOLS
        limit = NROOTS - shift
        if previous_degree < limit:
            limit = previous_degree
        if 2 * complexity <= r:
            memcpy(saved, locator, NROOTS + 1)
            for i in range(limit + 1):
                locator[i + shift] ^= t.exp[scale + t.log[previous[i]]]
            memcpy(previous, saved, NROOTS + 1)
            previous_degree = complexity
            complexity = r + 1 - complexity
            if complexity > CORRECTABLE:
                return -1
            previous_log = t.log[discrepancy]
            shift = 1
        else:
            for i in range(limit + 1):
                locator[i + shift] ^= t.exp[scale + t.log[previous[i]]]
            shift += 1
    return complexity


cdef int correct_codeword(const Tables* t, const uint64_t* difference, Py_ssize_t symbols,
                          int* error_symbol, uint8_t* error_value) noexcept nogil:
    """Locate and size the errors given r(x) mod g(x) in the dual basis.

    ``difference`` holds the remainder as the LFSR lays out parity; the
    codeword has ``symbols`` transmitted symbols. Fills ``error_symbol``
    (index of the transmitted symbol) and ``error_value`` (dual basis XOR) and
    returns how many, or -1 when the codeword cannot be corrected.
    """
    cdef uint8_t syndrome[NROOTS]
    cdef uint8_t locator[NROOTS + 1]
    cdef uint8_t evaluator[CORRECTABLE]
    cdef uint64_t even_part[CHIEN_WORDS]
    cdef uint64_t odd_part[CHIEN_WORDS]
    cdef uint64_t* accumulator
    cdef int bit
    cdef Py_ssize_t word
    cdef uint16_t odd_log_at_root[CORRECTABLE]
    cdef int root_power[CORRECTABLE]
    cdef int k, j, complexity, degree, found = 0
    cdef Py_ssize_t power
    cdef uint8_t even_sum, odd_sum, value
    cdef uint16_t exponent, step
    cdef int log_value

    cdef uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef const uint64_t* row
    cdef uint8_t symbol
    for k in range(NROOTS):
        symbol = <uint8_t>(difference[k >> 3] >> (8 * (k & 7)))
        row = t.syndrome[2 * k][symbol & 15]
        s0 ^= row[0]; s1 ^= row[1]; s2 ^= row[2]; s3 ^= row[3]
        row = t.syndrome[2 * k + 1][symbol >> 4]
        s0 ^= row[0]; s1 ^= row[1]; s2 ^= row[2]; s3 ^= row[3]
    for j in range(8):
        syndrome[j] = <uint8_t>(s0 >> (8 * j))
        syndrome[j + 8] = <uint8_t>(s1 >> (8 * j))
        syndrome[j + 16] = <uint8_t>(s2 >> (8 * j))
        syndrome[j + 24] = <uint8_t>(s3 >> (8 * j))

    complexity = berlekamp_massey(t, syndrome, locator)
    if complexity <= 0:
        return -1
    degree = NROOTS
    while degree > 0 and locator[degree] == 0:
        degree -= 1
    if degree != complexity:
        return -1

    # Chien search: evaluate Lambda's even and odd parts at X^-1 = beta^-p
    # for every power p at once, then look for roots among the transmitted
    # powers only. A root set of exactly L distinct powers is required.
    memset(even_part, 0, sizeof(even_part))
    memset(odd_part, 0, sizeof(odd_part))
    for k in range(1, complexity + 1):
        value = locator[k]
        if k & 1:
            accumulator = &odd_part[0]
        else:
            accumulator = &even_part[0]
        for bit in range(8):
            if (value >> bit) & 1:
                row = t.chien[8 * (k - 1) + bit]
                for j in range(CHIEN_WORDS):
                    accumulator[j] ^= row[j]
    for power in range(symbols):
        word = power >> 3
        even_sum = 1 ^ <uint8_t>(even_part[word] >> (8 * (power & 7)))
        odd_sum = <uint8_t>(odd_part[word] >> (8 * (power & 7)))
        if even_sum == odd_sum:
            if odd_sum == 0:
                return -1  # repeated root: Lambda' vanishes
            if found == complexity:
                return -1  # more roots than the degree allows: cannot happen
            root_power[found] = <int>power
            odd_log_at_root[found] = t.log[odd_sum]
            found += 1
    if found != complexity:
        return -1

    # Omega = S * Lambda mod x^L (its higher terms vanish by construction)
    for k in range(complexity):
        value = 0
        for j in range(k + 1):
            value ^= gf_mul(t, locator[j], syndrome[k - j])
        evaluator[k] = value

    # Forney with first root b = 112: e = X^-b * Omega(X^-1) / (odd part of Lambda at X^-1)
    for j in range(found):
        power = root_power[j]
        step = <uint16_t>((SYMBOLS - (ROOT_STEP * power) % SYMBOLS) % SYMBOLS)
        exponent = 0
        value = 0
        for k in range(complexity):
            value ^= t.exp[t.log[evaluator[k]] + exponent]
            exponent += step
            if exponent >= SYMBOLS:
                exponent -= SYMBOLS
        if value == 0:
            return -1
        log_value = (<int>t.log[value] + 2 * SYMBOLS - <int>odd_log_at_root[j]
                     - (ROOT_STEP * FIRST_ROOT * <int>power) % SYMBOLS) % SYMBOLS
        error_symbol[j] = <int>(symbols - 1 - power)
        error_value[j] = t.to_dual[t.exp[log_value]]
    return found


cdef int decode_block(const Tables* t, const uint8_t* block, uint8_t* out, Py_ssize_t out_length,
                      int depth, Py_ssize_t data_symbols, int32_t* counts) noexcept nogil:
    """Correct every codeword of a codeblock into ``out``; returns how many failed.

    ``out`` already holds a copy of the first ``out_length`` bytes of the
    codeblock (it may be the codeblock itself).
    """
    cdef uint64_t computed[4]
    cdef uint64_t received[4]
    cdef uint64_t difference[4]
    cdef uint8_t parity[NROOTS]
    cdef int error_symbol[CORRECTABLE]
    cdef uint8_t error_value[CORRECTABLE]
    cdef Py_ssize_t symbols = data_symbols + NROOTS
    cdef Py_ssize_t offset
    cdef int i, j, k, n, failed = 0
    for i in range(depth):
        lfsr_parity(t, block + i, depth, data_symbols, computed)
        gather_parity(block + i + data_symbols * depth, depth, received)
        for k in range(4):
            difference[k] = computed[k] ^ received[k]
        if (difference[0] | difference[1] | difference[2] | difference[3]) == 0:
            counts[i] = 0
            continue
        n = correct_codeword(t, difference, symbols, error_symbol, error_value)
        if n > 0:
            for k in range(NROOTS):
                parity[k] = <uint8_t>(received[k >> 3] >> (8 * (k & 7)))
            for j in range(n):
                if error_symbol[j] >= data_symbols:
                    parity[error_symbol[j] - data_symbols] ^= error_value[j]
                offset = error_symbol[j] * depth + i
                if offset < out_length:
                    out[offset] ^= error_value[j]
            # Independent check: the corrected codeword must re-encode.
            lfsr_parity(t, out + i, depth, data_symbols, computed)
            for k in range(NROOTS):
                if parity[k] != <uint8_t>(computed[k >> 3] >> (8 * (k & 7))):
                    for j in range(n):
                        offset = error_symbol[j] * depth + i
                        if offset < out_length:
                            out[offset] ^= error_value[j]
                    n = -1
                    break
        if n < 0:
            failed += 1
        counts[i] = n
    return failed


cdef class ReedSolomonKernel:
    """Tables for one codeblock geometry, built once; methods run without the GIL."""
    cdef Tables tables
    cdef readonly int depth
    cdef readonly int virtual_fill
    cdef readonly Py_ssize_t data_length
    cdef readonly Py_ssize_t codeblock_length

    def __cinit__(self, int depth, int virtual_fill=0):
        if depth not in DEPTHS:
            raise ValueError(f"interleaving depth must be one of {DEPTHS}, got {depth}")
        if not 0 <= virtual_fill < DATA_SYMBOLS:
            raise ValueError(f"virtual fill must be in 0..{DATA_SYMBOLS - 1}, got {virtual_fill}")
        self.depth = depth
        self.virtual_fill = virtual_fill
        self.data_length = depth * (DATA_SYMBOLS - virtual_fill)
        self.codeblock_length = self.data_length + depth * NROOTS
        build_tables(&self.tables)

    def encode_into(self, const uint8_t[::1] data, uint8_t[::1] out):
        """Write data then interleaved parity into ``out`` (codeblock length)."""
        if data.shape[0] != self.data_length:
            raise ValueError(f"data length must be {self.data_length}, got {data.shape[0]}")
        if out.shape[0] != self.codeblock_length:
            raise ValueError(f"output length must be {self.codeblock_length}, got {out.shape[0]}")
        cdef Py_ssize_t data_symbols = DATA_SYMBOLS - self.virtual_fill
        cdef uint64_t register[4]
        cdef int i
        with nogil:
            if &out[0] != &data[0]:
                memmove(&out[0], &data[0], self.data_length)
            for i in range(self.depth):
                lfsr_parity(&self.tables, &out[i], self.depth, data_symbols, register)
                scatter_parity(register, &out[self.data_length + i], self.depth)

    def decode_into(self, const uint8_t[::1] codeblock, uint8_t[::1] out, int32_t[::1] counts):
        """Correct ``codeblock`` into ``out`` (data length, or whole codeblock).

        ``out`` may be the codeblock itself (in-place) but must not otherwise
        overlap it. ``counts[i]`` receives the symbols corrected in codeword
        i, or -1 when it could not be corrected (its symbols then stay as
        received). Returns how many codewords failed.
        """
        if codeblock.shape[0] != self.codeblock_length:
            raise ValueError(f"codeblock length must be {self.codeblock_length}, got {codeblock.shape[0]}")
        if out.shape[0] != self.data_length and out.shape[0] != self.codeblock_length:
            raise ValueError(f"output length must be {self.data_length} or {self.codeblock_length}, "
                             f"got {out.shape[0]}")
        if counts.shape[0] != self.depth:
            raise ValueError(f"counts length must be {self.depth}, got {counts.shape[0]}")
        cdef const uint8_t* source = &codeblock[0]
        cdef uint8_t* target = &out[0]
        cdef Py_ssize_t out_length = out.shape[0]
        if target != source and target < source + self.codeblock_length and source < target + out_length:
            raise ValueError("output must be the codeblock itself or not overlap it")
        cdef int failed
        with nogil:
            if target != source:
                memcpy(target, source, out_length)
            failed = decode_block(&self.tables, source, target, out_length, self.depth,
                                  DATA_SYMBOLS - self.virtual_fill, &counts[0])
        return failed

    def dual_basis_tables(self):
        """(conventional -> dual, dual -> conventional) as bytes, for tests."""
        return (bytes([self.tables.to_dual[i] for i in range(256)]),
                bytes([self.tables.from_dual[i] for i in range(256)]))
