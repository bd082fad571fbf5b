"""Store-and-forward: every product is a committed SQLite row (WAL) before the link may see it.

A product stays in the store until the ground acknowledges it by command.
Offering it to the link does not delete it; a replay (by time or by
sequence range) makes offered products unsent again. What the link cannot
carry waits here, within per-class quotas and a total capacity; what does not
fit is dropped by one stated rule (below), counted, and reported by a
throttled event. A narrow link is the normal case, never an error.

Drop rule. A class over its quota drops its own oldest products (those
already offered first: the ground most likely has them, it only has not
acknowledged them yet). A store over its capacity drops from the lowest
class up (bulk first), never from a class above the incoming product's, and
never alerts; when that cannot make room, the incoming product is the one
dropped. Alerts are never refused. An alert opening is never dropped before
the link has offered it; over its quota, the oldest offered openings go. Alert
updates over their quota drop their oldest, offered first, like the classes
below. Without those two quotas, a long stretch without acknowledgements
(a ground station down, a flood of false tracks) would let alerts fill the
disk and push out every other class: the bench's soak held 942 KiB of alerts
in a 256 KiB store after half a simulated hour, and nothing else.

Sequence counts. The store owns the per-APID packet sequence counters: a
packet is built with `next_sequence_count(apid)` and the counter moves on in
the same transaction that commits the packet (also when the packet itself is
dropped: the gap tells the ground). A count is therefore never reused once a
packet carrying it can have been offered, across restarts too. The 14-bit
count of the wire wraps; the store numbers each APID's products with the
unwrapped count (`StoredPacket.sequence`), which acknowledgements and replays
use.

Accounting, per class and across restarts (totals are committed with the
rows): octets put = octets acknowledged + octets dropped + octets held.
`audit()` checks it against the rows themselves.

Offers are remembered in memory at once and written with the next
transaction (or `flush()`): a mark lost in a crash only means the product
goes out again, and the ground recognises a packet it has seen. So the link
keeps draining the store while its disk is full or read-only.

A failure of the store itself (disk full, read-only, corrupt, not a Kestrel
store) is a StoreError saying which.
"""
from __future__ import annotations

import contextlib
import enum
import errno
import os
import sqlite3
import threading
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Final, NamedTuple

from kestrel import products
from kestrel.link.spacepacket import MAX_SEQUENCE_COUNT, PRIMARY_HEADER_LENGTH, packet_key, packet_length
from kestrel.settings import ConfigurationError, Settings, setting


class ProductClass(enum.IntEnum):
    """Product classes in priority order, highest first (the value is the order, and the store's code)."""

    ALERT = 0            # an alert opening: a new threat
    ALERT_UPDATE = 1     # an open alert's later states and its close: the ground already knows of it
    EVENT = 2
    VERIFICATION = 3
    DETECTIONS = 4
    CHIP = 5
    HOUSEKEEPING = 6
    QUICKLOOK = 7
    BULK = 8


CLASSES: Final = tuple(ProductClass)
# Never refused, and never dropped to make room for another class; an opening not yet offered never at all.
ALERT_CLASSES: Final = (ProductClass.ALERT, ProductClass.ALERT_UPDATE)
# What the link sends first whenever one waits; inside a batch, one of these commits the batch at once.
URGENT: Final = (ProductClass.ALERT, ProductClass.ALERT_UPDATE, ProductClass.EVENT, ProductClass.VERIFICATION)
# The store's quotas are the downlink queue now; a drop by rule is what a full queue used to be.
EVENT_PRODUCTS_DROPPED: Final = products.EVENT_QUEUE_OVERFLOW
_MIB = 1 << 20


