"""Open the state database; a corrupt one is set aside and replaced so the agent keeps going.

The bad file (with its ``-wal`` and ``-shm``) is renamed to ``<name>.corrupt-<UTC stamp>``,
never deleted: whoever services the unit can still try to salvage it. The caller learns
about it from the returned ``QuarantineInfo`` and writes a ``journal.quarantined`` record
into the fresh database, so the backend sees why the chain starts again.
"""

from __future__ import annotations

import logging
import os
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.statestore import StateDB

log = logging.getLogger(__name__)

SIDE_FILES = ("-wal", "-shm", "-journal")


@dataclass(frozen=True)
class QuarantineInfo:
    """What was set aside and why."""

    path: Path                          # the database path that is now fresh
    reason: str                         # the SQLite error or quick_check's first complaint
    stamp: str                          # UTC, e.g. 20250101T120000Z
    moved: list[Path] = field(default_factory=list)
    size: int = 0                       # bytes of the quarantined main file

    def record_data(self) -> dict[str, Any]:
        """``data`` of the ``journal.quarantined`` record."""
        return {"file": self.path.name, "reason": self.reason, "quarantined_at": self.stamp,
                "moved_to": [p.name for p in self.moved], "size": self.size}


class StateDBUnusable(Exception):
    """Even a fresh database cannot be created (read-only or failing storage)."""


def _check(db: StateDB) -> str | None:
    """None if the file is sound, else what quick_check (or SQLite) complained about."""
    try:
        with db.lock:
            rows = db.conn.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc)
    if rows == [("ok",)]:
        return None
    return "; ".join(str(r[0]) for r in rows[:5])


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def quarantine(path: Path, reason: str) -> QuarantineInfo:
    """Rename the database and its side files out of the way."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    size = path.stat().st_size if path.exists() else 0
    moved: list[Path] = []
    for suffix in ("", *SIDE_FILES):
        src = path.with_name(path.name + suffix)
        if not src.exists():
            continue
        dst = src.with_name(f"{src.name}.corrupt-{stamp}")
        n = 1
        while dst.exists():
            n += 1
            dst = src.with_name(f"{src.name}.corrupt-{stamp}.{n}")
        os.replace(src, dst)
        moved.append(dst)
    _fsync_dir(path.parent)
    log.error("state database %s is corrupt (%s); quarantined as %s and replaced",
              path, reason, ", ".join(p.name for p in moved))
    return QuarantineInfo(path, reason, stamp, moved, size)


def open_state_db(path: str | Path, **kwargs: Any) -> tuple[StateDB, QuarantineInfo | None]:
    """A sound ``StateDB`` at ``path`` plus what was quarantined to get it (or None)."""
    path = Path(path)
    reason: str | None
    db: StateDB | None = None
    try:
        db = StateDB(path, **kwargs)
        reason = _check(db)
    except sqlite3.DatabaseError as exc:
        reason = str(exc)
    if reason is None and db is not None:
        return db, None
    if db is not None:
        try:
            db.close()
        except sqlite3.Error:
            pass
    info = quarantine(path, reason or "unknown")
    try:
        fresh = StateDB(path, **kwargs)
        problem = _check(fresh)
    except sqlite3.DatabaseError as exc:
        raise StateDBUnusable(f"{path}: cannot create a fresh state database: {exc}") from exc
    if problem is not None:
        raise StateDBUnusable(f"{path}: fresh state database fails its check: {problem}")
    return fresh, info
