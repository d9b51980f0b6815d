"""The strict recipe of ``config/ecu/bcm.toml`` against the strict OEM bootloader of the
virtual ECU (``[sim] strict = true``): real ISO-TP frames on a python-can bus, a sniffer on
the bus that sees every request, physical and functional."""

from __future__ import annotations

import dataclasses
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import can
import pytest

from agent.ota.settings import EcuConfig
from agent.ota.uds import FlashSession, NegativeResponse
from agent.ota.uds.image import build_image
from agent.settings_loader import Problems, build
from hil.ecu_sim import Fault, VirtualEcu, load_sim_config
from tests.helpers import scaled

ROOT = Path(__file__).resolve().parents[2]
NEW = {0xF188: "SW-BCM-0500", 0xF189: "5.0.0", 0xF195: "SUP-BCM-5.0.0"}


class Sniffer(can.Listener):
    """Every request on the ECU's physical and functional ids, as UDS payload starts."""

    def __init__(self, ids: set[int]):
        self.ids = ids
        self.requests: list[tuple[int, bytes]] = []

    def on_message_received(self, msg: can.Message) -> None:
        data = bytes(msg.data)
        if msg.arbitration_id in self.ids and data and data[0] >> 4 in (0, 1):
            start = data[1:1 + (data[0] & 0x0F)] if data[0] >> 4 == 0 else data[2:]
            self.requests.append((msg.arbitration_id, start))

    def services(self) -> list[str]:
        """``"F:85 82"`` for functional, ``"P:10 03"`` for physical requests (2 bytes)."""
        out = []
        for can_id, start in self.requests:
            kind = "F" if can_id == 0x7DF else "P"
            head = start[:2] if start[0] not in (0x31,) else start[:4]
            out.append(f"{kind}:{head.hex(' ').upper()}")
        return out


@pytest.fixture
def strict_bench(tmp_path: Path) -> Iterator[tuple[EcuConfig, VirtualEcu, Sniffer,
                                                    can.BusABC, Path]]:
    config = load_sim_config(ROOT / "config" / "ecu" / "bcm.toml")
    # Loaded test machines: P2 and the budgets scaled like every UDS test (the ECU's own
    # answer times are unchanged).
    ecu = dataclasses.replace(config.ecu, p2_s=scaled(0.3), p2_star_s=scaled(5.0))
    config = dataclasses.replace(config, ecu=ecu,
                                 sim=dataclasses.replace(config.sim, p2_ms=int(scaled(300)),
                                                         security_delay_s=0.5))
    channel = f"strict-{uuid.uuid4().hex}"
    tester = can.Bus(interface="virtual", channel=channel)
    ecu_bus = can.Bus(interface="virtual", channel=channel)
    sniff_bus = can.Bus(interface="virtual", channel=channel)
    sniffer = Sniffer({ecu.txid, ecu.functional_id})
    notifier = can.Notifier(sniff_bus, [sniffer], timeout=0.1)
    sim = VirtualEcu(config, ecu_bus).start()
    provides = {k: v for k, v in NEW.items()}
    image = tmp_path / "bcm.bin"
    trailer = len(build_image(b"", provides, {0xF191: "HW-BCM-02"}))
    image.write_bytes(build_image(os.urandom(64 * 1024 - trailer), provides,
                                  {0xF191: "HW-BCM-02"}))
    try:
        yield ecu, sim, sniffer, tester, image
    finally:
        sim.stop()
        notifier.stop()
        for bus in (tester, ecu_bus, sniff_bus):
            bus.shutdown()


def test_the_strict_recipe_flashes_the_strict_bootloader(strict_bench):
    ecu, sim, sniffer, tester, image = strict_bench
    steps: list[str] = []
    result = FlashSession(ecu, tester, image, NEW, on_step=steps.append,
                          tester_id="BENCH1").run()
    assert result.ok, result.error
    assert result.after_errors == []
    assert sim.versions()[0xF189] == "5.0.0"
    assert steps == ["versions", "session", "preconditions", "dtc_setting",
                     "communication_control", "session", "security", "fingerprint", "erase",
                     "request_download", "transfer", "transfer_exit", "check_memory",
                     "dependency_check", "reset", "verify", "session",
                     "communication_control", "dtc_setting", "session"]
    # the fingerprint in the ECU's layout: YYMMDD in BCD, then the tester serial
    written = sim.state.board[0xF15A]
    assert len(written) == 9 and written[3:] == b"BENCH1"
    # on the bus, in this order (TesterPresent and transfer blocks aside)
    seen = [s for s in sniffer.services() if not s.startswith(("P:22", "P:36", "P:3E",
                                                                "F:3E", "P:27"))]
    assert seen == [
        "P:10 03", "P:31 01 02 03", "F:85 82", "F:28 83", "P:10 02", "P:2E F1",
        "P:31 01 FF 00", "P:34 00", "P:37", "P:31 01 02 02", "P:31 01 FF 01", "P:11 01",
        "F:10 83", "F:28 80", "F:85 81", "F:10 81"]
    assert sim.state.session == 0x01


def test_the_default_recipe_is_refused_by_the_strict_bootloader(strict_bench):
    """What happened before recipes: 10 02 straight from the default session is NRC 0x22
    (conditionsNotCorrect); nothing is erased or downloaded."""
    ecu, sim, sniffer, tester, image = strict_bench
    plain = build(EcuConfig, {"name": "bcm", "txid": ecu.txid, "rxid": ecu.rxid},
                  "t", Problems())
    ecu = dataclasses.replace(ecu, flash=plain.flash, after=[], restore=plain.restore)
    result = FlashSession(ecu, tester, image, NEW).run()
    assert isinstance(result.error, NegativeResponse)
    assert (result.error.step, result.error.nrc) == ("session", 0x22)
    assert not result.touched
    assert not [s for s in sniffer.services() if s.startswith(("P:34", "P:36", "P:31"))]
    assert sim.versions()[0xF189] == "4.0.0"


def test_a_failure_mid_flash_still_switches_the_bus_back_on(strict_bench):
    """The erase is refused after the bus was silenced: the after steps run anyway and the
    other ECUs hear 28 80 01 and 85 81; the ECU is left in its default session."""
    ecu, sim, sniffer, tester, image = strict_bench
    sim.inject(Fault(kind="nrc", step="erase", nrc=0x72))
    result = FlashSession(ecu, tester, image, NEW).run()
    assert isinstance(result.error, NegativeResponse)
    assert (result.error.step, result.error.nrc) == ("erase", 0x72)
    assert result.after_errors == []
    services = sniffer.services()
    refused = services.index("P:31 01 FF 00")
    assert services[refused + 1:] == ["P:10 01", "F:10 83", "F:28 80", "F:85 81", "F:10 81"]
    assert (sim.state.session, sim.state.comm_control, sim.state.dtc_setting) == (1, 0, 1)


def test_a_wrong_key_algorithm_is_the_ecus_nrc_not_a_flash(strict_bench):
    ecu, sim, sniffer, tester, image = strict_bench
    flash = [dataclasses.replace(s, algorithm="xor") if s.do == "security" else s
             for s in ecu.flash]
    result = FlashSession(dataclasses.replace(ecu, flash=flash), tester, image, NEW).run()
    assert isinstance(result.error, NegativeResponse)
    assert (result.error.step, result.error.nrc) == ("security", 0x35)   # invalidKey
    assert not result.touched
    assert "F:28 80" in sniffer.services()                  # the bus was switched back on
