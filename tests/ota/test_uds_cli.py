"""``ecu-sim`` as its own process on udp_multicast, flashed from this process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import can

from agent.ota.settings import load_ecu
from agent.ota.uds import FlashSession, read_ecu_versions
from tests.helpers import ChildLines, scaled, scaled_ms
from tests.ota.conftest import UDS_NEW_VERSIONS

ROOT = Path(__file__).resolve().parents[2]

ECU_FILE = """
[ecu]
name = "eps"
role = "steering"
txid = 0x7A2
rxid = 0x7AA
security_secret = "{secret}"
memory_address = 0x80000
memory_size = 0x40000
exit_crc32 = true
can_restore = true
p2_s = {p2_s}

[identity]
F189 = "1.0.0"
F191 = "HW-EPS-03"

[sim]
p2_ms = {p2_ms}
"""


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hil.ecu_sim.cli", "ecu-sim", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=30)


def test_example_configs_are_valid():
    files = sorted(str(p) for p in (ROOT / "config" / "ecu").glob("*.toml"))
    assert files
    done = run_cli("--check", *[a for f in files for a in ("--config", f)])
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("ok ") == len(files)


def test_broken_config_names_file_and_key(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[ecu]\nname = "x"\ntxid = "0x7E0"\nrxid = 0x7E8\nmemory_size = 1024\n'
                   'colour = "red"\n[[fault]]\nkind = "meteor"\n')
    done = run_cli("--check", "--config", str(bad))
    assert done.returncode == 2
    assert f"{bad}: ecu.txid: expected an integer" in done.stderr
    assert f"{bad}: ecu.colour: unknown key" in done.stderr
    assert f"{bad}: fault[0].kind: unknown fault kind 'meteor'" in done.stderr


def test_flash_a_virtual_ecu_in_another_process(tmp_path, uds_image):
    # Linux hands multicast of every joined group to every socket on the port: a free port
    # keeps parallel runs apart.
    group = f"239.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    port = random.randint(20000, 60000)
    config = tmp_path / "eps.toml"
    config.write_text(ECU_FILE.format(secret=os.urandom(8).hex(), p2_s=scaled(0.3),
                                       p2_ms=scaled_ms(300)))
    errors = tmp_path / "ecu-sim.stderr"
    with open(errors, "w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hil.ecu_sim.cli", "ecu-sim", "--config", str(config),
             "--interface", "udp_multicast", "--channel", group, "--bus-option",
             f"port={port}"], cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
    lines = ChildLines(proc, "ecu-sim")
    try:
        ready = lines.wait_for(lambda line: line.startswith("ready"), 60, "its ready line")
        assert ready.startswith("ready eps role=steering txid=0x7A2"), errors.read_text()
        ecu = load_ecu(config)
        bus = can.Bus(interface="udp_multicast", channel=group, port=port)
        try:
            assert read_ecu_versions(ecu, bus).software_version == "1.0.0"
            result = FlashSession(ecu, bus, uds_image(64 * 1024), UDS_NEW_VERSIONS).run()
        finally:
            bus.shutdown()
        assert result.ok, result.error
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        finally:
            proc.kill()                  # no-op once it exited
            lines.close()
    assert proc.returncode == 0, errors.read_text()
    summary = json.loads([line for line in lines.lines if line.strip()][-1])
    assert summary["ecu"] == "eps"
    assert summary["versions"]["F189"] == "2.0.0"
    assert summary["counters"]["reset"] == 1
