"""One crash computation: over every shipped scenario, the period statistics count exactly
the accidents the ``accident.record`` records report, and as often "CDA in use" as the
records say ``cda_in_use_30s`` (the event report and the accident reports must agree)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config as agent_config
from agent.monitors import ALL
from agent.monitors.stats import OPEN_KEY
from agent.pipeline import Pipeline, TimeBase
from tests.helpers import RecordingSink, run_scenario, shipped_scenarios

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = shipped_scenarios()
run = run_scenario


def counted(sink: RecordingSink, key: str) -> int:
    quarters = [d["counts"] for t, d, _ in sink.records
                if t == "stats.period" and "Q" in str(d.get("period", ""))]
    return sum(c.get(key, 0) for c in [*quarters, sink.state[OPEN_KEY]["quarter"]["counts"]])


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_period_statistics_count_the_accidents_the_records_report(path: Path,
                                                                  tmp_path: Path) -> None:
    sink = run(path, tmp_path)
    records = [d for t, d, _ in sink.records if t == "accident.record"]
    first_triggers = [d for t, d, _ in sink.records
                      if t == "accident.trigger" and not d["update"]]
    assert len({d["accident_id"] for d in records}) == len(records)
    assert len(first_triggers) == len(records)
    assert counted(sink, "accident") == len(records)
    assert counted(sink, "accident.cda_in_use") == sum(d["cda_in_use_30s"] for d in records)


def test_the_shipped_scenarios_have_crashes() -> None:
    """The comparison above means something only if some scenario crashes."""
    crashes = [p for p in SCENARIOS if "Airbag.IsDeployed\" = true" in p.read_text()
               or "Acceleration.Longitudinal\" = -60" in p.read_text()]
    assert len(crashes) >= 3, crashes


def test_a_crossing_found_after_the_window_closes_joins_the_crash(tmp_path: Path) -> None:
    """The delta-V crossing lies inside the airbag crash's post-window but is found at the
    first look after it: one accident (it fails before one crash computation: two
    accident records, one counted)."""
    sink = run(ROOT / "tests" / "scenarios" / "accident_delta_v_at_window_close.toml", tmp_path)
    records = [d for t, d, _ in sink.records if t == "accident.record"]
    assert [[x["trigger"] for x in d["triggers"]] for d in records] == [["airbag", "delta_v"]]
    assert counted(sink, "accident") == 1


def test_one_crash_computation_per_pipeline(tmp_path: Path) -> None:
    from agent.monitors.accident import AccidentMonitor
    from agent.monitors.crash import CrashMonitor
    from agent.monitors.instructions import InstructionsMonitor
    from agent.monitors.mrm import MrmMonitor
    from agent.monitors.safety import AebAvailabilityMonitor
    from agent.monitors.stats import PeriodStatsMonitor

    cfg = agent_config.load(ROOT / "config" / "bench.toml")
    pipeline = Pipeline(cfg, RecordingSink(), TimeBase("trace"), ALL)
    crash = [m for m in pipeline.monitors if isinstance(m, CrashMonitor)]
    assert len(crash) == 1
    by_type = {type(m): m for m in pipeline.monitors}
    accident, stats = by_type[AccidentMonitor], by_type[PeriodStatsMonitor]
    assert isinstance(accident, AccidentMonitor) and isinstance(stats, PeriodStatsMonitor)
    assert accident.crash is stats.crash is crash[0]
    assert pipeline.monitors.index(crash[0]) < pipeline.monitors.index(accident)
    # stats alone still gets its crashes
    alone = Pipeline(cfg, RecordingSink(), TimeBase("trace"), [PeriodStatsMonitor])
    assert [type(m) for m in alone.monitors] == [CrashMonitor, InstructionsMonitor,
                                                 AebAvailabilityMonitor, MrmMonitor,
                                                 PeriodStatsMonitor]
