"""Idle cost: CPU per second of ``icv-agent run`` on a silent bus, i.e. what housekeeping
alone (freshness, ticks, commands, health, watchdog: every 50 ms) costs a gateway.

The real service (``bench/service_child.py``) runs in its own process under a
systemd-like environment (notify socket, WatchdogSec=30s); its CPU time is read from
outside over ``--seconds`` after READY=1 and a settling pause. Buses: python-can's
``virtual`` bus everywhere; SocketCAN (receive = "raw" and "bcm") where vcan0 exists,
e.g. in the vcan VM (``python -m hil.vcan_vm run -- python bench/bench_idle.py``).
Floors for comparison: processes that only wait, 20 and 2 times a second (what a bare
wake-up costs here). ``--profile DIR`` also writes a cProfile of each idle loop (pstats).
"""

from __future__ import annotations

import argparse
import platform
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import AgentChild, fmt_runs, process_cpu_s, replace_once  # noqa: E402

from hil.benchconfig import bench_config  # noqa: E402


def configs(tmp: Path) -> dict[str, Path]:
    out = {"virtual": bench_config(tmp / "virtual" / "agent.toml", channel="bench-idle",
                                   state_dir=tmp / "virtual" / "state")}
    if Path("/sys/class/net/vcan0").exists():
        for mode in ("raw", "bcm"):
            path = bench_config(tmp / mode / "agent.toml", interface="socketcan",
                                channel="vcan0", state_dir=tmp / mode / "state")
            text = replace_once(path.read_text(), 'channel = "vcan0"',
                                f'channel = "vcan0"\nreceive = "{mode}"')
            path.write_text(text)
            out[f"socketcan {mode}"] = path
    return out


def measure(cfg: Path, tmp: Path, seconds: float, settle: float, profile: Path | None
            ) -> float:
    extra = ["--profile", str(profile)] if profile is not None else []
    child = AgentChild(cfg, tmp, name=cfg.parent.name, extra=extra)
    try:
        child.wait_ready()
        time.sleep(settle)
        c0 = child.cpu_s()
        time.sleep(seconds)
        c1 = child.cpu_s()
    finally:
        child.stop()
    return (c1 - c0) / seconds


FLOORS = {
    "select(timeout=0.05) loop (20 wake-ups/s, as the agent's idle loop)":
        "import select\nwhile True: select.select([], [], [], 0.05)",
    "queue.get(timeout=0.05) loop (20/s, the wait of python-can's virtual bus)":
        "import queue\nq = queue.Queue()\nwhile True:\n    try: q.get(timeout=0.05)\n"
        "    except queue.Empty: pass",
    "select(timeout=0.5) loop (2/s, the baseline receivers' recv(0.5))":
        "import select\nwhile True: select.select([], [], [], 0.5)",
}


def floor(code: str, seconds: float, settle: float) -> float:
    """CPU per second of a process that does nothing but wait with a timeout: what one
    wake-up costs on this machine, times the wake-ups per second."""
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(settle)
        c0 = process_cpu_s(proc.pid)
        time.sleep(seconds)
        c1 = process_cpu_s(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return (c1 - c0) / seconds


def print_profile(path: Path, top: int = 12) -> None:
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda kv: kv[1][3], reverse=True)[:top]
    print(f"\n{path.name}: own time {total:.3f} s in all; by cumulative time\n")
    print("| function | calls | cumulative s | % of loop |")
    print("|---|---|---|---|")
    for (file, line, name), (_cc, ncalls, _tt, ct, _callers) in rows:
        where = f"{Path(file).name}:{line} {name}" if line else name
        print(f"| `{where}` | {ncalls} | {ct:.3f} | {100 * ct / total:.0f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--settle", type=float, default=2.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--profile", type=Path, help="also profile one idle run per bus here")
    args = ap.parse_args()
    print(f"# idle agent — {platform.machine()}, kernel {platform.release()}, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}\n")
    print(f"`icv-agent run` (the real service), no traffic, {args.seconds:g} s window after "
          f"READY=1 + {args.settle:g} s; median (runs)\n")
    print("| bus | CPU ms per s | % of one core |")
    print("|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        profiles = []
        for name, cfg in configs(tmp).items():
            rates = [measure(cfg, tmp, args.seconds, args.settle, None)
                     for _ in range(args.runs)]
            print(f"| {name} | {fmt_runs(rates, 1e3, 2)} | "
                  f"{fmt_runs(rates, 100, 2)} |", flush=True)
            if args.profile is not None:
                args.profile.mkdir(parents=True, exist_ok=True)
                out = args.profile / f"idle-{name.replace(' ', '-')}.prof"
                measure(cfg, tmp, args.seconds, args.settle, out)
                profiles.append(out)
        for label, code in FLOORS.items():
            rates = [floor(code, args.seconds, args.settle) for _ in range(args.runs)]
            print(f"| floor: {label} | {fmt_runs(rates, 1e3, 2)} | "
                  f"{fmt_runs(rates, 100, 2)} |", flush=True)
        for out in profiles:
            print_profile(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
