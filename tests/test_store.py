"""The flight store: committed before offered, deleted only when acknowledged, dropped only by its rule.

Every test checks the store's own accounting after each operation
(`audit()`: octets put = acknowledged + dropped + held, per class, against the
rows), and reads the SQLite file itself where the question is what survived.
The faults are real: SIGKILL of a writing process, a full tmpfs, a tmpfs
remounted read-only.
"""
import os
import random
import signal
import sqlite3
import statistics
import subprocess
import threading
import time
import traceback
from pathlib import Path

import pytest

from flight.store import ALERT_CLASSES, CLASSES, EVENT_PRODUCTS_DROPPED, ProductClass, ProductStore, StoreConfig, StoreError
from kestrel.link.spacepacket import PusTm, SpacePacket

C = ProductClass


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def config(path, capacity=1 << 22, quota=None, **more) -> StoreConfig:
    """Quotas default to the capacity (no class limit but the capacity) unless given."""
    quota = capacity if quota is None else quota
    quotas = {f"quota_{c.name.lower()}": quota for c in CLASSES}
    quotas.update(more.pop("quotas", {}))
    return StoreConfig(path=str(path), capacity_octets=capacity, **quotas, **more)


def open_store(path, clock=None, **kw):
    events = []
    store = ProductStore(config(path, **kw), clock or Clock(), lambda *e: events.append(e))
    return store, events


def packet(store, apid: int, size: int, tag: bytes = b"") -> bytes:
    """A Space Packet of `size` octets carrying the store's next count for `apid`."""
    body = tag + bytes(size - 6 - len(tag))
    return SpacePacket(apid, store.next_sequence_count(apid), body).pack()


def put(store, cls, size=200, apid=None, at=0.0, tag=b""):
    apid = 100 + int(cls) if apid is None else apid
    result = store.put(cls, packet(store, apid, size, tag), at)
    store.audit()
    return result


def balanced(store):
    """The invariant, from the counters: every octet put is acknowledged, dropped or held."""
    store.audit()
    for t in store.totals:
        assert t.put_octets == t.acknowledged_octets + t.dropped_octets + t.held_octets
        assert t.put == t.acknowledged + t.dropped + t.held


def offer_all(store, cls):
    offered = []
    while (p := store.next_unsent(cls)) is not None:
        store.mark_offered(p)
        offered.append(p)
    store.audit()
    return offered


# --- products in, out, acknowledged -------------------------------------------------
def test_products_are_offered_oldest_first_per_class_and_stay_until_acknowledged(tmp_path):
    store, _ = open_store(tmp_path / "s.sqlite")
    ids = [put(store, C.CHIP, tag=bytes([i])) for i in range(5)]
    alert = put(store, C.ALERT, 100)
    assert store.pending_octets(C.CHIP) == 1000
    assert store.next_unsent(C.ALERT).id == alert
    offered = offer_all(store, C.CHIP)
    assert [p.id for p in offered] == ids
    assert [p.sequence for p in offered] == [0, 1, 2, 3, 4]
    assert offered[2].packet[6] == 2                       # the bytes put are the bytes offered
    assert store.pending_octets(C.CHIP) == 0 and store.held_octets(C.CHIP) == 1000
    store.close()
    # Offer marks were written at close: after a restart they are not offered again.
    store, _ = open_store(tmp_path / "s.sqlite")
    assert store.next_unsent(C.CHIP) is None
    assert store.acknowledge(100 + C.CHIP, 1, 3) == 3
    balanced(store)
    assert store.held_octets(C.CHIP) == 400 and store.totals[C.CHIP].acknowledged_octets == 600
    store.close()


