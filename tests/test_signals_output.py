"""``icv-agent analyze --signals`` writes what the DBC carries, not float noise
(``2.8000000000000003`` for a 0.01 km/h speed), and ``--table`` is one aligned line per
change, as a person reads a drive."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.analyze import decimals, signal_decimals

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=180)


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    trace = tmp_path_factory.mktemp("drive") / "drive.log"
    r = run("hil.cli", "scenario", str(ROOT / "hil" / "scenarios" / "drive.toml"),
            "--config", str(BENCH), "-o", str(trace))
    assert r.returncode == 0, r.stderr
    return trace


def test_decimals_of_a_step() -> None:
    assert [decimals(s) for s in (1.0, 0.1, 0.01, 0.0225, 0.036, 0.5, 1 / 3)] == \
        [0, 1, 2, 4, 3, 1, 6]


def test_numbers_are_rounded_to_the_signal_resolution(drive: Path) -> None:
    places = signal_decimals(agent_config.load(BENCH))
    assert places["Vehicle.Speed"] == 2            # reference DBC: 0.01 km/h per bit
    r = run("agent.cli", "analyze", "--signals", "--config", str(BENCH), str(drive))
    assert r.returncode == 0, r.stderr
    changes = [json.loads(line) for line in r.stdout.splitlines()]
    floats = [c for c in changes if isinstance(c["value"], float)]
    assert len(floats) > 100
    for c in floats:
        text = json.dumps(c["value"])
        shown = len(text.split(".")[1]) if "." in text and "e" not in text else 0
        assert shown <= places[c["signal"]], c
    speeds = [c["value"] for c in changes if c["signal"] == "Vehicle.Speed"]
    assert 2.8 in speeds and 40.0 in speeds        # 2.8000000000000003 before


def test_table_is_one_aligned_line_per_change(drive: Path) -> None:
    r = run("agent.cli", "analyze", "--signals", "--config", str(BENCH), str(drive))
    as_json = r.stdout.splitlines()
    r = run("agent.cli", "analyze", "--signals", "--table", "--config", str(BENCH),
            str(drive))
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()
    assert len(rows) == len(as_json)
    row = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)  (Vehicle\.\S+) +(\S.*)$")
    starts = set()
    for line, js in zip(rows, as_json, strict=True):
        m = row.match(line)
        assert m, line
        change = json.loads(js)
        assert (m[1], m[2]) == (change["ts"], change["signal"])
        starts.add(m.start(3))
    assert len(starts) == 1                         # the value column is aligned
    text = "\n".join(rows)
    assert re.search(r"Vehicle\.Speed +2\.80 km/h$", text, re.M)
    assert re.search(r"Vehicle\.ADAS\.CDA\.State +MRM$", text, re.M)
    assert re.search(r"Vehicle\.Safety\.Airbag\.IsDeployed +true$", text, re.M)
    assert "{" not in text and "0000000" not in text


def test_table_needs_signals(drive: Path) -> None:
    r = run("agent.cli", "analyze", "--table", "--config", str(BENCH), str(drive))
    assert r.returncode == 2
    assert "--table goes with --signals" in r.stderr
