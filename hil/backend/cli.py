"""``icv-hil backend`` (receive), ``backend summary``, ``backend send``, ``backend keygen``.

Options of a subcommand go after its name: ``icv-hil backend summary --db FILE``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from agent.records.keys import KeyFileError
from hil.backend.broker import BrokerConfig, BrokerSetupError
from hil.backend.receiver import DEFAULT_GROUP, DEFAULT_SESSION_EXPIRY, Backend
from hil.backend.report import format_summaries, summaries_json
from hil.backend.sender import load_backend_key
from hil.backend.store import BackendStore


def _broker_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("broker (MQTT 5, mutual TLS)")
    g.add_argument("--host", default="localhost")
    g.add_argument("--port", type=int, default=8883)
    g.add_argument("--ca", type=Path, help="CA certificate that signed the broker (PEM)")
    g.add_argument("--cert", type=Path, help="client certificate (PEM)")
    g.add_argument("--key", type=Path, help="client private key (PEM)")
    g.add_argument("--no-tls", action="store_true", help="plain TCP (a local test broker)")
    g.add_argument("--client-id", default="",
                   help="MQTT client id (receiver default: derived from --db, so the broker "
                        "keeps the session and queues records while the backend is away)")
    g.add_argument("--session-expiry", type=int, default=DEFAULT_SESSION_EXPIRY, metavar="S",
                   help="how long the broker keeps the receiver's session (0: it ends with "
                        "each connection and records sent meanwhile are missed)")


def _broker(args: argparse.Namespace, key: Path | None) -> BrokerConfig:
    return BrokerConfig(host=args.host, port=args.port, ca=args.ca or "",
                        cert=args.cert or "", key=key or "", tls=not args.no_tls,
                        client_id=args.client_id, session_expiry_s=max(0, args.session_expiry))


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "backend", help="bench backend: receive, verify and store records; send commands",
        description="Receive records over MQTT (shared subscription), verify signatures, "
                    "chain and seq gaps per vehicle, de-duplicate by id, store them in "
                    "SQLite. Without a subcommand it runs the receiver.")
    _broker_options(p)
    p.add_argument("--db", type=Path, help="SQLite file of the backend (created if missing)")
    p.add_argument("--vehicle-keys", type=Path, metavar="DIR",
                   help="folder of pinned vehicle keys named <VIN>.pem (public or private)")
    p.add_argument("--group", default=DEFAULT_GROUP,
                   help="shared subscription group; backends of one group split the records "
                        "('' = every backend gets every record)")
    p.add_argument("--live", action="store_true", help="one line per message on stdout")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--until-idle", type=float, metavar="S",
                   help="stop after S seconds without a record (after the first connection)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--no-summary", action="store_true", help="no summary on exit")
    p.add_argument("--resend-key", type=Path, metavar="KEY",
                   help="backend signing key (Ed25519 PEM): gaps that stay open are asked "
                        "for again with a signed records.resend")
    p.add_argument("--gap-wait", type=float, default=5.0, metavar="S",
                   help="seconds a gap must stay open before it is asked for (default 5)")
    p.set_defaults(func=receive_cmd)
    bsub = p.add_subparsers(dest="backend_command", metavar="SUBCOMMAND")

    s = bsub.add_parser("summary", help="per-vehicle summary of a backend database")
    s.add_argument("--db", type=Path, required=True)
    s.add_argument("--vin", action="append", help="only this vehicle (repeatable)")
    s.add_argument("--json", action="store_true")
    s.add_argument("--strict", action="store_true",
                   help="exit 1 unless every vehicle is OK (no gap, alarm or rejection)")
    s.set_defaults(func=summary_cmd)

    c = bsub.add_parser("send", help="send a signed command and print the response")
    _broker_options(c)
    c.add_argument("--vin", required=True)
    c.add_argument("--cmd", required=True, help="e.g. report.period, config.get")
    c.add_argument("--args", default="{}", help="JSON object of arguments")
    c.add_argument("--signing-key", "--backend-key", dest="signing_key", type=Path,
                   required=True, help="backend private key (from 'backend keygen')")
    c.add_argument("--timeout", type=float, default=10.0, metavar="S")
    c.add_argument("--ttl", type=float, default=300.0, metavar="S",
                   help="the command expires after S seconds")
    c.set_defaults(func=send_cmd)

    from hil.backend.campaign import register_cli

    register_cli(bsub, _broker_options)

    k = bsub.add_parser("keygen", help="make a backend Ed25519 key pair for signing commands")
    k.add_argument("--out", type=Path, required=True, help="folder for <name>.key / <name>.pub")
    k.add_argument("--name", default="backend")
    k.add_argument("--force", action="store_true", help="replace an existing key pair")
    k.set_defaults(func=keygen_cmd)


def _error(message: str, code: int = 2) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def receive_cmd(args: argparse.Namespace) -> int:
    if args.db is None:
        return _error("--db FILE is required")
    if args.vehicle_keys is None:
        return _error("--vehicle-keys DIR is required (pinned <VIN>.pem keys)")
    for name in ("duration", "until_idle"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            return _error(f"--{name.replace('_', '-')} must be > 0")
    try:
        resend_key = load_backend_key(args.resend_key) if args.resend_key else None
        backend = Backend(_broker(args, args.key), args.db, args.vehicle_keys,
                          group=args.group, live=sys.stdout if args.live else None,
                          persistent=args.session_expiry > 0, resend_key=resend_key,
                          gap_wait_s=args.gap_wait)
    except KeyFileError as exc:
        return _error(str(exc))
    stop = threading.Event()
    reason = ["stopped"]

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        reason[0] = signal.Signals(signum).name
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            backend.start(timeout=None)
        except BrokerSetupError as exc:
            return _error(str(exc))
        print(f"backend: {args.host}:{args.port}, group {args.group or '(none)'}, "
              f"{len(backend.keys)} pinned vehicle keys, db {args.db}", file=sys.stderr)
        started = time.monotonic()
        backend.last_message = started
        while not stop.is_set():
            now = time.monotonic()
            if args.duration is not None and now - started >= args.duration:
                reason[0] = f"--duration {args.duration:g} s"
                break
            if (args.until_idle is not None and backend.counters.connects
                    and now - backend.last_message >= args.until_idle):
                reason[0] = f"no record for {args.until_idle:g} s"
                break
            if not backend.counters.connects:
                backend.last_message = now      # idle time counts from the first connection
            stop.wait(0.1)
    finally:
        backend.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    c = backend.counters
    print(f"backend: {reason[0]}; {c.messages} record messages: {c.stored} stored, "
          f"{c.duplicates} duplicates, {c.rejected_total} rejected, {c.alarms} alarms",
          file=sys.stderr)
    if not args.no_summary:
        items = backend.summaries()
        print(summaries_json(items) if args.json else format_summaries(items))
    backend.store.close()
    return 0


def summary_cmd(args: argparse.Namespace) -> int:
    if not args.db.is_file():
        return _error(f"{args.db}: backend database not found")
    store = BackendStore(args.db)
    try:
        items = store.summaries()
    finally:
        store.close()
    if args.vin:
        items = [s for s in items if s.vin in set(args.vin)]
    print(summaries_json(items) if args.json else format_summaries(items))
    if args.strict and not all(s.ok for s in items):
        return 1
    return 0


def send_cmd(args: argparse.Namespace) -> int:
    from hil.backend.sender import SendError, load_backend_key, send_command

    try:
        cmd_args: Any = json.loads(args.args)
    except ValueError as exc:
        return _error(f"--args: not JSON: {exc}")
    if not isinstance(cmd_args, dict):
        return _error("--args: expected a JSON object")
    try:
        private_key = load_backend_key(args.signing_key)
        result = send_command(_broker(args, args.key), private_key, args.vin, args.cmd,
                              cmd_args, timeout=args.timeout, ttl_s=args.ttl)
    except KeyFileError as exc:
        return _error(str(exc))
    except (SendError, BrokerSetupError) as exc:
        return _error(str(exc), 1)
    if result.response is None:
        print(f"no response from {args.vin} to {args.cmd} (nonce {result.nonce}) within "
              f"{args.timeout:g} s", file=sys.stderr)
        return 1
    print(json.dumps(result.response, indent=2, ensure_ascii=False))
    return 0 if result.ok else 1


def keygen_cmd(args: argparse.Namespace) -> int:
    from hil.backend.sender import keygen

    try:
        private, public, key_id = keygen(args.out, args.name, overwrite=args.force)
    except KeyFileError as exc:
        return _error(str(exc))
    print(f"private key {private} (keep it on the backend)\npublic key  {public} "
          f"(pin it in the agent: [commands] backend_keys)\nkey id      {key_id}")
    return 0
