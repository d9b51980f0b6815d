"""Signed commands from the backend: verify, refuse replays, dispatch exactly once.

A command is a JSON envelope published on ``icv/{vin}/cmd/{name}``::

    {"cmd": name, "vin": VIN, "nonce": 32 hex, "issued": ISO, "expires": ISO,
     "args": {...}, "key_id": fingerprint, "sig": base64 Ed25519}

``sig`` covers the RFC 8785 canonical JSON (sorted keys, compact, UTF-8) of the envelope
without ``sig``, made with a backend key pinned in the config. Checks, in this order (the
first failure is the reason): ``malformed`` (not JSON, fields missing or of the wrong
type, topic and ``cmd`` differ), ``unsigned``, ``bad_signature`` (key not pinned or
signature wrong), ``wrong_vin``, ``unknown`` (no such command), ``expired`` (past
``expires``, issued too long ago or in the future, or valid for longer than
``max_age_s``), ``replayed`` (nonce seen before; nonces live in the state database until
the command could no longer pass the time checks, so a restart does not reopen the door).
The nonce is committed before the handler runs: a command runs at most once.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent import wirejson
from agent.jcs import canonical_json
from agent.records.keys import fingerprint, load_public_key
from agent.statestore import StateDB
from agent.timefmt import iso_ms, parse_iso
from agent.uplink.settings import CommandsConfig

log = logging.getLogger(__name__)

COMMANDS = ("report.period", "ecu.inventory", "config.get", "ota.campaign", "records.resend")
REASONS = ("malformed", "unsigned", "bad_signature", "wrong_vin", "unknown", "expired",
           "replayed")
MAX_PAYLOAD = 64 * 1024
NONCE = re.compile(r"^[0-9a-f]{32}$")

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS command_nonce (
        nonce      TEXT PRIMARY KEY,
        cmd        TEXT NOT NULL,
        keep_until REAL NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS command_nonce_keep ON command_nonce(keep_until)",
)


class CommandRejected(Exception):
    """A command failed a check; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str, envelope: Mapping[str, Any] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.envelope = envelope


class CommandFailed(Exception):
    """Raised by a handler: the command was valid but could not be carried out."""


@dataclass(frozen=True)
class Command:
    """A verified command, as handlers receive it."""

    name: str
    vin: str
    nonce: str
    issued: float
    expires: float
    args: dict[str, Any]
    key_id: str


Handler = Callable[[Command], Any]


@dataclass
class Outcome:
    """What happened to one incoming command, for the caller to record and publish."""

    name: str
    accepted: bool
    reason: str | None = None          # one of REASONS when rejected
    detail: str = ""
    nonce: str | None = None
    key_id: str | None = None
    response: dict[str, Any] | None = None   # publish on icv/{vin}/responses/{name}
    command: Command | None = field(default=None, repr=False)

    def rejection_data(self) -> dict[str, Any]:
        """``data`` of the ``agent.command_rejected`` record."""
        return {"cmd": self.name, "reason": self.reason, "detail": self.detail,
                "nonce": self.nonce, "key_id": self.key_id}


def canonical(envelope: Mapping[str, Any]) -> bytes:
    """The signed bytes: the envelope without ``sig`` as RFC 8785 (JCS) canonical JSON,
    UTF-8, as for records (docs/records.md), so a backend in any language can sign."""
    return canonical_json({k: v for k, v in envelope.items() if k != "sig"})


def _parse_time(value: Any, name: str) -> float:
    if not isinstance(value, str):
        raise CommandRejected("malformed", f"{name}: expected an ISO-8601 time")
    try:
        return parse_iso(value, zone_required=True)
    except ValueError as exc:
        detail = "time without a zone" if "zone" in str(exc) else \
            f"{value[:40]!r} is not ISO-8601"
        raise CommandRejected("malformed", f"{name}: {detail}") from None