def test_acknowledge_deletes_only_offered_products_in_the_range(tmp_path):
    # Chips and quick-looks share APID 120: the ground acknowledges the chips it
    # received, 0..5, while the quick-looks among them wait unsent.
    store, _ = open_store(tmp_path / "s.sqlite")
    for i in range(6):
        put(store, C.CHIP if i % 2 == 0 else C.QUICKLOOK, apid=120)
    offer_all(store, C.CHIP)
    assert store.acknowledge(120, 0, 5) == 3
    balanced(store)
    assert store.held_octets(C.CHIP) == 0 and store.held_octets(C.QUICKLOOK) == 600
    assert store.acknowledge(121, 0, 5) == 0          # another APID
    assert [p.sequence for p in offer_all(store, C.QUICKLOOK)] == [1, 3, 5]
    assert store.acknowledge(120, 3, 3) == 1
    assert store.acknowledge(120, 3, 3) == 0          # acknowledged twice: nothing more goes
    balanced(store)
    assert store.resolve(120, 5) == 5 and store.resolve(120, 3) is None
    store.close()


def test_sequence_counts_continue_across_restarts_and_past_the_wrap(tmp_path):
    path = tmp_path / "s.sqlite"
    store, _ = open_store(path, capacity=1 << 17, quotas={"quota_bulk": 1 << 16})
    for _ in range(3):
        put(store, C.HOUSEKEEPING, apid=100)
    assert put(store, C.BULK, size=65542, apid=7) is None         # dropped: over the quota
    assert store.next_sequence_count(7) == 1                        # its count is spent all the same
    store.close()
    store, _ = open_store(path, capacity=1 << 17, quotas={"quota_bulk": 1 << 16})
    assert store.next_sequence_count(100) == 3 and store.next_sequence_count(7) == 1
    with pytest.raises(ValueError, match="sequence count 0, the store.s next is 3"):
        store.put(C.HOUSEKEEPING, SpacePacket(100, 0, bytes(10)).pack(), 0.0)
    with pytest.raises(ValueError, match="whole Space Packet"):
        store.put(C.HOUSEKEEPING, packet(store, 100, 50)[:-1], 0.0)
    store.db.execute("UPDATE sequences SET next = 16383 WHERE apid = 100")   # fast-forward to the wrap
    store.close()
    store, _ = open_store(path, capacity=1 << 17, quotas={"quota_bulk": 1 << 16})
    assert store.next_sequence_count(100) == 16383
    put(store, C.HOUSEKEEPING, apid=100)
    assert store.next_sequence_count(100) == 0                       # the wire's 14 bits wrap ...
    put(store, C.HOUSEKEEPING, apid=100)
    sequences = [p.sequence for p in offer_all(store, C.HOUSEKEEPING)]
    assert sequences == [0, 1, 2, 16383, 16384]                      # ... the store's count does not
    assert store.resolve(100, 0) == 16384
    store.close()


# --- the drop rule ----------------------------------------------------------------
def test_a_class_over_its_quota_drops_its_own_oldest_offered_first(tmp_path):
    store, events = open_store(tmp_path / "s.sqlite", quotas={"quota_chip": 1 << 16})
    ids = [put(store, C.CHIP, 1 << 13, tag=bytes([i])) for i in range(8)]      # 64 KiB: full
    first = store.next_unsent(C.CHIP)
    store.mark_offered(first)
    store.mark_offered(store.next_unsent(C.CHIP))
    new = put(store, C.CHIP, 1 << 13)
    # One product must go: the oldest of those offered (the ground most likely has it).
    assert store.totals[C.CHIP].dropped == 1 and store.held_octets(C.CHIP) == 1 << 16
    assert [p.id for p in offer_all(store, C.CHIP)] == ids[2:] + [new]
    rows = [r[0] for r in store.db.execute("SELECT id FROM products ORDER BY id")]
    assert rows == ids[1:] + [new]
    assert events and events[0][1] == EVENT_PRODUCTS_DROPPED and "1 chip products" in events[0][2]
    assert put(store, C.CHIP, (1 << 16) + 1) is None                 # bigger than the quota: itself dropped
    balanced(store)
    store.close()


