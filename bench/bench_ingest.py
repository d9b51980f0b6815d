"""Ingest speed: the agent's pipeline next to a plain cantools decode loop, same frames.

Figures (same trace for both sides):
  offline   plain ``db.decode_message`` loop   vs  the analyze pipeline (all monitors,
            signed records into an in-memory journal); CPU, best of N, same process
  command   ``icv-agent analyze`` end to end   vs  a plain script: LogReader + decode;
            wall time, best of N
  live      python-can ``recv`` + decode loop  vs  the real agent service
            (``Service(cfg).run()``, as ``icv-agent run``: one bus, polled by the pipeline
            thread, housekeeping every 50 ms), each in its own process with the trace
            played into it on python-can's virtual bus, in real time and in one burst; CPU
            of the receiving thread over the replay window, idle housekeeping included;
            median of N runs

``--breakdown`` times each piece of the live loop per call; ``--profile`` adds one more
agent run under cProfile and prints its hot spots (why a target is missed).
"""

from __future__ import annotations

import argparse
import json
import platform
import pstats
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

from common import AgentChild, fmt_runs, median, replay_realtime, thread_cpu_s  # noqa: E402

from agent import config as agent_config  # noqa: E402
from agent.analyze import offline_recorder  # noqa: E402
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
    # --lenient: the steps after the shortened duration are dropped on purpose
    subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(path), "-c", str(CONFIG),
                    "-o", str(trace), "--lenient"], cwd=ROOT, check=True, capture_output=True)
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


def live_baseline(trace: Path, dbc: Path, settle: float, idle: float, tail: float,
                  speed: float) -> dict[str, float]:
    """Child process: a plain ``recv`` + ``decode_message`` loop in the main thread while a
    second thread plays the trace in real time; the main thread's CPU over the window."""
    db = cantools.database.load_file(str(dbc))
    frames = list(can.LogReader(str(trace)))
    rx = can.Bus(interface="virtual", channel="bench-live-plain")
    tx = can.Bus(interface="virtual", channel="bench-live-plain")
    main = threading.main_thread().ident
    assert main is not None
    stop = threading.Event()
    out: dict[str, float] = {}

    def sender() -> None:
        time.sleep(settle)
        c0 = thread_cpu_s(main)
        time.sleep(idle)
        c1 = thread_cpu_s(main)
        wall = replay_realtime(tx, frames, speed)
        time.sleep(tail)
        c2 = thread_cpu_s(main)
        out.update(idle_s=idle, idle_cpu_s=c1 - c0, replay_wall_s=wall,
                   window_s=wall + tail, window_cpu_s=c2 - c1, frames_sent=len(frames))
        stop.set()

    th = threading.Thread(target=sender, daemon=True)
    th.start()
    decode = db.decode_message
    n = 0
    while not stop.is_set():
        m = rx.recv(0.5)
        if m is None:
            continue
        n += 1
        try:
            decode(m.arbitration_id, m.data)
        except KeyError:
            pass
    th.join()
    out["received"] = n
    rx.shutdown()
    tx.shutdown()
    return out


