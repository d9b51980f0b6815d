"""Traces with impossible timestamps (NaN, inf, 1e300, before 1970, back in time): the frames
are skipped and counted where the trace is read, and nothing downstream raises on them."""

from __future__ import annotations

import math
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from agent import config as agent_config
from agent.ingest.trace import TraceReader
from agent.monitors.stats import PeriodStatsMonitor, Totals, quarter_of, year_of
from agent.pipeline import Pipeline, TimeBase
from agent.records.keys import DeviceKey
from agent.timefmt import iso_ms
from tests.helpers import RecordingSink

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"
DRIVE = ROOT / "hil" / "scenarios" / "drive.toml"
MID = 15000            # a line in the middle of the drive (MRM)


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A real trace (the drive scenario, candump .log), a key, and the clean analysis."""
    tmp = tmp_path_factory.mktemp("drive")
    full = tmp / "full.log"
    r = run("hil.cli", "scenario", str(DRIVE), "-c", str(BENCH), "-o", str(full))
    assert r.returncode == 0, r.stderr
    lines = full.read_text().splitlines(keepends=True)
    key = tmp / "device.key"
    DeviceKey.generate().save(key)
    r = analyze(full, key)
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("\n") > 3, "the clean part of the drive must give records"
    return {"tmp": tmp, "lines": lines, "key": key, "records": r.stdout}


def analyze(trace: Path, key: Path, *extra: str) -> subprocess.CompletedProcess:
    return run("agent.cli", "analyze", "-c", str(BENCH), "--key", str(key), *extra, str(trace))


def with_timestamp(line: str, ts: str) -> str:
    """A copy of a real candump line with another timestamp."""
    return f"({ts})" + line[line.index(")") + 1:]


@pytest.mark.parametrize("ts", ["nan", "inf", "-inf", "1e300", "-1e300", "-1e10", "-100.5",
                                "7258118400.0", "99999999999.0"])
def test_impossible_timestamps_are_skipped_and_counted(drive: dict[str, Any], ts: str) -> None:
    lines = list(drive["lines"])
    # a damaged copy of a real frame first (the pipeline would start at it) and mid-drive
    lines.insert(0, with_timestamp(lines[0], ts))
    lines.insert(MID + 1, with_timestamp(lines[MID], ts))
    trace = drive["tmp"] / f"bad_{ts}.log"
    trace.write_text("".join(lines))
    r = analyze(trace, drive["key"])
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "2 frames with an impossible timestamp skipped" in r.stderr, r.stderr
    assert f"{trace}:1: timestamp" in r.stderr
    assert r.stdout == drive["records"], "the skipped frames changed the records"


@pytest.mark.parametrize("ts", ["nan", "1e300"])
def test_impossible_timestamps_with_signals(drive: dict[str, Any], ts: str) -> None:
    lines = list(drive["lines"])
    lines.insert(0, with_timestamp(lines[0], ts))
    trace = drive["tmp"] / f"signals_{ts}.log"
    trace.write_text("".join(lines))
    r = analyze(trace, drive["key"], "--signals")
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr
    assert "1 frame with an impossible timestamp skipped" in r.stderr, r.stderr
    assert '"ts": "2026-07-01T08:00:00.000Z"' in r.stdout.splitlines()[0]


def test_one_frame_back_in_time_is_skipped(drive: dict[str, Any]) -> None:
    lines = list(drive["lines"])
    t = float(lines[MID][1:lines[MID].index(")")])
    lines.insert(MID + 1, with_timestamp(lines[MID], f"{t - 10:.6f}"))
    trace = drive["tmp"] / "back.log"
    trace.write_text("".join(lines))
    r = analyze(trace, drive["key"])
    assert r.returncode == 0, r.stderr
    assert "1 frame out of time order skipped" in r.stderr, r.stderr
    assert f"{trace}:{MID + 2}: timestamp" in r.stderr
    assert r.stdout == drive["records"]


def test_one_frame_far_ahead_costs_only_that_frame(drive: dict[str, Any]) -> None:
    """A single damaged timestamp a day ahead must not make every later frame 'old'."""
    lines = list(drive["lines"])
    t = float(lines[MID][1:lines[MID].index(")")])
    lines.insert(MID + 1, with_timestamp(lines[MID], f"{t + 86400:.6f}"))
    trace = drive["tmp"] / "ahead.log"
    trace.write_text("".join(lines))
    r = analyze(trace, drive["key"])
    assert r.returncode == 0, r.stderr
    assert "1 frame out of time order skipped" in r.stderr, r.stderr
    assert f"{trace}:{MID + 2}: timestamp" in r.stderr
    assert r.stdout == drive["records"]


def write_log(path: Path, times: list[float]) -> Path:
    path.write_text("".join(f"({t:.6f}) can0 125#0000000000000000\n" for t in times))
    return path


def test_reader_skips_everything_after_a_step_back(tmp_path: Path) -> None:
    t0 = 1782892800.0
    times = [t0 + 0.01 * i for i in range(100)] + [t0 + 0.5 + 0.01 * i for i in range(20)]
    reader = TraceReader(write_log(tmp_path / "step.log", times))
    got = [m.timestamp for m in reader]
    assert got == [pytest.approx(t) for t in times[:100]]
    assert reader.out_of_order.count == 20
    assert reader.frames == 100 and reader.last_t == pytest.approx(times[99])


def test_reader_skips_a_trace_older_than_the_one_before(tmp_path: Path) -> None:
    t0 = 1782892800.0
    reader = TraceReader(write_log(tmp_path / "old.log", [t0, t0 + 1]), not_before=t0 + 5)
    assert list(reader) == []
    assert reader.out_of_order.count == 2
    assert "2 frames out of time order skipped" in reader.lines()[0]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e300, -1e300])
def test_time_formatting_and_periods_take_any_number(bad: float) -> None:
    assert ts_ok(iso_ms(bad))
    tz = ZoneInfo("Asia/Shanghai")
    for of in (quarter_of, year_of):
        name, start, end = of(bad, tz)
        assert math.isfinite(start) and start < end and name


def ts_ok(ts: str) -> bool:
    """The check tests.record_schema makes of a record's ``ts``."""
    try:
        datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ")
    except ValueError:
        return False
    return True


