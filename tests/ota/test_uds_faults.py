"""Injected ECU faults and what a user of FlashSession sees for each of them."""

from __future__ import annotations

from agent.ota.uds import (
    DependencyCheckFailed,
    FlashError,
    FlashSession,
    NegativeResponse,
    StepTimeout,
    VersionMismatch,
)
from hil.ecu_sim import Fault
from tests.helpers import scaled
from tests.ota.conftest import UDS_IDENTITY, UDS_NEW_VERSIONS, budgets, uds_sim

OLD = {int(k, 16): v for k, v in UDS_IDENTITY.items()}


def assert_rolled_back(result, sim) -> None:
    assert not result.ok
    assert result.rolled_back, result.restore_error
    assert result.versions_after.values == OLD
    assert sim.versions()[0xF189] == "1.0.0"
    assert sim.state.mode == "application"


def test_nrc78_storm_longer_than_5s_inside_the_erase_budget_succeeds(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    storm = Fault(kind="pending", step="erase", count=22, interval_s=scaled(0.25))
    # The storm outlasts udsoncan's default 5 s overall request_timeout.
    assert storm.count * storm.interval_s > 5.0
    ecu = uds_ecu_config(budget=budgets(erase_s=12))
    sim = uds_virtual_ecu(ecu, fault=[storm])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert result.ok, result.error
    assert storm.fired == 1
    assert "erase" not in result.retries          # one request, kept alive by 0x78
    assert sim.versions()[0xF189] == "2.0.0"


def test_nrc78_storm_beyond_the_erase_budget_times_out_and_rolls_back(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    storm = Fault(kind="pending", step="erase", count=15, interval_s=scaled(0.1))
    ecu = uds_ecu_config(budget=budgets(erase_s=0.6))
    sim = uds_virtual_ecu(ecu, fault=[storm])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, StepTimeout)
    assert result.error.step == "erase" and result.error.budget_s == scaled(0.6)
    assert_rolled_back(result, sim)


def test_slow_answer_beyond_the_budget_is_a_step_timeout(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    # The ECU grants P2 = 3 s, so only the 0.5 s step budget can end the wait.
    slow = Fault(kind="slow", step="erase", delay_s=scaled(1.5))
    ecu = uds_ecu_config(budget=budgets(erase_s=0.5))
    sim = uds_virtual_ecu(ecu, uds_sim(p2_ms=3000, p2_star_ms=5000), fault=[slow])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, StepTimeout)
    assert result.error.step == "erase"
    assert_rolled_back(result, sim)


def test_one_slow_transfer_block_is_retried_and_the_flash_succeeds(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    # P2 = 200 ms; block 11 is answered after 700 ms, so the first attempt surely times
    # out and is repeated with counter 11. The ECU answers nothing while it is slow, so
    # the late answer must land in a retry's P2 window: 6 retries wait >= 1.4 s in all,
    # with room on both sides for a loaded machine (with 2 retries, 3 x 200 ms against
    # a 600 ms delay, it depended on a few milliseconds of ISO-TP send time).
    slow = Fault(kind="slow", step="transfer", after=10, delay_s=scaled(0.7))
    ecu = uds_ecu_config(retries=6, budget=budgets(transfer_block_s=5))
    sim = uds_virtual_ecu(ecu, fault=[slow])
    image = uds_image(64 * 1024)

    result = FlashSession(ecu, uds_buses[0], image, UDS_NEW_VERSIONS).run()

    assert result.ok, result.error
    assert result.retries["transfer"] >= 1
    assert sim.state.counters["repeated_block"] >= 1      # acknowledged, not written twice
    active = sim.state.banks[sim.state.active]
    assert bytes(active.data[:64 * 1024]) == image.read_bytes()


def test_nrc_at_request_download_is_a_typed_negative_response(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    refuse = Fault(kind="nrc", step="request_download", nrc=0x70)
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu, fault=[refuse])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, NegativeResponse)
    assert result.error.step == "request_download"
    assert result.error.nrc == 0x70
    assert "request_download" not in result.retries       # 0x70 is not worth repeating
    assert result.as_dict()["error"]["nrc"] == 0x70
    assert_rolled_back(result, sim)


def test_busy_repeat_request_is_retried(uds_buses, uds_ecu_config, uds_virtual_ecu,
                                        uds_image):
    busy = Fault(kind="nrc", step="request_download", nrc=0x21)
    ecu = uds_ecu_config()
    uds_virtual_ecu(ecu, fault=[busy])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert result.ok, result.error
    assert result.retries["request_download"] == 1


def test_ecu_reset_during_transfer_fails_and_rolls_back(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    drop = Fault(kind="drop_out", step="transfer", after=30, offline_s=scaled(0.3))
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu, fault=[drop])

    result = FlashSession(ecu, uds_buses[0], uds_image(128 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, FlashError)
    assert result.error.step == "transfer"
    assert result.blocks == 30
    assert sim.state.counters["drop_out"] == 1
    assert_rolled_back(result, sim)


def test_ecu_reset_during_transfer_without_second_bank_leaves_it_in_bootloader(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    drop = Fault(kind="drop_out", step="transfer", after=30, offline_s=scaled(0.3))
    ecu = uds_ecu_config(can_restore=False)
    sim = uds_virtual_ecu(ecu, fault=[drop])

    result = FlashSession(ecu, uds_buses[0], uds_image(128 * 1024), UDS_NEW_VERSIONS).run()

    assert result.error is not None and result.error.step == "transfer"
    assert not result.rolled_back
    assert "restore" not in sim.state.counters            # nothing to restore to
    assert sim.state.mode == "bootloader"                 # the application was erased


def test_dependency_check_failure_rolls_back(uds_buses, uds_ecu_config, uds_virtual_ecu,
                                             uds_image):
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu, fault=[Fault(kind="dependency_fail")])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, DependencyCheckFailed)
    assert result.error.status == b"\x01"
    assert_rolled_back(result, sim)


def test_image_for_other_hardware_fails_the_dependency_check(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu)
    image = uds_image(64 * 1024, requires={0xF191: "HW-EPS-99"})

    result = FlashSession(ecu, uds_buses[0], image, UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, DependencyCheckFailed)
    assert_rolled_back(result, sim)


def test_wrong_version_after_reset_is_a_version_mismatch_and_rolls_back(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    wrong = Fault(kind="wrong_version", values={"F189": "1.9.9"})
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu, fault=[wrong])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, VersionMismatch)
    assert result.error.expected[0xF189] == "2.0.0"
    assert result.error.got[0xF189] == "1.9.9"
    assert sim.state.counters["restore"] == 1
    assert_rolled_back(result, sim)


def test_wrong_version_without_second_bank_is_reported_not_hidden(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    wrong = Fault(kind="wrong_version", values={"F189": "1.9.9"})
    ecu = uds_ecu_config(can_restore=False)
    sim = uds_virtual_ecu(ecu, fault=[wrong])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, VersionMismatch)
    assert not result.rolled_back
    assert sim.versions()[0xF189] == "1.9.9"


def test_wrong_security_secret_is_invalid_key(uds_buses, uds_ecu_config, uds_virtual_ecu,
                                              uds_image):
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu)
    tester = uds_ecu_config(security_secret="00" * 16)

    result = FlashSession(tester, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, NegativeResponse)
    assert result.error.step == "security" and result.error.nrc == 0x35
    assert not result.touched and not result.rolled_back
    assert "erase" not in sim.state.counters
    assert sim.state.session == 0x01                      # sent back to the default session
