"""The ECU's programming sequence as config: checked at load, run as written, plug-in keys."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.ota.recipe import default_flash, fingerprint_bytes
from agent.ota.settings import EcuConfig, check_ecu
from agent.ota.uds import FlashSession
from agent.settings_loader import Problems, build
from tests.ota.conftest import UDS_NEW_VERSIONS
from tests.ota.test_uds_config import GOOD

ROOT = Path(__file__).resolve().parents[2]


def problems_of(table: dict) -> list[str]:
    problems = Problems()
    ecu = build(EcuConfig, table, "agent.toml", problems, "ecu[0]")
    check_ecu(ecu, "agent.toml", problems, "ecu[0]")
    return problems.lines()


STRICT = [
    {"do": "session", "session": 0x03},
    {"do": "routine", "name": "preconditions", "routine": 0x0203},
    {"do": "dtc_setting", "setting": "off", "functional": True},
    {"do": "communication_control", "control": 0x03, "functional": True},
    {"do": "session", "session": 0x02},
    {"do": "security", "level": 0x11},
    {"do": "fingerprint", "did": 0xF15A, "layout": ["date:bcd3", "tester:6"]},
    {"do": "erase", "routine": 0xFF00, "record": "memory"},
    {"do": "download"},
    {"do": "check_memory", "routine": 0x0202, "record": "crc32"},
    {"do": "dependency_check", "routine": 0xFF01},
    {"do": "reset", "reset": 0x01},
    {"do": "verify"},
]
AFTER = [
    {"do": "session", "session": 0x03, "functional": True},
    {"do": "communication_control", "control": 0x00, "functional": True},
    {"do": "dtc_setting", "setting": "on", "functional": True},
    {"do": "session", "session": 0x01, "functional": True},
]


def test_a_strict_recipe_loads_without_problems():
    assert problems_of(dict(GOOD, flash=STRICT, after=AFTER)) == []


def test_the_default_recipe_is_the_bench_sequence():
    assert [s.do for s in default_flash()] == [
        "session", "security", "fingerprint", "fingerprint", "erase", "download",
        "dependency_check", "reset", "verify"]
    assert problems_of(GOOD) == []


def _with(index: int, **change: object) -> list[dict]:
    steps = [dict(s) for s in STRICT]
    steps[index].update(change)
    return steps


@pytest.mark.parametrize("flash, expected", [
    (_with(0, do="sleep"), "ecu[0].flash[0].do: unknown step 'sleep'"),
    (_with(0, session=0), "ecu[0].flash[0].session: required: 0x01..0x7F"),
    (_with(1, routine=0x10000), "ecu[0].flash[1].routine: required: a 16-bit routine"),
    (_with(2, setting="maybe"), "ecu[0].flash[2].setting: required: 'on' or 'off'"),
    (_with(3, control=-1), "ecu[0].flash[3].control: required: controlType"),
    (_with(5, level=0x12), "ecu[0].flash[5].level: must be an odd seed level"),
    (_with(5, algorithm="rot13"), "ecu[0].flash[5].algorithm: unknown algorithm 'rot13'"),
    (_with(6, layout=["date:iso"]), "ecu[0].flash[6].layout[0]: date needs :bcd4"),
    (_with(6, layout=[]), "ecu[0].flash[6].layout: required"),
    (_with(7, record="sha256"), "ecu[0].flash[7].record: unknown record 'sha256'"),
    (_with(7, functional=True), "ecu[0].flash[7].functional: only session, "),
    (_with(9, ok_status=[256]), "ecu[0].flash[9].ok_status[0]: must be 0x00..0xFF"),
    (STRICT[:8] + STRICT[9:], "ecu[0].flash: needs exactly one 'download' step"),
    (STRICT[:-1], "ecu[0].flash: must end with the one 'verify' step"),
    (STRICT[:8] + [STRICT[11], STRICT[8]] + STRICT[12:], "'reset' must come after"),
    (STRICT[:7] + [STRICT[8], STRICT[7]] + STRICT[9:], "'erase' must come before"),
    ([], "ecu[0].flash: must not be empty"),
])
def test_a_wrong_recipe_names_the_step_and_the_problem(flash, expected):
    lines = problems_of(dict(GOOD, flash=flash))
    assert any(expected in line for line in lines), lines


def test_after_steps_are_limited_to_what_switches_the_bus_back_on():
    lines = problems_of(dict(GOOD, after=[{"do": "erase", "routine": 0xFF00}]))
    assert any("ecu[0].after[0].do: 'erase' cannot run after the flash" in line
               for line in lines), lines


def test_fingerprint_layouts_give_the_bytes_the_ecu_expects():
    day = dt.date(2026, 12, 2)
    assert fingerprint_bytes(["date:bcd3", "tester:6"], "ICV-AGENT", day) == \
        bytes.fromhex("261202") + b"ICV-AG"
    assert fingerprint_bytes(["tester:12"], "ICV", day) == b"ICV" + b" " * 9
    assert fingerprint_bytes(["date:bcd4", "hex:00FF", "ascii:W1"], "X", day) == \
        bytes.fromhex("2026120200FF") + b"W1"


def test_a_custom_recipe_is_what_goes_on_the_bus(uds_buses, uds_ecu_config, uds_virtual_ecu,
                                                 uds_image):
    """A recipe with another fingerprint and a physical TesterPresent runs in its order:
    the ECU sees exactly the writes the recipe names."""
    ecu = uds_ecu_config()
    ecu_steps = build(EcuConfig, dict(GOOD, flash=[
        {"do": "session", "session": 0x02},
        {"do": "tester_present"},
        {"do": "security"},
        {"do": "fingerprint", "did": 0xF198, "layout": ["tester:10"]},
        {"do": "erase", "routine": 0xFF00, "record": "memory"},
        {"do": "download"},
        {"do": "dependency_check", "routine": 0xFF01},
        {"do": "reset"},
        {"do": "verify", "name": "read_back"},
    ]), "t", Problems())
    ecu.flash = ecu_steps.flash
    sim = uds_virtual_ecu(ecu)
    steps: list[str] = []
    result = FlashSession(ecu, uds_buses[0], uds_image(4096), UDS_NEW_VERSIONS,
                          on_step=steps.append, tester_id="BENCH").run()
    assert result.ok, result.error
    assert steps == ["versions", "session", "tester_present", "security", "fingerprint",
                     "erase", "request_download", "transfer", "transfer_exit",
                     "dependency_check", "reset", "read_back"]
    assert sim.state.board[0xF198] == b"BENCH     "        # padded to the layout's 10
    assert 0xF199 not in sim.state.board                  # no date write in this recipe


PLUGIN = '''
def compute(level, seed, secret):
    """A made-up OEM algorithm: seed reversed, XOR the secret, plus the level."""
    return bytes(((b ^ secret[i % len(secret)]) + level) & 0xFF
                 for i, b in enumerate(reversed(seed)))
'''


def test_a_seed_key_algorithm_plugs_in_as_an_installed_entry_point(tmp_path):
    """An OEM algorithm installed as a package (dist-info with an entry point in the group
    icv_agent.seed_key) is known to the config check and computes keys, with no change to
    the agent; one that cannot be imported is a clear config problem."""
    (tmp_path / "oem_keys.py").write_text(PLUGIN)
    info = tmp_path / "oem_keys-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: oem-keys\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[icv_agent.seed_key]\noem-x = oem_keys:compute\nbroken = oem_missing:compute\n")
    (info / "RECORD").write_text("")
    script = textwrap.dedent('''
        from agent.settings_loader import Problems, build
        from agent.ota.settings import EcuConfig, check_ecu
        from agent.ota.uds.security import compute_key, UnknownKeyAlgorithm
        for name in ("oem-x", "nope"):
            p = Problems()
            e = build(EcuConfig, {"name": "x", "txid": 1, "rxid": 2, "memory_size": 1,
                                  "key_algorithm": name, "security_secret": "0102"},
                      "f", p)
            check_ecu(e, "f", p)
            print(name, "ok" if not p else p.lines()[0])
        print(compute_key("oem-x", 0x11, bytes([1, 2, 3]), bytes([0x01, 0x02])).hex())
        try:
            compute_key("broken", 1, b"1", b"1")
        except UnknownKeyAlgorithm as exc:
            print("broken:", exc)
    ''')
    env = {"PYTHONPATH": f"{tmp_path}:{ROOT}", "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "oem-x ok"
    assert lines[1].startswith("nope f: key_algorithm: unknown algorithm 'nope', known: ")
    assert "oem-x" in lines[1] and "aes128-cmac" in lines[1]
    # reversed seed 03 02 01, XOR 01 02 01 -> 02 00 00, + 0x11
    assert lines[2] == "131111"
    assert lines[3].startswith("broken: \"key algorithm 'broken' (oem_missing:compute) "
                               "cannot be loaded: ModuleNotFoundError")
