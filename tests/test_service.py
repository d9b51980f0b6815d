"""``icv-agent run`` as systemd sees it, and end to end through a real broker."""

from __future__ import annotations

import json
import signal
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

from agent.journal.outbox import lane_of
from agent.records.keys import DeviceKey
from agent.records.verify import verify_records
from tests.live_agent import (
    Agent,
    chain_state,
    make_trace,
    multicast_group,
    replay,
    uplink_section,
    vehicle_keys,
    wait_until,
    write_config,
)
from tests.mqtt_broker import Subscriber
from tests.record_schema import assert_valid_record

VIN = "LSJWH4098PN000001"


def notifications(sock: socket.socket, until: float) -> list[dict[str, str]]:
    out = []
    while time.monotonic() < until:
        sock.settimeout(max(0.01, until - time.monotonic()))
        try:
            data = sock.recv(4096)
        except TimeoutError:
            break
        out.append(dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line))
    return out


def test_sd_notify_ready_watchdog_status_and_clean_stop(tmp_path: Path) -> None:
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    cfg = write_config(tmp_path, multicast_group(), "[health]\ninterval_s = 0.5\n")
    agent = Agent(cfg, env={"NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000",
                            "JOURNAL_STREAM": "8:12345"})
    agent.start()
    try:
        first = notifications(sock, time.monotonic() + 20)[:1]
        assert first and first[0].get("READY") == "1", agent.log_text()
        assert "buses 1/1 up" in first[0]["STATUS"]
        seen = notifications(sock, time.monotonic() + 6)
        watchdogs = [m for m in seen if m.get("WATCHDOG") == "1"]
        statuses = [m for m in seen if "STATUS" in m]
        assert len(watchdogs) >= 5, seen      # every 0.2 s from the pipeline loop
        assert statuses and "outbox" in statuses[-1]["STATUS"]
        assert agent.stop(signal.SIGTERM, timeout=20) == 0
        tail = notifications(sock, time.monotonic() + 1)
        assert any(m.get("STOPPING") == "1" for m in tail), tail
        # under systemd the log lines carry their syslog priority for journald
        assert "<6>INFO agent.service.service: running" in agent.log_text()
    finally:
        agent.kill()
        sock.close()
    con = sqlite3.connect(tmp_path / "state" / "state.db")
    types = [r[0] for r in con.execute("SELECT type FROM outbox ORDER BY seq")]
    assert types[0] == "agent.started" and types[-1] == "agent.stopped", types
    health = [json.loads(p) for (p,) in con.execute(
        "SELECT payload FROM outbox WHERE type='agent.health'")]
    assert health, "no agent.health record"
    data = health[-1]["data"]
    assert data["rss_mb"] > 0 and "state_disk_free_mb" in data
    assert "chassis" in data["counters"]["buses"]
    for rec in health:
        assert_valid_record(rec)


def collect_records(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.messages if "/events/" in m.topic]


def verified_chain(records: list[dict[str, Any]], key: Path) -> list[dict[str, Any]]:
    """De-duplicate by id (same id must mean the same record) and verify the chain."""
    by_id: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["id"] in by_id:
            assert by_id[r["id"]] == r, "same id, different content"
        by_id[r["id"]] = r
    chain = sorted(by_id.values(), key=lambda r: r["seq"])
    for r in chain:
        assert_valid_record(r)
    report = verify_records(chain, DeviceKey.load(key))
    assert report.ok, report.reason
    assert chain[0]["seq"] == 1
    return chain


