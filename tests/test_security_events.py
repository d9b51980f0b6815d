"""Security events (GB 44495): one lane of ``security.*`` records, one place that makes
them, and an endpoint allow-list for the uplink and the OTA repositories.

Real parts throughout: the record chain on SQLite, a real Mosquitto with mutual TLS (a
port outside the allow-list, a broker certificate from a CA the agent does not trust), a
real HTTP server for the OTA fetcher, and the live agent process for forged commands, a
key file that becomes readable and the period report."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.journal.outbox import Journal, lane_of
from agent.ota.uptane.download import EndpointNotAllowed, HttpFetcher
from agent.recorder import Recorder
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey
from agent.records.verify import verify_records
from agent.security import KINDS, EndpointPolicy, SecurityLog, install
from agent.security.settings import SecurityConfig
from agent.statestore import StateDB
from agent.uplink.client import ONLINE, Uplink
from agent.uplink.commands import sign_command
from tests.live_agent import Agent, multicast_group, uplink_section, wait_until, write_config
from tests.mqtt_broker import ClientCert, MosquittoBroker, Subscriber
from tests.record_schema import assert_valid_record
from tests.test_config import BASE, check, has_problem
from tests.test_config import write_config as write_check_config
from tests.test_uplink import config as uplink_config

VIN = "LSJWH4098PN000001"
ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def chained(db: StateDB) -> list[dict[str, Any]]:
    return [json.loads(p) for (p,) in db.conn.execute(
        "SELECT payload FROM outbox ORDER BY seq").fetchall()]


def test_every_refusal_gets_its_security_record_in_the_same_chain(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    key = DeviceKey.generate()
    clock = Clock()
    security = SecurityLog(SecurityConfig(events_per_window=3, window_s=60.0), clock=clock)
    recorder = Recorder(db, RecordChain(db, key, VIN), lambda t: t, "system",
                        journal=Journal(db), observe=security.observe)
    t = 1.7e9
    recorder.record("agent.command_rejected", {"cmd": "config.get", "reason": "bad_signature",
                                               "detail": "signature does not verify",
                                               "nonce": None, "key_id": "ab"}, t)
    recorder.record("agent.command_rejected", {"cmd": "config.get", "reason": "replayed",
                                               "detail": "nonce used", "nonce": "n",
                                               "key_id": "ab"}, t)
    recorder.record("ota.rejected", {"activity_id": "a1", "threat": "rollback",
                                     "message": "targets version went back", "ecu": "bms",
                                     "repo": "director", "role": "targets"}, t)
    recorder.record("ecu.tamper", {"ecu": "bms", "dids": {"F189": {"was": "1.0",
                                                                "now": "6.6"}}}, t)
    recorder.record("ota.consent_rejected", {"activity_id": "a9", "reason": "no_offer"}, t)
    recorder.record("ota.failed", {"activity_id": "a2", "reason": "campaign_mismatch"}, t)
    recorder.record("ota.failed", {"activity_id": "a3", "reason": "consent_timeout"}, t)
    recorder.record("cda.activated", {"function": "ACC", "speed": 80.0}, t)   # no security
    recorder.flush()
    records = chained(db)
    for record in records:
        assert_valid_record(record)
    assert verify_records(records, key).ok
    types = [r["type"] for r in records]
    assert types == ["agent.command_rejected", "security.signature_failure",
                     "agent.command_rejected", "security.command_rejected",
                     "ota.rejected", "security.update_refused",
                     "ecu.tamper", "security.ecu_version_change",
                     "ota.consent_rejected", "security.command_rejected",
                     "ota.failed", "security.update_refused", "ota.failed", "cda.activated"]
    assert {lane_of(t) for t in types if t.startswith("security.")} == {3}
    refused = records[5]["data"]
    assert refused["threat"] == "rollback" and refused["source"] == "ota.rejected"

    # A flood: 3 records per kind and window, the rest counted; the next record tells.
    for _ in range(6):
        recorder.record("agent.command_rejected", {"cmd": "x", "reason": "unsigned",
                                                   "detail": "", "nonce": None,
                                                   "key_id": None}, t)
    recorder.flush()
    flood = [r for r in chained(db) if r["type"] == "security.signature_failure"]
    assert len(flood) == 3 and security.counts["signature_failure"] == 7
    clock.now += 61.0
    recorder.record("agent.command_rejected", {"cmd": "x", "reason": "unsigned", "detail": "",
                                               "nonce": None, "key_id": None}, t)
    recorder.flush()
    last = [r for r in chained(db) if r["type"] == "security.signature_failure"][-1]
    assert last["data"]["suppressed"] == 4 and last["data"]["count"] == 8
    assert security.stats()["total"] == 8 + 2 + 2 + 1   # + 2 command_rejected, 2 refused
    db.close()


def test_a_broker_port_outside_the_allow_list_is_never_connected(
        mqtt_broker: MosquittoBroker, tmp_path: Path) -> None:
    pki = mqtt_broker.pki
    db = StateDB(tmp_path / "state.db")
    security = SecurityLog()
    wrong = EndpointPolicy([f"{mqtt_broker.host}:{mqtt_broker.port + 1}", "broker.example:*"],
                           security)
    with Subscriber(mqtt_broker, pki.client("backend"), f"icv/{VIN}/#") as sub:
        uplink = Uplink(uplink_config(mqtt_broker, pki.client(VIN)), VIN, db.path,
                        endpoints=wrong, security=security)
        uplink.start()
        try:
            assert wait_until(lambda: uplink.connect_failures >= 2, 30)
            assert uplink.connects == 0 and "allowed_endpoints" in uplink.last_error
        finally:
            uplink.stop()
        assert sub.messages == []                       # no "online": it never connected
        events = security.drain()
        assert events and all(t == "security.endpoint_refused" for t, _ in events)
        assert events[0][1]["endpoint"] == f"{mqtt_broker.host}:{mqtt_broker.port}"
        assert events[0][1]["what"] == "uplink"
        # The same broker, its port allowed: online.
        right = EndpointPolicy([f"{mqtt_broker.host}:{mqtt_broker.port}"], security)
        uplink = Uplink(uplink_config(mqtt_broker, pki.client(VIN)), VIN, db.path,
                        endpoints=right, security=security)
        uplink.start()
        try:
            assert wait_until(lambda: uplink.state == ONLINE, 30)
        finally:
            uplink.stop()
        assert wrong.refused >= 2 and right.refused == 0
    db.close()


def test_a_broker_certificate_the_agent_does_not_trust_is_a_security_event(
        mqtt_broker: MosquittoBroker, tmp_path: Path) -> None:
    pki = mqtt_broker.pki
    good = pki.client(VIN)
    untrusted = ClientCert(pki.folder / "icv-rogue-ca.crt", good.cert, good.key)
    db = StateDB(tmp_path / "state.db")
    security = SecurityLog()
    uplink = Uplink(uplink_config(mqtt_broker, untrusted), VIN, db.path, security=security)
    uplink.start()
    try:
        assert wait_until(lambda: uplink.connect_failures >= 1, 30)
    finally:
        uplink.stop()
    events = security.drain()
    assert events and events[0][0] == "security.certificate_failure"
    assert "certificate verify failed" in events[0][1]["error"]
    db.close()


@pytest.fixture
def http_repo() -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server that serves ``{}`` for every path and notes each request."""
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            seen.append(self.path)
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_an_ota_repository_outside_the_allow_list_is_refused_unasked(
        http_repo: tuple[str, list[str]]) -> None:
    base, seen = http_repo
    security = SecurityLog()
    fetcher = HttpFetcher()
    install(EndpointPolicy(["127.0.0.1:1", "director.example:443"], security), security)
    try:
        with pytest.raises(EndpointNotAllowed, match="allowed_endpoints"):
            fetcher.fetch_metadata(f"{base}/VIN/metadata/1.root.json", 1000)
        assert seen == []                               # never asked
        install(EndpointPolicy([base.removeprefix("http://")], security), security)
        assert fetcher.fetch_metadata(f"{base}/VIN/metadata/1.root.json", 1000) == b"{}"
    finally:
        install(None, None)
    assert seen == ["/VIN/metadata/1.root.json"]
    events = security.drain()
    assert [t for t, _ in events] == ["security.endpoint_refused"]   # not once per retry
    assert events[0][1] == {"endpoint": base.removeprefix("http://"), "what": "ota",
                            "count": 1, "suppressed": 0}


