"""Period statistics equal the sum over the CDA sessions of the scenario, to the metre and the
second: uninterrupted, and after a SIGKILL of the agent mid-session with a restart later,
across the 2026Q3/2026Q4 boundary of Asia/Shanghai (2026-09-30T16:00:00Z).

The expected figures are computed here from the scenario's own timeline (session intervals,
functions, a piecewise linear speed), not from the agent's records. The agent runs the real
pipeline on a real state db file; the kill is a real SIGKILL of a child process whose last
commit returned, as after a power cut.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from agent import config as agent_config
from agent.ingest.trace import ChannelRouter, read_trace
from agent.journal.outbox import Journal
from agent.monitors import ALL
from agent.monitors.stats import CHECKPOINT_S, CLOSED_KEY, OPEN_KEY
from agent.pipeline import Pipeline, TimeBase
from agent.recorder import Recorder
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey
from agent.statestore import StateDB
from agent.timefmt import parse_iso
from tests.record_schema import assert_valid_record

ROOT = Path(__file__).resolve().parents[1]
STATE_DB = "state.db"

START = "2026-09-30T15:58:00Z"           # 23:58 in Asia/Shanghai
T0 = parse_iso(START)
BOUNDARY = parse_iso("2026-09-30T16:00:00Z") - T0   # 120 s: 2026-10-01 00:00 CST
DURATION = 280.0
SPEED_POINTS = [(0.0, 54.0), (60.0, 54.0), (90.0, 90.0), (DURATION, 90.0)]   # km/h
SESSIONS = [                              # (start, end, [(from, function), ...])
    (10.0, 40.0, [(10.0, "ACC")]),
    (60.0, 150.0, [(60.0, "LCC"), (100.0, "NOA")]),   # crosses the quarter boundary
    (200.0, 260.0, [(200.0, "LCC")]),
]


# -- the scenario and what it must give ---------------------------------------------------

def scenario_toml() -> str:
    steps: dict[float, dict[str, Any]] = {0.0: {
        "Vehicle.Speed": SPEED_POINTS[0][1], "Vehicle.ADAS.CDA.State": "STANDBY",
        "Vehicle.ADAS.CDA.Function": "NONE", "Vehicle.ADAS.CDA.ExitReason": "NONE",
        "Vehicle.ADAS.CDA.IsInstructionsConfirmed": True}}
    for start, end, functions in SESSIONS:
        steps.setdefault(start, {}).update({"Vehicle.ADAS.CDA.State": "ACTIVE",
                                            "Vehicle.ADAS.CDA.ExitReason": "NONE"})
        for at, fn in functions:
            steps.setdefault(at, {})["Vehicle.ADAS.CDA.Function"] = fn
        steps.setdefault(end, {}).update({"Vehicle.ADAS.CDA.State": "STANDBY",
                                          "Vehicle.ADAS.CDA.Function": "NONE",
                                          "Vehicle.ADAS.CDA.ExitReason": "DRIVER"})
    ramps = {}
    for (t1, v1), (t2, v2) in zip(SPEED_POINTS, SPEED_POINTS[1:], strict=False):
        if v1 != v2:
            ramps[t1] = (v2, t2 - t1)
    lines = [f'start = "{START}"', f"duration = {DURATION}"]
    for at in sorted(set(steps) | set(ramps)):
        lines += ["", "[[step]]", f"at = {at}"]
        if at in steps:
            items = ", ".join(f'"{k}" = {json.dumps(v)}' for k, v in steps[at].items())
            lines.append(f"set = {{ {items} }}")
        if at in ramps:
            target, seconds = ramps[at]
            lines.append(f'ramp = {{ "Vehicle.Speed" = [{target}, {seconds}] }}')
    return "\n".join(lines) + "\n"


def speed_integral_km(a: float, b: float) -> float:
    """Exact integral of the piecewise linear speed over [a, b], in km."""
    total = 0.0
    for (t1, v1), (t2, v2) in zip(SPEED_POINTS, SPEED_POINTS[1:], strict=False):
        lo, hi = max(a, t1), min(b, t2)
        if hi <= lo:
            continue
        slope = (v2 - v1) / (t2 - t1)
        total += (v1 + slope * (lo - t1) + v1 + slope * (hi - t1)) / 2 * (hi - lo)
    return total / 3600.0


def expected(period: tuple[float, float], alive: list[tuple[float, float]]
             ) -> tuple[dict[str, float], dict[str, float]]:
    """Seconds and km per function inside ``period`` while the agent was running."""
    secs: dict[str, float] = {}
    km: dict[str, float] = {}
    for _start, end, functions in SESSIONS:
        bounds = [at for at, _ in functions[1:]] + [end]
        for (at, fn), until in zip(functions, bounds, strict=True):
            for lo_alive, hi_alive in alive:
                lo = max(at, period[0], lo_alive)
                hi = min(until, period[1], hi_alive)
                if hi > lo:
                    secs[fn] = secs.get(fn, 0.0) + hi - lo
                    km[fn] = km.get(fn, 0.0) + speed_integral_km(lo, hi)
    return secs, km


def assert_equal_to_metre_and_second(got: dict[str, Any], want_s: dict[str, float],
                                     want_km: dict[str, float], label: str) -> None:
    # Frames of the CDA state are sent 8 ms into each 10 ms cycle: every session starts and
    # ends 8 ms after the scenario time, which cancels except at clip points (kill).
    assert set(got["active_s"]) - {"total"} == set(want_s), (label, got["active_s"], want_s)
    for fn, s in want_s.items():
        assert got["active_s"][fn] == pytest.approx(s, abs=0.02), (label, fn, got, want_s)
        assert got["distance_km"][fn] == pytest.approx(want_km[fn], abs=0.001), (
            label, fn, got, want_km)
    assert got["active_s"]["total"] == pytest.approx(sum(want_s.values()), abs=0.02), label
    assert got["distance_km"]["total"] == pytest.approx(sum(want_km.values()), abs=0.001), label


# -- running the agent --------------------------------------------------------------------

def make_config(tmp: Path, name: str = "bench") -> Path:
    """config/NAME.toml with absolute DBC paths and its state dir under ``tmp``."""
    text = (ROOT / "config" / f"{name}.toml").read_text("utf-8").replace('"../', f'"{ROOT}/')
    text = re.sub(r'(?m)^dir = "[^"]*"', f'dir = "{tmp / "state"}"', text)
    path = tmp / "agent.toml"
    path.write_text(text, "utf-8")
    return path


def make_trace(tmp: Path, cfg_path: Path, toml: str, name: str = "sc") -> Path:
    sc = tmp / f"{name}.toml"
    sc.write_text(toml, "utf-8")
    trace = tmp / f"{name}.log"
    r = subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(sc), "--config",
                        str(cfg_path), "-o", str(trace)], cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return trace


def run_pipeline(cfg_path: Path, trace: Path, key_path: Path, *, t_from: float | None = None,
                 t_to: float | None = None, stop: bool = True) -> list[dict[str, Any]]:
    """The agent's pipeline over [t_from, t_to) of a trace, on the config's state db file,
    with the outbox journal as the service has it. Returns the records made."""
    cfg = agent_config.load(cfg_path)
    db = StateDB(cfg.state_dir / STATE_DB)
    chain = RecordChain(db, DeviceKey.load(key_path), cfg.vehicle.vin)
    made: list[dict[str, Any]] = []
    timebase = TimeBase("trace")
    recorder = Recorder(db, chain, timebase.utc, "trace", journal=Journal(db),
                        deliver=made.extend)
    pipeline = Pipeline(cfg, recorder, timebase, ALL)
    router = ChannelRouter(cfg.buses)
    last = None
    for msg in read_trace(trace):
        if t_from is not None and msg.timestamp < t_from:
            continue
        if t_to is not None and msg.timestamp >= t_to:
            break
        idx = router.route(msg.channel)
        if idx is not None:
            last = msg.timestamp
            pipeline.feed(idx, msg, last)
    if stop and last is not None:
        pipeline.advance(last)
        pipeline.stop(last)
        db.close()
    return made


def child(cfg_path: str, trace: str, key_path: str, t_to: str) -> None:
    """Run up to ``t_to`` (every commit done), say so, and wait to be killed."""
    run_pipeline(Path(cfg_path), Path(trace), Path(key_path), t_to=float(t_to), stop=False)
    print("READY", flush=True)
    time.sleep(600)


def run_and_kill(cfg_path: Path, trace: Path, key_path: Path, t_to: float) -> None:
    code = ("import sys; from tests.test_stats_restart import child; child(*sys.argv[1:])")
    proc = subprocess.Popen([sys.executable, "-c", code, str(cfg_path), str(trace),
                             str(key_path), str(t_to)], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line.strip() == "READY", f"child failed: {line!r} {proc.stderr.read()}"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()


def stored(cfg_path: Path, key: str) -> Any:
    cfg = agent_config.load(cfg_path)
    db = StateDB(cfg.state_dir / STATE_DB)
    try:
        return db.get(key)
    finally:
        db.close()


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(config, trace, key) with the trace shared by the tests of this module."""
    tmp = tmp_path_factory.mktemp("stats")
    cfg = make_config(tmp)
    trace = make_trace(tmp, cfg, scenario_toml())
    key = tmp / "device.key"
    DeviceKey.generate().save(key)
    return cfg, trace, key


