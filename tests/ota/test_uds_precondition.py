"""The vehicle leaves the safe state mid-flash; the session is kept alive while we wait."""

from __future__ import annotations

import time

from agent.ota.uds import FlashSession, PreconditionViolated
from tests.helpers import scaled
from tests.ota.conftest import UDS_NEW_VERSIONS, uds_sim


class GearAfter:
    """Precondition that reports 'gear not P' from its n-th check on."""

    def __init__(self, n: int):
        self.n = n
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        return "gear is D, not P" if self.calls >= self.n else None


def test_violation_mid_transfer_stops_at_a_block_boundary(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu)
    image = uds_image(128 * 1024)
    # 8 checks before the transfer (one per recipe step: versions, session, security, two
    # fingerprint writes, erase, request download, transfer), then one between blocks:
    # stop after 20.
    gear = GearAfter(8 + 20)

    result = FlashSession(ecu, uds_buses[0], image, UDS_NEW_VERSIONS,
                          precondition=gear).run()

    assert isinstance(result.error, PreconditionViolated)
    assert result.error.reason == "gear is D, not P"
    assert result.error.step == "transfer"
    assert result.blocks == 20
    assert result.bytes_sent == 20 * 1024                 # whole blocks only
    assert sim.state.counters["transfer_block"] == 20     # the ECU got exactly those
    assert result.rolled_back
    assert sim.versions()[0xF189] == "1.0.0"


def test_violation_before_erase_leaves_the_ecu_untouched(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu)

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS,
                          precondition=lambda: "parking brake released").run()

    assert isinstance(result.error, PreconditionViolated)
    assert result.error.step == "versions"
    assert not result.touched
    assert "erase" not in sim.state.counters


def test_tester_present_keeps_the_programming_session_through_a_pause(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config(tester_present_s=0.1)
    sim = uds_virtual_ecu(ecu, uds_sim(p2_ms=200, s3_s=0.4))
    pause = PauseOnce(at=30, seconds=scaled(1.2))          # 3 x S3 without a request of ours

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS,
                          precondition=pause).run()

    assert result.ok, result.error
    assert sim.state.counters["tester_present"] >= 3
    assert "s3_timeout" not in sim.state.counters


def test_without_tester_present_the_ecu_drops_the_session(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    # The same pause with TesterPresent far apart: the ECU falls back after S3 and the
    # next block is refused. Shows the keeper above is what saved the session.
    ecu = uds_ecu_config(tester_present_s=30.0)
    sim = uds_virtual_ecu(ecu, uds_sim(p2_ms=200, s3_s=0.4))
    pause = PauseOnce(at=30, seconds=scaled(1.2))

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS,
                          precondition=pause).run()

    assert not result.ok
    assert result.error.step == "transfer"
    assert sim.state.counters["s3_timeout"] >= 1


class PauseOnce:
    """A slow precondition check (e.g. waiting for a fresh vehicle-state sample)."""

    def __init__(self, at: int, seconds: float):
        self.at = at
        self.seconds = seconds
        self.calls = 0

    def __call__(self) -> str | None:
        self.calls += 1
        if self.calls == self.at:
            time.sleep(self.seconds)
        return None
