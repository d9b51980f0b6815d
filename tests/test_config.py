"""``icv-agent check-config``: every kind of config error names file, key path and problem."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DBC = ROOT / "dbc"

GOOD_MAPPING = """
[mapping]
description = "test mapping on the reference DBC"
[[signal]]
name = "Vehicle.Speed"
message = "{msg}"
signal = "{sig}"
"""


def reference_speed() -> tuple[str, str]:
    """The reference mapping's own choice of message/signal for Vehicle.Speed."""
    from agent.settings_loader import tomllib

    table = tomllib.loads((DBC / "icv_reference.map.toml").read_text())
    entry = next(e for e in table["signal"] if e["name"] == "Vehicle.Speed")
    return entry["message"], entry["signal"]


def write_config(tmp: Path, body: str, mapping: str | None = None) -> Path:
    msg, sig = reference_speed()
    (tmp / "map.toml").write_text(mapping if mapping is not None
                                  else GOOD_MAPPING.format(msg=msg, sig=sig))
    cfg = tmp / "agent.toml"
    cfg.write_text(body.replace("@DBC@", str(DBC / "icv_reference.dbc")))
    return cfg


BASE = """
[vehicle]
vin = "LSJWH4098PN000001"
[[bus]]
name = "chassis"
interface = "virtual"
channel = "c1"
dbc = ["@DBC@"]
mapping = "map.toml"
"""