Q3 = (-1e9, BOUNDARY)
Q4 = (BOUNDARY, 1e9)
WHOLE = [(0.0, DURATION)]


def test_timeline_is_what_the_test_thinks(bench: tuple[Path, Path, Path]) -> None:
    # Guard the expectation code itself: 30 s ACC at 54 km/h = 0.45 km.
    s, km = expected((-1e9, 1e9), [(0.0, 45.0)])
    assert s == {"ACC": 30.0} and km["ACC"] == pytest.approx(0.45)


def test_uninterrupted_equals_sum_over_sessions(bench: tuple[Path, Path, Path],
                                                 tmp_path: Path) -> None:
    _, trace, key = bench
    cfg = make_config(tmp_path)
    records = run_pipeline(cfg, trace, key)
    for rec in records:
        assert_valid_record(rec)
    periods = [r["data"] for r in records if r["type"] == "stats.period"]
    assert [p["period"] for p in periods] == ["2026Q3"]
    q3 = periods[0]
    assert q3["end"] == "2026-09-30T16:00:00.000Z" and q3["closed"] == "period_end"
    assert_equal_to_metre_and_second(q3, *expected(Q3, WHOLE), "2026Q3")
    assert stored(cfg, CLOSED_KEY)["2026Q3"] == q3

    # The running quarter as persisted at stop, through the same rounding as a record.
    from agent.monitors.stats import Totals
    saved = stored(cfg, OPEN_KEY)
    q4 = Totals.from_json(saved["quarter"])
    assert q4 is not None and q4.period == "2026Q4"
    q4_data = q4.record("Asia/Shanghai", odometer=True, closed="open", as_of=0)
    assert_equal_to_metre_and_second(q4_data, *expected(Q4, WHOLE), "2026Q4")
    year = Totals.from_json(saved["year"])
    assert year is not None and year.period == "2026"
    assert_equal_to_metre_and_second(
        year.record("Asia/Shanghai", odometer=True, closed="open", as_of=0),
        *expected((-1e9, 1e9), WHOLE), "2026")

    assert q3["counts"] == {"cda.activated": 2, "cda.deactivated": 1,
                            "cda.deactivated.driver": 1}
    assert q4.counts == {"cda.activated": 1, "cda.deactivated": 2,
                         "cda.deactivated.driver": 2}

    # The session monitor's own records agree: the same sessions, the same seconds.
    sessions = [r["data"] for r in records if r["type"] == "cda.deactivated"]
    assert len(sessions) == 3
    total = sum(d["duration_s"] for d in sessions)
    assert total == pytest.approx(q3["active_s"]["total"] + sum(q4.active_s.values()),
                                  abs=0.005)


