"""The bench backend: receive records over MQTT, verify, de-duplicate, store, watch the chain.

Subscriptions (MQTT 5, QoS 1)::

    $share/<group>/icv/+/events/#   records; the group splits them between backends
    icv/+/status                    retained online/offline of each vehicle
    icv/+/responses/#               answers to signed commands

Everything runs on paho's network thread; the message callback returns only after the
record is committed, so paho's PUBACK (sent after the callback) never acknowledges a
record the backend does not have. paho reconnects by itself with exponential backoff
(``backoff_min_s`` .. ``backoff_max_s``) and every CONNACK subscribes again.

The session is persistent by default, so records published while the backend is away are
queued for it. One limit seen with Mosquitto 2.0.11: after a restart of the broker itself
the session comes back with its plain subscriptions but without its shared ones, so a
backend in a share group misses what vehicles publish between the broker's restart and
its own re-subscription. Where nothing may be missed across broker restarts, run one
backend outside any group (``group=""``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.reasoncodes import ReasonCode

from agent.uplink import topics
from agent.uplink.commands import sign_command
from hil.backend.broker import BrokerConfig
from hil.backend.store import CONFLICT, DUPLICATE, BackendStore, VehicleSummary
from hil.backend.verify import RecordRejected, VehicleKeys, check_record

log = logging.getLogger(__name__)

DEFAULT_GROUP = "icv-backend"
DEFAULT_SESSION_EXPIRY = 3600   # s the broker keeps a persistent backend session
LIVE_DATA = 90          # characters of ``data`` shown per live line


def default_client_id(db: Path) -> str:
    """One stable client id per backend database: the broker keeps that backend's session
    (its subscriptions and the records that arrive while it is away) across restarts of
    the backend and of the broker."""
    digest = hashlib.sha256(str(db.resolve()).encode()).hexdigest()[:12]
    return f"icv-backend-{digest}"


def subscriptions(group: str) -> list[str]:
    """Topic filters of one backend; an empty ``group`` subscribes to every record."""
    records = [f"{topics.ROOT}/+/events/#", f"{topics.ROOT}/+/resent/#"]
    return [f"$share/{group}/{t}" if group else t for t in records] + \
        [f"{topics.ROOT}/+/status", f"{topics.ROOT}/+/responses/#"]


@dataclass
class Counters:
    """What this backend process saw (the store keeps the totals across runs)."""

    messages: int = 0           # on events topics, anything at all
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0          # same id, other hash
    rejected: dict[str, int] = field(default_factory=dict)
    alarms: int = 0
    statuses: int = 0
    responses: int = 0
    errors: int = 0             # unexpected failures while handling a message
    resent: int = 0             # records that came again on a resent topic
    resend_requests: int = 0    # signed records.resend commands sent for gaps
    connects: int = 0
    disconnects: int = 0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())


def _short(value: Any, limit: int = LIVE_DATA) -> str:
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _clock(at: float) -> str:
    return datetime.fromtimestamp(at).strftime("%H:%M:%S.%f")[:-3]


class Backend:
    """Receives, verifies and stores the records of a fleet; sends signed commands.

    ``keys`` pins the vehicle public keys: a ``VehicleKeys``, a folder of ``<VIN>.pem``
    files or a mapping VIN -> public key. ``live`` gets one line per message received.

    ``persistent`` (default) with no ``broker.client_id``: the client id comes from the
    database path and the session outlives the connection (``session_expiry_s``, default
    1 h), so records published while this backend reconnects are queued, not lost. Two
    backends must not share a database (they would share the id and kick each other off).
    ``persistent=False`` takes a random id and a session that ends with the connection.
    """

    def __init__(self, broker: BrokerConfig, db: str | Path | BackendStore,
                 keys: VehicleKeys | str | Path | Mapping[str, Ed25519PublicKey], *,
                 group: str = DEFAULT_GROUP, live: TextIO | None = None,
                 persistent: bool = True, resend_key: Ed25519PrivateKey | None = None,
                 gap_wait_s: float = 5.0):
        if isinstance(keys, VehicleKeys):
            self.keys = keys
        elif isinstance(keys, Mapping):
            self.keys = VehicleKeys(keys=keys)
        else:
            self.keys = VehicleKeys(keys)
        self.store = db if isinstance(db, BackendStore) else BackendStore(db)
        if persistent and not broker.client_id:
            broker = dataclasses.replace(broker, client_id=default_client_id(self.store.path),
                                         session_expiry_s=broker.session_expiry_s
                                         or DEFAULT_SESSION_EXPIRY)
        self.broker = broker
        self.group = group
        self.live = live
        self.counters = Counters()
        self.last_message = time.monotonic()     # of an events message (for --until-idle)
        self._cond = threading.Condition()
        self._subscribed = False
        self._connected = False
        self._waiters: dict[str, list[Any]] = {}  # nonce -> [response or None]
        self._client: mqtt.Client | None = None
        # Gaps that outlive gap_wait_s (not just lanes overtaking each other in flight)
        # are asked for again with a signed records.resend, when a key is given.
        self.resend_key = resend_key
        self.gap_wait_s = gap_wait_s
        self._gaps_seen: dict[tuple[str, int, int], float] = {}
        self._gaps_asked: dict[tuple[str, int, int], float] = {}
        self._gap_stop = threading.Event()
        self._gap_thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float | None = 30.0) -> bool:
        """Connect in the background; with ``timeout``, wait until subscribed (False if not
        yet: paho keeps trying with backoff, e.g. while the broker is down)."""
        if self._client is None:
            client = self.broker.make_client("icv-backend")
            client.on_connect = self._on_connect
            client.on_connect_fail = self._on_connect_fail
            client.on_disconnect = self._on_disconnect
            client.on_subscribe = self._on_subscribe
            client.on_message = self._on_message
            self._client = client
            client.connect_async(**self.broker.connect_kwargs())
            client.loop_start()
        if self.resend_key is not None and self._gap_thread is None:
            self._gap_stop.clear()
            self._gap_thread = threading.Thread(target=self._watch_gaps, daemon=True,
                                                name="backend-gaps")
            self._gap_thread.start()
        if timeout is None:
            return self.subscribed
        return self.wait(lambda: self._subscribed, timeout)

    def stop(self) -> None:
        """Disconnect; the store stays open for summaries (``close`` closes both)."""
        self._gap_stop.set()
        if self._gap_thread is not None:
            self._gap_thread.join(5.0)
            self._gap_thread = None
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        with self._cond:
            self._connected = self._subscribed = False
            self._cond.notify_all()

    def close(self) -> None:
        self.stop()
        self.store.close()

    def __enter__(self) -> Backend:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def subscribed(self) -> bool:
        return self._subscribed

    @property
    def connected(self) -> bool:
        return self._connected

    def wait(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate`` holds (re-checked after every message)."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_idle(self, idle_s: float, timeout: float) -> bool:
        """Wait until no record arrived for ``idle_s`` seconds; False after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            now = time.monotonic()
            quiet = now - self.last_message
            if quiet >= idle_s:
                return True
            if now >= deadline:
                return False
            time.sleep(min(idle_s - quiet, deadline - now, 0.2))

    # -- results -----------------------------------------------------------------------

    def summary(self, vin: str) -> VehicleSummary:
        return self.store.summary(vin)

    def summaries(self) -> list[VehicleSummary]:
        return self.store.summaries()

    # -- paho callbacks (network thread) -------------------------------------------------

    def _on_connect(self, client: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode,
                    _props: Any) -> None:
        if reason.is_failure:
            log.error("backend: broker %s:%d refused the connection: %s", self.broker.host,
                      self.broker.port, reason)
            return
        self.counters.connects += 1
        log.info("backend: connected to %s:%d (connection #%d)", self.broker.host,
                 self.broker.port, self.counters.connects)
        with self._cond:
            self._connected = True
            self._cond.notify_all()
        client.subscribe([(t, 1) for t in subscriptions(self.group)])

    def _on_connect_fail(self, _c: mqtt.Client, _u: Any) -> None:
        log.warning("backend: cannot connect to %s:%d; retrying with backoff",
                    self.broker.host, self.broker.port)

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode,
                       _props: Any) -> None:
        with self._cond:
            was = self._connected
            self._connected = self._subscribed = False
            self._cond.notify_all()
        if was and self._client is not None:     # not our own stop()
            self.counters.disconnects += 1
            log.warning("backend: disconnected (%s); reconnecting with backoff", reason)

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, codes: list[ReasonCode],
                      _props: Any) -> None:
        failed = [(t, str(c)) for t, c in zip(subscriptions(self.group), codes, strict=False)
                  if c.is_failure]
        if failed:
            log.error("backend: broker refused subscriptions %s", failed)
            return
        with self._cond:
            self._subscribed = True
            self._cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            self.handle(msg.topic, bytes(msg.payload))
        except Exception:   # a bug or a full disk must not kill paho's thread
            self.counters.errors += 1
            log.exception("backend: cannot handle a message on %s", msg.topic[:120])
        with self._cond:
            self._cond.notify_all()

    # -- message handling --------------------------------------------------------------

    def handle(self, topic: str, payload: bytes, received_at: float | None = None) -> str:
        """Handle one message as if it came from the broker; returns what became of it:
        ``stored``, ``duplicate``, ``id_conflict``, ``rejected:<reason>``, ``status``,
        ``response`` or ``ignored``."""
        at = time.time() if received_at is None else received_at
        parts = topic.split("/")
        if len(parts) < 3 or parts[0] != topics.ROOT:
            return "ignored"
        vin, kind = parts[1], parts[2]
        if kind in ("events", "resent") and len(parts) >= 4:
            self.last_message = time.monotonic()
            self.counters.messages += 1
            if kind == "resent":
                self.counters.resent += 1
            return self._record(topic, vin, "/".join(parts[3:]), payload, at)
        if kind == "status" and len(parts) == 3:
            return self._status(vin, payload, at)
        if kind == "responses" and len(parts) >= 4:
            return self._response(vin, "/".join(parts[3:]), payload, at)
        return "ignored"

    def _record(self, topic: str, vin: str, type_: str, payload: bytes, at: float) -> str:
        try:
            checked = check_record(payload, self.keys, topic_vin=vin, topic_type=type_)
        except RecordRejected as exc:
            self.counters.rejected[exc.reason] = self.counters.rejected.get(exc.reason, 0) + 1
            log.warning("backend: rejected a record on %s: %s", topic[:120], exc)
            self.store.reject(vin, topic, exc.reason, exc.detail, payload, record=exc.record,
                              received_at=at)
            seq = exc.record.get("seq") if exc.record else None
            self._show(at, vin, seq, type_, f"REJECTED {exc.reason}: {exc.detail}")
            return f"rejected:{exc.reason}"
        record = checked.record
        added = self.store.add(record, checked.text, checked.key_id, received_at=at)
        for kind, seq, detail in added.alarms:
            self.counters.alarms += 1
            log.error("backend: ALARM %s %s at seq %s: %s", record["vin"], kind, seq, detail)
        if added.outcome == DUPLICATE:
            self.counters.duplicates += 1
            self._show(at, record["vin"], record["seq"], record["type"], "duplicate")
        elif added.outcome == CONFLICT:
            self.counters.conflicts += 1
            self.counters.alarms += 1
            self._show(at, record["vin"], record["seq"], record["type"],
                       "ALARM same id, other hash")
        else:
            self.counters.stored += 1
            note = "".join(f" ALARM {kind}" for kind, _s, _d in added.alarms)
            self._show(at, record["vin"], record["seq"], record["type"],
                       _short(record["data"]) + note)
        return added.outcome

    def _status(self, vin: str, payload: bytes, at: float) -> str:
        status = payload.decode("utf-8", "replace").strip()
        if not status:       # a cleared retained message
            return "ignored"
        self.counters.statuses += 1
        self.store.set_status(vin, status, at)
        self._show(at, vin, None, "status", status)
        return "status"

    def _response(self, vin: str, name: str, payload: bytes, at: float) -> str:
        text = payload.decode("utf-8", "replace")
        self.counters.responses += 1
        self.store.add_response(vin, name, text, at)
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        nonce = body.get("nonce") if isinstance(body, dict) else None
        with self._cond:
            slot = self._waiters.get(nonce) if isinstance(nonce, str) else None
            if slot is not None:
                slot.append(body)
                self._cond.notify_all()
        self._show(at, vin, None, f"response {name}", _short(body if body is not None else text))
        return "response"

    def _show(self, at: float, vin: str, seq: Any, what: str, text: str) -> None:
        if self.live is None:
            return
        where = f"#{seq}" if isinstance(seq, int) else "-"
        try:
            self.live.write(f"{_clock(at)} {vin[:20]:<17} {where:>6} {what[:40]:<24} {text}\n")
            self.live.flush()
        except (OSError, ValueError):   # a closed pipe (| head) only ends the live view
            self.live = None

    # -- commands over this backend's connection ---------------------------------------

    # -- gaps: ask the vehicle to send again -------------------------------------------

    def _watch_gaps(self) -> None:
        while not self._gap_stop.wait(min(1.0, self.gap_wait_s)):
            try:
                self.request_gaps()
            except Exception:   # a store or broker hiccup: try again next round
                log.exception("backend: gap check failed")

    def request_gaps(self, now: float | None = None) -> int:
        """Send ``records.resend`` for every unexplained gap seen for at least gap_wait_s
        (again after 4 x gap_wait_s if it stays open); returns how many were sent."""
        now = time.monotonic() if now is None else now
        client = self._client
        if self.resend_key is None or client is None or not self._subscribed:
            return 0
        sent = 0
        current = set()
        for summary in self.store.summaries():
            for first, last in summary.gaps:
                key = (summary.vin, first, last)
                current.add(key)
                seen = self._gaps_seen.setdefault(key, now)
                if now - seen < self.gap_wait_s or \
                        now - self._gaps_asked.get(key, -1e18) < 4 * self.gap_wait_s:
                    continue
                self._gaps_asked[key] = now
                payload = sign_command(self.resend_key, summary.vin, "records.resend",
                                       {"from_seq": first, "to_seq": last})
                client.publish(topics.command(summary.vin, "records.resend"), payload, qos=1)
                self.counters.resend_requests += 1
                sent += 1
                log.info("backend: %s seq %d..%d missing; asked the vehicle to send again",
                         summary.vin, first, last)
        for key in set(self._gaps_seen) - current:
            self._gaps_seen.pop(key, None)
            self._gaps_asked.pop(key, None)
        return sent

    def send_command(self, private_key: Ed25519PrivateKey, vin: str, cmd: str,
                     args: Mapping[str, Any] | None = None, *, timeout: float = 10.0,
                     ttl_s: float = 300.0) -> dict[str, Any] | None:
        """Sign and publish a command, wait for its response (matched by nonce); None when
        no response came within ``timeout`` (rejected for a bad signature, vehicle away)."""
        client = self._client
        if client is None or not self.wait(lambda: self._subscribed, timeout):
            raise ConnectionError("the backend is not connected to the broker")
        payload = sign_command(private_key, vin, cmd, args, ttl_s)
        nonce = json.loads(payload)["nonce"]
        slot: list[Any] = []
        with self._cond:
            self._waiters[nonce] = slot
        try:
            client.publish(topics.command(vin, cmd), payload, qos=1)
            self.wait(lambda: bool(slot), timeout)
        finally:
            with self._cond:
                self._waiters.pop(nonce, None)
        return slot[0] if slot else None