def test_a_full_store_drops_bulk_first_and_never_alerts(tmp_path):
    cap = 1 << 17
    store, events = open_store(tmp_path / "s.sqlite", capacity=cap)
    size = 1 << 12                                                    # 32 products fill it
    for cls in (C.BULK, C.QUICKLOOK, C.HOUSEKEEPING, C.CHIP):
        for _ in range(8):
            put(store, cls, size)
    assert sum(t.held_octets for t in store.totals) == cap
    for n in range(1, 9):
        assert put(store, C.DETECTIONS, size) is not None
        assert store.totals[C.BULK].dropped == n and store.totals[C.QUICKLOOK].dropped == 0
    put(store, C.DETECTIONS, size)
    assert store.held_octets(C.BULK) == 0 and store.totals[C.QUICKLOOK].dropped == 1
    # Bulk cannot push out anything above it: the incoming bulk product is the one dropped.
    assert put(store, C.BULK, size) is None
    assert store.totals[C.BULK].dropped == 9 and store.totals[C.QUICKLOOK].dropped == 1
    # Alerts push out everything else, lowest class first, and are never dropped themselves.
    for _ in range(40):
        assert put(store, C.ALERT, size) is not None
    assert store.totals[C.ALERT].dropped == 0 and store.held_octets(C.ALERT) == 40 * size > cap
    assert all(store.held_octets(c) == 0 for c in CLASSES if c != C.ALERT)
    assert put(store, C.EVENT, size) is None                          # nothing below alerts left to drop
    assert put(store, C.ALERT_UPDATE, size) is not None and store.totals[C.ALERT_UPDATE].dropped == 0
    balanced(store)
    dropped_classes = {e[2].split()[2] for e in events}
    assert dropped_classes == {"bulk", "quicklook", "housekeeping", "chip", "detections", "event"}
    store.close()


def test_alerts_over_their_quota_drop_only_what_was_offered_and_leave_the_other_classes_room(tmp_path):
    """A long stretch without acknowledgements: alerts must not take the whole store (the soak held
    942 KiB of alerts in 256 KiB, and nothing else, before they had quotas)."""
    cap, quota, size = 1 << 18, 1 << 16, 1 << 12                    # 16 products fill an alert quota
    store, events = open_store(tmp_path / "s.sqlite", capacity=cap,
                               quotas={"quota_alert": quota, "quota_alert_update": quota})
    openings = [put(store, C.ALERT, size, tag=bytes([i])) for i in range(24)]
    # None offered yet: none dropped, quota or not.
    assert store.totals[C.ALERT].dropped == 0 and store.held_octets(C.ALERT) == 24 * size
    offered = offer_all(store, C.ALERT)
    assert [p.id for p in offered] == openings
    assert put(store, C.ALERT, size) is not None
    # Back under the quota by dropping the oldest offered openings, and only those.
    assert store.held_octets(C.ALERT) == quota and store.totals[C.ALERT].dropped == 9
    held = [r[0] for r in store.db.execute("SELECT id FROM products WHERE class = ? ORDER BY id", (int(C.ALERT),))]
    assert held == openings[9:] + [held[-1]] and held[-1] > openings[-1]
    # Updates are bounded too, oldest first, offered or not; never refused.
    for _ in range(20):
        assert put(store, C.ALERT_UPDATE, size) is not None
    assert store.held_octets(C.ALERT_UPDATE) == quota and store.totals[C.ALERT_UPDATE].dropped == 4
    # So housekeeping keeps what the alerts leave of the capacity.
    for _ in range(40):
        put(store, C.HOUSEKEEPING, size)
    assert store.held_octets(C.HOUSEKEEPING) == cap - 2 * quota
    balanced(store)
    assert {e[2].split()[2] for e in events} >= {"alert", "alert_update"}
    assert all(e[1] == EVENT_PRODUCTS_DROPPED for e in events)
    store.close()


def test_drop_events_are_throttled_per_class_and_carry_the_count_since_the_last(tmp_path):
    clock = Clock()
    store, events = open_store(tmp_path / "s.sqlite", clock=clock, capacity=1 << 17,
                               quotas={"quota_bulk": 1 << 16, "quota_quicklook": 1 << 16})
    big = 65542                                                       # the largest packet: over the quota
    for _ in range(5):
        assert put(store, C.BULK, big) is None
    assert put(store, C.QUICKLOOK, big) is None
    assert [(e[0], e[1]) for e in events] == [(2, EVENT_PRODUCTS_DROPPED)] * 2   # first of each class at once
    assert "1 bulk products" in events[0][2] and "1 quicklook" in events[1][2]
    clock.now = 5.0
    put(store, C.BULK, big)
    store.report_drops()
    assert len(events) == 2                                           # within the period: held back
    clock.now = 10.0
    store.report_drops()
    assert len(events) == 3 and f"5 bulk products ({5 * big} octets)" in events[2][2]
    assert "6 in all" in events[2][2]
    clock.now = 30.0
    store.report_drops()
    assert len(events) == 3                                           # nothing more dropped: silent
    assert store.totals[C.BULK].dropped == 6
    store.close()


