"""One exit rule: over every shipped scenario, the period statistics count exactly the
exits, per reason, that the ``cda.deactivated`` records report (the regulator's event
report and the event records must never disagree)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from agent import config as agent_config
from agent.monitors import ALL
from agent.monitors.stats import OPEN_KEY
from agent.pipeline import Pipeline, TimeBase
from hil.trace.scenario import load_scenario
from tests.helpers import RecordingSink, feed_trace, run_scenario, shipped_scenarios

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = shipped_scenarios()
run = run_scenario


@pytest.mark.parametrize("path", SCENARIOS, ids=[p.stem for p in SCENARIOS])
def test_period_statistics_count_the_exits_the_records_report(path: Path,
                                                              tmp_path: Path) -> None:
    sink = run(path, tmp_path)
    reported = Counter(d["exit_reason"] for t, d, _ in sink.records if t == "cda.deactivated")
    counted: Counter[str] = Counter()
    quarters = [d for t, d, _ in sink.records if t == "stats.period"
                and "Q" in str(d.get("period", ""))]
    for totals in [*(q["counts"] for q in quarters),
                   sink.state[OPEN_KEY]["quarter"]["counts"]]:
        for key, n in totals.items():
            if key.startswith("cda.deactivated."):
                counted[key.removeprefix("cda.deactivated.")] += n
    assert counted == reported, (dict(counted), dict(reported))
    assert sum(reported.values()) == sum(
        q.get("cda.deactivated", 0) for q in [*(q["counts"] for q in quarters),
                                              sink.state[OPEN_KEY]["quarter"]["counts"]])


class DriftingClock(TimeBase):
    """The live time base: monotonic + the wall clock's offset read anew each call, which
    moves by microseconds between two reads."""

    def __init__(self) -> None:
        super().__init__("trace")
        self.calls = 0

    def utc(self, t: float) -> float:
        self.calls += 1
        return t - self.calls * 1e-6


@pytest.mark.parametrize("name", ["accident_two_triggers_one_crash", "accident_restraint",
                                  "accident_airbag"])
def test_a_crash_is_announced_as_often_live_as_offline(name: str, tmp_path: Path) -> None:
    """A second ``accident.trigger`` is an update only when the deadline really shortens;
    a clock offset read a few microseconds apart is no news."""
    path = ROOT / "tests" / "scenarios" / f"{name}.toml"
    offline = [d for t, d, _ in run(path, tmp_path).records if t == "accident.trigger"]
    sc = load_scenario(path)
    cfg = agent_config.load(ROOT / "config" / f"{sc.config}.toml")
    sink = RecordingSink()
    feed_trace(Pipeline(cfg, sink, DriftingClock(), ALL), cfg, tmp_path / f"{path.stem}.log")
    live = [d for t, d, _ in sink.records if t == "accident.trigger"]
    assert [d["update"] for d in live] == [d["update"] for d in offline]
    assert [d["trigger"] for d in live] == [d["trigger"] for d in offline]
