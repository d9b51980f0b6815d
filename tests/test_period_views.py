"""``icv-agent report period``: the notice's view (Att.3 二) and UN R171's view of one
quarter come from the same counters, next to the draft GB L2 items; a category the vehicle
does not signal is shown as such, never as 0.

Each scenario goes through the agent's pipeline onto a real state db; the report is read
from there by the CLI, as a homologation engineer would run it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent.records.keys import DeviceKey
from hil.trace.scenario import load_scenario
from tests.scenario_runner import SCENARIOS
from tests.test_reports import agent_cli
from tests.test_stats_restart import make_config, make_trace, run_pipeline


@pytest.fixture
def key(tmp_path: Path) -> Path:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path)
    return path


def report(tmp_path: Path, key: Path, scenario: str, period: str
           ) -> tuple[dict[str, Any], str, list[dict[str, Any]]]:
    path = SCENARIOS / scenario
    cfg = make_config(tmp_path, load_scenario(path).config)
    records = run_pipeline(cfg, make_trace(tmp_path, cfg, path.read_text("utf-8")), key)
    r = agent_cli("report", "period", "--config", str(cfg), "--period", period)
    assert r.returncode == 0, r.stderr
    text = agent_cli("report", "period", "--config", str(cfg), "--period", period, "--text")
    assert text.returncode == 0, text.stderr
    return json.loads(r.stdout), text.stdout, records


def test_r171_view_and_the_notice_view_share_the_counters(tmp_path: Path, key: Path) -> None:
    rep, text, records = report(tmp_path, key, "stats_r171_categories.toml", "2026Q3")
    (closed,) = [r["data"] for r in records if r["type"] == "stats.period"]
    counts = closed["counts"]
    base, r171 = rep["base"], rep["r171"]
    assert rep["status"] == "closed" and rep["counts"] == counts
    # hours and km: one figure, both views (NOA 5-53 s, LCC 60-82 s)
    assert r171["operation_hours"] == base["active_hours"]
    assert r171["operation_km"] == base["active_km"]
    assert base["active_s"] == pytest.approx(70.0, abs=0.05)
    assert r171["fleet_size"] == base["vehicles_with_system"] == 1
    # the categories, each from its counter
    assert (r171["hands_on_requests"], r171["hands_on_escalated"]) == (2, 1)
    assert (r171["eyes_on_road_warnings"], r171["eyes_on_road_escalated"]) == (1, 1)
    assert r171["take_control_alerts"] == 1
    assert r171["system_initiated_manoeuvres"] == 2
    assert r171["system_initiated_manoeuvres_by_kind"] == {"lane_change": 1, "ramp": 1}
    assert r171["driver_unavailability_responses"] == 1
    assert r171["risk_mitigation_manoeuvres"] == rep["events"]["risk_mitigation_triggered"] == 1
    assert r171["boundary_exceedances"] == 1
    assert r171["deactivations"] == 2
    assert r171["deactivations_by_reason"]["odd_exit"] == rep["events"]["exit_system_boundary"]
    assert r171["deactivations_by_reason"] == {"driver": 0, "system_failure": 0,
                                               "odd_exit": 1, "driver_disengaged": 0,
                                               "mrm": 1, "unknown": 0}
    assert rep["not_signalled"] == []
    # the text prints both views
    assert "基本信息 base figures" in text and "UN R171 (DCAS) monitoring view" in text
    hours = f"{base['active_hours']:.3f}"
    assert text.count(hours) >= 2, text
    assert "system-initiated manoeuvres" in text and "boundary exceedances" in text


def test_cn_l2_counts_misuse_per_ignition_cycle(tmp_path: Path, key: Path) -> None:
    rep, text, records = report(tmp_path, key, "instructions_carried_over.toml", "2026Q3")
    misuse = [r["data"] for r in records if r["type"] == "cda.misuse"]
    assert len(misuse) == 1                 # at 25 s; the re-confirmed one at 35 s is fine
    assert rep["status"] == "open"
    assert rep["cn_l2"]["ignition_cycles"] == 1
    assert rep["cn_l2"]["unconfirmed_activations"] == 1
    assert rep["cn_l2"]["unconfirmed_activation_attempts"] == 0
    assert rep["cn_l2"]["activated_anyway_violations"] == 1
    assert rep["cn_l2"]["aeb_unavailable_while_active"] == 0
    assert "activations without instructions confirmed" in text


def test_categories_a_vehicle_does_not_signal_are_not_zero(tmp_path: Path, key: Path) -> None:
    # MG: no manoeuvre, ODD, confirmation, AEB availability or acceleration signal.
    rep, text, records = report(tmp_path, key, "mg_acc_exits.toml", "2026Q3")
    degraded = {r["data"]["monitor"]: r["data"]["missing"] for r in records
                if r["type"] == "agent.monitor_degraded"}
    assert degraded["instructions"] == ["Vehicle.ADAS.CDA.IsInstructionsConfirmed"]
    assert degraded["aeb_availability"] == ["Vehicle.ADAS.AEB.IsAvailable"]
    assert set(rep["not_signalled"]) == {"system_initiated_manoeuvres", "boundary_exceedances",
                                         "instructions_confirmation", "aeb_availability",
                                         "edr_delta_v"}
    r171 = rep["r171"]
    assert r171["system_initiated_manoeuvres"] is None
    assert r171["system_initiated_manoeuvres_by_kind"] is None
    assert r171["boundary_exceedances"] is None
    assert r171["hands_on_requests"] == 0          # MG signals its hands-off warnings
    assert rep["cn_l2"]["unconfirmed_activations"] is None
    assert r171["deactivations"] == rep["counts"]["cda.deactivated"] > 0
    assert "n/a = not signalled by this vehicle" in text