# --- replay ---------------------------------------------------------------------
def test_replay_by_time_and_by_sequence_makes_offered_products_unsent_again(tmp_path):
    store, _ = open_store(tmp_path / "s.sqlite")
    for i in range(10):
        put(store, C.DETECTIONS, apid=110, at=1000.0 + i)
        put(store, C.HOUSEKEEPING, apid=100, at=1000.0 + i)
    offer_all(store, C.DETECTIONS)
    offer_all(store, C.HOUSEKEEPING)
    assert store.replay(1003.0, 1005.0) == 6
    assert [p.sequence for p in offer_all(store, C.DETECTIONS)] == [3, 4, 5]
    assert [p.sequence for p in offer_all(store, C.HOUSEKEEPING)] == [3, 4, 5]
    assert store.replay(1003.0, 1005.0, apid=100) == 3
    assert store.replay(7, 100, by="sequence", apid=110) == 3
    assert store.pending_octets(C.DETECTIONS) == 600 and store.pending_octets(C.HOUSEKEEPING) == 600
    assert store.replay(7, 100, by="sequence", apid=110) == 0         # unsent already
    assert [p.sequence for p in offer_all(store, C.DETECTIONS)] == [7, 8, 9]
    assert store.totals[C.DETECTIONS].replayed == 6
    with pytest.raises(ValueError, match="names its APID"):
        store.replay(0, 5, by="sequence")
    with pytest.raises(ValueError, match="'time' or 'sequence'"):
        store.replay(0, 5, by="id")
    balanced(store)
    store.close()


# --- batches and threads ----------------------------------------------------------
def test_a_batch_is_offered_only_once_committed_and_rolls_back_whole(tmp_path):
    store, _ = open_store(tmp_path / "s.sqlite")
    with store.batch():
        first = put(store, C.DETECTIONS, 100)
        assert store.next_unsent(C.DETECTIONS) is None                 # not committed: not offered
    assert store.next_unsent(C.DETECTIONS).id == first
    with pytest.raises(RuntimeError):
        with store.batch():
            put(store, C.DETECTIONS, 100)
            raise RuntimeError("the caller failed mid-batch")
    balanced(store)
    assert store.totals[C.DETECTIONS].put == 1 and store.next_sequence_count(100 + C.DETECTIONS) == 1
    store.close()


@pytest.mark.parametrize("urgent", [C.ALERT, C.EVENT, C.VERIFICATION])
def test_an_urgent_product_commits_the_batch_at_once(tmp_path, urgent):
    """An alert put mid-cycle is offerable before the cycle's batch ends, with what the batch held before it;
    what follows it waits for the batch again, and a failure after it loses only that."""
    path = tmp_path / "s.sqlite"
    store, _ = open_store(path)
    reader = sqlite3.connect(path)
    with pytest.raises(RuntimeError):
        with store.batch():
            before = put(store, C.DETECTIONS, 300)
            assert store.next_unsent(C.DETECTIONS) is None
            alert = put(store, urgent, 60)
            assert store.next_unsent(urgent).id == alert                  # offerable now, mid-batch
            assert store.next_unsent(C.DETECTIONS).id == before
            assert reader.execute("SELECT COUNT(*) FROM products").fetchone()[0] == 2   # on disk, not in memory
            put(store, C.CHIP, 500)
            assert store.next_unsent(C.CHIP) is None
            raise RuntimeError("the cycle failed after the alert")
    assert store.urgent_commits == 1
    assert [r[0] for r in reader.execute("SELECT class FROM products ORDER BY id")] == [C.DETECTIONS, urgent]
    balanced(store)
    reader.close()
    store.close()


