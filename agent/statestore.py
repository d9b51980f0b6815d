"""The agent's one SQLite database on the state directory.

Sequence counter, chain head, lockout timers, period statistics and (with the journal)
the outbox all live here, so one transaction can move them together: a record and the
chain head it advances are committed atomically or not at all.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
"""


class StateDB:
    """Thread-confined SQLite connection with a small JSON key/value table.

    ``path=None`` gives an in-memory database (offline analyze: same input, same output,
    nothing left behind). ``synchronous=FULL`` in WAL mode makes a commit durable once
    it returns: that is the moment a record counts as stored.
    """

    def __init__(self, path: Path | str | None, *, synchronous: str = "FULL"):
        self.path = Path(path) if path is not None else None
        target = ":memory:" if path is None else str(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(target, isolation_level=None, check_same_thread=False)
        self.lock = threading.RLock()
        if self.path is not None:
            self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute(f"PRAGMA synchronous={synchronous}")
        # A small page cache: the working set is the outbox tail and a few kv rows, and
        # every connection's cache is resident memory on a unit with a 40 MB budget.
        self.conn.execute("PRAGMA cache_size=-512")
        self.conn.executescript(SCHEMA)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic, durable unit: everything written inside commits together or not at all."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.abort()  # SQLITE_FULL may already have rolled back: no second error
                raise
            try:
                self.conn.execute("COMMIT")
            except BaseException:
                self.abort()  # a failed COMMIT leaves the transaction open
                raise

    def get(self, key: str, default: Any = None) -> Any:
        with self.lock:
            row = self.conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def put(self, key: str, value: Any) -> None:
        """Set one key in its own transaction (use ``put_in`` inside a larger one)."""
        with self.transaction():
            self.put_in(key, value)

    def put_in(self, key: str, value: Any) -> None:
        self.conn.execute(
            "INSERT INTO kv(key, value) VALUES(?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value=excluded.value",
            (key, json.dumps(value, separators=(",", ":"), sort_keys=True)),
        )

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    def abort(self) -> None:
        """Roll back a transaction a failed COMMIT left open (e.g. SQLITE_FULL), if any."""
        with self.lock:
            if self.conn.in_transaction:
                try:
                    self.conn.execute("ROLLBACK")
                except sqlite3.OperationalError:
                    pass
