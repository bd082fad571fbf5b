"""The downlink scheduler: alerts first, every budgeted class its share, quick-looks sized to the link.

The store under the scheduler is the real one (SQLite in tmp_path, synchronous
NORMAL for speed: durability is tests/test_store.py's subject). Shares are
measured in octets offered while every class has more waiting than the link
takes (a saturated link), against the configured budgets.
"""
import random

import pytest

from flight.scheduler import (SEGMENT_OVERHEAD_OCTETS, SHARED, DownlinkScheduler, QuicklookPlanner,
                              SchedulerConfig, packet_octets_per_second)
from flight.store import CLASSES, ProductClass, ProductStore, StoreConfig
from kestrel import products
from kestrel.link.config import LinkConfig
from kestrel.link.spacepacket import PusTm, SpacePacket
from kestrel.settings import ConfigurationError

C = ProductClass
PERIOD = 10.0   # the shortest quick-look period (imaging.quicklook_period_s)
# Quick-looks with a quarter of the line, as the planner's expectations below are worked out for.
QUARTER = SchedulerConfig(budget_detections=0.30, budget_chips=0.25, budget_quicklook=0.25)
VCID = {C.ALERT: 0, C.ALERT_UPDATE: 0, C.EVENT: 0, C.VERIFICATION: 0, C.DETECTIONS: 0, C.HOUSEKEEPING: 0, C.CHIP: 1,
        C.QUICKLOOK: 1, C.BULK: 2}
SIZES = {C.ALERT: 60, C.ALERT_UPDATE: 150, C.EVENT: 80, C.VERIFICATION: 20, C.DETECTIONS: 300, C.CHIP: 1100, C.HOUSEKEEPING: 150,
         C.QUICKLOOK: 1080, C.BULK: 4000}


@pytest.fixture
def store(tmp_path):
    big = 1 << 30
    config = StoreConfig(path=str(tmp_path / "store.sqlite"), synchronous="NORMAL", capacity_octets=big,
                         **{f"quota_{c.name.lower()}": big for c in CLASSES})
    s = ProductStore(config, lambda: 0.0, lambda *e: None)
    yield s
    s.audit()
    s.close()


def fill(store, cls, count, size=None):
    apid = 100 + int(cls)
    with store.batch():
        for _ in range(count):
            packet = SpacePacket(apid, store.next_sequence_count(apid), bytes((size or SIZES[cls]) - 6)).pack()
            store.put(cls, packet, 0.0)


def scheduler(store, config=SchedulerConfig()):
    return DownlinkScheduler(store, VCID, config.budgets())


def run_saturated(store, sched, classes, octets, sizes=SIZES):
    """Offer `octets` while each of `classes` always has more waiting; octets offered per class."""
    for cls in classes:
        fill(store, cls, 40, sizes[cls])
    sent = 0
    while sent < octets:
        for cls in classes:
            if store.pending_octets(cls) < 20000:
                fill(store, cls, 40, sizes[cls])
        vcid, packet = sched.next_packet()
        sent += len(packet)
    return list(sched.offered_octets)


def test_an_alert_put_behind_a_thousand_chips_is_the_very_next_packet(store):
    sched = scheduler(store)
    fill(store, C.CHIP, 1000)
    for _ in range(3):
        assert sched.next_packet()[0] == VCID[C.CHIP]
    fill(store, C.ALERT, 1)
    vcid, packet = sched.next_packet()
    assert (vcid, len(packet)) == (VCID[C.ALERT], SIZES[C.ALERT])
    assert store.pending_octets(C.ALERT) == 0 and store.held_octets(C.ALERT) == SIZES[C.ALERT]
    assert sched.next_packet()[0] == VCID[C.CHIP]
    # Events and verification reports go next, before anything budgeted, in class order.
    fill(store, C.VERIFICATION, 1)
    fill(store, C.EVENT, 1)
    fill(store, C.ALERT, 1)
    assert [len(sched.next_packet()[1]) for _ in range(3)] == [60, 80, 20]


def test_an_opening_alert_overtakes_the_updates_and_closes_already_waiting(store):
    """Tracks that end together put a burst of closes; a new threat raised behind them goes first."""
    sched = scheduler(store)
    fill(store, C.EVENT, 2)
    fill(store, C.ALERT_UPDATE, 6)
    assert len(sched.next_packet()[1]) == SIZES[C.ALERT_UPDATE]
    fill(store, C.ALERT, 1)
    order = [len(sched.next_packet()[1]) for _ in range(8)]
    assert order == [SIZES[C.ALERT]] + [SIZES[C.ALERT_UPDATE]] * 5 + [SIZES[C.EVENT]] * 2


