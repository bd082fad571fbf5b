"""CCSDS 123.0-B-2 low-complexity lossless and near-lossless image compression.

Predictor (section 4 of the standard), sample-adaptive entropy coder
(5.4.3.2) and hybrid entropy coder (5.4.3.3), with the compressed-image
header of section 5.3, so a compressed image describes itself: ``decode``
needs nothing but the bytes.

    data = encode(image, bits=14)               # lossless
    data = encode(image, bits=14, max_error=2)  # |decoded - image| <= 2
    data = encode(image, bits=14, max_error=8, entropy_coder="hybrid")
    image = decode(data)

The hybrid coder adds 16 variable-to-variable codes for low-entropy data,
so coarse near-lossless images cost less than 1 bit/sample; its code tables
are data in ccsds123_hybrid_tables.py. Its rules follow 5.4.3.3 as read
from two independent public implementations that agree with each other
(their facts, not their code), and the tables are checked for completeness
and the suffix-free property; no standard test vector for the hybrid coder
was available here to prove conformance byte for byte. Our encoder starts
every band's accumulator at 4 * 2**gamma0 (the standard leaves it to the
encoder; the decoder never needs it). D < 4 is refused for the hybrid coder,
where the public implementations disagree on the bound of k.

``image`` is 2-D (rows x columns, one band) or 3-D (bands x rows x columns),
of unsigned or signed integers of 2 to 16 bits.

Parameters the API does not expose take these values (all legal per the
standard). On the 14-bit infrared benchmark scene of tests/perf, one-at-a-time
scans (Omega 10..19, nu pairs, t_inc 2**4..2**11, gamma* 5..11, u_max 8..32)
found no single change that saved more than 0.4 % of the output:

* register size R = 64: with R = 64 the modular reduction of the scaled
  predicted sample never wraps for D <= 16, so the kernel works in int64.
* weight component resolution Omega = 19 (the largest, finest weights).
* weight update scaling exponent: initial nu_min = -1, final nu_max = 3,
  change interval t_inc = 2**6.
* default weight initialisation; weight exponent offsets all zero.
* sample representative flag 0 (phi = psi = 0, so the representative is the
  clipped quantizer bin centre); can be set with ``damping``/``offset``.
* sample-adaptive and hybrid coders: unary length limit u_max = 18,
  rescaling counter size gamma* = 6, initial count exponent gamma_0 = 1;
  sample-adaptive accumulator initialisation constant K = min(D - 2, 4).
* output word size B = 1 byte; no supplementary information tables.
* bit 0 of the header's user-defined byte set means "the caller gave a 2-D
  image", so ``decode`` returns the shape it was given.

Decoding accepts what this encoder writes plus the other legal values of the
scalar parameters above (any R, Omega, nu, t_inc, u_max, gamma, K, B, local
sum type, prediction mode, band-independent damping/offset, band-dependent
error limits). Tables (custom weights, weight exponent offsets, periodic
error limits, accumulator tables, supplementary information) and the
block-adaptive coder raise ``UnsupportedFeatureError``.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from construct import (
    Array,
    BitsInteger,
    BitStruct,
    Computed,
    Const,
    ConstructError,
    If,
    Padding,
    Struct,
    Switch,
    this,
)

__all__ = [
    "CompressedDataError",
    "UnsupportedFeatureError",
    "Ccsds123Params",
    "HEADER",
    "encode",
    "decode",
    "read_params",
]


class CompressedDataError(ValueError):
    """The compressed bytes are truncated, corrupt or not CCSDS 123."""


class UnsupportedFeatureError(CompressedDataError):
    """A legal CCSDS 123 option that this implementation does not decode."""


SAMPLE_ORDERS = ("bsq", "bil", "bip")
LOCAL_SUMS = {
    "neighbor-oriented": 0,
    "narrow-neighbor-oriented": 1,
    "column-oriented": 2,
    "narrow-column-oriented": 3,
}
ORDER_BI, ORDER_BSQ = 0, 1
CODER_SAMPLE_ADAPTIVE, CODER_HYBRID = 0, 1
ENTROPY_CODERS = {"sample-adaptive": CODER_SAMPLE_ADAPTIVE, "hybrid": CODER_HYBRID}
FIDELITY_LOSSLESS, FIDELITY_ABSOLUTE, FIDELITY_RELATIVE, FIDELITY_BOTH = 0, 1, 2, 3
USER_DATA_2D = 0x01


def _reserved(nbits: int):
    # Reserved fields must be zero; Const makes a nonzero one a parse error.
    return Const(0, BitsInteger(nbits))


def _z_size(ctx) -> int:
    return ctx._root.image.z_size or 1 << 16


# Section 5.3.2.2, image metadata essential subpart (12 bytes).
IMAGE_METADATA = BitStruct(
    "user_defined_data" / BitsInteger(8),
    "x_size" / BitsInteger(16),
    "y_size" / BitsInteger(16),
    "z_size" / BitsInteger(16),
    "sample_type" / BitsInteger(1),
    "_reserved0" / _reserved(1),
    "large_dynamic_range_flag" / BitsInteger(1),
    "dynamic_range" / BitsInteger(4),
    "sample_encoding_order" / BitsInteger(1),
    "sub_frame_interleaving_depth" / BitsInteger(16),
    "_reserved1" / _reserved(2),
    "output_word_size" / BitsInteger(3),
    "entropy_coder_type" / BitsInteger(2),
    "_reserved2" / _reserved(1),
    "quantizer_fidelity_control_method" / BitsInteger(2),
    "_reserved3" / _reserved(2),
    "supplementary_information_table_count" / BitsInteger(4),
)

# Section 5.3.3.2, predictor metadata primary subpart (5 bytes).
PREDICTOR_PRIMARY = BitStruct(
    "_reserved0" / _reserved(1),
    "sample_representative_flag" / BitsInteger(1),
    "number_of_prediction_bands" / BitsInteger(4),
    "prediction_mode" / BitsInteger(1),
    "weight_exponent_offset_flag" / BitsInteger(1),
    "local_sum_type" / BitsInteger(2),
    "register_size" / BitsInteger(6),
    "weight_component_resolution" / BitsInteger(4),
    "weight_update_change_interval" / BitsInteger(4),
    "weight_update_initial_parameter" / BitsInteger(4),
    "weight_update_final_parameter" / BitsInteger(4),
    "weight_exponent_offset_table_flag" / BitsInteger(1),
    "weight_initialization_method" / BitsInteger(1),
    "weight_initialization_table_flag" / BitsInteger(1),
    "weight_initialization_resolution" / BitsInteger(5),
)

# Section 5.3.3.3, error limit update period (present for BI order only).
ERROR_UPDATE_PERIOD = BitStruct(
    "_reserved0" / _reserved(1),
    "periodic_error_updating_flag" / BitsInteger(1),
    "_reserved1" / _reserved(2),
    "error_update_period_exponent" / BitsInteger(4),
)


def _error_limit_count(ctx) -> int:
    return _z_size(ctx) if ctx.assignment_method else 1


# Sections 5.3.3.3: absolute and relative error limit structures share a
# layout: a byte of method and bit depth, then one limit (band-independent)
# or one per band, each bit_depth bits, then fill to the byte boundary.
ERROR_LIMIT = BitStruct(
    "_reserved0" / _reserved(1),
    "assignment_method" / BitsInteger(1),
    "_reserved1" / _reserved(2),
    "bit_depth_code" / BitsInteger(4),
    "bit_depth" / Computed(lambda c: c.bit_depth_code or 16),
    "limits" / Array(_error_limit_count, BitsInteger(this.bit_depth)),
    Padding(lambda c: -(_error_limit_count(c) * c.bit_depth) % 8),
)

QUANTIZATION = Struct(
    "error_update" / If(this._.image.sample_encoding_order == ORDER_BI, ERROR_UPDATE_PERIOD),
    "absolute"
    / If(
        lambda c: c._.image.quantizer_fidelity_control_method in (FIDELITY_ABSOLUTE, FIDELITY_BOTH),
        ERROR_LIMIT,
    ),
    "relative"
    / If(
        lambda c: c._.image.quantizer_fidelity_control_method in (FIDELITY_RELATIVE, FIDELITY_BOTH),
        ERROR_LIMIT,
    ),
)

# Section 5.3.3.4, sample representative subpart (3 bytes).
SAMPLE_REPRESENTATIVE = BitStruct(
    "_reserved0" / _reserved(5),
    "sample_representative_resolution" / BitsInteger(3),
    "_reserved1" / _reserved(1),
    "band_varying_damping_flag" / BitsInteger(1),
    "damping_table_flag" / BitsInteger(1),
    "_reserved2" / _reserved(1),
    "fixed_damping_value" / BitsInteger(4),
    "_reserved3" / _reserved(1),
    "band_varying_offset_flag" / BitsInteger(1),
    "offset_table_flag" / BitsInteger(1),
    "_reserved4" / _reserved(1),
    "fixed_offset_value" / BitsInteger(4),
)

# Section 5.3.4.2, sample-adaptive entropy coder metadata (2 bytes).
SAMPLE_ADAPTIVE_CODER = BitStruct(
    "unary_length_limit" / BitsInteger(5),
    "rescaling_counter_size" / BitsInteger(3),
    "initial_count_exponent" / BitsInteger(3),
    "accumulator_initialization_constant" / BitsInteger(4),
    "accumulator_initialization_table_flag" / BitsInteger(1),
)

# Section 5.3.4.3, hybrid entropy coder metadata (2 bytes). No accumulator
# initialisation: the decoder runs backwards from the final accumulators.
HYBRID_CODER = BitStruct(
    "unary_length_limit" / BitsInteger(5),
    "rescaling_counter_size" / BitsInteger(3),
    "initial_count_exponent" / BitsInteger(3),
    "_reserved0" / _reserved(5),
)

# The whole header, declared once: built by encode, parsed by decode.
# Optional parts this implementation never writes (supplementary tables,
# weight tables, the block-adaptive coder) are rejected before they would
# be parsed.
HEADER = Struct(
    "image" / IMAGE_METADATA,
    "predictor" / PREDICTOR_PRIMARY,
    "quantization"
    / If(this.image.quantizer_fidelity_control_method != FIDELITY_LOSSLESS, QUANTIZATION),
    "sample_representative"
    / If(this.predictor.sample_representative_flag == 1, SAMPLE_REPRESENTATIVE),
    "entropy_coder"
    / Switch(
        this.image.entropy_coder_type,
        {CODER_SAMPLE_ADAPTIVE: SAMPLE_ADAPTIVE_CODER, CODER_HYBRID: HYBRID_CODER},
    ),
)


@dataclass(frozen=True)
class Ccsds123Params:
    """Everything the predictor and coder need; mirrors the header."""

    nx: int
    ny: int
    nz: int
    dynamic_range: int
    signed: bool
    sample_order: str  # "bsq", or "bi" with sub-frame interleaving depth
    interleaving_depth: int  # M; 1 = BIL, nz = BIP, unused for BSQ
    prediction_bands: int
    full_prediction: bool
    local_sum_type: int
    register_size: int = 64
    weight_resolution: int = 19
    t_inc_log2: int = 6
    nu_min: int = -1
    nu_max: int = 3
    absolute_limits: tuple[int, ...] | None = None  # one per band
    relative_limits: tuple[int, ...] | None = None  # one per band
    representative_resolution: int = 0  # Theta
    damping: int = 0  # phi
    offset: int = 0  # psi
    unary_length_limit: int = 18
    rescaling_counter_size: int = 6
    initial_count_exponent: int = 1
    accumulator_init_constant: int = 4  # sample-adaptive coder only
    output_word_size: int = 1
    user_defined_data: int = 0
    entropy_coder: str = "sample-adaptive"  # or "hybrid"

    @property
    def smin(self) -> int:
        return -(1 << (self.dynamic_range - 1)) if self.signed else 0

    @property
    def smax(self) -> int:
        return (1 << (self.dynamic_range - 1)) - 1 if self.signed else (1 << self.dynamic_range) - 1

    @property
    def smid(self) -> int:
        return 0 if self.signed else 1 << (self.dynamic_range - 1)

    @property
    def num_weights(self) -> int:
        return self.prediction_bands + (3 if self.full_prediction else 0)

    def encoding_loops(self) -> tuple[int, int]:
        """(BSQ flag, M): BSQ, or band-interleaved with depth M."""
        if self.sample_order == "bsq":
            return 1, 0
        return 0, self.interleaving_depth

    def limits_array(self, which: str) -> np.ndarray:
        limits = getattr(self, which)
        if limits is None:
            return np.zeros(self.nz, dtype=np.int64)
        return np.asarray(limits, dtype=np.int64)


def _coder_defaults(dynamic_range: int) -> int:
    # K must not exceed D - 2; 4 starts near the k the benchmark scene settles at.
    return min(4, dynamic_range - 2)


# ---------------------------------------------------------------- validation


def _check_limits(name, value, nz, max_value):
    """One limit per band from an int or a sequence, checked against the
    bit depth the header can carry."""
    if value is None:
        return None
    arr = np.asarray(value)
    if arr.ndim == 0:
        arr = np.full(nz, int(arr), dtype=np.int64)
    if arr.shape != (nz,) or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"{name}: expected an int or {nz} ints (one per band), got {value!r}")
    if arr.min() < 0 or arr.max() > max_value:
        raise ValueError(f"{name}: expected 0..{max_value} for this bit depth, got {arr.min()}..{arr.max()}")
    return tuple(int(v) for v in arr)


def _as_band_cube(image) -> tuple[np.ndarray, bool]:
    arr = np.asarray(image)
    if arr.ndim not in (2, 3):
        raise ValueError(f"image: expected 2-D (rows, cols) or 3-D (bands, rows, cols), got shape {arr.shape}")
    if arr.dtype.kind not in "ui" or arr.dtype.itemsize > 2:
        raise ValueError(f"image: expected integers of at most 16 bits, got dtype {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"image: expected at least one sample, got shape {arr.shape}")
    was_2d = arr.ndim == 2
    cube = arr[np.newaxis] if was_2d else arr
    if max(cube.shape) > 1 << 16:
        raise ValueError(f"image: each dimension must be at most 65536, got shape {arr.shape}")
    return cube, was_2d


def make_params(
    image,
    bits=None,
    max_error=0,
    max_relative_error=None,
    sample_order="bsq",
    prediction_bands=None,
    local_sum=None,
    full_prediction=True,
    damping=0,
    offset=0,
    representative_resolution=None,
    entropy_coder="sample-adaptive",
) -> tuple[np.ndarray, Ccsds123Params]:
    """Check the caller's arguments once; return the (bands, rows, cols)
    int32 cube and the parameters for it."""
    cube, was_2d = _as_band_cube(image)
    nz, ny, nx = cube.shape
    signed = cube.dtype.kind == "i"
    width = cube.dtype.itemsize * 8
    bits = width if bits is None else int(bits)
    if not 2 <= bits <= 16:
        raise ValueError(f"bits: expected 2..16, got {bits}")
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    cmin, cmax = int(cube.min()), int(cube.max())
    if cmin < lo or cmax > hi:
        raise ValueError(f"image: {bits}-bit {'signed' if signed else 'unsigned'} samples must be in {lo}..{hi}, got {cmin}..{cmax}")
    if sample_order not in SAMPLE_ORDERS:
        raise ValueError(f"sample_order: expected one of {SAMPLE_ORDERS}, got {sample_order!r}")
    if prediction_bands is None:
        prediction_bands = min(3, nz - 1)
    prediction_bands = int(prediction_bands)
    if not 0 <= prediction_bands <= 15:
        raise ValueError(f"prediction_bands: expected 0..15, got {prediction_bands}")
    if local_sum is None:
        # Neighbour-oriented sums read x+1 on the row above: they need two columns.
        local_sum = "neighbor-oriented" if nx > 1 else "column-oriented"
    if local_sum not in LOCAL_SUMS:
        raise ValueError(f"local_sum: expected one of {tuple(LOCAL_SUMS)}, got {local_sum!r}")
    if nx == 1 and LOCAL_SUMS[local_sum] in (0, 1):
        raise ValueError("local_sum: neighbor-oriented local sums need at least 2 columns; use a column-oriented one")
    limit_max = (1 << min(bits - 1, 16)) - 1
    absolute = _check_limits("max_error", max_error, nz, limit_max)
    relative = _check_limits("max_relative_error", max_relative_error, nz, limit_max)
    if absolute is not None and not any(absolute) and relative is None:
        absolute = None  # all-zero absolute limits: plain lossless
    if representative_resolution is None:
        representative_resolution = 4 if (damping or offset) else 0
    theta = int(representative_resolution)
    if not 0 <= theta <= 4:
        raise ValueError(f"representative_resolution: expected 0..4, got {theta}")
    for name, v in (("damping", damping), ("offset", offset)):
        if not 0 <= int(v) <= (1 << theta) - 1:
            raise ValueError(f"{name}: expected 0..{(1 << theta) - 1} for representative_resolution {theta}, got {v}")
    if absolute is None and relative is None and offset:
        raise ValueError("offset: must be 0 for lossless compression")
    if entropy_coder not in ENTROPY_CODERS:
        raise ValueError(f"entropy_coder: expected one of {tuple(ENTROPY_CODERS)}, got {entropy_coder!r}")
    if entropy_coder == "hybrid" and bits < HYBRID_MIN_BITS:
        raise ValueError(f"bits: the hybrid coder needs at least {HYBRID_MIN_BITS} bits, got {bits}")
    params = Ccsds123Params(
        nx=nx,
        ny=ny,
        nz=nz,
        dynamic_range=bits,
        signed=signed,
        sample_order="bsq" if sample_order == "bsq" else "bi",
        interleaving_depth={"bsq": 0, "bil": 1, "bip": nz}[sample_order],
        prediction_bands=prediction_bands,
        full_prediction=bool(full_prediction),
        local_sum_type=LOCAL_SUMS[local_sum],
        absolute_limits=absolute,
        relative_limits=relative,
        representative_resolution=theta,
        damping=int(damping),
        offset=int(offset),
        accumulator_init_constant=_coder_defaults(bits) if entropy_coder == "sample-adaptive" else 0,
        user_defined_data=USER_DATA_2D if was_2d else 0,
        entropy_coder=entropy_coder,
    )
    return np.ascontiguousarray(cube, dtype=np.int32), params


# -------------------------------------------------------------------- header


def _fidelity_method(p: Ccsds123Params) -> int:
    return (FIDELITY_ABSOLUTE if p.absolute_limits is not None else 0) | (
        FIDELITY_RELATIVE if p.relative_limits is not None else 0
    )


def _error_limit_fields(limits, bits):
    depth = min(bits - 1, 16)
    uniform = len(set(limits)) == 1
    return dict(
        assignment_method=0 if uniform else 1,
        bit_depth_code=depth % 16,
        limits=[limits[0]] if uniform else list(limits),
    )


def build_header(p: Ccsds123Params) -> bytes:
    bsq, depth = p.encoding_loops()
    method = _fidelity_method(p)
    quantization = None
    if method != FIDELITY_LOSSLESS:
        quantization = dict(
            error_update=None if bsq else dict(periodic_error_updating_flag=0, error_update_period_exponent=0),
            absolute=None if p.absolute_limits is None else _error_limit_fields(p.absolute_limits, p.dynamic_range),
            relative=None if p.relative_limits is None else _error_limit_fields(p.relative_limits, p.dynamic_range),
        )
    has_representative = bool(p.damping or p.offset)
    fields = dict(
        image=dict(
            user_defined_data=p.user_defined_data,
            x_size=p.nx % (1 << 16),
            y_size=p.ny % (1 << 16),
            z_size=p.nz % (1 << 16),
            sample_type=int(p.signed),
            large_dynamic_range_flag=int(p.dynamic_range > 16),
            dynamic_range=p.dynamic_range % 16,
            sample_encoding_order=bsq,
            sub_frame_interleaving_depth=depth % (1 << 16),
            output_word_size=p.output_word_size % 8,
            entropy_coder_type=ENTROPY_CODERS[p.entropy_coder],
            quantizer_fidelity_control_method=method,
            supplementary_information_table_count=0,
        ),
        predictor=dict(
            sample_representative_flag=int(has_representative),
            number_of_prediction_bands=p.prediction_bands,
            prediction_mode=0 if p.full_prediction else 1,
            weight_exponent_offset_flag=0,
            local_sum_type=p.local_sum_type,
            register_size=p.register_size % 64,
            weight_component_resolution=p.weight_resolution - 4,
            weight_update_change_interval=p.t_inc_log2 - 4,
            weight_update_initial_parameter=p.nu_min + 6,
            weight_update_final_parameter=p.nu_max + 6,
            weight_exponent_offset_table_flag=0,
            weight_initialization_method=0,
            weight_initialization_table_flag=0,
            weight_initialization_resolution=0,
        ),
        quantization=quantization,
        sample_representative=None
        if not has_representative
        else dict(
            sample_representative_resolution=p.representative_resolution,
            band_varying_damping_flag=0,
            damping_table_flag=0,
            fixed_damping_value=p.damping,
            band_varying_offset_flag=0,
            offset_table_flag=0,
            fixed_offset_value=p.offset,
        ),
        entropy_coder=_coder_fields(p),
    )
    return HEADER.build(fields)


def _coder_fields(p: Ccsds123Params) -> dict:
    fields = dict(
        unary_length_limit=p.unary_length_limit % 32,
        rescaling_counter_size=p.rescaling_counter_size - 4,
        initial_count_exponent=p.initial_count_exponent % 8,
    )
    if p.entropy_coder == "sample-adaptive":
        fields.update(
            accumulator_initialization_constant=p.accumulator_init_constant,
            accumulator_initialization_table_flag=0,
        )
    return fields


def _unsupported(what):
    raise UnsupportedFeatureError(f"CCSDS 123 header uses {what}, which this decoder does not support")


def _corrupt(what):
    raise CompressedDataError(f"CCSDS 123 header: {what}")


def _limits_from(part, nz):
    if part is None:
        return None
    values = list(part.limits)
    return tuple(values * nz if len(values) == 1 else values)


def read_params(data) -> tuple[Ccsds123Params, int]:
    """Parse and check the header; return the parameters and header length."""
    stream = io.BytesIO(bytes(data))
    try:
        image = IMAGE_METADATA.parse_stream(stream)
    except ConstructError as exc:
        raise CompressedDataError(f"CCSDS 123 image metadata unreadable: {exc}") from None
    if image.supplementary_information_table_count:
        _unsupported("supplementary information tables")
    if image.entropy_coder_type not in (CODER_SAMPLE_ADAPTIVE, CODER_HYBRID):
        _unsupported(f"entropy coder type {image.entropy_coder_type} (sample-adaptive 0 and hybrid 1 only)")
    stream.seek(0)
    try:
        header = HEADER.parse_stream(stream)
    except ConstructError as exc:
        raise CompressedDataError(f"CCSDS 123 header unreadable: {exc}") from None
    pred, coder = header.predictor, header.entropy_coder
    if pred.weight_exponent_offset_flag or pred.weight_initialization_method:
        _unsupported("weight exponent offsets or custom weight initialisation")
    if pred.weight_exponent_offset_table_flag or pred.weight_initialization_table_flag:
        _corrupt("weight table flags set without the tables' methods")
    hybrid = image.entropy_coder_type == CODER_HYBRID
    if not hybrid and (coder.accumulator_initialization_table_flag or coder.accumulator_initialization_constant == 15):
        _unsupported("an accumulator initialisation table")
    nx, ny, nz = (image.x_size or 1 << 16), (image.y_size or 1 << 16), (image.z_size or 1 << 16)
    bits = image.dynamic_range + 16 * image.large_dynamic_range_flag + (16 if image.dynamic_range == 0 else 0)
    if not 2 <= bits <= 16:
        _unsupported(f"dynamic range {bits} bits (2..16 supported)")
    if hybrid and bits < HYBRID_MIN_BITS:
        _unsupported(f"the hybrid coder with dynamic range {bits} bits ({HYBRID_MIN_BITS}..16 supported)")
    bsq = image.sample_encoding_order == ORDER_BSQ
    depth = image.sub_frame_interleaving_depth or 1 << 16
    if not bsq and depth > nz:
        _corrupt(f"sub-frame interleaving depth {depth} exceeds {nz} bands")
    omega = pred.weight_component_resolution + 4
    register = pred.register_size or 64
    if register < max(32, bits + omega + 2):
        _corrupt(f"register size {register} below max(32, D + Omega + 2) = {max(32, bits + omega + 2)}")
    nu_min, nu_max = pred.weight_update_initial_parameter - 6, pred.weight_update_final_parameter - 6
    if nu_min > nu_max or pred.weight_update_change_interval > 7:
        _corrupt(f"weight update parameters nu_min={nu_min} nu_max={nu_max} t_inc=2**{pred.weight_update_change_interval + 4}")
    if nx == 1 and pred.local_sum_type in (0, 1):
        _corrupt("neighbor-oriented local sum with a single column")
    absolute = relative = None
    if header.quantization is not None:
        q = header.quantization
        if q.error_update is not None and q.error_update.periodic_error_updating_flag:
            _unsupported("periodic error limit updating")
        absolute = _limits_from(q.absolute, nz)
        relative = _limits_from(q.relative, nz)
        for part in (q.absolute, q.relative):
            if part is not None and part.bit_depth > min(bits - 1, 16):
                _corrupt(f"error limit bit depth {part.bit_depth} exceeds min(D - 1, 16)")
    theta = damping = offset = 0
    if header.sample_representative is not None:
        sr = header.sample_representative
        if sr.band_varying_damping_flag or sr.band_varying_offset_flag:
            _unsupported("band-varying damping or offset")
        if sr.damping_table_flag or sr.offset_table_flag:
            _corrupt("damping/offset table flag set for band-independent values")
        theta, damping, offset = sr.sample_representative_resolution, sr.fixed_damping_value, sr.fixed_offset_value
        if theta > 4 or damping >= 1 << theta or offset >= 1 << theta:
            _corrupt(f"sample representative Theta={theta} phi={damping} psi={offset}")
    u_max = coder.unary_length_limit or 32
    gamma_star = coder.rescaling_counter_size + 4
    gamma0 = coder.initial_count_exponent or 8
    k_init = 0 if hybrid else coder.accumulator_initialization_constant
    if u_max < 8 or gamma_star < max(4, gamma0 + 1) or k_init > bits - 2:
        _corrupt(f"entropy coder u_max={u_max} gamma*={gamma_star} gamma0={gamma0} K={k_init}")
    params = Ccsds123Params(
        nx=nx,
        ny=ny,
        nz=nz,
        dynamic_range=bits,
        signed=bool(image.sample_type),
        sample_order="bsq" if bsq else "bi",
        interleaving_depth=0 if bsq else depth,
        prediction_bands=pred.number_of_prediction_bands,
        full_prediction=pred.prediction_mode == 0,
        local_sum_type=pred.local_sum_type,
        register_size=register,
        weight_resolution=omega,
        t_inc_log2=pred.weight_update_change_interval + 4,
        nu_min=nu_min,
        nu_max=nu_max,
        absolute_limits=absolute,
        relative_limits=relative,
        representative_resolution=theta,
        damping=damping,
        offset=offset,
        unary_length_limit=u_max,
        rescaling_counter_size=gamma_star,
        initial_count_exponent=gamma0,
        accumulator_init_constant=k_init,
        output_word_size=image.output_word_size or 8,
        user_defined_data=image.user_defined_data,
        entropy_coder="hybrid" if hybrid else "sample-adaptive",
    )
    return params, stream.tell()


# ----------------------------------------------------------------------- API


# ------------------------------------------------------- hybrid coder tables

HYBRID_MIN_BITS = 4  # for D < 4 public implementations disagree on k's bound
HYBRID_MAX_SAMPLES_PER_BIT = 256


@dataclass(frozen=True)
class LowEntropyCode:
    """One of the 16 variable-to-variable codes of 5.4.3.3. Input symbols
    are 0..limit and the escape symbol X, written limit + 1."""

    limit: int
    threshold: int
    codewords: dict  # complete input codeword (tuple of symbols) -> output bits
    flush: dict  # proper prefix (tuple, () the root) -> flush output bits


def _parse_table(text: str, limit: int) -> dict:
    entries = {}
    for line in text.splitlines():
        key, word = (part.strip() for part in line.split(","))
        zeros = 0
        if key == "<root>":
            key = ""
        elif key.startswith("0^"):
            head, _, key = key[2:].partition(" ")
            zeros = int(head)
        symbols = (0,) * zeros + tuple(limit + 1 if ch == "X" else int(ch, 16) for ch in key)
        width, value = word.split("'h")
        entries[symbols] = format(int(value, 16), f"0{int(width)}b")
    return entries


@functools.cache
def low_entropy_codes() -> tuple[LowEntropyCode, ...]:
    """The 16 low-entropy codes, parsed once from ccsds123_hybrid_tables."""
    from kestrel.codecs import ccsds123_hybrid_tables as tables

    return tuple(
        LowEntropyCode(limit, threshold, _parse_table(code, limit), _parse_table(flush, limit))
        for limit, threshold, code, flush in zip(
            tables.INPUT_SYMBOL_LIMITS, tables.THRESHOLDS, tables.CODE_TABLES, tables.FLUSH_TABLES
        )
    )


def _reverse_trie(words: list[tuple[str, int]]) -> tuple[list[int], int]:
    """Binary trie over the words read last bit first (the decoder reads the
    body backwards). Returns flat [node*2 + bit] -> child (>= 0) or leaf
    -(1 + value), and the root's index, appended to ``nodes`` by callers."""
    nodes = [[0, 0]]
    for bits, value in words:
        node = 0
        for pos, bit in enumerate(reversed(bits)):
            b = int(bit)
            if pos == len(bits) - 1:
                nodes[node][b] = -(1 + value)
            else:
                if nodes[node][b] <= 0:
                    nodes.append([0, 0])
                    nodes[node][b] = len(nodes) - 1
                node = nodes[node][b]
    return [child for pair in nodes for child in pair], len(nodes)