@dataclass(frozen=True)
class StoreConfig(Settings):
    path: str = setting("", "the store's SQLite file (WAL: -wal and -shm files beside it); empty: a temporary "
                        "store that ends with the program (the bench's default; a payload names its file)")
    # Measured on the development machine (ext4 on a virtual disk; pytest -m perf -s tests/test_store.py
    # -k commit_cost), median wall time of a put, 200 or 1100 octets alike: NORMAL 65 us alone, 40 us in
    # a batch of 10; FULL 3.9 ms alone (0.3 ms in some runs), 0.39 ms (0.09) in a batch of 10: one sync
    # a commit. NORMAL in WAL loses the last commits on a power cut (never on a crash of the program): a
    # product already offered could vanish, and its sequence count go out again on another packet. So
    # FULL, and the executive puts a cycle's products in one batch(): one sync a cycle, 4 ms of 100 at
    # 10 Hz. Batches also cut the WAL written per 1100-octet put from 27 KiB to 4.8 KiB (flash wear).
    synchronous: str = setting("FULL", "SQLite synchronous mode: FULL survives power loss, NORMAL only a crash",
                               choices=("NORMAL", "FULL"))
    capacity_octets: int = setting(256 * _MIB, "packet octets the store may hold in all; keep it below the free "
                                   "space of its filesystem, less a few MiB for the WAL", low=1 << 17, high=1 << 40)
    quota_alert: int = setting(16 * _MIB, "octets of alert openings the store may hold; over it the oldest "
                               "already offered are dropped, one not yet offered never", low=1 << 16, high=1 << 40)
    quota_alert_update: int = setting(16 * _MIB, "octets of alert updates and closes the store may hold",
                                      low=1 << 16, high=1 << 40)
    quota_event: int = setting(8 * _MIB, "octets of events the store may hold", low=1 << 16, high=1 << 40)
    quota_verification: int = setting(4 * _MIB, "octets of command verification reports the store may hold",
                                      low=1 << 16, high=1 << 40)
    quota_detections: int = setting(32 * _MIB, "octets of detection reports the store may hold",
                                    low=1 << 16, high=1 << 40)
    quota_chip: int = setting(64 * _MIB, "octets of image chips the store may hold", low=1 << 16, high=1 << 40)
    quota_housekeeping: int = setting(16 * _MIB, "octets of housekeeping the store may hold",
                                      low=1 << 16, high=1 << 40)
    quota_quicklook: int = setting(64 * _MIB, "octets of quick-look frames the store may hold",
                                   low=1 << 16, high=1 << 40)
    quota_bulk: int = setting(128 * _MIB, "octets of bulk data the store may hold", low=1 << 16, high=1 << 40)
    drop_event_period_s: float = setting(10.0, "at most one drop event per class in this many seconds, "
                                         "with the count since the last", above=0, high=86400)
    busy_timeout_s: float = setting(5.0, "how long to wait for another process holding the store", low=0,
                                    high=600)

    def check(self) -> None:
        big = [f.name for f in fields(self) if f.name.startswith("quota_") and getattr(self, f.name)
               > self.capacity_octets]
        if big:
            raise ConfigurationError(f"{', '.join(big)} exceed capacity_octets ({self.capacity_octets}): "
                                     f"a quota the store can never reach is no rule")

    def quota(self, cls: ProductClass) -> int:
        """Octets the class may hold (alert openings not yet offered are held beyond it)."""
        return getattr(self, "quota_" + cls.name.lower())


class StoreError(Exception):
    """The store cannot be written or opened: a fault of the store's disk or file, not of a product."""


class StoredPacket(NamedTuple):
    id: int
    cls: ProductClass
    apid: int
    sequence: int          # unwrapped: the wire carries sequence & 0x3FFF
    created_at: float
    packet: bytes


@dataclass
class ClassTotals:
    """One class's lifetime counts (committed with the rows, so they survive restarts)."""

    put: int = 0
    put_octets: int = 0
    acknowledged: int = 0
    acknowledged_octets: int = 0
    dropped: int = 0
    dropped_octets: int = 0
    replayed: int = 0
    held: int = 0              # derived: put - acknowledged - dropped
    held_octets: int = 0       # derived likewise


_TOTAL_COLUMNS: Final = ("put", "put_octets", "acknowledged", "acknowledged_octets", "dropped", "dropped_octets",
                         "replayed")