def test_check_config_wants_the_configured_endpoints_inside_the_allow_list(
        tmp_path: Path) -> None:
    body = BASE + """
[uplink]
enabled = true
host = "127.0.0.1"
port = 8883
[security]
allowed_endpoints = ["mqtt.example.com:8883", "bad-pattern", "host:99999"]
"""
    cfg = write_check_config(tmp_path, body)
    r = check(cfg)
    assert r.returncode == 2
    assert has_problem(r.stderr, cfg, "uplink.host", "not in security.allowed_endpoints")
    assert has_problem(r.stderr, cfg, "security.allowed_endpoints[1]", "not host:port")
    assert has_problem(r.stderr, cfg, "security.allowed_endpoints[2]", "not host:port")


def test_the_live_agent_records_forged_commands_and_exposed_keys(
        tmp_path: Path, mqtt_broker: MosquittoBroker) -> None:
    pki = mqtt_broker.pki
    backend_key = Ed25519PrivateKey.generate()
    forger = Ed25519PrivateKey.generate()
    pub = tmp_path / "backend.pub"
    pub.write_bytes(backend_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    cfg = write_config(tmp_path, multicast_group(),
                       uplink_section(mqtt_broker, pki.client(VIN), backend_key=pub)
                       + "\n[health]\ninterval_s = 0.5\n")
    key_path = tmp_path / "state" / "device.key"

    def security_records(sub: Subscriber) -> list[dict[str, Any]]:
        return [m.json() for m in sub.messages if "/events/security." in m.topic]

    with Subscriber(mqtt_broker, pki.client("backend"), f"icv/{VIN}/#") as sub:
        agent = Agent(cfg).start()
        try:
            assert agent.wait_running(60), agent.log_text()
            assert sub.wait(lambda: any(m.topic.endswith("/status") for m in sub.messages),
                            30)
            forged = sign_command(forger, VIN, "config.get", {})
            sub.client.publish(f"icv/{VIN}/cmd/config.get", forged, qos=1)
            assert wait_until(lambda: any(r["type"] == "security.signature_failure"
                                          for r in security_records(sub)), 30), \
                agent.log_text()
            os.chmod(key_path, 0o644)                   # someone opened the key up
            assert wait_until(lambda: any(r["type"] == "security.key_permission"
                                          for r in security_records(sub)), 30), \
                agent.log_text()
            assert wait_until(lambda: any(
                m.json()["type"] == "agent.health"
                and m.json()["data"]["counters"]["security"]["total"] >= 2
                for m in sub.messages if "/events/agent.health" in m.topic), 30)
            assert agent.stop() == 0
        finally:
            agent.kill()
            os.chmod(key_path, 0o600)
    got = security_records(sub)
    for record in got:
        assert_valid_record(record)
    assert verify_records(sorted(got, key=lambda r: r["seq"])[:1], DeviceKey.load(key_path)).ok
    exposed = next(r for r in got if r["type"] == "security.key_permission")["data"]
    assert exposed["key"] == "device" and "chmod 600" in exposed["problem"]
    forged_data = next(r for r in got if r["type"] == "security.signature_failure")["data"]
    assert forged_data["reason"] == "bad_signature" and forged_data["cmd"] == "config.get"

    # The period report counts them (the same counters as agent.health).
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo("Asia/Shanghai"))
    period = f"{now.year}Q{(now.month - 1) // 3 + 1}"
    r = subprocess.run([sys.executable, "-m", "agent.cli", "report", "period", "--config",
                        str(cfg), "--period", period], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    counted = json.loads(r.stdout)["security_events"]
    assert set(counted) == set(KINDS)
    assert counted["signature_failure"] == 1 and counted["key_permission"] == 1


def test_a_time_attestation_nobody_trusted_signed_is_a_signature_failure(
        tmp_path: Path) -> None:
    from datetime import timedelta

    from agent.ota.uptane import FixedTime, FloorTime
    from agent.ota.uptane.time import load_public_key, parse_time
    from hil.repo import KeyStore, write_time_attestation

    t0 = parse_time("2026-06-01T08:00:00Z")
    keys = KeyStore(tmp_path / "keys")
    keys.ensure("time")
    trusted = load_public_key(keys.public_path("time"))
    path = write_time_attestation(tmp_path / "time.json", keys.ensure("mallory"),
                                  t0 + timedelta(days=9))
    db = StateDB(tmp_path / "state.db")
    security = SecurityLog()
    install(None, security)
    try:
        clock = FloorTime(db, FixedTime(t0), attestation=path, keys=[trusted])
        assert clock.now() == t0                        # not moved by the forged time
    finally:
        install(None, None)
        db.close()
    events = security.drain()
    assert [t for t, _ in events] == ["security.signature_failure"]
    assert events[0][1]["source"] == "ota.time_attestation"
