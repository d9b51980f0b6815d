"""The vehicle's contribution to the quarterly / annual event report (Att.3 二).

Base figures (hours and km with the system active, per function) and event counts of one
period, taken from what the statistics monitor persisted: a closed period from the closed
list or its ``stats.period`` record, the running quarter/year from the open totals (marked
``open`` with the time they are valid for).
"""

from __future__ import annotations

import re
from typing import Any

from agent.monitors.stats import CLOSED_KEY, OPEN_KEY, TOTAL, Totals
from agent.reports.store import ReportError

PERIOD = re.compile(r"^\d{4}(Q[1-4])?$")

# Att.3 二 event items -> statistics counts.
EVENTS = (
    ("risk_mitigation_triggered", "触发风险减缓功能", "cda.mrm"),
    ("exit_system_failure", "探测到系统失效导致的自动退出", "cda.deactivated.system_failure"),
    ("exit_system_boundary", "超出系统边界导致的自动退出", "cda.deactivated.odd_exit"),
)
OTHER = (
    ("exit_driver_disengaged", "cda.deactivated.driver_disengaged"),
    ("exit_mrm", "cda.deactivated.mrm"),
    ("aeb_during_use", "safety.aeb.cda_in_use"),
    ("elk_during_use", "safety.elk.cda_in_use"),
    ("fcw_during_use", "safety.fcw.cda_in_use"),
    ("accidents_during_use", "accident.cda_in_use"),
)


def check_period(period: str) -> str:
    if not PERIOD.match(period):
        raise ValueError(f"period {period!r}: expected YYYYQn (e.g. 2026Q3) or YYYY")
    return period


def find_period(period: str, *, closed: dict[str, Any] | None, open_totals: dict[str, Any] | None,
                records: list[dict[str, Any]]) -> tuple[dict[str, Any], str, str]:
    """The ``stats.period`` data of ``period``, its status and where it came from."""
    if closed and isinstance(closed.get(period), dict):
        return closed[period], "closed", f"state db ({CLOSED_KEY})"
    matching = [r for r in records if r["data"].get("period") == period]
    if matching:
        best = max(matching, key=lambda r: r.get("seq", 0))
        return best["data"], "closed", f"stats.period record seq {best.get('seq')}"
    if open_totals:
        for kind in ("quarter", "year"):
            totals = Totals.from_json(open_totals.get(kind))
            if totals is not None and totals.period == period:
                data = totals.record(str(open_totals.get("timezone", "")),
                                     odometer=bool(open_totals.get("odometer_mapped")),
                                     closed="open", as_of=float(open_totals.get("as_of", 0)))
                return data, "open", f"state db ({OPEN_KEY})"
    raise ReportError(f"no statistics for {period}: not among the closed periods, the "
                      "stats.period records or the running quarter/year")


def period_report(period: str, vin: str, data: dict[str, Any], status: str,
                  source: str, security: dict[str, int] | None = None) -> dict[str, Any]:
    active = data.get("active_s") or {}
    km = data.get("distance_km") or {}
    counts: dict[str, int] = data.get("counts") or {}
    functions = sorted(k for k in set(active) | set(km) if k != TOTAL)
    total_s = float(active.get(TOTAL, 0.0))
    return {
        "report": "Att.3 二 event report: contribution of one vehicle",
        "vin": vin,
        "period": period,
        "kind": data.get("kind", "year" if "Q" not in period else "quarter"),
        "start": data.get("start"),
        "end": data.get("end"),
        "timezone": data.get("timezone"),
        "status": status,
        "as_of": data.get("as_of"),
        "source": source,
        "base": {
            "vehicles_with_system": 1,
            "active_hours": round(total_s / 3600.0, 6),
            "active_s": total_s,
            "active_km": float(km.get(TOTAL, 0.0)),
            "odometer_km": (data.get("odometer_km") or {}).get(TOTAL),
            "by_function": {fn: {"active_s": float(active.get(fn, 0.0)),
                                 "active_hours": round(float(active.get(fn, 0.0)) / 3600, 6),
                                 "km": float(km.get(fn, 0.0))} for fn in functions},
        },
        "events": {
            **{key: int(counts.get(count, 0)) for key, _zh, count in EVENTS},
            "other": {key: int(counts.get(count, 0)) for key, count in OTHER},
        },
        "counts": counts,
        # GB 44495 security events of the period, per kind (agent.security).
        "security_events": dict(security or {}),
    }


def period_text(report: dict[str, Any]) -> str:
    base = report["base"]
    lines = [
        f"事件报告 (Att.3 二) — vehicle {report['vin']}, period {report['period']} "
        f"({report['start']} .. {report['end']}, {report['timezone']})",
        f"status: {report['status']}" + (f", as of {report['as_of']}" if report['as_of'] else "")
        + f"; source: {report['source']}",
        "",
        "基本信息 base figures",
        f"  vehicles with the system        {base['vehicles_with_system']:>12}",
        f"  hours with the system active    {base['active_hours']:>12.3f}",
        f"  km with the system active       {base['active_km']:>12.3f}",
    ]
    if base["odometer_km"] is not None:
        lines.append(f"  (odometer cross-check, km)      {base['odometer_km']:>12.3f}")
    if base["by_function"]:
        lines += ["", f"  {'function':<10}{'seconds':>14}{'hours':>12}{'km':>12}"]
        for fn, row in base["by_function"].items():
            lines.append(f"  {fn:<10}{row['active_s']:>14.3f}{row['active_hours']:>12.3f}"
                         f"{row['km']:>12.3f}")
    lines += ["", "事件信息 events"]
    for key, zh, _count in EVENTS:
        lines.append(f"  {zh} ({key}){'':<4}{report['events'][key]:>6}")
    for key, value in report["events"]["other"].items():
        lines.append(f"  other: {key:<36}{value:>6}")
    security = report.get("security_events") or {}
    if security:
        lines += ["", "security events (GB 44495)"]
        for key, value in security.items():
            lines.append(f"  {key:<43}{value:>6}")
    return "\n".join(lines) + "\n"
