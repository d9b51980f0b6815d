"""Bench backend against a real Mosquitto with mutual TLS: verification, de-duplication,
gaps, chain and lane checks, shared subscriptions, reconnects and signed commands that go
through the real agent uplink and command gate."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.journal.outbox import Journal, lane_of
from agent.records.chain import RecordChain, record_hash
from agent.records.keys import DeviceKey, KeyFileError, fingerprint, load_public_key
from agent.records.verify import schema_problem, verify_records
from agent.statestore import StateDB
from agent.uplink.client import ONLINE, Uplink
from agent.uplink.commands import CommandGate
from agent.uplink.settings import CommandsConfig, UplinkConfig
from hil import cli as hil_cli
from hil.backend import (
    Backend,
    BackendStore,
    BrokerConfig,
    SendError,
    VehicleKeys,
    keygen,
    load_backend_key,
    send_command,
)
from hil.backend.store import missing_ranges, subtract
from tests.helpers import SAMPLE
from tests.helpers import wait_until as _wait_until
from tests.mqtt_broker import ClientCert, MosquittoBroker

ROOT = Path(__file__).resolve().parents[1]
VIN = "LSVTEST0000000001"
VIN_B = "LSVTEST0000000002"
VIN_UNKNOWN = "LSVTEST0000000009"

# 12 records: health and AEB first, the accident late (so lanes reorder the upload)
MIX = ["agent.health", "safety.aeb", "agent.health", "ecu.versions", "safety.aeb",
       "agent.health", "agent.health", "safety.aeb", "accident.trigger", "accident.record",
       "agent.health", "ecu.versions"]


class Vehicle:
    """A real record chain on a state db, signed with the vehicle's device key."""

    def __init__(self, folder: Path, vin: str, key: DeviceKey | None = None):
        folder.mkdir(parents=True, exist_ok=True)
        self.vin = vin
        self.key = key or DeviceKey.generate()
        self.db = StateDB(folder / f"{vin}-{uuid.uuid4().hex[:6]}.db")
        self.chain = RecordChain(self.db, self.key, vin)
        self.records: list[dict[str, Any]] = []

    def make(self, types: list[str]) -> list[dict[str, Any]]:
        made = []
        with self.db.transaction():
            for type_ in types:
                made.append(self.chain.make(type_, SAMPLE[type_], 1.75e9 + self.chain.seq,
                                            time_source="system"))
        for record in made:
            assert schema_problem(record) is None
        self.records += made
        return made

    def close(self) -> None:
        self.db.close()


