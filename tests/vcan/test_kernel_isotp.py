"""A UDS flash over the kernel's ISO-TP socket (module can-isotp) on vcan0: the agent's
``EcuConfig.kernel_isotp`` path against the virtual ECU (python can-isotp on a SocketCAN
bus) running as its own process."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import can

from agent.ota.settings import load_ecu
from agent.ota.uds import FlashSession, read_ecu_versions
from agent.ota.uds.image import build_image
from hil.benchconfig import ROOT
from tests.vcan.can_bench import SLOW, kernel_receivers

IDENTITY = {"F187": "EPS-4711-A", "F188": "SW-EPS-0100", "F189": "1.0.0",
            "F18C": "EPS0000001", "F190": "LSVAA4182E2000001", "F191": "HW-EPS-03",
            "F195": "SUP-1.0.0"}
NEW = {0xF188: "SW-EPS-0200", 0xF189: "2.0.0", 0xF195: "SUP-2.0.0"}
TXID, RXID = 0x7A2, 0x7AA


def ecu_file(tmp: Path) -> Path:
    """The virtual ECU's file; its [ecu] table is the agent's [[ecu]] entry. Timings are
    loose: both ends run in an emulated CPU."""
    identity = "\n".join(f'{k} = "{v}"' for k, v in IDENTITY.items())
    path = tmp / "eps.toml"
    path.write_text(f"""
[ecu]
name = "eps"
role = "steering"
bus = "chassis"
txid = 0x{TXID:X}
rxid = 0x{RXID:X}
kernel_isotp = true
kernel_interface = "vcan0"
security_secret = "{os.urandom(8).hex()}"
memory_address = 0x00080000
memory_size = 0x10000
exit_crc32 = true
can_restore = true
p2_s = 2.0
p2_star_s = 10.0
tester_present_s = 2.0
retries = 2

[ecu.budget]
versions_s = 60.0
session_s = 60.0
security_s = 60.0
fingerprint_s = 60.0
erase_s = 60.0
download_s = 60.0
transfer_block_s = 60.0
exit_s = 60.0
dependency_s = 60.0
reset_s = 60.0

[identity]
{identity}

