"""``icv-agent report period`` / ``report accident`` over what the agent really stored, and the
accident records those reports are made from: one accident per crash, deadlines, the data
window, typed empty fields, and a record after a stop or a power cut in the post-window."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from agent.monitors.accident import OPEN_KEY as ACCIDENT_OPEN_KEY
from agent.monitors.accident import PEOPLE_FIELDS
from agent.records.keys import DeviceKey
from agent.timefmt import parse_iso
from tests.record_schema import assert_valid_record
from tests.scenario_runner import SCENARIOS, run_scenario
from tests.test_stats_restart import make_config, make_trace, run_and_kill, run_pipeline, stored

ROOT = Path(__file__).resolve().parents[1]
HOUR = 3600.0


def agent_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def scenario_text(name: str) -> str:
    return (SCENARIOS / name).read_text("utf-8")


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path)
    return path


def crash(tmp_path: Path, key: Path, scenario: str, **kw: Any
          ) -> tuple[Path, list[dict[str, Any]]]:
    """Run a scenario through the pipeline on a state db file; (config, records)."""
    cfg = make_config(tmp_path)
    trace = make_trace(tmp_path, cfg, scenario_text(scenario))
    records = run_pipeline(cfg, trace, key, **kw)
    for rec in records:
        assert_valid_record(rec)
    return cfg, records


def of(records: list[dict[str, Any]], type_: str) -> list[dict[str, Any]]:
    return [r["data"] for r in records if r["type"] == type_]


# -- accident records ------------------------------------------------------------------------

def test_two_triggers_of_one_crash_are_one_accident(tmp_path: Path) -> None:
    _, records = run_scenario(SCENARIOS / "accident_two_triggers_one_crash.toml", tmp_path)
    triggers = of(records, "accident.trigger")
    accidents = of(records, "accident.record")
    assert len(accidents) == 1
    assert [t["trigger"] for t in triggers] == ["crash_signal", "airbag"]
    assert {t["accident_id"] for t in triggers} == {accidents[0]["accident_id"]}
    # The first deadline is 48 h (no deployment yet), the re-sent one 24 h from the crash.
    first, again = triggers
    t0 = parse_iso(first["ts_trigger"])
    assert parse_iso(first["report_deadline"]) - t0 == 48 * HOUR
    assert parse_iso(again["report_deadline"]) - t0 == 24 * HOUR
    assert again["ts_trigger"] == first["ts_trigger"]
    assert [t["trigger"] for t in accidents[0]["triggers"]] == ["crash_signal", "delta_v",
                                                                "airbag"]


@pytest.mark.parametrize("scenario, hours", [
    ("accident_airbag.toml", 24), ("accident_restraint.toml", 24), ("accident_vru.toml", 24),
    ("accident_crash_signal_cda_off_40s.toml", 48), ("accident_delta_v_cda_off_20s.toml", 48)])
def test_report_deadline_and_window(tmp_path: Path, scenario: str, hours: int) -> None:
    _, records = run_scenario(SCENARIOS / scenario, tmp_path)
    (trig,) = of(records, "accident.trigger")
    (acc,) = of(records, "accident.record")
    t0 = parse_iso(trig["ts_trigger"])
    assert parse_iso(trig["report_deadline"]) - t0 == hours * HOUR
    assert acc["report_deadline"] == trig["report_deadline"]
    # >= 30 s before and >= 10 s after, every mapped canonical signal known throughout.
    window = acc["window"]
    assert window["from_s"] <= -30.0 and window["to_s"] >= 10.0
    assert acc["gaps"] == []
    for name, samples in window["signals"].items():
        assert samples and samples[0][0] <= -30.0, (name, samples[:2])
        assert all(v is not None for _, v in samples), name
        times = [s[0] for s in samples]
        assert times == sorted(times) and times[-1] <= window["to_s"], name
    # The record closes 10 s after the (last) trigger.
    rec = next(r for r in records if r["type"] == "accident.record")
    assert parse_iso(rec["ts"]) - t0 == pytest.approx(10.0, abs=0.06)


def test_record_has_att3_vehicle_fields_and_typed_empty_fields(tmp_path: Path) -> None:
    _, records = run_scenario(SCENARIOS / "accident_airbag.toml", tmp_path)
    (acc,) = of(records, "accident.record")
    vehicle = acc["vehicle"]
    assert vehicle["vin"] == "LSJWH4098PN000001"
    for field in ("manufacturer", "category", "model", "power_type", "perception_system",
                  "risk_mitigation_strategy"):
        assert isinstance(vehicle[field], str) and vehicle[field], field
    assert acc["basic"]["odometer_km"] == pytest.approx(0.6, abs=0.1)
    assert acc["details"]["vehicle_state"]["Vehicle.Powertrain.Transmission.SelectedGear"] == "D"
    assert acc["details"]["vehicle_state"]["Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted"] is True
    assert acc["details"]["system_state"]["Vehicle.ADAS.CDA.State"] == "ACTIVE"
    assert acc["details"]["ecu_info"]["vehicle_software_version"] == "ADCU 2.4.1 / VCU 1.9.0"
    # Fields only people or the backend know: present, empty, of their type.
    assert acc["to_fill"] == list(PEOPLE_FIELDS)
    for path in PEOPLE_FIELDS:
        node: Any = acc
        for part in path.split("."):
            node = node[part]
        assert node in (None, "", [], {"deaths": None, "injuries": None}), (path, node)
    assert acc["basic"]["casualties"] == {"deaths": None, "injuries": None}
    assert acc["details"]["cctv_video"] == [] and acc["details"]["weather"] is None


def test_stop_before_the_post_window_closes_gives_an_incomplete_record(
        tmp_path: Path, key: Path) -> None:
    text = scenario_text("accident_airbag.toml").replace("duration = 50.0", "duration = 38.0")
    cfg = make_config(tmp_path)
    trace = make_trace(tmp_path, cfg, text)
    records = run_pipeline(cfg, trace, key)
    (acc,) = of(records, "accident.record")
    assert acc["complete"] is False
    assert 2.9 <= acc["window"]["to_s"] <= 3.0
    assert {"signal": "*", "kind": "stopped", "from_s": acc["window"]["to_s"],
            "to_s": 10.0} in acc["gaps"]
    assert stored(cfg, ACCIDENT_OPEN_KEY) is None


def test_power_cut_in_the_post_window_keeps_the_pre_crash_data(
        tmp_path: Path, key: Path) -> None:
    cfg = make_config(tmp_path)
    trace = make_trace(tmp_path, cfg, scenario_text("accident_airbag.toml"))
    t0 = parse_iso("2026-07-01T08:00:00Z")
    run_and_kill(cfg, trace, key, t0 + 37.0)            # 2 s after the airbag
    assert stored(cfg, ACCIDENT_OPEN_KEY)["accident_id"]
    records = run_pipeline(cfg, trace, key, t_from=t0 + 47.0)
    (acc,) = of(records, "accident.record")
    assert acc["complete"] is False
    assert acc["triggers"][0]["trigger"] == "airbag"
    speed = acc["window"]["signals"]["Vehicle.Speed"]
    assert speed[0][0] <= -30.0 and speed[0][1] == 60.0
    assert any(g["kind"] == "agent_restart" for g in acc["gaps"])
    # the EDR marks as known at the trigger survive too: the airbag locks it (GB 39732)
    assert acc["edr"]["final"] is False and acc["edr"]["locked"] is True
    assert acc["edr"]["lock_reasons"] == ["airbag_deployed"]
    assert stored(cfg, ACCIDENT_OPEN_KEY) is None


# -- report CLI ------------------------------------------------------------------------------

def test_report_accident_from_the_outbox_and_from_a_records_file(
        tmp_path: Path, key: Path) -> None:
    cfg, records = crash(tmp_path, key, "accident_two_triggers_one_crash.toml")
    (acc,) = of(records, "accident.record")
    aid = acc["accident_id"]

    r = agent_cli("report", "accident", "--config", str(cfg), aid)
    assert r.returncode == 0, r.stderr
    draft = json.loads(r.stdout)
    assert draft["accident_id"] == aid and draft["status"] == "complete"
    assert draft["report_deadline"] == acc["report_deadline"]
    assert draft["vehicle"]["vin"] == "LSJWH4098PN000001"
    assert draft["basic"]["casualties"] == {"deaths": None, "injuries": None}
    assert draft["data_window"]["gaps"] == [] and draft["data_window"]["to_s"] >= 10.0
    assert [x["type"] for x in draft["records"]] == ["accident.trigger", "accident.trigger",
                                                     "accident.record"]

    r = agent_cli("report", "accident", "--config", str(cfg), aid[:8], "--text")
    assert r.returncode == 0, r.stderr
    assert "事故基本信息" in r.stdout and "description: —  (to fill)" in r.stdout
    assert "LSJWH4098PN000001" in r.stdout

    # Once the uplink has emptied the outbox, an export still serves.
    export = tmp_path / "records.jsonl"
    export.write_text("".join(json.dumps(x) + "\n" for x in records) + "not json\n", "utf-8")
    shutil.rmtree(tmp_path / "state")
    r = agent_cli("report", "accident", "--config", str(cfg), aid, "--records", str(export))
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["accident_id"] == aid
    assert "1 unreadable line" in r.stderr

    r = agent_cli("report", "accident", "--config", str(cfg), "00000000", "--records",
                  str(export))
    assert r.returncode == 1 and "no accident '00000000'" in r.stderr


def test_report_period_closed_open_and_unknown(tmp_path: Path, key: Path) -> None:
    cfg, records = crash(tmp_path, key, "stats_quarter_boundary.toml")
    (q3,) = of(records, "stats.period")

    r = agent_cli("report", "period", "--config", str(cfg), "--period", "2026Q3")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["status"] == "closed" and rep["period"] == "2026Q3"
    assert rep["base"]["active_s"] == q3["active_s"]["total"]
    assert rep["base"]["active_s"] == pytest.approx(50.0, abs=0.01)
    assert rep["base"]["active_km"] == pytest.approx(1.0, abs=0.001)
    assert rep["base"]["active_hours"] == pytest.approx(50.0 / 3600, abs=1e-5)
    assert rep["base"]["by_function"]["LCC"]["km"] == rep["base"]["active_km"]
    assert rep["events"]["risk_mitigation_triggered"] == 0
    assert rep["events"]["exit_system_failure"] == 0

    # The running quarter: the rest of the session (60 s, 1.2 km) and its exit.
    r = agent_cli("report", "period", "--config", str(cfg), "--period", "2026Q4", "--text")
    assert r.returncode == 0, r.stderr
    assert "status: open" in r.stdout
    assert "hours with the system active" in r.stdout and "0.017" in r.stdout
    r = agent_cli("report", "period", "--config", str(cfg), "--period", "2026Q4")
    q4 = json.loads(r.stdout)
    assert q4["base"]["active_s"] == pytest.approx(60.0, abs=0.01)
    assert q4["base"]["active_km"] == pytest.approx(1.2, abs=0.001)
    assert q4["counts"]["cda.deactivated.driver"] == 1
    r = agent_cli("report", "period", "--config", str(cfg), "--period", "2026")
    assert json.loads(r.stdout)["base"]["active_s"] == pytest.approx(110.0, abs=0.02)

    r = agent_cli("report", "period", "--config", str(cfg), "--period", "2025Q1")
    assert r.returncode == 1 and "no statistics for 2025Q1" in r.stderr
    r = agent_cli("report", "period", "--config", str(cfg), "--period", "2026-Q3")
    assert r.returncode == 2 and "expected YYYYQn" in r.stderr


def test_report_period_counts_att3_events(tmp_path: Path, key: Path) -> None:
    cfg, _ = crash(tmp_path, key, "stats_year_end.toml")
    r = agent_cli("report", "period", "--config", str(cfg), "--period", "2026")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["kind"] == "year" and rep["status"] == "closed"
    assert rep["events"]["risk_mitigation_triggered"] == 1
    assert rep["events"]["other"]["aeb_during_use"] == 1
    assert rep["base"]["by_function"]["NOA"]["km"] == pytest.approx(0.25, abs=0.001)


def test_gaps_name_what_the_window_lacks(tmp_path: Path, key: Path) -> None:
    # A crash 12 s after the agent started: the 30 s before are not all there.
    text = (scenario_text("accident_airbag.toml").replace("at = 35.0", "at = 12.0")
            .replace("at = 36.0", "at = 13.0").replace("duration = 50.0", "duration = 30.0"))
    cfg = make_config(tmp_path)
    records = run_pipeline(cfg, make_trace(tmp_path, cfg, text), key)
    (acc,) = of(records, "accident.record")
    (start,) = [g for g in acc["gaps"] if g["kind"] == "before_agent_start"]
    assert start["signal"] == "*" and start["from_s"] == -30.0
    assert -12.01 <= start["to_s"] <= -11.99
    unknown = {g["signal"] for g in acc["gaps"] if g["kind"] == "unknown"}
    assert "Vehicle.Speed" in unknown and "Vehicle.Safety.Airbag.IsDeployed" in unknown


def test_gaps_list_unmapped_signals_on_a_partial_mapping(tmp_path: Path) -> None:
    _, records = run_scenario(SCENARIOS / "accident_mg_airbag_cda_off_40s.toml", tmp_path)
    (acc,) = of(records, "accident.record")
    unmapped = {g["signal"] for g in acc["gaps"] if g["kind"] == "unmapped"}
    assert {"Vehicle.Acceleration.Longitudinal", "Vehicle.TraveledDistance",
            "Vehicle.CurrentLocation.Latitude"} <= unmapped
    assert "Vehicle.Speed" not in unmapped and "Vehicle.Acceleration.Longitudinal" not in \
        acc["window"]["signals"]
    assert acc["basic"]["location"] is None and acc["basic"]["odometer_km"] is None
    assert acc["delta_v_peak_kmh"] is None
