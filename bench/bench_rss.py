"""Memory: peak RSS of ``icv-agent run`` during a drive, next to what any program pays that
merely imports python-can and cantools (the floor of a Python CAN tool), same run.

    python3 bench/bench_rss.py [--speed 3]
"""

from __future__ import annotations

import argparse
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.benchconfig import bench_config  # noqa: E402


def peak_rss(proc: subprocess.Popen, stop: threading.Event, out: list[float]) -> None:
    p = psutil.Process(proc.pid)
    peak = 0
    while not stop.is_set() and proc.poll() is None:
        try:
            peak = max(peak, p.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    out.append(peak / 2**20)


def floor_rss() -> float:
    code = ("import can, cantools, psutil, sys; "
            "print(psutil.Process().memory_info().rss / 2**20)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--speed", type=float, default=3.0)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        group = "239.74.163.201"
        cfg = bench_config(tmp / "agent.toml", interface="udp_multicast", channel=group,
                           bus_lines=f"options = {{ port = {port} }}\nmin_timeout_s = 0.25")
        trace = tmp / "drive.log"
        subprocess.run([sys.executable, "-m", "hil.cli", "scenario",
                        str(ROOT / "hil" / "scenarios" / "drive.toml"), "-c", str(cfg), "-o",
                        str(trace)], check=True, capture_output=True, cwd=ROOT)
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "-c", str(cfg)],
                                 cwd=ROOT, stderr=subprocess.DEVNULL)
        stop = threading.Event()
        peak: list[float] = []
        watcher = threading.Thread(target=peak_rss, args=(agent, stop, peak))
        watcher.start()
        time.sleep(3)
        subprocess.run([sys.executable, "-m", "hil.cli", "replay", str(trace), "-i",
                        "udp_multicast", "-C", group, "-O", f"port={port}", "--speed",
                        str(args.speed), "-q"], check=True, capture_output=True, cwd=ROOT)
        time.sleep(1)
        stop.set()
        watcher.join()
        agent.terminate()
        agent.wait(20)
    base = floor_rss()
    print(f"# memory — {platform.machine()}, Python {platform.python_version()}, "
          f"{time.strftime('%Y-%m-%d')}\n")
    print("| process | RSS MB |")
    print("|---|---|")
    print(f"| `python -c 'import can, cantools, psutil'` (floor) | {base:.1f} |")
    print(f"| `icv-agent run`, peak during the 45 s drive at x{args.speed:g} | {peak[0]:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
