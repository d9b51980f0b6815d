"""The user's consent, from three channels, all ending in one ``Decision``:

* HMI: local MQTT topics (``HmiAdapter``; see docs/ota.md for topics and payloads),
* owner app: the signed backend command ``ota.consent``
  (``{"activity_id", "campaign", "offer_nonce", "decision"}``),
* bench: ``icv-agent ota consent ID --accept|--decline`` writes a row into the state
  database (``ConsentInbox``); the running agent takes it within ``consent_poll_s``.

``decision`` is ``"accept"`` or ``"decline"`` on every channel.

A consent answers one offer (``Offer``): the agent draws a random ``offer_nonce`` when it
shows the offer and sends it with the offer (HMI topic, ``ota.consent_requested``). Only a
consent naming that activity, campaign and nonce, given after the offer was shown and
before it expires, counts (``Offer.refusal``); anything else, an ``accept`` left before
the offer existed included, is refused and recorded as ``ota.consent_rejected``. The nonce
proves the answer was given to this offer, not who gave it: each channel authenticates its
sender (broker ACL, signed command, access to the state database).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import paho.mqtt.client as mqtt

from agent import wirejson
from agent.ota.settings import HmiConfig
from agent.statestore import StateDB

log = logging.getLogger(__name__)

DECISIONS = ("accept", "decline")
MAX_CONSENT = 4096         # bytes of one HMI consent message
CHANNELS = ("hmi", "backend", "cli")
OFFER_KEY = "ota.offer"    # kv: the open offer (what the bench CLI reads the nonce from)
NONCE_BYTES = 16           # offer_nonce: 32 hex digits
# Why a consent was refused (``ota.consent_rejected.reason``).
REFUSALS = ("no_offer", "before_offer", "expired", "nonce_missing", "nonce_mismatch",
            "campaign_mismatch", "already_answered")
INBOX_SCHEMA = """CREATE TABLE IF NOT EXISTS ota_consent_inbox (
    id          INTEGER PRIMARY KEY,
    activity_id TEXT NOT NULL,
    decision    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    at          REAL NOT NULL,
    taken       INTEGER NOT NULL DEFAULT 0,
    offer_nonce TEXT NOT NULL DEFAULT '',
    campaign    TEXT NOT NULL DEFAULT ''
)"""
INBOX_ADDED = {"offer_nonce": "TEXT NOT NULL DEFAULT ''",
               "campaign": "TEXT NOT NULL DEFAULT ''"}   # columns older databases lack


class ConsentError(ValueError):
    """A consent message that cannot be used (malformed, unknown decision)."""


@dataclass(frozen=True)
class Decision:
    activity_id: str
    accepted: bool
    channel: str            # one of CHANNELS
    at: float               # UTC epoch seconds when the agent got it (cli: when posted)
    by: str = ""            # e.g. the backend key id
    offer_nonce: str = ""   # the nonce of the offer it answers ("" = none given)
    campaign: str = ""      # the campaign of the offer it answers

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = "accepted" if self.accepted else "declined"
        return out


def parse_decision(body: Any, channel: str, by: str = "") -> Decision:
    """``{"activity_id", "campaign", "offer_nonce", "decision": "accept"|"decline"}`` ->
    ``Decision``. A missing nonce or campaign parses (the offer check refuses it and the
    refusal is recorded); wrong types and an unknown decision are ``ConsentError``."""
    if not isinstance(body, dict):
        raise ConsentError("expected a JSON object")
    activity = body.get("activity_id")
    decision = body.get("decision")
    if not isinstance(activity, str) or not activity or len(activity) > 128:
        raise ConsentError("activity_id: expected a non-empty string")
    if decision not in DECISIONS:
        raise ConsentError(f"decision: expected one of {', '.join(DECISIONS)}")
    nonce = body.get("offer_nonce", "")
    if not isinstance(nonce, str) or len(nonce) > 128:
        raise ConsentError("offer_nonce: expected the offer's nonce (a string)")
    campaign = body.get("campaign", "")
    if not isinstance(campaign, str) or len(campaign) > 128:
        raise ConsentError("campaign: expected the offer's campaign (a string)")
    return Decision(activity, decision == "accept", channel, time.time(), by, nonce, campaign)


@dataclass(frozen=True)
class Offer:
    """The offer the user is shown; a consent counts only as an answer to it."""

    activity_id: str
    campaign: str
    nonce: str
    shown_at: float          # epoch seconds; a consent given earlier answers no offer
    expires_at: float
    inbox_mark: int = 0      # bench inbox rows up to this id were left before the offer

    @classmethod
    def new(cls, activity_id: str, campaign: str, expires_at: float,
            inbox_mark: int = 0) -> Offer:
        return cls(activity_id, campaign, secrets.token_hex(NONCE_BYTES), time.time(),
                   expires_at, inbox_mark)

    def refusal(self, d: Decision, row: int | None = None) -> str | None:
        """None when ``d`` answers this offer, else why not (one of ``REFUSALS``).

        ``row`` is the bench inbox row id: a row older than the offer is refused even
        if its clock says otherwise."""
        if d.activity_id != self.activity_id:
            return "no_offer"
        if d.at < self.shown_at or (row is not None and row <= self.inbox_mark):
            return "before_offer"
        if d.at > self.expires_at:
            return "expired"
        if not d.offer_nonce:
            return "nonce_missing"
        if not hmac.compare_digest(d.offer_nonce.encode(), self.nonce.encode()):
            return "nonce_mismatch"
        if d.campaign != self.campaign:
            return "campaign_mismatch"
        return None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> Offer | None:
        """A persisted offer, or None when ``data`` is not one (absent, older format)."""
        try:
            return cls(**data)
        except TypeError:
            return None


def open_offer(db: StateDB) -> Offer | None:
    """The offer the agent has open (persisted while it waits for the answer)."""
    return Offer.from_dict(db.get(OFFER_KEY))


def save_offer(db: StateDB, offer: Offer | None) -> None:
    db.put(OFFER_KEY, None if offer is None else offer.as_dict())


class RejectLimiter:
    """At most ``limit`` ``ota.consent_rejected`` records per ``window_s``: refusals are
    cheap to cause (a local HMI topic), records are not. The rest are counted."""

    def __init__(self, limit: int = 10, window_s: float = 60.0):
        self.limit = limit
        self.window_s = window_s
        self._start = 0.0
        self._count = 0
        self.suppressed = 0          # since the last recorded refusal
        self._lock = threading.Lock()

    def allow(self, now: float) -> tuple[bool, int]:
        """(record this one?, refusals suppressed since the last record)."""
        with self._lock:
            if now - self._start >= self.window_s:
                self._start, self._count = now, 0
            if self._count >= self.limit:
                self.suppressed += 1
                return False, 0
            self._count += 1
            suppressed, self.suppressed = self.suppressed, 0
            return True, suppressed


class ConsentInbox:
    """Consent rows written by the bench CLI (another process) into the state database."""

    def __init__(self, db: StateDB):
        self.db = db
        with db.lock:
            db.conn.execute(INBOX_SCHEMA)
            have = {row[1] for row in db.conn.execute("PRAGMA table_info(ota_consent_inbox)")}
            for column, kind in INBOX_ADDED.items():
                if column not in have:
                    db.conn.execute(f"ALTER TABLE ota_consent_inbox ADD COLUMN {column} {kind}")

    def post(self, activity_id: str, accept: bool, channel: str = "cli", *,
             offer_nonce: str | None = None, campaign: str | None = None) -> int:
        """Leave an answer; the row id. ``offer_nonce``/``campaign`` None: those of the
        open offer when it is for ``activity_id`` (else none: the agent will refuse it)."""
        offer = open_offer(self.db)
        mine = offer is not None and offer.activity_id == activity_id
        if offer_nonce is None:
            offer_nonce = offer.nonce if mine and offer else ""
        if campaign is None:
            campaign = offer.campaign if mine and offer else ""
        with self.db.transaction() as conn:
            cur = conn.execute(
                "INSERT INTO ota_consent_inbox(activity_id, decision, channel, at, offer_nonce,"
                " campaign) VALUES (?,?,?,?,?,?)",
                (activity_id, "accept" if accept else "decline", channel, time.time(),
                 offer_nonce, campaign))
            return int(cur.lastrowid or 0)

    def mark(self) -> int:
        """The id of the newest row: rows up to it were left before an offer made now."""
        with self.db.lock:
            row = self.db.conn.execute("SELECT MAX(id) FROM ota_consent_inbox").fetchone()
        return int(row[0] or 0)

    def take(self) -> list[tuple[int, Decision]]:
        """Every row not taken yet, oldest first, as ``(row id, Decision)``; they are
        taken (each row is looked at once, whether it counts or is refused)."""
        with self.db.lock:
            pending = self.db.conn.execute(
                "SELECT 1 FROM ota_consent_inbox WHERE taken=0 LIMIT 1").fetchone()
        if pending is None:
            return []
        with self.db.transaction() as conn:
            rows = conn.execute("SELECT id, activity_id, decision, channel, at, offer_nonce, "
                                "campaign FROM ota_consent_inbox WHERE taken=0 ORDER BY id"
                                ).fetchall()
            conn.execute("UPDATE ota_consent_inbox SET taken=1 WHERE taken=0 AND id<=?",
                         (rows[-1][0] if rows else 0,))
        return [(r[0], Decision(r[1], r[2] == "accept", r[3], r[4], "", r[5], r[6]))
                for r in rows]


def hmi_topics(vin: str) -> dict[str, str]:
    base = f"icv/{vin}/hmi/ota"
    return {"offer": f"{base}/offer", "consent": f"{base}/consent",
            "progress": f"{base}/progress", "result": f"{base}/result"}


class HmiAdapter:
    """Talks to the HMI over MQTT with its own paho client (reconnects by itself).

    Publishes the offer (retained, cleared when answered or expired), progress and the
    result (retained); hands every valid consent message to ``on_consent`` (paho's
    thread). Malformed consent messages are counted and logged, never raised.
    """

    def __init__(self, config: HmiConfig, vin: str, on_consent: Callable[[Decision], None],
                 *, host: str, port: int, tls: bool, ca: str = "", cert: str = "",
                 key: str = ""):
        self.config = config
        self.vin = vin
        self.topics = hmi_topics(vin)
        self.on_consent = on_consent
        self.host, self.port = host, port
        self.rejected = 0
        self.connected = threading.Event()
        client_id = config.client_id or f"{vin}-hmi-{secrets.token_hex(3)}"
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv311)
        if tls:
            self.client.tls_set(ca_certs=ca or None, certfile=cert or None,
                                keyfile=key or None, cert_reqs=ssl.CERT_REQUIRED,
                                tls_version=ssl.PROTOCOL_TLS_CLIENT)
        self.client.reconnect_delay_set(0.2, 10)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message

    def start(self) -> HmiAdapter:
        self.client.connect_async(self.host, self.port, keepalive=30)
        self.client.loop_start()
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if reason.is_failure:
            log.warning("hmi: broker %s:%d refused: %s", self.host, self.port, reason)
            return
        client.subscribe(self.topics["consent"], qos=1)
        self.connected.set()

    def _on_disconnect(self, *_a: Any) -> None:
        self.connected.clear()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            decision = parse_decision(wirejson.loads(msg.payload, max_bytes=MAX_CONSENT),
                                      "hmi")
        except (ValueError, ConsentError) as exc:
            self.rejected += 1
            log.warning("hmi: consent message rejected: %s", exc)
            return
        try:
            self.on_consent(decision)
        except Exception:   # never kill paho's thread
            log.exception("hmi: consent handler failed")

    def _publish(self, topic: str, body: dict[str, Any] | None, retain: bool) -> None:
        payload = b"" if body is None else json.dumps(body, ensure_ascii=False).encode()
        self.client.publish(topic, payload, qos=1, retain=retain)

    def offer(self, body: dict[str, Any]) -> None:
        self._publish(self.topics["offer"], body, retain=True)

    def clear_offer(self) -> None:
        self._publish(self.topics["offer"], None, retain=True)

    def progress(self, body: dict[str, Any]) -> None:
        self._publish(self.topics["progress"], body, retain=False)

    def result(self, body: dict[str, Any]) -> None:
        self._publish(self.topics["result"], body, retain=True)
