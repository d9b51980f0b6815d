"""OTA history: one entry per activity (consent, versions before/after, result), chained.

Each entry carries ``prev_hash`` and ``hash`` = SHA-256 over the canonical JSON of the entry
without ``hash`` (RFC 8785 canonical JSON, UTF-8), like the event records, so a removed,
changed or re-ordered entry breaks the chain (``verify``). Kept in the state database
(table ``ota_history``) so it survives restarts and travels with the journal.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from agent.jcs import canonical_json
from agent.statestore import StateDB

GENESIS = "0" * 64
SCHEMA = """CREATE TABLE IF NOT EXISTS ota_history (
    n           INTEGER PRIMARY KEY,
    activity_id TEXT NOT NULL,
    entry       TEXT NOT NULL
)"""


def canonical(entry: dict[str, Any]) -> bytes:
    """The hashed bytes: the entry without ``hash``, RFC 8785 canonical JSON as records."""
    return canonical_json({k: v for k, v in entry.items() if k != "hash"})


def entry_hash(entry: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(entry)).hexdigest()


@dataclass
class ChainReport:
    ok: bool
    entries: int
    reason: str = ""


class OtaHistory:
    def __init__(self, db: StateDB):
        self.db = db
        with db.lock:
            db.conn.execute(SCHEMA)

    def append(self, entry: dict[str, Any]) -> dict[str, Any]:
        """Chain ``entry`` (needs ``activity_id``) to the last one and store it durably."""
        if not entry.get("activity_id"):
            raise ValueError("a history entry needs an activity_id")
        with self.db.transaction() as conn:
            row = conn.execute("SELECT n, entry FROM ota_history ORDER BY n DESC LIMIT 1"
                               ).fetchone()
            prev = json.loads(row[1])["hash"] if row else GENESIS
            n = row[0] + 1 if row else 1
            out = {**entry, "n": n, "prev_hash": prev}
            out["hash"] = entry_hash(out)
            conn.execute("INSERT INTO ota_history(n, activity_id, entry) VALUES (?,?,?)",
                         (n, out["activity_id"], json.dumps(out, sort_keys=True)))
        return out

    def entries(self) -> list[dict[str, Any]]:
        with self.db.lock:
            rows = self.db.conn.execute("SELECT entry FROM ota_history ORDER BY n").fetchall()
        return [json.loads(r[0]) for r in rows]

    def find(self, activity_id: str) -> dict[str, Any] | None:
        with self.db.lock:
            row = self.db.conn.execute(
                "SELECT entry FROM ota_history WHERE activity_id=? ORDER BY n DESC LIMIT 1",
                (activity_id,)).fetchone()
        return json.loads(row[0]) if row else None

    def verify(self) -> ChainReport:
        return verify_entries(self.entries())


def verify_entries(entries: list[dict[str, Any]]) -> ChainReport:
    prev = GENESIS
    for i, entry in enumerate(entries, 1):
        if entry.get("n") != i:
            return ChainReport(False, len(entries), f"entry {i}: number {entry.get('n')!r}, "
                                                    f"expected {i} (removed or re-ordered)")
        if entry.get("prev_hash") != prev:
            return ChainReport(False, len(entries), f"entry {i}: prev_hash does not link to "
                                                    f"entry {i - 1}")
        if entry.get("hash") != entry_hash(entry):
            return ChainReport(False, len(entries), f"entry {i}: hash does not match its "
                                                    f"content (changed)")
        prev = entry["hash"]
    return ChainReport(True, len(entries))
