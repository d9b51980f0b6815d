"""Uplink against a real Mosquitto with mutual TLS: order, PUBACK-only deletion, outages."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.client import MQTTv311

from agent.journal.outbox import Journal, lane_of
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey
from agent.records.verify import verify_records
from agent.statestore import StateDB
from agent.uplink.client import CONNECTING, ONLINE, Uplink, backoff_delay
from agent.uplink.settings import UplinkConfig
from tests.helpers import SAMPLE, ChildLines
from tests.mqtt_broker import ClientCert, MosquittoBroker, Subscriber
from tests.record_schema import assert_valid_record

VIN = "LSVTEST0000000001"
ROOT = Path(__file__).resolve().parents[1]
EVENTS = f"icv/{VIN}/events/#"
STATUS = f"icv/{VIN}/status"

MIX = ["agent.health", "safety.aeb", "stats.period", "ecu.versions", "accident.record",
       "safety.aeb", "accident.trigger", "agent.health"]


class Vehicle:
    """The pipeline side: a state db with chain and journal that records get appended to."""

    def __init__(self, folder: Path):
        self.path = folder / "state.db"
        self.key = DeviceKey.generate()
        self.db = StateDB(self.path)
        self.journal = Journal(self.db)
        self.chain = RecordChain(self.db, self.key, VIN)
        self.records: list[dict[str, Any]] = []

    def append(self, types: list[str]) -> list[dict[str, Any]]:
        made = []
        with self.db.transaction():
            for type_ in types:
                record = self.chain.make(type_, SAMPLE[type_], 1.7e9 + self.chain.seq,
                                         time_source="system")
                self.journal.store(record)
                made.append(record)
        self.records += made
        return made


@pytest.fixture
def vehicle(tmp_path: Path) -> Iterator[Vehicle]:
    v = Vehicle(tmp_path)
    yield v
    v.db.close()


def config(broker: MosquittoBroker, client: ClientCert, **kw: Any) -> UplinkConfig:
    values: dict[str, Any] = dict(host=broker.host, port=broker.port, ca=str(client.ca),
                                  cert=str(client.cert), key=str(client.key),
                                  backoff_min_s=0.05, backoff_max_s=0.5, keepalive_s=5)
    values.update(kw)
    return UplinkConfig(**values)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def received_records(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.messages if "/events/" in m.topic]


def assert_complete(vehicle: Vehicle, got: list[dict[str, Any]]) -> None:
    """Every stored record arrived, duplicates are byte-identical, the chain verifies."""
    by_id: dict[str, dict[str, Any]] = {}
    for record in got:
        assert by_id.setdefault(record["id"], record) == record
    assert set(by_id) == {r["id"] for r in vehicle.records}
    unique = sorted(by_id.values(), key=lambda r: r["seq"])
    report = verify_records(unique, vehicle.key)
    assert report.ok, report.reason
    assert report.count == len(vehicle.records)


def test_records_arrive_in_lane_then_seq_order_with_properties(
        mqtt_broker: MosquittoBroker, vehicle: Vehicle) -> None:
    pki = mqtt_broker.pki
    vehicle.append(MIX * 8)
    with Subscriber(mqtt_broker, pki.client("backend"), EVENTS) as sub:
        uplink = Uplink(config(mqtt_broker, pki.client(VIN), inflight=7), VIN, vehicle.path)
        uplink.start()
        try:
            assert sub.wait_for(len(vehicle.records))
            assert uplink.wait_idle(30)
        finally:
            uplink.stop()
    got = received_records(sub)
    expected = sorted(vehicle.records, key=lambda r: (lane_of(r["type"]), r["seq"]))
    assert [r["id"] for r in got] == [r["id"] for r in expected]
    for message, record in zip(sub.messages, expected, strict=True):
        assert message.topic == f"icv/{VIN}/events/{record['type']}"
        assert message.user_properties == {"schema": record["schema"], "id": record["id"]}
        assert message.payload == json.dumps(record, separators=(",", ":"),
                                             ensure_ascii=False).encode()
        assert_valid_record(message.json())
    assert_complete(vehicle, got)
    assert vehicle.journal.depth() == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    assert uplink.acked == len(vehicle.records) and uplink.connects == 1


def test_records_stored_while_online_go_out_after_notify(
        mqtt_broker: MosquittoBroker, vehicle: Vehicle) -> None:
    pki = mqtt_broker.pki
    with Subscriber(mqtt_broker, pki.client("backend"), EVENTS) as sub:
        uplink = Uplink(config(mqtt_broker, pki.client(VIN)), VIN, vehicle.path)
        uplink.start()
        try:
            assert wait_until(lambda: uplink.state == ONLINE)
            for _ in range(5):
                vehicle.append(["safety.aeb", "accident.trigger"])
                uplink.notify()
            assert sub.wait_for(10)
            assert uplink.wait_idle(30)
        finally:
            uplink.stop()
    assert_complete(vehicle, received_records(sub))


def test_nothing_leaves_the_outbox_without_a_puback(
        mqtt_broker: MosquittoBroker, vehicle: Vehicle) -> None:
    pki = mqtt_broker.pki
    vehicle.append(MIX * 4)
    uplink = Uplink(config(mqtt_broker, pki.rogue_client(VIN)), VIN, vehicle.path)
    uplink.start()
    try:
        assert wait_until(lambda: uplink.connect_failures >= 3)
        assert vehicle.journal.depth() == {0: 4, 1: 4, 2: 8, 3: 4, 4: 12, 5: 0}
    finally:
        uplink.stop()


@pytest.mark.parametrize("which", ["rogue", "missing"])
def test_wrong_or_missing_client_certificate_is_refused(
        mqtt_broker: MosquittoBroker, vehicle: Vehicle, which: str) -> None:
    pki = mqtt_broker.pki
    vehicle.append(["accident.trigger", "agent.health"])
    good = pki.client(VIN)
    if which == "rogue":
        cfg = config(mqtt_broker, pki.rogue_client(VIN))
    else:
        cfg = config(mqtt_broker, good, cert="", key="")
    with Subscriber(mqtt_broker, pki.client("backend"), f"icv/{VIN}/#") as sub:
        uplink = Uplink(cfg, VIN, vehicle.path)
        uplink.start()
        try:
            assert wait_until(lambda: uplink.connect_failures >= 3)
            assert uplink.connects == 0 and uplink.state != ONLINE
            assert uplink.published == 0
            assert uplink.last_error
        finally:
            uplink.stop()
    assert sub.messages == []
    assert sum(vehicle.journal.depth().values()) == 2


def test_broker_restart_mid_stream_loses_nothing_and_keeps_lane_order(
        mqtt_broker: MosquittoBroker, vehicle: Vehicle) -> None:
    pki = mqtt_broker.pki
    vehicle.append(["agent.health", "safety.aeb"] * 1500)
    # 3.1.1 subscriber: mosquitto 2.0 drops what it queued for an MQTT 5 session on restart.
    with Subscriber(mqtt_broker, pki.client("backend"), EVENTS, protocol=MQTTv311) as sub:
        uplink = Uplink(config(mqtt_broker, pki.client(VIN), inflight=10), VIN, vehicle.path)
        uplink.start()
        try:
            assert sub.wait_for(200)
            mqtt_broker.stop()
            assert sum(vehicle.journal.depth().values()) > 0      # really mid-stream
            assert wait_until(lambda: uplink.state != ONLINE)
            # Stored during the outage, in the worst order for the uplink: lowest lane first.
            during = vehicle.append(["agent.health"] * 20 + ["ecu.versions"] * 20
                                    + ["safety.aeb"] * 20 + ["accident.trigger"] * 5)
            uplink.notify()
            assert wait_until(lambda: uplink.connect_failures >= 1 or
                              uplink.state == CONNECTING)
            mqtt_broker.start()                                    # same port
            assert sub.wait_for(len(vehicle.records), timeout=60)
            assert wait_until(lambda: {r["id"] for r in received_records(sub)} >=
                              {r["id"] for r in vehicle.records}, 60)
            assert uplink.wait_idle(30)
        finally:
            uplink.stop()
    got = received_records(sub)
    assert_complete(vehicle, got)
    assert uplink.reconnects >= 1
    # Records stored during the outage went out by lane, then seq, after the reconnect.
    outage_ids = {r["id"] for r in during}
    first_seen: list[dict[str, Any]] = []
    for record in got:
        if record["id"] in outage_ids and record not in first_seen:
            first_seen.append(record)
    assert [r["id"] for r in first_seen] == \
        [r["id"] for r in sorted(during, key=lambda r: (lane_of(r["type"]), r["seq"]))]
    assert vehicle.journal.depth() == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}


def test_status_online_then_offline_retained_on_clean_stop(
        mqtt_broker: MosquittoBroker, vehicle: Vehicle) -> None:
    pki = mqtt_broker.pki
    uplink = Uplink(config(mqtt_broker, pki.client(VIN)), VIN, vehicle.path)
    uplink.start()
    assert wait_until(lambda: uplink.state == ONLINE)
    with Subscriber(mqtt_broker, pki.client("watcher-1"), STATUS, client_id="w1") as sub:
        assert sub.wait_for(1)
        assert (sub.messages[0].payload, sub.messages[0].retain) == (b"online", True)
        uplink.stop()
        assert sub.wait_for(2)
        assert sub.messages[1].payload == b"offline"
    with Subscriber(mqtt_broker, pki.client("watcher-2"), STATUS, client_id="w2") as late:
        assert late.wait_for(1)
        assert (late.messages[0].payload, late.messages[0].retain) == (b"offline", True)


def test_mqtt_311_is_selectable(mqtt_broker: MosquittoBroker, vehicle: Vehicle) -> None:
    pki = mqtt_broker.pki
    vehicle.append(MIX)
    with Subscriber(mqtt_broker, pki.client("backend"), EVENTS) as sub:
        uplink = Uplink(config(mqtt_broker, pki.client(VIN), protocol="3.1.1"), VIN,
                        vehicle.path)
        uplink.start()
        try:
            assert sub.wait_for(len(MIX))
            assert uplink.wait_idle(30)
        finally:
            uplink.stop()
    got = received_records(sub)
    assert [r["seq"] for r in got] == \
        [r["seq"] for r in sorted(vehicle.records, key=lambda r: (lane_of(r["type"]), r["seq"]))]
    assert_complete(vehicle, got)


KILLED_UPLINK = textwrap.dedent("""
    import sys, time
    from agent.uplink.client import Uplink
    from agent.uplink.settings import UplinkConfig
    host, port, ca, cert, key, db = sys.argv[1:7]
    cfg = UplinkConfig(host=host, port=int(port), ca=ca, cert=cert, key=key, inflight=10,
                       keepalive_s=5)
    uplink = Uplink(cfg, "LSVTEST0000000001", db)
    uplink.start()
    while True:
        print(uplink.acked, flush=True)
        time.sleep(0.01)
