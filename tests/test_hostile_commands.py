"""No payload on the command topics stops the agent or gets past the gate unsigned: deep
nesting, huge numbers, NaN, random bytes and wrong types are each rejected with a reason,
by the gate and by the running service over a real broker (every one recorded)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from agent import wirejson
from agent.statestore import StateDB
from agent.uplink.commands import MAX_PAYLOAD, CommandGate, sign_command
from tests.live_agent import Agent, multicast_group, uplink_section, wait_until, write_config
from tests.mqtt_broker import Subscriber

VIN = "LSJWH4098PN000001"

HOSTILE = [
    b"[" * 1000 + b"]" * 1000,                         # 2 KB that recursed in json.loads
    b'{"a":' * 1000 + b"1" + b"}" * 1000,
    b'{"x": "' + b"[" * 5000 + b'"}',                  # brackets inside a string are fine
    b"9" * 5000,                                       # beyond int's digit limit
    b'{"cmd": "report.period", "sig": NaN}',
    b'{"cmd": Infinity}',
    b"\xff" * 100,
    b"{" * (MAX_PAYLOAD + 1),
    b"",
    b"null",
    b'{"cmd": 1, "vin": [], "nonce": {}, "issued": 2, "expires": null, "args": "x",'
    b' "key_id": 3, "sig": "AAAA"}',
]


@pytest.fixture(scope="module")
def gate(tmp_path_factory: pytest.TempPathFactory) -> Any:
    db = StateDB(tmp_path_factory.mktemp("gate") / "state.db")
    g = CommandGate([Ed25519PrivateKey.generate().public_key()], db, VIN)
    g.register("report.period", lambda command: {})
    yield g
    db.close()


@pytest.mark.parametrize("payload", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_payloads_are_rejected_not_raised(gate: Any, payload: bytes) -> None:
    outcome = gate.handle("report.period", payload)
    assert not outcome.accepted and outcome.reason in ("malformed", "unsigned")


def test_depth_is_measured_outside_strings() -> None:
    assert wirejson.nesting_depth(b'{"a": [1, {"b": "]]]]"}], "c": "\\"[["}') == 3
    with pytest.raises(ValueError, match="nested 40 levels deep"):
        wirejson.loads(b"[" * 40 + b"]" * 40, max_bytes=1000)
    assert wirejson.loads(b"[" * 32 + b"]" * 32, max_bytes=1000) is not None


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    max_leaves=50)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=3000), json_values.map(lambda v: json.dumps(v).encode()),
                 st.integers(1, 3000).map(lambda n: b"[" * n + b"]" * n)))
def test_no_payload_makes_the_gate_raise(gate: Any, payload: bytes) -> None:
    outcome = gate.handle("report.period", payload)
    assert not outcome.accepted and outcome.reason in ("malformed", "unsigned",
                                                        "bad_signature")


def test_the_running_agent_survives_every_hostile_payload(tmp_path: Path, mqtt_broker: Any,
                                                           mqtt_pki: Any) -> None:
    """Each payload published on a command topic of the live agent: it keeps running,
    records one ``agent.command_rejected`` per payload, and still answers a signed one."""
    backend_key = Ed25519PrivateKey.generate()
    pub = tmp_path / "backend.pub"
    pub.write_bytes(backend_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    group = multicast_group()
    cfg = write_config(tmp_path, group, uplink_section(mqtt_broker, mqtt_pki.client(VIN),
                                                       backend_key=pub))
    sendable = [p for p in HOSTILE if len(p) <= MAX_PAYLOAD]
    with Subscriber(mqtt_broker, mqtt_pki.client("backend-hostile"), f"icv/{VIN}/#") as sub:
        agent = Agent(cfg).start()
        try:
            assert agent.wait_running(60), agent.log_text()
            assert sub.wait(lambda: any(m.topic.endswith("/status") for m in sub.messages),
                            30)
            topics = ["report.period", "config.get", "ota.campaign", "ota.consent",
                      "no.such.command"]
            for i, payload in enumerate(sendable):
                sub.client.publish(f"icv/{VIN}/cmd/{topics[i % len(topics)]}", payload, qos=1)
            good = sign_command(backend_key, VIN, "config.get", {})
            sub.client.publish(f"icv/{VIN}/cmd/config.get", good, qos=1)

            def rejected() -> list[dict[str, Any]]:
                return [m.json()["data"] for m in sub.messages
                        if "/events/" in m.topic and m.json()["type"] == "agent.command_rejected"]

            nonce = json.loads(good)["nonce"]
            assert wait_until(lambda: len(rejected()) >= len(sendable) and any(
                "/responses/" in m.topic and m.json().get("nonce") == nonce
                for m in sub.messages), 60), (rejected(), agent.log_text())
            time.sleep(0.5)
            assert agent.proc is not None and agent.proc.poll() is None, agent.log_text()
            assert agent.stop() == 0
        finally:
            agent.kill()
    reasons = [r["reason"] for r in rejected()]
    assert len(reasons) == len(sendable)
    assert set(reasons) <= {"malformed", "unsigned"}
    assert "Traceback" not in agent.log_text()
