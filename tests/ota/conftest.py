"""UDS fixtures: a tester bus and an ECU bus on one in-process python-can virtual channel,
virtual ECUs with small timings, and flash images with the ICVI trailer."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import can
import pytest

from agent.ota.settings import EcuConfig, StepBudgets
from agent.ota.uds.image import build_image
from hil.ecu_sim import SimConfig, VirtualEcu, VirtualEcuConfig

UDS_IDENTITY = {
    "F187": "EPS-4711-A", "F188": "SW-EPS-0100", "F189": "1.0.0", "F18C": "EPS0000001",
    "F190": "LSVAA4182E2000001", "F191": "HW-EPS-03", "F195": "SUP-1.0.0",
}
UDS_NEW_VERSIONS = {0xF188: "SW-EPS-0200", 0xF189: "2.0.0", 0xF195: "SUP-2.0.0"}


@pytest.fixture
def uds_buses() -> Iterator[tuple[can.BusABC, can.BusABC]]:
    """(tester bus, ECU bus) on a channel no other test uses."""
    channel = f"uds-{uuid.uuid4().hex}"
    tester = can.Bus(interface="virtual", channel=channel)
    ecu = can.Bus(interface="virtual", channel=channel)
    yield tester, ecu
    tester.shutdown()
    ecu.shutdown()


@pytest.fixture
def uds_ecu_config() -> Callable[..., EcuConfig]:
    """EcuConfig factory: small budgets, a fresh random secret per test."""
    secret = os.urandom(16).hex()

    def make(budget: StepBudgets | None = None, **overrides: object) -> EcuConfig:
        values: dict[str, object] = dict(
            name="eps", role="steering", bus="chassis", txid=0x7E0, rxid=0x7E8,
            security_secret=secret, memory_address=0x80000, memory_size=512 * 1024,
            exit_crc32=True, can_restore=True, p2_s=0.2, p2_star_s=2.0,
            tester_present_s=1.0, retries=2,
            budget=budget or StepBudgets(
                versions_s=3, session_s=3, security_s=3, fingerprint_s=3, erase_s=3,
                download_s=3, transfer_block_s=2, exit_s=3, dependency_s=3, reset_s=5,
                restore_s=8))
        values.update(overrides)
        return EcuConfig(**values)  # type: ignore[arg-type]

    return make


@pytest.fixture
def uds_virtual_ecu(uds_buses: tuple[can.BusABC, can.BusABC]
                    ) -> Iterator[Callable[..., VirtualEcu]]:
    """Start a VirtualEcu on the ECU bus; stopped at the end of the test."""
    started: list[VirtualEcu] = []

    def start(ecu: EcuConfig, sim: SimConfig | None = None, **kwargs: object) -> VirtualEcu:
        config = VirtualEcuConfig(ecu=ecu, identity=dict(UDS_IDENTITY),
                                  sim=sim or SimConfig(p2_ms=200, p2_star_ms=2000), **kwargs)
        ecu_sim = VirtualEcu(config, uds_buses[1]).start()
        started.append(ecu_sim)
        return ecu_sim

    yield start
    for ecu_sim in started:
        ecu_sim.stop()


@pytest.fixture
def uds_image(tmp_path: Path) -> Callable[..., Path]:
    """Write an image of ``size`` bytes (trailer included) providing UDS_NEW_VERSIONS."""

    def make(size: int = 128 * 1024, provides: dict[int, str] | None = None,
             requires: dict[int, str] | None = None, name: str = "eps.bin") -> Path:
        provides = UDS_NEW_VERSIONS if provides is None else provides
        requires = {0xF191: UDS_IDENTITY["F191"]} if requires is None else requires
        trailer_len = len(build_image(b"", provides, requires))
        body = os.urandom(size - trailer_len)
        path = tmp_path / name
        path.write_bytes(build_image(body, provides, requires))
        assert path.stat().st_size == size
        return path

    return make