""")


def test_sigkilled_uplink_resends_with_same_ids_and_will_says_offline(
        mqtt_broker: MosquittoBroker, vehicle: Vehicle) -> None:
    pki = mqtt_broker.pki
    vehicle.append(["safety.aeb", "agent.health"] * 1500)
    cert = pki.client(VIN)
    with Subscriber(mqtt_broker, pki.client("backend"), f"icv/{VIN}/#") as sub:
        child = subprocess.Popen(
            [sys.executable, "-c", KILLED_UPLINK, mqtt_broker.host, str(mqtt_broker.port),
             str(cert.ca), str(cert.cert), str(cert.key), str(vehicle.path)],
            stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)))
        lines = ChildLines(child, "the uplink child")
        try:
            # Generous: a loaded machine is slow, a stuck uplink still fails the test.
            lines.wait_for(lambda line: int(line) >= 300, 120, "acked >= 300")
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()
            lines.close()
        assert sum(vehicle.journal.depth().values()) > 0          # killed mid-stream
        assert sub.wait(lambda: any(m.topic == STATUS and m.payload == b"offline"
                                    for m in sub.messages), 30)   # the last will
        uplink = Uplink(config(mqtt_broker, cert), VIN, vehicle.path)
        uplink.start()
        try:
            assert uplink.wait_idle(60)
            assert wait_until(lambda: {r["id"] for r in received_records(sub)} >=
                              {r["id"] for r in vehicle.records})
        finally:
            uplink.stop()
    assert_complete(vehicle, received_records(sub))


def test_commands_reach_the_handler_after_every_reconnect(
        mqtt_broker: MosquittoBroker, vehicle: Vehicle) -> None:
    pki = mqtt_broker.pki
    got: list[tuple[str, bytes]] = []
    uplink = Uplink(config(mqtt_broker, pki.client(VIN)), VIN, vehicle.path,
                    on_command=lambda name, payload: got.append((name, payload)))
    uplink.start()
    backend = Subscriber(mqtt_broker, pki.client("backend"), f"icv/{VIN}/responses/#",
                         client_id="backend").start()
    try:
        assert wait_until(lambda: uplink.state == ONLINE)
        backend.client.publish(f"icv/{VIN}/cmd/config.get", b"first", qos=1)
        assert wait_until(lambda: len(got) == 1)
        mqtt_broker.restart()
        assert wait_until(lambda: uplink.reconnects == 1 and uplink.state == ONLINE)
        assert wait_until(lambda: backend.connections == 2)
        backend.client.publish(f"icv/{VIN}/cmd/ecu.inventory", b"second", qos=1)
        assert wait_until(lambda: len(got) == 2)
        assert uplink.respond("ecu.inventory", {"nonce": "n", "ok": True, "result": {}})
        assert backend.wait_for(1)
    finally:
        backend.stop()
        uplink.stop()
    assert got == [("config.get", b"first"), ("ecu.inventory", b"second")]
    assert backend.messages[0].topic == f"icv/{VIN}/responses/ecu.inventory"
    assert backend.messages[0].json() == {"nonce": "n", "ok": True, "result": {}}


def test_backoff_grows_to_the_cap_with_jitter() -> None:
    import random

    rng = random.Random(7)
    delays = [backoff_delay(n, 0.5, 8.0, rng) for n in range(10)]
    for n, delay in enumerate(delays):
        step = min(8.0, 0.5 * 2 ** n)
        assert step / 2 <= delay <= step
    assert len({round(d, 6) for d in delays[5:]}) == 5          # jittered, not lockstep