def test_offers_from_another_thread_while_products_are_put(tmp_path):
    store, _ = open_store(tmp_path / "s.sqlite", synchronous="NORMAL")
    offered, done = [], threading.Event()

    def writer():
        while not done.is_set() or store.pending_octets(C.CHIP):
            p = store.next_unsent(C.CHIP)
            if p is None:
                time.sleep(0.0005)
                continue
            store.mark_offered(p)
            offered.append(p.sequence)

    thread = threading.Thread(target=writer)
    thread.start()
    for i in range(600):
        if i % 3:
            store.put(C.CHIP, packet(store, 120, 300), float(i))
        else:
            with store.batch():
                for _ in range(3):
                    store.put(C.CHIP, packet(store, 120, 300), float(i))
    done.set()
    thread.join(10)
    assert offered == list(range(len(offered))) and len(offered) == 1000
    balanced(store)
    store.close()


def test_random_operations_keep_every_octet_accounted(tmp_path):
    """Like tests/test_ground_fuzz.py for the sync: the invariant after every step of a random run."""
    rng = random.Random(12)
    clock = Clock()
    quotas = {"quota_chip": 1 << 16, "quota_bulk": 1 << 17, "quota_alert": 1 << 16, "quota_alert_update": 1 << 16}
    store, events = open_store(tmp_path / "s.sqlite", clock=clock, capacity=1 << 18, synchronous="NORMAL",
                               quotas=quotas)
    offered = []
    for step in range(1500):
        clock.now += 0.1
        roll = rng.random()
        cls = rng.choice([C.ALERT, C.EVENT, C.DETECTIONS, C.CHIP, C.CHIP, C.HOUSEKEEPING, C.QUICKLOOK, C.BULK,
                          C.BULK, C.ALERT_UPDATE])
        if roll < 0.55:
            put(store, cls, rng.randrange(20, 9000), apid=100 + cls % 4, at=clock.now)
        elif roll < 0.8:
            if (p := store.next_unsent(cls)) is not None:
                store.mark_offered(p)
                offered.append(p)
        elif roll < 0.9 and offered:
            p = rng.choice(offered)
            store.acknowledge(p.apid, p.sequence - rng.randrange(3), p.sequence + rng.randrange(3))
        elif roll < 0.95:
            store.replay(clock.now - 5, clock.now)
        elif roll < 0.97:
            store.close()
            store, _ = open_store(tmp_path / "s.sqlite", clock=clock, capacity=1 << 18, synchronous="NORMAL",
                                  quotas=quotas)
        balanced(store)
        assert sum(store.held_octets(c) for c in CLASSES if c not in ALERT_CLASSES) <= 1 << 18
        # Updates stay within their quota. Openings are held to theirs as one is put, but for those the
        # link has not taken (never dropped); the link may take more before the next put.
        assert store.held_octets(C.ALERT_UPDATE) <= 1 << 16
        if roll < 0.55 and cls == C.ALERT:
            assert store.held_octets(C.ALERT) - store.pending_octets(C.ALERT) <= 1 << 16
    assert store.total("dropped") and store.total("acknowledged") and store.total("replayed")
    assert store.totals[C.ALERT].dropped and store.totals[C.ALERT_UPDATE].dropped
    store.close()


# --- files that are not ours ----------------------------------------------------
def test_a_schema_1_store_is_upgraded_in_place_with_every_product_in_its_class(tmp_path):
    """Schema 1 had no ALERT_UPDATE class (code 1 was EVENT, 7 BULK): a store written by it, with
    products unsent, offered and acknowledged, opens with each product and count in its own class."""
    path = tmp_path / "s.sqlite"
    store, _ = open_store(path)
    kept = {cls: [put(store, cls, 100 + 10 * int(cls)) for _ in range(3)] for cls in CLASSES
            if cls != C.ALERT_UPDATE}
    offered = offer_all(store, C.DETECTIONS)
    store.acknowledge(offered[0].apid, offered[0].sequence, offered[0].sequence)
    before = {cls: (t.put, t.acknowledged, t.held_octets) for cls, t in zip(CLASSES, store.totals)}
    store.close()
    db = sqlite3.connect(path)                       # back to what schema 1 wrote
    db.execute("DELETE FROM totals WHERE class = 1")
    for table in ("products", "totals"):
        db.execute(f"UPDATE {table} SET class = -(class - 1) WHERE class >= 2")
        db.execute(f"UPDATE {table} SET class = -class WHERE class < 0")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()

    store, _ = open_store(path)
    assert {cls: (t.put, t.acknowledged, t.held_octets) for cls, t in zip(CLASSES, store.totals)} == before
    for cls, ids in kept.items():
        if cls != C.DETECTIONS:
            assert [p.id for p in offer_all(store, cls)] == ids
    assert store.next_unsent(C.ALERT_UPDATE) is None
    assert put(store, C.ALERT_UPDATE, 150) is not None
    balanced(store)
    store.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 2