def test_persisted_totals_with_nan_are_refused() -> None:
    good = {"period": "2026Q3", "start": 1.0, "end": 2.0, "active_s": {"LCC": 1.0},
            "distance_km": {}, "odometer_km": {}, "counts": {}}
    assert Totals.from_json(good) is not None
    for field, value in (("start", math.nan), ("end", math.inf),
                         ("active_s", {"LCC": math.nan}), ("distance_km", {"LCC": math.inf})):
        assert Totals.from_json({**good, field: value}) is None, field


def test_stats_monitor_takes_non_finite_speed_and_time() -> None:
    cfg = agent_config.load(BENCH)
    sink = RecordingSink()
    records = sink.records
    pipeline = Pipeline(cfg, sink, TimeBase("trace"), [PeriodStatsMonitor])
    stats = pipeline.monitors[-1]          # after the crash monitor it uses
    assert isinstance(stats, PeriodStatsMonitor)
    t0 = 1782892800.0
    stats.start(t0)
    stats.on_signal("Vehicle.ADAS.CDA.Function", "LCC", t0)
    stats.on_signal("Vehicle.ADAS.CDA.State", "ACTIVE", t0)
    stats.on_signal("Vehicle.Speed", 100.0, t0)
    stats.on_signal("Vehicle.Speed", math.nan, t0 + 1)
    stats.on_signal("Vehicle.Speed", math.inf, t0 + 2)
    stats.on_signal("Vehicle.Speed", 1e300, t0 + 3)
    stats.on_signal("Vehicle.TraveledDistance", math.inf, t0 + 3)
    for bad in (math.nan, math.inf, 1e300, -1e300):
        stats.on_tick(bad)               # must neither raise nor close periods forever
    stats.on_signal("Vehicle.Speed", 50.0, t0 + 4)
    stats.stop(t0 + 5)
    assert stats.quarter is not None
    for bucket in (stats.quarter.active_s, stats.quarter.distance_km):
        assert all(math.isfinite(v) for v in bucket.values()), bucket
    assert stats.quarter.active_s["LCC"] == pytest.approx(5.0)
    data = stats.quarter.record("Asia/Shanghai", odometer=True, closed="period_end",
                                as_of=math.nan)
    assert ts_ok(data["as_of"]) and data["start"] == "2026-06-30T16:00:00.000Z"
    assert not [r for r in records if r[0] == "stats.period"]



def test_interleaved_channels_keep_every_frame(tmp_path: Path) -> None:
    """A multi-channel logger writes small time inversions; those frames are real."""
    t0 = 1782892800.0
    times = [t0, t0 + 0.010, t0 + 0.0095, t0 + 0.020, t0 + 0.0199, t0 + 0.030]
    reader = TraceReader(write_log(tmp_path / "interleaved.log", times))
    got = [m.timestamp for m in reader]
    assert len(got) == len(times) and got == sorted(got)   # kept, time never goes back
    assert reader.reordered == 2 and reader.out_of_order.count == 0
    assert not reader.damaged
    assert "2 frame(s) up to 50 ms before the previous one" in reader.lines()[0]
