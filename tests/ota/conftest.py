"""UDS fixtures: a tester bus and an ECU bus on one in-process python-can virtual channel,
virtual ECUs with small timings, and flash images with the ICVI trailer.

Every timing here goes through ``tests.helpers.scaled`` (``ICV_TEST_TIME_SCALE``)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import fields
from pathlib import Path
from typing import Any

import can
import pytest

from agent.ota.settings import EcuConfig, StepBudgets
from agent.ota.uds.image import build_image
from hil.ecu_sim import SimConfig, VirtualEcu, VirtualEcuConfig
from tests.helpers import scaled, scaled_ms

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


# Step budgets of the tests, in seconds before scaling (``budgets`` scales them).
BUDGETS_S: dict[str, float] = dict(
    versions_s=3, session_s=3, security_s=3, fingerprint_s=3, erase_s=3, download_s=3,
    transfer_block_s=2, exit_s=3, dependency_s=3, reset_s=5, restore_s=8)


def budgets(**changes: float) -> StepBudgets:
    """The tests' step budgets with ``changes`` (unscaled seconds), all through ``scaled``."""
    values = {**BUDGETS_S, **changes}
    return StepBudgets(**{k: scaled(v) for k, v in values.items()})


def uds_sim(**changes: Any) -> SimConfig:
    """A virtual ECU's own timing with every time in it scaled: ``p2_ms``/``p2_star_ms``
    (200 / 2000 unless changed) and each ``*_s`` field (SimConfig's default or the change),
    all given in values before scaling; other fields (block length, seeds) as they are."""
    values: dict[str, Any] = {f.name: getattr(SimConfig(), f.name) for f in fields(SimConfig)}
    values.update(p2_ms=200, p2_star_ms=2000)
    values.update(changes)
    for key, value in values.items():
        if key.endswith("_s"):
            values[key] = scaled(value)
    values["p2_ms"] = scaled_ms(values["p2_ms"])
    values["p2_star_ms"] = scaled_ms(values["p2_star_ms"], 10)
    return SimConfig(**values)


@pytest.fixture
def uds_ecu_config() -> Callable[..., EcuConfig]:
    """EcuConfig factory: small (scaled) budgets and timings, a fresh random secret per
    test. Timing overrides (``p2_s``, ``p2_star_s``, ``tester_present_s``) are given in
    seconds before scaling; pass ``budget=budgets(...)`` for other budgets."""
    secret = os.urandom(16).hex()

    def make(budget: StepBudgets | None = None, **overrides: object) -> EcuConfig:
        timings: dict[str, float] = dict(p2_s=0.2, p2_star_s=2.0, tester_present_s=1.0)
        for key in list(overrides):
            if key in timings:
                timings[key] = float(overrides.pop(key))  # type: ignore[arg-type]
        values: dict[str, object] = dict(
            name="eps", role="steering", bus="chassis", txid=0x7E0, rxid=0x7E8,
            security_secret=secret, memory_address=0x80000, memory_size=512 * 1024,
            exit_crc32=True, can_restore=True, retries=2, budget=budget or budgets(),
            **{k: scaled(v) for k, v in timings.items()})
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
                                  sim=sim or uds_sim(), **kwargs)
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