@functools.cache
def _hybrid_kernel_tables():
    """The code tables as flat arrays for the kernel (built once)."""
    from flight.kernels import ccsds123 as kernel

    codes = low_entropy_codes()
    child, flush_bits, flush_len, node_sym = [], [], [], []
    cw_bits, cw_len, cw_sym = [], [], []
    code_root, rev_next, rev_code_root, rev_flush_root = [], [], [], []
    for code in codes:
        node_of = {}
        for prefix in sorted(code.flush, key=len):  # parents before children
            node_of[prefix] = len(flush_bits)
            flush_bits.append(int(code.flush[prefix], 2))
            flush_len.append(len(code.flush[prefix]))
            node_sym.append(prefix)
            child.extend([-(1 << 30)] * 16)  # every slot gets filled: the tree is complete
        for prefix, node in node_of.items():
            if prefix:
                child[node_of[prefix[:-1]] * 16 + prefix[-1]] = node
        first_cw = len(cw_bits)
        for symbols, word in code.codewords.items():
            child[node_of[symbols[:-1]] * 16 + symbols[-1]] = -(1 + len(cw_bits))
            cw_bits.append(int(word, 2))
            cw_len.append(len(word))
            cw_sym.append(symbols)
        code_root.append(node_of[()])
        for words, roots in (
            ([(w, first_cw + j) for j, w in enumerate(code.codewords.values())], rev_code_root),
            ([(w, node_of[prefix]) for prefix, w in code.flush.items()], rev_flush_root),
        ):
            flat, _ = _reverse_trie(words)
            base = len(rev_next) // 2
            roots.append(base)
            rev_next.extend(v + base if v > 0 else v for v in flat)
    symbols, cw_start, node_start = [], [], []
    for seq in cw_sym:
        cw_start.append(len(symbols))
        symbols.extend(seq)
    for seq in node_sym:
        node_start.append(len(symbols))
        symbols.extend(seq)
    i32 = lambda v: np.asarray(v, dtype=np.int32)  # noqa: E731
    return kernel.HybridTables(
        dict(
            enc_child=i32(child),
            cw_bits=np.asarray(cw_bits, dtype=np.uint32),
            cw_len=np.asarray(cw_len, dtype=np.uint8),
            code_root=i32(code_root),
            flush_bits=np.asarray(flush_bits, dtype=np.uint32),
            flush_len=np.asarray(flush_len, dtype=np.uint8),
            rev_next=i32(rev_next),
            rev_code_root=i32(rev_code_root),
            rev_flush_root=i32(rev_flush_root),
            cw_sym_start=i32(cw_start),
            cw_sym_len=i32([len(s) for s in cw_sym]),
            node_sym_start=i32(node_start),
            node_sym_len=i32([len(s) for s in node_sym]),
            symbols=np.asarray(symbols, dtype=np.uint8),
            limits=np.asarray([c.limit for c in codes], dtype=np.int64),
            thresholds=np.asarray([c.threshold for c in codes], dtype=np.int64),
        )
    )


