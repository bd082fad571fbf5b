"""CCSDS 123.0-B-2 codec: round trips, error bounds, kernel vs the plain
Python twin (flight/codecs/ccsds123_ref.py), header, and hostile input.

No independent CCSDS 123 decoder is installable here (PyPI/Debian), so
interoperability is checked only against our own reference, which is written
equation by equation from the standard; there are no standard vectors for
123 in the conformance folder.
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flight.codecs import ccsds123, ccsds123_ref
from flight.codecs.ccsds123 import CompressedDataError, UnsupportedFeatureError
from flight.kernels import ccsds123 as kernel

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ORDERS = st.sampled_from(["bsq", "bil", "bip"])


@st.composite
def images(draw, max_side=9, max_bands=4, signed=None):
    """Random images: (rows, cols) or (bands, rows, cols), 2..16 bits, with
    1xN and Nx1 shapes and smooth or noisy content."""
    bits = draw(st.integers(2, 16))
    if signed is None:
        signed = draw(st.booleans())
    bands = draw(st.integers(1, max_bands))
    rows = draw(st.integers(1, max_side))
    cols = draw(st.integers(1, max_side))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if draw(st.booleans()):
        data = rng.integers(lo, hi + 1, (bands, rows, cols))
    else:  # smooth ramp plus small noise: exercises the adaptive weights
        base = np.add.outer(np.arange(rows), np.arange(cols))[np.newaxis] * draw(st.integers(0, 5))
        data = np.clip(base + rng.integers(-2, 3, (bands, rows, cols)) + (lo + hi) // 2, lo, hi)
    dtype = (np.int8 if signed else np.uint8) if bits <= 8 else (np.int16 if signed else np.uint16)
    image = data.astype(dtype)
    if bands == 1 and draw(st.booleans()):
        image = image[0]
    return image, bits


def _local_sum_for(image, draw_kind):
    cols = image.shape[-1]
    if cols == 1 and draw_kind in ("neighbor-oriented", "narrow-neighbor-oriented"):
        return "column-oriented"
    return draw_kind


# ------------------------------------------------------------------ lossless


@FAST
@given(images(), ORDERS, st.sampled_from(list(ccsds123.LOCAL_SUMS)), st.booleans(), st.integers(0, 15))
def test_lossless_round_trip_is_exact(image_bits, order, local_sum, full, bands_used):
    image, bits = image_bits
    data = ccsds123.encode(
        image,
        bits=bits,
        sample_order=order,
        local_sum=_local_sum_for(image, local_sum),
        full_prediction=full,
        prediction_bands=bands_used,
    )
    decoded = ccsds123.decode(data)
    assert decoded.dtype == image.dtype
    np.testing.assert_array_equal(decoded, image)


@pytest.mark.parametrize("shape", [(1, 50), (50, 1), (1, 1), (3, 1, 1), (2, 7, 1), (5, 1, 9)])
@pytest.mark.parametrize("order", ["bsq", "bil", "bip"])
def test_lossless_degenerate_shapes(shape, order):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 4096, shape).astype(np.uint16)
    np.testing.assert_array_equal(ccsds123.decode(ccsds123.encode(image, bits=12, sample_order=order)), image)


def test_lossless_compresses_smooth_multiband_image():
    # Bands that are scaled copies of one scene: the spectral weights should
    # make the later bands cheap, well below the 12 bits of raw data.
    rng = np.random.default_rng(1)
    scene = np.cumsum(np.cumsum(rng.integers(-2, 3, (64, 64)), 0), 1)
    scene = scene - scene.min() + 100
    cube = np.stack([scene * (b + 2) // 2 + rng.integers(0, 2, scene.shape) for b in range(5)]).astype(np.uint16)
    data = ccsds123.encode(cube, bits=12)
    assert 8 * len(data) / cube.size < 5.0
    np.testing.assert_array_equal(ccsds123.decode(data), cube)
    # Spectral prediction helps: no previous bands costs more.
    assert len(ccsds123.encode(cube, bits=12, prediction_bands=0)) > len(data)


# ------------------------------------------------------------- near-lossless


@FAST
@given(images(signed=False), ORDERS, st.integers(1, 40))
def test_near_lossless_respects_absolute_bound(image_bits, order, max_error):
    image, bits = image_bits
    max_error = min(max_error, (1 << (bits - 1)) - 1)
    data = ccsds123.encode(image, bits=bits, max_error=max_error, sample_order=order)
    decoded = ccsds123.decode(data)
    assert np.abs(decoded.astype(np.int64) - image).max() <= max_error


@FAST
@given(images(max_bands=3), st.integers(0, 200), st.integers(0, 8))
def test_near_lossless_respects_relative_bound(image_bits, relative, absolute):
    image, bits = image_bits
    cap = (1 << min(bits - 1, 16)) - 1
    relative, absolute = min(relative, cap), min(absolute, cap)
    data = ccsds123.encode(image, bits=bits, max_error=absolute, max_relative_error=relative)
    decoded = ccsds123.decode(data).astype(np.int64)
    # Per sample the limit is min(a, floor(r * |prediction| / 2**D)), and
    # |prediction| < 2**D, so no error may exceed min(a, r).
    assert np.abs(decoded - image).max() <= min(absolute, relative)


def test_near_lossless_bound_is_used_and_shrinks_output():
    rng = np.random.default_rng(3)
    image = (2000 + np.cumsum(rng.integers(-3, 4, (96, 96)), 1) + rng.normal(0, 6, (96, 96))).astype(np.uint16)
    sizes, errors = [], []
    for max_error in (0, 1, 2, 4, 8):
        data = ccsds123.encode(image, bits=14, max_error=max_error)
        decoded = ccsds123.decode(data)
        sizes.append(len(data))
        errors.append(int(np.abs(decoded.astype(np.int32) - image).max()))
    assert errors[0] == 0
    assert all(e <= m for e, m in zip(errors, (0, 1, 2, 4, 8)))
    assert errors[-1] == 8  # the bound is reached, not just respected
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 0.6 * sizes[0]


def test_per_band_limits_and_damping():
    rng = np.random.default_rng(4)
    cube = rng.integers(0, 1024, (3, 20, 20)).astype(np.uint16)
    data = ccsds123.encode(cube, bits=10, max_error=[0, 3, 9], damping=5, offset=3)
    decoded = ccsds123.decode(data).astype(np.int32)
    err = np.abs(decoded - cube).reshape(3, -1).max(axis=1)
    assert err[0] == 0 and err[1] <= 3 and err[2] <= 9 and err[2] > 3


# ------------------------------------------------------- kernel == reference


def _kernel_args(params):
    return (
        params.limits_array("absolute_limits"),
        params.limits_array("relative_limits"),
        ccsds123._kernel_config(params),
    )


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    images(max_side=6, max_bands=4),
    ORDERS,
    st.sampled_from(list(ccsds123.LOCAL_SUMS)),
    st.booleans(),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 15),
)
def test_kernel_matches_reference(image_bits, order, local_sum, full, max_error, relative, damping):
    image, bits = image_bits
    cap = (1 << (bits - 1)) - 1
    lossy = max_error > 0 and bits > 2
    kwargs = dict(
        bits=bits,
        max_error=min(max_error, cap) if lossy else 0,
        max_relative_error=min(relative * 30, cap) if lossy and relative else None,
        sample_order=order,
        local_sum=_local_sum_for(image, local_sum),
        full_prediction=full,
        damping=damping,
        offset=damping // 2 if lossy else 0,
    )
    cube, params = ccsds123.make_params(image, **kwargs)
    ref_delta = ccsds123_ref.mapped_indices(cube, params)
    np.testing.assert_array_equal(kernel.mapped_indices(cube, *_kernel_args(params)), ref_delta)
    # Whole stream, byte for byte: header + reference coder == encode().
    expected = ccsds123.build_header(params) + ccsds123_ref.encode_body(ref_delta, params)
    data = ccsds123.encode(image, **kwargs)
    assert data == expected
    # And the reference decoder reads what the kernel wrote.
    params2, header_len = ccsds123.read_params(data)
    assert params2 == params
    ref_decoded = ccsds123_ref.reconstruct(ccsds123_ref.decode_body(data[header_len:], params2), params2)
    np.testing.assert_array_equal(ccsds123.decode(data).reshape(ref_decoded.shape), ref_decoded)


# ------------------------------------------------------------------- header


def test_header_fields_follow_the_standard():
    image = np.zeros((3, 5, 7), dtype=np.uint16)
    data = ccsds123.encode(image, bits=14, sample_order="bip", max_error=2)
    header = ccsds123.HEADER.parse(data)
    # Image metadata essential subpart: 12 bytes, sizes first.
    assert data[1:7] == bytes([0, 7, 0, 5, 0, 3])
    assert header.image.dynamic_range == 14 and header.image.large_dynamic_range_flag == 0
    assert header.image.sample_encoding_order == 0 and header.image.sub_frame_interleaving_depth == 3
    assert header.image.quantizer_fidelity_control_method == 1
    assert header.predictor.register_size == 0  # R = 64, coded mod 64
    assert header.predictor.weight_component_resolution == 19 - 4
    assert header.quantization.absolute.limits == [2]
    assert header.quantization.absolute.bit_depth == 13
    assert header.entropy_coder.unary_length_limit == 18
    # Header = 12 + 5 + error-update 1 + absolute (1 + 2 limit bytes) + coder 2.
    assert ccsds123.read_params(data)[1] == 12 + 5 + 1 + 3 + 2


def test_sixteen_bit_and_65536_rounding():
    image = np.array([[0, 65535, 1, 65534]], dtype=np.uint16)
    data = ccsds123.encode(image)
    assert ccsds123.HEADER.parse(data).image.dynamic_range == 0  # 16 coded mod 16
    np.testing.assert_array_equal(ccsds123.decode(data), image)


def test_two_dimensional_flag_restores_shape():
    image = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert ccsds123.decode(ccsds123.encode(image)).shape == (3, 4)
    assert ccsds123.decode(ccsds123.encode(image[np.newaxis])).shape == (1, 3, 4)


# --------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(image=np.zeros((2, 2, 2, 2), np.uint16)), "expected 2-D"),
        (dict(image=np.zeros((2, 2), np.float32)), "integers"),
        (dict(image=np.zeros((2, 2), np.uint32)), "integers"),
        (dict(image=np.full((2, 2), 300, np.uint16), bits=8), "0..255"),
        (dict(image=np.zeros((2, 2), np.uint16), bits=17), "2..16"),
        (dict(image=np.zeros((2, 2), np.uint16), sample_order="bxl"), "sample_order"),
        (dict(image=np.zeros((2, 2), np.uint16), bits=4, max_error=8), "0..7"),
        (dict(image=np.zeros((2, 2, 2), np.uint16), max_error=[1, 2, 3]), "one per band"),
        (dict(image=np.zeros((3, 1), np.uint16), local_sum="neighbor-oriented"), "2 columns"),
        (dict(image=np.zeros((2, 2), np.uint16), prediction_bands=16), "0..15"),
        (dict(image=np.zeros((2, 2), np.uint16), offset=1), "lossless"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, message):
    image = kwargs.pop("image")
    with pytest.raises(ValueError, match=message):
        ccsds123.encode(image, **kwargs)


def _sample_stream():
    rng = np.random.default_rng(11)
    image = (1000 + np.cumsum(rng.integers(-4, 5, (2, 24, 24)), 2)).astype(np.uint16)
    return image, ccsds123.encode(image, bits=12, sample_order="bil", max_error=1)


def test_truncated_data_raises():
    image, data = _sample_stream()
    header_len = ccsds123.read_params(data)[1]
    for cut in [0, 5, header_len - 1, header_len, header_len + 3, len(data) // 2, len(data) - 1]:
        with pytest.raises(CompressedDataError):
            ccsds123.decode(data[:cut])


def test_unsupported_options_raise_specific_error():
    _, data = _sample_stream()
    hybrid = bytearray(data)
    hybrid[10] |= 0x04  # entropy coder type 01 = hybrid
    with pytest.raises(UnsupportedFeatureError, match="hybrid|coder type"):
        ccsds123.decode(bytes(hybrid))
    reserved = bytearray(data)
    reserved[7] |= 0x40  # a reserved bit
    with pytest.raises(CompressedDataError):
        ccsds123.decode(bytes(reserved))


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_corrupted_data_never_crashes(data):
    """Flipped bytes anywhere give a decoded image or CompressedDataError:
    never another exception, a crash or a hang."""
    image, stream = _sample_stream()
    buf = bytearray(stream)
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(buf) - 1))
        buf[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        buf = buf[: data.draw(st.integers(0, len(buf)))]
    try:
        decoded = ccsds123.decode(bytes(buf))
    except CompressedDataError:
        return
    assert decoded.size >= 1


def test_forged_huge_size_is_rejected_before_allocating():
    _, data = _sample_stream()
    forged = bytearray(data)
    forged[1:7] = bytes([0xFF, 0xFF, 0xFF, 0xFF, 0, 0])  # 65535 x 65535 x 65536
    with pytest.raises(CompressedDataError, match="cannot hold"):
        ccsds123.decode(bytes(forged))


def test_garbage_raises():
    rng = np.random.default_rng(5)
    for n in (0, 1, 11, 12, 40, 1000):
        try:
            ccsds123.decode(rng.integers(0, 256, n, dtype=np.uint8).tobytes())
        except CompressedDataError:
            pass
