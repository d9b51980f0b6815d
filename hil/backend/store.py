"""The backend's SQLite file: verified records, vehicles, rejections, alarms, responses.

Records arrive in lane order (accidents first), not in seq order, and a re-sent record may
arrive long after the original. So nothing about the chain is decided from arrival order:
each new record is linked against whatever neighbours (seq-1, seq+1) are already stored,
and the summary re-checks the whole chain over the stored records ordered by seq.

The paho thread writes, any thread may read a summary: one connection behind a lock.
WAL with ``synchronous=NORMAL``: a record is stored before paho sends its PUBACK (the
message callback returns after the COMMIT), so a crashed backend never loses a record the
broker has let go of; a power cut may undo the last commits of this bench tool.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.journal.outbox import lane_of
from agent.records.chain import ZERO_HASH
from agent.statestore import StateDB

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS records (
        id          TEXT PRIMARY KEY,
        vin         TEXT NOT NULL,
        seq         INTEGER NOT NULL,
        type        TEXT NOT NULL,
        lane        INTEGER NOT NULL,
        ts          TEXT NOT NULL,
        received_at REAL NOT NULL,
        arrival     INTEGER NOT NULL,
        hash        TEXT NOT NULL,
        prev_hash   TEXT NOT NULL,
        payload     TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS records_seq ON records(vin, seq)",
    "CREATE INDEX IF NOT EXISTS records_arrival ON records(vin, arrival)",
    """CREATE TABLE IF NOT EXISTS vehicles (
        vin            TEXT PRIMARY KEY,
        key_id         TEXT,
        status         TEXT,
        status_at      REAL,
        first_received REAL,
        last_received  REAL,
        duplicates     INTEGER NOT NULL DEFAULT 0)""",
    """CREATE TABLE IF NOT EXISTS rejections (
        at        REAL NOT NULL,
        vin       TEXT NOT NULL,
        topic     TEXT NOT NULL,
        reason    TEXT NOT NULL,
        detail    TEXT NOT NULL,
        record_id TEXT,
        seq       INTEGER,
        sample    TEXT)""",
    "CREATE INDEX IF NOT EXISTS rejections_vin ON rejections(vin)",
    """CREATE TABLE IF NOT EXISTS alarms (
        at        REAL NOT NULL,
        vin       TEXT NOT NULL,
        kind      TEXT NOT NULL,
        seq       INTEGER,
        record_id TEXT,
        detail    TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS alarms_vin ON alarms(vin)",
    """CREATE TABLE IF NOT EXISTS responses (
        at      REAL NOT NULL,
        vin     TEXT NOT NULL,
        name    TEXT NOT NULL,
        payload TEXT NOT NULL)""",
)

SAMPLE = 2048           # bytes of a rejected payload kept for whoever investigates
MAX_VIN = 64            # a topic segment used as VIN in rejections is cut to this

# What ``add`` made of a record
STORED, DUPLICATE, CONFLICT = "stored", "duplicate", "id_conflict"
# Alarm kinds
ALARMS = ("id_conflict", "chain_broken", "seq_conflict")


@dataclass
class Added:
    outcome: str                                   # STORED, DUPLICATE or CONFLICT
    alarms: list[tuple[str, int | None, str]] = field(default_factory=list)


Range = tuple[int, int]


@dataclass
class VehicleSummary:
    """What the backend knows about one vehicle (every field is JSON-friendly)."""

    vin: str
    key_id: str | None = None
    status: str | None = None                      # "online" / "offline" (retained)
    status_at: float | None = None
    records: int = 0                               # distinct records stored
    types: dict[str, int] = field(default_factory=dict)
    first_seq: int | None = None
    last_seq: int | None = None
    gaps: list[Range] = field(default_factory=list)      # missing and not explained
    evicted: list[Range] = field(default_factory=list)   # missing, told by journal.evicted
    chain: str = "empty"                           # "intact", "broken at seq N", "empty"
    broken_at: int | None = None
    links_checked: int = 0
    seq_conflicts: list[int] = field(default_factory=list)
    duplicates: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    alarms: dict[str, int] = field(default_factory=dict)
    lane_order: str = "empty"                      # "kept" or "violated at seq N"
    lane_violations: int = 0
    lane_violation_first: str | None = None
    overtakes: int = 0                             # urgent records sent before older ones
    responses: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def ok(self) -> bool:
        """Nothing wrong: intact chain, no unexplained gap, no alarm, no rejection."""
        return (self.chain in ("intact", "empty") and not self.gaps and not self.alarms
                and not self.rejected and self.lane_violations == 0)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out["gaps"] = [list(r) for r in self.gaps]
        out["evicted"] = [list(r) for r in self.evicted]
        out["ok"] = self.ok
        return out


