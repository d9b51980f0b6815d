"""A campaign end to end to an ECU with a strict OEM bootloader: bench backend -> MQTT
(Mosquitto, mutual TLS) -> the real ``icv-agent run`` process -> the signed consent ->
``config/ecu/bcm.toml``'s recipe over ISO-TP on a udp_multicast bus -> the strict virtual
ECU (``[sim] strict = true``) -> versions read back -> ``ota.completed`` verified by the
backend. The bus is sniffed: the ECU saw the strict order, and the rest of the bus was
silenced and switched back on functionally."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import can
from campaign_bench import VIN, end_to_end

from agent.records.keys import DeviceKey
from hil.backend.campaign import campaign_args, ecu_image, run_campaign
from hil.backend.sender import load_backend_key
from hil.benchconfig import ecu_entries
from hil.demo_ota import ParkedVehicle
from hil.ecu_sim import VirtualEcu, load_sim_config
from tests.helpers import scaled
from tests.live_agent import Agent

ROOT = Path(__file__).resolve().parents[2]
BCM_V5 = {"F189": "5.0.0", "F188": "SW-BCM-0500", "F195": "SUP-BCM-5.0.0"}


class Requests(can.Listener):
    """The first bytes of every request frame to the BCM (physical) and to all (0x7DF)."""

    def __init__(self, physical: int, functional: int):
        self.ids = {physical: "P", functional: "F"}
        self.seen: list[str] = []

    def on_message_received(self, msg: can.Message) -> None:
        kind = self.ids.get(msg.arbitration_id)
        data = bytes(msg.data)
        if kind and data and data[0] >> 4 in (0, 1):
            start = data[1:1 + (data[0] & 0x0F)] if data[0] >> 4 == 0 else data[2:]
            self.seen.append(f"{kind}:{start[:2].hex(' ').upper()}")


def bcm_entry() -> str:
    """bcm.toml's [ecu] table on the bench bus; P2/P2* loosened for processes talking
    over UDP multicast on a loaded machine (the recipe is unchanged)."""
    text = ecu_entries("bcm", bus="chassis")
    text = re.sub(r"(?m)^p2_s = .*$", f"p2_s = {scaled(0.3)!r}", text)
    return re.sub(r"(?m)^p2_star_s = .*$", f"p2_star_s = {scaled(5.0)!r}", text)


def test_campaign_flashes_a_strict_oem_bootloader_end_to_end(
        tmp_path: Path, mqtt_broker: Any, mqtt_pki: Any) -> None:
    e2e = end_to_end(tmp_path, mqtt_broker, mqtt_pki, ecus=bcm_entry())
    ota, server, cfg = e2e.ota, e2e.server, e2e.cfg
    (ecu,) = cfg.ecu
    sim_cfg = load_sim_config(ROOT / "config" / "ecu" / "bcm.toml")
    sim_cfg = dataclasses.replace(sim_cfg, ecu=ecu,
                                  sim=dataclasses.replace(sim_cfg.sim, p2_ms=int(scaled(300))))
    bus = e2e.bus()
    requests = Requests(ecu.txid, ecu.functional_id)
    notifier = can.Notifier(bus, [requests], timeout=0.1)
    sim = VirtualEcu(sim_cfg, bus, notifier).start()
    vehicle = ParkedVehicle(cfg, bus).start()
    device = DeviceKey.generate()
    device.save(cfg.key_path)
    backend = e2e.backend(tmp_path, mqtt_broker, mqtt_pki, device)
    agent = Agent(e2e.cfg_path).start()
    try:
        assert agent.wait_running(), agent.log_text()
        assert backend.wait(lambda: any(r["type"] == "ecu.versions"
                                        for r in backend.store.records(VIN)), 30), \
            agent.log_text()
        hw = sim_cfg.identity["F191"]
        ota.release(VIN, "bcm", "bcm/bcm-5.0.0.bin",
                    ecu_image(48 * 1024, BCM_V5, {"F191": hw}, seed="bcm"),
                    hardware_id=hw, release_counter=5, versions=BCM_V5)
        result = run_campaign(backend, load_backend_key(e2e.private), VIN,
                              campaign_args("OTA-STRICT-1", "2026.4"), timeout=120,
                              consent="accept")
        assert result["response"] and result["response"]["ok"], result
        outcome = result["outcome"]
        assert outcome is not None, (result, agent.log_text()[-3000:])
        assert outcome["type"] == "ota.completed", (outcome["data"], agent.log_text()[-3000:])
        (row,) = outcome["data"]["ecus"]
        assert row["after"]["F189"] == "5.0.0"
        assert sim.versions()[0xF189] == "5.0.0"
        assert backend.summary(VIN).ok, backend.summary(VIN).to_dict()
        # The strict order reached the ECU, and the bus was switched back on.
        order = [s for s in requests.seen if s[:4] in ("P:10", "F:85", "F:28", "F:10")
                 or s.startswith(("P:31 01", "P:34", "P:37", "P:11"))]
        assert order == ["P:10 03", "P:31 01", "F:85 82", "F:28 83", "P:10 02", "P:31 01",
                         "P:34 00", "P:37", "P:31 01", "P:31 01", "P:11 01",
                         "F:10 83", "F:28 80", "F:85 81", "F:10 81"], requests.seen
        assert sim.state.counters.get("boot_into_bootloader", 0) == 1
        assert agent.stop() == 0
    finally:
        agent.kill()
        backend.close()
        vehicle.stop()
        sim.stop()
        notifier.stop()
        bus.shutdown()
        server.stop()
