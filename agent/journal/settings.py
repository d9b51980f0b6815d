"""Journal section of the agent config (``[journal]``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class JournalConfig:
    # Disk quota of the outbox; when full the lowest lanes are evicted first (never 0-1).
    quota_mb: float = 64.0
    # Group commit: records arriving within this window share one fsync (0 = one each).
    group_commit_ms: float = 0.0
