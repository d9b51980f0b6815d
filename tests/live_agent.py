"""Run ``icv-agent run`` as a real process on a udp_multicast bus, for end-to-end tests."""

from __future__ import annotations

import itertools
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

from hil.benchconfig import bench_config
from hil.benchconfig import uplink_section as bench_uplink
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"
_groups = itertools.count(10)


def multicast_group() -> str:
    """A multicast group of its own per test (and per test process). Linux delivers a
    group's datagrams to every socket on the port (IP_MULTICAST_ALL), so each test also
    gets its own port: see ``bus_port``."""
    return f"239.74.{100 + os.getpid() % 100}.{next(_groups) % 250}"


def bus_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PORTS: dict[str, int] = {}


def port_of(group: str) -> int:
    if group not in PORTS:
        PORTS[group] = bus_port()
    return PORTS[group]


def write_config(tmp: Path, group: str, extra: str = "") -> Path:
    return bench_config(tmp / "agent.toml", interface="udp_multicast", channel=group,
                        bus_lines=f"options = {{ port = {port_of(group)} }}\n"
                                  "min_timeout_s = 0.25", extra=extra)


def uplink_section(broker: Any, cert: Any, *, backend_key: Path | None = None) -> str:
    return bench_uplink(broker.host, broker.port, cert, backend_key=backend_key)


class Agent:
    def __init__(self, config: Path, env: dict[str, str] | None = None):
        self.config = config
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = config.parent / "agent.log"
        self._log_offset = 0

    def start(self) -> Agent:
        self._log_offset = self.log.stat().st_size if self.log.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "agent.cli", "-v", "run", "--config", str(self.config)],
            cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL,
            stderr=open(self.log, "ab"))  # noqa: SIM115
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def wait_running(self, timeout: float = 30.0) -> bool:
        """Until the service says its buses are open (the log line before READY=1)."""
        return wait_until(lambda: "running:" in self.log_text()[self._log_offset:], timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def replay(trace: Path, group: str, speed: float = 1.0) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hil.cli", "replay", str(trace),
                           "--interface", "udp_multicast", "--channel", group,
                           "-O", f"port={port_of(group)}", "--speed", str(speed), "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def make_trace(tmp: Path, scenario: Path | None = None) -> Path:
    scenario = scenario or ROOT / "hil" / "scenarios" / "drive.toml"
    trace = tmp / "drive.log"
    subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(scenario), "--config",
                    str(BENCH), "-o", str(trace)], cwd=ROOT, check=True, capture_output=True)
    return trace


def vehicle_keys(config: Path, vin: str) -> Path:
    """``icv-agent keys generate`` for ``config``, and a folder of pinned vehicle keys
    (``<VIN>.pem``) holding it, as the bench backend takes them."""
    subprocess.run([sys.executable, "-m", "agent.cli", "keys", "generate", "--config",
                    str(config)], check=True, capture_output=True, cwd=ROOT)
    folder = config.parent / "vehicle-keys"
    folder.mkdir(exist_ok=True)
    (folder / f"{vin}.pem").write_bytes((config.parent / "state" / "device.key").read_bytes())
    return folder


def chain_state(state_dir: Path) -> dict[str, Any]:
    import json

    con = sqlite3.connect(state_dir / "state.db")
    try:
        row = con.execute("SELECT value FROM kv WHERE key='chain'").fetchone()
        return json.loads(row[0]) if row else {}
    finally:
        con.close()



__all__ = ["Agent", "chain_state", "make_trace", "multicast_group", "replay", "signal",
           "uplink_section", "wait_until", "write_config"]
