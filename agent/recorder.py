"""Monitors' ``emit`` -> signed, chained records, committed with monitor state.

Records produced while one frame (or one housekeeping tick) is processed are made and
committed in ONE transaction together with the small state the monitors asked to persist,
at the pipeline's ``flush()`` after that frame, then handed to ``deliver`` (stdout offline;
the uplink live). A record is never delivered before the commit that made it durable
returned. There is no commit window across frames: each frame's records are durable
before the next frame is read.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from typing import Any

from agent.journal.outbox import Journal, is_disk_full, lane_of
from agent.records.chain import RecordChain
from agent.statestore import StateDB

log = logging.getLogger(__name__)

class Recorder:
    def __init__(self, db: StateDB, chain: RecordChain, utc: Callable[[float], float],
                 time_source: str, *, journal: Journal | None = None,
                 deliver: Callable[[list[dict[str, Any]]], None] | None = None,
                 retry_s: float = 1.0,
                 observe: Callable[[str, dict[str, Any]], Any] | None = None):
        self.db = db
        # Shown every record asked for; returns a (type, data) record that goes with it
        # (the security record of a refusal, agent.security), or None.
        self.observe = observe
        self.chain = chain
        self.utc = utc
        self.time_source = time_source
        self.journal = journal
        self.deliver = deliver
        self.retry_s = retry_s
        self._events: list[tuple[str, dict[str, Any], float]] = []
        self._state: dict[str, Any] = {}
        self._cache: dict[str, Any] = {}
        self._retry_at = 0.0
        self._last_t = 0.0
        self.counts: dict[str, int] = {}
        self.rejected = 0

    def record(self, type_: str, data: dict[str, Any], t: float) -> None:
        self._events.append((type_, data, t))
        if self.observe is not None:
            extra = self.observe(type_, data)
            if extra is not None:
                self._events.append((extra[0], extra[1], t))

    def persist(self, key: str, value: Any) -> None:
        self._state[key] = value
        self._cache[key] = value

    def load(self, key: str, default: Any = None) -> Any:
        if key in self._cache:
            return self._cache[key]
        return self.db.get(key, default)

    def flush(self) -> None:
        held = self.journal is not None and self.journal.held
        if not self._events and not self._state and not held:
            return
        if held:
            if time.monotonic() < self._retry_at:
                return  # storage failed recently: keep collecting, retry in a moment
            events = self.journal.take_held() + self._events
        else:
            events = self._events
        state = self._state
        self._events, self._state = [], {}
        try:
            made = self._commit(events, state)
        except sqlite3.OperationalError as exc:  # disk full, I/O error: never a crash
            self._state = {**state, **self._state}
            if self.journal is None:
                raise
            self.journal.hold(events, exc=exc)
            self._retry_at = time.monotonic() + self.retry_s
            made = self._accidents_into_reserve(exc)
        else:
            if self.journal is not None:
                self.journal.committed()
        if made and self.deliver is not None:
            self.deliver(made)

    def _accidents_into_reserve(self, exc: BaseException) -> list[dict[str, Any]]:
        """On a full disk, held accident events are committed in the journal's reserve,
        so a reset cannot lose them; the rest waits for space."""
        journal = self.journal
        assert journal is not None
        if not is_disk_full(exc):
            return []
        held = journal.take_held()
        urgent = [e for e in held if lane_of(e[0]) <= 1]
        if not urgent or not journal.reserve.release():
            journal.keep(held)
            return []
        try:
            made = self._commit(urgent, {})
        except sqlite3.OperationalError as again:
            journal.hold(held, exc=again)
            return []
        journal.committed()
        journal.keep([e for e in held if lane_of(e[0]) > 1])
        return made

    def _commit(self, events: list[tuple[str, dict[str, Any], float]],
                state: dict[str, Any]) -> list[dict[str, Any]]:
        made: list[dict[str, Any]] = []
        with self.db.transaction():
            for type_, data, t in events:
                record = self._make(type_, data, t)
                if record is not None:
                    made.append(record)
                    self._last_t = t
            if self.journal is not None:
                evicted = self.journal.take_evictions()
                if evicted is not None:
                    record = self._make("journal.evicted", evicted, self._last_t)
                    if record is not None:
                        made.append(record)
            for key, value in state.items():
                self.db.put_in(key, value)
        for record in made:
            self.counts[record["type"]] = self.counts.get(record["type"], 0) + 1
        return made

    def _make(self, type_: str, data: dict[str, Any], t: float) -> dict[str, Any] | None:
        try:
            record = self.chain.make(type_, data, self.utc(t), time_source=self.time_source,
                                     mono=t)
        except ValueError as exc:  # e.g. NaN in data: a monitor bug, never a crash
            self.rejected += 1
            log.error("record %s dropped: %s", type_, exc)
            return None
        if self.journal is not None:
            self.journal.store(record)
        return record
