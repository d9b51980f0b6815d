"""Small things several suites share: sample record data per type, waiting, scaled test
timings, and reading a child process's output with a deadline."""

from __future__ import annotations

import os
import queue
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

# ``data`` of a plausible record per type (schema-valid), for journal/uplink/backend tests.
SAMPLE: dict[str, dict[str, Any]] = {
    "accident.trigger": {"trigger": "airbag", "cda_in_use_5s": True, "cda_in_use_30s": True,
                         "speed": 42.0, "location": None,
                         "report_deadline": "2025-01-02T00:00:00.000Z"},
    "accident.record": {"samples": []},
    "safety.aeb": {"speed": 30.0, "cda_state": "ACTIVE", "duration_s": 1.2},
    "ecu.versions": {"ecu": "brake", "dids": {"F189": "1.0"}},
    "stats.period": {"period": "2025Q1"},
    "agent.health": {"cpu": 1.0},
}

TIME_SCALE_ENV = "ICV_TEST_TIME_SCALE"


def wait_until(predicate: Any, timeout: float, every: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())


def time_scale() -> float:
    """The factor of ``scaled``: ``$ICV_TEST_TIME_SCALE``, 1.0 when unset or empty."""
    raw = os.environ.get(TIME_SCALE_ENV, "").strip()
    if not raw:
        return 1.0
    try:
        factor = float(raw)
    except ValueError:
        raise ValueError(f"{TIME_SCALE_ENV}={raw!r}: expected a number such as 3") from None
    if not factor >= 1.0:
        raise ValueError(f"{TIME_SCALE_ENV}={raw!r}: must be >= 1 (it only slows tests down)")
    return factor


def scaled(seconds: float) -> float:
    """``seconds`` times the test time scale: the one knob for protocol timings in tests.

    Every UDS / ISO-TP timing a test configures goes through here: the tester's P2 and
    P2*, step budgets, retry waits and TesterPresent period, and the virtual ECU's side of
    it (P2/P2* it grants, S3, erase/boot times, fault delays, NRC 0x78 cadence and offline
    times), including the values written into ECU TOML files for other processes. They all
    grow by one factor, so the ratios the tests rely on (an answer later than P2, a pause
    longer than S3, a storm longer than its budget) stay what they were.

    The factor is the environment variable ``ICV_TEST_TIME_SCALE``: unset (1.0) on a normal
    machine; a slow or loaded one runs ``ICV_TEST_TIME_SCALE=3 make test``. It is read at
    each call, must be >= 1, and also lengthens the waits that tests derive from these
    timings. Counts (blocks, retries, 0x78 answers) are never scaled.
    """
    return seconds * time_scale()


