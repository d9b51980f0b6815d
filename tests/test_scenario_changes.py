"""``icv-hil scenario`` does not change a scenario silently: a step after ``duration``, a
signal the config lacks or does not map, an enum value the mapping cannot express is an
error (``FILE: key.path: problem``, exit 2) or, with ``--lenient``, a warning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config as agent_config
from hil.trace.scenario import check_scenario, load_scenario

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"
MG = ROOT / "config" / "mg.toml"
SHIPPED = sorted((ROOT / "tests" / "scenarios").glob("*.toml")) + sorted(
    (ROOT / "hil" / "scenarios").glob("*.toml")) + [ROOT / "tests" / "vcan" / "data" /
                                                    "drive.toml"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def generate(sc: Path, config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    r = run("hil.cli", "scenario", str(sc), "-c", str(config), "-o", str(out), *extra)
    assert "Traceback" not in r.stderr, r.stderr
    return r


def write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "s.toml"
    path.write_text(body)
    return path


def refused_then_lenient(sc: Path, config: Path, tmp_path: Path, expected: list[str]) -> None:
    out = tmp_path / "x.log"
    r = generate(sc, config, out)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == expected
    assert not out.exists()
    r = generate(sc, config, out, "--lenient")
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[:-1] == [f"warning: {line}" for line in expected]
    assert out.stat().st_size > 0


def test_enum_value_the_mapping_cannot_express(tmp_path: Path) -> None:
    """MG's mapping has no NOA: the trace used to carry another function without a word."""
    sc = write(tmp_path, 'duration = 1.0\n[[step]]\nat = 0.0\nset = { '
                         '"Vehicle.ADAS.CDA.State" = "ACTIVE", '
                         '"Vehicle.ADAS.CDA.Function" = "NOA" }\n')
    refused_then_lenient(sc, MG, tmp_path, [
        f"{sc}: step[0].set.Vehicle.ADAS.CDA.Function: 'NOA' cannot be expressed on bus "
        "hscan2 (its mapping carries LCC, NONE, ACC); the trace would carry 'LCC'"])


def test_signals_the_config_lacks(tmp_path: Path) -> None:
    sc = write(tmp_path, 'duration = 1.0\n[[step]]\nat = 0.0\n'
                         'set = { "Vehicle.Speed" = 50.0, "Vehicle.Driver.IsEyesOnRoad" = true }\n'
                         '[[step]]\nat = 0.5\nmute = ["Vehicle.CurrentLocation.Latitude"]\n')
    lacks = "(../dbc/mg.map.toml: {}); the trace cannot carry it"
    refused_then_lenient(sc, MG, tmp_path, [
        f"{sc}: step[0].set.Vehicle.Driver.IsEyesOnRoad: bus hscan2 lacks it "
        + lacks.format("no driver-monitoring camera"),
        f"{sc}: step[1].mute[0]: bus hscan2 lacks it " + lacks.format("no GNSS on this bus")])


def test_a_signal_no_bus_maps(tmp_path: Path) -> None:
    mapping = tmp_path / "speed_only.map.toml"
    mapping.write_text('[[signal]]\nname = "Vehicle.Speed"\nmessage = "ESP_VehSpd"\n'
                       'signal = "ESP_VehSpd"\n')
    config = tmp_path / "speed_only.toml"
    config.write_text(BENCH.read_text()
                      .replace('"../dbc/icv_reference.dbc"',
                               json.dumps(str(ROOT / "dbc" / "icv_reference.dbc")))
                      .replace('"../dbc/icv_reference.map.toml"', json.dumps(str(mapping)))
                      .replace('"../.state/bench"', json.dumps(str(tmp_path / "state"))))
    assert agent_config.load(config).buses[0].canonical == {"Vehicle.Speed"}
    sc = write(tmp_path, 'duration = 1.0\n[[step]]\nat = 0.0\n'
                         'set = { "Vehicle.Speed" = 50.0, "Vehicle.Chassis.Brake.IsPressed" = '
                         'true }\nramp = { "Vehicle.Chassis.SteeringWheel.Angle" = [9.0, 1.0] }\n')
    refused_then_lenient(sc, config, tmp_path, [
        f"{sc}: step[0].set.Vehicle.Chassis.Brake.IsPressed: no bus of the config maps it; "
        "the trace cannot carry it",
        f"{sc}: step[0].ramp.Vehicle.Chassis.SteeringWheel.Angle: no bus of the config maps "
        "it; the trace cannot carry it"])


