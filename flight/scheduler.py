"""The downlink scheduler: which stored product the next transfer frame carries.

Alerts, events and command verification reports go first, in that order,
whenever one waits (strict priority): an alert put into the store is what
the next frame carries. Their sources are few and bounded (alerts per
confirmed track, events throttled, one verification per command), so they
cannot hold the line for long.

The other classes share the rest by deficit round robin over octets
(Shreedhar and Varghese, 1996): each round a waiting class earns its budget
(a fraction of the line rate) times a quantum, and sends while its head
packet fits in what it has earned. Over time every class with a budget gets
its share, however large its packets, so none starves; a class with nothing
waiting earns nothing and its share goes to those that wait; within a round,
the higher class goes first. A class with no budget is sent only when no
budgeted class waits. The store holds the queues; the scheduler holds only
the deficits, so a restart loses nothing but a round's credit.

Quick-looks are budgeted like the rest; QuicklookPlanner picks their binning
and period from the line rate so that they fit their share.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Mapping, NamedTuple

from kestrel.link.config import LinkConfig, build_channel_coder, frame_layout
from kestrel.link.tmframe import IDLE_VCID
from kestrel.settings import ConfigurationError, Settings, setting

from .store import CLASSES, URGENT, ProductClass, ProductStore, StoredPacket

STRICT: Final = URGENT
SHARED: Final = tuple(c for c in CLASSES if c not in STRICT)
# Octets a class with the whole line would earn each round. Larger rounds mean
# fewer refills, smaller ones finer interleaving; shares hold either way.
QUANTUM_OCTETS: Final = 8192
BINNINGS: Final = (1, 2, 4, 8, 16)
# PUS TM header with a 7-octet CUC (6 + 7 + 7), CRC (2) and the image segment
# header (30): tests/test_scheduler.py checks a real segment packet fits this.
SEGMENT_OVERHEAD_OCTETS: Final = 64


@dataclass(frozen=True)
class SchedulerConfig(Settings):
    # Detections first among the shared classes: at 10 Hz a report a frame needs about a third of a
    # 115200-baud coded link, so less than that would let their backlog, and their latency, grow.
    budget_detections: float = setting(0.45, "share of the line rate for detection reports", low=0, high=1)
    budget_chips: float = setting(0.20, "share of the line rate for image chips", low=0, high=1)
    budget_housekeeping: float = setting(0.10, "share of the line rate for housekeeping", low=0, high=1)
    budget_quicklook: float = setting(0.15, "share of the line rate for quick-look frames", low=0, high=1)
    budget_bulk: float = setting(0.10, "share of the line rate for bulk data", low=0, high=1)
    quicklook_max_binning: int = setting(16, "coarsest quick-look binning the planner may choose", choices=BINNINGS)
    quicklook_bits_per_pixel: float = setting(4.0, "compressed bits a quick-look pixel takes, until measured",
                                              above=0, high=16)

    def check(self) -> None:
        total = sum(self.budgets().values())
        if total > 1 + 1e-9:
            raise ConfigurationError(f"budget_* add up to {total:g}: shares of one line rate cannot exceed 1")
        if total == 0:
            raise ConfigurationError("every budget_* is 0: detections, chips, housekeeping, quick-looks and bulk "
                                     "would go only when nothing else waits")

    def budgets(self) -> dict[ProductClass, float]:
        names = {ProductClass.DETECTIONS: "detections", ProductClass.CHIP: "chips",
                 ProductClass.HOUSEKEEPING: "housekeeping", ProductClass.QUICKLOOK: "quicklook",
                 ProductClass.BULK: "bulk"}
        return {cls: getattr(self, "budget_" + name) for cls, name in names.items()}


class DownlinkScheduler:
    """Stored products out, one per call, by class priority and budget; marks each offered in the store."""

    def __init__(self, store: ProductStore, class_to_vcid: Mapping[ProductClass, int],
                 budgets: Mapping[ProductClass, float]):
        missing = [c.name for c in CLASSES if c not in class_to_vcid]
        if missing:
            raise ConfigurationError(f"no virtual channel for {', '.join(missing)}")
        bad = {c.name: v for c, v in class_to_vcid.items() if not 0 <= v < IDLE_VCID}
        if bad:
            raise ConfigurationError(f"virtual channels must be 0..{IDLE_VCID - 1} ({IDLE_VCID} is idle): {bad}")
        strict = [c.name for c in STRICT if budgets.get(c)]
        if strict:
            raise ConfigurationError(f"{', '.join(strict)} go first whenever they wait; they take no budget")
        if any(not 0 <= budgets.get(c, 0) <= 1 for c in SHARED) or sum(budgets.get(c, 0) for c in SHARED) > 1 + 1e-9:
            raise ConfigurationError(f"budgets must be shares 0..1 adding up to at most 1, got {dict(budgets)}")
        self.store = store
        self.class_to_vcid = {ProductClass(c): v for c, v in class_to_vcid.items()}
        self._quantum = {c: budgets.get(c, 0) * QUANTUM_OCTETS for c in SHARED}
        self._deficit = {c: 0.0 for c in SHARED}
        self.offered_packets = [0] * len(CLASSES)
        self.offered_octets = [0] * len(CLASSES)
        self.rounds = 0

    def next_packet(self, urgent_only: bool = False) -> tuple[int, bytes] | None:
        """(virtual channel, packet) for the next frame, or None when nothing waits; `urgent_only`: alerts,
        events and verification reports only (the writer asks for these before every frame)."""
        while True:
            chosen = self._choose(urgent_only)
            if chosen is None:
                return None
            if self.store.mark_offered(chosen):
                self.offered_packets[chosen.cls] += 1
                self.offered_octets[chosen.cls] += len(chosen.packet)
                return self.class_to_vcid[chosen.cls], chosen.packet
            # Dropped by rule since it was read: the next one.

    def _choose(self, urgent_only: bool) -> StoredPacket | None:
        for cls in STRICT:
            product = self.store.next_unsent(cls)
            if product is not None:
                return product
        if urgent_only:
            return None
        heads = {c: self.store.next_unsent(c) for c in SHARED}
        waiting = [c for c in SHARED if heads[c] is not None]
        for c in SHARED:
            if heads[c] is None:
                self._deficit[c] = 0.0     # nothing waits: no credit saved up for later
        budgeted = [c for c in waiting if self._quantum[c] > 0]
        if not budgeted:
            return heads[waiting[0]] if waiting else None
        while True:
            for c in budgeted:
                size = len(heads[c].packet)
                if self._deficit[c] >= size:
                    self._deficit[c] -= size
                    return heads[c]
            # Nobody can send yet: skip to the first round in which one can.
            rounds = min(math.ceil((len(heads[c].packet) - self._deficit[c]) / self._quantum[c]) for c in budgeted)
            for c in budgeted:
                self._deficit[c] += rounds * self._quantum[c]
            self.rounds += rounds


def packet_octets_per_second(link: LinkConfig, baud: float | None = None) -> float:
    """Packet octets the link carries per second when full: the line rate (8N1) less ASM, coding and frame
    headers. `baud` defaults to the configured one; pass a measured rate instead where there is one."""
    coder = build_channel_coder(link)
    return (link.baud if baud is None else baud) / 10 * frame_layout(link).data_field_length / coder.cadu_length


class QuicklookPlan(NamedTuple):
    binning: int
    period_s: float
    octets: int         # what one quick-look costs on the link, packet headers included


class QuicklookPlanner:
    """The finest binning whose quick-look fits its budget every `period_s`; else the coarsest, less often."""

    def __init__(self, frame_shape: tuple[int, int], config: SchedulerConfig, segment_octets: int,
                 period_s: float, min_binning: int = 1, segment_overhead_octets: int = SEGMENT_OVERHEAD_OCTETS):
        """`period_s`: the shortest period (imaging.quicklook_period_s); `min_binning` the finest binning."""
        self.frame_shape = frame_shape
        self.share = config.budget_quicklook
        self.period_s = period_s
        self.binnings = tuple(b for b in BINNINGS if min_binning <= b <= config.quicklook_max_binning) or (
            config.quicklook_max_binning,)
        self.bits_per_pixel = config.quicklook_bits_per_pixel
        self.segment_octets = segment_octets
        self.segment_overhead_octets = segment_overhead_octets

    def octets(self, binning: int, bits_per_pixel: float) -> int:
        height, width = self.frame_shape
        compressed = math.ceil((height // binning) * (width // binning) * bits_per_pixel / 8)
        return compressed + math.ceil(compressed / self.segment_octets) * self.segment_overhead_octets

    def plan(self, line_octets_per_s: float, bits_per_pixel: float | None = None) -> QuicklookPlan | None:
        """For the measured line rate (packet octets/s) and, once known, the bits per pixel the last
        quick-look compressed to; None when quick-looks have no budget."""
        budget = self.share * line_octets_per_s
        if budget <= 0:
            return None
        bpp = self.bits_per_pixel if bits_per_pixel is None else bits_per_pixel
        for binning in self.binnings:
            octets = self.octets(binning, bpp)
            if octets <= budget * self.period_s:
                return QuicklookPlan(binning, self.period_s, octets)
        octets = self.octets(self.binnings[-1], bpp)
        return QuicklookPlan(self.binnings[-1], octets / budget, octets)