def test_a_foreign_or_corrupt_file_is_a_store_error(tmp_path):
    other = tmp_path / "other.sqlite"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE t (x)")
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="not a Kestrel flight store"):
        open_store(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not SQLite" * 300)
    with pytest.raises(StoreError, match="corrupt"):
        open_store(junk)
    with pytest.raises(Exception, match="exceed capacity_octets"):
        StoreConfig(capacity_octets=1 << 20)


# --- kill -9 ------------------------------------------------------------------------
APIDS = (100, 101, 110, 120)
KILLS = 120


def _child(path: str, seed: int, out: int) -> None:
    """Puts, offers, acknowledges and replays until killed; reports each only once it is committed."""
    rng = random.Random(seed)

    def say(*words):
        os.write(out, (" ".join(map(str, words)) + "\n").encode())

    store = ProductStore(config(path, capacity=1 << 30), time.monotonic, lambda *e: None)
    say("ready")
    offered = {apid: [] for apid in APIDS}
    serial = 0
    while True:
        roll = rng.random()
        if roll < 0.6:
            batch = rng.choice([1, 1, 1, 2, 5])
            done = []
            with store.batch():
                for _ in range(batch):
                    apid = rng.choice(APIDS)
                    cls = ProductClass(APIDS.index(apid) + rng.choice([0, 4]))
                    serial += 1
                    tag = f"{seed}:{serial}".encode()
                    row = store.put(cls, packet(store, apid, rng.choice([40, 200, 1100]), tag), time.time())
                    done.append((row, apid, store.resolve(apid, store.next_sequence_count(apid) - 1 & 0x3FFF)))
            for row, apid, sequence in done:
                say("put", row, apid, sequence)
        elif roll < 0.85:
            cls = ProductClass(rng.randrange(8))
            if (p := store.next_unsent(cls)) is not None:
                store.mark_offered(p)
                offered[p.apid].append(p.sequence)
                say("offer", p.id, p.apid, p.sequence)
        elif roll < 0.97:
            apid = rng.choice(APIDS)
            if offered[apid]:
                first = rng.choice(offered[apid])
                last = first + rng.randrange(4)
                say("ack-begin", apid, first, last)
                store.acknowledge(apid, first, last)
                say("ack-done", apid, first, last)
        else:
            say("replay-begin")
            store.replay(time.time() - 0.05, time.time())
            for apid in APIDS:
                offered[apid].clear()
            say("replay-done")


def _run_child(path, seed, rng) -> list[list[str]]:
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:           # the child: never returns into pytest
        try:
            os.close(read_end)
            _child(str(path), seed, write_end)
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(3)
    os.close(write_end)
    data = b""
    with os.fdopen(read_end, "rb") as pipe:
        while b"ready\n" not in data:
            chunk = os.read(pipe.fileno(), 65536)
            assert chunk, f"child exited before it was ready: {os.waitpid(pid, 0)}"
            data += chunk
        time.sleep(rng.uniform(0.0, 0.12))
        os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, "the child died of something else"
        data += pipe.read()
    lines = data.decode().split("\n")
    return [line.split() for line in lines[:-1]]          # a cut last line never counts


def test_kill_9_at_random_points_loses_nothing_duplicates_nothing_and_counts_on(tmp_path):
    path = tmp_path / "store.sqlite"
    rng = random.Random(2024)
    reported = {}                       # id -> (apid, sequence) reported committed
    last_sequence = {apid: -1 for apid in APIDS}
    may_be_gone = []                    # (apid, first, last) acknowledgements that may have committed
    puts = offers = 0
    for kill in range(KILLS):
        offered_now, must_be_gone = {}, set()     # id -> (apid, sequence) offered by this child
        for words in _run_child(path, kill, rng):
            if words[0] == "put" and words[1] != "None":
                row, apid, sequence = map(int, words[1:])
                assert row not in reported, f"id {row} reported twice"
                assert sequence > last_sequence[apid], \
                    f"APID {apid}: sequence {sequence} after {last_sequence[apid]} (kill {kill})"
                last_sequence[apid] = sequence
                reported[row] = (apid, sequence)
                puts += 1
            elif words[0] == "offer":
                offered_now[int(words[1])] = (int(words[2]), int(words[3]))
                offers += 1
            elif words[0] == "ack-begin":
                may_be_gone.append(tuple(map(int, words[1:])))
            elif words[0] == "ack-done":
                apid, first, last = map(int, words[1:])
                must_be_gone |= {r for r, (a, q) in offered_now.items() if a == apid and first <= q <= last}

        # What the file holds, read with sqlite3 itself after the store has recovered it.
        store, _ = open_store(path, capacity=1 << 30)
        balanced(store)
        store.close()
        db = sqlite3.connect(path)
        rows = {r[0]: r[1:] for r in db.execute("SELECT id, apid, sequence, packet FROM products")}
        counters = dict(db.execute("SELECT apid, next FROM sequences"))
        db.close()
        packets = [r[2] for r in rows.values()]
        assert len(set(packets)) == len(packets), "a product is held twice"
        assert len({r[:2] for r in rows.values()}) == len(rows), "an (APID, sequence) is held twice"
        for row, (apid, sequence) in reported.items():
            if row in rows:
                assert rows[row][:2] == (apid, sequence)
                continue
            assert any(a == apid and first <= sequence <= last for a, first, last in may_be_gone), \
                f"product {row} (APID {apid}, sequence {sequence}) was committed and is lost (kill {kill})"
        assert not must_be_gone & rows.keys(), "offered, acknowledged, and still held"
        for apid in APIDS:
            assert counters.get(apid, 0) > last_sequence[apid], f"APID {apid}'s counter went back"
            held = [s for a, s, _ in rows.values() if a == apid]
            assert not held or counters[apid] > max(held)
    assert puts > 5 * KILLS and offers > KILLS          # the kills fell on a busy store


# --- a full disk, a read-only disk ---------------------------------------------------
@pytest.fixture
def tmpfs(tmp_path):
    """mount_tmpfs(size) -> a fresh tmpfs of that size (skips where mounting is not allowed)."""
    mounts = []

    def mount_tmpfs(size: str) -> Path:
        mount = tmp_path / f"tmpfs{len(mounts)}"
        mount.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                              capture_output=True, text=True)
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        mounts.append(mount)
        return mount

    yield mount_tmpfs
    for mount in mounts:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_is_a_store_error_and_loses_nothing_committed(tmpfs):
    disk = tmpfs("200k")
    path = disk / "store.sqlite"
    filler = disk / "someone-elses.log"
    filler.write_bytes(bytes(64 << 10))
    store, _ = open_store(path, capacity=1 << 22)
    committed = []
    with pytest.raises(StoreError, match="the disk is full"):
        for i in range(1000):
            committed.append(store.put(C.CHIP, packet(store, 120, 1100, tag=b"%d" % i), float(i)))
    assert committed and None not in committed
    balanced(store)
    # Still readable, and the link still drains it; writing of any kind waits for space.
    assert [p.id for p in offer_all(store, C.CHIP)] == committed
    with pytest.raises(StoreError, match="full"):
        store.put(C.ALERT, packet(store, 1, 100), 0.0)
    with pytest.raises(StoreError, match="full"):
        store.acknowledge(120, 0, 0)
    balanced(store)
    store.close()
    store, _ = open_store(path, capacity=1 << 22)
    assert store.totals[C.CHIP].held == len(committed)
    assert store.next_sequence_count(120) == len(committed)
    balanced(store)
    # Space again: the store goes on where it was.
    filler.unlink()
    offer_all(store, C.CHIP)
    assert store.acknowledge(120, 0, 0) == 1
    assert put(store, C.ALERT, 100) is not None
    assert store.next_sequence_count(120) == len(committed)
    balanced(store)
    store.close()


