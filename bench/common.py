"""What the benchmarks share: precise CPU time of another process, medians, and the real
agent service started as a child process the way systemd starts it.

CPU time of a child is read from outside through its process CPU clock
(``clock_gettime`` on the clock id Linux derives from the pid: nanoseconds, all threads),
so the window can start after the child's imports and setup and end before its shutdown.
``/proc/PID/stat`` (what psutil reads) counts in 10 ms ticks: too coarse for an idle agent.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CHILD = Path(__file__).resolve().parent / "service_child.py"
# What systemd passes with the unit's WatchdogSec=30s (systemd/icv-agent.service).
WATCHDOG_USEC = "30000000"


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads)."""
    clock = ((~pid) << 3) | 2            # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)
    try:
        return time.clock_gettime(clock)
    except OSError:
        import psutil

        t = psutil.Process(pid).cpu_times()
        return t.user + t.system


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_runs(values: Sequence[float], scale: float = 1.0, digits: int = 1) -> str:
    """``median (a / b / c)``: every run next to the median, so the noise shows."""
    runs = " / ".join(f"{v * scale:.{digits}f}" for v in values)
    return f"{median(values) * scale:.{digits}f} ({runs})" if len(values) > 1 else runs


class NotifyListener:
    """The ``NOTIFY_SOCKET`` systemd would give the agent: READY=1 marks the start of
    the measurement window (the agent logs "running:" right after sending it)."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.ready = threading.Event()
        self.messages: list[str] = []
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            text = data.decode("utf-8", "replace")
            self.messages.append(text)
            if "READY=1" in text.split("\n"):
                self.ready.set()

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)


class AgentChild:
    """``bench/service_child.py`` (the service exactly as ``icv-agent run`` runs it) in
    its own process, under a systemd-like environment (notify socket, watchdog)."""

    def __init__(self, config: Path, tmp: Path, *, name: str = "agent",
                 extra: Sequence[str] = ()):
        self.name = name
        self.notify = NotifyListener(tmp / f"notify-{name}-{time.monotonic_ns()}")
        env = {**os.environ, "NOTIFY_SOCKET": str(self.notify.path),
               "WATCHDOG_USEC": WATCHDOG_USEC}
        self.proc = subprocess.Popen(
            [sys.executable, str(CHILD), "--config", str(config), *extra],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 300.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.notify.ready.wait(0.2):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                _, err = self.proc.communicate(timeout=10)
                raise RuntimeError(f"{self.name}: no READY=1 (exit {self.proc.returncode}):"
                                   f"\n{err[-3000:]}")

    def cpu_s(self) -> float:
        return process_cpu_s(self.proc.pid)

    def stop(self, timeout: float = 120.0, *, terminate: bool = True) -> dict[str, Any]:
        """SIGTERM (a clean stop, as systemd does; ``terminate=False``: wait for the child
        to stop itself); the child's JSON report."""
        if terminate and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=timeout)
        self.notify.close()
        if self.proc.returncode != 0:
            raise RuntimeError(f"{self.name}: exit {self.proc.returncode}:\n{err[-3000:]}")
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if not lines:
            raise RuntimeError(f"{self.name}: no report on stdout:\n{err[-3000:]}")
        report: dict[str, Any] = json.loads(lines[-1])
        report["stderr"] = err
        return report


def replace_once(text: str, old: str, new: str) -> str:
    """``str.replace`` that fails loudly when a config template changed under us."""
    if old not in text:
        raise ValueError(f"{old!r} not in the config template")
    return text.replace(old, new, 1)


def thread_cpu_s(ident: int) -> float:
    """CPU seconds of thread ``ident`` (a ``threading`` ident) of this process so far."""
    return time.clock_gettime(time.pthread_getcpuclockid(ident))


def replay_realtime(bus: Any, frames: list[Any], speed: float = 1.0) -> float:
    """Send ``frames`` at their trace times (``speed`` x; 0: as fast as possible, a burst
    that queues up in the receiver); returns the wall time taken."""
    if not frames:
        return 0.0
    t0 = frames[0].timestamp
    start = time.perf_counter()
    if speed <= 0:
        for msg in frames:
            bus.send(msg)
        return time.perf_counter() - start
    for msg in frames:
        due = start + (msg.timestamp - t0) / speed
        wait = due - time.perf_counter()
        if wait > 0.0005:
            time.sleep(wait)
        bus.send(msg)
    return time.perf_counter() - start
