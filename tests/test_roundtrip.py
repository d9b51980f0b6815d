"""scenario -> trace -> ``analyze --signals`` gives the scenario's timeline back."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.signals import BOOL, CATALOGUE, ENUM, FLOAT, INT
from agent.timefmt import parse_iso

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"


def random_value(name: str, rng: random.Random) -> Any:
    spec = CATALOGUE[name]
    if spec.kind == BOOL:
        return rng.random() < 0.5
    if spec.kind == ENUM:
        return rng.choice(spec.values)
    if spec.kind == INT:
        return rng.randrange(0, 7) if name.endswith("Modality") else rng.randrange(0, 200)
    ranges = {"Vehicle.Speed": (0, 180), "Vehicle.TraveledDistance": (0, 90000),
              "Vehicle.CurrentLocation.Latitude": (18, 53),
              "Vehicle.CurrentLocation.Longitude": (73, 135),
              "Vehicle.Chassis.SteeringWheel.Angle": (-500, 500),
              "Vehicle.LowVoltageBattery.CurrentVoltage": (9, 15)}
    lo, hi = ranges.get(name, (-9, 9) if "Acceleration" in name else (0, 100))
    return round(rng.uniform(lo, hi), 1)


def write_scenario(path: Path, steps: list[tuple[float, dict[str, Any]]], duration: float
                   ) -> None:
    lines = [f"duration = {duration}", 'start = "2026-07-01T08:00:00Z"']
    for at, values in steps:
        lines.append("[[step]]")
        lines.append(f"at = {at}")
        body = ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in values.items())
        lines.append(f"set = {{ {body} }}")
    path.write_text("\n".join(lines) + "\n")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def resolution(name: str, cfg: agent_config.AgentConfig) -> float:
    for plan in cfg.buses[0].plans.values():
        for b in plan.bindings:
            if b.canonical == name:
                return abs(plan.message.get_signal_by_name(b.dbc_signal).scale)
    raise KeyError(name)


@pytest.mark.parametrize("suffix", [".log", ".asc", ".blf"])
def test_scenario_timeline_comes_back(tmp_path: Path, suffix: str) -> None:
    cfg = agent_config.load(BENCH)
    rng = random.Random(7)
    names = sorted(cfg.buses[0].canonical)
    assert set(names) == set(CATALOGUE), "bench config must map every canonical signal"
    # the odometer is set at t=0 only: from there the generator integrates it from the
    # speed (a random odometer value later would make it go back)
    steps = [(0.0, {n: random_value(n, rng) for n in names})]
    later = [n for n in names if n != "Vehicle.TraveledDistance"]
    for k in range(1, 8):
        changed = rng.sample(later, 6)
        steps.append((k * 1.5, {n: random_value(n, rng) for n in changed}))
    sc = tmp_path / "timeline.toml"
    write_scenario(sc, steps, 13.0)
    trace = tmp_path / f"timeline{suffix}"
    r = run("hil.cli", "scenario", str(sc), "--config", str(BENCH), "-o", str(trace))
    assert r.returncode == 0, r.stderr
    r = run("agent.cli", "analyze", "--signals", "--config", str(BENCH), str(trace))
    assert r.returncode == 0, r.stderr
    t0 = parse_iso("2026-07-01T08:00:00Z")
    changes: dict[str, list[tuple[float, Any]]] = {}
    for line in r.stdout.splitlines():
        ev = json.loads(line)
        changes.setdefault(ev["signal"], []).append((parse_iso(ev["ts"]) - t0, ev["value"]))

    cycles = {b.canonical: p.cycle_s or 0.1 for p in cfg.buses[0].plans.values()
              for b in p.bindings}
    expected: dict[str, list[tuple[float, Any]]] = {}
    for at, values in steps:
        for n, v in values.items():
            if expected.get(n) and expected[n][-1][1] == v:
                continue
            expected.setdefault(n, []).append((at, v))
    for name, timeline in expected.items():
        if name == "Vehicle.TraveledDistance":
            continue  # integrated from speed; checked below
        got = changes.get(name, [])
        assert len(got) == len(timeline), f"{name}: expected {timeline}, got {got}"
        for (t_want, v_want), (t_got, v_got) in zip(timeline, got, strict=True):
            assert t_want - 1e-3 <= t_got <= t_want + cycles[name] + 1e-3, (name, t_want, t_got)
            if CATALOGUE[name].kind == FLOAT:
                assert abs(v_got - v_want) <= resolution(name, cfg) / 2 + 1e-9, (name, v_got)
            else:
                assert v_got == v_want, (name, v_want, v_got)
    odo = changes["Vehicle.TraveledDistance"]
    assert odo[0][1] == pytest.approx(steps[0][1]["Vehicle.TraveledDistance"],
                                      abs=resolution("Vehicle.TraveledDistance", cfg))
    assert all(b[1] >= a[1] for a, b in zip(odo, odo[1:], strict=False)), "odometer went back"


def test_trace_format_follows_suffix_and_is_identical_in_content(tmp_path: Path) -> None:
    sc = tmp_path / "s.toml"
    write_scenario(sc, [(0.0, {"Vehicle.Speed": 50.0}), (1.0, {"Vehicle.Speed": 60.0})], 2.0)
    outs = []
    for suffix in (".log", ".asc", ".blf"):
        trace = tmp_path / f"s{suffix}"
        assert run("hil.cli", "scenario", str(sc), "-c", str(BENCH), "-o", str(trace)
                   ).returncode == 0
        r = run("agent.cli", "analyze", "--signals", "-c", str(BENCH), str(trace))
        assert r.returncode == 0, r.stderr
        outs.append(r.stdout)
    assert outs[0] == outs[1] == outs[2]
    assert '"value": 60.0' in outs[0]


def test_unreadable_trace_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "x.nosuchformat"
    bad.write_text("hello")
    r = run("agent.cli", "analyze", "-c", str(BENCH), str(bad))
    assert r.returncode == 1
    assert "unsupported trace format" in r.stderr or "cannot open trace" in r.stderr
    r = run("agent.cli", "analyze", "-c", str(BENCH), str(tmp_path / "missing.log"))
    assert r.returncode == 1 and "trace file not found" in r.stderr