def test_steps_after_duration(tmp_path: Path) -> None:
    sc = write(tmp_path, 'duration = 2.0\n[[step]]\nat = 0.0\nset = { "Vehicle.Speed" = 5.0 }\n'
                         '[[step]]\nat = 2.0\nset = { "Vehicle.Speed" = 6.0 }\n'
                         '[[step]]\nat = 2.5\nset = { "Vehicle.Speed" = 7.0 }\n')
    refused_then_lenient(sc, BENCH, tmp_path, [
        f"{sc}: step[2].at: 2.5 is after duration = 2: the step would never happen"])


def test_value_beyond_the_dbc_range_is_lenient_too(tmp_path: Path) -> None:
    sc = write(tmp_path, 'duration = 1.0\n[[step]]\nat = 0.0\nset = { "Vehicle.Speed" = 400.0 }\n')
    refused_then_lenient(sc, BENCH, tmp_path, [
        f"{sc}: step[0].set.Vehicle.Speed: 400.0 is outside what ESP_VehSpd.ESP_VehSpd can "
        "carry (0 .. 350 km/h) on bus chassis"])
    r = run("agent.cli", "analyze", "--signals", "-c", str(BENCH), str(tmp_path / "x.log"))
    speeds = [json.loads(x)["value"] for x in r.stdout.splitlines()
              if '"Vehicle.Speed"' in x]
    assert speeds == [350.0], "lenient: the nearest value the signal carries"


def test_mg_acc_active_comes_from_the_radar_frame(tmp_path: Path) -> None:
    """State ACTIVE with Function ACC on MG: the TJA state that shows ACTIVE first would
    also show LCC, so the encoder takes the radar's ACC state for both (the shipped
    accident_mg_airbag_cda_off_40s scenario relied on 1 ms of ACC at the switch-off)."""
    sc = write(tmp_path, 'duration = 2.0\n[[step]]\nat = 0.0\nset = { '
                         '"Vehicle.ADAS.CDA.State" = "STANDBY", '
                         '"Vehicle.ADAS.CDA.Function" = "NONE" }\n[[step]]\nat = 1.0\nset = { '
                         '"Vehicle.ADAS.CDA.State" = "ACTIVE", '
                         '"Vehicle.ADAS.CDA.Function" = "ACC" }\n')
    out = tmp_path / "acc.log"
    r = generate(sc, MG, out)
    assert r.returncode == 0, r.stderr
    r = run("agent.cli", "analyze", "--signals", "-c", str(MG), str(out))
    changes = [(e["signal"].rsplit(".", 1)[1], e["value"]) for e in map(json.loads,
               r.stdout.splitlines()) if e["signal"] in ("Vehicle.ADAS.CDA.State",
                                                         "Vehicle.ADAS.CDA.Function")]
    assert changes == [("State", "STANDBY"), ("Function", "NONE"), ("State", "ACTIVE"),
                       ("Function", "ACC")], changes


@pytest.mark.parametrize("path", SHIPPED, ids=[f"{p.parent.name}/{p.stem}" for p in SHIPPED])
def test_shipped_scenarios_need_no_lenience(path: Path) -> None:
    sc = load_scenario(path)
    cfg = agent_config.load(ROOT / "config" / f"{sc.config}.toml")
    assert check_scenario(cfg, sc, path).lines() == []
