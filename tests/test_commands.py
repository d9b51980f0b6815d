"""Signed commands: every kind of bad command is refused with its reason, a good one runs once."""

from __future__ import annotations

import base64
import json
import queue
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.journal.outbox import Journal
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey, KeyFileError
from agent.statestore import StateDB
from agent.uplink.client import ONLINE, Uplink
from agent.uplink.commands import Command, CommandFailed, CommandGate, canonical, sign_command
from agent.uplink.settings import CommandsConfig, UplinkConfig
from tests.mqtt_broker import MosquittoBroker, Subscriber

VIN = "LSVTEST0000000001"
OTHER_VIN = "LSVTEST0000000002"


class Calls:
    def __init__(self) -> None:
        self.commands: list[Command] = []

    def __call__(self, command: Command) -> dict[str, Any]:
        self.commands.append(command)
        return {"period_s": command.args.get("period_s")}


@pytest.fixture
def backend_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def db(tmp_path: Path) -> Iterator[StateDB]:
    state = StateDB(tmp_path / "state.db")
    yield state
    state.close()


@pytest.fixture
def gate(backend_key: Ed25519PrivateKey, db: StateDB) -> CommandGate:
    g = CommandGate([backend_key.public_key()], db, VIN)
    g.register("report.period", Calls())
    return g


def reason(gate: CommandGate, name: str, payload: bytes) -> str | None:
    return gate.handle(name, payload).reason


def test_valid_command_runs_once_and_answers(gate: CommandGate,
                                             backend_key: Ed25519PrivateKey) -> None:
    payload = sign_command(backend_key, VIN, "report.period", {"period_s": 30}, ttl_s=60)
    outcome = gate.handle("report.period", payload)
    nonce = json.loads(payload)["nonce"]
    assert outcome.accepted and outcome.reason is None
    assert outcome.response == {"nonce": nonce, "ok": True, "result": {"period_s": 30}}
    handler = gate.handlers["report.period"]
    assert [c.args for c in handler.commands] == [{"period_s": 30}]
    again = gate.handle("report.period", payload)
    assert (again.accepted, again.reason) == (False, "replayed")
    assert again.response == {"nonce": nonce, "ok": False, "error": "replayed"}
    assert len(handler.commands) == 1
    assert gate.accepted == 1 and gate.rejected["replayed"] == 1


def test_replay_is_caught_after_a_restart(backend_key: Ed25519PrivateKey,
                                          tmp_path: Path) -> None:
    payload = sign_command(backend_key, VIN, "report.period", {"period_s": 5}, ttl_s=120)
    db = StateDB(tmp_path / "state.db")
    assert CommandGate([backend_key.public_key()], db, VIN).handle("report.period",
                                                                    payload).accepted
    db.close()
    db = StateDB(tmp_path / "state.db")
    restarted = CommandGate([backend_key.public_key()], db, VIN)
    calls = Calls()
    restarted.register("report.period", calls)
    assert reason(restarted, "report.period", payload) == "replayed"
    assert calls.commands == []
    db.close()


def test_forged_signatures_are_refused(gate: CommandGate,
                                       backend_key: Ed25519PrivateKey) -> None:
    stranger = Ed25519PrivateKey.generate()
    assert reason(gate, "report.period",
                  sign_command(stranger, VIN, "report.period", {})) == "bad_signature"
    # Right key id, args changed after signing.
    envelope = json.loads(sign_command(backend_key, VIN, "report.period", {"period_s": 30}))
    envelope["args"]["period_s"] = 1
    assert reason(gate, "report.period", json.dumps(envelope).encode()) == "bad_signature"
    # Right key id, signature made by another key.
    envelope = json.loads(sign_command(backend_key, VIN, "report.period", {}))
    envelope["sig"] = base64.b64encode(stranger.sign(canonical(envelope))).decode()
    assert reason(gate, "report.period", json.dumps(envelope).encode()) == "bad_signature"
    envelope["sig"] = "%%% not base64 %%%"
    assert reason(gate, "report.period", json.dumps(envelope).encode()) == "bad_signature"
    assert gate.handlers["report.period"].commands == []


