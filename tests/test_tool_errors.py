"""Everyday mistakes with the tools give one line naming the file and the problem, exit 2,
never a traceback: a binary file as config or scenario, ``icv-hil replay`` on a file that
is no trace, ``icv-hil scenario -o x.xyz``, a scenario value the DBC cannot carry."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent import config as agent_config
from hil.trace.encode import TraceEncoder

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"
DRIVE = ROOT / "hil" / "scenarios" / "drive.toml"
BINARY = bytes(range(256)) * 8          # not UTF-8 from byte 0x80 on


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def one_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def scenario(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(body)
    return path


# -- config and scenario files ----------------------------------------------------------------

@pytest.mark.parametrize("content", [BINARY, b"a = " + b"[" * 5000 + b"]" * 5000],
                         ids=["binary", "nested"])
def test_a_file_that_is_no_toml_as_config(tmp_path: Path, content: bytes) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_bytes(content)
    line = one_line(run("agent.cli", "check-config", str(cfg)))
    assert line.startswith(f"{cfg}: not ")
    line = one_line(run("agent.cli", "analyze", "-c", str(cfg), str(tmp_path / "x.log")))
    assert line.startswith(f"{cfg}: not ")
    line = one_line(run("hil.cli", "scenario", str(DRIVE), "-c", str(cfg), "-o",
                        str(tmp_path / "x.log")))
    assert line.startswith(f"{cfg}: not ")


def test_a_binary_file_as_scenario(tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    sc.write_bytes(BINARY)
    line = one_line(run("hil.cli", "scenario", str(sc), "-c", str(BENCH), "-o",
                        str(tmp_path / "x.log")))
    assert line == f"{sc}: not a TOML file: byte 0x80 at offset 128 is not UTF-8 text " \
                   "(a binary file?)"


def test_a_directory_as_config(tmp_path: Path) -> None:
    line = one_line(run("agent.cli", "check-config", str(tmp_path)))
    assert line == f"{tmp_path}: cannot read: Is a directory"


# -- icv-hil replay ---------------------------------------------------------------------------

def replay(trace: Path) -> subprocess.CompletedProcess:
    return run("hil.cli", "replay", str(trace), "-i", "virtual", "-C", "errors-test", "-q")


def test_replay_of_a_garbage_log(tmp_path: Path) -> None:
    trace = tmp_path / "junk.log"
    trace.write_bytes(BINARY)
    line = one_line(replay(trace))
    assert line.startswith(f"error: {trace}: no CAN frames to replay (")
    assert "unreadable line" in line


@pytest.mark.parametrize("content", [b"junk", b"not a BLF file at all\n" * 20],
                         ids=["short", "long"])
def test_replay_of_a_garbage_blf(tmp_path: Path, content: bytes) -> None:
    trace = tmp_path / "junk.blf"
    trace.write_bytes(content)
    line = one_line(replay(trace))
    assert line.startswith(f"error: {trace}: cannot open trace (not a BLF file")


def test_replay_of_an_empty_log(tmp_path: Path) -> None:
    trace = tmp_path / "empty.log"
    trace.write_bytes(b"")
    assert one_line(replay(trace)) == f"error: {trace}: no CAN frames to replay"


def test_replay_of_a_missing_file(tmp_path: Path) -> None:
    trace = tmp_path / "missing.log"
    assert one_line(replay(trace)) == f"error: {trace}: trace file not found"


# -- icv-hil scenario -------------------------------------------------------------------------

def test_scenario_output_format_unknown(tmp_path: Path) -> None:
    out = tmp_path / "x.xyz"
    line = one_line(run("hil.cli", "scenario", str(DRIVE), "-c", str(BENCH), "-o", str(out)))
    assert line.startswith(f"error: {out}: cannot write a trace in this format")
    assert not out.exists()


def test_scenario_output_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    out = blocker / "x.log"               # a directory that is a file
    line = one_line(run("hil.cli", "scenario", str(DRIVE), "-c", str(BENCH), "-o", str(out)))
    assert line.startswith(f"error: {out}: cannot write: ")


def test_scenario_value_outside_the_dbc_range(tmp_path: Path) -> None:
    sc = scenario(tmp_path, 'duration = 1.0\n[[step]]\nat = 0.0\n'
                            'set = { "Vehicle.Speed" = 1e6 }\n'
                            '[[step]]\nat = 0.5\n'
                            'ramp = { "Vehicle.Chassis.SteeringWheel.Angle" = [-5000.0, 0.2] }\n')
    out = tmp_path / "x.log"
    r = run("hil.cli", "scenario", str(sc), "-c", str(BENCH), "-o", str(out))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[0] == (f"{sc}: step[0].set.Vehicle.Speed: 1000000.0 is outside what "
                        "ESP_VehSpd.ESP_VehSpd can carry (0 .. 350 km/h) on bus chassis")
    assert lines[1].startswith(f"{sc}: step[1].ramp.Vehicle.Chassis.SteeringWheel.Angle: "
                               "-5000.0 is outside what ")
    assert len(lines) == 2
    assert not out.exists()


def test_scenario_numbers_that_are_not_finite(tmp_path: Path) -> None:
    sc = scenario(tmp_path, 'duration = inf\n[[step]]\nat = 0.0\n'
                            'set = { "Vehicle.Speed" = nan }\n')
    r = run("hil.cli", "scenario", str(sc), "-c", str(BENCH), "-o", str(tmp_path / "x.log"))
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines() == [
        f"{sc}: duration: expected a finite number of seconds > 0, got inf",
        f"{sc}: step[0].set.Vehicle.Speed: not a finite number: nan"]


def test_scenario_start_outside_plausible_times(tmp_path: Path) -> None:
    sc = scenario(tmp_path, 'duration = 1.0\nstart = "1900-01-01T00:00:00Z"\n')
    line = one_line(run("hil.cli", "scenario", str(sc), "-c", str(BENCH), "-o",
                        str(tmp_path / "x.log")))
    assert line == f"{sc}: start: '1900-01-01T00:00:00Z' is outside 1970..2200"


def test_encoder_never_overflows_a_signal_without_range() -> None:
    """A DBC signal without [min|max] (cantools: None) used to reach cantools' encode with
    a raw value beyond its bits: OverflowError. The encoder keeps to what the bits hold."""
    cfg = agent_config.load(BENCH)
    setup = cfg.buses[0]
    for plan in setup.plans.values():
        for sig in plan.message.signals:
            if sig.name == "ESP_VehSpd":
                sig.minimum = sig.maximum = None
    enc = TraceEncoder(setup)
    frames = enc.frames({"Vehicle.Speed": 1e6}, enc.messages)
    (data,) = [d for fid, d, _, _ in frames if fid == 0x125]
    assert int.from_bytes(data[:2], "little") == 0xFFFF      # the largest it can carry
    assert enc.range_problem("Vehicle.Speed", 1e6) == (
        "1000000.0 is outside what ESP_VehSpd.ESP_VehSpd can carry (0 .. 655.35 km/h)")
    assert enc.range_problem("Vehicle.Speed", 100.0) is None