def lane_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The order the uplink sends a backlog in: lane, then seq."""
    return sorted(records, key=lambda r: (lane_of(r["type"]), r["seq"]))


def payload(record: dict[str, Any]) -> bytes:
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def resign(record: dict[str, Any], key: DeviceKey, **changes: Any) -> dict[str, Any]:
    """A copy with ``changes``, correctly hashed and signed by ``key``."""
    out = {**record, **changes}
    out["hash"] = record_hash(out)
    out["sig"] = base64.b64encode(key.sign(bytes.fromhex(out["hash"]))).decode()
    return out


class Publisher:
    """A plain paho client (mutual TLS, MQTT 5) standing in for vehicles."""

    def __init__(self, broker: MosquittoBroker, cert: ClientCert):
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2,
                                  client_id=f"pub-{uuid.uuid4().hex[:8]}",
                                  protocol=mqtt.MQTTv5)
        self.client.tls_set(ca_certs=str(cert.ca), certfile=str(cert.cert),
                            keyfile=str(cert.key))
        self.client.connect(broker.host, broker.port, keepalive=10)
        self.client.loop_start()

    def publish(self, topic: str, body: bytes | str, *, retain: bool = False) -> None:
        info = self.client.publish(topic, body, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"no PUBACK for {topic}"

    def record(self, record: dict[str, Any], *, vin: str | None = None) -> None:
        self.publish(f"icv/{vin or record['vin']}/events/{record['type']}", payload(record))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def broker_config(broker: MosquittoBroker, cert: ClientCert, **kw: Any) -> BrokerConfig:
    values: dict[str, Any] = dict(host=broker.host, port=broker.port, ca=cert.ca,
                                  cert=cert.cert, key=cert.key, backoff_min_s=0.05,
                                  backoff_max_s=0.5, keepalive_s=5)
    values.update(kw)
    return BrokerConfig(**values)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """Two pinned vehicles (one as a public PEM, one as its private key file)."""
    keys = tmp_path / "vehicle-keys"
    keys.mkdir()
    a = Vehicle(tmp_path / "a", VIN)
    b = Vehicle(tmp_path / "b", VIN_B)
    (keys / f"{VIN}.pem").write_text(a.key.public_pem())
    b.key.save(keys / f"{VIN_B}.pem")
    yield {"keys": keys, "a": a, "b": b}
    a.close()
    b.close()


@pytest.fixture
def publisher(mqtt_broker: MosquittoBroker) -> Iterator[Publisher]:
    pub = Publisher(mqtt_broker, mqtt_broker.pki.client("vehicle-sim"))
    yield pub
    pub.close()


def wait_until(predicate: Any, timeout: float = 30.0) -> bool:
    return _wait_until(predicate, timeout, every=0.02)


def start_backend(broker: MosquittoBroker, db: Path, keys: Any, **kw: Any) -> Backend:
    cert = broker.pki.client("backend")
    config = broker_config(broker, cert, **{k: kw.pop(k) for k in list(kw)
                                             if k in ("client_id", "session_expiry_s")})
    backend = Backend(config, db, keys, **kw)
    assert backend.start(timeout=30), "backend did not subscribe"
    return backend


# -- the receiving side --------------------------------------------------------------


def test_backend_keeps_verified_records_and_reports_everything_else(
        mqtt_broker: MosquittoBroker, publisher: Publisher, fleet: dict[str, Any],
        tmp_path: Path) -> None:
    a: Vehicle = fleet["a"]
    records = a.make(MIX)
    stranger = Vehicle(tmp_path / "stranger", VIN_UNKNOWN).make(["agent.health"])[0]
    impostor = Vehicle(tmp_path / "impostor", VIN).make(["safety.aeb"])[0]  # wrong key
    tampered = {**records[2], "data": {"cpu": 99.0}}                       # seq 3 altered
    missing = records[6]                                                    # seq 7 withheld

    db = tmp_path / "backend.db"
    backend = start_backend(mqtt_broker, db, fleet["keys"])
    try:
        publisher.publish(f"icv/{VIN}/status", "online", retain=True)
        sent = 0
        for record in lane_order(records):
            if record is missing:
                continue
            publisher.record(tampered if record is records[2] else record)
            sent += 1
        for extra in (records[1], records[4]):      # re-sends after a reconnect
            publisher.record(extra)
        publisher.record(impostor)
        publisher.record(stranger)
        publisher.publish(f"icv/{VIN}/events/agent.health", b"{not json")
        sent += 5
        assert backend.wait(lambda: backend.counters.messages == sent
                            and backend.counters.statuses == 1, 30), backend.counters
    finally:
        backend.stop()

    stored = backend.store.ids(VIN)
    assert stored == {r["id"] for r in records} - {missing["id"], records[2]["id"]}
    assert backend.counters.duplicates == 2
    assert backend.counters.rejected == {"hash": 1, "signature": 1, "unknown_vin": 1,
                                         "malformed": 1}

    s = backend.summary(VIN)
    assert s.records == 10
    assert (s.first_seq, s.last_seq) == (1, 12)
    assert s.gaps == [(3, 3), (7, 7)]
    assert s.chain == "intact"
    assert s.links_checked == 8           # every stored record whose predecessor is stored
    assert s.duplicates == 2
    assert s.rejected == {"hash": 1, "malformed": 1, "signature": 1}
    assert s.alarms == {}
    assert s.status == "online"
    assert s.types["accident.trigger"] == 1 and s.types["agent.health"] == 3
    assert s.lane_order == "kept" and s.lane_violations == 0
    assert s.overtakes > 0                # the accident went before older health records
    assert backend.summary(VIN_UNKNOWN).rejected == {"unknown_vin": 1}
    assert backend.summary(VIN_UNKNOWN).records == 0

    # What is stored is byte for byte what the vehicle signed.
    stored_records = backend.store.records(VIN)
    assert verify_records(stored_records[:2], a.key).ok
    assert stored_records == [r for r in records if r["id"] in stored]
    backend.store.close()


def test_late_records_close_gaps_and_the_summary_says_so(
        mqtt_broker: MosquittoBroker, publisher: Publisher, fleet: dict[str, Any],
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a: Vehicle = fleet["a"]
    records = a.make(MIX)
    db = tmp_path / "backend.db"
    backend = start_backend(mqtt_broker, db, fleet["keys"])
    try:
        for record in lane_order(records):
            if record["seq"] != 7:
                publisher.record(record)
        assert backend.wait(lambda: backend.counters.stored == 11, 30)
        assert backend.summary(VIN).gaps == [(7, 7)]
        publisher.record(records[6])
        assert backend.wait(lambda: backend.counters.stored == 12, 30)
    finally:
        backend.close()

    assert hil_cli.main(["backend", "summary", "--db", str(db), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)["vehicles"][0]
    assert summary["vin"] == VIN and summary["records"] == 12
    assert summary["gaps"] == [] and summary["chain"] == "intact"
    assert summary["links_checked"] == 12
    # seq 7 (agent.health, lane 4) came after seq 12 (lane 4) although stored before it
    assert summary["lane_violations"] == 1
    assert summary["lane_order"].startswith("violated 1x: seq 7 (lane 4) arrived after seq")
    assert hil_cli.main(["backend", "summary", "--db", str(db), "--strict"]) == 1
    text = capsys.readouterr().out
    assert f"{VIN}  PROBLEMS" in text
    assert "chain       intact (12 links checked)" in text
    assert "gaps        none" in text


def test_broken_links_and_reused_ids_are_alarms(
        mqtt_broker: MosquittoBroker, publisher: Publisher, fleet: dict[str, Any],
        tmp_path: Path) -> None:
    """Validly signed by the vehicle key but not a chain: a replaced record, an id reused."""
    a: Vehicle = fleet["a"]
    records = a.make(MIX[:6])
    replaced = resign(records[2], a.key, id=str(uuid.uuid4()), prev_hash="ab" * 32)
    reused = resign(records[4], a.key, data={"speed": 99.0, "cda_state": "ACTIVE",
                                             "duration_s": 9.0})
    backend = start_backend(mqtt_broker, tmp_path / "backend.db", fleet["keys"])
    try:
        for record in (records[0], records[1], replaced, records[3], records[4], reused,
                       records[5]):
            publisher.record(record)
        assert backend.wait(lambda: backend.counters.messages == 7, 30)
    finally:
        backend.close()
    s = backend.store
    summary = BackendStore(s.path).summary(VIN)
    assert summary.chain == "broken at seq 3"
    assert summary.records == 6               # the reused id was not stored
    assert summary.alarms == {"chain_broken": 2, "id_conflict": 1}
    kinds = [(x["kind"], x["seq"]) for x in BackendStore(s.path).alarms(VIN)]
    assert kinds == [("chain_broken", 3), ("chain_broken", 4), ("id_conflict", 5)]
    stored = {r["seq"]: r for r in BackendStore(s.path).records(VIN)}
    assert stored[5] == records[4]            # the first one stays


def test_two_backends_in_one_group_split_the_records(
        mqtt_broker: MosquittoBroker, publisher: Publisher, fleet: dict[str, Any],
        tmp_path: Path) -> None:
    a: Vehicle = fleet["a"]
    records = a.make(MIX * 5)
    first = start_backend(mqtt_broker, tmp_path / "one.db", fleet["keys"], group="fleet")
    second = start_backend(mqtt_broker, tmp_path / "two.db", fleet["keys"], group="fleet")
    watcher = start_backend(mqtt_broker, tmp_path / "all.db", fleet["keys"], group="audit")
    try:
        for record in lane_order(records):
            publisher.record(record)
        assert wait_until(lambda: first.counters.stored + second.counters.stored == 60)
        assert wait_until(lambda: watcher.counters.stored == 60)
    finally:
        for backend in (first, second, watcher):
            backend.stop()
    one, two = first.store.ids(VIN), second.store.ids(VIN)
    everything = {r["id"] for r in records}
    assert one | two == everything
    assert not one & two
    assert one and two and one != everything and two != everything
    assert watcher.store.ids(VIN) == everything
    # Each half is a subset with gaps, but what it holds still links up where it can.
    assert BackendStore(tmp_path / "one.db").summary(VIN).chain == "intact"
    assert BackendStore(tmp_path / "one.db").summary(VIN).gaps


def test_backend_waits_for_the_broker_and_reconnects(
        mqtt_broker: MosquittoBroker, fleet: dict[str, Any], tmp_path: Path) -> None:
    a: Vehicle = fleet["a"]
    records = a.make(MIX)
    mqtt_broker.stop()
    cert = mqtt_broker.pki.client("backend")
    backend = Backend(broker_config(mqtt_broker, cert), tmp_path / "backend.db",
                      fleet["keys"])
    try:
        assert backend.start(timeout=1.0) is False      # nobody there yet: keeps trying
        mqtt_broker.start()
        assert backend.wait(lambda: backend.subscribed, 30)
        pub = Publisher(mqtt_broker, mqtt_broker.pki.client("vehicle-sim"))
        for record in records[:6]:
            pub.record(record)
        pub.close()
        assert backend.wait(lambda: backend.counters.stored == 6, 30)
        mqtt_broker.restart()
        assert backend.wait(lambda: backend.counters.disconnects >= 1, 30)
        assert backend.wait(lambda: backend.subscribed, 30)
        pub = Publisher(mqtt_broker, mqtt_broker.pki.client("vehicle-sim"))
        for record in records[6:]:
            pub.record(record)
        pub.close()
        assert backend.wait(lambda: backend.counters.stored == 12, 30)
    finally:
        backend.close()
    assert backend.counters.connects >= 2
    assert BackendStore(tmp_path / "backend.db").summary(VIN).chain == "intact"


def test_records_from_the_real_uplink_pass_every_check(
        mqtt_broker: MosquittoBroker, fleet: dict[str, Any], tmp_path: Path) -> None:
    """A backlog drained by the agent's Uplink, a broker outage in the middle (records made
    meanwhile go out after it), then live records: all stored once, chain intact, no gap,
    lane order kept (accidents overtook older health records), re-sends are duplicates."""
    a: Vehicle = fleet["a"]
    journal = Journal(a.db)

    def append(types: list[str]) -> None:
        with a.db.transaction():
            for type_ in types:
                record = a.chain.make(type_, SAMPLE[type_], 1.75e9 + a.chain.seq,
                                      time_source="system")
                journal.store(record)
                a.records.append(record)

    append(MIX * 20)
    cert = mqtt_broker.pki.client(VIN)
    # Mosquitto 2.0.11 restores a persistent session's plain subscriptions after its own
    # restart but not its shared ones, so across a broker restart only a backend outside
    # any share group is sure to miss nothing (see hil/backend/receiver.py).
    backend = start_backend(mqtt_broker, tmp_path / "backend.db", fleet["keys"], group="")
    uplink = Uplink(UplinkConfig(host=mqtt_broker.host, port=mqtt_broker.port,
                                 ca=str(cert.ca), cert=str(cert.cert), key=str(cert.key),
                                 backoff_min_s=0.05, backoff_max_s=0.5, inflight=5), VIN,
                    a.db.path)
    uplink.start()
    try:
        assert wait_until(lambda: backend.counters.stored >= 60)
        mqtt_broker.stop()
        append(MIX * 2)                 # recorded during the outage: sent after it
        uplink.notify()
        mqtt_broker.start()
        assert uplink.wait_idle(60)
        assert wait_until(lambda: backend.counters.stored == 264)
        append(MIX)
        uplink.notify()
        assert uplink.wait_idle(30)
        assert wait_until(lambda: backend.counters.stored == 276)
    finally:
        uplink.stop()
        backend.stop()
    assert backend.counters.connects >= 2 and uplink.reconnects >= 1
    assert backend.store.ids(VIN) == {r["id"] for r in a.records}
    s = backend.summary(VIN)
    assert (s.records, s.first_seq, s.last_seq) == (276, 1, 276)
    assert s.gaps == [] and s.chain == "intact" and s.alarms == {}
    assert s.lane_order == "kept" and s.overtakes > 0
    assert s.duplicates == backend.counters.duplicates
    assert s.status == "offline"
    assert s.ok
    backend.store.close()


def test_records_sent_while_the_backend_is_away_are_waiting_for_it(
        mqtt_broker: MosquittoBroker, publisher: Publisher, fleet: dict[str, Any],
        tmp_path: Path) -> None:
    records = fleet["a"].make(MIX)
    db = tmp_path / "backend.db"
    backend = start_backend(mqtt_broker, db, fleet["keys"])
    for record in records[:4]:
        publisher.record(record)
    assert backend.wait(lambda: backend.counters.stored == 4, 30)
    backend.close()
    for record in records[4:]:
        publisher.record(record)
    again = start_backend(mqtt_broker, db, fleet["keys"])      # same db: same session
    try:
        assert again.wait(lambda: again.counters.stored == 8, 30)
    finally:
        again.close()
    assert BackendStore(db).summary(VIN).records == 12


@pytest.mark.parametrize("body", [
    b"", b"\xff\xfe", b"[1,2]", b'{"seq": NaN}', b"null", b"x" * (1024 * 1024 + 1),
    b'{"schema":"icv.record/1"}',
])
def test_bad_payloads_are_counted_never_fatal(tmp_path: Path, fleet: dict[str, Any],
                                              body: bytes) -> None:
    backend = Backend(BrokerConfig(), tmp_path / "backend.db", fleet["keys"])
    outcome = backend.handle(f"icv/{VIN}/events/agent.health", body)
    assert outcome.startswith("rejected:")
    assert backend.store.summary(VIN).rejected_total == 1
    assert backend.handle("icv/short", body) == "ignored"
    assert backend.handle("other/x/events/y", body) == "ignored"
    backend.close()


def test_records_on_the_wrong_topic_are_rejected(tmp_path: Path, fleet: dict[str, Any]) -> None:
    record = fleet["a"].make(["safety.aeb"])[0]
    backend = Backend(BrokerConfig(), tmp_path / "backend.db", fleet["keys"])
    assert backend.handle(f"icv/{VIN_B}/events/safety.aeb", payload(record)) == \
        "rejected:topic_mismatch"
    assert backend.handle(f"icv/{VIN}/events/accident.trigger", payload(record)) == \
        "rejected:topic_mismatch"
    assert backend.handle(f"icv/{VIN}/events/safety.aeb", payload(record)) == "stored"
    backend.close()


def test_a_key_dropped_in_later_is_picked_up(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    car = Vehicle(tmp_path / "car", VIN)
    record = car.make(["agent.health"])[0]
    backend = Backend(BrokerConfig(), tmp_path / "backend.db", keys)
    assert backend.handle(f"icv/{VIN}/events/agent.health", payload(record)) == \
        "rejected:unknown_vin"
    (keys / f"{VIN}.pem").write_text(car.key.public_pem())
    assert backend.handle(f"icv/{VIN}/events/agent.health", payload(record)) == "stored"
    backend.close()
    car.close()


def test_vehicle_key_folder_problems_are_clear(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="not found"):
        VehicleKeys(tmp_path / "nope")
    (tmp_path / f"{VIN}.pem").write_text("garbage")
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        VehicleKeys(tmp_path)


def test_gaps_explained_by_journal_evicted_are_told_apart(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    car = Vehicle(tmp_path / "car", VIN)
    (keys / f"{VIN}.pem").write_text(car.key.public_pem())
    records = car.make(["agent.health"] * 8)
    with car.db.transaction():
        evicted = car.chain.make("journal.evicted", {
            "count": 3, "bytes": 300, "lanes": {"4": 3}, "types": {"agent.health": 3},
            "first_seq": 2, "last_seq": 4, "seq_ranges": [[2, 4]]}, 1.75e9,
            time_source="system")
    backend = Backend(BrokerConfig(), tmp_path / "backend.db", keys)
    for record in [records[0], *records[4:6], records[7], evicted]:
        assert backend.handle(f"icv/{VIN}/events/{record['type']}", payload(record)) == "stored"
    s = backend.summary(VIN)
    assert s.evicted == [(2, 4)]
    assert s.gaps == [(7, 7)]
    backend.close()
    car.close()


def test_range_helpers() -> None:
    assert missing_ranges([], 0) == []
    assert missing_ranges([2, 3, 7], 9) == [(1, 1), (4, 6), (8, 9)]
    assert subtract([(1, 10)], [(3, 4), (8, 20)]) == ([(1, 2), (5, 7)], [(3, 4), (8, 10)])
    assert subtract([(5, 6)], [(1, 2)]) == ([(5, 6)], [])


# -- the command side: through the real agent uplink and command gate ----------------


@pytest.fixture
def agent_side(mqtt_broker: MosquittoBroker, tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The agent's Uplink handing commands to its CommandGate, which pins the backend key
    made by ``keygen`` and answers through ``uplink.respond``, as the service does."""
    private_path, public_path, key_id = keygen(tmp_path / "backend-keys")
    db = StateDB(tmp_path / "state.db")
    gate = CommandGate.from_config(CommandsConfig(backend_keys=[str(public_path)]), db, VIN)
    gate.register("report.period",
                  lambda c: {"period": c.args.get("period"), "accidents": 0})
    cert = mqtt_broker.pki.client(VIN)
    box: list[Uplink] = []
    lock = threading.Lock()

    def on_command(name: str, body: bytes) -> None:
        with lock:
            outcome = gate.handle(name, body)
        if outcome.response is not None:
            box[0].respond(outcome.name, outcome.response)

    uplink = Uplink(UplinkConfig(host=mqtt_broker.host, port=mqtt_broker.port,
                                 ca=str(cert.ca), cert=str(cert.cert), key=str(cert.key),
                                 backoff_min_s=0.05, backoff_max_s=0.5), VIN,
                    tmp_path / "state.db", on_command=on_command)
    box.append(uplink)
    uplink.start()
    deadline = time.monotonic() + 30
    while uplink.state != ONLINE and time.monotonic() < deadline:
        time.sleep(0.02)
    assert uplink.state == ONLINE, uplink.last_error
    yield {"gate": gate, "uplink": uplink, "private": private_path, "public": public_path,
           "key_id": key_id}
    uplink.stop()
    db.close()