def test_unsigned_command_is_refused(gate: CommandGate, backend_key: Ed25519PrivateKey) -> None:
    envelope = json.loads(sign_command(backend_key, VIN, "report.period", {}))
    del envelope["sig"]
    outcome = gate.handle("report.period", json.dumps(envelope).encode())
    assert outcome.reason == "unsigned" and outcome.response is None
    assert outcome.rejection_data() == {"cmd": "report.period", "reason": "unsigned",
                                        "detail": "no signature", "nonce": envelope["nonce"],
                                        "key_id": envelope["key_id"]}


@pytest.mark.parametrize(("issued_offset", "ttl", "why"), [
    (-1000.0, 300.0, "expired at"),               # past its expiry
    (3600.0, 300.0, "in the future"),             # issued an hour from now
    (-5.0, 7200.0, "valid for longer"),           # longer than max_age_s
])
def test_out_of_time_commands_are_refused(gate: CommandGate, backend_key: Ed25519PrivateKey,
                                          issued_offset: float, ttl: float, why: str) -> None:
    payload = sign_command(backend_key, VIN, "report.period", {}, ttl_s=ttl,
                           now=time.time() + issued_offset)
    outcome = gate.handle("report.period", payload)
    assert outcome.reason == "expired" and why in outcome.detail
    assert gate.handlers["report.period"].commands == []


def test_command_for_another_vehicle_is_refused(gate: CommandGate,
                                                backend_key: Ed25519PrivateKey) -> None:
    payload = sign_command(backend_key, OTHER_VIN, "report.period", {})
    assert reason(gate, "report.period", payload) == "wrong_vin"


def test_unknown_command_is_refused(gate: CommandGate, backend_key: Ed25519PrivateKey) -> None:
    payload = sign_command(backend_key, VIN, "engine.start", {})
    outcome = gate.handle("engine.start", payload)
    assert outcome.reason == "unknown"
    assert outcome.rejection_data()["cmd"] == "engine.start"


@pytest.mark.parametrize("payload", [
    b"{not json", b"\xff\xfe", b"[]", b'"report.period"', b"",
    b'{"cmd": "report.period", "sig": "abc"}',
])
def test_malformed_payloads_are_refused(gate: CommandGate, payload: bytes) -> None:
    assert reason(gate, "report.period", payload) == "malformed"


def test_malformed_fields_are_refused(gate: CommandGate, backend_key: Ed25519PrivateKey) -> None:
    good = sign_command(backend_key, VIN, "report.period", {})
    assert reason(gate, "config.get", good) == "malformed"          # topic and cmd differ
    bad_nonce = sign_command(backend_key, VIN, "report.period", {}, nonce="xyz")
    assert reason(gate, "report.period", bad_nonce) == "malformed"
    envelope = json.loads(good)
    envelope["args"] = "period=5"
    assert reason(gate, "report.period", json.dumps(envelope).encode()) == "malformed"
    assert reason(gate, "report.period", b" " * 70_000 + b"{}") == "malformed"


def test_handler_failures_answer_with_an_error(gate: CommandGate,
                                               backend_key: Ed25519PrivateKey) -> None:
    def refuse(_c: Command) -> None:
        raise CommandFailed("no ECU answers")

    def crash(_c: Command) -> None:
        raise KeyError("bug")

    gate.register("ecu.inventory", refuse)
    gate.register("config.get", crash)
    out = gate.handle("ecu.inventory", sign_command(backend_key, VIN, "ecu.inventory"))
    assert out.accepted and out.response["ok"] is False
    assert out.response["error"] == "no ECU answers"
    out = gate.handle("config.get", sign_command(backend_key, VIN, "config.get"))
    assert out.accepted and out.response == {"nonce": out.nonce, "ok": False,
                                             "error": "internal error: KeyError"}
    out = gate.handle("ota.campaign", sign_command(backend_key, VIN, "ota.campaign"))
    assert out.accepted and out.response["ok"] is False                # no handler yet


