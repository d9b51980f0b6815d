"""The vehicle's contribution to the quarterly / annual event report (Att.3 二).

Base figures (hours and km with the system active, per function) and event counts of one
period, taken from what the statistics monitor persisted: a closed period from the closed
list or its ``stats.period`` record, the running quarter/year from the open totals (marked
``open`` with the time they are valid for).

Two views of the same counters: the notice's (Att.3 二: ``base``, ``events``) and UN R171's
manufacturer monitoring categories (``r171``: hours and km of operation, hands-on and
eyes-on warnings, system-initiated manoeuvres, deactivations by reason, responses to an
unavailable driver, boundary exceedances, safety-critical occurrences), next to the draft
GB L2 items (``cn_l2``: ignition cycles, unconfirmed activations, AEB availability) and the
GB 39732 marks of the accidents. A category the vehicle does not signal is ``null`` and
named in ``not_signalled``, never a 0.
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


# UN R171 monitoring categories -> statistics counts (and the signal category they need).
R171 = (
    ("hands_on_requests", "hands-on requests", "warning.hands_on", "warnings"),
    ("hands_on_escalated", "  of which escalated", "warning.hands_on.escalated", "warnings"),
    ("eyes_on_road_warnings", "eyes-on-road warnings", "warning.eyes_on", "warnings"),
    ("eyes_on_road_escalated", "  of which escalated", "warning.eyes_on.escalated", "warnings"),
    ("take_control_alerts", "take-over alerts", "warning.take_control", "warnings"),
    ("system_initiated_manoeuvres", "system-initiated manoeuvres", "cda.manoeuvre",
     "system_initiated_manoeuvres"),
    ("driver_unavailability_responses", "driver-unavailability responses (MRM)",
     "cda.mrm.driver_unresponsive", "warnings"),
    ("risk_mitigation_manoeuvres", "minimal risk manoeuvres (all causes)", "cda.mrm", None),
    ("boundary_exceedances", "boundary exceedances (ODD exceeded)", "cda.boundary_exceeded",
     "boundary_exceedances"),
    ("safety_critical_accidents", "safety-critical: accidents in use", "accident.cda_in_use",
     None),
    ("safety_critical_aeb", "safety-critical: AEB in use", "safety.aeb.cda_in_use", None),
)
DEACTIVATION_REASONS = ("driver", "system_failure", "odd_exit", "driver_disengaged", "mrm",
                        "unknown")
# Draft GB 组合驾驶辅助系统安全要求 and GB 39732 -> statistics counts.
CN_L2 = (
    ("ignition_cycles", "ignition cycles", "ignition_cycles", "instructions_confirmation"),
    ("unconfirmed_activations", "activations without instructions confirmed",
     "misuse.unconfirmed_activation", "instructions_confirmation"),
    ("unconfirmed_activation_attempts", "activation attempts without confirmation",
     "misuse.unconfirmed_activation_attempt", "instructions_confirmation"),
    ("activated_anyway_violations", "selfcheck: activated without confirmation",
     "selfcheck.instructions_confirmation_required", "instructions_confirmation"),
    ("aeb_unavailable_while_active", "selfcheck: AEB unavailable while in use",
     "selfcheck.aeb_must_stay_available", "aeb_availability"),
    ("accidents_edr_triggered", "accidents an EDR would have recorded (GB 39732)",
     "accident.edr_triggered", None),
    ("accidents_edr_locked", "accidents an EDR would have locked (GB 39732)",
     "accident.edr_locked", None),
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
                gaps = open_totals.get("not_signalled")
                data = totals.record(str(open_totals.get("timezone", "")),
                                     odometer=bool(open_totals.get("odometer_mapped")),
                                     closed="open", as_of=float(open_totals.get("as_of", 0)),
                                     not_signalled=gaps if isinstance(gaps, list) else None)
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
    unsignalled = [str(x) for x in data.get("not_signalled") or []]

    def n(count: str, needs: str | None) -> int | None:
        return None if needs in unsignalled else int(counts.get(count, 0))

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
        # UN R171 manufacturer monitoring: the same counters in its categories.
        "r171": {
            "fleet_size": 1,
            "operation_hours": round(total_s / 3600.0, 6),
            "operation_km": float(km.get(TOTAL, 0.0)),
            **{key: n(count, needs) for key, _label, count, needs in R171},
            "deactivations": int(counts.get("cda.deactivated", 0)),
            "deactivations_by_reason": {r: int(counts.get(f"cda.deactivated.{r}", 0))
                                        for r in DEACTIVATION_REASONS},
            "system_initiated_manoeuvres_by_kind": (
                None if "system_initiated_manoeuvres" in unsignalled else
                {k.removeprefix("cda.manoeuvre."): int(v) for k, v in sorted(counts.items())
                 if k.startswith("cda.manoeuvre.")}),
        },
        "cn_l2": {key: n(count, needs) for key, _label, count, needs in CN_L2},
        "not_signalled": unsignalled,
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
    lines += _r171_lines(report)
    security = report.get("security_events") or {}
    if security:
        lines += ["", "security events (GB 44495)"]
        for key, value in security.items():
            lines.append(f"  {key:<43}{value:>6}")
    return "\n".join(lines) + "\n"


def _row(label: str, value: int | float | None) -> str:
    shown = "n/a" if value is None else (f"{value:.3f}" if isinstance(value, float)
                                         else str(value))
    return f"  {label:<48}{shown:>10}"


def _r171_lines(report: dict[str, Any]) -> list[str]:
    """The R171 and draft GB L2 views: the counters above, in their categories."""
    r171 = report.get("r171")
    if not isinstance(r171, dict):
        return []
    lines = ["", "UN R171 (DCAS) monitoring view — the same counters",
             _row("fleet size", r171["fleet_size"]),
             _row("hours of operation", float(r171["operation_hours"])),
             _row("km of operation", float(r171["operation_km"]))]
    by_kind = r171.get("system_initiated_manoeuvres_by_kind") or {}
    for key, label, _count, _needs in R171:
        lines.append(_row(label, r171.get(key)))
        if key == "system_initiated_manoeuvres":
            lines += [_row(f"  {kind}", value) for kind, value in by_kind.items()]
    lines.append(_row("deactivations", r171["deactivations"]))
    lines += [_row(f"  {reason}", value)
              for reason, value in r171["deactivations_by_reason"].items()]
    lines += ["", "draft GB 组合驾驶辅助系统安全要求 / GB 39732"]
    lines += [_row(label, report["cn_l2"].get(key)) for key, label, _count, _needs in CN_L2]
    if report.get("not_signalled"):
        lines.append("  n/a = not signalled by this vehicle: " + ", ".join(report["not_signalled"]))
    return lines