def test_a_read_only_filesystem_is_a_store_error_and_the_link_still_drains_the_store(tmpfs):
    disk = tmpfs("4m")
    path = disk / "store.sqlite"
    store, _ = open_store(path)
    ids = [put(store, C.DETECTIONS) for _ in range(5)]
    store.mark_offered(store.next_unsent(C.DETECTIONS))
    store.close()
    # Linux refuses to remount a filesystem read-only under a file open for writing,
    # so the store meets it as it starts, as after a reboot onto a damaged card.
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    try:
        store, _ = open_store(path)
        assert store.read_only and "read-only" in store.read_only
        balanced(store)
        assert [p.id for p in offer_all(store, C.DETECTIONS)] == ids[1:]
        with pytest.raises(StoreError, match="read-only"):
            store.put(C.DETECTIONS, packet(store, 100 + C.DETECTIONS, 200), 0.0)
        with pytest.raises(StoreError, match="read-only"):
            store.acknowledge(100 + C.DETECTIONS, 0, 10)
        with pytest.raises(StoreError, match="read-only"):
            store.replay(0, 10)
        balanced(store)
        store.close()
        with pytest.raises(StoreError, match="read-only"):
            open_store(disk / "new.sqlite")
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(disk)], check=True)
    store, _ = open_store(path)
    assert store.read_only is None and store.next_sequence_count(100 + C.DETECTIONS) == 5
    assert put(store, C.DETECTIONS) is not None
    balanced(store)
    store.close()