def test_nonces_are_forgotten_once_they_cannot_pass_anyway(
        backend_key: Ed25519PrivateKey, db: StateDB) -> None:
    now = [1.8e9]
    gate = CommandGate([backend_key.public_key()], db, VIN, max_age_s=600, clock_skew_s=30,
                       clock=lambda: now[0])
    first = sign_command(backend_key, VIN, "config.get", ttl_s=60, now=now[0])
    assert gate.handle("config.get", first).accepted
    now[0] += 700
    assert reason(gate, "config.get", first) == "expired"              # still refused ...
    assert gate.handle("config.get", sign_command(backend_key, VIN, "config.get",
                                                  now=now[0])).accepted
    rows = db.conn.execute("SELECT nonce FROM command_nonce").fetchall()
    assert len(rows) == 1
    assert json.loads(first)["nonce"] not in {r[0] for r in rows}     # ... and forgotten


def test_keys_come_from_pem_files(tmp_path: Path, backend_key: Ed25519PrivateKey,
                                  db: StateDB) -> None:
    pem = tmp_path / "backend.pub"
    pem.write_bytes(backend_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    gate = CommandGate.from_config(CommandsConfig(backend_keys=[str(pem)]), db, VIN)
    assert gate.handle("config.get", sign_command(backend_key, VIN, "config.get")).accepted
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(KeyFileError, match="junk.pub"):
        CommandGate.from_config(CommandsConfig(backend_keys=[str(tmp_path / "junk.pub")]),
                                db, VIN)


def test_commands_over_the_broker(mqtt_broker: MosquittoBroker, tmp_path: Path,
                                  backend_key: Ed25519PrivateKey) -> None:
    """Backend -> broker -> uplink -> gate (pipeline thread) -> response and rejection records."""
    pki = mqtt_broker.pki
    db = StateDB(tmp_path / "state.db")
    journal = Journal(db)
    chain = RecordChain(db, DeviceKey.generate(), VIN)
    gate = CommandGate([backend_key.public_key()], db, VIN)
    calls = Calls()
    gate.register("report.period", calls)
    inbox: queue.Queue[tuple[str, bytes]] = queue.Queue()
    cert = pki.client(VIN)
    uplink = Uplink(UplinkConfig(host=mqtt_broker.host, port=mqtt_broker.port, ca=str(cert.ca),
                                 cert=str(cert.cert), key=str(cert.key)), VIN,
                    tmp_path / "state.db", on_command=lambda n, p: inbox.put((n, p)))
    backend = Subscriber(mqtt_broker, pki.client("backend"), f"icv/{VIN}/#",
                         client_id="backend").start()
    uplink.start()
    try:
        deadline = time.monotonic() + 30
        while uplink.state != ONLINE and time.monotonic() < deadline:
            time.sleep(0.02)
        valid = sign_command(backend_key, VIN, "report.period", {"period_s": 60})
        forged = sign_command(Ed25519PrivateKey.generate(), VIN, "report.period", {})
        for payload in (valid, forged, valid):
            backend.client.publish(f"icv/{VIN}/cmd/report.period", payload, qos=1)
        for _ in range(3):          # what the service's pipeline loop does with the inbox
            name, payload = inbox.get(timeout=30)
            outcome = gate.handle(name, payload)
            if not outcome.accepted:
                with db.transaction():
                    journal.store(chain.make("agent.command_rejected",
                                             outcome.rejection_data(), time.time(),
                                             time_source="system"))
                uplink.notify()
            if outcome.response is not None:
                assert uplink.respond(name, outcome.response)
        assert backend.wait(lambda: sum("/responses/" in m.topic for m in backend.messages) == 2
                            and sum("/events/" in m.topic for m in backend.messages) == 2, 30)
    finally:
        backend.stop()
        uplink.stop()
    nonce = json.loads(valid)["nonce"]
    responses = [m.json() for m in backend.messages if "/responses/" in m.topic]
    assert responses == [{"nonce": nonce, "ok": True, "result": {"period_s": 60}},
                         {"nonce": nonce, "ok": False, "error": "replayed"}]
    rejected = [m.json()["data"] for m in backend.messages if "/events/" in m.topic]
    assert [r["reason"] for r in rejected] == ["bad_signature", "replayed"]
    assert len(calls.commands) == 1
    db.close()
