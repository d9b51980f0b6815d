"""Monitors' ``emit`` -> signed, chained records, committed in groups with monitor state.

Records produced while one batch of frames is processed are made and committed in ONE
transaction together with the small state the monitors asked to persist, then handed to
``deliver`` (stdout offline; the uplink live). A record is never delivered before the
commit that made it durable returned.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from typing import Any

from agent.journal.statedb import StateDB
from agent.records.chain import RecordChain

log = logging.getLogger(__name__)

Store = Callable[[Any, dict[str, Any]], None]   # store(conn, record) inside the transaction


class Recorder:
    def __init__(self, db: StateDB, chain: RecordChain, utc: Callable[[float], float],
                 time_source: str, *, store: Store | None = None,
                 deliver: Callable[[list[dict[str, Any]]], None] | None = None):
        self.db = db
        self.chain = chain
        self.utc = utc
        self.time_source = time_source
        self.store = store
        self.deliver = deliver
        self._events: list[tuple[str, dict[str, Any], float]] = []
        self._state: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.rejected = 0

    @property
    def pending(self) -> bool:
        return bool(self._events or self._state)

    def record(self, type_: str, data: dict[str, Any], t: float) -> None:
        self._events.append((type_, data, t))

    def persist(self, key: str, value: Any) -> None:
        self._state[key] = value
        self._cache[key] = value

    def load(self, key: str, default: Any = None) -> Any:
        if key in self._cache:
            return self._cache[key]
        return self.db.get(key, default)

    def flush(self) -> None:
        if not self._events and not self._state:
            return
        events, state = self._events, self._state
        self._events, self._state = [], {}
        made: list[dict[str, Any]] = []
        with self.db.transaction() as conn:
            for type_, data, t in events:
                try:
                    record = self.chain.make(type_, data, self.utc(t),
                                        time_source=self.time_source, mono=t)
                except ValueError as exc:  # e.g. NaN in data: a monitor bug, never a crash
                    self.rejected += 1
                    log.error("record %s dropped: %s", type_, exc)
                    continue
                if self.store is not None:
                    self.store(conn, record)
                made.append(record)
                self.counts[type_] = self.counts.get(type_, 0) + 1
            for key, value in state.items():
                self.db.put_in(key, value)
        if made and self.deliver is not None:
            self.deliver(made)


def finite(value: float, digits: int = 3) -> float | None:
    """Round for records; NaN/inf (a sensor glitch) become None rather than a bad record."""
    if value is None or not math.isfinite(value):
        return None
    return round(value, digits)
