"""Helpers of the vcan suite: agent configs on SocketCAN, can-utils, records from state.db."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from agent.ingest.trace import read_trace
from hil.benchconfig import BENCH, ROOT, bench_config
from tests.helpers import wait_until
from tests.live_agent import Agent

DATA = Path(__file__).resolve().parent / "data"
DRIVE = DATA / "drive.toml"
# The monitor records the drive gives (icv-agent analyze over its trace), in order.
EXPECTED = ["cda.activated", "safety.aeb", "safety.fcw", "cda.deactivated"]
# What the monitors report about the drive (not the agent's own bookkeeping).
MONITOR_PREFIXES = ("cda.", "safety.", "driver.", "accident.", "selfcheck.")
# A VM under software emulation is slow: generous waits, never a timing assertion.
SLOW = 120.0
# What the monitors report about signals coming and going (kernel timeouts on BCM).
FRESHNESS_PREFIXES = ("signal.",)


def write_config(tmp: Path, channel: str = "vcan0", *, fd: bool = False,
                 name: str = "agent.toml", receive: str = "bcm", rcvbuf: int | None = None,
                 state: str = "state") -> Path:
    """config/bench.toml on SocketCAN ``channel``, state in ``tmp/state``, health every
    0.5 s, receiving through the broadcast manager (the default) or raw."""
    # min_timeout_s: a replayer in an emulated CPU on a loaded host stalls for far more
    # than 3 x a 10 ms cycle; such a stall would be a real gap, but not the one tested.
    lines = [f"fd = {'true' if fd else 'false'}", f'receive = "{receive}"',
             "reconnect_min_s = 0.2", "reconnect_max_s = 1.0", "min_timeout_s = 2.0"]
    if rcvbuf is not None:
        lines.append(f"rcvbuf_bytes = {rcvbuf}")
    return bench_config(tmp / name, interface="socketcan", channel=channel,
                        bus_lines="\n".join(lines), state_dir=tmp / state,
                        extra="[health]\ninterval_s = 0.5\n")


@contextmanager
def running_agent(cfg: Path) -> Iterator[Agent]:
    """``icv-agent run`` until the block ends, then SIGTERM; it must stop cleanly."""
    agent = Agent(cfg).start()
    try:
        assert agent.wait_running(SLOW), f"agent did not start:\n{agent.log_text()}"
        yield agent
        assert agent.proc is not None and agent.proc.poll() is None, \
            f"agent died:\n{agent.log_text()}"
        assert agent.stop(signal.SIGTERM, timeout=SLOW) == 0, agent.log_text()
    finally:
        agent.kill()


def _query(state_dir: Path, sql: str) -> list[dict[str, Any]]:
    db = state_dir / "state.db"
    if not db.exists():
        return []
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(sql).fetchall()
    except sqlite3.OperationalError:       # tables not created yet
        return []
    finally:
        con.close()
    return [json.loads(p) for (p,) in rows]


def records_of(state_dir: Path, type_: str) -> list[dict[str, Any]]:
    return _query(state_dir, f"SELECT payload FROM outbox WHERE type = '{type_}' ORDER BY seq")


def records(state_dir: Path) -> list[dict[str, Any]]:
    """Every record in the journal, in sequence order (no uplink: nothing leaves)."""
    return _query(state_dir, "SELECT payload FROM outbox ORDER BY seq")


def health(state_dir: Path, bus: str = "chassis") -> dict[str, Any] | None:
    """Counters of ``bus`` in the latest agent.health record."""
    last = _query(state_dir, "SELECT payload FROM outbox WHERE type = 'agent.health' "
                             "ORDER BY seq DESC LIMIT 1")
    return last[0]["data"]["counters"]["buses"][bus] if last else None


def wait_counters(state_dir: Path, predicate: Any, what: str, timeout: float = SLOW
                  ) -> dict[str, Any]:
    """The first health counters for which ``predicate`` holds (polled gently: the VM has
    two slow CPUs, and the agent needs one of them). Waiting is for a count, never for
    the agent to keep up with a clock: every test asserts exact counts after it."""
    seen: list[dict[str, Any]] = []

    def check() -> bool:
        c = health(state_dir)
        if c is not None:
            seen[:] = [c]
        return c is not None and bool(predicate(c))

    assert wait_until(check, timeout, every=1.0), f"{what}: last counters {seen}"
    return seen[0]


def monitor_records(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in recs if r["type"].startswith(MONITOR_PREFIXES)]


def freshness_records(recs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """signal.stale / signal.restored, in a fixed order (several messages can time out
    in one instant, and the two receive paths report them in their own order)."""
    return sorted((r for r in recs if r["type"].startswith(FRESHNESS_PREFIXES)),
                  key=lambda r: (r["type"], r["data"]["signal"]))


def trace_ids(trace: Path) -> set[int]:
    return {m.arbitration_id for m in read_trace(trace)}


def wait_replayed(state_dir: Path, frames: int, ids: int, silences_before: int = 0,
                  timeout: float = SLOW) -> dict[str, Any]:
    """Health counters once the agent has taken all ``frames`` of a replay of ``ids``
    mapped messages. Raw: every frame read or counted as dropped. BCM: the kernel counted
    every frame, and every message went silent after the replay ended (the kernel's notices
    come in order, so nothing before those silences is still queued)."""
    def done(c: dict[str, Any]) -> bool:
        if c["receive"] == "raw":
            return c["received"] + c["dropped"] >= frames
        return c["bus_frames"] >= frames and c["silences"] >= silences_before + ids

    return wait_counters(state_dir, done, f"all {frames} frames of {ids} messages taken",
                         timeout)


def kernel_receivers(channel: str) -> list[tuple[int, int, int, str]]:
    """(can_id, mask, matches, ident) of every filtered receiver the kernel holds for
    ``channel``; ident is "raw", "isotp", "bcm", ... Single-id receivers live in the
    kernel's per-id lists (rcvlist_sff / _eff), masked ones in rcvlist_fil."""
    out = []
    for name in ("rcvlist_fil", "rcvlist_sff", "rcvlist_eff"):
        for line in Path(f"/proc/net/can/{name}").read_text().splitlines():
            parts = line.split()
            if len(parts) == 7 and parts[0] == channel:
                out.append((int(parts[1], 16), int(parts[2], 16), int(parts[5]), parts[6]))
    return out


