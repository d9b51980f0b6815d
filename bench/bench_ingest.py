"""Ingest speed: the agent's pipeline next to a plain cantools decode loop, same frames.

Figures (CPU time, best of N runs, same process, same trace):
  offline   plain ``db.decode_message`` loop   vs  the analyze pipeline (all monitors,
            signed records into an in-memory journal)
  command   ``icv-agent analyze`` end to end   vs  a plain script: LogReader + decode
  live      python-can ``recv`` + decode loop  vs  the agent's pipeline thread polling the
            bus (one bus: no reader thread) on python-can's virtual bus (thread CPU time of
            the receiving side only)
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import can
import cantools

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent import config as agent_config  # noqa: E402
from agent.ingest.buses import BusLink  # noqa: E402
from agent.ingest.cli import offline_recorder  # noqa: E402
from agent.monitors import ALL  # noqa: E402
from agent.pipeline import Pipeline, TimeBase  # noqa: E402
from hil.benchconfig import bench_config  # noqa: E402

CONFIG = ROOT / "config" / "bench.toml"


def make_trace(tmp: Path, seconds: float) -> Path:
    sc = (ROOT / "hil" / "scenarios" / "demo.toml").read_text()
    sc = sc.replace("duration = 140.0", f"duration = {seconds}")
    path = tmp / "ingest.toml"
    path.write_text(sc)
    trace = tmp / "ingest.log"
    subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(path), "-c", str(CONFIG),
                    "-o", str(trace)], cwd=ROOT, check=True, capture_output=True)
    return trace


def best(fn: Any, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def offline(cfg: agent_config.AgentConfig, frames: list[can.Message], runs: int
            ) -> tuple[float, float]:
    db = cantools.database.load_file(str(cfg.resolve(cfg.buses[0].config.dbc[0])))

    def plain() -> None:
        decode = db.decode_message
        for m in frames:
            decode(m.arbitration_id, m.data)

    def agent() -> None:
        tb = TimeBase("trace")
        with open("/dev/null", "w") as out:
            rec = offline_recorder(cfg, cfg.key_path, tb, out)
            p = Pipeline(cfg, rec, tb, ALL)
            feed = p.feed
            for m in frames:
                feed(0, m, m.timestamp)
            p.stop()

    return best(plain, runs), best(agent, runs)


def command(trace: Path, runs: int) -> tuple[float, float]:
    plain_script = (
        "import can, cantools, sys\n"
        f"db = cantools.database.load_file({str(ROOT / 'dbc' / 'icv_reference.dbc')!r})\n"
        "for m in can.LogReader(sys.argv[1]):\n"
        "    try: db.decode_message(m.arbitration_id, m.data)\n"
        "    except KeyError: pass\n")

    def timed(args: list[str]) -> float:
        out = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(args, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
            out.append(time.perf_counter() - t0)
        return min(out)

    return (timed([sys.executable, "-c", plain_script, str(trace)]),
            timed([sys.executable, "-m", "agent.cli", "analyze", "-c", str(CONFIG),
                   str(trace)]))


def live(cfg: agent_config.AgentConfig, frames: list[can.Message]) -> tuple[float, float]:
    db = cantools.database.load_file(str(cfg.resolve(cfg.buses[0].config.dbc[0])))
    n = len(frames)

    def send_all(channel: str) -> None:
        tx = can.Bus(interface="virtual", channel=channel)
        for m in frames:
            tx.send(m)
        tx.shutdown()

    # baseline: one thread, recv + decode_message
    channel = "bench-live-plain"
    rx = can.Bus(interface="virtual", channel=channel)
    send_all(channel)
    cpu = [0.0]

    def plain() -> None:
        t0 = time.thread_time()
        decode = db.decode_message
        for _ in range(n):
            m = rx.recv(1.0)
            decode(m.arbitration_id, m.data)
        cpu[0] = time.thread_time() - t0

    th = threading.Thread(target=plain)
    th.start()
    th.join()
    rx.shutdown()
    baseline = cpu[0]

    # agent, one bus (the service's default): the pipeline thread polls the bus itself
    with tempfile.TemporaryDirectory() as tmp:
        path = bench_config(Path(tmp) / "live.toml", channel="bench-live-agent",
                            state_dir=ROOT / ".state" / "bench")
        lcfg = agent_config.load(path)
    link = BusLink(lcfg.buses[0])
    link.poll(0.0)  # opens the bus
    send_all("bench-live-agent")
    agent_cpu = [0.0]

    def pipeline() -> None:
        tb = TimeBase("system")
        with open("/dev/null", "w") as out:
            rec = offline_recorder(lcfg, lcfg.key_path, tb, out)
            rec.time_source = "system"
            p = Pipeline(lcfg, rec, tb, ALL)
            poll, feed = link.poll, p.feed
            t0 = time.thread_time()
            got = 0
            while got < n:
                item = poll(1.0)
                if item is None:
                    break
                feed(0, item[0], item[1])
                got += 1
            agent_cpu[0] = time.thread_time() - t0

    th = threading.Thread(target=pipeline)
    th.start()
    th.join()
    link.close()
    return baseline, agent_cpu[0]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="trace length")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    cfg = agent_config.load(CONFIG)
    with tempfile.TemporaryDirectory() as tmp:
        trace = make_trace(Path(tmp), args.seconds)
        frames = list(can.LogReader(str(trace)))
        n = len(frames)
        print(f"# ingest benchmark — {platform.machine()} {platform.processor() or ''}"
              f" Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
        print(f"trace: {args.seconds:g} s reference drive, {n} frames\n")
        plain, agent = offline(cfg, frames, args.runs)
        print("| path | baseline | agent | agent / baseline |")
        print("|---|---|---|---|")
        print(f"| offline, CPU per frame | decode loop {1e6 * plain / n:.2f} µs "
              f"({n / plain:,.0f} fr/s) | pipeline {1e6 * agent / n:.2f} µs "
              f"({n / agent:,.0f} fr/s) | {agent / plain:.2f} |")
        c_plain, c_agent = command(trace, args.runs)
        print(f"| `analyze` command, wall | LogReader + decode script {c_plain:.2f} s | "
              f"`icv-agent analyze` {c_agent:.2f} s | {c_agent / c_plain:.2f} |")
        l_plain, l_agent = live(cfg, frames)
        print(f"| live, receive-side CPU per frame | recv + decode {1e6 * l_plain / n:.2f} µs |"
              f" BusLink.poll + pipeline {1e6 * l_agent / n:.2f} µs | {l_agent / l_plain:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