def test_end_to_end_replay_agent_broker(tmp_path: Path, mqtt_broker: Any, mqtt_pki: Any
                                        ) -> None:
    """The bench drive through the real agent process and Mosquitto: every record arrives,
    in one verified chain without a gap.

    It takes about a minute because the 45 s bench drive is replayed at real speed: the
    agent times its monitors on receive time, so a faster replay would change the drive
    it sees."""
    group = multicast_group()
    cert = mqtt_pki.client(VIN)
    cfg = write_config(tmp_path, group, uplink_section(mqtt_broker, cert))
    trace = make_trace(tmp_path)
    with Subscriber(mqtt_broker, mqtt_pki.client("backend-e2e"), f"icv/{VIN}/#") as sub:
        agent = Agent(cfg).start()
        try:
            assert wait_until(lambda: any(m.topic.endswith("/status") and m.payload == b"online"
                                          for m in sub.messages), 30), agent.log_text()
            r = replay(trace, group, speed=1.0)
            assert r.returncode == 0, r.stderr
            assert agent.stop(signal.SIGTERM) == 0
        finally:
            agent.kill()
        final_seq = chain_state(tmp_path / "state")["seq"]
        assert wait_until(lambda: len({r["seq"] for r in collect_records(sub)}) >= final_seq,
                          20), agent.log_text()
        status = [m.payload for m in sub.messages if m.topic.endswith("/status")]
        assert status[-1] == b"offline"
    chain = verified_chain(collect_records(sub), tmp_path / "state" / "device.key")
    assert [r["seq"] for r in chain] == list(range(1, final_seq + 1))
    types = [r["type"] for r in chain]
    for expected in ("agent.started", "cda.activated", "driver.disengagement", "cda.mrm",
                     "cda.lockout", "cda.deactivated", "accident.trigger", "accident.record",
                     "agent.stopped"):
        assert expected in types, types
    for m in sub.messages:
        if "/events/" in m.topic:
            rec = m.json()
            assert m.topic == f"icv/{VIN}/events/{rec['type']}"
            assert m.user_properties == {"schema": rec["schema"], "id": rec["id"]}


def test_broker_outage_loses_nothing_and_keeps_lane_order(tmp_path: Path, mqtt_broker: Any,
                                                          mqtt_pki: Any) -> None:
    """The whole drive while the broker is down: nothing is lost, and the backlog goes out
    lane first once it is back.

    It takes about a minute because the 45 s bench drive is replayed at real speed: the
    agent times its monitors on receive time, so a faster replay would change the drive
    it sees."""
    group = multicast_group()
    cfg = write_config(tmp_path, group, uplink_section(mqtt_broker, mqtt_pki.client(VIN)))
    trace = make_trace(tmp_path)
    import paho.mqtt.client as mqtt

    sub = Subscriber(mqtt_broker, mqtt_pki.client("backend-outage"), f"icv/{VIN}/events/#",
                     client_id="backend-outage", protocol=mqtt.MQTTv311).start()
    agent = Agent(cfg).start()
    try:
        assert wait_until(lambda: len(sub.messages) >= 1, 30), agent.log_text()  # started
        time.sleep(0.5)
        mqtt_broker.stop()                     # the whole drive happens while offline
        before = {r["id"] for r in collect_records(sub)}
        r = replay(trace, group, speed=1.0)
        assert r.returncode == 0, r.stderr
        depth_seq = chain_state(tmp_path / "state")["seq"]
        mqtt_broker.start()
        assert wait_until(lambda: len({x["seq"] for x in collect_records(sub)}) >= depth_seq,
                          60), agent.log_text()
        assert agent.stop(signal.SIGTERM) == 0
    finally:
        agent.kill()
        sub.stop()
    received = collect_records(sub)
    chain = verified_chain(received, tmp_path / "state" / "device.key")
    assert [r["seq"] for r in chain][:depth_seq] == list(range(1, depth_seq + 1))
    # what piled up during the outage went out lane first: accidents before the rest
    backlog = [r for r in received if r["seq"] <= depth_seq and r["id"] not in before]
    first = {}
    for i, r in enumerate(backlog):
        first.setdefault(r["id"], i)
    ordered = sorted(first, key=first.get)
    by_id = {r["id"]: r for r in backlog}
    keys = [(lane_of(by_id[i]["type"]), by_id[i]["seq"]) for i in ordered]
    assert keys == sorted(keys), keys
    assert by_id[ordered[0]]["type"] == "accident.trigger"


