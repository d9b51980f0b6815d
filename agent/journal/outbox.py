"""The outbox: every record waits here, durably, until the broker has acknowledged it.

The outbox table lives in the same SQLite file as the monitor state and the chain head,
so ``store()`` runs inside the caller's ``db.transaction()``, the one in which
``RecordChain.make`` advanced the head: the record, its seq and the head commit together
or not at all. Several records may be stored in one transaction: everything one frame or
housekeeping tick produced, one fsync (the recorder commits per frame, never across
frames).

fsync policy: WAL journal with ``synchronous=FULL`` on the pipeline's connection, so the
WAL is fsynced at every COMMIT; a record counts as stored once that COMMIT returned, and
a power cut afterwards cannot lose it. The uplink deletes acknowledged records on its own
connection with ``synchronous=NORMAL``: a power cut may undo a few deletes, which only
means those records are sent again with the same ``id`` (the backend de-duplicates).

Lanes order the uplink (lane, then seq) and decide what the disk quota gives up first::

    0  accident.trigger
    1  accident.record
    2  cda.*  driver.*  safety.*  selfcheck.*
    3  ota.*  ecu.*
    4  stats.*  agent.*  signal.*  journal.*  and anything else

Quota (``quota_mb``, bytes of stored payloads): a store that would exceed it first evicts
the oldest records of lane 4, then 3, then 2, but never of a lane more important than the
incoming record; if that is not enough, an incoming record of lanes 2-4 is dropped itself,
and one of lanes 0-1 is stored anyway (logged as an error). Every eviction is tallied in
the state database in the same transaction, so the caller can write a counted
``journal.evicted`` record from ``take_evictions()`` even after a crash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.journal.settings import JournalConfig
from agent.statestore import StateDB

log = logging.getLogger(__name__)

RESEND_LANE = 5                     # archived records asked for again: after all live data
LANES = (0, 1, 2, 3, 4, RESEND_LANE)
EVICTABLE = (RESEND_LANE, 4, 3, 2)  # lowest priority first; lanes 0-1 are never evicted
EVENT_LANE = 2                      # the event records of the storage floor
ACCIDENT_KEEP_S = 72 * 3600.0       # archive: past the 24 h / 48 h report deadlines
MAX_RESEND = 10_000                 # records one records.resend may queue
EVICTIONS_KEY = "journal.evictions"
MAX_RANGES = 500                    # seq ranges kept in one eviction tally

_PREFIX_LANES = {
    "cda": 2, "driver": 2, "safety": 2, "selfcheck": 2,
    "ota": 3, "ecu": 3, "security": 3,
}

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox (
        id      TEXT PRIMARY KEY,
        lane    INTEGER NOT NULL,
        seq     INTEGER NOT NULL,
        type    TEXT NOT NULL,
        schema  TEXT NOT NULL,
        size    INTEGER NOT NULL,
        payload BLOB NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS outbox_order ON outbox(lane, seq)",
    """CREATE TABLE IF NOT EXISTS outbox_lane (
        lane  INTEGER PRIMARY KEY,
        count INTEGER NOT NULL,
        bytes INTEGER NOT NULL)""",
    """INSERT OR IGNORE INTO outbox_lane(lane, count, bytes)
        VALUES (0, 0, 0), (1, 0, 0), (2, 0, 0), (3, 0, 0), (4, 0, 0), (5, 0, 0)""",
    """CREATE TABLE IF NOT EXISTS sent (
        seq      INTEGER PRIMARY KEY,
        id       TEXT NOT NULL,
        type     TEXT NOT NULL,
        schema   TEXT NOT NULL,
        size     INTEGER NOT NULL,
        payload  BLOB NOT NULL,
        acked_at REAL NOT NULL)""",
    """CREATE TRIGGER IF NOT EXISTS outbox_in AFTER INSERT ON outbox BEGIN
        UPDATE outbox_lane SET count = count + 1, bytes = bytes + NEW.size
        WHERE lane = NEW.lane;
    END""",
    """CREATE TRIGGER IF NOT EXISTS outbox_out AFTER DELETE ON outbox BEGIN
        UPDATE outbox_lane SET count = count - 1, bytes = bytes - OLD.size
        WHERE lane = OLD.lane;
    END""",
)


_EVENT_SQL = "(" + " OR ".join(f"type LIKE '{prefix}.%'" for prefix, lane in
                              sorted(_PREFIX_LANES.items()) if lane == 2) + ")"
# What the archive pruning never deletes (parameters from Journal._archive_floors).
_FLOOR_SQL = (f"({_EVENT_SQL} AND seq >= ?) OR (type LIKE 'accident.%' AND (seq >= ? OR "
              "json_extract(CAST(payload AS TEXT), '$.data.accident_id') IN "
              "(SELECT value FROM json_each(?))))")
MAX_SEQ = 2 ** 62


def lane_of(type_: str) -> int:
    """Priority lane of a record type (0 is sent first and never evicted)."""
    if type_ == "accident.trigger":
        return 0
    if type_ == "accident.record":
        return 1
    return _PREFIX_LANES.get(type_.split(".", 1)[0], 4)


def is_disk_full(exc: BaseException) -> bool:
    """SQLite's SQLITE_FULL ("database or disk is full"): retry later, never crash.

    Looks through the exception's context too: SQLite aborts the whole transaction on
    SQLITE_FULL, so the caller's ROLLBACK may fail and hide the original error.
    """
    seen = 0
    cur: BaseException | None = exc
    while cur is not None and seen < 5:
        if isinstance(cur, sqlite3.OperationalError):
            code = getattr(cur, "sqlite_errorcode", None)        # Python >= 3.11
            if code is not None and code & 0xFF == sqlite3.SQLITE_FULL:
                return True
            if "database or disk is full" in str(cur):
                return True
        cur, seen = cur.__context__, seen + 1
    return False


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "unknown error"
    if is_disk_full(exc):
        return "database or disk is full"
    return str(exc)


def payload_of(record: dict[str, Any]) -> bytes:
    """The bytes that go on the wire: the record as compact JSON, UTF-8."""
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


@dataclass(frozen=True)
class Pending:
    """One stored record waiting for its PUBACK."""

    id: str
    lane: int
    seq: int
    type: str
    schema: str
    payload: bytes


class JournalError(Exception):
    """A record cannot be journalled (missing id/seq/type)."""


class Journal:
    """Outbox on a ``StateDB``; the pipeline and the uplink each use their own instance."""

    def __init__(self, db: StateDB, config: JournalConfig | None = None):
        self.db = db
        self.config = config or JournalConfig()
        with db.lock:       # statement by statement: executescript would COMMIT an open tx
            for statement in SCHEMA:
                db.conn.execute(statement)
        self.quota_bytes = int(self.config.quota_mb * 1024 * 1024)
        self.stored = 0
        self.evicted = 0
        self.over_quota = 0             # lane 0-1 records stored beyond the quota
        self.write_failures = 0         # failed commits (disk full and the like)
        self.floor_held = 0             # evictions the event floor stopped
        self._evictions_pending = db.get(EVICTIONS_KEY) is not None
        self._held: deque[Any] = deque()
        self._held_dropped: dict[str, int] = {}
        # What take_evictions() handed out in the transaction not yet known to be
        # committed: given back by hold() when that commit fails.
        self._taken: dict[str, int] | None = None
        self._taken_reserve = 0
        self._prune_at = 0.0
        self.reserve = Reserve(db.path.with_name("journal.reserve") if db.path else None,
                               int(self.config.reserve_mb * 1024 * 1024))
        self.reserve.take()

    # -- writing (pipeline thread, inside the caller's transaction) -------------------

    def store(self, record: dict[str, Any]) -> bool:
        """Add one record to the outbox in the open transaction; False if the quota dropped it.

        Storing the same ``id`` twice keeps the first copy.
        """
        conn = self._in_transaction()
        try:
            rid, seq, type_ = str(record["id"]), int(record["seq"]), str(record["type"])
        except (KeyError, TypeError, ValueError) as exc:
            raise JournalError(f"record without a usable id/seq/type: {exc}") from None
        payload = payload_of(record)
        lane = lane_of(type_)
        if not self._make_room(conn, lane, len(payload)):
            self._tally(conn, [(rid, lane, seq, type_, len(payload))])
            log.warning("journal quota full: %s seq %d dropped (lane %d)", type_, seq, lane)
            return False
        conn.execute(
            "INSERT OR IGNORE INTO outbox(id, lane, seq, type, schema, size, payload) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (rid, lane, seq, type_, str(record.get("schema", "")), len(payload), payload))
        self.stored += 1
        return True

    def take_evictions(self) -> dict[str, Any] | None:
        """Data for a ``journal.evicted`` record, once; call it inside the transaction that
        stores that record, so the tally is cleared exactly when the record exists."""
        if not self._evictions_pending and not self._held_dropped:
            return None
        conn = self._in_transaction()
        row = conn.execute("SELECT value FROM kv WHERE key=?", (EVICTIONS_KEY,)).fetchone()
        tally = json.loads(row[0]) if row else None
        conn.execute("DELETE FROM kv WHERE key=?", (EVICTIONS_KEY,))
        self._evictions_pending = False
        self._taken = dict(self._held_dropped)
        self._taken_reserve = 0
        if self._held_dropped:
            tally = tally or _empty_tally()
            tally["unstored"] = dict(self._held_dropped)
            self._held_dropped.clear()
        if self.reserve.used_unreported:
            tally = tally or _empty_tally()
            tally["reserve_used"] = self.reserve.used_unreported
            self._taken_reserve = self.reserve.used_unreported
            self.reserve.used_unreported = 0
        return tally

    def committed(self) -> None:
        """The transaction of the last ``take_evictions()`` committed: its tally is told."""
        self._taken = None
        if self.reserve.released:
            self.reserve.take()

    # -- reading and acknowledging (uplink thread, own connection) --------------------

    def next_batch(self, limit: int, exclude: Iterable[str] = ()) -> list[Pending]:
        """Up to ``limit`` records in send order (lane, then seq), skipping ``exclude``."""
        if limit <= 0:
            return []
        skip = set(exclude)
        with self.db.lock:
            rows = self.db.conn.execute(
                "SELECT id, lane, seq, type, schema, payload FROM outbox "
                "ORDER BY lane, seq LIMIT ?", (limit + len(skip),)).fetchall()
        out = [Pending(r[0], r[1], r[2], r[3], r[4], bytes(r[5])) for r in rows if r[0] not in skip]
        return out[:limit]

    def ack(self, record_id: str) -> bool:
        """Delete an acknowledged record; acknowledging twice (or after eviction) is harmless."""
        return self.ack_many([record_id]) == 1

    def ack_many(self, ids: Sequence[str], now: float | None = None) -> int:
        """Move acknowledged records from the outbox into the archive of sent records."""
        if not ids:
            return 0
        now = time.time() if now is None else now
        keys = [(i,) for i in ids]
        with self.db.transaction() as conn:
            conn.executemany(
                "INSERT OR REPLACE INTO sent(seq, id, type, schema, size, payload, acked_at) "
                f"SELECT seq, id, type, schema, size, payload, {now!r} FROM outbox "
                "WHERE id=?", keys)
            cursor = conn.executemany("DELETE FROM outbox WHERE id=?", keys)
            gone = cursor.rowcount
            if now >= self._prune_at:
                self._prune_archive(conn, now)
            return gone

    def _prune_archive(self, conn: sqlite3.Connection, now: float) -> None:
        """Keep the archive within its age and size; accidents until their window closed,
        and the storage floors always: the newest ``floor_events`` event records, the
        newest ``floor_accidents`` accidents, and every locked accident."""
        self._prune_at = now + 10.0
        keep_accidents = now - ACCIDENT_KEEP_S
        kept = "NOT (" + _FLOOR_SQL + ")"
        floors = self._archive_floors(conn)
        conn.execute("DELETE FROM sent WHERE acked_at < ? AND (type NOT LIKE 'accident.%' "
                     f"OR acked_at < ?) AND {kept}",
                     (now - self.config.archive_days * 86400.0, keep_accidents, *floors))
        over = int(conn.execute("SELECT COALESCE(SUM(size), 0) FROM sent").fetchone()[0]) \
            - int(self.config.archive_mb * 1024 * 1024)
        while over > 0:
            rows = conn.execute(
                "SELECT seq, size FROM sent WHERE (type NOT LIKE 'accident.%' OR acked_at < ?) "
                f"AND {kept} ORDER BY seq LIMIT 256", (keep_accidents, *floors)).fetchall()
            if not rows:
                return
            chosen = []
            for seq, size in rows:
                chosen.append((seq,))
                over -= size
                if over <= 0:
                    break
            conn.executemany("DELETE FROM sent WHERE seq=?", chosen)

    def _archive_floors(self, conn: sqlite3.Connection) -> tuple[int, int, str]:
        """Parameters of ``_FLOOR_SQL``: the oldest protected event seq, the oldest seq of
        the protected accidents, the locked accident ids (JSON)."""
        n = max(self.config.floor_events, 0)
        row = conn.execute(f"SELECT seq FROM sent WHERE {_EVENT_SQL} ORDER BY seq DESC "
                           "LIMIT 1 OFFSET ?", (n - 1,)).fetchone() if n else None
        event_seq = int(row[0]) if row else (0 if n else MAX_SEQ)
        accidents: dict[str, int] = {}
        locked: list[str] = []
        for seq, acc, lock, edr_lock in conn.execute(
                "SELECT seq, json_extract(CAST(payload AS TEXT), '$.data.accident_id'), "
                "json_extract(CAST(payload AS TEXT), '$.data.locked'), "
                "json_extract(CAST(payload AS TEXT), '$.data.edr.locked') "
                "FROM sent WHERE type LIKE 'accident.%' ORDER BY seq DESC"):
            key = str(acc if acc is not None else f"seq:{seq}")
            if key in accidents or len(accidents) < self.config.floor_accidents:
                accidents[key] = seq
            if (lock == 1 or edr_lock == 1) and key not in locked:
                locked.append(key)
        accident_seq = min(accidents.values()) if accidents else MAX_SEQ
        return event_seq, accident_seq, json.dumps(locked)

    def resend(self, first: int, last: int) -> tuple[int, list[list[int]]]:
        """Queue archived records ``first..last`` again, in the resend lane (after all live
        data). Returns how many were queued and the seq ranges the archive no longer has
        (nor the outbox: those are on their way anyway)."""
        last = min(last, first + MAX_RESEND - 1)
        with self.db.transaction() as conn:
            queued = conn.execute(
                "INSERT OR IGNORE INTO outbox(id, lane, seq, type, schema, size, payload) "
                f"SELECT id, {RESEND_LANE}, seq, type, schema, size, payload FROM sent "
                "WHERE seq BETWEEN ? AND ? ORDER BY seq", (first, last)).rowcount
            have = {r[0] for r in conn.execute(
                "SELECT seq FROM sent WHERE seq BETWEEN ? AND ? UNION "
                "SELECT seq FROM outbox WHERE seq BETWEEN ? AND ?",
                (first, last, first, last))}
        missing = [s for s in range(first, last + 1) if s not in have]
        return queued, _merge_ranges([], missing)

    def depth(self) -> dict[int, int]:
        """Records waiting per lane."""
        with self.db.lock:
            rows = self.db.conn.execute("SELECT lane, count FROM outbox_lane").fetchall()
        out = dict.fromkeys(LANES, 0)
        out.update({lane: count for lane, count in rows})
        return out

    def bytes_used(self) -> int:
        """Payload bytes held (what the quota counts; the file adds SQLite overhead)."""
        with self.db.lock:
            return int(self.db.conn.execute("SELECT SUM(bytes) FROM outbox_lane").fetchone()[0]
                       or 0)

    # -- failed commits: keep the events for a bounded retry ---------------------------

    def hold(self, items: Sequence[Any], type_of: Callable[[Any], str] = lambda e: e[0],
             exc: BaseException | None = None) -> None:
        """Keep what a failed commit did not store (e.g. the pipeline's pending events) for
        the next attempt. Bounded by ``hold_max``: beyond it the lowest-lane items go first,
        counted in the next ``take_evictions()``; lane 0-1 items are always kept."""
        self.db.abort()
        self.write_failures += 1
        if self._taken is not None:  # the tally went down with the transaction: keep it
            self._evictions_pending = self.db.get(EVICTIONS_KEY) is not None
            self.reserve.used_unreported += self._taken_reserve
            for t, n in self._taken.items():
                self._held_dropped[t] = self._held_dropped.get(t, 0) + n
            self._taken = None
        if self.write_failures == 1 or self.write_failures % 100 == 0:
            log.error("journal commit failed (%s); %d item(s) held for retry, failure #%d",
                      _describe(exc), len(items), self.write_failures)
        self.keep(items, type_of)

    def keep(self, items: Sequence[Any], type_of: Callable[[Any], str] = lambda e: e[0]
             ) -> None:
        """Put items (back) in front of what is held, within ``hold_max``."""
        self._held.extendleft(reversed(list(items)))
        excess = len(self._held) - max(self.config.hold_max, 0)
        if excess <= 0:
            return
        ranked = sorted(range(len(self._held)),
                        key=lambda i: (-lane_of(type_of(self._held[i])), i))
        drop = {i for i in ranked[:excess] if lane_of(type_of(self._held[i])) >= 2}
        kept: deque[Any] = deque()
        for i, item in enumerate(self._held):
            if i in drop:
                t = type_of(item)
                self._held_dropped[t] = self._held_dropped.get(t, 0) + 1
            else:
                kept.append(item)
        self._held = kept

    def take_held(self) -> list[Any]:
        """Everything held for retry, oldest first (the holder is emptied)."""
        items = list(self._held)
        self._held.clear()
        return items

    @property
    def held(self) -> int:
        return len(self._held)

    # -- internals ---------------------------------------------------------------------

    def _in_transaction(self) -> sqlite3.Connection:
        if not self.db.conn.in_transaction:
            raise JournalError("Journal writes must run inside db.transaction()")
        return self.db.conn

    def _make_room(self, conn: sqlite3.Connection, lane: int, size: int) -> bool:
        """Evict until ``size`` more bytes fit; False if an evictable record cannot fit."""
        used = int(conn.execute("SELECT SUM(bytes) FROM outbox_lane").fetchone()[0] or 0)
        need = used + size - self.quota_bytes
        if lane == EVENT_LANE and need > 0:
            # Accidents beyond their floor are stored over the quota; they must not eat
            # the event floor's room, so for an event they widen the quota.
            accidents = int(conn.execute("SELECT COALESCE(SUM(bytes), 0) FROM outbox_lane "
                                         "WHERE lane < ?", (EVENT_LANE,)).fetchone()[0])
            need -= max(0, accidents - self.config.floor_accidents
                        * self.config.accident_bytes)
        if need <= 0:
            return True
        for victim_lane in EVICTABLE:
            if victim_lane < max(lane, 2):
                break
            # The event floor: an accident may push out event records only down to the
            # newest ``floor_events``; an event record replaces the oldest one of its lane.
            spare = (self._lane_count(conn, EVENT_LANE) - self.config.floor_events
                     if victim_lane == EVENT_LANE and lane < EVENT_LANE else None)
            while need > 0 and (spare is None or spare > 0):
                limit = 256 if spare is None else min(256, spare)
                rows = conn.execute(
                    "SELECT id, lane, seq, type, size FROM outbox WHERE lane=? "
                    "ORDER BY seq LIMIT ?", (victim_lane, limit)).fetchall()
                if not rows:
                    break
                chosen = []
                for row in rows:
                    chosen.append(row)
                    need -= row[4]
                    if need <= 0:
                        break
                conn.executemany("DELETE FROM outbox WHERE id=?", [(r[0],) for r in chosen])
                if spare is not None:
                    spare -= len(chosen)
                    self.floor_held += spare <= 0
                if victim_lane != RESEND_LANE:  # copies: the archive still has them
                    self._tally(conn, chosen)
            if need <= 0:
                return True
        if lane >= 2:
            return False
        self.over_quota += 1
        if self.over_quota == 1 or self.over_quota % 100 == 0:
            log.error("journal over quota by %d bytes with only accidents and the event floor "
                      "left; "
                      "storing lane %d anyway (%d such stores)", need, lane, self.over_quota)
        return True

    @staticmethod
    def _lane_count(conn: sqlite3.Connection, lane: int) -> int:
        row = conn.execute("SELECT count FROM outbox_lane WHERE lane=?", (lane,)).fetchone()
        return int(row[0]) if row else 0

    def _tally(self, conn: sqlite3.Connection, rows: Sequence[tuple[Any, ...]]) -> None:
        row = conn.execute("SELECT value FROM kv WHERE key=?", (EVICTIONS_KEY,)).fetchone()
        tally = json.loads(row[0]) if row else _empty_tally()
        seqs = []
        for _rid, lane, seq, type_, size in rows:
            tally["count"] += 1
            tally["bytes"] += size
            tally["lanes"][str(lane)] = tally["lanes"].get(str(lane), 0) + 1
            tally["types"][type_] = tally["types"].get(type_, 0) + 1
            seqs.append(seq)
        tally["first_seq"] = min([s for s in (tally["first_seq"], *seqs) if s is not None])
        tally["last_seq"] = max([s for s in (tally["last_seq"], *seqs) if s is not None])
        tally["seq_ranges"] = _merge_ranges(tally["seq_ranges"], seqs)
        if len(tally["seq_ranges"]) > MAX_RANGES:
            tally["seq_ranges"] = tally["seq_ranges"][-MAX_RANGES:]
            tally["ranges_truncated"] = True
        self.db.put_in(EVICTIONS_KEY, tally)
        self.evicted += len(rows)
        self._evictions_pending = True


class Reserve:
    """Space kept for accident records: a preallocated file, released on a full disk.

    SQLite needs free blocks for its WAL and pages; when the file system is full, deleting
    this file gives them back at once, so the accident lanes still commit (and survive a
    reset, which records held in memory would not)."""

    def __init__(self, path: Path | None, size: int):
        self.path = path
        self.size = size
        self.released = False
        self.used = 0                 # times released for the accident lanes
        self.used_unreported = 0      # of which not yet in a journal.evicted record

    def take(self) -> bool:
        """Make sure the reserve exists (when there is room for it and then some)."""
        if self.path is None or self.size <= 0:
            return False
        try:
            if self.path.exists() and self.path.stat().st_size >= self.size:
                self.released = False
                return True
            if shutil.disk_usage(self.path.parent).free < 2 * self.size:
                return False
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)   # real blocks, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("journal reserve %s not taken: %s", self.path, exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        self.released = False
        return True

    def release(self) -> bool:
        """Give the space back for the accident lanes; False if there was none."""
        if self.path is None or not self.path.exists():
            return False
        try:
            self.path.unlink()
        except OSError:
            return False
        self.released = True
        self.used += 1
        self.used_unreported += 1
        log.error("disk full: journal reserve %s released for accident records", self.path)
        return True


def _empty_tally() -> dict[str, Any]:
    return {"count": 0, "bytes": 0, "lanes": {}, "types": {}, "first_seq": None,
            "last_seq": None, "seq_ranges": []}


def _merge_ranges(ranges: list[list[int]], seqs: Iterable[int]) -> list[list[int]]:
    """Sorted, merged ``[first, last]`` seq ranges (the backend explains its gaps with them)."""
    items = sorted([list(r) for r in ranges] + [[s, s] for s in seqs])
    out: list[list[int]] = []
    for first, last in items:
        if out and first <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], last)
        else:
            out.append([first, last])
    return out
