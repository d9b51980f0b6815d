"""Full flashes over real ISO-TP frames on a python-can virtual bus against a VirtualEcu."""

from __future__ import annotations

import os

from agent.ota.uds import FlashSession, ImageError
from agent.ota.uds.image import build_image
from tests.ota.conftest import UDS_IDENTITY, UDS_NEW_VERSIONS, uds_sim

STEPS = ["versions", "session", "security", "fingerprint", "erase", "request_download",
         "transfer", "transfer_exit", "dependency_check", "reset", "verify"]


def test_full_flash_reads_back_new_versions(uds_buses, uds_ecu_config, uds_virtual_ecu,
                                            uds_image):
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu)
    image = uds_image(192 * 1024)
    seen: list[tuple[int, int]] = []
    steps: list[str] = []

    result = FlashSession(ecu, uds_buses[0], image, UDS_NEW_VERSIONS,
                          progress=lambda done, total: seen.append((done, total)),
                          on_step=steps.append, tester_id="BENCH-01").run()

    assert result.ok, result.error
    assert result.error is None and not result.rolled_back
    assert result.versions_before.values == {int(k, 16): v for k, v in UDS_IDENTITY.items()}
    for did, value in UDS_NEW_VERSIONS.items():
        assert result.versions_after.get(did) == value
    assert result.versions_after.get(0xF191) == UDS_IDENTITY["F191"]   # board data kept
    # The ECU really holds the image in the bank it now runs, and knows who programmed it.
    active = sim.state.banks[sim.state.active]
    assert bytes(active.data[:image.stat().st_size]) == image.read_bytes()
    assert sim.state.board[0xF198] == b"BENCH-01"
    assert sim.state.mode == "application"
    assert steps == STEPS
    assert set(STEPS) <= set(result.timings)
    assert seen[0] == (0, image.stat().st_size) and seen[-1][0] == image.stat().st_size
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert result.bytes_sent == image.stat().st_size
    assert result.as_dict()["versions_after"]["F189"] == "2.0.0"


def test_block_sequence_counter_wraps(uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config()
    # 256-byte blocks: a 128 KiB image takes 512 blocks: 1..0xFF, 0x00..0xFF, 0x00.
    sim = uds_virtual_ecu(ecu, uds_sim(p2_ms=200, max_block_length=0x102))
    image = uds_image(128 * 1024)

    result = FlashSession(ecu, uds_buses[0], image, UDS_NEW_VERSIONS).run()

    assert result.ok, result.error
    assert result.blocks == 512
    assert sim.state.counters["counter_wrap"] == 2
    assert sim.state.counters["transfer_block"] == 512
    active = sim.state.banks[sim.state.active]
    assert bytes(active.data[:128 * 1024]) == image.read_bytes()


def test_tester_block_cap_is_respected(uds_buses, uds_ecu_config, uds_virtual_ecu,
                                       uds_image):
    ecu = uds_ecu_config(max_block_length=0x82)          # ECU offers 0x402, we take 0x82
    uds_virtual_ecu(ecu)
    image = uds_image(64 * 1024)

    result = FlashSession(ecu, uds_buses[0], image, UDS_NEW_VERSIONS).run()

    assert result.ok, result.error
    assert result.blocks == -(-64 * 1024 // 0x80)


def test_single_bank_ecu_flashes_too(uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config(can_restore=False)
    sim = uds_virtual_ecu(ecu)

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert result.ok, result.error
    assert len(sim.state.banks) == 1
    assert sim.versions()[0xF189] == "2.0.0"


def test_can_fd_64_byte_frames(uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config(can_fd=True, bitrate_switch=True, tx_data_length=64)
    uds_virtual_ecu(ecu)

    result = FlashSession(ecu, uds_buses[0], uds_image(96 * 1024), UDS_NEW_VERSIONS).run()

    assert result.ok, result.error


def test_aes128_cmac_security_access(uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config(key_algorithm="aes128-cmac")
    uds_virtual_ecu(ecu)

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert result.ok, result.error


def test_image_larger_than_ecu_memory_is_refused_before_talking(
        uds_buses, uds_ecu_config, uds_virtual_ecu, tmp_path):
    ecu = uds_ecu_config(memory_size=32 * 1024)
    sim = uds_virtual_ecu(ecu)
    image = tmp_path / "big.bin"
    image.write_bytes(build_image(os.urandom(40 * 1024), UDS_NEW_VERSIONS))

    result = FlashSession(ecu, uds_buses[0], image, UDS_NEW_VERSIONS).run()

    assert not result.ok
    assert isinstance(result.error, ImageError)
    assert sim.state.session == 0x01 and "erase" not in sim.state.counters


def test_missing_image_file_is_a_typed_error(uds_buses, uds_ecu_config, tmp_path):
    result = FlashSession(uds_ecu_config(), uds_buses[0], tmp_path / "nope.bin",
                          UDS_NEW_VERSIONS).run()
    assert isinstance(result.error, ImageError)
    assert "nope.bin" in str(result.error)