def cansend(channel: str, *frames: str) -> None:
    for frame in frames:
        subprocess.run(["cansend", channel, frame], check=True, capture_output=True,
                       timeout=SLOW)


def ip_link(*args: str) -> None:
    proc = subprocess.run(["ip", "link", *args], capture_output=True, text=True, timeout=SLOW)
    assert proc.returncode == 0, f"ip link {' '.join(args)}: {proc.stderr}"


def make_trace(tmp: Path, scenario: Path = DRIVE) -> Path:
    """The scenario as a candump .log on channel "icv-bench" (the bench config's)."""
    trace = tmp / "drive.log"
    proc = subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(scenario),
                           "--config", str(BENCH), "-o", str(trace)],
                          cwd=ROOT, capture_output=True, text=True, timeout=SLOW)
    assert proc.returncode == 0, proc.stderr
    return trace


def analyze(cfg: Path, *traces: Path) -> list[dict[str, Any]]:
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--config", str(cfg),
                           *map(str, traces)], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


@contextmanager
def candump_log(tmp: Path, channel: str) -> Iterator[list[Path]]:
    """``candump -l CHANNEL`` in ``tmp`` while the block runs; yields [the log file]."""
    before = set(tmp.glob("candump-*.log"))
    proc = subprocess.Popen(["candump", "-l", channel], cwd=tmp,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out: list[Path] = []
    try:
        assert wait_until(lambda: set(tmp.glob("candump-*.log")) - before or
                          proc.poll() is not None, 30), "candump wrote no log file"
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield out
    finally:
        proc.send_signal(signal.SIGINT)      # candump flushes and closes its log on SIGINT
        proc.wait(30)
    out[:] = sorted(set(tmp.glob("candump-*.log")) - before)


def same_value(a: Any, b: Any, tol: float = 0.05) -> bool:
    """Equal; numbers within ``tol`` (relative or absolute) and timestamps within ``tol`` s.

    The live agent moves each frame's kernel timestamp onto the monotonic clock; the
    offline run reads the same kernel timestamp from the candump log. The two differ by
    the microseconds between two clock reads, which can show in the last digit."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_value(a[k], b[k], tol) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same_value(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return abs(a - b) <= max(tol, tol * max(abs(a), abs(b)))
    if isinstance(a, str) and isinstance(b, str) and a != b:
        try:
            ta = datetime.fromisoformat(a.replace("Z", "+00:00"))
            tb = datetime.fromisoformat(b.replace("Z", "+00:00"))
        except ValueError:
            return False
        return abs((ta - tb).total_seconds()) <= tol
    return a == b


def same_facts(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same record data apart from what depends on when frames hit the bus: wall-clock
    instants and float figures (durations, integrals). A replay in an emulated CPU is late
    by up to a few hundred ms; compare exact timing against a candump of the same run."""
    if a.keys() != b.keys():
        return False
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, dict) and isinstance(y, dict):
            if not same_facts(x, y):
                return False
        elif k != "start" and not isinstance(x, float) and x != y:
            return False
    return True


def send_until(state_dir: Path, channel: str, predicate: Any, what: str,
               timeout: float = SLOW) -> dict[str, Any]:
    """Send ESP_VehSpd frames with fresh payloads, like a live bus keeps sending, until
    ``predicate(counters)`` holds; a frame sent while the agent reopens its socket is
    lost on a real bus too."""
    end = time.monotonic() + timeout
    i = 0
    while True:
        i += 1
        cansend(channel, f"125#{(0x100000 + i).to_bytes(8, 'big').hex().upper()}")
        try:
            return wait_counters(state_dir, predicate, what, timeout=3.0)
        except AssertionError:
            if time.monotonic() > end:
                raise
