"""The Att.3 一 accident report draft of one accident, from its stored records.

The ``accident.record`` carries every field: those the vehicle filled and, empty and typed,
those people or the backend must fill (listed in ``to_fill``). Before the record exists
(post-window still open, or lost) the ``accident.trigger`` gives a first draft.
"""

from __future__ import annotations

from typing import Any

from agent.reports.store import ReportError

SECTIONS = (
    ("basic", "事故基本信息 basic information"),
    ("vehicle", "车辆基本信息 vehicle information"),
    ("details", "事故详细信息 accident details"),
    ("cause", "原因及预期改进措施 cause and planned improvement"),
)


def find_accident(accident_id: str, records: list[dict[str, Any]]
                  ) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """The accident.record (or None) and accident.trigger records of ``accident_id``; a
    unique prefix of the id is enough."""
    ids = {r["data"].get("accident_id") for r in records} - {None}
    matches = sorted(i for i in ids if isinstance(i, str) and i.startswith(accident_id))
    if not matches:
        raise ReportError(f"no accident {accident_id!r} among {len(records)} accident records")
    if len(matches) > 1 and accident_id not in matches:
        raise ReportError(f"accident id prefix {accident_id!r} is ambiguous: {matches}")
    aid = accident_id if accident_id in matches else matches[0]
    mine = [r for r in records if r["data"].get("accident_id") == aid]
    full = [r for r in mine if r["type"] == "accident.record"]
    triggers = sorted((r for r in mine if r["type"] == "accident.trigger"),
                      key=lambda r: r.get("seq", 0))
    record = max(full, key=lambda r: (r["data"].get("complete") is True, r.get("seq", 0))) \
        if full else None
    return record, triggers


def accident_report(record: dict[str, Any] | None,
                    triggers: list[dict[str, Any]]) -> dict[str, Any]:
    if record is None:
        first = triggers[0]["data"]
        last = triggers[-1]["data"]
        return {
            "report": "Att.3 一 accident report draft",
            "accident_id": first["accident_id"],
            "status": "trigger only: the accident.record is not stored (yet)",
            "report_deadline": last.get("report_deadline"),
            "triggers": last.get("triggers", [first.get("trigger")]),
            "basic": {"time": first.get("ts_trigger"), "location": first.get("location")},
            "details": {"system_state": {"cda_state": first.get("cda_state"),
                                         "cda_in_use_5s": first.get("cda_in_use_5s"),
                                         "cda_in_use_30s": first.get("cda_in_use_30s")},
                        "vehicle_state": {"Vehicle.Speed": first.get("speed")}},
            "records": [{"type": r["type"], "seq": r.get("seq"), "hash": r.get("hash")}
                        for r in triggers],
        }
    data = record["data"]
    window = data.get("window") or {}
    signals = window.get("signals") or {}
    report: dict[str, Any] = {
        "report": "Att.3 一 accident report draft",
        "accident_id": data.get("accident_id"),
        "status": "complete" if data.get("complete") else "incomplete (agent stopped early)",
        "report_deadline": data.get("report_deadline"),
        "ts_trigger": data.get("ts_trigger"),
        "triggers": data.get("triggers"),
        "cda_in_use_5s": data.get("cda_in_use_5s"),
        "cda_in_use_30s": data.get("cda_in_use_30s"),
    }
    for key, _title in SECTIONS:
        report[key] = data.get(key)
    report["photos"] = data.get("photos", [])
    report["to_fill"] = data.get("to_fill", [])
    report["data_window"] = {
        "from_s": window.get("from_s"), "to_s": window.get("to_s"),
        "samples": {name: len(s) for name, s in signals.items()},
        "gaps": data.get("gaps", []),
        "delta_v_peak_kmh": data.get("delta_v_peak_kmh"),
    }
    report["records"] = [{"type": r["type"], "seq": r.get("seq"), "hash": r.get("hash")}
                         for r in [*triggers, record]]
    return report


def _lines(value: Any, indent: str, to_fill: set[str], path: str) -> list[str]:
    out = []
    for key, item in value.items():
        here = f"{path}.{key}" if path else key
        if isinstance(item, dict) and item and here not in to_fill:
            out.append(f"{indent}{key}:")
            out += _lines(item, indent + "  ", to_fill, here)
            continue
        if here in to_fill or item in (None, "", [], {}):
            shown = "—  (to fill)" if here in to_fill else "—"
        elif isinstance(item, list) and any(isinstance(x, dict) for x in item):
            out.append(f"{indent}{key}:")
            out += [f"{indent}  - {_inline(x)}" for x in item]
            continue
        else:
            shown = _inline(item)
        out.append(f"{indent}{key}: {shown}")
    return out


def _inline(item: Any) -> str:
    """One value as a person reads it: ``a=1, b=2`` for a table, ``x, y`` for a list."""
    if isinstance(item, dict):
        return ", ".join(f"{k}={_inline(v)}" for k, v in item.items())
    if isinstance(item, list):
        return ", ".join(_inline(x) for x in item)
    return str(item)


def _trigger_line(triggers: Any) -> str:
    """``restraint +0.000 s, delta_v +0.027 s (2026-...Z)``: each trigger with its offset
    from the first, the first one's time once."""
    if not isinstance(triggers, list) or not triggers:
        return "triggers: —"
    parts = []
    for t in triggers:
        if isinstance(t, dict):
            at = t.get("at_s")
            parts.append(f"{t.get('trigger')} +{at:.3f} s" if isinstance(at, (int, float))
                         else str(t.get("trigger")))
        else:
            parts.append(str(t))
    first = triggers[0].get("ts") if isinstance(triggers[0], dict) else None
    return "triggers: " + ", ".join(parts) + (f" (first at {first})" if first else "")


def accident_text(report: dict[str, Any]) -> str:
    to_fill = set(report.get("to_fill", []))
    lines = [f"事故报告 (Att.3 一) draft — accident {report['accident_id']}",
             f"status: {report['status']}; report due by {report['report_deadline']}",
             _trigger_line(report.get("triggers"))]
    for key, title in SECTIONS:
        section = report.get(key)
        if not isinstance(section, dict):
            continue
        lines += ["", title]
        lines += _lines(section, "  ", to_fill, key)
    if "photos" in report:
        lines += ["", "事故现场及事故车辆照片 photos: " + ("—  (to fill)" if not report["photos"]
                                                  else str(report["photos"]))]
    window = report.get("data_window")
    if window:
        lines += ["", f"data window {window['from_s']} s .. {window['to_s']} s, "
                      f"{sum(window['samples'].values())} samples of "
                      f"{len(window['samples'])} signals, {len(window['gaps'])} gap(s)"]
        for gap in window["gaps"]:
            lines.append(f"  gap: {gap['signal']} {gap['kind']} "
                         f"{gap.get('from_s')} .. {gap.get('to_s')}")
    return "\n".join(lines) + "\n"
