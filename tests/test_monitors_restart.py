"""The lockout timer survives a restart: two runs of the monitors over two traces (before
and after the vehicle was switched off) share one persisted state database, as the
service does on the gateway. Data time restarts with each run, so the lockout is timed
in UTC from its persisted start.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.monitors import ALL
from agent.pipeline import Pipeline, TimeBase
from agent.recorder import Recorder
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey
from agent.records.verify import verify_records
from agent.statestore import StateDB
from agent.timefmt import parse_iso
from hil.trace.scenario import generate, load_scenario
from tests.helpers import feed_trace
from tests.record_schema import assert_valid_record

ROOT = Path(__file__).resolve().parents[1]
KEY = DeviceKey.generate()

BASE: dict[str, Any] = {
    "Vehicle.ADAS.CDA.Function": "NONE", "Vehicle.ADAS.CDA.ExitReason": "NONE",
    "Vehicle.ADAS.CDA.WarningLevel": "NONE", "Vehicle.ADAS.CDA.WarningModality": 0,
    "Vehicle.ADAS.CDA.OddStatus": "WITHIN", "Vehicle.ADAS.CDA.FaultCode": 0,
    "Vehicle.Driver.IsHandsOnWheel": True, "Vehicle.Driver.IsEyesOnRoad": True,
    "Vehicle.Chassis.Brake.IsPressed": False, "Vehicle.Acceleration.Longitudinal": 0.0,
    "Vehicle.Body.Lights.Hazard.IsSignaling": False,
    "Vehicle.ADAS.CDA.IsInstructionsConfirmed": True,
}


def scenario(start: str, duration: float, steps: list[tuple[float, dict[str, Any]]],
             ramps: dict[float, dict[str, list[float]]] | None = None) -> str:
    """Scenario TOML (inline tables must stay on one line)."""
    def table(values: dict[str, Any]) -> str:
        return "{ " + ", ".join(f"{json.dumps(k)} = {json.dumps(v)}"
                                for k, v in values.items()) + " }"
    out = [f"duration = {duration}", f'start = "{start}"']
    for at, values in steps:
        out += ["[[step]]", f"at = {at}", f"set = {table(values)}"]
        if ramps and at in ramps:
            out.append(f"ramp = {table(ramps[at])}")
    return "\n".join(out) + "\n"


# Hands off -> MRM -> INHIBITED at 08:00:30; the trace (the drive) ends at 08:00:40.
BEFORE = scenario("2026-07-01T08:00:00Z", 40.0, [
    (0.0, {**BASE, "Vehicle.Speed": 60.0, "Vehicle.ADAS.CDA.State": "STANDBY"}),
    (2.0, {"Vehicle.ADAS.CDA.State": "ACTIVE", "Vehicle.ADAS.CDA.Function": "LCC"}),
    (4.0, {"Vehicle.Driver.IsHandsOnWheel": False}),
    (8.0, {"Vehicle.ADAS.CDA.WarningLevel": "HANDS_ON_REQUEST",
           "Vehicle.ADAS.CDA.WarningModality": 1}),
    (12.0, {"Vehicle.ADAS.CDA.WarningLevel": "HANDS_ON_ESCALATED",
            "Vehicle.ADAS.CDA.WarningModality": 3}),
    (18.0, {"Vehicle.ADAS.CDA.State": "MRM", "Vehicle.ADAS.CDA.WarningLevel": "TAKE_CONTROL",
            "Vehicle.Body.Lights.Hazard.IsSignaling": True,
            "Vehicle.Acceleration.Longitudinal": -3.0}),
    (30.0, {"Vehicle.ADAS.CDA.State": "INHIBITED", "Vehicle.ADAS.CDA.Function": "NONE",
            "Vehicle.ADAS.CDA.ExitReason": "MRM", "Vehicle.ADAS.CDA.WarningLevel": "NONE",
            "Vehicle.ADAS.CDA.WarningModality": 0, "Vehicle.Acceleration.Longitudinal": 0.0,
            "Vehicle.Driver.IsHandsOnWheel": True}),
], ramps={18.0: {"Vehicle.Speed": [0.0, 5.6]}})


def after(start: str, inhibited_s: float) -> str:
    """The next drive: the system shows INHIBITED for ``inhibited_s``, then STANDBY."""
    return scenario(start, inhibited_s + 5.0, [
        (0.0, {**BASE, "Vehicle.Speed": 0.0, "Vehicle.ADAS.CDA.State": "INHIBITED"}),
        (inhibited_s, {"Vehicle.ADAS.CDA.State": "STANDBY"}),
    ])


def trace(tmp: Path, name: str, text: str) -> Path:
    cfg = agent_config.load(ROOT / "config" / "bench.toml")
    src = tmp / f"{name}.toml"
    src.write_text(text, "utf-8")
    out = tmp / f"{name}.log"
    generate(cfg, load_scenario(src), out)
    return out


def run(db_path: Path, log: Path) -> list[dict[str, Any]]:
    """One agent run over one trace on the persisted state db, like ``analyze`` does."""
    cfg = agent_config.load(ROOT / "config" / "bench.toml")
    db = StateDB(db_path)
    timebase = TimeBase("trace")
    records: list[dict[str, Any]] = []
    recorder = Recorder(db, RecordChain(db, KEY, cfg.vehicle.vin), timebase.utc,
                        timebase.source, deliver=records.extend)
    pipeline = Pipeline(cfg, recorder, timebase, ALL)
    feed_trace(pipeline, cfg, log)
    db.close()
    for rec in records:
        assert_valid_record(rec)
    return records


def of(records: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [r["data"] for r in records if r["type"] == type_]


def test_lockout_cleared_too_early_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    first = run(db, trace(tmp_path, "before", BEFORE))
    assert of(first, "cda.lockout") == [{"reason": "mrm_driver_unresponsive",
                                         "escalations": 1, "min_s": 1800.0}]
    assert of(first, "cda.lockout_cleared") == []

    # 20 min later the car starts still locked out and the lock lifts after 10 s.
    second = run(db, trace(tmp_path, "after", after("2026-07-01T08:20:00Z", 10.0)))
    assert of(second, "cda.lockout") == [], "the same lockout, not a new one"
    [cleared] = of(second, "cda.lockout_cleared")
    started = parse_iso("2026-07-01T08:00:30Z")
    lifted = parse_iso("2026-07-01T08:20:10Z")
    assert cleared["reason"] == "mrm_driver_unresponsive"
    assert cleared["across_restart"] is True
    assert abs(cleared["duration_s"] - (lifted - started)) < 0.1
    assert abs(parse_iso(cleared["last_seen_inhibited"]) - parse_iso("2026-07-01T08:00:40Z")
               ) < 0.1
    [violation] = of(second, "selfcheck.violation")
    assert violation["rule"] == "lockout_min_s"
    assert violation["expected"] == 1800.0
    assert abs(violation["observed"] - (lifted - started)) < 0.1

    # One chain across both runs: seq goes on, the second run links to the first.
    assert [r["seq"] for r in first + second] == list(range(1, len(first + second) + 1))
    report = verify_records(first + second, KEY)
    assert report.ok, report.reason


def test_lockout_longer_than_the_minimum_across_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    run(db, trace(tmp_path, "before", BEFORE))
    second = run(db, trace(tmp_path, "after", after("2026-07-01T08:40:00Z", 5.0)))
    [cleared] = of(second, "cda.lockout_cleared")
    assert abs(cleared["duration_s"] - (parse_iso("2026-07-01T08:40:05Z")
                                        - parse_iso("2026-07-01T08:00:30Z"))) < 0.1
    assert of(second, "selfcheck.violation") == []


def test_without_the_persisted_state_the_lockout_looks_new(tmp_path: Path) -> None:
    """The control: the same second drive on a fresh database knows nothing of the MRM,
    so it can only time the lockout from when it first saw it."""
    run(tmp_path / "before.db", trace(tmp_path, "before", BEFORE))
    log = trace(tmp_path, "after", after("2026-07-01T08:20:00Z", 10.0))
    second = run(tmp_path / "fresh.db", log)
    assert of(second, "cda.lockout") == [{"reason": "other", "escalations": 0,
                                          "min_s": 1800.0}]
    [cleared] = of(second, "cda.lockout_cleared")
    assert cleared["across_restart"] is False
    assert abs(cleared["duration_s"] - 10.0) < 0.1
    assert of(second, "selfcheck.violation") == []