@pytest.mark.parametrize("kill_at, restart_at", [(135.0, 180.0), (95.0, 195.0)],
                         ids=["kill-in-q4-session", "kill-in-q3-restart-in-q4"])
def test_kill_and_restart(bench: tuple[Path, Path, Path], tmp_path: Path, kill_at: float,
                          restart_at: float) -> None:
    _, trace, key = bench
    cfg = make_config(tmp_path)
    run_and_kill(cfg, trace, key, T0 + kill_at)

    # What survived the kill: totals as of the last checkpoint, a few seconds at most old.
    saved = stored(cfg, OPEN_KEY)
    as_of = saved["as_of"] - T0
    assert kill_at - CHECKPOINT_S - 0.5 <= as_of <= kill_at, as_of

    records = run_pipeline(cfg, trace, key, t_from=T0 + restart_at)
    for rec in records:
        assert_valid_record(rec)
    alive = [(0.0, as_of), (restart_at, DURATION)]
    periods = {r["data"]["period"]: r["data"] for r in records if r["type"] == "stats.period"}
    closed = stored(cfg, CLOSED_KEY)
    q3 = closed["2026Q3"]
    if kill_at < BOUNDARY:
        # The quarter ended while the agent was off: closed at the restart, marked late.
        assert periods["2026Q3"] == q3 and q3["closed"] == "late"
    else:
        assert "2026Q3" not in periods and q3["closed"] == "period_end"
    assert_equal_to_metre_and_second(q3, *expected(Q3, alive), "2026Q3")

    from agent.monitors.stats import Totals
    q4 = Totals.from_json(stored(cfg, OPEN_KEY)["quarter"])
    assert q4 is not None and q4.period == "2026Q4"
    assert_equal_to_metre_and_second(
        q4.record("Asia/Shanghai", odometer=True, closed="open", as_of=0),
        *expected(Q4, alive), "2026Q4")
    # S2's exit was never seen (agent off), S3 is whole.
    q3_sessions = 2 if kill_at > 60.0 else 1
    assert q3["counts"]["cda.activated"] == q3_sessions
    assert q4.counts.get("cda.activated") == 1 and q4.counts.get("cda.deactivated") == 1