def test_a_saturated_link_gives_every_budgeted_class_its_share(store):
    config = SchedulerConfig()
    sched = scheduler(store, config)
    offered = run_saturated(store, sched, SHARED, 4_000_000)
    total = sum(offered)
    budgets = config.budgets()
    for cls in SHARED:
        share = offered[cls] / total
        assert abs(share - budgets[cls]) <= 0.2 * budgets[cls], (cls.name, share, budgets[cls])
    assert sum(sched.offered_octets) == sum(store.held_octets(c) - store.pending_octets(c) for c in CLASSES)


def test_a_small_budget_is_never_starved(store):
    config = SchedulerConfig(budget_detections=0.5, budget_chips=0.3, budget_housekeeping=0.01,
                             budget_quicklook=0.19, budget_bulk=0.0)
    sched = scheduler(store, config)
    gaps, since = [], 0
    for _ in range(3000):
        for cls in (C.DETECTIONS, C.CHIP, C.HOUSEKEEPING, C.QUICKLOOK):
            if store.pending_octets(cls) < 5000:
                fill(store, cls, 40)
        _, packet = sched.next_packet()
        since += len(packet)
        if len(packet) == SIZES[C.HOUSEKEEPING]:
            gaps.append(since)
            since = 0
    # One housekeeping report per ~ its size / its share of octets, never much later.
    expected = SIZES[C.HOUSEKEEPING] / 0.01
    assert len(gaps) >= 20 and max(gaps) <= 1.2 * expected + max(SIZES.values()) * 2


def test_a_class_with_nothing_waiting_leaves_its_share_to_the_others(store):
    config = SchedulerConfig()
    sched = scheduler(store, config)
    offered = run_saturated(store, sched, (C.CHIP, C.BULK), 2_000_000)
    ratio = offered[C.CHIP] / offered[C.BULK]
    assert abs(ratio - config.budget_chips / config.budget_bulk) <= 0.2 * ratio
    assert offered[C.CHIP] + offered[C.BULK] == sum(offered)            # the line was never left idle
    # Credit is not saved up while a class waits for nothing: a burst of detections after
    # a long quiet spell takes its share, not the whole line.
    fill(store, C.DETECTIONS, 200)
    before = list(sched.offered_octets)
    run_saturated(store, sched, (C.CHIP, C.BULK, C.DETECTIONS), 400_000)
    burst = [a - b for a, b in zip(sched.offered_octets, before)]
    assert burst[C.DETECTIONS] / sum(burst) <= 1.2 * config.budget_detections / 0.65


def test_a_class_without_budget_goes_only_when_nothing_budgeted_waits(store):
    config = SchedulerConfig(budget_bulk=0.0)
    sched = scheduler(store, config)
    fill(store, C.BULK, 5)
    fill(store, C.HOUSEKEEPING, 5)
    order = [sched.next_packet()[0] for _ in range(10)]
    assert order == [VCID[C.HOUSEKEEPING]] * 5 + [VCID[C.BULK]] * 5
    assert sched.next_packet() is None


def test_scheduling_by_random_arrivals_keeps_the_store_balanced(store):
    """Arrivals of every class at random, a link taking a random number of packets in between:
    every product comes out once, in order within its class, and the store accounts for every octet."""
    rng = random.Random(7)
    sched = scheduler(store)
    put = {c: 0 for c in CLASSES}
    seen = {c: [] for c in CLASSES}
    for _ in range(400):
        cls = ProductClass(rng.randrange(8))
        n = rng.randrange(1, 6)
        fill(store, cls, n, rng.choice([20, 300, 1100]))
        put[cls] += n
        for _ in range(rng.randrange(8)):
            got = sched.next_packet()
            if got is None:
                break
            vcid, packet = got
            cls_out = ProductClass(((packet[0] << 8 | packet[1]) & 0x7FF) - 100)
            assert vcid == VCID[cls_out]
            seen[cls_out].append((packet[2] << 8 | packet[3]) & 0x3FFF)
        store.audit()
    while sched.next_packet() is not None:
        pass
    assert sched.offered_packets == [put[c] for c in CLASSES]
    assert all(seen[c] == sorted(seen[c]) for c in CLASSES)


def test_bad_configurations_are_refused(store):
    with pytest.raises(ConfigurationError, match="no virtual channel for BULK"):
        DownlinkScheduler(store, {c: 0 for c in CLASSES if c != C.BULK}, SchedulerConfig().budgets())
    with pytest.raises(ConfigurationError, match="ALERT go first"):
        DownlinkScheduler(store, VCID, {C.ALERT: 0.1, C.BULK: 0.5})
    with pytest.raises(ConfigurationError, match="add up to 1.2"):
        SchedulerConfig(budget_bulk=0.3)
    with pytest.raises(ConfigurationError, match="every budget"):
        SchedulerConfig(budget_detections=0, budget_chips=0, budget_housekeeping=0, budget_quicklook=0,
                        budget_bulk=0)