def test_signed_command_round_trip_through_the_agent(
        mqtt_broker: MosquittoBroker, agent_side: dict[str, Any], tmp_path: Path) -> None:
    key = load_backend_key(agent_side["private"])
    assert fingerprint(key.public_key()) == agent_side["key_id"]
    config = broker_config(mqtt_broker, mqtt_broker.pki.client("backend-send"))
    result = send_command(config, key, VIN, "report.period", {"period": "2026Q3"})
    assert result.ok
    assert result.response == {"nonce": result.nonce, "ok": True,
                               "result": {"period": "2026Q3", "accidents": 0}}
    assert agent_side["gate"].accepted == 1

    # A key the agent does not pin: rejected by the gate, no answer.
    forged = send_command(config, Ed25519PrivateKey.generate(), VIN, "report.period",
                          {"period": "2026Q3"}, timeout=2.0)
    assert forged.response is None and not forged.ok
    assert wait_until(lambda: agent_side["gate"].rejected["bad_signature"] == 1)

    # A signed but unknown command: the agent says why.
    unknown = send_command(config, key, VIN, "reboot.now")
    assert unknown.response == {"nonce": unknown.nonce, "ok": False, "error": "unknown"}


def test_backend_sends_commands_on_its_own_connection(
        mqtt_broker: MosquittoBroker, agent_side: dict[str, Any], fleet: dict[str, Any],
        tmp_path: Path) -> None:
    key = load_backend_key(agent_side["private"])
    backend = start_backend(mqtt_broker, tmp_path / "backend.db", fleet["keys"])
    try:
        assert backend.wait(lambda: backend.store.summary(VIN).status == "online", 30)
        response = backend.send_command(key, VIN, "report.period", {"period": "2026Q1"})
        assert response is not None and response["ok"] is True
        assert response["result"]["period"] == "2026Q1"
        agent_side["uplink"].stop()
        assert backend.wait(lambda: backend.store.summary(VIN).status == "offline", 30)
    finally:
        backend.close()
    summary = BackendStore(tmp_path / "backend.db").summary(VIN)
    assert summary.responses == 1


