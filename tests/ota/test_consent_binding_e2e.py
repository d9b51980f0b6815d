"""Hole 5 end to end: a real ``icv-agent run`` process, Mosquitto (mutual TLS), the bench
backend and a virtual ECU on a udp_multicast bus. An ``accept`` is left on all three
channels before the offer exists (a retained HMI consent message, the signed backend
``ota.consent``, ``icv-agent ota consent --force``): each is refused and recorded, the
offer then shown is not taken as answered and the bus carries no programming request;
the user's answer to the offer (its nonce) flashes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import can
from bus_sniff import programming_requests
from campaign_bench import DVR_IDENTITY, EPS_IDENTITY, EPS_V2, VIN, end_to_end, sim_config

from agent.records.keys import DeviceKey
from hil.backend.campaign import campaign_args, consent_args, ecu_image, run_campaign
from hil.backend.sender import load_backend_key
from hil.demo_ota import ParkedVehicle
from hil.ecu_sim import VirtualEcu
from tests.live_agent import Agent, wait_until
from tests.mqtt_broker import Subscriber

ROOT = Path(__file__).resolve().parents[2]
ACTIVITY = "OTA-E2E-EARLY"
QUIET_S = 2.0


def icv_agent(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def test_accepts_left_before_the_offer_on_every_channel_flash_nothing(
        tmp_path: Path, mqtt_broker: Any, mqtt_pki: Any) -> None:
    e2e = end_to_end(tmp_path, mqtt_broker, mqtt_pki)
    ota, server, cfg, cfg_path = e2e.ota, e2e.server, e2e.cfg, e2e.cfg_path
    bus = e2e.bus()
    sniffed: list[can.Message] = []
    notifier = can.Notifier(bus, [sniffed.append], timeout=0.1)
    ecus = {c.name: VirtualEcu(sim_config(c, EPS_IDENTITY if c.name == "eps"
                                          else DVR_IDENTITY), bus, notifier).start()
            for c in cfg.ecu}
    vehicle = ParkedVehicle(cfg, bus).start()
    hmi = Subscriber(mqtt_broker, mqtt_pki.client("hmi"), f"icv/{VIN}/hmi/ota/#",
                     client_id="test-hmi").start()
    consent_topic = f"icv/{VIN}/hmi/ota/consent"
    early = {"activity_id": ACTIVITY, "campaign": ACTIVITY, "decision": "accept"}
    # 1. HMI: a retained accept waits on the consent topic for whoever subscribes
    hmi.client.publish(consent_topic, json.dumps(early), qos=1, retain=True).wait_for_publish(10)
    device = DeviceKey.generate()
    device.save(cfg.key_path)
    backend = e2e.backend(tmp_path, mqtt_broker, mqtt_pki, device, "backend-early")
    agent = Agent(cfg_path).start()
    key = load_backend_key(e2e.private)

    def refusals() -> list[dict[str, Any]]:
        return [r["data"] for r in backend.store.records(VIN)
                if r["type"] == "ota.consent_rejected" and r["data"]["activity_id"] == ACTIVITY]

    try:
        assert agent.wait_running(), agent.log_text()
        assert backend.wait(lambda: len([r for r in backend.store.records(VIN)
                                         if r["type"] == "ecu.versions"]) >= 2, 30), \
            agent.log_text()
        # 2. owner app: the signed ota.consent before there is an offer
        answer = backend.send_command(key, VIN, "ota.consent", early, timeout=15)
        assert answer is not None and not answer["ok"], answer
        # 3. bench: icv-agent ota consent --force before there is an offer
        left = icv_agent("ota", "consent", ACTIVITY, "--accept", "--force", "--config",
                         str(cfg_path))
        assert left.returncode == 0, left.stderr
        assert backend.wait(lambda: len(refusals()) >= 3, 30), (refusals(), agent.log_text())
        assert sorted((r["channel"], r["reason"]) for r in refusals()) == \
            [("backend", "no_offer"), ("cli", "no_offer"), ("hmi", "no_offer")]
        ota.release(VIN, "eps", "eps/eps-2.0.0.bin",
                    ecu_image(40 * 1024, EPS_V2, {"F191": EPS_IDENTITY["F191"]}, seed="eps"),
                    hardware_id=EPS_IDENTITY["F191"], release_counter=2, versions=EPS_V2)
        offered: list[dict[str, Any]] = []

        def on_record(record: dict[str, Any]) -> None:
            if record["type"] != "ota.consent_requested":
                return
            offered.append(record["data"])
            time.sleep(QUIET_S)                  # the early accepts had their chance
            types = [r["type"] for r in backend.store.records(VIN)
                     if r["data"].get("activity_id") == ACTIVITY]
            assert "ota.consent" not in types, types
            assert programming_requests(sniffed, cfg.ecu) == []
            hmi.client.publish(consent_topic, json.dumps(consent_args(record["data"])),
                               qos=1)            # the user taps "install" on this offer

        result = run_campaign(backend, key, VIN, campaign_args(ACTIVITY, "2026.3"),
                              timeout=90, on_record=on_record)
        outcome = result["outcome"]
        assert outcome is not None, (result, agent.log_text()[-3000:])
        assert outcome["type"] == "ota.completed", outcome["data"]
        consent = next(r for r in result["records"] if r["type"] == "ota.consent")["data"]
        assert (consent["channel"], consent["offer_nonce"]) == \
            ("hmi", offered[0]["offer_nonce"])
        assert programming_requests(sniffed, cfg.ecu)         # the flash is on the bus
        assert ecus["eps"].versions()[0xF189] == "2.0.0"
        assert len(refusals()) == 3                            # nothing else was refused
        assert backend.summary(VIN).ok, backend.summary(VIN).to_dict()
        assert wait_until(lambda: any(m.topic.endswith("/offer") and m.payload
                                      and m.json().get("offer_nonce") for m in hmi.messages),
                          10)
        assert agent.stop() == 0
    finally:
        agent.kill()
        backend.close()
        hmi.client.publish(consent_topic, b"", qos=1, retain=True)
        hmi.stop()
        vehicle.stop()
        for sim in ecus.values():
            sim.stop()
        notifier.stop()
        bus.shutdown()
        server.stop()