SCHEMA_VERSION: Final = 2
# Schema 1 had no ALERT_UPDATE class (it took code 1; the classes below it moved down by one).
_MIGRATIONS: Final = {1: (
    "UPDATE products SET class = class + 1 WHERE class >= 1",
    # totals.class is its primary key: move through negative codes so no two rows meet on the way.
    "UPDATE totals SET class = -(class + 1) WHERE class >= 1",
    "UPDATE totals SET class = -class WHERE class < 0",
    "INSERT INTO totals (class) VALUES (1)",
)}
APPLICATION: Final = "kestrel-flight store"
SCHEMA: Final = f"""
CREATE TABLE store_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE products (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- never reused, so 'id <= committed' means committed
    class INTEGER NOT NULL,
    apid INTEGER NOT NULL,
    sequence INTEGER NOT NULL,              -- unwrapped per-APID count
    created_at REAL NOT NULL,
    length INTEGER NOT NULL,
    offers INTEGER NOT NULL DEFAULT 0,      -- times offered to the link (ever)
    sent INTEGER NOT NULL DEFAULT 0,        -- offered since it was put or last replayed
    packet BLOB NOT NULL,
    UNIQUE (apid, sequence)
);
CREATE INDEX products_queue ON products (class, sent, id);
CREATE TABLE sequences (apid INTEGER PRIMARY KEY, next INTEGER NOT NULL);
CREATE TABLE totals (class INTEGER PRIMARY KEY, {", ".join(c + " INTEGER NOT NULL DEFAULT 0"
                                                         for c in _TOTAL_COLUMNS)});
"""
# Offer marks kept in memory before a write is forced (the next put writes them anyway).
_OFFERS_BEFORE_FLUSH: Final = 256