def test_sigkill_while_publishing_loses_nothing(tmp_path: Path, mqtt_broker: Any,
                                                mqtt_pki: Any) -> None:
    group = multicast_group()
    cfg = write_config(tmp_path, group, uplink_section(mqtt_broker, mqtt_pki.client(VIN)))
    trace = make_trace(tmp_path)
    with Subscriber(mqtt_broker, mqtt_pki.client("backend-kill"), f"icv/{VIN}/events/#") as sub:
        agent = Agent(cfg).start()
        try:
            assert wait_until(lambda: len(sub.messages) >= 1, 30), agent.log_text()
            r = replay(trace, group, speed=2.0)
            assert r.returncode == 0, r.stderr
            agent.kill()                        # SIGKILL: no flush, no goodbye
            killed_at = chain_state(tmp_path / "state")["seq"]
            agent = Agent(cfg).start()          # the restarted agent sends the rest
            assert agent.wait_running(), agent.log_text()
            assert wait_until(lambda: len({x["seq"] for x in collect_records(sub)})
                              >= killed_at, 30), agent.log_text()
            assert agent.stop(signal.SIGTERM) == 0
            final = chain_state(tmp_path / "state")["seq"]
            assert wait_until(lambda: len({x["seq"] for x in collect_records(sub)}) >= final,
                              20)
        finally:
            agent.kill()
    chain = verified_chain(collect_records(sub), tmp_path / "state" / "device.key")
    assert [r["seq"] for r in chain] == list(range(1, final + 1))
    assert [r["type"] for r in chain].count("agent.started") == 2


def test_bench_backend_verifies_everything_and_commands_round_trip(
        tmp_path: Path, mqtt_broker: Any, mqtt_pki: Any) -> None:
    """Scenario replay -> icv-agent run -> broker -> bench backend: every record verified,
    chain intact, no gap, lane order kept; signed commands answered, forged ones refused.

    It takes about a minute because the 45 s bench drive is replayed at real speed: the
    agent times its monitors on receive time, so a faster replay would change the drive
    it sees."""
    from hil.backend import Backend, BrokerConfig, keygen, load_backend_key

    group = multicast_group()
    backend_key, backend_pub, _ = keygen(tmp_path / "backend-keys")
    rogue_key, _, _ = keygen(tmp_path / "rogue-keys")
    cfg = write_config(tmp_path, group, uplink_section(mqtt_broker, mqtt_pki.client(VIN),
                                                       backend_key=backend_pub))
    keys_dir = vehicle_keys(cfg, VIN)
    trace = make_trace(tmp_path)
    bcert = mqtt_pki.client("backend-bench")
    backend = Backend(BrokerConfig(host=mqtt_broker.host, port=mqtt_broker.port, ca=bcert.ca,
                                   cert=bcert.cert, key=bcert.key),
                      tmp_path / "backend.db", keys_dir, group="")
    assert backend.start(30)
    agent = Agent(cfg).start()
    try:
        assert backend.wait(lambda: backend.summary(VIN).records > 0, 30), agent.log_text()
        assert replay(trace, group, speed=1.0).returncode == 0
        key = load_backend_key(backend_key)
        answer = backend.send_command(key, VIN, "config.get", {}, timeout=15)
        assert answer is not None and answer["ok"], answer
        shown = answer["result"]
        assert shown["vehicle"]["vin"] == VIN
        assert shown["uplink"]["key"] == "***" and shown["uplink"]["cert"] == "***"
        assert "BEGIN" not in json.dumps(shown)
        forged = backend.send_command(load_backend_key(rogue_key), VIN, "config.get", {},
                                      timeout=3)
        assert forged is None  # a bad signature gets no answer, only a record
        assert agent.stop(signal.SIGTERM) == 0
    finally:
        agent.kill()
    final = chain_state(tmp_path / "state")["seq"]
    assert backend.wait(lambda: backend.summary(VIN).last_seq == final, 20)
    summary = backend.summary(VIN)
    backend.close()
    assert summary.ok, summary.to_dict()
    assert summary.chain == "intact" and not summary.gaps and summary.lane_order == "kept"
    assert summary.rejected_total == 0 and summary.duplicates >= 0
    assert summary.types.get("agent.command_rejected") == 1
    # one accident: a trigger (and an update if a later deployment shortened the deadline)
    assert summary.types.get("accident.trigger", 0) >= 1
    assert summary.types.get("accident.record") == 1
    assert summary.status == "offline"
