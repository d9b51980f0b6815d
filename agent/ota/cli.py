"""``icv-agent ota consent|history|status`` and ``icv-agent ecu versions``.

They work on the state database of the config (the running agent keeps writing it; SQLite
WAL lets both sides in). ``ota consent`` leaves a row the agent picks up within
``consent_poll_s``; the agent, not this command, records the ``ota.consent`` record (or
``ota.consent_rejected``). The row names the offer it answers: its nonce is given with
``--nonce`` or read from the offer the agent has open.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ATT2 = (("#35", "steering", "steering ECU software version"),
        ("#36", "dvr", "DVR software version"),
        ("#37", "edr", "EDR software version"),
        ("#38", "ota_host", "ECU hosting the update system"))


def register(sub: argparse._SubParsersAction) -> None:
    ota = sub.add_parser("ota", help="OTA campaigns: consent, history, status")
    osub = ota.add_subparsers(dest="ota_command", required=True, metavar="ACTION")

    p = osub.add_parser("consent", help="answer an open OTA offer (bench consent channel)")
    p.add_argument("activity_id")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--accept", action="store_true")
    g.add_argument("--decline", action="store_true")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--nonce", metavar="OFFER_NONCE",
                   help="the offer_nonce of the offer answered (default: the open offer's)")
    p.add_argument("--force", action="store_true",
                   help="leave the answer even if it answers no open offer; the agent "
                        "refuses it and records ota.consent_rejected")
    p.set_defaults(func=cmd_consent)

    p = osub.add_parser("history", help="print the OTA history and verify its hash chain")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_history)

    p = osub.add_parser("status", help="the campaign in progress and declined campaigns")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    ecu = sub.add_parser("ecu", help="ECU software versions (Attachment 2 #35-40)")
    esub = ecu.add_subparsers(dest="ecu_command", required=True, metavar="ACTION")
    p = esub.add_parser("versions", help="initial and current versions of every ECU")
    p.add_argument("--config", type=Path, required=True)
    p.add_argument("--read", action="store_true",
                   help="read the ECUs over UDS now (do not use while the agent runs an OTA)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ecu_versions)


def _fail(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def _open(config: Path) -> tuple[Any, Any]:
    from agent.config import load
    from agent.statestore import StateDB

    cfg = load(config)
    db_path = cfg.state_dir / "state.db"
    if not db_path.exists():
        raise FileNotFoundError(f"{db_path}: no state database (has the agent run?)")
    return cfg, StateDB(db_path)


def _guard(fn: Any, args: argparse.Namespace) -> int:
    from agent.settings_loader import ConfigError

    try:
        return int(fn(args))
    except ConfigError as exc:
        return _fail(str(exc))
    except FileNotFoundError as exc:
        return _fail(str(exc), 1)


def cmd_consent(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        from agent.ota.campaign import ACTIVE_KEY
        from agent.ota.consent import ConsentInbox, open_offer

        _cfg, db = _open(args.config)
        try:
            active = db.get(ACTIVE_KEY) or {}
            open_id = active.get("campaign", {}).get("activity_id")
            offer = open_offer(db)
            if offer is not None and not (offer.activity_id == args.activity_id == open_id
                                          and active.get("phase") == "awaiting_consent"):
                offer = None                # not the offer of this activity, or not open
            nonce: str | None = args.nonce
            problem = ""
            if offer is None:
                what = (f"the open activity is {open_id} ({active.get('phase')})"
                        if open_id and open_id != args.activity_id
                        else f"no offer is open (phase {active.get('phase')})" if open_id
                        else "no OTA activity is open")
                problem = f"{args.activity_id}: {what}"
            elif nonce is not None and nonce != offer.nonce:
                problem = (f"{args.activity_id}: --nonce is not the nonce of the open "
                           f"offer (shown again since?)")
            if problem and not args.force:
                return _fail(f"{problem}; --force leaves the answer anyway (the agent "
                             f"refuses and records it)", 1)
            if offer is not None and nonce is None:
                nonce = offer.nonce
            ConsentInbox(db).post(args.activity_id, bool(args.accept), "cli",
                                  offer_nonce=nonce or "",
                                  campaign=offer.campaign if offer is not None else "")
        finally:
            db.close()
        word = "accepted" if args.accept else "declined"
        if problem:
            print(f"{problem}: answer left anyway; the agent will refuse it")
        else:
            print(f"{args.activity_id}: {word}; the agent applies it within a second")
        return 0
    return _guard(go, args)


def cmd_history(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        from agent.ota.history import OtaHistory

        _cfg, db = _open(args.config)
        try:
            history = OtaHistory(db)
            entries = history.entries()
            report = history.verify()
        finally:
            db.close()
        if args.json:
            print(json.dumps({"entries": entries, "chain_ok": report.ok,
                              "reason": report.reason}, indent=2, ensure_ascii=False))
        else:
            for e in entries:
                consent = e.get("consent") or {}
                told = consent.get("decision", "-")
                via = f" via {consent['channel']}" if consent.get("channel") else ""
                recall = f" recall {e['recall_number']}" if e.get("recall") else ""
                reason = e.get("detail", {}).get("reason") or e.get("detail", {}).get("threat")
                print(f"#{e['n']:<3} {e['ended_at']}  {e['activity_id']:<20} "
                      f"{e['version']:<10} {e['result']}{f' ({reason})' if reason else ''}"
                      f"  consent {told}{via}{recall}")
                for row in e.get("ecus", []):
                    before = (row.get("before") or {}).get("F189", "?")
                    after = (row.get("after") or {}).get("F189", "?")
                    state = "ok" if row.get("ok") else ("rolled back" if row.get("rolled_back")
                                                        else "FAILED")
                    print(f"       {row['ecu']:<10} {before} -> {after}  {state}")
            print(f"{len(entries)} entries, chain " +
                  ("OK" if report.ok else f"BROKEN: {report.reason}"))
        return 0 if report.ok else 1
    return _guard(go, args)


def cmd_status(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        from agent.ota.campaign import ACTIVE_KEY, DECLINED_KEY
        from agent.ota.consent import open_offer
        from agent.ota.history import OtaHistory

        _cfg, db = _open(args.config)
        try:
            active = db.get(ACTIVE_KEY)
            declined = db.get(DECLINED_KEY, {})
            entries = OtaHistory(db).entries()
            offer = open_offer(db)
        finally:
            db.close()
        last = entries[-1] if entries else None
        if offer is not None and (not active or active.get("phase") != "awaiting_consent"
                                  or offer.activity_id != active["campaign"]["activity_id"]):
            offer = None
        if args.json:
            print(json.dumps({"active": active, "declined": declined, "last": last,
                              "offer": offer.as_dict() if offer else None},
                             indent=2, ensure_ascii=False))
            return 0
        if active:
            c = active["campaign"]
            print(f"in progress: {c['activity_id']} version {c['version']} "
                  f"phase {active['phase']}" + (f" (ECU {active['ecu']})"
                                               if active.get("ecu") else ""))
            if offer is not None:
                print(f"offer: campaign {offer.campaign} offer_nonce {offer.nonce}")
        else:
            print("no OTA activity in progress")
        for name, d in sorted(declined.items()):
            print(f"declined: {name} version {d['version']} ({d['activity_id']}, {d['at']}); "
                  f"offered again only for another version")
        if last:
            print(f"last: {last['activity_id']} {last['result']} at {last['ended_at']}")
        return 0
    return _guard(go, args)


def cmd_ecu_versions(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        from agent.ota.inventory import Inventory

        cfg, db = _open(args.config)
        try:
            inventory = Inventory(db, list(cfg.ecu), list(cfg.bus))
            if args.read:
                def show(type_: str, data: dict[str, Any]) -> None:
                    if type_ == "ecu.tamper":
                        print(f"TAMPER {data['ecu']}: {data['dids']}", file=sys.stderr)
                    elif data.get("error"):
                        print(f"{data['ecu']}: not readable: {data['error']}",
                              file=sys.stderr)
                inventory.refresh("cli", show)
            table = versions_table(cfg, inventory.initial(), inventory.current(),
                                   inventory.tampered(), inventory.swin())
        finally:
            db.close()
        if args.json:
            print(json.dumps(table, indent=2, ensure_ascii=False))
        else:
            print(format_table(table))
        return 0
    return _guard(go, args)


def versions_table(cfg: Any, initial: dict[str, Any], current: dict[str, Any],
                   tampered: dict[str, Any], swin: dict[str, Any] | None = None
                   ) -> dict[str, Any]:
    """Attachment 2 #35-40 from the config (roles) and the kept versions, and the SWIN
    (GB 44496) where ECUs report it or type-approval ECUs are configured."""
    def sw(values: dict[str, str] | None) -> str | None:
        return (values or {}).get("F189")

    rows = []
    for item, role, label in ATT2:
        ecus = [e for e in cfg.ecu if e.role == role]
        rows.append({"item": item, "label": label, "ecus": [
            {"ecu": e.name, "initial": sw(initial.get(e.name)),
             "current": sw(current.get(e.name))} for e in ecus]})
    updatable = [{"ecu": e.name, "role": e.role,
                  "hardware_number": (current.get(e.name) or {}).get("F191"),
                  "software_number": (current.get(e.name) or {}).get("F188"),
                  "software_version": sw(current.get(e.name)),
                  "initial_software_version": sw(initial.get(e.name)),
                  "supplier_software_version": (current.get(e.name) or {}).get("F195"),
                  "type_approval": e.approval_relevant,
                  "tamper": tampered.get(e.name)} for e in cfg.ecu]
    return {"vin": cfg.vehicle.vin, "rows": rows,
            "ota_ecus": {"item": "#39", "label": "OTA-updatable ECUs", "ecus": updatable},
            "vehicle_software_version": {"item": "#40",
                                         "value": cfg.vehicle.software_version or None},
            "swin": swin if any(e.approval_relevant for e in cfg.ecu) else None}


def format_table(table: dict[str, Any]) -> str:
    out = [f"VIN {table['vin']}"]
    for row in table["rows"]:
        if not row["ecus"]:
            out.append(f"{row['item']} {row['label']}: no ECU with this role configured")
        for e in row["ecus"]:
            out.append(f"{row['item']} {row['label']}: {e['ecu']} initial "
                       f"{e['initial'] or '?'} current {e['current'] or '?'}")
    block = table["ota_ecus"]
    out.append(f"{block['item']} {block['label']}:")
    out.append(f"    {'ECU':<10} {'role':<10} {'hardware':<14} {'sw number':<14} "
               f"{'sw version':<11} {'initial':<9}")
    for e in block["ecus"]:
        flag = ("  TAMPER" if e["tamper"] else "") + ("  type-approval" if e["type_approval"]
                                                      else "")
        out.append(f"    {e['ecu']:<10} {e['role']:<10} {e['hardware_number'] or '?':<14} "
                   f"{e['software_number'] or '?':<14} {e['software_version'] or '?':<11} "
                   f"{e['initial_software_version'] or '?':<9}{flag}")
    v = table["vehicle_software_version"]
    out.append(f"{v['item']} vehicle software version: {v['value'] or '?'}")
    swin = table.get("swin")
    if swin is not None:
        source = (f"reported by {', '.join(sorted(swin['reported']))}" if swin["reported"]
                  else f"computed from {', '.join(sorted(swin['basis'] or {}))}")
        out.append(f"SWIN (GB 44496): {swin['swin'] or '?'} ({source})")
    elif any(e["type_approval"] for e in block["ecus"]):
        out.append("SWIN (GB 44496): not read yet (icv-agent ecu versions --read)")
    return "\n".join(out)