def _filesystem_read_only(directory: Path) -> bool:
    try:
        return bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _describe(exc: BaseException, what: str, directory: Path) -> str:
    """A specific sentence for an SQLite or OS failure; the disk's state is looked at when SQLite is vague."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    code = getattr(exc, "errno", None)
    if name == "SQLITE_FULL" or code == errno.ENOSPC:
        return f"{what}: the disk is full ({exc})"
    if name.startswith("SQLITE_READONLY") or code == errno.EROFS:
        return f"{what}: the store is read-only ({exc})"
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or name.startswith("SQLITE_CORRUPT"):
        return f"{what}: the store file is corrupt ({exc})"
    if name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED"):
        return f"{what}: the store is locked by another process ({exc})"
    if _filesystem_read_only(directory):
        return f"{what}: the store's filesystem is read-only ({exc})"
    return f"{what}: {exc}"


class ProductStore:
    """Products in, committed; offered to the scheduler by class, oldest first; deleted on acknowledgement.

    One thread puts (the executive), another may offer (the downlink writer):
    every method takes the store's lock. `on_event(severity, event_id, text)`
    is called outside the lock, after the commit, so it may put an event.
    """

    def __init__(self, config: StoreConfig, clock: Callable[[], float],
                 on_event: Callable[[int, int, str], object]):
        self.config = config
        self._clock = clock
        self._on_event = on_event
        self.path = Path(config.path)
        self._lock = threading.RLock()
        self._quota = tuple(config.quota(c) for c in CLASSES)
        self.totals = [ClassTotals() for _ in CLASSES]
        self.unsent_octets = [0] * len(CLASSES)   # held and not offered since put or replay
        self.offer_write_failures = 0             # flushes of offer marks that failed (kept, tried again)
        self.urgent_commits = 0                   # batches committed early by an urgent product
        self._next_sequence: dict[int, int] = {}
        self._cursor = [0] * len(CLASSES)         # highest id offered per class since open or replay
        self._offers: list[int] = []              # ids offered, not written yet
        self._offers_in_transaction: list[int] = []   # written in the open transaction
        self._committed_id = 0                    # every id up to this is committed
        self._batch = 0
        self._in_transaction = False
        self._drops_unreported = [[0, 0] for _ in CLASSES]   # count, octets since the last event
        self._next_drop_event = [float("-inf")] * len(CLASSES)
        self.read_only: str | None = None         # why the store was opened read-only; None: writable
        try:
            self._open(writable=True)
        except StoreError:
            if not (self.path.is_file() and _filesystem_read_only(self.path.parent)):
                raise
            self._open(writable=False)
        if _filesystem_read_only(self.path.parent):
            # SQLite may open it either way; the link drains what is stored, nothing can be stored.
            self.read_only = f"{self.path} is on a read-only filesystem: products are offered, none can be stored"

    # --- opening ------------------------------------------------------------
    def _open(self, writable: bool) -> None:
        try:
            if writable:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.db = sqlite3.connect(self.path, timeout=self.config.busy_timeout_s, isolation_level=None,
                                          check_same_thread=False)
            else:
                # mode=ro reads the WAL when its files are there; without them only immutable=1 opens it
                # (and then there is no WAL to miss: a clean close folded it into the file).
                query = "mode=ro" if Path(f"{self.path}-shm").exists() else "immutable=1"
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?{query}", uri=True,
                                          isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(_describe(exc, f"cannot open the store {self.path}", self.path.parent)) from exc
        try:
            self._open_schema(writable)
            self._load()
        except sqlite3.Error as exc:
            self.db.close()
            raise StoreError(_describe(exc, f"{self.path} cannot be used", self.path.parent)) from exc
        except StoreError:
            self.db.close()
            raise

    def _open_schema(self, writable: bool) -> None:
        if writable:
            mode = self.db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                raise StoreError(f"{self.path}: the store needs WAL journaling and SQLite gave {mode!r}")
            self.db.execute(f"PRAGMA synchronous={self.config.synchronous}")
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        tables = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if writable and version == 0 and not tables - {"sqlite_sequence"}:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        self.db.execute(statement)
                self.db.execute("INSERT INTO store_info VALUES ('application', ?)", (APPLICATION,))
                self.db.executemany("INSERT INTO totals (class) VALUES (?)", [(int(c),) for c in CLASSES])
                self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            return
        info = dict(self.db.execute("SELECT key, value FROM store_info")) if "store_info" in tables else {}
        if info.get("application") != APPLICATION:
            raise StoreError(f"{self.path} is not a Kestrel flight store (tables: {', '.join(sorted(tables))})")
        if writable and version in _MIGRATIONS:
            self._migrate(version)
            version = SCHEMA_VERSION
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has store schema {version}; this kestrel-flight reads schema "
                             f"{SCHEMA_VERSION}")

    def _migrate(self, version: int) -> None:
        """Upgrade an older store in place, in one transaction: it holds products no one may lose."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            while version != SCHEMA_VERSION:
                for statement in _MIGRATIONS[version]:
                    self.db.execute(statement)
                version += 1
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def _load(self) -> None:
        """Counters and mirrors from the committed rows (at open, and after a failed transaction)."""
        for row in self.db.execute(f"SELECT class, {', '.join(_TOTAL_COLUMNS)} FROM totals"):
            t = self.totals[row[0]]
            for name, value in zip(_TOTAL_COLUMNS, row[1:]):
                setattr(t, name, value)
            t.held = t.put - t.acknowledged - t.dropped
            t.held_octets = t.put_octets - t.acknowledged_octets - t.dropped_octets
        self.unsent_octets[:] = self._unsent_in_rows()
        self._next_sequence = dict(self.db.execute("SELECT apid, next FROM sequences"))
        self._committed_id = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM products").fetchone()[0]

    def _unsent_in_rows(self) -> list[int]:
        """Unsent octets per class as the rows say, less offers not written yet."""
        unsent = [0] * len(CLASSES)
        for cls, octets in self.db.execute("SELECT class, SUM(length) FROM products WHERE sent = 0 GROUP BY class"):
            unsent[cls] = octets
        for start in range(0, len(self._offers), 500):
            chunk = self._offers[start:start + 500]
            for cls, octets in self.db.execute(f"SELECT class, length FROM products WHERE sent = 0 AND id IN "
                                               f"({','.join('?' * len(chunk))})", chunk):
                unsent[cls] -= octets
        return unsent

    def close(self) -> None:
        """Write the offer marks if the disk lets us (lost marks only mean products go out again), and close."""
        with self._lock:
            try:
                self.flush()
            except StoreError:
                self.offer_write_failures += 1
            finally:
                self.db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    # --- transactions ---------------------------------------------------------
    def _fail(self, exc: BaseException, what: str) -> StoreError:
        return StoreError(_describe(exc, f"{what} in {self.path}", self.path.parent))

    def _begin(self) -> None:
        if not self._in_transaction:
            self.db.execute("BEGIN IMMEDIATE")
            self._in_transaction = True
        if self._offers:
            self.db.executemany("UPDATE products SET sent = 1, offers = offers + 1 WHERE id = ?",
                                [(i,) for i in self._offers])
            self._offers_in_transaction += self._offers
            self._offers = []

    def _commit(self) -> None:
        self.db.execute("COMMIT")
        self._in_transaction = False
        self._offers_in_transaction = []
        self._committed_id = self.db.execute("SELECT COALESCE(MAX(id), 0) FROM products").fetchone()[0]

    def _abort(self) -> None:
        """After a failure: what was committed stays, and the counters say so again."""
        self._in_transaction = False
        self._batch = 0
        self._offers = self._offers_in_transaction + self._offers   # rolled back: still to be written
        self._offers_in_transaction = []
        try:
            self.db.execute("ROLLBACK")
        except sqlite3.Error:
            pass              # SQLite may have rolled back already (disk full does)
        try:
            self._load()
        except sqlite3.Error:
            pass              # unreadable too: the caller's StoreError says why

    @contextlib.contextmanager
    def _writing(self, what: str):
        """One write transaction (or a part of the open batch); a failure rolls the whole of it back."""
        with self._lock:
            try:
                self._begin()
                yield
                if not self._batch:
                    self._commit()
            except sqlite3.Error as exc:
                self._abort()
                raise self._fail(exc, what) from exc
            except BaseException:
                self._abort()
                raise

    @contextlib.contextmanager
    def batch(self):
        """Group puts into one transaction: one sync for all. None of them is offered before the batch
        commits; a StoreError (or any exception) inside loses what the batch holds uncommitted. An urgent
        product (URGENT) commits at once, with the puts before it in the batch.

        The lock is not held between puts, so the link keeps taking committed products meanwhile.
        """
        with self._lock:
            self._batch += 1
        try:
            yield self
        except BaseException:
            with self._lock:
                if self._batch:
                    self._abort()
            raise
        with self._lock:
            self._batch = max(0, self._batch - 1)
            if not self._batch and self._in_transaction:
                try:
                    self._commit()
                except sqlite3.Error as exc:
                    self._abort()
                    raise self._fail(exc, "cannot commit the batch") from exc
        self._report_drops()

    def flush(self) -> None:
        """Write the offer marks kept in memory (outside a batch; the next put writes them anyway)."""
        with self._lock:
            if self._offers and not self._batch and not self.read_only:
                with self._writing("cannot record offers"):
                    pass

    # --- products ---------------------------------------------------------------
    def next_sequence_count(self, apid: int) -> int:
        """The 14-bit sequence count the next packet of `apid` must carry."""
        with self._lock:
            return self._next_sequence.get(apid, 0) & MAX_SEQUENCE_COUNT

    def put(self, cls: ProductClass, packet: bytes, created_at: float) -> int | None:
        """Commit a whole Space Packet; its id, or None when the drop rule dropped it.

        The packet's sequence count must be `next_sequence_count(its APID)`.
        """
        cls = ProductClass(cls)
        n = len(packet)
        if n < PRIMARY_HEADER_LENGTH + 1 or packet_length(packet) != n:
            raise ValueError(f"put takes one whole Space Packet; got {n} octets"
                             + (f", header says {packet_length(packet)}" if n >= PRIMARY_HEADER_LENGTH else ""))
        apid, count = packet_key(packet)
        with self._lock:
            sequence = self._next_sequence.get(apid, 0)
            if count != sequence & MAX_SEQUENCE_COUNT:
                raise ValueError(f"packet of APID {apid} carries sequence count {count}, the store's next is "
                                 f"{sequence & MAX_SEQUENCE_COUNT}: take counts from next_sequence_count()")
            with self._writing(f"cannot store a {cls.name.lower()} product"):
                if not self._make_room(cls, n):
                    row = None
                    self._count(cls, put=1, put_octets=n, dropped=1, dropped_octets=n)
                    self._note_drop(cls, 1, n)
                else:
                    row = self.db.execute(
                        "INSERT INTO products (class, apid, sequence, created_at, length, packet) "
                        "VALUES (?, ?, ?, ?, ?, ?)", (int(cls), apid, sequence, created_at, n, packet)).lastrowid
                    self._count(cls, put=1, put_octets=n)
                    self.unsent_octets[cls] += n
                self.db.execute("INSERT INTO sequences VALUES (?, ?) ON CONFLICT (apid) DO UPDATE SET next = "
                                "excluded.next", (apid, sequence + 1))
                self._next_sequence[apid] = sequence + 1
            if cls in URGENT and self._batch and self._in_transaction:
                # An alert must not wait for the end of its cycle: the batch so far is committed with it.
                try:
                    self._commit()
                except sqlite3.Error as exc:
                    self._abort()
                    raise self._fail(exc, f"cannot commit a {cls.name.lower()} product") from exc
                self.urgent_commits += 1
        if not self._batch:
            self._report_drops()
        return row

    def _count(self, cls: ProductClass, **deltas: int) -> None:
        self.db.execute(f"UPDATE totals SET {', '.join(f'{k} = {k} + ?' for k in deltas)} WHERE class = ?",
                        (*deltas.values(), int(cls)))
        t = self.totals[cls]
        for name, delta in deltas.items():
            setattr(t, name, getattr(t, name) + delta)
        t.held = t.put - t.acknowledged - t.dropped
        t.held_octets = t.put_octets - t.acknowledged_octets - t.dropped_octets

    def _make_room(self, cls: ProductClass, n: int) -> bool:
        """Drop what the rule says to make room for n octets of `cls`; False: drop the incoming one instead."""
        held = [t.held_octets for t in self.totals]
        over_capacity = sum(held) + n - self.config.capacity_octets
        quota = self._quota[cls]
        if cls in ALERT_CLASSES:
            self._drop_oldest(cls, held[cls] + n - quota, offered_only=cls == ProductClass.ALERT)
        else:
            # Room is made only within this class and those below it.
            if n > quota or over_capacity > sum(held[cls:]):
                return False
            self._drop_oldest(cls, held[cls] + n - quota)
        for victim in reversed(CLASSES[max(cls, ProductClass.EVENT):]):
            over_capacity = sum(t.held_octets for t in self.totals) + n - self.config.capacity_octets
            if over_capacity <= 0:
                break
            self._drop_oldest(victim, over_capacity)
        return True

    def _drop_oldest(self, cls: ProductClass, octets: int, offered_only: bool = False) -> None:
        """Drop `cls` products, offered ones first, oldest first, until at least `octets` are freed (or,
        `offered_only`, no offered one is left). Offer marks are written by then: _begin writes them."""
        if octets <= 0:
            return
        chosen, freed, unsent = [], 0, 0
        for sent in (1,) if offered_only else (1, 0):
            for row_id, length in self.db.execute(
                    "SELECT id, length FROM products WHERE class = ? AND sent = ? ORDER BY id", (int(cls), sent)):
                if freed >= octets:
                    break
                chosen.append((row_id,))
                freed += length
                if sent == 0 and row_id > self._cursor[cls]:   # at or below: offered, mark not written yet
                    unsent += length
        if not chosen:
            return
        self.db.executemany("DELETE FROM products WHERE id = ?", chosen)
        self._count(cls, dropped=len(chosen), dropped_octets=freed)
        self.unsent_octets[cls] -= unsent
        self._note_drop(cls, len(chosen), freed)

    # --- drop events --------------------------------------------------------------
    def _note_drop(self, cls: ProductClass, count: int, octets: int) -> None:
        self._drops_unreported[cls][0] += count
        self._drops_unreported[cls][1] += octets

    def _report_drops(self) -> None:
        """One event per class and period, with what was dropped since the last; outside the lock."""
        events = []
        with self._lock:
            now = self._clock()
            for cls in CLASSES:
                count, octets = self._drops_unreported[cls]
                if count and now >= self._next_drop_event[cls]:
                    self._drops_unreported[cls] = [0, 0]
                    self._next_drop_event[cls] = now + self.config.drop_event_period_s
                    t = self.totals[cls]
                    severity = (products.EVENT_LOW if cls in (ProductClass.CHIP, ProductClass.QUICKLOOK,
                                                              ProductClass.BULK) else products.EVENT_MEDIUM)
                    events.append((severity, EVENT_PRODUCTS_DROPPED,
                                   f"store: {count} {cls.name.lower()} products ({octets} octets) dropped by rule; "
                                   f"{t.dropped} in all; holding {t.held_octets} of quota "
                                   f"{self._quota[cls]} octets"))
        for event in events:
            self._on_event(*event)

    def report_drops(self) -> None:
        """Report drops whose event the throttle held back, once their period is over (call now and then)."""
        self._report_drops()

    # --- the link side --------------------------------------------------------------
    def next_unsent(self, cls: ProductClass) -> StoredPacket | None:
        """The oldest committed product of `cls` not offered since it was put or replayed."""
        with self._lock:
            try:
                row = self.db.execute(
                    "SELECT id, class, apid, sequence, created_at, packet FROM products "
                    "WHERE class = ? AND sent = 0 AND id > ? AND id <= ? ORDER BY id LIMIT 1",
                    (int(cls), self._cursor[cls], self._committed_id)).fetchone()
            except sqlite3.Error as exc:
                raise self._fail(exc, "cannot read the store") from exc
        if row is None:
            return None
        return StoredPacket(row[0], ProductClass(row[1]), row[2], row[3], row[4], row[5])

    def mark_offered(self, product: StoredPacket) -> bool:
        """The link takes `product`: it is not offered again unless replayed, and stays until acknowledged.

        False when the product is no longer held: the drop rule took it between next_unsent and now
        (another thread put meanwhile). It must not be sent, and its octets were already counted out.
        """
        with self._lock:
            if product.id <= self._cursor[product.cls]:
                return False
            try:
                held = self.db.execute("SELECT 1 FROM products WHERE id = ?", (product.id,)).fetchone()
            except sqlite3.Error as exc:
                raise self._fail(exc, "cannot read the store") from exc
            if held is None:
                return False
            self._cursor[product.cls] = product.id
            self._offers.append(product.id)
            self.unsent_octets[product.cls] -= len(product.packet)
            if len(self._offers) >= _OFFERS_BEFORE_FLUSH and not self._batch:
                try:
                    self.flush()
                except StoreError:
                    self.offer_write_failures += 1   # kept in memory; the link goes on
        return True

    def acknowledge(self, apid: int, first: int, last: int) -> int:
        """Delete the products of `apid` with (unwrapped) sequence first..last that were offered; how many.

        A product never offered cannot have reached the ground, so an
        acknowledgement that names one does not delete it.
        """
        deleted = 0
        with self._writing("cannot delete acknowledged products"):
            # A replayed product not yet sent again is unsent, and acknowledged all the same.
            rows = self.db.execute("SELECT class, COUNT(*), SUM(length), SUM(length * (sent = 0)) FROM products "
                                   "WHERE apid = ? AND sequence BETWEEN ? AND ? AND offers > 0 GROUP BY class",
                                   (apid, first, last)).fetchall()
            self.db.execute("DELETE FROM products WHERE apid = ? AND sequence BETWEEN ? AND ? AND offers > 0",
                            (apid, first, last))
            for cls, count, octets, unsent in rows:
                self._count(ProductClass(cls), acknowledged=count, acknowledged_octets=octets)
                self.unsent_octets[cls] -= unsent
                deleted += count
        return deleted

    def resolve(self, apid: int, count: int) -> int | None:
        """The unwrapped sequence of the newest held product of `apid` whose 14-bit count is `count`."""
        with self._lock:
            row = self.db.execute("SELECT MAX(sequence) FROM products WHERE apid = ? AND sequence % ? = ?",
                                  (apid, MAX_SEQUENCE_COUNT + 1, count)).fetchone()
        return row[0]

    def replay(self, since: float, until: float, by: str = "time", apid: int | None = None) -> int:
        """Make held, offered products unsent again: created_at in since..until (by="time"), or unwrapped
        sequence in since..until of one APID (by="sequence"); how many."""
        if by == "time":
            where, values = "created_at BETWEEN ? AND ?", [since, until]
        elif by == "sequence":
            if apid is None:
                raise ValueError("a replay by sequence names its APID: sequences are counted per APID")
            where, values = "sequence BETWEEN ? AND ?", [int(since), int(until)]
        else:
            raise ValueError(f"replay by 'time' or 'sequence', not {by!r}")
        if apid is not None:
            where += " AND apid = ?"
            values.append(apid)
        replayed = 0
        with self._writing("cannot replay"):
            rows = self.db.execute(f"SELECT class, COUNT(*), SUM(length) FROM products WHERE sent = 1 AND "
                                   f"{where} GROUP BY class", values).fetchall()
            self.db.execute(f"UPDATE products SET sent = 0 WHERE sent = 1 AND {where}", values)
            for cls, count, octets in rows:
                self._count(ProductClass(cls), replayed=count)
                self.unsent_octets[cls] += octets
                self._cursor[cls] = 0
                replayed += count
        return replayed

    # --- what it holds ------------------------------------------------------------------
    def pending_octets(self, cls: ProductClass) -> int:
        """Octets of `cls` waiting to be offered."""
        return self.unsent_octets[cls]

    def held_octets(self, cls: ProductClass) -> int:
        """Octets of `cls` in the store, offered or not, until acknowledged or dropped."""
        return self.totals[cls].held_octets

    def total(self, name: str) -> int:
        """A ClassTotals field summed over the classes (for housekeeping)."""
        return sum(getattr(t, name) for t in self.totals)

    def audit(self) -> None:
        """Check the accounting against the rows: put = acknowledged + dropped + held, per class, in octets
        and in products; and that the rows' sequence counts stay below each APID's counter. StoreError if not."""
        with self._lock:
            rows = {cls: (count, octets) for cls, count, octets in
                    self.db.execute("SELECT class, COUNT(*), SUM(length) FROM products GROUP BY class")}
            unsent = self._unsent_in_rows()
            behind = self.db.execute("SELECT p.apid FROM products p LEFT JOIN sequences s ON p.apid = s.apid "
                                     "WHERE s.next IS NULL OR p.sequence >= s.next LIMIT 1").fetchone()
            stored = [tuple(r[1:]) for r in self.db.execute(
                f"SELECT class, {', '.join(_TOTAL_COLUMNS)} FROM totals ORDER BY class")]
        problems = []
        for cls in CLASSES:
            t = self.totals[cls]
            count, octets = rows.get(cls, (0, 0))
            if (t.held, t.held_octets) != (count, octets):
                problems.append(f"{cls.name}: put {t.put_octets} = acknowledged {t.acknowledged_octets} + dropped "
                                f"{t.dropped_octets} + held {t.held_octets} octets, but rows hold {octets} octets "
                                f"in {count} products (counted {t.held})")
            if stored[cls] != tuple(getattr(t, c) for c in _TOTAL_COLUMNS):
                problems.append(f"{cls.name}: totals in memory differ from totals committed {stored[cls]}")
            if self.unsent_octets[cls] != unsent[cls]:
                problems.append(f"{cls.name}: {self.unsent_octets[cls]} octets counted unsent, rows say "
                                f"{unsent[cls]}")
        if behind is not None:
            problems.append(f"APID {behind[0]}: a product's sequence is not below the APID's counter")
        if problems:
            raise StoreError(f"{self.path}: the store's accounting does not balance: " + "; ".join(problems))
