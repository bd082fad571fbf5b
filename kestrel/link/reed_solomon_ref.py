"""Plain numpy/Python twin of the Reed-Solomon kernel (CCSDS 131.0-B, section 4).

Written for clarity, not speed: it is what the Cython kernel
(``flight.kernels.reed_solomon``) is tested against. It deliberately takes a
different road where it can, so a shared mistake is less likely: syndromes are
evaluated directly from all received symbols (the kernel derives them from the
parity remainder), the encoder divides polynomials symbol by symbol in the
conventional basis (the kernel runs a table-driven LFSR in the dual basis), and
the Chien search tries every valid position one by one.

Code: (255,223), E = 16, over GF(2^8) with F(x) = x^8+x^7+x^2+x+1; generator
roots alpha^(11*j) for j = 112..143. Symbols travel in Berlekamp's dual basis.
A codeword is a polynomial whose first transmitted symbol is the coefficient
of the highest power; with a virtual fill of ``q`` the ``q`` leading zeros are
neither encoded nor sent, so transmitted symbol ``s`` sits at power
``254 - q - s``.
"""
from __future__ import annotations

import numpy as np

FIELD_POLYNOMIAL = 0x187  # x^8 + x^7 + x^2 + x + 1
FIRST_ROOT = 112  # first consecutive root of the generator, in powers of beta
ROOT_STEP = 11  # beta = alpha^11 is the primitive element the roots are powers of
CODE_LENGTH = 255
DATA_LENGTH = 223
PARITY_LENGTH = 32
CORRECTABLE = PARITY_LENGTH // 2
DEPTHS = (1, 2, 3, 4, 5, 8)

# Rows of the CCSDS matrix T_alpha (131.0-B, annex on the dual basis), most
# significant bit first: row r is the dual-basis image of the conventional
# basis element alpha^(7-r). Conversion is linear over GF(2), so a byte's image
# is the XOR of the rows its set bits select.
T_ALPHA_ROWS = (0x8D, 0xEF, 0xEC, 0x86, 0xFA, 0x99, 0xAF, 0x7B)


def _field_tables() -> tuple[np.ndarray, np.ndarray]:
    exp = np.zeros(2 * CODE_LENGTH, dtype=np.int64)
    log = np.full(256, -1, dtype=np.int64)
    value = 1
    for power in range(CODE_LENGTH):
        exp[power] = value
        log[value] = power
        value <<= 1
        if value & 0x100:
            value ^= FIELD_POLYNOMIAL
    exp[CODE_LENGTH:] = exp[:CODE_LENGTH]
    return exp, log


EXP, LOG = _field_tables()


def _multiplication_table() -> np.ndarray:
    logs = LOG[1:]
    table = np.zeros((256, 256), dtype=np.uint8)
    table[1:, 1:] = EXP[(logs[:, None] + logs[None, :]) % CODE_LENGTH]
    return table


MUL = _multiplication_table()


def gf_mul(a: int, b: int) -> int:
    return int(MUL[a, b])


def gf_inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(2^8)")
    return int(EXP[(CODE_LENGTH - LOG[a]) % CODE_LENGTH])


def gf_pow_alpha(exponent: int) -> int:
    return int(EXP[exponent % CODE_LENGTH])


def _dual_basis_tables() -> tuple[np.ndarray, np.ndarray]:
    to_dual = np.zeros(256, dtype=np.uint8)
    for value in range(256):
        image = 0
        for bit in range(8):
            if value & (1 << bit):
                image ^= T_ALPHA_ROWS[7 - bit]
        to_dual[value] = image
    from_dual = np.zeros(256, dtype=np.uint8)
    from_dual[to_dual] = np.arange(256, dtype=np.uint8)
    if len(set(to_dual.tolist())) != 256:
        raise AssertionError("T_alpha is not invertible")
    return to_dual, from_dual


TO_DUAL, FROM_DUAL = _dual_basis_tables()


def generator_polynomial() -> list[int]:
    """Coefficients of g(x), lowest power first; g is monic of degree 32."""
    poly = [1]
    for j in range(FIRST_ROOT, FIRST_ROOT + PARITY_LENGTH):
        root = gf_pow_alpha(ROOT_STEP * j)
        # multiply by (x - root) == (x + root)
        shifted = [0] + poly
        scaled = [gf_mul(c, root) for c in poly] + [0]
        poly = [s ^ t for s, t in zip(shifted, scaled)]
    return poly


GENERATOR = generator_polynomial()


def encode_codeword(data_dual: np.ndarray) -> np.ndarray:
    """Parity (32 dual-basis symbols) of one possibly shortened codeword."""
    data = FROM_DUAL[np.asarray(data_dual, dtype=np.uint8)]
    # Long division of x^32 * d(x) by g(x); ``remainder[k]`` is the coefficient
    # of x^(31-k), i.e. the k-th parity symbol to be sent.
    remainder = [0] * PARITY_LENGTH
    for symbol in data.tolist():
        feedback = symbol ^ remainder[0]
        remainder = remainder[1:] + [0]
        if feedback:
            for k in range(PARITY_LENGTH):
                remainder[k] ^= gf_mul(feedback, GENERATOR[PARITY_LENGTH - 1 - k])
    return TO_DUAL[np.array(remainder, dtype=np.uint8)]


