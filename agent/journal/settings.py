"""Journal section of the agent config (``[journal]``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MIB = 1024 * 1024
COUNT = {"range": (0, None), "message": "must be 0 or more"}


@dataclass
class JournalConfig:
    # Disk quota of the outbox (payload bytes); when full the lowest lanes are evicted
    # first (4, then 3, then 2), never 0-1.
    quota_mb: float = 64.0
    # Events kept in memory after a failed commit (disk full) for the next attempt;
    # beyond it the lowest lanes are dropped and counted (accident events are always kept).
    hold_max: int = 10000
    # Disk space kept in reserve (a preallocated file next to the state database) for the
    # accident lanes: on a full disk it is released so accident records still become
    # durable, and taken again once space returns. 0 = no reserve.
    reserve_mb: float = 2.0
    # Records the broker acknowledged stay in an archive for re-sending on request
    # (``records.resend``: the backend lost them, e.g. a broker crash): bounded by size and
    # age; accident records are kept at least until their report window has closed.
    archive_mb: float = 16.0
    archive_days: float = 7.0
    # Storage floors (GB 44497 Type I as the design model: >= 5 collision events and
    # >= 2,500 timestamp events). The journal keeps room for this many accidents (lanes
    # 0-1, never evicted) and this many event records (lane 2: the newest ones are never
    # evicted for another lane's record, nor pruned from the archive of sent records).
    floor_accidents: int = field(default=5, metadata=COUNT)
    floor_events: int = field(default=2500, metadata=COUNT)
    # What one accident (its accident.trigger records plus its accident.record) and one
    # event record take, in payload bytes, for sizing the floors. Measured over the 42
    # scenarios (bench/bench_record_sizes.py, docs/journal.md "Storage floors"): the
    # largest accident 7,562 B, the largest event record 989 B. The defaults add a margin
    # (x4 for accidents: a live window holds far more samples than a scenario's; x1.5
    # for events). Raise them from a vehicle's own measured records.
    accident_bytes: int = field(default=32768, metadata=COUNT)
    event_bytes: int = field(default=1536, metadata=COUNT)


def floor_bytes(cfg: JournalConfig) -> int:
    """Payload bytes the floors need: what ``quota_mb`` must at least hold."""
    return cfg.floor_accidents * cfg.accident_bytes + cfg.floor_events * cfg.event_bytes


def check_journal(cfg: JournalConfig, path: Path | str, problems: Any) -> None:
    """Refuse a quota that cannot hold the floors (and a reserve too small for one accident);
    each field's own range is declared on it (``agent.settings_loader``)."""
    need = floor_bytes(cfg)
    if cfg.quota_mb * MIB < need:
        problems.add(path, "journal.quota_mb",
                     f"{cfg.quota_mb:g} MiB cannot hold the storage floors: "
                     f"{cfg.floor_accidents} accidents x {cfg.accident_bytes} B + "
                     f"{cfg.floor_events} event records x {cfg.event_bytes} B = "
                     f"{need / MIB:.2f} MiB (raise quota_mb)")
    if 0 < cfg.reserve_mb * MIB < cfg.accident_bytes:
        problems.add(path, "journal.reserve_mb",
                     f"{cfg.reserve_mb:g} MiB is less than one accident "
                     f"({cfg.accident_bytes} B): on a full disk it could not take one")