def _kernel_config(p: Ccsds123Params) -> dict:
    bsq, depth = p.encoding_loops()
    return dict(
        nx=p.nx,
        ny=p.ny,
        nz=p.nz,
        dynamic_range=p.dynamic_range,
        smin=p.smin,
        smax=p.smax,
        smid=p.smid,
        bsq=bsq,
        depth=depth,
        prediction_bands=p.prediction_bands,
        full_prediction=int(p.full_prediction),
        local_sum_type=p.local_sum_type,
        register_size=p.register_size,
        omega=p.weight_resolution,
        t_inc_log2=p.t_inc_log2,
        nu_min=p.nu_min,
        nu_max=p.nu_max,
        use_absolute=int(p.absolute_limits is not None),
        use_relative=int(p.relative_limits is not None),
        theta=p.representative_resolution,
        damping=p.damping,
        offset=p.offset,
        u_max=p.unary_length_limit,
        gamma_star=p.rescaling_counter_size,
        gamma0=p.initial_count_exponent,
        k_init=p.accumulator_init_constant,
        word_bytes=p.output_word_size,
        hybrid=int(p.entropy_coder == "hybrid"),
    )


def _max_body_bytes(p: Ccsds123Params) -> int:
    # Sample-adaptive: longest codeword u_max zeros then D bits, plus fill.
    # Hybrid: a rescaling bit, a length-limited GPO2 word and at most one
    # table codeword (<= 21 bits) per sample, then 16 flush words (<= 10
    # bits), the accumulators and the closing bit.
    per_sample = p.unary_length_limit + p.dynamic_range
    tail = 0
    if p.entropy_coder == "hybrid":
        per_sample += 1 + 21
        tail = 16 * 10 + p.nz * (2 + p.dynamic_range + p.rescaling_counter_size) + 1
    bits = p.nx * p.ny * p.nz * per_sample + tail
    return bits // 8 + 2 * p.output_word_size + 8