def test_cli_send_and_keygen(mqtt_broker: MosquittoBroker, agent_side: dict[str, Any],
                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = mqtt_broker.pki.client("backend-cli")
    base = ["backend", "send", "--host", mqtt_broker.host, "--port", str(mqtt_broker.port),
            "--ca", str(cert.ca), "--cert", str(cert.cert), "--key", str(cert.key),
            "--vin", VIN, "--cmd", "report.period", "--signing-key",
            str(agent_side["private"])]
    assert hil_cli.main([*base, "--args", '{"period":"2026Q3"}']) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is True and out["result"]["period"] == "2026Q3"
    assert hil_cli.main([*base, "--args", "[1]"]) == 2
    assert "expected a JSON object" in capsys.readouterr().err

    assert hil_cli.main(["backend", "keygen", "--out", str(tmp_path / "k")]) == 0
    printed = capsys.readouterr().out
    public = load_public_key(tmp_path / "k" / "backend.pub")
    assert fingerprint(public) in printed
    assert (tmp_path / "k" / "backend.key").stat().st_mode & 0o077 == 0
    assert hil_cli.main(["backend", "keygen", "--out", str(tmp_path / "k")]) == 2
    assert "already exists" in capsys.readouterr().err


def test_send_to_a_broker_that_refuses_us(mqtt_broker: MosquittoBroker, tmp_path: Path) -> None:
    rogue = mqtt_broker.pki.rogue_client("backend")
    with pytest.raises(SendError):
        send_command(broker_config(mqtt_broker, rogue), Ed25519PrivateKey.generate(), VIN,
                     "report.period", timeout=5)


# -- the CLI receiver as a process ---------------------------------------------------


def test_cli_receiver_live_view_and_summary_on_idle(
        mqtt_broker: MosquittoBroker, publisher: Publisher, fleet: dict[str, Any],
        tmp_path: Path) -> None:
    a: Vehicle = fleet["a"]
    records = a.make(MIX)
    cert = mqtt_broker.pki.client("backend-proc")
    publisher.publish(f"icv/{VIN}/status", "online", retain=True)
    db = tmp_path / "backend.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "backend", "--host", mqtt_broker.host,
         "--port", str(mqtt_broker.port), "--ca", str(cert.ca), "--cert", str(cert.cert),
         "--key", str(cert.key), "--db", str(db), "--vehicle-keys", str(fleet["keys"]),
         "--live", "--until-idle", "3"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()          # the retained status: we are subscribed
        assert "status" in first and "online" in first, first
        for record in lane_order(records):
            publisher.record(record)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    live = [line for line in lines if f"{VIN} " in line and " #" in line]
    assert len(live) == 12
    assert "accident.trigger" in live[0] and "#9" in live[0]
    assert "no record for 3 s" in err
    assert "chain       intact (12 links checked)" in out
    assert "gaps        none" in out
    assert f"{VIN}  OK  status online" in out


def test_cli_receiver_stops_on_sigint_with_a_summary(
        mqtt_broker: MosquittoBroker, fleet: dict[str, Any], tmp_path: Path) -> None:
    cert = mqtt_broker.pki.client("backend-proc")
    proc = subprocess.Popen(
        [sys.executable, "-m", "hil.cli", "backend", "--host", mqtt_broker.host,
         "--port", str(mqtt_broker.port), "--ca", str(cert.ca), "--cert", str(cert.cert),
         "--key", str(cert.key), "--db", str(tmp_path / "b.db"),
         "--vehicle-keys", str(fleet["keys"]), "--json"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        assert "pinned vehicle keys" in proc.stderr.readline()
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "SIGINT" in err
    assert json.loads(out) == {"vehicles": []}


def test_cli_receiver_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert hil_cli.main(["backend", "--vehicle-keys", str(tmp_path)]) == 2
    assert "--db" in capsys.readouterr().err
    assert hil_cli.main(["backend", "--db", str(tmp_path / "x.db"), "--vehicle-keys",
                         str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err
    assert hil_cli.main(["backend", "summary", "--db", str(tmp_path / "none.db")]) == 2
