"""Journal section of the agent config (``[journal]``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class JournalConfig:
    # Disk quota of the outbox (payload bytes); when full the lowest lanes are evicted
    # first (4, then 3, then 2), never 0-1.
    quota_mb: float = 64.0
    # Group commit: records arriving within this window share one fsync (0 = one each).
    group_commit_ms: float = 0.0
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