def encode(
    image,
    bits=None,
    max_error=0,
    *,
    max_relative_error=None,
    sample_order="bsq",
    prediction_bands=None,
    local_sum=None,
    full_prediction=True,
    damping=0,
    offset=0,
    representative_resolution=None,
    entropy_coder="sample-adaptive",
) -> bytes:
    """Compress ``image`` to a self-describing CCSDS 123.0-B-2 byte string.

    bits: dynamic range D (default: the dtype's width). max_error: absolute
    error limit per sample (int, or one per band; 0 = lossless).
    max_relative_error: relative limit r, giving floor(r * |prediction| / 2**D)
    per sample (combined with max_error by taking the smaller). sample_order:
    "bsq", "bil" or "bip" (BI with depth 1 or all bands). prediction_bands:
    previous bands used, 0..15 (default min(3, bands - 1)). local_sum: one of
    LOCAL_SUMS (default neighbor-oriented, column-oriented for one column).
    full_prediction: use the three directional local differences.
    damping, offset, representative_resolution: phi, psi and Theta of the
    sample representative (near-lossless only benefits). entropy_coder:
    "sample-adaptive" (5.4.3.2) or "hybrid" (5.4.3.3, bits >= 4), which
    codes low-entropy data below 1 bit/sample.
    """
    from flight.kernels import ccsds123 as kernel

    cube, params = make_params(
        image,
        bits=bits,
        max_error=max_error,
        max_relative_error=max_relative_error,
        sample_order=sample_order,
        prediction_bands=prediction_bands,
        local_sum=local_sum,
        full_prediction=full_prediction,
        damping=damping,
        offset=offset,
        representative_resolution=representative_resolution,
        entropy_coder=entropy_coder,
    )
    header = build_header(params)
    out = np.empty(_max_body_bytes(params), dtype=np.uint8)
    nbytes = kernel.encode_body(
        cube,
        params.limits_array("absolute_limits"),
        params.limits_array("relative_limits"),
        _kernel_config(params),
        out,
        tables=_tables_for(params),
    )
    return header + out[:nbytes].tobytes()