def check(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(cfg)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def has_problem(stderr: str, file: Path, key: str, problem: str) -> bool:
    """One line ``FILE: key.path: ...problem...``."""
    prefix = f"{file}: {key}: "
    return any(line.startswith(prefix) and problem in line for line in stderr.splitlines())


def test_valid_config_exits_0_with_summary(tmp_path: Path) -> None:
    r = check(write_config(tmp_path, BASE))
    assert r.returncode == 0, r.stderr
    assert "OK" in r.stdout and "chassis" in r.stdout and "1 canonical signals" in r.stdout


@pytest.mark.parametrize("path", sorted((ROOT / "config").glob("*.toml")),
                         ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    r = check(path)
    assert r.returncode == 0, r.stderr + r.stdout


@pytest.mark.parametrize("body, key, problem", [
    (BASE + "colour = 'red'\n", "bus[0].colour", "unknown key"),
    (BASE.replace('[vehicle]', '[vehicle]\nmanufacturer = 12'), "vehicle.manufacturer",
     "expected a string"),
    (BASE.replace('channel = "c1"', 'channel = "c1"\nfd = "yes"'), "bus[0].fd",
     "expected true/false"),
    (BASE.replace('vin = "LSJWH4098PN000001"', ''), "vehicle.vin", "missing required key"),
    (BASE.replace("@DBC@", "/nonexistent/x.dbc"), "bus[0].dbc[0]", "DBC file not found"),
    (BASE + BASE.split("[vehicle]\nvin = \"LSJWH4098PN000001\"")[1], "bus[1].name",
     "duplicate bus name 'chassis'"),
    (BASE + "[limits]\nmonitoring_speed_kmh = 'fast'\n", "limits.monitoring_speed_kmh",
     "expected a number"),
    (BASE + "[vehicle2]\n", "vehicle2", "unknown key"),
    (BASE.replace('[vehicle]', '[vehicle]\ntimezone = "Mars/Olympus"'), "vehicle.timezone",
     "unknown time zone"),
    (BASE.replace('channel = "c1"', 'channel = "c1"\nreceive = "fast"'), "bus[0].receive",
     "'fast' is not one of bcm, raw"),
    (BASE.replace('channel = "c1"', 'channel = "c1"\nreceive = "bcm"'), "bus[0].receive",
     "needs interface = \"socketcan\""),
    (BASE.replace('channel = "c1"', 'channel = "c1"\nrcvbuf_bytes = -1'),
     "bus[0].rcvbuf_bytes", "must be 0 (kernel default) or more"),
    # declared on the fields (agent.settings_loader constraints)
    (BASE.replace('vin = "LSJWH4098PN000001"', 'vin = "lsjwh4098pn00000"'), "vehicle.vin",
     "'lsjwh4098pn00000' is not a VIN (17 characters, A-Z and 0-9)"),
    (BASE + "[limits]\ndelta_v_window_s = 0.0\n", "limits.delta_v_window_s", "must be > 0"),
    (BASE + "[limits]\naccident_after_s = -1.0\n", "limits.accident_after_s", "must be >= 0"),
    (BASE + "[uplink]\nprotocol = '4'\n", "uplink.protocol", "'4' is not one of 5, 3.1.1"),
    (BASE + "[uplink]\nport = 0\n", "uplink.port", "must be >= 1 and <= 65535"),
    (BASE + "[history]\nseconds = 0\n", "history.seconds", "must be > 0"),
    # [ota.extra] is part of the model: found by check-config, not when a campaign starts
    (BASE + "[ota.extra]\nconsent_timeout_s = 0\n", "ota.extra.consent_timeout_s",
     "must be > 0"),
    (BASE + "[ota.extra]\nnot_required = ['warp']\n", "ota.extra.not_required",
     "unknown condition(s) 'warp'"),
    (BASE + "[ota.extra.hmi]\nport = 70000\n", "ota.extra.hmi.port", "must be >= 0"),
    (BASE + "[ota.extra]\ncolour = 1\n", "ota.extra.colour", "unknown key"),
])
def test_config_errors(tmp_path: Path, body: str, key: str, problem: str) -> None:
    cfg = write_config(tmp_path, body)
    r = check(cfg)
    assert r.returncode == 2
    assert has_problem(r.stderr, cfg, key, problem), r.stderr


@pytest.mark.parametrize("mapping, key, problem", [
    ('[[signal]]\nname = "Vehicle.Speed"\nmessage = "NoSuchMessage"\nsignal = "x"\n',
     "signal[0].message", "no message 'NoSuchMessage' in the DBC"),
    ('[[signal]]\nname = "Vehicle.Speed"\nmessage = "{msg}"\nsignal = "NoSuchSignal"\n',
     "signal[0].signal", "has no signal 'NoSuchSignal'"),
    ('[[signal]]\nname = "Vehicle.Warp"\nmessage = "{msg}"\nsignal = "{sig}"\n',
     "signal[0].name", "'Vehicle.Warp' is not a canonical signal"),
    ('[[signal]]\nname = "Vehicle.Speed"\nmessage = "{msg}"\nsignal = "{sig}"\nfactor = "x"\n',
     "signal[0].factor", "expected a number"),
    ('[mapping.lacks]\n"Vehicle.Speed" = "x"\n'
     '[[signal]]\nname = "Vehicle.Speed"\nmessage = "{msg}"\nsignal = "{sig}"\n',
     "mapping.lacks.Vehicle.Speed", "listed as lacking but also mapped"),
    ('[[signal]]\nname = "Vehicle.ADAS.CDA.State"\nmessage = "{msg}"\nsignal = "{sig}"\n',
     "signal[0].values", "is an enum: a values table is needed"),
    ('[[signal]]\nname = "Vehicle.ADAS.CDA.State"\nmessage = "{msg}"\nsignal = "{sig}"\n'
     'values = { "1" = "WARP" }\n', "signal[0].values.1", "expected one of"),
    ('[[signal]]\nname = "Vehicle.ADAS.CDA.State"\nmessage = "{msg}"\nsignal = "{sig}"\n'
     'values = { "NoSuchLabel" = "OFF" }\n', "signal[0].values.NoSuchLabel",
     "not an integer and not a value"),
])
def test_mapping_errors(tmp_path: Path, mapping: str, key: str, problem: str) -> None:
    msg, sig = reference_speed()
    cfg = write_config(tmp_path, BASE, mapping.replace("{msg}", msg).replace("{sig}", sig))
    r = check(cfg)
    assert r.returncode == 2
    assert has_problem(r.stderr, tmp_path / "map.toml", key, problem), r.stderr


def test_every_problem_is_listed_at_once(tmp_path: Path) -> None:
    body = BASE.replace("@DBC@", "/nonexistent/x.dbc") + "colour = 1\n[limits]\nfoo = 1\n"
    r = check(write_config(tmp_path, body))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert any("bus[0].dbc[0]" in x for x in lines)
    assert any("bus[0].colour" in x for x in lines)
    assert any("limits.foo" in x for x in lines)


def test_broken_toml_is_a_clear_error(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[vehicle\nvin = ")
    r = check(cfg)
    assert r.returncode == 2
    assert f"{cfg}: not valid TOML" in r.stderr


def test_imperfect_real_dbcs_load_with_one_warning(tmp_path: Path) -> None:
    for name in ("gwm_haval_h6_phev_2024.dbc", "hongqi_hs5.dbc"):
        db = tmp_path / name
        db.write_bytes((DBC / name).read_bytes())
        # map one signal of the imperfect DBC so the whole load path runs
        import cantools

        lenient = cantools.database.load_file(str(db), strict=False)
        msg = next(m for m in lenient.messages if m.signals)
        sig = next(s for s in msg.signals if not s.choices)
        mapping = (f'[[signal]]\nname = "Vehicle.Chassis.SteeringWheel.Angle"\n'
                   f'message = "{msg.name}"\nsignal = "{sig.name}"\n')
        cfg = write_config(tmp_path, BASE.replace("@DBC@", str(db)), mapping)
        r = check(cfg)
        assert r.returncode == 0, r.stderr
        assert r.stdout.count("loaded leniently") == 1, r.stdout
        assert r.stderr.count("loaded leniently") == 1, r.stderr


def test_example_configs_exist() -> None:
    for name in ("bench.toml", "mg.toml", "tesla-model3.toml"):
        assert (ROOT / "config" / name).is_file(), name


def test_bad_vin_is_a_config_error(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, BASE.replace("LSJWH4098PN000001", "SHORT"))
    r = check(cfg)
    assert r.returncode == 2
    assert has_problem(r.stderr, cfg, "vehicle.vin", "is not a VIN"), r.stderr