def live(trace: Path, runs: int, tmp: Path, *, idle: float, speed: float,
         profile: Path | None) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Baseline loop and the real agent service (``Service(cfg).run()``, one bus: the
    pipeline thread polls it itself), each in its own process, the trace played into each
    in real time on python-can's virtual bus; CPU of the receiving thread only."""
    # A Python sender on a shared host misses 30 ms deadlines now and then; a real bus does
    # not. Freshness timeouts of at least 250 ms keep such jitter from turning into
    # signal.stale / restored records (and their signing and commits) that a vehicle would
    # not cause (bench_rss does the same).
    cfg = bench_config(tmp / "live.toml", channel="bench-live-agent", state_dir=tmp / "state",
                       bus_lines="min_timeout_s = 0.25")
    base_cfg = agent_config.load(CONFIG)
    dbc = base_cfg.resolve(base_cfg.buses[0].config.dbc[0])
    window = ["--settle", "1", "--idle", f"{idle:g}", "--tail", "1", "--speed", f"{speed:g}"]
    results = []
    for i in range(runs + (profile is not None)):
        if i == runs:  # one more agent run, profiled: not in the figures
            assert profile is not None
            agent = AgentChild(cfg, tmp, name="live-profile",
                               extra=["--replay", str(trace), *window, "--profile", str(profile)])
            agent.wait_ready()
            agent.stop(timeout=3600, terminate=False)
            break
        base = subprocess.Popen(
            [sys.executable, __file__, "--role", "live-baseline", "--trace", str(trace),
             "--dbc", str(dbc), "--idle", f"{idle:g}", "--speed", f"{speed:g}"],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        agent = AgentChild(cfg, tmp, name=f"live-{i}", extra=["--replay", str(trace), *window])
        agent.wait_ready()
        report = agent.stop(timeout=3600, terminate=False)
        out, _ = base.communicate(timeout=3600)
        if base.returncode != 0:
            raise RuntimeError("live baseline failed")
        results.append((json.loads(out.splitlines()[-1]), report))
    return results


def breakdown(frames: list[can.Message], tmp: Path) -> None:
    """What one frame costs in each piece of the live loop (virtual bus, this process,
    best of 5, µs per call), so a hot spot can be pinned on a piece of code."""
    from agent.service.service import Service

    cfg_path = bench_config(tmp / "breakdown.toml", channel="bench-breakdown",
                            state_dir=tmp / "breakdown-state", bus_lines="min_timeout_s = 0.25")
    cfg = agent_config.load(cfg_path)
    db = cantools.database.load_file(str(cfg.resolve(cfg.buses[0].config.dbc[0])))
    n = len(frames)
    rows: list[tuple[str, float]] = []

    def timed(label: str, fn: Any, count: int, setup: Any = None) -> float:
        best_s = float("inf")
        for _ in range(5):
            if setup is not None:
                setup()
            t0 = time.perf_counter()
            fn()
            best_s = min(best_s, time.perf_counter() - t0)
        rows.append((label, 1e6 * best_s / count))
        return 1e6 * best_s / count

    tx = can.Bus(interface="virtual", channel="bench-breakdown")
    plain = can.Bus(interface="virtual", channel="bench-breakdown")
    service = Service(cfg)
    link = service.inline
    assert link is not None
    link.poll(0.0)                     # opens the agent's bus on the same channel
    service.pipeline.start(time.monotonic())

    def fill() -> None:
        for m in frames:
            tx.send(m)

    def recv_all() -> None:
        recv = plain.recv
        for _ in range(n):
            recv(0.0)

    def poll_all() -> None:
        poll = link.poll
        for _ in range(n):
            poll(0.0)

    def empty_recv() -> None:
        recv = plain.recv
        for _ in range(n):
            recv(0.0)

    def empty_poll() -> None:
        poll = link.poll
        for _ in range(n):
            poll(0.0)

    def drain() -> None:
        while plain.recv(0.0) is not None:
            pass
        while link.poll(0.0) is not None:
            pass

    def decode_all() -> None:
        decode = db.decode_message
        for m in frames:
            decode(m.arbitration_id, m.data)

    t_feed = [time.monotonic()]

    def feed_all() -> None:
        feed = service.pipeline.feed
        t = t_feed[0]
        for m in frames:
            t += 0.0015
            feed(0, m, t)
        t_feed[0] = t

    def housekeeping() -> None:
        for _ in range(200):
            service._housekeeping(time.monotonic())

    timed("python-can `recv(0)`, frame waiting (both loops)", recv_all, n, fill)
    drain()
    timed("`BusLink.poll(0)`, frame waiting (agent)", poll_all, n, fill)
    drain()
    timed("python-can `recv(0)`, nothing waiting", empty_recv, n)
    timed("`BusLink.poll(0)`, nothing waiting (the agent's 2nd call per frame)", empty_poll, n)
    timed("`decode_message` (baseline, every frame)", decode_all, n)
    timed("`Pipeline.feed` (agent, trace mix: 91 % skipped)", feed_all, n)
    timed("`Service._housekeeping`, idle (every 50 ms)", housekeeping, 200)
    service.pipeline.stop()
    link.close()
    service.db.close()
    tx.shutdown()
    plain.shutdown()
    print("\nwhere the live loop's time goes (µs per call, this process, best of 5):\n")
    print("| piece | µs |")
    print("|---|---|")
    for label, us in rows:
        print(f"| {label} | {us:.2f} |")


def print_profile(path: Path, top: int = 18) -> None:
    """The hottest functions of the running loop by own time (cProfile inflates small
    calls; read the shares, not the microseconds)."""
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    print(f"\ncProfile of the service thread, replay window (total own time {total:.2f} s)\n")
    print("| function | calls | own s | own % | cumulative s |")
    print("|---|---|---|---|---|")
    for (file, line, name), (_cc, ncalls, tt, ct, _callers) in rows:
        where = f"{Path(file).name}:{line} {name}" if line else name
        for prefix in (str(ROOT) + "/", sys.prefix + "/"):
            if file.startswith(prefix):
                where = f"{file[len(prefix):]}:{line} {name}"
        print(f"| `{where}` | {ncalls} | {tt:.3f} | {100 * tt / total:.1f} | {ct:.3f} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=60.0, help="trace length")
    ap.add_argument("--live-seconds", type=float, default=20.0,
                    help="trace length for the live part (played in real time)")
    ap.add_argument("--idle", type=float, default=5.0,
                    help="live: seconds of no traffic measured before the replay")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("offline", "live"), help="one part only")
    ap.add_argument("--profile", type=Path, help="live: also profile one agent run (pstats)")
    ap.add_argument("--breakdown", action="store_true",
                    help="live: also time each piece of the loop per frame")
    ap.add_argument("--role", choices=("live-baseline",), help=argparse.SUPPRESS)
    ap.add_argument("--trace", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--dbc", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--speed", type=float, default=1.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        out = live_baseline(args.trace, args.dbc, 1.0, args.idle, 1.0, args.speed)
        print(json.dumps(out), flush=True)
        return 0
    cfg = agent_config.load(CONFIG)
    print(f"# ingest benchmark — {platform.machine()} {platform.processor() or ''}"
          f" Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        if args.only != "live":
            trace = make_trace(tmp, args.seconds)
            frames = list(can.LogReader(str(trace)))
            n = len(frames)
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
        if args.only != "offline":
            (tmp / "live").mkdir()
            live_trace = make_trace(tmp / "live", args.live_seconds)
            results = live(live_trace, args.runs, tmp, idle=args.idle, speed=1.0,
                           profile=args.profile)
            print_live(results, args.live_seconds, args.idle, "played in real time")
            burst = live(live_trace, args.runs, tmp, idle=0.0, speed=0.0, profile=None)
            print_live(burst, args.live_seconds, 0.0, "sent in one burst (frames queue up)")
            if args.breakdown:
                breakdown(list(can.LogReader(str(live_trace))), tmp)
    if args.profile is not None:
        print_profile(args.profile)
    return 0


def print_live(results: list[tuple[dict[str, Any], dict[str, Any]]], seconds: float,
               idle: float, how: str) -> None:
    n = results[0][0]["frames_sent"]
    base = [b["window_cpu_s"] / n for b, _ in results]
    ours = [a["window_cpu_s"] / n for _, a in results]
    ratio = [a / b for a, b in zip(ours, base, strict=True)]
    idle_rate = [a["idle_cpu_s"] / a["idle_s"] for _, a in results] if idle else []
    window = median([a["window_s"] for _, a in results])
    print(f"\nlive on python-can's virtual bus: {seconds:g} s of the drive, {n} frames, "
          f"{how} ({window:.1f} s window incl. 1 s tail); median (runs)\n")
    print("| receiver | frames read | CPU per bus frame µs |")
    print("|---|---|---|")
    print(f"| `recv` + `decode_message` loop (baseline) | {results[0][0]['received']} | "
          f"{fmt_runs(base, 1e6, 2)} |")
    bus = next(iter(results[0][1]["buses"].values()))
    print(f"| agent: `Service(cfg).run()` (`icv-agent run`) | {bus['received']} | "
          f"{fmt_runs(ours, 1e6, 2)} |")
    print(f"\nagent / baseline: {fmt_runs(ratio, 1, 2)}")
    if idle_rate:
        share = median(idle_rate) * window / (median(ours) * n)
        print(f"agent idle (no traffic, {idle:g} s before the replay): "
              f"{fmt_runs(idle_rate, 1e3, 2)} ms CPU per s; over the window that is "
              f"{100 * share:.0f} % of the agent's figure")
        b_idle = [b["idle_cpu_s"] / b["idle_s"] for b, _ in results]
        print(f"baseline idle: {fmt_runs(b_idle, 1e3, 3)} ms CPU per s")


if __name__ == "__main__":
    sys.exit(main())