def missing_ranges(seqs: list[int], last: int) -> list[Range]:
    """Ranges of 1..last that are not in the sorted, distinct ``seqs``."""
    out: list[Range] = []
    expected = 1
    for seq in seqs:
        if seq > expected:
            out.append((expected, seq - 1))
        expected = max(expected, seq + 1)
    if last >= expected:
        out.append((expected, last))
    return out


def subtract(ranges: list[Range], cut: list[Range]) -> tuple[list[Range], list[Range]]:
    """Split ``ranges`` into (the parts outside ``cut``, the parts inside ``cut``)."""
    outside: list[Range] = []
    inside: list[Range] = []
    cut = sorted(cut)
    for first, last in ranges:
        pos = first
        for c_first, c_last in cut:
            if c_last < pos or c_first > last:
                continue
            if c_first > pos:
                outside.append((pos, c_first - 1))
            inside.append((max(pos, c_first), min(last, c_last)))
            pos = min(last, c_last) + 1
            if pos > last:
                break
        if pos <= last:
            outside.append((pos, last))
    return outside, inside


class BackendStore:
    """One SQLite file of the bench backend."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The agent's own SQLite wrapper: WAL, one lock, transactions that survive SQLITE_FULL.
        self.db = StateDB(self.path, synchronous="NORMAL")
        self.conn, self.lock, self.transaction = self.db.conn, self.db.lock, self.db.transaction
        self.conn.execute("PRAGMA busy_timeout=5000")
        with self.transaction() as conn:
            for statement in SCHEMA:
                conn.execute(statement)
        row = self.conn.execute("SELECT COALESCE(MAX(arrival), 0) FROM records").fetchone()
        self._arrival = int(row[0])

    def close(self) -> None:
        self.db.close()

    # -- writing (the receiver) ------------------------------------------------------

    def add(self, record: dict[str, Any], text: str, key_id: str,
            received_at: float | None = None) -> Added:
        """Store a verified record unless its ``id`` is known; link it to its neighbours."""
        at = time.time() if received_at is None else received_at
        vin, seq, rid = record["vin"], record["seq"], record["id"]
        with self.transaction() as conn:
            self._vehicle(conn, vin, key_id)
            conn.execute("UPDATE vehicles SET last_received=?, first_received="
                         "COALESCE(first_received, ?) WHERE vin=?", (at, at, vin))
            row = conn.execute("SELECT hash FROM records WHERE id=?", (rid,)).fetchone()
            if row is not None:
                if row[0] == record["hash"]:
                    conn.execute("UPDATE vehicles SET duplicates = duplicates + 1 WHERE vin=?",
                                 (vin,))
                    return Added(DUPLICATE)
                detail = (f"id {rid} seq {seq} arrived again with another hash "
                          f"({record['hash'][:16]}, stored {row[0][:16]})")
                self._alarm(conn, at, vin, CONFLICT, seq, rid, detail)
                return Added(CONFLICT, [(CONFLICT, seq, detail)])
            added = Added(STORED)
            for other_id, other_hash in conn.execute(
                    "SELECT id, hash FROM records WHERE vin=? AND seq=?", (vin, seq)):
                detail = (f"seq {seq} already stored as id {other_id} (hash "
                          f"{other_hash[:16]}); chain restarted?")
                added.alarms.append(("seq_conflict", seq, detail))
            prev = conn.execute("SELECT hash FROM records WHERE vin=? AND seq=? "
                                "ORDER BY arrival LIMIT 1", (vin, seq - 1)).fetchone()
            if seq == 1 and record["prev_hash"] != ZERO_HASH:
                added.alarms.append(("chain_broken", seq,
                                     "seq 1 does not start from the all-zero prev_hash"))
            elif prev is not None and prev[0] != record["prev_hash"]:
                added.alarms.append(("chain_broken", seq,
                                     f"seq {seq}: prev_hash does not match stored seq {seq - 1}"))
            nxt = conn.execute("SELECT prev_hash FROM records WHERE vin=? AND seq=? "
                               "ORDER BY arrival LIMIT 1", (vin, seq + 1)).fetchone()
            if nxt is not None and nxt[0] != record["hash"]:
                added.alarms.append(("chain_broken", seq + 1,
                                     f"stored seq {seq + 1}: prev_hash does not match seq {seq}"))
            self._arrival += 1
            conn.execute(
                "INSERT INTO records(id, vin, seq, type, lane, ts, received_at, arrival, hash, "
                "prev_hash, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (rid, vin, seq, record["type"], lane_of(record["type"]), record["ts"], at,
                 self._arrival, record["hash"], record["prev_hash"], text))
            for kind, alarm_seq, detail in added.alarms:
                self._alarm(conn, at, vin, kind, alarm_seq, rid, detail)
            return added

    def reject(self, vin: str, topic: str, reason: str, detail: str, payload: bytes, *,
               record: dict[str, Any] | None = None, received_at: float | None = None) -> None:
        at = time.time() if received_at is None else received_at
        rid = record.get("id") if record else None
        seq = record.get("seq") if record else None
        with self.transaction() as conn:
            conn.execute(
                "INSERT INTO rejections(at, vin, topic, reason, detail, record_id, seq, sample)"
                " VALUES (?,?,?,?,?,?,?,?)",
                (at, vin[:MAX_VIN], topic[:256], reason, detail[:500],
                 rid[:64] if isinstance(rid, str) else None,
                 seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
                 payload[:SAMPLE].decode("utf-8", "replace")))

    def set_status(self, vin: str, status: str, at: float | None = None) -> None:
        with self.transaction() as conn:
            self._vehicle(conn, vin[:MAX_VIN], None)
            conn.execute("UPDATE vehicles SET status=?, status_at=? WHERE vin=?",
                         (status[:32], time.time() if at is None else at, vin[:MAX_VIN]))

    def add_response(self, vin: str, name: str, payload: str, at: float | None = None) -> None:
        with self.transaction() as conn:
            conn.execute("INSERT INTO responses(at, vin, name, payload) VALUES (?,?,?,?)",
                         (time.time() if at is None else at, vin[:MAX_VIN], name[:120],
                          payload[:65536]))

    def _vehicle(self, conn: sqlite3.Connection, vin: str, key_id: str | None) -> None:
        conn.execute("INSERT OR IGNORE INTO vehicles(vin) VALUES (?)", (vin,))
        if key_id is not None:
            conn.execute("UPDATE vehicles SET key_id=? WHERE vin=?", (key_id, vin))

    def _alarm(self, conn: sqlite3.Connection, at: float, vin: str, kind: str,
               seq: int | None, rid: str | None, detail: str) -> None:
        conn.execute("INSERT INTO alarms(at, vin, kind, seq, record_id, detail) "
                     "VALUES (?,?,?,?,?,?)", (at, vin, kind, seq, rid, detail))

    # -- reading ---------------------------------------------------------------------

    def vins(self) -> list[str]:
        with self.lock:
            rows = self.conn.execute(
                "SELECT vin FROM vehicles UNION SELECT vin FROM rejections ORDER BY 1").fetchall()
        return [r[0] for r in rows]

    def records(self, vin: str) -> list[dict[str, Any]]:
        """The stored records of ``vin`` ordered by seq (as they arrived, byte for byte)."""
        with self.lock:
            rows = self.conn.execute("SELECT payload FROM records WHERE vin=? "
                                     "ORDER BY seq, arrival", (vin,)).fetchall()
        return [json.loads(r[0]) for r in rows]

    def ids(self, vin: str | None = None) -> set[str]:
        with self.lock:
            if vin is None:
                rows = self.conn.execute("SELECT id FROM records").fetchall()
            else:
                rows = self.conn.execute("SELECT id FROM records WHERE vin=?", (vin,)).fetchall()
        return {r[0] for r in rows}

    def alarms(self, vin: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            sql = "SELECT at, vin, kind, seq, record_id, detail FROM alarms"
            rows = self.conn.execute(sql + (" WHERE vin=?" if vin else "") + " ORDER BY rowid",
                                     (vin,) if vin else ()).fetchall()
        return [dict(zip(("at", "vin", "kind", "seq", "record_id", "detail"), r, strict=True))
                for r in rows]

    def rejections(self, vin: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            sql = "SELECT at, vin, topic, reason, detail, record_id, seq FROM rejections"
            rows = self.conn.execute(sql + (" WHERE vin=?" if vin else "") + " ORDER BY rowid",
                                     (vin,) if vin else ()).fetchall()
        keys = ("at", "vin", "topic", "reason", "detail", "record_id", "seq")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def responses(self, vin: str | None = None) -> list[dict[str, Any]]:
        with self.lock:
            sql = "SELECT at, vin, name, payload FROM responses"
            rows = self.conn.execute(sql + (" WHERE vin=?" if vin else "") + " ORDER BY rowid",
                                     (vin,) if vin else ()).fetchall()
        return [{"at": r[0], "vin": r[1], "name": r[2], "payload": r[3]} for r in rows]

    def summary(self, vin: str) -> VehicleSummary:
        with self.lock:
            return self._summary(vin)

    def summaries(self) -> list[VehicleSummary]:
        with self.lock:
            return [self._summary(vin) for vin in self.vins()]

    def _summary(self, vin: str) -> VehicleSummary:
        conn = self.conn
        s = VehicleSummary(vin)
        row = conn.execute("SELECT key_id, status, status_at, duplicates FROM vehicles "
                           "WHERE vin=?", (vin,)).fetchone()
        if row is not None:
            s.key_id, s.status, s.status_at, s.duplicates = row
        s.types = dict(conn.execute("SELECT type, COUNT(*) FROM records WHERE vin=? "
                                    "GROUP BY type ORDER BY type", (vin,)).fetchall())
        s.records = sum(s.types.values())
        s.rejected = dict(conn.execute("SELECT reason, COUNT(*) FROM rejections WHERE vin=? "
                                       "GROUP BY reason ORDER BY reason", (vin,)).fetchall())
        s.alarms = dict(conn.execute("SELECT kind, COUNT(*) FROM alarms WHERE vin=? "
                                     "GROUP BY kind ORDER BY kind", (vin,)).fetchall())
        s.responses = conn.execute("SELECT COUNT(*) FROM responses WHERE vin=?",
                                   (vin,)).fetchone()[0]
        if s.records == 0:
            return s
        self._chain(conn, s)
        self._lanes(conn, s)
        return s

    def _chain(self, conn: sqlite3.Connection, s: VehicleSummary) -> None:
        """Seq range, gaps (explained by journal.evicted or not) and every checkable link."""
        by_seq: dict[int, tuple[str, str]] = {}     # seq -> (hash, prev_hash), first arrival
        for seq, hash_, prev_hash in conn.execute(
                "SELECT seq, hash, prev_hash FROM records WHERE vin=? ORDER BY seq, arrival",
                (s.vin,)):
            if seq in by_seq:
                if not s.seq_conflicts or s.seq_conflicts[-1] != seq:
                    s.seq_conflicts.append(seq)
                continue
            by_seq[seq] = (hash_, prev_hash)
        seqs = sorted(by_seq)
        s.first_seq, s.last_seq = seqs[0], seqs[-1]
        evicted: list[Range] = []
        for (payload,) in conn.execute("SELECT payload FROM records WHERE vin=? AND "
                                       "type='journal.evicted'", (s.vin,)):
            ranges = json.loads(payload).get("data", {}).get("seq_ranges") or []
            evicted += [(int(r[0]), int(r[1])) for r in ranges
                        if isinstance(r, list) and len(r) == 2
                        and all(isinstance(x, int) for x in r)]
        s.gaps, s.evicted = subtract(missing_ranges(seqs, s.last_seq), evicted)
        broken: int | None = None
        for seq in seqs:
            hash_, prev_hash = by_seq[seq]
            if seq == 1:
                s.links_checked += 1
                if prev_hash != ZERO_HASH and broken is None:
                    broken = seq
            elif seq - 1 in by_seq:
                s.links_checked += 1
                if by_seq[seq - 1][0] != prev_hash and broken is None:
                    broken = seq
        s.broken_at = broken
        s.chain = "intact" if broken is None else f"broken at seq {broken}"

    def _lanes(self, conn: sqlite3.Connection, s: VehicleSummary) -> None:
        """Lane order as the backend can judge it from first arrivals.

        A record stored earlier (lower seq) in a lane at least as urgent must have been in
        the outbox whenever a later one was published, so it must arrive first: anything
        else is a violation. The reverse, a more urgent record arriving before older,
        less urgent ones, is the lanes doing their job (counted as ``overtakes``).
        """
        rows = conn.execute("SELECT seq, lane FROM records WHERE vin=? ORDER BY arrival",
                            (s.vin,)).fetchall()
        top = [0] * 5                   # highest seq seen so far per lane
        for seq, lane in rows:
            worst = max(top[lane:])
            if worst > seq:
                s.lane_violations += 1
                if s.lane_violation_first is None:
                    culprit = max(range(lane, 5), key=lambda i: top[i])
                    s.lane_violation_first = (f"seq {seq} (lane {lane}) arrived after seq "
                                              f"{worst} (lane {culprit})")
            top[lane] = max(top[lane], seq)
        low = [None] * 5                # lowest seq arriving later, per lane
        for seq, lane in reversed(rows):
            if any(v is not None and v < seq for v in low[lane + 1:]):
                s.overtakes += 1
            if low[lane] is None or seq < low[lane]:
                low[lane] = seq
        s.lane_order = ("kept" if s.lane_violations == 0 else
                        f"violated {s.lane_violations}x: {s.lane_violation_first}")