def test_months_off_close_the_open_periods_late_and_skip_the_empty_ones(
        bench: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, trace, key = bench
    cfg = make_config(tmp_path)
    run_pipeline(cfg, trace, key)
    later = make_trace(tmp_path, cfg, 'start = "2027-08-01T02:00:00Z"\nduration = 5.0\n'
                       '[[step]]\nat = 0.0\nset = { "Vehicle.Speed" = 0.0, '
                       '"Vehicle.ADAS.CDA.State" = "OFF" }\n', "later")
    records = run_pipeline(cfg, later, key)
    periods = [r["data"] for r in records if r["type"] == "stats.period"]
    assert [(p["period"], p["closed"]) for p in periods] == [("2026Q4", "late"),
                                                             ("2026", "late")]
    assert_equal_to_metre_and_second(periods[0], *expected(Q4, WHOLE), "2026Q4")
    assert_equal_to_metre_and_second(periods[1], *expected((-1e9, 1e9), WHOLE), "2026")
    saved = stored(cfg, OPEN_KEY)
    assert (saved["quarter"]["period"], saved["year"]["period"]) == ("2027Q3", "2027")
    assert set(stored(cfg, CLOSED_KEY)) == {"2026Q3", "2026Q4", "2026"}


@pytest.mark.parametrize("scenario", [
    "cda_inferred_exits", "cda_system_failure", "cda_odd_exit", "mrm_driver_unresponsive",
    "safety_aeb_fcw_elk", "accident_two_triggers_one_crash", "mg_acc_exits", "tesla_fault_exit"])
def test_counts_agree_with_the_event_records(tmp_path: Path, scenario: str) -> None:
    """The statistics count events from signals; the event monitors emit records from the
    same signals. Both must tell the same story."""
    from collections import Counter

    from hil.trace.scenario import load_scenario

    path = ROOT / "tests" / "scenarios" / f"{scenario}.toml"
    cfg = make_config(tmp_path, load_scenario(path).config)
    key = tmp_path / "device.key"
    DeviceKey.generate().save(key)
    records = run_pipeline(cfg, make_trace(tmp_path, cfg, path.read_text("utf-8")), key)
    want: Counter[str] = Counter()
    for rec in records:
        kind, data = rec["type"], rec["data"]
        if kind in ("cda.activated", "cda.mrm", "safety.aeb", "safety.elk", "safety.fcw"):
            want[kind] += 1
        elif kind == "cda.deactivated":
            want[kind] += 1
            want[f"{kind}.{data['exit_reason']}"] += 1
        elif kind == "accident.record":
            want["accident"] += 1
            for mark in ("triggered", "locked"):
                if data["edr"][mark]:
                    want[f"accident.edr_{mark}"] += 1
        if kind == "cda.mrm":
            want[f"cda.mrm.{data['cause']}"] += 1
        elif kind == "cda.misuse":
            want[f"misuse.unconfirmed_{data['kind']}"] += 1
        elif kind == "selfcheck.violation" and data["monitor"] in ("instructions",
                                                                   "aeb_availability"):
            want[f"selfcheck.{data['rule']}"] += 1
    assert want, "the scenario has no event to count"
    counts = stored(cfg, OPEN_KEY)["year"]["counts"]
    # R171 categories counted from signals alone (no record of their own) are not compared.
    alone = ("warning.", "cda.manoeuvre", "cda.boundary_exceeded", "ignition_cycles")
    assert {k: v for k, v in counts.items()
            if not k.endswith(".cda_in_use") and not k.startswith(alone)} == dict(want)
