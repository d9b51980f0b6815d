"""Where reports read from: the agent's state database (read-only) and exported records.

The state db is ``<state dir>/state.db``: the ``kv`` table holds the persisted statistics,
the ``outbox`` table the records not yet acknowledged by the backend. A records file is
JSON lines as ``icv-agent analyze`` or an export prints them.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from agent.config import AgentConfig, StateConfig, VehicleConfig
from agent.settings_loader import ConfigError, Problems, build, read_toml

STATE_DB = "state.db"


class ReportError(Exception):
    """The report cannot be made from what is stored (no db, no such period or accident)."""


def load_light_config(path: Path) -> AgentConfig:
    """``[vehicle]`` and ``[state]`` of an agent config: reports need no DBC or bus."""
    problems = Problems()
    table = read_toml(path, problems)
    if table is None:
        raise ConfigError(problems)
    vehicle = build(VehicleConfig, table.get("vehicle", {}), path, problems, "vehicle")
    state = build(StateConfig, table.get("state", {}), path, problems, "state")
    if problems:
        raise ConfigError(problems)
    cfg = AgentConfig(vehicle=vehicle, bus=[], state=state)
    cfg.path = path
    return cfg


class StateStore:
    """Read-only view of a state db; a missing file is an empty store."""

    def __init__(self, path: Path):
        self.path = path
        self.conn: sqlite3.Connection | None = None
        if path.exists():
            try:
                self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
                self.conn.execute("SELECT 1 FROM sqlite_master").fetchall()
            except sqlite3.Error as exc:
                raise ReportError(f"{path}: cannot read the state db: {exc}") from None

    def _has(self, table: str) -> bool:
        if self.conn is None:
            return False
        row = self.conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                                (table,)).fetchone()
        return row is not None

    def get(self, key: str, default: Any = None) -> Any:
        if not self._has("kv"):
            return default
        assert self.conn is not None
        row = self.conn.execute("SELECT value FROM kv WHERE key=?", (key,)).fetchone()
        if row is None:
            return default
        try:
            return json.loads(row[0])
        except ValueError:
            raise ReportError(f"{self.path}: kv {key!r} is not JSON") from None

    def records(self, types: Iterable[str]) -> list[dict[str, Any]]:
        """Records of ``types`` still in the outbox (acknowledged ones have left it)."""
        if not self._has("outbox"):
            return []
        assert self.conn is not None
        wanted = list(types)
        marks = ",".join("?" * len(wanted))
        rows = self.conn.execute(
            f"SELECT payload FROM outbox WHERE type IN ({marks}) ORDER BY seq", wanted)
        out = []
        for (payload,) in rows:
            try:
                out.append(json.loads(bytes(payload).decode("utf-8")))
            except (ValueError, UnicodeDecodeError):
                continue
        return out

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


def read_records(path: Path, types: Iterable[str]) -> tuple[list[dict[str, Any]], int]:
    """Records of ``types`` from a JSONL file, and the number of unreadable lines."""
    wanted = set(types)
    out: list[dict[str, Any]] = []
    bad = 0
    try:
        lines: Iterator[str] = iter(path.read_text("utf-8").splitlines())
    except (OSError, UnicodeDecodeError) as exc:
        raise ReportError(f"{path}: {exc}") from None
    for line in lines:
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(rec, dict) and rec.get("type") in wanted and isinstance(
                rec.get("data"), dict):
            out.append(rec)
    return out, bad
