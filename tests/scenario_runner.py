"""Run a scenario through the real tool chain and check what it expects.

scenario TOML -> ``icv-hil scenario`` -> trace -> ``icv-agent analyze`` -> records, each
validated against the schema, the chain verified, then the scenario's ``expect`` list
matched as an ordered subsequence.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.records.keys import DeviceKey
from agent.records.verify import verify_records
from agent.timefmt import parse_iso
from hil.trace.scenario import Scenario, load_scenario
from tests.record_schema import assert_valid_record

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "tests" / "scenarios"


def cli(*args: str, **kw: Any) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=kw.pop("timeout", 300), **kw)


def run_scenario(path: Path, tmp: Path, *, suffix: str = ".log",
                 config: Path | None = None) -> tuple[Scenario, list[dict[str, Any]]]:
    sc = load_scenario(path)
    config = config or ROOT / "config" / f"{sc.config}.toml"
    trace = tmp / f"{path.stem}{suffix}"
    key = tmp / "device.key"
    if not key.exists():
        DeviceKey.generate().save(key)
    r = cli("hil.cli", "scenario", str(path), "--config", str(config), "-o", str(trace))
    assert r.returncode == 0, r.stderr
    r = cli("agent.cli", "analyze", "--config", str(config), "--key", str(key), str(trace))
    assert r.returncode == 0, r.stderr
    records = [json.loads(line) for line in r.stdout.splitlines() if line.strip()]
    for rec in records:
        assert_valid_record(rec)
    report = verify_records(records, DeviceKey.load(key))
    assert report.ok, report.reason
    return sc, records


def match(want: Any, got: Any, tol: float) -> bool:
    if isinstance(want, dict):
        return isinstance(got, dict) and all(
            k in got and match(v, got[k], tol) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(want) == len(got) and all(
            match(w, g, tol) for w, g in zip(want, got, strict=True))
    if isinstance(want, float) and not isinstance(want, bool):
        return (isinstance(got, (int, float)) and not isinstance(got, bool)
                and math.isclose(want, got, abs_tol=tol))
    return bool(want == got and type(want) is type(got)) or (
        isinstance(want, int) and isinstance(got, float) and not isinstance(want, bool)
        and math.isclose(want, got, abs_tol=tol))


EXPECT_KEYS = {"type", "data", "at", "tol"}


def check_expectations(sc: Scenario, records: list[dict[str, Any]]) -> list[str]:
    """Problems (empty = the records hold what the scenario expects)."""
    problems = []
    t0 = sc.start_epoch
    i = 0
    for n, exp in enumerate(sc.expect):
        unknown = set(exp) - EXPECT_KEYS
        if unknown:  # e.g. expect_absent written after [[expect]] lands inside it in TOML
            problems.append(f"expect[{n}] has unknown keys {sorted(unknown)}")
            continue
        tol = float(exp.get("tol", 0.15))
        found = None
        for j in range(i, len(records)):
            rec = records[j]
            if rec["type"] != exp["type"]:
                continue
            if "data" in exp and not match(exp["data"], rec["data"], tol):
                continue
            if "at" in exp and abs(parse_iso(rec["ts"]) - t0 - float(exp["at"])) > max(tol, 0.15):
                continue
            found = j
            break
        if found is None:
            seen = [(r["type"], round(parse_iso(r["ts"]) - t0, 2), r["data"])
                    for r in records[i:] if r["type"] == exp["type"]]
            problems.append(f"expect[{n}] {exp} not found after record {i}; "
                            f"candidates: {seen}")
        else:
            i = found + 1
    types = [r["type"] for r in records]
    for t in sc.expect_absent:
        if t in types:
            problems.append(f"{t} must not occur, got: "
                            f"{[r['data'] for r in records if r['type'] == t]}")
    return problems
