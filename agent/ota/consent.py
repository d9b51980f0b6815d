"""The user's consent, from three channels, all ending in one ``Decision``:

* HMI: local MQTT topics (``HmiAdapter``; see docs/ota.md for topics and payloads),
* owner app: the signed backend command ``ota.consent`` (``{"activity_id", "decision"}``),
* bench: ``icv-agent ota consent ID --accept|--decline`` writes a row into the state
  database (``ConsentInbox``); the running agent polls for it while an offer is open.

``decision`` is ``"accept"`` or ``"decline"`` on every channel.
"""

from __future__ import annotations

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
from agent.journal.statedb import StateDB
from agent.ota.options import HmiConfig

log = logging.getLogger(__name__)

DECISIONS = ("accept", "decline")
MAX_CONSENT = 4096         # bytes of one HMI consent message
CHANNELS = ("hmi", "backend", "cli")
INBOX_SCHEMA = """CREATE TABLE IF NOT EXISTS ota_consent_inbox (
    id          INTEGER PRIMARY KEY,
    activity_id TEXT NOT NULL,
    decision    TEXT NOT NULL,
    channel     TEXT NOT NULL,
    at          REAL NOT NULL,
    taken       INTEGER NOT NULL DEFAULT 0
)"""


class ConsentError(ValueError):
    """A consent message that cannot be used (malformed, unknown decision)."""


@dataclass(frozen=True)
class Decision:
    activity_id: str
    accepted: bool
    channel: str            # one of CHANNELS
    at: float               # UTC epoch seconds when the agent got it
    by: str = ""            # e.g. the backend key id

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["decision"] = "accepted" if self.accepted else "declined"
        return out


def parse_decision(body: Any, channel: str, by: str = "") -> Decision:
    """``{"activity_id": "...", "decision": "accept"|"decline"}`` -> ``Decision``."""
    if not isinstance(body, dict):
        raise ConsentError("expected a JSON object")
    activity = body.get("activity_id")
    decision = body.get("decision")
    if not isinstance(activity, str) or not activity or len(activity) > 128:
        raise ConsentError("activity_id: expected a non-empty string")
    if decision not in DECISIONS:
        raise ConsentError(f"decision: expected one of {', '.join(DECISIONS)}")
    return Decision(activity, decision == "accept", channel, time.time(), by)


class ConsentInbox:
    """Consent rows written by the bench CLI (another process) into the state database."""

    def __init__(self, db: StateDB):
        self.db = db
        with db.lock:
            db.conn.execute(INBOX_SCHEMA)

    def post(self, activity_id: str, accept: bool, channel: str = "cli") -> None:
        with self.db.transaction() as conn:
            conn.execute("INSERT INTO ota_consent_inbox(activity_id, decision, channel, at) "
                         "VALUES (?,?,?,?)", (activity_id, "accept" if accept else "decline",
                                              channel, time.time()))

    def take(self, activity_id: str) -> Decision | None:
        """The first unanswered row for ``activity_id`` (all its rows are then taken)."""
        with self.db.transaction() as conn:
            row = conn.execute("SELECT decision, channel, at FROM ota_consent_inbox "
                               "WHERE activity_id=? AND taken=0 ORDER BY id LIMIT 1",
                               (activity_id,)).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE ota_consent_inbox SET taken=1 WHERE activity_id=?",
                         (activity_id,))
        return Decision(activity_id, row[0] == "accept", row[1], row[2])


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