[sim]
p2_ms = 2000
p2_star_ms = 10000
pending_interval_s = 0.5
erase_s = 0.2
dependency_s = 0.1
boot_s = 0.3
max_block_length = 0x402
""")
    return path


def start_ecu_sim(path: Path, name: str) -> subprocess.Popen[str]:
    """``icv-hil ecu-sim`` on vcan0 in its own process, once it says it listens."""
    sim = subprocess.Popen([sys.executable, "-m", "hil.cli", "ecu-sim", "--config",
                            str(path), "--interface", "socketcan", "--channel", "vcan0"],
                           cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert sim.stdout is not None
    ready = sim.stdout.readline()
    if not ready.startswith(f"ready {name}"):
        sim.kill()
        raise AssertionError(sim.communicate(timeout=SLOW)[1] or ready)
    return sim


def test_uds_flash_over_kernel_isotp(tmp_path: Path) -> None:
    path = ecu_file(tmp_path)
    ecu = load_ecu(path)
    assert ecu.kernel_isotp and ecu.kernel_interface == "vcan0"
    body = os.urandom(16 * 1024 - 64)
    image = tmp_path / "eps.bin"
    image.write_bytes(build_image(body, NEW, {0xF191: IDENTITY["F191"]}))
    sim = start_ecu_sim(path, "eps")
    try:
        seen_in_kernel: list[list[tuple[int, int, int, str]]] = []

        def progress(done: int, total: int) -> None:
            if not seen_in_kernel:
                seen_in_kernel.append(kernel_receivers("vcan0"))

        result = FlashSession(ecu, None, image, NEW, progress=progress,
                              tester_id="VCAN-BENCH").run()
        assert result.ok, result.error
        after = read_ecu_versions(ecu, None)
    finally:
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=SLOW)
    assert sim.returncode == 0, err

    assert result.bytes_sent == image.stat().st_size
    assert result.versions_before.values == {int(k, 16): v for k, v in IDENTITY.items()}
    for did, value in NEW.items():
        assert result.versions_after.get(did) == value
        assert after.get(did) == value
    assert after.get(0xF191) == IDENTITY["F191"]
    # The tester's ISO-TP ran in the kernel: an "isotp" receiver for the ECU's answers.
    assert any(can_id == RXID and ident == "isotp" for can_id, _, _, ident in seen_in_kernel[0]), \
        seen_in_kernel
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["ecu"] == "eps"
    assert {k: summary["versions"][f"{k:04X}"] for k in NEW} == NEW
    assert summary["counters"]["transfer_block"] == result.blocks
    assert summary["counters"]["reset"] >= 1


BCM_NEW = {0xF188: "SW-BCM-0500", 0xF189: "5.0.0", 0xF195: "SUP-BCM-5.0.0"}


def strict_ecu_file(tmp: Path) -> Path:
    """config/ecu/bcm.toml (strict bootloader, strict recipe) on the kernel's ISO-TP, with
    the loose timings of an emulated CPU."""
    text = (ROOT / "config" / "ecu" / "bcm.toml").read_text()
    text = text.replace('bus = "body"\n', 'bus = "body"\nkernel_isotp = true\n'
                                           'kernel_interface = "vcan0"\n')
    for key, value in (("p2_s", "2.0"), ("p2_star_s", "10.0"), ("p2_ms", "2000"),
                       ("s3_s", "30.0")):
        text, n = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert n == 1, key
    budget = text.index("[ecu.budget]")
    end = text.index("[[ecu.flash]]")
    budgets = "[ecu.budget]\n" + "".join(f"{k} = 60.0\n" for k in (
        "versions_s", "session_s", "security_s", "fingerprint_s", "erase_s", "download_s",
        "transfer_block_s", "exit_s", "dependency_s", "reset_s", "restore_s")) + "\n"
    text = text[:budget] + budgets + text[end:]
    path = tmp / "bcm.toml"
    path.write_text(text)
    return path


def test_strict_recipe_over_kernel_isotp_with_functional_requests(tmp_path: Path) -> None:
    """The strict recipe's functional 85/28/10/3E go out through a kernel ISO-TP socket in
    single-frame broadcast mode on 0x7DF; the strict bootloader (its own process) takes
    the whole sequence and runs the new image."""
    path = strict_ecu_file(tmp_path)
    ecu = load_ecu(path)
    assert ecu.kernel_isotp and ecu.tester_present_functional
    image = tmp_path / "bcm.bin"
    image.write_bytes(build_image(os.urandom(16 * 1024 - 64), BCM_NEW, {0xF191: "HW-BCM-02"}))
    sniffer = can.Bus(interface="socketcan", channel="vcan0")
    functional: list[bytes] = []
    notifier = can.Notifier(sniffer, [lambda m: functional.append(bytes(m.data))
                                      if m.arbitration_id == 0x7DF else None], timeout=0.1)
    sim = start_ecu_sim(path, "bcm")
    try:
        result = FlashSession(ecu, None, image, BCM_NEW, tester_id="VCAN01").run()
        assert result.ok, result.error
        assert result.after_errors == []
    finally:
        sim.send_signal(signal.SIGTERM)
        out, err = sim.communicate(timeout=SLOW)
        notifier.stop()
        sniffer.shutdown()
    assert sim.returncode == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert {k: summary["versions"][f"{k:04X}"] for k in BCM_NEW} == BCM_NEW
    assert summary["counters"].get("boot_into_bootloader") == 1
    # single frames on the functional id: 85 82, 28 83 01 before; 10 83, 28 80 01, 85 81,
    # 10 81 after (TesterPresent 3E 80 in between, as often as the session needed it)
    starts = [f[1:1 + (f[0] & 0x0F)].hex(" ").upper() for f in functional if f[0] >> 4 == 0]
    assert [s for s in starts if s != "3E 80"] == [
        "85 82", "28 83 01", "10 83", "28 80 01", "85 81", "10 81"], starts