def scaled_ms(ms: float, resolution: int = 1) -> int:
    """``scaled`` for integer milliseconds (the virtual ECU's ``p2_ms``/``p2_star_ms``),
    rounded up to a multiple of ``resolution`` (10 for P2*, which travels in 10 ms units)."""
    value = ms * time_scale()
    return int(-(-value // resolution) * resolution)


class ChildLines:
    """The stdout lines of a child process, read by a thread so waits can have deadlines.

    ``wait_for(predicate, timeout)`` returns the first new line for which ``predicate`` is
    true; when the deadline passes or the child's stdout ends first it fails the test with
    a message saying what was read (the line count and the last lines). The caller still
    ends the child; ``close()`` then joins the reader and collects the rest in ``lines``.
    """

    def __init__(self, proc: subprocess.Popen[str], name: str = "child"):
        if proc.stdout is None:
            raise ValueError("the child needs stdout=subprocess.PIPE")
        self.proc = proc
        self.name = name
        self.lines: list[str] = []
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._eof = False
        self._thread = threading.Thread(target=self._read, daemon=True,
                                        name=f"stdout-of-{name}")
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self._queue.put(line.rstrip("\n"))
        except (OSError, ValueError):        # the pipe was closed under us
            pass
        finally:
            self._queue.put(None)

    def _what_was_read(self) -> str:
        tail = "\n".join(f"    {line}" for line in self.lines[-15:]) or "    (nothing)"
        return f"{len(self.lines)} line(s) read from {self.name}; the last ones:\n{tail}"

    def wait_for(self, predicate: Callable[[str], bool], timeout: float,
                 what: str = "the expected line") -> str:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if self._eof or left <= 0:
                break
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self._eof = True
                break
            self.lines.append(line)
            try:
                if predicate(line):
                    return line
            except ValueError as exc:
                raise AssertionError(f"{self.name} printed {line!r} while waiting for "
                                     f"{what}: {exc}\n{self._what_was_read()}") from None
        if self._eof:
            code = self.proc.poll()
            raise AssertionError(f"{self.name} closed its stdout (exit code {code}) before "
                                 f"{what}\n{self._what_was_read()}")
        raise AssertionError(f"no {what} from {self.name} within {timeout:.1f} s\n"
                             f"{self._what_was_read()}")

    def close(self, timeout: float = 5.0) -> None:
        """After the child ended: join the reader and add what it read since the last wait
        to ``lines``."""
        self._thread.join(timeout)
        while not self._eof:
            try:
                line = self._queue.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._eof = True
            else:
                self.lines.append(line)
        if not self._thread.is_alive() and self.proc.stdout is not None:
            self.proc.stdout.close()


def feed_trace(pipeline: Any, cfg: Any, trace: Any) -> float:
    """Every frame of ``trace`` through ``pipeline`` on its trace time, as ``analyze``
    does, then the input ends; returns the last frame's time."""
    from agent.ingest.trace import ChannelRouter, read_trace

    router = ChannelRouter(cfg.buses)
    last = None
    for msg in read_trace(trace):
        idx = router.route(msg.channel)
        if idx is not None:
            last = msg.timestamp
            pipeline.feed(idx, msg, last)
    assert last is not None, f"{trace}: no frame for the configured buses"
    pipeline.advance(last)
    pipeline.stop(last)
    return last


def shipped_scenarios() -> list[Any]:
    """Every scenario the project ships: tests/scenarios, hil/scenarios, the vcan drive."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    return sorted([*(root / "tests" / "scenarios").glob("*.toml"),
                   *(root / "hil" / "scenarios").glob("*.toml"),
                   *(root / "tests" / "vcan" / "data").glob("*.toml")])


def run_scenario(path: Any, tmp: Any) -> RecordingSink:
    """Scenario -> trace (``icv-hil scenario``) -> every monitor, as ``analyze`` runs them;
    the records and state in a ``RecordingSink``."""
    from pathlib import Path

    from agent import config as agent_config
    from agent.monitors import ALL
    from agent.pipeline import Pipeline, TimeBase
    from hil.trace.scenario import generate, load_scenario

    root = Path(__file__).resolve().parents[1]
    sc = load_scenario(path)
    cfg = agent_config.load(root / "config" / f"{sc.config}.toml")
    trace = Path(tmp) / f"{Path(path).stem}.log"
    generate(cfg, sc, trace)
    sink = RecordingSink()
    feed_trace(Pipeline(cfg, sink, TimeBase("trace"), ALL), cfg, trace)
    return sink


class RecordingSink:
    """A pipeline sink that keeps records and persisted state in memory (no chain, no
    journal): what a suite needs to look at the monitors alone."""

    def __init__(self) -> None:
        self.records: list[tuple[str, dict[str, Any], float]] = []
        self.state: dict[str, Any] = {}

    def record(self, type_: str, data: dict[str, Any], t: float) -> None:
        self.records.append((type_, data, t))

    def persist(self, key: str, value: Any) -> None:
        self.state[key] = value

    def load(self, key: str, default: Any = None) -> Any:
        return self.state.get(key, default)

    def flush(self) -> None:
        pass