def sign_command(private_key: Ed25519PrivateKey, vin: str, cmd: str,
                 args: Mapping[str, Any] | None = None, ttl_s: float = 300.0, *,
                 now: float | None = None, nonce: str | None = None) -> bytes:
    """A signed command envelope (the backend side), ready to publish on cmd/{cmd}."""
    issued = time.time() if now is None else now
    envelope: dict[str, Any] = {
        "cmd": cmd, "vin": vin, "nonce": nonce or secrets.token_hex(16),
        "issued": iso_ms(issued), "expires": iso_ms(issued + ttl_s), "args": dict(args or {}),
        "key_id": fingerprint(private_key.public_key()),
    }
    envelope["sig"] = base64.b64encode(private_key.sign(canonical(envelope))).decode("ascii")
    return json.dumps(envelope, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class CommandGate:
    """Verifies incoming commands against pinned backend keys and dispatches them."""

    def __init__(self, keys: Iterable[Ed25519PublicKey], db: StateDB, vin: str, *,
                 max_age_s: float = 600.0, clock_skew_s: float = 30.0,
                 clock: Callable[[], float] = time.time):
        self.keys = {fingerprint(k): k for k in keys}
        if not self.keys:
            log.warning("no backend keys pinned: every command will be rejected")
        self.db = db
        self.vin = vin
        self.max_age_s = max_age_s
        self.clock_skew_s = clock_skew_s
        self.clock = clock
        self.handlers: dict[str, Handler] = {}
        self.rejected: dict[str, int] = dict.fromkeys(REASONS, 0)
        self.accepted = 0
        with db.lock:
            for statement in SCHEMA:
                db.conn.execute(statement)

    @classmethod
    def from_config(cls, config: CommandsConfig, db: StateDB, vin: str, *,
                    resolve: Callable[[str], Path] = Path, **kwargs: Any) -> CommandGate:
        """Load the pinned PEM keys (``resolve`` maps config paths, e.g. AgentConfig.resolve);
        raises ``agent.records.keys.KeyFileError`` naming a bad file."""
        keys = [load_public_key(resolve(p)) for p in config.backend_keys]
        return cls(keys, db, vin, max_age_s=config.max_age_s,
                   clock_skew_s=config.clock_skew_s, **kwargs)

    def register(self, name: str, handler: Handler) -> None:
        """Handle command ``name`` (one of COMMANDS, or a new one) with ``handler``."""
        self.handlers[name] = handler

    @property
    def known(self) -> set[str]:
        return set(COMMANDS) | set(self.handlers)

    # -- checks ----------------------------------------------------------------------

    def verify(self, name: str, payload: bytes) -> Command:
        """The verified command, or ``CommandRejected`` with the reason. Does not record the
        nonce (``handle`` does, in the same step that accepts the command)."""
        envelope = self._parse(name, payload)
        self._check_signature(envelope)
        if envelope["vin"] != self.vin:
            raise CommandRejected("wrong_vin", f"for {envelope['vin'][:20]!r}", envelope)
        if envelope["cmd"] not in self.known:
            raise CommandRejected("unknown", f"no command {envelope['cmd'][:60]!r}", envelope)
        issued = _parse_time(envelope["issued"], "issued")
        expires = _parse_time(envelope["expires"], "expires")
        now = self.clock()
        if now > expires:
            raise CommandRejected("expired", f"expired at {envelope['expires']}", envelope)
        if issued > now + self.clock_skew_s:
            raise CommandRejected("expired", f"issued in the future ({envelope['issued']})",
                                  envelope)
        if now - issued > self.max_age_s:
            raise CommandRejected("expired", f"issued more than {self.max_age_s:g} s ago",
                                  envelope)
        if expires - issued > self.max_age_s:
            raise CommandRejected("expired", f"valid for longer than {self.max_age_s:g} s",
                                  envelope)
        return Command(envelope["cmd"], envelope["vin"], envelope["nonce"], issued, expires,
                       envelope["args"], envelope["key_id"])

    def _parse(self, name: str, payload: bytes) -> dict[str, Any]:
        try:
            envelope = wirejson.loads(payload, max_bytes=MAX_PAYLOAD)
        except ValueError as exc:
            raise CommandRejected("malformed", f"not accepted as JSON: {exc}") from None
        if not isinstance(envelope, dict):
            raise CommandRejected("malformed", "not a JSON object")
        if not envelope.get("sig"):
            raise CommandRejected("unsigned", "no signature", envelope)
        for key, kind in (("cmd", str), ("vin", str), ("nonce", str), ("issued", str),
                          ("expires", str), ("args", dict), ("key_id", str), ("sig", str)):
            if not isinstance(envelope.get(key), kind):
                raise CommandRejected("malformed", f"{key}: missing or not a {kind.__name__}",
                                      envelope)
        if not NONCE.match(envelope["nonce"]):
            raise CommandRejected("malformed", "nonce: expected 32 lowercase hex digits",
                                  envelope)
        if envelope["cmd"] != name:
            raise CommandRejected("malformed", f"published on cmd/{name[:60]} but says "
                                  f"{envelope['cmd'][:60]!r}", envelope)
        return envelope

    def _check_signature(self, envelope: dict[str, Any]) -> None:
        key = self.keys.get(envelope["key_id"])
        if key is None:
            raise CommandRejected("bad_signature",
                                  f"key {envelope['key_id'][:32]!r} is not pinned", envelope)
        try:
            signed = canonical(envelope)
        except ValueError as exc:         # e.g. an integer beyond 2**53: no JCS form
            raise CommandRejected("malformed", f"no canonical form: {exc}", envelope) from None
        try:
            sig = base64.b64decode(envelope["sig"], validate=True)
            key.verify(sig, signed)
        except (binascii.Error, ValueError):
            raise CommandRejected("bad_signature", "sig is not base64", envelope) from None
        except InvalidSignature:
            raise CommandRejected("bad_signature", "signature does not match", envelope) from None

    def _claim_nonce(self, command: Command) -> None:
        """Record the nonce durably; ``replayed`` if it is already there."""
        keep_until = max(command.expires, command.issued + self.max_age_s) + self.clock_skew_s
        now = self.clock()
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM command_nonce WHERE keep_until < ?", (now,))
            try:
                conn.execute("INSERT INTO command_nonce(nonce, cmd, keep_until) VALUES (?,?,?)",
                             (command.nonce, command.name, keep_until))
            except sqlite3.IntegrityError:
                raise CommandRejected("replayed", f"nonce {command.nonce} already used",
                                      {"nonce": command.nonce, "key_id": command.key_id}
                                      ) from None

    # -- the whole step ---------------------------------------------------------------

    def handle(self, name: str, payload: bytes) -> Outcome:
        """Verify, claim the nonce, run the handler; never raises for bad input.

        Call it outside any open transaction of ``db`` (it commits the nonce itself)."""
        try:
            command = self.verify(name, payload)
            self._claim_nonce(command)
        except CommandRejected as exc:
            return self._rejected(name, exc)
        self.accepted += 1
        outcome = Outcome(name, True, nonce=command.nonce, key_id=command.key_id,
                          command=command)
        handler = self.handlers.get(command.name)
        if handler is None:
            outcome.response = {"nonce": command.nonce, "ok": False,
                                "error": f"{command.name} is not available on this unit"}
            return outcome
        try:
            result = handler(command)
        except CommandFailed as exc:
            outcome.response = {"nonce": command.nonce, "ok": False, "error": str(exc)}
            return outcome
        except Exception as exc:   # a handler bug answers as an error, never a crash
            log.exception("command %s failed", command.name)
            outcome.response = {"nonce": command.nonce, "ok": False,
                                "error": f"internal error: {type(exc).__name__}"}
            return outcome
        outcome.response = {"nonce": command.nonce, "ok": True, "result": result}
        return outcome

    def _rejected(self, name: str, exc: CommandRejected) -> Outcome:
        self.rejected[exc.reason] = self.rejected.get(exc.reason, 0) + 1
        env = exc.envelope or {}
        nonce = env.get("nonce") if isinstance(env.get("nonce"), str) else None
        key_id = env.get("key_id") if isinstance(env.get("key_id"), str) else None
        log.warning("command %r rejected: %s", name[:60], exc)
        outcome = Outcome(name[:120], False, exc.reason, exc.detail, nonce and nonce[:64],
                          key_id and key_id[:64])
        if exc.reason in ("wrong_vin", "unknown", "expired", "replayed"):
            # The signature was good: the backend deserves to know why nothing happened.
            outcome.response = {"nonce": outcome.nonce, "ok": False, "error": exc.reason}
        return outcome
