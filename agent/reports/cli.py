"""``icv-agent report period`` and ``icv-agent report accident``.

Both read the state db of the config (``<state dir>/state.db``, read-only) and, with
``--records``, an exported JSONL file of records. Exit 0 with the report on stdout, 1 if
there is nothing to report from, 2 for a bad config or argument.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from agent.reports.store import STATE_DB, ReportError, StateStore, load_light_config, read_records
from agent.settings_loader import ConfigError


def register(subparsers: argparse._SubParsersAction) -> None:
    rep = subparsers.add_parser(
        "report", help="Att.3 reports from the stored records and statistics",
        description="Reports of Attachment 3: the event report contribution of this vehicle "
                    "for a quarter or year, and the draft of an accident report.")
    sub = rep.add_subparsers(dest="report_command", required=True, metavar="KIND")

    per = sub.add_parser("period", help="event report contribution (Att.3 二) of a period",
                         description="Hours and km with the system active and event counts "
                                     "of one quarter (2026Q3) or year (2026).")
    per.add_argument("--config", "-c", type=Path, required=True, metavar="FILE")
    per.add_argument("--period", required=True, help="YYYYQn or YYYY, in the vehicle's "
                                                     "time zone")
    per.add_argument("--records", type=Path, metavar="FILE",
                     help="also look for stats.period records in this JSONL file")
    per.add_argument("--text", action="store_true", help="a readable table instead of JSON")
    per.set_defaults(func=cmd_period)

    acc = sub.add_parser("accident", help="accident report draft (Att.3 一)",
                         description="The Att.3 一 draft of one accident from its "
                                     "accident.record (or its accident.trigger).")
    acc.add_argument("--config", "-c", type=Path, required=True, metavar="FILE")
    acc.add_argument("id", metavar="ID", help="accident_id (a unique prefix is enough)")
    acc.add_argument("--records", type=Path, metavar="FILE",
                     help="JSONL file of records to search besides the state db outbox")
    acc.add_argument("--text", action="store_true", help="readable text instead of JSON")
    acc.set_defaults(func=cmd_accident)


def _open(args: argparse.Namespace) -> tuple[Any, StateStore] | None:
    try:
        cfg = load_light_config(args.config)
    except ConfigError as exc:
        for line in exc.problems.lines():
            print(line, file=sys.stderr)
        return None
    try:
        return cfg, StateStore(cfg.state_dir / STATE_DB)
    except ReportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _from_file(path: Path | None, types: tuple[str, ...]) -> list[dict[str, Any]]:
    if path is None:
        return []
    records, bad = read_records(path, types)
    if bad:
        print(f"warning: {path}: {bad} unreadable line(s) skipped", file=sys.stderr)
    return records


def _print(report: dict[str, Any], text: str | None) -> None:
    if text is not None:
        sys.stdout.write(text)
    else:
        print(json.dumps(report, ensure_ascii=False, indent=2))


def cmd_period(args: argparse.Namespace) -> int:
    from agent.monitors.stats import CLOSED_KEY, OPEN_KEY
    from agent.reports.period import check_period, find_period, period_report, period_text
    from agent.security import COUNTS_KEY, period_counts

    try:
        period = check_period(args.period)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    opened = _open(args)
    if opened is None:
        return 2
    cfg, store = opened
    try:
        types = ("stats.period",)
        records = store.records(types) + _from_file(args.records, types)
        data, status, source = find_period(period, closed=store.get(CLOSED_KEY),
                                           open_totals=store.get(OPEN_KEY), records=records)
        security = period_counts(store.get(COUNTS_KEY), period)
    except ReportError as exc:
        print(f"error: {exc} (state db {store.path})", file=sys.stderr)
        return 1
    finally:
        store.close()
    report = period_report(period, cfg.vehicle.vin, data, status, source, security=security)
    _print(report, period_text(report) if args.text else None)
    return 0


def cmd_accident(args: argparse.Namespace) -> int:
    from agent.reports.accident import accident_report, accident_text, find_accident

    opened = _open(args)
    if opened is None:
        return 2
    _cfg, store = opened
    try:
        types = ("accident.trigger", "accident.record")
        records = store.records(types) + _from_file(args.records, types)
        record, triggers = find_accident(args.id, records)
    except ReportError as exc:
        print(f"error: {exc} (state db {store.path}"
              f"{', ' + str(args.records) if args.records else ''})", file=sys.stderr)
        return 1
    finally:
        store.close()
    report = accident_report(record, triggers)
    _print(report, accident_text(report) if args.text else None)
    return 0
