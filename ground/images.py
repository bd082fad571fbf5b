"""Image products on the ground: segments in, whole images out, or a clear 'incomplete'.

Segments of one product arrive in order on their virtual channel. A product
is written (`.npy` for tools, `.png` for people) only when every segment came
and it decompressed; one that is missing a segment when later products have
moved on, or when the pass ends, is recorded as incomplete with what is
missing, never written as if whole.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

from kestrel.codecs import ccsds123
from kestrel.products import SUBTYPE_CHIP, SUBTYPE_QUICKLOOK, SUBTYPE_TRACK_CHIP, image_segment_format


log = logging.getLogger(__name__)

KIND_NAMES = {SUBTYPE_CHIP: "chip", SUBTYPE_QUICKLOOK: "quicklook", SUBTYPE_TRACK_CHIP: "track_chip"}
# How many newer products of the same kind may start before an unfinished one is declared
# incomplete. Per kind: the flight schedules chips and quick-looks as separate classes, so a
# quick-look's last segments may follow many newer chips.
REORDER_WINDOW = 4
# Octets of unfinished products held at most; hostile segment counts cannot grow it further.
MAX_PENDING_OCTETS = 64 * 1024 * 1024


@dataclass
class _Pending:
    kind: int
    meta: dict
    count: int
    pieces: dict = field(default_factory=dict)


@dataclass
class ImageCounters:
    images_complete: int = 0
    images_incomplete: int = 0
    images_corrupt: int = 0
    segments: int = 0
    segments_inconsistent: int = 0
    segments_late: int = 0      # for a product already declared incomplete


class ImageAssembler:
    def __init__(self, time_length: int, cuc, archive):
        self.formats = {subtype: image_segment_format(time_length, subtype) for subtype in KIND_NAMES}
        self.cuc = cuc
        self.archive = archive
        self.counters = ImageCounters()
        self._pending: dict[int, _Pending] = {}
        self._pending_octets = 0
        self._abandoned: deque[int] = deque(maxlen=64)

    def segment(self, subtype: int, data: bytes, received_at: float) -> None:
        c = self.counters
        seg = self.formats.get(subtype, self.formats[SUBTYPE_CHIP]).parse(data)
        c.segments += 1
        meta = dict(frame_index=seg.frame_index, frame_time=self.cuc.to_unix(self.cuc.decode(seg.frame_time)),
                    x0=seg.x0, y0=seg.y0, width=seg.width, height=seg.height, max_error=seg.max_error,
                    track_id=seg.get("track_id"), track_frame=seg.get("track_frame"))
        if seg.product_id in self._abandoned:
            c.segments_late += 1
            return
        pending = self._pending.get(seg.product_id)
        if pending is None:
            if seg.segment_count == 0 or seg.segment_index >= seg.segment_count:
                c.segments_inconsistent += 1
                return
            pending = self._pending[seg.product_id] = _Pending(subtype, meta, seg.segment_count)
        elif (pending.meta != meta or pending.count != seg.segment_count or pending.kind != subtype
              or seg.segment_index >= pending.count):
            c.segments_inconsistent += 1
            return
        if seg.segment_index not in pending.pieces:
            self._pending_octets += len(seg.data)
        pending.pieces[seg.segment_index] = seg.data
        if len(pending.pieces) == pending.count:
            self._complete(seg.product_id, self._take(seg.product_id), received_at)
        self._expire(seg.product_id, subtype, received_at)

    def _take(self, product_id: int) -> _Pending:
        pending = self._pending.pop(product_id)
        self._pending_octets -= sum(len(p) for p in pending.pieces.values())
        return pending

    def _expire(self, newest: int, kind: int, received_at: float) -> None:
        for product_id in [p for p, pending in self._pending.items()
                           if pending.kind == kind and (newest - p) & 0xFFFFFFFF > REORDER_WINDOW]:
            self._incomplete(product_id, self._take(product_id), received_at)
        while self._pending_octets > MAX_PENDING_OCTETS and self._pending:
            oldest = next(iter(self._pending))
            self._incomplete(oldest, self._take(oldest), received_at)

    def finish(self, received_at: float) -> None:
        for product_id in list(self._pending):
            self._incomplete(product_id, self._take(product_id), received_at)

    def _name(self, product_id: int, pending: _Pending) -> str:
        meta = pending.meta
        if meta["track_id"] is not None:    # a track's chips sort together, in their order
            return f"track_{meta['track_id']}_{meta['track_frame']:03d}_{meta['frame_index']:06d}_{product_id}"
        return f"{KIND_NAMES.get(pending.kind, 'image')}_{meta['frame_index']:06d}_{product_id}"

    def _incomplete(self, product_id: int, pending: _Pending, received_at: float) -> None:
        self._abandoned.append(product_id)
        missing = sorted(set(range(pending.count)) - set(pending.pieces))
        self.counters.images_incomplete += 1
        log.warning("image %s incomplete: segments %s of %d missing", self._name(product_id, pending), missing, pending.count)
        self.archive.image(received_at, product_id, KIND_NAMES.get(pending.kind, "image"), pending.meta,
                           "incomplete", f"missing segments {missing} of {pending.count}", None)

    def _complete(self, product_id: int, pending: _Pending, received_at: float) -> None:
        kind = KIND_NAMES.get(pending.kind, "image")
        compressed = b"".join(pending.pieces[i] for i in range(pending.count))
        meta = pending.meta
        try:
            image = ccsds123.decode(compressed, max_samples=meta["width"] * meta["height"])
            if image.shape != (meta["height"], meta["width"]):
                raise ccsds123.CompressedDataError(
                    f"image is {image.shape}, its segments said {(meta['height'], meta['width'])}")
        except ccsds123.CompressedDataError as exc:
            self.counters.images_corrupt += 1
            self.archive.image(received_at, product_id, kind, meta, "corrupt", str(exc), None)
            return
        path = self.archive.save_image(self._name(product_id, pending), image)
        self.counters.images_complete += 1
        self.archive.image(received_at, product_id, kind, meta, "complete", "", path)
