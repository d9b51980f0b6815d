"""A whole campaign on one machine: bench backend -> MQTT (Mosquitto, mutual TLS) -> the
real ``icv-agent run`` process -> consent on the HMI topic -> two virtual ECUs flashed over
ISO-TP on a udp_multicast bus -> versions read back -> ``ota.completed`` verified by the
backend. The vehicle is parked: its CAN frames come from the agent's own mapping."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import can
from campaign_bench import (
    DVR_IDENTITY,
    DVR_V2,
    EPS_IDENTITY,
    EPS_V2,
    VIN,
    end_to_end,
    sim_config,
)

from agent.records.keys import DeviceKey
from hil.backend.campaign import campaign_args, consent_args, ecu_image, run_campaign
from hil.backend.sender import load_backend_key
from hil.demo_ota import ParkedVehicle
from hil.ecu_sim import VirtualEcu
from tests.live_agent import Agent, wait_until
from tests.mqtt_broker import Subscriber

ROOT = Path(__file__).resolve().parents[2]
EPS_V3 = {"F189": "3.0.0", "F188": "SW-EPS-0300", "F195": "SUP-3.0.0"}


def icv_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_full_campaign_backend_mqtt_agent_hmi_consent_two_ecus(
        tmp_path: Path, mqtt_broker: Any, mqtt_pki: Any) -> None:
    e2e = end_to_end(tmp_path, mqtt_broker, mqtt_pki)
    ota, server, cfg, cfg_path = e2e.ota, e2e.server, e2e.cfg, e2e.cfg_path
    bus = e2e.bus()
    notifier = can.Notifier(bus, [], timeout=0.1)
    ecus = {c.name: VirtualEcu(sim_config(c, EPS_IDENTITY if c.name == "eps"
                                          else DVR_IDENTITY), bus, notifier).start()
            for c in cfg.ecu}
    vehicle = ParkedVehicle(cfg, bus).start()
    hmi = Subscriber(mqtt_broker, mqtt_pki.client("hmi"), f"icv/{VIN}/hmi/ota/#",
                     client_id="test-hmi").start()
    device = DeviceKey.generate()
    device.save(cfg.key_path)
    backend = e2e.backend(tmp_path, mqtt_broker, mqtt_pki, device, "backend-ota")
    agent = Agent(cfg_path).start()
    try:
        assert agent.wait_running(), agent.log_text()
        # the agent read both ECUs at start
        assert backend.wait(lambda: len([r for r in backend.store.records(VIN)
                                         if r["type"] == "ecu.versions"]) >= 2, 30), \
            agent.log_text()
        for name, version in (("eps", EPS_V2), ("dvr", DVR_V2)):
            identity = EPS_IDENTITY if name == "eps" else DVR_IDENTITY
            hw = identity["F191"]
            ota.release(VIN, name, f"{name}/{name}-{version['F189']}.bin",
                        ecu_image(40 * 1024, version, {"F191": hw}, seed=name),
                        hardware_id=hw, release_counter=2, versions=version)

        def on_record(record: dict[str, Any]) -> None:
            if record["type"] == "ota.consent_requested":    # the user taps "install"
                hmi.client.publish(f"icv/{VIN}/hmi/ota/consent",
                                   json.dumps(consent_args(record["data"])), qos=1)

        args = campaign_args("OTA-E2E-1", "2026.1", recall=True, recall_number="RC-2026-001")
        result = run_campaign(backend, load_backend_key(e2e.private), VIN, args, timeout=90,
                              on_record=on_record)
        assert result["response"] and result["response"]["ok"], result
        outcome = result["outcome"]
        assert outcome is not None, (result, agent.log_text()[-3000:])
        types = [r["type"] for r in result["records"]]
        assert outcome["type"] == "ota.completed", (types, outcome["data"])
        for expected in ("ota.received", "ota.consent_requested", "ota.consent",
                         "ota.ecu_started", "ota.progress", "ota.ecu_done"):
            assert expected in types, types
        asked = next(r for r in result["records"] if r["type"] == "ota.consent_requested")
        assert asked["data"]["purpose"] == args["purpose"]
        assert asked["data"]["unavailable_functions"] == args["unavailable_functions"]
        assert asked["data"]["recall_number"] == "RC-2026-001"
        consent = next(r for r in result["records"] if r["type"] == "ota.consent")["data"]
        assert (consent["decision"], consent["channel"]) == ("accepted", "hmi")
        after = {row["ecu"]: row["after"]["F189"] for row in outcome["data"]["ecus"]}
        assert after == {"eps": "2.0.0", "dvr": "0.8.0"}
        assert ecus["eps"].versions()[0xF189] == "2.0.0"
        assert ecus["dvr"].versions()[0xF189] == "0.8.0"
        # the backend verified every record it stored: signatures, chain, no gap
        assert backend.summary(VIN).ok, backend.summary(VIN).to_dict()
        # the user was told: offer (retained, then cleared) and the result
        assert wait_until(lambda: any(m.topic.endswith("/result") for m in hmi.messages), 10)
        offers = [m for m in hmi.messages if m.topic.endswith("/offer") and m.payload]
        assert offers and offers[0].json()["changes"] == args["changes"]
        # the HMI was shown the offer's nonce, and the consent that counted named it
        assert offers[0].json()["offer_nonce"] == asked["data"]["offer_nonce"] \
            == consent["offer_nonce"]
        result_msg = [m for m in hmi.messages if m.topic.endswith("/result")][-1].json()
        assert (result_msg["activity_id"], result_msg["result"]) == ("OTA-E2E-1", "completed")
        # versions read back after the update were recorded
        assert backend.wait(lambda: any(
            r["type"] == "ecu.versions" and r["data"]["reason"] == "ota"
            and r["data"]["dids"].get("F189") == "2.0.0" for r in backend.store.records(VIN)),
            20)
        # owner app: a second campaign declined through the signed ota.consent command
        ota.release(VIN, "eps", "eps/eps-3.0.0.bin",
                    ecu_image(40 * 1024, EPS_V3, {"F191": EPS_IDENTITY["F191"]}, seed="v3"),
                    hardware_id=EPS_IDENTITY["F191"], release_counter=3, versions=EPS_V3)
        second = run_campaign(backend, load_backend_key(e2e.private), VIN,
                              campaign_args("OTA-E2E-2", "2026.2"), timeout=60,
                              consent="decline")   # the signed ota.consent, offer's nonce
        assert second["consent_response"] and second["consent_response"]["ok"], second
        assert second["outcome"]["type"] == "ota.failed", second
        assert second["outcome"]["data"]["reason"] == "declined"
        consent = next(r for r in second["records"] if r["type"] == "ota.consent")["data"]
        assert (consent["decision"], consent["channel"]) == ("declined", "backend")
        assert ecus["eps"].versions()[0xF189] == "2.0.0"
        history = icv_agent("ota", "history", "--config", str(cfg_path))
        assert history.returncode == 0, history.stderr
        assert "OTA-E2E-1" in history.stdout and "completed" in history.stdout
        assert "OTA-E2E-2" in history.stdout and "declined" in history.stdout
        assert "chain OK" in history.stdout
        table = icv_agent("ecu", "versions", "--config", str(cfg_path))
        assert table.returncode == 0, table.stderr
        assert "#35 steering ECU software version: eps initial 1.0.0 current 2.0.0" \
            in table.stdout, table.stdout
        assert "#36 DVR software version: dvr initial 0.7.0 current 0.8.0" in table.stdout
        assert "#40 vehicle software version: ADCU 2.4.1 / VCU 1.9.0" in table.stdout
        assert agent.stop() == 0
    finally:
        agent.kill()
        backend.close()
        hmi.stop()
        vehicle.stop()
        for ecu in ecus.values():
            ecu.stop()
        notifier.stop()
        bus.shutdown()
        server.stop()
