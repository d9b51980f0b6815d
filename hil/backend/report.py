"""Per-vehicle summaries as text for people and JSON for scripts."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timezone

from hil.backend.store import Range, VehicleSummary

MAX_RANGES_SHOWN = 12


def ranges_text(ranges: list[Range]) -> str:
    if not ranges:
        return "none"
    parts = [str(a) if a == b else f"{a}..{b}" for a, b in ranges[:MAX_RANGES_SHOWN]]
    if len(ranges) > MAX_RANGES_SHOWN:
        parts.append(f"... ({len(ranges) - MAX_RANGES_SHOWN} more)")
    missing = sum(b - a + 1 for a, b in ranges)
    return f"{', '.join(parts)} ({missing} missing)"


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in counts.items()) if counts else "none"


def _when(at: float | None) -> str:
    if at is None:
        return ""
    return " since " + datetime.fromtimestamp(at, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_summary(s: VehicleSummary) -> str:
    seq = f"seq {s.first_seq}..{s.last_seq}" if s.records else "no records"
    lines = [
        f"{s.vin}  {'OK' if s.ok else 'PROBLEMS'}  status {s.status or 'unknown'}"
        f"{_when(s.status_at)}  key {s.key_id or '-'}",
        f"  records     {s.records} ({seq})",
        f"  types       {_counts(s.types)}",
        f"  gaps        {ranges_text(s.gaps)}",
    ]
    if s.evicted:
        lines.append(f"  evicted     {ranges_text(s.evicted)} (told by journal.evicted)")
    chain = s.chain
    if s.records:
        chain += f" ({s.links_checked} links checked)"
    if s.seq_conflicts:
        chain += f"; seq stored twice with other ids: {s.seq_conflicts[:10]}"
    lines += [
        f"  chain       {chain}",
        f"  lane order  {s.lane_order} ({s.overtakes} records overtook older, "
        "less urgent ones)" if s.records else "  lane order  -",
        f"  duplicates  {s.duplicates}",
        f"  rejected    {s.rejected_total} ({_counts(s.rejected)})",
        f"  alarms      {sum(s.alarms.values())} ({_counts(s.alarms)})",
        f"  responses   {s.responses}",
    ]
    return "\n".join(lines)


def format_summaries(summaries: Iterable[VehicleSummary]) -> str:
    items = list(summaries)
    if not items:
        return "no vehicles seen"
    return "\n\n".join(format_summary(s) for s in items)


def summaries_json(summaries: Iterable[VehicleSummary]) -> str:
    return json.dumps({"vehicles": [s.to_dict() for s in summaries]}, indent=2,
                      ensure_ascii=False)
