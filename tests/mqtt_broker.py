"""Test fixtures around the bench broker (``hil.mosquitto``): a real Mosquitto with mutual
TLS per test, and a subscriber that collects what arrives.

Use the pytest fixtures (``mqtt_pki``, ``mqtt_broker``) or, outside pytest,
``BrokerPKI(folder)`` and ``MosquittoBroker(folder, pki)`` as a context manager.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from hil.mosquitto import BrokerError, BrokerPKI, ClientCert, MosquittoBroker, find_mosquitto

__all__ = ["BrokerError", "BrokerPKI", "ClientCert", "Message", "MosquittoBroker", "Subscriber",
           "find_mosquitto", "mqtt_broker", "mqtt_pki"]


@dataclass
class Message:
    topic: str
    payload: bytes
    retain: bool
    user_properties: dict[str, str] = field(default_factory=dict)

    def json(self) -> Any:
        import json

        return json.loads(self.payload)


class Subscriber:
    """A paho subscriber with mutual TLS that collects what arrives.

    It keeps a persistent session (MQTT 5 session expiry / 3.1.1 clean_session=False) and
    reconnects by itself. Mosquitto 2.0.11 keeps the queue of a 3.1.1 session across its
    own restart but drops the queue of an MQTT 5 session (seen here): a test that restarts
    the broker and must not lose messages queued for its subscriber uses ``MQTTv311``.
    """

    def __init__(self, broker: MosquittoBroker, cert: ClientCert, topic: str, *,
                 client_id: str = "test-subscriber", protocol: int = mqtt.MQTTv5):
        self.broker, self.topic, self.protocol = broker, topic, protocol
        kwargs: dict[str, Any] = {} if protocol == mqtt.MQTTv5 else {"clean_session": False}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=protocol, **kwargs)
        self.client.tls_set(ca_certs=str(cert.ca), certfile=str(cert.cert),
                            keyfile=str(cert.key))
        self.client.reconnect_delay_set(0.05, 0.5)
        self.messages: list[Message] = []
        self.connections = 0
        self.subscriptions = 0
        self._cond = threading.Condition()
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    def _on_connect(self, client: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not reason.is_failure:
            client.subscribe(self.topic, qos=1)
            with self._cond:
                self.connections += 1
                self._cond.notify_all()

    def _on_subscribe(self, _c: mqtt.Client, _u: Any, _mid: int, _codes: Any, _p: Any) -> None:
        with self._cond:
            self.subscriptions += 1
            self._cond.notify_all()

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg.properties, "UserProperty", None) or []
        with self._cond:
            self.messages.append(Message(msg.topic, bytes(msg.payload), bool(msg.retain),
                                         dict(props)))
            self._cond.notify_all()

    def start(self, timeout: float = 10.0) -> Subscriber:
        props = None
        if self.protocol == mqtt.MQTTv5:
            from paho.mqtt.packettypes import PacketTypes
            from paho.mqtt.properties import Properties

            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 3600
        self.client.connect(self.broker.host, self.broker.port, keepalive=10,
                            properties=props)
        self.client.loop_start()
        if not self.wait(lambda: self.subscriptions > 0, timeout):
            raise BrokerError("test subscriber could not connect and subscribe")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait(self, predicate: Any, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(predicate, timeout)

    def wait_for(self, count: int, timeout: float = 30.0) -> bool:
        """Wait until at least ``count`` messages arrived."""
        return self.wait(lambda: len(self.messages) >= count, timeout)

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture(scope="session")
def mqtt_pki(tmp_path_factory: pytest.TempPathFactory) -> BrokerPKI:
    return BrokerPKI(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mqtt_broker(mqtt_pki: BrokerPKI, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[MosquittoBroker]:
    """A fresh broker per test (its own port and persistence folder), stopped at teardown."""
    try:
        broker = MosquittoBroker(tmp_path_factory.mktemp("broker"), mqtt_pki)
        broker.start()
    except BrokerError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()