def syndromes(codeword_conv: np.ndarray) -> list[int]:
    """S_j = r(beta^(112+j)), j = 0..31, evaluated over every received symbol."""
    n = len(codeword_conv)
    powers_of_position = np.arange(n - 1, -1, -1, dtype=np.int64)  # power of each symbol
    result = []
    for j in range(PARITY_LENGTH):
        exponents = (ROOT_STEP * (FIRST_ROOT + j) * powers_of_position) % CODE_LENGTH
        terms = MUL[codeword_conv, EXP[exponents].astype(np.uint8)]
        result.append(int(np.bitwise_xor.reduce(terms)))
    return result


def berlekamp_massey(synd: list[int]) -> tuple[list[int], int]:
    """Error locator Lambda (lowest power first) and its linear complexity L."""
    lam = [1] + [0] * PARITY_LENGTH
    prev = [1] + [0] * PARITY_LENGTH
    complexity = 0
    shift = 1
    prev_discrepancy = 1
    for r in range(PARITY_LENGTH):
        discrepancy = synd[r]
        for i in range(1, complexity + 1):
            discrepancy ^= gf_mul(lam[i], synd[r - i])
        if discrepancy == 0:
            shift += 1
            continue
        scale = gf_mul(discrepancy, gf_inv(prev_discrepancy))
        updated = lam[:]
        for i in range(PARITY_LENGTH + 1 - shift):
            updated[i + shift] ^= gf_mul(scale, prev[i])
        if 2 * complexity <= r:
            prev = lam
            complexity = r + 1 - complexity
            prev_discrepancy = discrepancy
            shift = 1
        else:
            shift += 1
        lam = updated
    return lam, complexity


def poly_eval(coeffs: list[int], x: int) -> int:
    """Evaluate a polynomial given lowest power first (Horner)."""
    acc = 0
    for c in reversed(coeffs):
        acc = gf_mul(acc, x) ^ c
    return acc


def decode_codeword(codeword_dual: np.ndarray) -> tuple[np.ndarray, int]:
    """Correct one possibly shortened codeword given as sent (dual basis).

    Returns the corrected codeword and the number of symbols corrected, or the
    received codeword unchanged and -1 when it cannot be corrected.
    """
    received = np.asarray(codeword_dual, dtype=np.uint8)
    n = len(received)
    conv = FROM_DUAL[received]
    synd = syndromes(conv)
    if not any(synd):
        return received.copy(), 0
    lam, complexity = berlekamp_massey(synd)
    degree = max(i for i, c in enumerate(lam) if c)
    if complexity > CORRECTABLE or degree != complexity:
        return received.copy(), -1
    omega = [0] * complexity
    for k in range(complexity):
        for i in range(k + 1):
            omega[k] ^= gf_mul(lam[i], synd[k - i])
    lam_odd_derivative = [lam[i] if i % 2 == 1 else 0 for i in range(1, len(lam))]
    corrected = conv.copy()
    found = 0
    for power in range(n):  # only transmitted (non-fill) positions are valid
        x_inverse = gf_pow_alpha(-ROOT_STEP * power)
        if poly_eval(lam, x_inverse) != 0:
            continue
        found += 1
        # Forney with first root b: e = X^(1-b) * Omega(X^-1) / Lambda'(X^-1)
        numerator = gf_mul(gf_pow_alpha(ROOT_STEP * power * (1 - FIRST_ROOT)),
                           poly_eval(omega, x_inverse))
        denominator = poly_eval(lam_odd_derivative, x_inverse)
        if numerator == 0 or denominator == 0:
            return received.copy(), -1
        corrected[n - 1 - power] ^= gf_mul(numerator, gf_inv(denominator))
    if found != complexity or any(syndromes(corrected)):
        return received.copy(), -1
    return TO_DUAL[corrected], found


def _check_geometry(depth: int, virtual_fill: int) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"interleaving depth must be one of {DEPTHS}, got {depth}")
    if not 0 <= virtual_fill < DATA_LENGTH:
        raise ValueError(f"virtual fill must be in 0..{DATA_LENGTH - 1}, got {virtual_fill}")


def encode_codeblock(data: bytes, depth: int, virtual_fill: int = 0) -> bytes:
    """Interleave ``depth`` codewords: the data as given, then interleaved parity."""
    _check_geometry(depth, virtual_fill)
    frame = np.frombuffer(bytes(data), dtype=np.uint8)
    per_codeword = DATA_LENGTH - virtual_fill
    if frame.size != depth * per_codeword:
        raise ValueError(f"data length must be {depth * per_codeword}, got {frame.size}")
    parity = np.zeros((PARITY_LENGTH, depth), dtype=np.uint8)
    for i in range(depth):
        parity[:, i] = encode_codeword(frame[i::depth])
    return frame.tobytes() + parity.tobytes()


def decode_codeblock(codeblock: bytes, depth: int, virtual_fill: int = 0) -> tuple[bytes, tuple[int, ...]]:
    """Data of a codeblock after correction, and per codeword the count corrected (-1: failed)."""
    _check_geometry(depth, virtual_fill)
    block = np.frombuffer(bytes(codeblock), dtype=np.uint8)
    per_codeword = CODE_LENGTH - virtual_fill
    if block.size != depth * per_codeword:
        raise ValueError(f"codeblock length must be {depth * per_codeword}, got {block.size}")
    corrected_block = block.copy()
    counts = []
    for i in range(depth):
        codeword, count = decode_codeword(block[i::depth])
        corrected_block[i::depth] = codeword
        counts.append(count)
    data_length = depth * (DATA_LENGTH - virtual_fill)
    return corrected_block[:data_length].tobytes(), tuple(counts)