# --- quick-looks -------------------------------------------------------------------
@pytest.mark.parametrize("baud, binning", [(9600, 16), (115200, 8), (1_000_000, 2)])
def test_the_quicklook_plan_fits_its_budget_at_each_line_rate(baud, binning):
    config = QUARTER
    link = LinkConfig(baud=baud)
    rate = packet_octets_per_second(link)
    assert rate == pytest.approx(baud / 10 * 215 / 259)          # RS(255,223), ASM, 6+2 octets of frame
    planner = QuicklookPlanner((1024, 1024), config, segment_octets=1024, period_s=PERIOD)
    plan = planner.plan(rate)
    assert plan.binning == binning
    # It fits: a quick-look's octets in a period are at most the quick-look share of the line.
    assert plan.octets / plan.period_s <= config.budget_quicklook * rate * (1 + 1e-9)
    assert plan.period_s >= PERIOD
    # And it is the finest that fits in the configured period (or the coarsest there is).
    if binning > 1:
        finer = planner.octets(binning // 2, config.quicklook_bits_per_pixel)
        assert finer > config.budget_quicklook * rate * PERIOD
    if plan.period_s > PERIOD:
        assert binning == config.quicklook_max_binning


def test_the_quicklook_plan_follows_the_measured_compression_and_the_budget():
    planner = QuicklookPlanner((1024, 1024), QUARTER, segment_octets=1024, period_s=PERIOD)
    rate = packet_octets_per_second(LinkConfig(baud=115200))
    assert planner.plan(rate, bits_per_pixel=1.0).binning == 4          # compresses better: finer
    assert planner.plan(rate, bits_per_pixel=14.0).binning == 16        # compresses worse: coarser
    slow = planner.plan(rate / 100)
    assert slow.binning == 16 and slow.period_s == pytest.approx(slow.octets / (0.25 * rate / 100))
    assert QuicklookPlanner((1024, 1024), SchedulerConfig(budget_quicklook=0), 1024, PERIOD).plan(rate) is None


def test_a_real_image_segment_packet_fits_the_planned_overhead():
    time_field = bytes(7)
    data = products.image_segment_format(len(time_field)).build(dict(
        product_id=1, frame_index=2, frame_time=time_field, x0=0, y0=0, width=64, height=64, max_error=4,
        segment_index=0, segment_count=1, data=bytes(1024)))
    packet = PusTm(apid=products.APID_IMAGES, service=products.SERVICE_IMAGES, subtype=products.SUBTYPE_QUICKLOOK,
                   data=data, time=time_field, sequence_count=0, message_type_counter=0).pack()
    assert len(packet) - 1024 <= SEGMENT_OVERHEAD_OCTETS


def test_a_burst_of_alerts_fills_the_next_frames_before_any_lower_channel(store):
    """Three alerts need three frames of the urgent channel: the downlink sends all three before the next
    frame of the detection reports already waiting, on the configured channels (alerts 0, detections 1)."""
    from flight.downlink import Downlink
    from flight.executive import class_channels
    from kestrel.link.tmframe import TmFrame
    from kestrel.link.config import frame_layout
    from ground.reassembly import VirtualChannelReassembler
    from kestrel.link.spacepacket import IDLE_APID, packet_key

    class Port:
        def write(self, chunk):
            return len(chunk)

    link = LinkConfig(reed_solomon=False, randomize=False)
    layout = frame_layout(link)
    downlink = Downlink(link, Port())
    sched = DownlinkScheduler(store, class_channels(link), SchedulerConfig().budgets())
    downlink.set_source(sched.next_packet, lambda: sched.next_packet(urgent_only=True))
    fill(store, C.DETECTIONS, 5, 3000)

    def next_frame():
        return TmFrame.unpack(downlink._next_cadu()[4:], layout)

    assert next_frame().virtual_channel_id == link.vc_detections
    fill(store, C.ALERT, 3, 170)
    alerts = VirtualChannelReassembler(link.vc_events)
    frames = [next_frame() for _ in range(3)]
    assert [f.virtual_channel_id for f in frames] == [link.vc_events] * 3
    packets = [p for f in frames for p in alerts.feed(f)]
    assert [len(p) for p in packets if packet_key(p)[0] != IDLE_APID] == [170] * 3
    assert next_frame().virtual_channel_id == link.vc_detections