# --- what a put costs -----------------------------------------------------------------
@pytest.mark.perf
@pytest.mark.parametrize("batch", [1, 10])
def test_commit_cost_normal_and_full(tmp_path, batch):
    """Median wall time of one put, committed alone or in a batch of 10 (run with -m perf -s)."""
    results = {}
    for synchronous in ("NORMAL", "FULL"):
        for size in (200, 1100):
            path = tmp_path / f"{synchronous}-{size}-{batch}.sqlite"
            store, _ = open_store(path, capacity=1 << 30, synchronous=synchronous)
            times = []
            for _ in range(300 // batch):
                packets = [packet(store, 120, size)]
                started = time.perf_counter()
                with store.batch():
                    for _ in range(batch):
                        store.put(C.CHIP, packets.pop() if packets else packet(store, 120, size), 0.0)
                times.append((time.perf_counter() - started) / batch)
            store.close()
            results[synchronous, size] = statistics.median(times)
            print(f"synchronous={synchronous} {size}-octet packets, batch of {batch}: "
                  f"median {results[synchronous, size] * 1e6:.0f} us a put")
    assert all(t < 0.05 for t in results.values())


def test_a_product_dropped_between_read_and_offer_is_not_sent_nor_counted_twice(tmp_path):
    """The writer reads the oldest detection report; the executive's puts then fill the quota and the rule
    drops that very report; the writer's offer must find it gone (found by the executive soak benchmark)."""
    quotas = {f"quota_{c.name.lower()}": 1 << 16 for c in ProductClass}
    store = ProductStore(StoreConfig(path=str(tmp_path / "s.sqlite"), capacity_octets=1 << 17, **quotas),
                         time.monotonic, lambda *event: None)
    detections = ProductClass.DETECTIONS

    def put():
        count = store.next_sequence_count(110)
        store.put(detections, PusTm(apid=110, service=130, subtype=1, data=bytes(1000), time=bytes(6),
                                    sequence_count=count).pack(), time.time())

    put()
    taken = store.next_unsent(detections)
    for _ in range(70):
        put()
    assert store.mark_offered(taken) is False
    store.audit()
    while (product := store.next_unsent(detections)) is not None:
        assert store.mark_offered(product)
    store.audit()
    assert store.unsent_octets[detections] == 0
