"""UTC timestamps as records carry them: ISO-8601, milliseconds, ``Z``."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

log = logging.getLogger(__name__)

# The times a CAN trace or the agent's clock can really carry. Anything else (NaN, inf,
# 1e300, years before 1970) is a damaged timestamp, and most of it cannot even be formatted.
EARLIEST = 0.0                          # 1970-01-01T00:00:00Z
LATEST = 7258118400.0                   # 2200-01-01T00:00:00Z, exclusive

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MIN = datetime.min.replace(tzinfo=timezone.utc)
_MAX = datetime.max.replace(tzinfo=timezone.utc)


def plausible(epoch: float) -> bool:
    """True for a finite UTC epoch in 1970..2200 (NaN compares false, so it is not)."""
    return EARLIEST <= epoch < LATEST


def iso_of_ms(ms: int) -> str:
    """Integer milliseconds since the epoch as ``YYYY-MM-DDTHH:MM:SS.mmmZ``: the one
    formatter of every timestamp a record, a command or an OTA record carries."""
    when = _EPOCH + timedelta(milliseconds=ms)
    # not strftime: %Y gives "1", not "0001", for year 1 on glibc
    return (f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:"
            f"{when.minute:02d}:{when.second:02d}.{when.microsecond // 1000:03d}Z")


def to_ms(epoch: float) -> int:
    """Epoch seconds to integer milliseconds, rounded once (so every place agrees)."""
    return round(epoch * 1000)


def iso_ms(epoch: float) -> str:
    """``epoch`` as ``YYYY-MM-DDTHH:MM:SS.mmmZ``.

    A value ``datetime`` cannot represent (NaN, inf, beyond years 1..9999) is a damaged
    input upstream; it is written as the nearest bound (NaN as the earliest) and logged, so
    one bad number cannot stop a record from being written.
    """
    try:
        return iso_of_ms(to_ms(epoch))
    except (ValueError, OverflowError):
        dt = _MAX if epoch > 0 else _MIN
        log.warning("timestamp %r cannot be represented; written as %s", epoch, dt.isoformat())
        return (f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}T{dt.hour:02d}:{dt.minute:02d}:"
                f"{dt.second:02d}.{dt.microsecond // 1000:03d}Z")


def parse_iso(text: str, *, zone_required: bool = False) -> float:
    """Epoch of an ISO-8601 time; ValueError for anything that is not one (or, with
    ``zone_required``, has no zone: a command must say which instant it means)."""
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if zone_required and when.tzinfo is None:
            raise ValueError(f"time without a zone: {text[:40]!r}")
        return when.timestamp()
    except OverflowError as exc:  # e.g. 9999-12-31T23:00:00-05:00
        raise ValueError(f"out of range: {text!r}") from exc
