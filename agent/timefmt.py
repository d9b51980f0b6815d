"""UTC timestamps as records carry them: ISO-8601, milliseconds, ``Z``."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_ms(epoch: float) -> str:
    dt = datetime.fromtimestamp(round(epoch, 3), tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
