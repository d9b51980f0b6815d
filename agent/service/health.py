"""``agent.health``: what the unit itself looks like (psutil) and what the agent counted."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import psutil


def system_figures(state_dir: Path, proc: psutil.Process) -> dict[str, Any]:
    with proc.oneshot():
        mem = proc.memory_info()
        cpu_times = proc.cpu_times()
    figures: dict[str, Any] = {
        "cpu_percent": proc.cpu_percent(None),
        "cpu_user_s": round(cpu_times.user, 2),
        "cpu_system_s": round(cpu_times.system, 2),
        "rss_mb": round(mem.rss / 2**20, 2),
        "threads": proc.num_threads(),
        "load_1m": round(os.getloadavg()[0], 2),
    }
    try:
        disk = psutil.disk_usage(str(state_dir))
        figures["state_disk_free_mb"] = round(disk.free / 2**20, 1)
        figures["state_disk_used_percent"] = disk.percent
    except OSError:
        figures["state_disk_free_mb"] = None
    temps: dict[str, float] = {}
    sensors = getattr(psutil, "sensors_temperatures", None)
    if sensors is not None:
        try:
            for chip, entries in (sensors() or {}).items():
                for i, entry in enumerate(entries):
                    temps[f"{chip}.{entry.label or i}"] = entry.current
        except (OSError, RuntimeError):
            pass
    figures["temperatures_c"] = temps
    return figures
