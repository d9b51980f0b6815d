"""``check-config`` proves a mapping can decode before a vehicle drives: every mapped
message is test-decoded; only the mapped signals are decoded (an imperfect real DBC's
overlapping unmapped signals cannot break them); canonical signals neither mapped nor
listed as lacking are named; ``icv-agent mapping skeleton`` starts a mapping."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import can

from agent import config as agent_config
from agent.ingest.decoder import FrameDecoder
from agent.signals import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
GWM = ROOT / "dbc" / "gwm_haval_h6_phev_2024.dbc"


def config(tmp: Path, mapping: str, dbc: Path = GWM) -> Path:
    (tmp / "map.toml").write_text(mapping)
    cfg = tmp / "agent.toml"
    cfg.write_text(f'[vehicle]\nvin = "LSJWH4098PN000001"\n[[bus]]\nname = "pt"\n'
                   f'interface = "virtual"\nchannel = "c1"\nfd = true\ndbc = ["{dbc}"]\n'
                   f'mapping = "map.toml"\n')
    return cfg


def check(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(cfg)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


BRAKE = '''
[[signal]]
name = "Vehicle.Chassis.Brake.IsPressed"
message = "BRAKE"
signal = "BRAKE_SIGNAL1"
'''


def test_mapped_signals_of_a_message_with_overlapping_others_decode(tmp_path: Path) -> None:
    """GWM's BRAKE (64 bytes) has overlapping signals: decoding the whole message fails
    for every payload, so the brake never arrived; its mapped signal alone decodes."""
    cfg = config(tmp_path, BRAKE)
    r = check(cfg)
    assert r.returncode == 0, r.stderr
    setup = agent_config.load(cfg).buses[0]
    decoder = FrameDecoder(setup)
    data = bytearray(64)
    data[19] = 0x01                                  # BRAKE_SIGNAL1: start bit 152
    updates = decoder.decode(can.Message(arbitration_id=0x137, is_extended_id=False,
                                         is_fd=True, data=bytes(data)), 1.0)
    assert updates and [(b.canonical, v) for b, v in updates] == \
        [("Vehicle.Chassis.Brake.IsPressed", True)]
    assert decoder.counters.undecodable == 0


def test_a_mapping_that_cannot_decode_is_a_config_error(tmp_path: Path) -> None:
    overlapping = BRAKE + '''
[[signal]]
name = "Vehicle.Chassis.Accelerator.PedalPosition"
message = "BRAKE"
signal = "BRAKE_PRESSURE"
[[signal]]
name = "Vehicle.Chassis.SteeringWheel.Angle"
message = "BRAKE"
signal = "REQ_REVIEW_BRAKE_PRESSURE"
'''
    r = check(config(tmp_path, overlapping))
    assert r.returncode == 2
    assert "signal[0].message: message BRAKE (0x137) cannot be decoded" in r.stderr, r.stderr


def test_canonical_signals_neither_mapped_nor_lacking_are_named(tmp_path: Path) -> None:
    r = check(config(tmp_path, BRAKE))
    assert r.returncode == 0
    assert f"{len(CATALOGUE) - 1} canonical signal(s) neither mapped nor listed" in r.stdout
    assert "Vehicle.Speed" in r.stdout


def test_mapping_skeleton_lists_every_canonical_signal_and_checks(tmp_path: Path) -> None:
    out = tmp_path / "gwm.map.toml"
    r = subprocess.run([sys.executable, "-m", "agent.cli", "mapping", "skeleton", "--dbc",
                        str(GWM), "-o", str(out)], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    for name in CATALOGUE:
        assert f'"{name}"' in text, name
    assert "BRAKE_SIGNAL1" in text                   # the DBC's signals, as a reference
    cfg = config(tmp_path, text)
    (tmp_path / "map.toml").write_text(text)
    r = check(cfg)
    assert r.returncode == 0, r.stderr                # a valid start: all listed as lacking
    assert "neither mapped nor listed" not in r.stdout
