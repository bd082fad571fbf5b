"""Image products: chips and quick-looks cut into segments on board, reassembled on the ground.

References: the frame itself (lossless chips must come back equal; quick-looks
within their bound) and zlib/PNG's own rules for the PNG writer.
"""
import sqlite3
import struct
import zlib

import numpy as np
import pytest

from flight import imaging
from kestrel import products
from flight.detection import DETECTION_DTYPE
from kestrel.link.errors import ConfigurationError
from kestrel.link.timecode import CucCodec
from ground.archive import GroundArchive
from ground.images import ImageAssembler
from ground.png import display_stretch, encode_png


def frame(seed=0, shape=(64, 80)):
    rng = np.random.default_rng(seed)
    return (2000 + rng.normal(0, 20, shape)).astype(np.uint16)


def detections(*points):
    d = np.zeros(len(points), DETECTION_DTYPE)
    for i, (x, y, snr) in enumerate(points):
        d[i]["x"], d[i]["y"], d[i]["snr"] = x, y, snr
    return d


def test_chip_windows_stay_inside_the_frame():
    assert imaging.chip_window(0.2, 0.4, 16, (64, 80)) == (0, 0, 16, 16)
    assert imaging.chip_window(79.0, 63.0, 16, (64, 80)) == (64, 48, 16, 16)
    assert imaging.chip_window(40.0, 30.0, 16, (64, 80)) == (32, 22, 16, 16)
    assert imaging.chip_window(5.0, 5.0, 16, (8, 100)) == (0, 0, 16, 8)


def test_chips_are_lossless_and_pick_significant_detections():
    f = frame()
    cfg = imaging.ImagingConfig(chips_per_frame=2, chip_min_snr=8.0)
    chips = imaging.make_chips(f, detections((10, 10, 30.0), (50, 40, 9.0), (30, 30, 5.0)), cfg, products.SUBTYPE_CHIP)
    assert [(c.x0, c.y0) for c in chips] == [(2, 2), (42, 32)]
    for c in chips:
        from kestrel.codecs import ccsds123
        np.testing.assert_array_equal(ccsds123.decode(c.compressed), f[c.y0:c.y0 + 16, c.x0:c.x0 + 16])


def test_quicklook_respects_its_bound():
    f = frame(1)
    q = imaging.make_quicklook(f, imaging.ImagingConfig(quicklook_max_error=4), products.SUBTYPE_QUICKLOOK)
    from kestrel.codecs import ccsds123
    back = ccsds123.decode(q.compressed).astype(int)
    assert np.abs(back - f.astype(int)).max() <= 4
    binned = imaging.make_quicklook(f, imaging.ImagingConfig(quicklook_binning=2), products.SUBTYPE_QUICKLOOK)
    assert binned.pixels.shape == (32, 40)
    assert binned.pixels[0, 0] == round(f[:2, :2].mean())


def test_bad_imaging_config():
    with pytest.raises(ConfigurationError, match="segment_octets"):
        imaging.ImagingConfig(segment_octets=10)


class Product:
    """Builds the segments of one product the way the executive does."""

    def __init__(self, cuc, product_id, pixels, max_error=0, subtype=products.SUBTYPE_CHIP, segment_octets=64):
        from kestrel.codecs import ccsds123
        fmt = products.image_segment_format(cuc.length)
        data = ccsds123.encode(pixels, bits=14, max_error=max_error)
        pieces = imaging.segments(data, segment_octets)
        self.subtype = subtype
        self.segments = [fmt.build(dict(product_id=product_id, frame_index=7, frame_time=cuc.encode(cuc.from_unix(1.7e9)),
                                        x0=3, y0=4, width=pixels.shape[1], height=pixels.shape[0],
                                        max_error=max_error, segment_index=i, segment_count=len(pieces),
                                        data=p)) for i, p in enumerate(pieces)]


@pytest.fixture
def ground(tmp_path):
    cuc = CucCodec()
    archive = GroundArchive(tmp_path)
    yield cuc, ImageAssembler(cuc.length, cuc, archive), tmp_path
    archive.close()


def rows(assembler):
    """The images table as another process reads it: what the archive has committed."""
    assembler.archive.commit()
    db = sqlite3.connect(assembler.archive.out_dir / "archive.sqlite")
    return db.execute("SELECT product_id, kind, status, detail, path FROM images ORDER BY product_id").fetchall()


def test_whole_products_written_and_missing_segment_reported(ground):
    cuc, assembler, out = ground
    pixels = frame(2, (24, 24))
    whole = Product(cuc, 1, pixels)
    broken = Product(cuc, 2, frame(3, (24, 24)))
    assert len(whole.segments) > 2
    for s in whole.segments:
        assembler.segment(whole.subtype, s, 0.0)
    for i, s in enumerate(broken.segments):
        if i != 1:
            assembler.segment(broken.subtype, s, 0.0)
    assembler.finish(0.0)
    (p1, k1, s1, _, path1), (p2, _, s2, detail2, path2) = rows(assembler)
    assert (p1, k1, s1) == (1, "chip", "complete") and (p2, s2) == (2, "incomplete")
    assert "missing segments [1]" in detail2 and path2 is None
    np.testing.assert_array_equal(np.load(path1), pixels)
    assert (out / "images" / "chip_000007_1.png").read_bytes().startswith(b"\x89PNG")
    assert not list((out / "images").glob("*_2.*"))
    assert assembler.counters.images_complete == 1 and assembler.counters.images_incomplete == 1


def test_product_abandoned_when_newer_ones_move_on(ground):
    cuc, assembler, out = ground
    first = Product(cuc, 10, frame(4, (24, 24)))
    assembler.segment(first.subtype, first.segments[0], 0.0)
    for pid in range(11, 17):
        for s in Product(cuc, pid, frame(pid, (8, 8))).segments:
            assembler.segment(products.SUBTYPE_CHIP, s, 0.0)
    statuses = {r[0]: r[2] for r in rows(assembler)}
    assert statuses[10] == "incomplete"
    assert all(statuses[p] == "complete" for p in range(11, 17))


def test_corrupt_compressed_data_is_recorded_not_written(ground):
    cuc, assembler, out = ground
    product = Product(cuc, 5, frame(5, (24, 24)), segment_octets=10_000)
    fmt = products.image_segment_format(cuc.length)
    seg = fmt.parse(product.segments[0])
    seg.data = seg.data[:12]  # header survives, body is cut
    assembler.segment(product.subtype, fmt.build(seg), 0.0)
    [(pid, _, status, detail, path)] = rows(assembler)
    assert status == "corrupt" and path is None and detail


def test_png_is_valid():
    img = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    png = encode_png(img)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height, depth = struct.unpack(">IIB", png[16:25])
    assert (width, height, depth) == (4, 3, 16)
    idat_len = struct.unpack(">I", png[33:37])[0]
    raw = zlib.decompress(png[41:41 + idat_len])
    assert raw[0] == 0 and raw[1:9] == img[0].astype(">u2").tobytes()
    assert display_stretch(img).dtype == np.uint8
    with pytest.raises(ValueError):
        encode_png(np.zeros((2, 2, 2), np.uint8))


def test_pending_imagery_is_bounded(ground, monkeypatch):
    import ground.images as images_module

    cuc, assembler, out = ground
    monkeypatch.setattr(images_module, "MAX_PENDING_OCTETS", 300)
    big = Product(cuc, 1, frame(8, (40, 40)))
    for s in big.segments[:-1]:
        assembler.segment(big.subtype, s, 0.0)
    assert assembler._pending_octets <= 300
    assert [r[2] for r in rows(assembler)] == ["incomplete"]
