"""Send the outbox to the broker over mutual TLS, QoS 1; delete a record only on its PUBACK.

The uplink has its own SQLite connection to the state database (WAL lets it read and
delete while the pipeline writes) and its own thread; network I/O runs on paho's thread.
The pipeline only calls ``notify()`` after a commit, which never blocks.

One paho client per connection: when a connection drops, whatever was in flight stays in
the outbox and the next connection sends it again, in lane-then-seq order like anything
else (a re-sent record keeps its ``id``; the backend de-duplicates). Reconnects back off
exponentially between ``backoff_min_s`` and ``backoff_max_s`` with random jitter, so a
fleet does not reconnect in lockstep after a broker restart.
"""

from __future__ import annotations

import json
import logging
import random
import sqlite3
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.journal.outbox import RESEND_LANE, Journal
from agent.journal.settings import JournalConfig
from agent.security import EndpointPolicy, EndpointRefused, SecurityLog
from agent.statestore import StateDB
from agent.uplink import topics
from agent.uplink.settings import UplinkConfig

log = logging.getLogger(__name__)

CommandHandler = Callable[[str, bytes], None]

# States as shown in agent.health and STATUS=
STOPPED, CONNECTING, ONLINE, BACKOFF = "stopped", "connecting", "online", "backoff"

_PROTOCOLS = {"5": mqtt.MQTTv5, "3.1.1": mqtt.MQTTv311}


class UplinkConfigError(ValueError):
    """The uplink section cannot work as written (unknown protocol, bad window)."""


