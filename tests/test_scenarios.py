"""Every scenario in tests/scenarios/ through scenario -> trace -> analyze, checked."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.scenario_runner import SCENARIOS, check_expectations, run_scenario

CASES = sorted(SCENARIOS.glob("*.toml"))


def test_there_are_scenarios() -> None:
    assert CASES, f"no scenario files in {SCENARIOS}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_scenario(path: Path, tmp_path: Path) -> None:
    sc, records = run_scenario(path, tmp_path)
    assert sc.expect or sc.expect_absent, f"{path.name} expects nothing"
    problems = check_expectations(sc, records)
    assert not problems, "\n".join(problems)