def _tables_for(p: Ccsds123Params):
    return _hybrid_kernel_tables() if p.entropy_coder == "hybrid" else None


DECODE_ERRORS = {
    1: "compressed data truncated: the body ends before the last sample",
    2: "compressed data corrupt: a decoded sample falls outside the dynamic range",
    3: "compressed data corrupt: the hybrid coder's body is inconsistent",
}


def output_dtype(p: Ccsds123Params) -> np.dtype:
    return np.dtype(np.int16 if p.signed else np.uint16) if p.dynamic_range > 8 else np.dtype(
        np.int8 if p.signed else np.uint8
    )


def decode(data, max_samples=None) -> np.ndarray:
    """Decompress bytes from ``encode`` (or any CCSDS 123.0-B-2 image using
    the supported options) into a (bands, rows, cols) array, or (rows, cols)
    when a 2-D image was encoded. Raises CompressedDataError on bad input.

    max_samples: refuse headers announcing more samples (the hybrid coder
    may legally pack 256 samples into one bit, so a small forged stream can
    otherwise ask for a large allocation)."""
    from flight.kernels import ccsds123 as kernel

    buf = np.frombuffer(bytes(data), dtype=np.uint8)
    params, header_len = read_params(buf)
    nsamples = params.nx * params.ny * params.nz
    if max_samples is not None and nsamples > max_samples:
        raise CompressedDataError(f"CCSDS 123 header announces {nsamples} samples, more than the {max_samples} allowed")
    # Reject before allocating for a forged size: a sample-adaptive sample
    # takes at least one bit; the hybrid coder's densest word (code 15) packs
    # 256 samples into one bit.
    per_bit = HYBRID_MAX_SAMPLES_PER_BIT if params.entropy_coder == "hybrid" else 1
    if (buf.size - header_len) * 8 * per_bit < nsamples:
        raise CompressedDataError(
            f"compressed data truncated: {buf.size - header_len} body bytes cannot hold {nsamples} samples"
        )
    out = np.empty((params.nz, params.ny, params.nx), dtype=np.int32)
    status = kernel.decode_body(
        buf[header_len:],
        params.limits_array("absolute_limits"),
        params.limits_array("relative_limits"),
        _kernel_config(params),
        out,
        tables=_tables_for(params),
    )
    if status:
        raise CompressedDataError(DECODE_ERRORS[status])
    result = out.astype(output_dtype(params))
    return result[0] if params.user_defined_data & USER_DATA_2D and params.nz == 1 else result