def backoff_delay(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Exponential backoff capped at ``high``, with jitter in [50 %, 100 %] of the step."""
    step = min(high, low * (2 ** min(attempt, 30)))
    return step * rng.uniform(0.5, 1.0)


class _Session:
    """One paho client and one connection; callbacks run on paho's thread and only append
    to thread-safe deques or set events, the uplink thread owns everything else."""

    def __init__(self, client: mqtt.Client, wake: threading.Event):
        self.client = client
        self.wake = wake
        self.ready = threading.Event()          # CONNACK with success
        self.gone = threading.Event()           # disconnected or failed to connect
        self.error = ""
        self.acks: deque[tuple[int, bool]] = deque()   # (mid, accepted) from PUBACKs
        self.inflight: dict[int, str] = {}      # mid -> record id (uplink thread only)
        self.refused: set[str] = set()          # ids the broker refused this session


class Uplink:
    """Drains the journal to ``icv/{vin}/events/{type}`` and receives ``icv/{vin}/cmd/#``.

    ``on_command(name, payload)`` runs on paho's network thread: hand the payload to the
    pipeline (a queue) and return; the pipeline verifies it with ``CommandGate``.
    ``on_acked(ids)`` runs on the uplink thread after acknowledged records were deleted.
    Before ``stop()``, ``wait_idle(timeout)`` lets the outbox drain while the link is up.
    """

    def __init__(self, config: UplinkConfig, vin: str, db_path: str | Path, *,
                 on_command: CommandHandler | None = None,
                 on_acked: Callable[[list[str]], None] | None = None,
                 journal_config: JournalConfig | None = None,
                 rng: random.Random | None = None,
                 endpoints: EndpointPolicy | None = None,
                 security: SecurityLog | None = None):
        if config.protocol not in _PROTOCOLS:
            raise UplinkConfigError(f"uplink.protocol: {config.protocol!r} is not one of "
                                    f"{', '.join(_PROTOCOLS)}")
        if config.inflight < 1:
            raise UplinkConfigError("uplink.inflight: must be at least 1")
        self.config = config
        self.vin = vin
        self.client_id = config.client_id or vin
        self.on_command = on_command
        self.on_acked = on_acked
        # GB 44495: only allowed endpoints (None: no allow-list); TLS failures recorded.
        self.endpoints = endpoints
        self.security = security
        self.db = StateDB(db_path, synchronous="NORMAL")
        self.journal = Journal(self.db, journal_config)
        self._v5 = config.protocol == "5"
        self._rng = rng or random.Random()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: _Session | None = None
        self._unsaved_acks: list[str] = []
        self.state = STOPPED
        self.published = 0          # PUBLISH packets of records (re-sends included)
        self.resent = 0             # of which re-sends after a reconnect
        self.acked = 0              # records deleted after their PUBACK
        self.refused = 0            # PUBACKs with a failure reason code (MQTT 5)
        self.connects = 0           # successful connections
        self.reconnects = 0         # successful connections after the first
        self.connect_failures = 0
        self.disconnects = 0
        self.commands = 0
        self.last_error = ""
        self._ever_sent: set[str] = set()

    # -- API for the service -------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="icv-uplink", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        """New records were committed: wake the sender (cheap, never blocks)."""
        self._idle.clear()
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish retained ``offline``, disconnect cleanly and close the connection."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("uplink did not stop within %.1f s", timeout)
                return      # it still uses the connection; it is a daemon thread
            self._thread = None
        self.state = STOPPED
        self.db.close()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the outbox is empty and nothing is in flight (e.g. before shutdown)."""
        self.notify()
        return self._idle.wait(timeout)

    def respond(self, name: str, body: dict[str, Any]) -> bool:
        """Publish a command response (QoS 1, not journalled); False when offline."""
        session = self._session
        if session is None or not session.ready.is_set() or session.gone.is_set():
            return False
        payload = json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()
        info = session.client.publish(topics.response(self.vin, name), payload, qos=1)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    @property
    def online(self) -> bool:
        return self.state == ONLINE

    def stats(self) -> dict[str, Any]:
        """Counters for agent.health."""
        session = self._session
        return {"state": self.state, "published": self.published, "resent": self.resent,
                "acked": self.acked, "refused": self.refused, "connects": self.connects,
                "reconnects": self.reconnects, "connect_failures": self.connect_failures,
                "disconnects": self.disconnects, "commands": self.commands,
                "inflight": len(session.inflight) if session else 0,
                "last_error": self.last_error}

    # -- the uplink thread -------------------------------------------------------------

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            self.state = CONNECTING
            session = self._connect()
            if session is None and self._stop.is_set():
                break
            if session is None:
                self.connect_failures += 1
                delay = backoff_delay(attempt, self.config.backoff_min_s,
                                      self.config.backoff_max_s, self._rng)
                attempt += 1
                if self.connect_failures == 1 or self.connect_failures % 20 == 0:
                    log.warning("uplink: cannot connect to %s:%d (%s); retry in %.1f s "
                                "(failure #%d)", self.config.host, self.config.port,
                                self.last_error, delay, self.connect_failures)
                self.state = BACKOFF
                self._stop.wait(delay)
                continue
            attempt = 0
            self.connects += 1
            if self.connects > 1:
                self.reconnects += 1
            log.info("uplink: online at %s:%d (connection #%d)", self.config.host,
                     self.config.port, self.connects)
            self.state = ONLINE
            self._session = session
            try:
                self._pump(session)
            finally:
                self._end(session)
            if self._stop.is_set():
                break
            self.disconnects += 1
            self.state = BACKOFF
            delay = backoff_delay(0, self.config.backoff_min_s, self.config.backoff_max_s,
                                  self._rng)
            log.warning("uplink: connection lost (%s); reconnect in %.1f s",
                        session.error or "closed", delay)
            self._stop.wait(delay)
        self.state = STOPPED

    def _client(self, session_box: list[_Session]) -> mqtt.Client:
        cfg = self.config
        protocol = _PROTOCOLS[cfg.protocol]
        kwargs: dict[str, Any] = {}
        if not self._v5:
            kwargs["clean_session"] = False
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id,
                             protocol=protocol, reconnect_on_failure=False, **kwargs)
        if cfg.tls:
            client.tls_set(ca_certs=cfg.ca or None, certfile=cfg.cert or None,
                           keyfile=cfg.key or None, cert_reqs=ssl.CERT_REQUIRED,
                           tls_version=ssl.PROTOCOL_TLS_CLIENT)
        client.will_set(topics.status(self.vin), "offline", qos=1, retain=True)
        client.max_inflight_messages_set(cfg.inflight + 16)   # room for status/responses
        client.max_queued_messages_set(0)
        client.connect_timeout = cfg.connect_timeout_s

        def on_connect(_c: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode,
                       _props: Any) -> None:
            s = session_box[0]
            if reason.is_failure:
                s.error = f"CONNACK {reason}"
                s.gone.set()
            else:
                _c.subscribe(topics.commands(self.vin), qos=1)
                _c.publish(topics.status(self.vin), "online", qos=1, retain=True)
                s.ready.set()
            self._wake.set()

        def on_connect_fail(_c: mqtt.Client, _u: Any) -> None:
            s = session_box[0]
            s.error = s.error or "connection failed"
            s.gone.set()
            self._wake.set()

        def on_disconnect(_c: mqtt.Client, _u: Any, _flags: Any, reason: ReasonCode,
                          _props: Any) -> None:
            s = session_box[0]
            s.error = s.error or f"disconnected: {reason}"
            s.gone.set()
            self._wake.set()

        def on_publish(_c: mqtt.Client, _u: Any, mid: int, reason: ReasonCode,
                       _props: Any) -> None:
            session_box[0].acks.append((mid, not reason.is_failure))
            self._wake.set()

        def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
            name = topics.command_name(self.vin, msg.topic)
            if name is None:
                return
            self.commands += 1
            if self.on_command is None:
                log.warning("uplink: command %r ignored: no handler", name)
                return
            try:
                self.on_command(name, bytes(msg.payload))
            except Exception:   # a handler bug must not kill the network thread
                log.exception("uplink: command handler failed for %r", name)

        client.on_connect = on_connect
        client.on_connect_fail = on_connect_fail
        client.on_disconnect = on_disconnect
        client.on_publish = on_publish
        client.on_message = on_message
        return client

    def _connect(self) -> _Session | None:
        """A connected session (CONNACK received), or None with ``last_error`` set."""
        if self.endpoints is not None:
            try:
                self.endpoints.check(self.config.host, self.config.port, "uplink")
            except EndpointRefused as exc:
                self.last_error = str(exc)
                return None
        box: list[_Session] = []
        try:
            client = self._client(box)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"TLS setup: {exc}"
            return None
        session = _Session(client, self._wake)
        box.append(session)
        props = None
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = self.config.session_expiry_s
        try:
            client.connect(self.config.host, self.config.port, self.config.keepalive_s,
                           clean_start=False if self._v5 else mqtt.MQTT_CLEAN_START_FIRST_ONLY,
                           properties=props)
        except (OSError, ssl.SSLError, ValueError) as exc:
            self.last_error = f"connect: {exc}"
            if isinstance(exc, ssl.SSLError) and self.security is not None:
                self.security.report("certificate_failure", {
                    "endpoint": f"{self.config.host}:{self.config.port}", "what": "uplink",
                    "error": str(exc)[:300]})
            return None
        client.loop_start()
        deadline = time.monotonic() + self.config.connect_timeout_s
        while not (session.ready.is_set() or session.gone.is_set() or self._stop.is_set()):
            left = deadline - time.monotonic()
            if left <= 0:
                session.error = "no CONNACK in time"
                break
            self._wake.wait(min(left, 0.5))
            self._wake.clear()
        if session.ready.is_set() and not session.gone.is_set():
            self._wake.set()    # start sending at once
            return session
        self.last_error = session.error or "stopped"
        self._close(client)
        return None

    def _close(self, client: mqtt.Client) -> None:
        try:
            client.disconnect()
        except Exception:   # already gone: nothing to close
            pass
        client.loop_stop()

    def _pump(self, session: _Session) -> None:
        """Keep the in-flight window full until the connection drops or stop() is called."""
        while not self._stop.is_set() and not session.gone.is_set():
            self._wake.wait(1.0)
            self._wake.clear()
            self._take_acks(session)
            self._save_acks()
            if not session.gone.is_set():
                self._fill(session)

    def _take_acks(self, session: _Session) -> None:
        while session.acks:
            mid, accepted = session.acks.popleft()
            rid = session.inflight.pop(mid, None)
            if rid is None:
                continue            # status or response publish
            if accepted:
                self._unsaved_acks.append(rid)
            else:
                self.refused += 1
                session.refused.add(rid)
                log.error("uplink: broker refused record %s; kept for the next connection", rid)

    def _save_acks(self) -> None:
        if not self._unsaved_acks:
            return
        try:
            self.journal.ack_many(self._unsaved_acks)
        except sqlite3.Error as exc:   # locked or full: keep them and try again next round
            self.last_error = f"journal ack: {exc}"
            log.warning("uplink: cannot delete %d acknowledged records yet: %s",
                        len(self._unsaved_acks), exc)
            return
        self.acked += len(self._unsaved_acks)
        done, self._unsaved_acks = self._unsaved_acks, []
        if self.on_acked is not None:
            try:
                self.on_acked(done)
            except Exception:   # an observer bug must not stop the uplink
                log.exception("uplink: on_acked callback failed")

    def _fill(self, session: _Session) -> None:
        free = self.config.inflight - len(session.inflight)
        if free <= 0:
            return
        skip = set(session.inflight.values()) | set(self._unsaved_acks) | session.refused
        try:
            batch = self.journal.next_batch(free, exclude=skip)
        except sqlite3.Error as exc:
            self.last_error = f"journal read: {exc}"
            log.warning("uplink: cannot read the outbox: %s", exc)
            return
        if not batch and not session.inflight and not self._unsaved_acks:
            self._idle.set()
            return
        for item in batch:
            again = item.lane == RESEND_LANE
            props = None
            if self._v5:
                props = Properties(PacketTypes.PUBLISH)
                props.UserProperty = [("schema", item.schema), ("id", item.id)] + \
                    ([("resent", "1")] if again else [])
                props.ContentType = "application/json"
            topic = (topics.resent if again else topics.events)(self.vin, item.type)
            info = session.client.publish(topic, item.payload, qos=1, properties=props)
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self.last_error = f"publish: {mqtt.error_string(info.rc)}"
                break
            session.inflight[info.mid] = item.id
            self.published += 1
            if item.id in self._ever_sent:
                self.resent += 1
            else:
                self._ever_sent.add(item.id)
            if len(self._ever_sent) > 100_000:
                self._ever_sent.clear()     # only feeds the `resent` counter; keep it bounded

    def _end(self, session: _Session) -> None:
        """Leave a session: honour the PUBACKs that made it, say goodbye if stopping."""
        self._take_acks(session)
        self._save_acks()
        if self._stop.is_set() and not session.gone.is_set():
            info = session.client.publish(topics.status(self.vin), "offline", qos=1,
                                          retain=True)
            try:
                info.wait_for_publish(timeout=2.0)
            except (RuntimeError, ValueError):
                pass
            self._take_acks(session)
            self._save_acks()
        self._session = None
        self._close(session.client)
