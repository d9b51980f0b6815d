"""Live ingest on a real SocketCAN bus with realistic traffic, for the CPU targets.

A vehicle bus carries far more than the agent maps: here the MG DBC's mapped messages
(the drive scenario through the MG mapping) plus every other MG message at 20 ms with
random payloads. Every frame of a mapped message differs from the one before it, as on a
vehicle: the scenario tool advances the alive counters, this script computes the
checksum signals (CRC-8 SAE J1850 over the rest of the payload) and, in a message whose
DBC has no counter, writes a 4-bit rolling counter into bits no signal uses. So nothing is
saved by identical frames; only the mapped bits decide what the agent must look at.

Receivers, each in its own process, alone on vcan0 while can-utils' ``canplayer`` plays
the trace in real time (one replay per receiver, the order rotating per run; medians):

  baseline  python-can ``recv`` + ``cantools.decode_message`` of every frame
  raw       the real agent (``Service(cfg).run()``, as ``icv-agent run``), receive = "raw":
            kernel acceptance filters for the mapped ids, every such frame read in Python
  bcm       the same agent with receive = "bcm": broadcast-manager content filters on the
            mapped bits, receive timeouts instead of freshness polling

Each process's CPU time (user + system, all threads, read from outside through its CPU
clock) is taken over the window from the start of the replay to 0.5 s after its end (before
the 1 s receive timeouts of the end of the trace), i.e. after READY=1 ("running:") and
before the shutdown; the agents' idle housekeeping in that window is part of the figure.
Before the replay an idle window (no traffic) gives each receiver's idle cost per second.
The figure is CPU per frame on the bus; run it where SocketCAN and vcan0 exist:

  python -m hil.vcan_vm run --timing --timeout 1500 -- python bench/bench_socketcan.py

(the VM emulates its CPU: absolute times are ~15x a real core, the ratios are the figure).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psutil  # noqa: E402
from common import AgentChild, fmt_runs, median, process_cpu_s, replace_once  # noqa: E402

CHANNEL = "vcan0"
SKIP = 77                   # run_all: "not here", not a failure
CHECKSUM = re.compile(r"(chksm|checksum|crc)", re.I)
RECEIVERS = ("baseline", "raw", "bcm")
# --what-if: the bcm agent with its loop's wait and housekeeping period patched to 0.5 s in
# the child (not the agent as shipped: its 50 ms monitor ticks come late), to show what the
# idle wake-ups cost.
WHAT_IF = "bcm-hk0.5"
RCVBUF = 1 << 20
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def mg_config(path: Path, receive: str, state: Path) -> Path:
    text = (ROOT / "config" / "mg.toml").read_text()
    text = text.replace('"../dbc/', f'"{ROOT}/dbc/')
    text = replace_once(text, 'channel = "can0"',
                        f'channel = "{CHANNEL}"\nreceive = "{receive}"')
    text = replace_once(text, 'dir = "/var/lib/icv-agent"', f'dir = "{state}"')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def crc8_j1850(data: bytes) -> int:
    crc = 0xFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1D) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc ^ 0xFF


class Liveliness:
    """What makes every frame of one mapped message differ from the previous one."""

    def __init__(self, plan: Any):
        from agent.ingest.dbc import mask_of
        from hil.trace.encode import COUNTER

        msg = plan.message
        self.length = n = plan.length
        mapped = {b.dbc_signal for b in plan.bindings}
        others = [s for s in msg.signals if s.name not in mapped]
        self.counters = [s.name for s in others if COUNTER.search(s.name)]
        self.checksums = [s for s in others if CHECKSUM.search(s.name)]
        self.checksum_mask = mask_of(self.checksums, n)
        used = mask_of(list(msg.signals), n)
        self.free_bits = [i for i in range(8 * n) if not used >> i & 1][:4]
        self.added_counter = not self.counters and len(self.free_bits) == 4
        self.tick = 0

    def apply(self, data: bytes) -> bytes:
        from agent.ingest.dbc import value_bits

        n = self.length
        word = int.from_bytes(data[:n], "big")
        if self.added_counter:
            for j, bit in enumerate(self.free_bits):
                word = word & ~(1 << bit) | ((self.tick >> j & 1) << bit)
        self.tick += 1
        if self.checksums:
            word &= ~self.checksum_mask
            crc = crc8_j1850(word.to_bytes(n, "big"))
            for sig in self.checksums:
                word |= value_bits(sig, crc & ((1 << sig.length) - 1), n)
        return word.to_bytes(n, "big") + data[n:]


def make_trace(tmp: Path, cfg_path: Path, seconds: float
               ) -> tuple[Path, int, int, list[dict[str, Any]]]:
    """Mapped messages from the drive scenario (counters, checksums) plus all unmapped MG
    messages at 20 ms with random payloads; and, per mapped message, how lively it is."""
    import can

    from agent import config as agent_config

    sc = (ROOT / "hil" / "scenarios" / "drive.toml").read_text()
    sc = replace_once(sc, "duration = 45.0", f"duration = {seconds}")
    (tmp / "drive.toml").write_text(sc)
    mapped_trace = tmp / "mapped.log"
    # --lenient: the steps after the shortened duration are dropped on purpose
    subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(tmp / "drive.toml"),
                    "-c", str(cfg_path), "-o", str(mapped_trace), "--lenient"], check=True,
                   cwd=ROOT, capture_output=True)
    cfg = agent_config.load(cfg_path)
    setup = cfg.buses[0]
    db = setup.dbs[0]
    plans = {p.message.frame_id: p for p in setup.plans.values()}
    lively = {fid: Liveliness(p) for fid, p in plans.items()}
    frames = list(can.LogReader(str(mapped_trace)))
    for m in frames:
        if m.arbitration_id in lively:
            m.data = bytearray(lively[m.arbitration_id].apply(bytes(m.data)))
    start = frames[0].timestamp
    rng = random.Random(1)
    background = 0
    for msg in db.messages:
        if msg.frame_id in plans:
            continue
        t = start + rng.random() * 0.02
        while t < start + seconds:
            frames.append(can.Message(timestamp=t, arbitration_id=msg.frame_id,
                                      is_extended_id=msg.is_extended_frame,
                                      data=rng.randbytes(msg.length), channel=CHANNEL))
            background += 1
            t += 0.02
    frames.sort(key=lambda m: m.timestamp)
    out = tmp / "bus.log"
    with can.Logger(str(out)) as log:
        for m in frames:
            m.channel = CHANNEL
            log.on_message_received(m)
    return out, len(frames) - background, background, check_trace(out, plans, lively)


def check_trace(trace: Path, plans: dict[int, Any], lively: dict[int, Liveliness]
                ) -> list[dict[str, Any]]:
    """Per mapped message, read back from the trace file: frames, cycle, share of frames
    unlike their predecessor, and how many changed a mapped bit (what BCM passes on)."""
    import can

    last: dict[int, tuple[bytes, float]] = {}
    rows = {fid: {"frames": 0, "differ": 0, "mapped_changes": 0, "gaps": []}
            for fid in plans}
    for m in can.LogReader(str(trace)):
        plan = plans.get(m.arbitration_id)
        if plan is None:
            continue
        row = rows[m.arbitration_id]
        data = bytes(m.data)
        row["frames"] += 1
        prev = last.get(m.arbitration_id)
        if prev is not None:
            row["gaps"].append(m.timestamp - prev[1])
            row["differ"] += data != prev[0]
            n = plan.length
            if (int.from_bytes(data[:n], "big") ^ int.from_bytes(prev[0][:n], "big")) \
                    & plan.mask:
                row["mapped_changes"] += 1
        last[m.arbitration_id] = (data, m.timestamp)
    out = []
    for fid, row in rows.items():
        live = lively[fid]
        out.append({
            "id": fid, "name": plans[fid].message.name, "frames": row["frames"],
            "cycle_ms": 1e3 * statistics.median(row["gaps"]) if row["gaps"] else None,
            "counter": ", ".join(live.counters) or ("4 free bits (added)"
                                                    if live.added_counter else "none"),
            "checksum": ", ".join(s.name for s in live.checksums) or "—",
            "differ_pct": 100 * row["differ"] / max(row["frames"] - 1, 1),
            "mapped_changes": row["mapped_changes"]})
    return out


def baseline_child(dbc: Path) -> int:
    """Receiver process: plain recv + decode of every frame until SIGTERM; prints the
    number of frames it read."""
    import can
    import cantools

    stop = [False]

    def on_term(_signum: int, _frame: Any) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    db = cantools.database.load_file(str(dbc), strict=False)
    bus = can.Bus(interface="socketcan", channel=CHANNEL)
    try:  # the agent's default receive buffer (rcvbuf_bytes = 1 MiB), so both queue alike
        bus.socket.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, RCVBUF)
    except OSError:
        bus.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    decode = db.decode_message
    print("ready", flush=True)
    n = 0
    while not stop[0]:
        msg = bus.recv(0.5)
        if msg is None:
            continue
        n += 1
        try:
            decode(msg.arbitration_id, msg.data)
        except Exception:
            pass
    bus.shutdown()
    print(json.dumps({"received": n}), flush=True)
    return 0


def run_receiver(role: str, run_dir: Path, trace: Path, dbc: Path, args: argparse.Namespace,
                 profile: Path | None = None) -> dict[str, Any]:
    """One receiver alone on the bus through one replay: its process CPU over the idle
    window and over the replay window. With ``profile`` an agent runs under cProfile (for
    hot spots, not for figures)."""
    if role == "baseline":
        proc = subprocess.Popen([sys.executable, __file__, "--role", "baseline", "--dbc",
                                 str(dbc)], stdout=subprocess.PIPE, text=True, cwd=ROOT)
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError("baseline receiver did not start")
        pid = proc.pid
    else:
        mode = "bcm" if role == WHAT_IF else role
        extra = ["--profile", str(profile / f"{role}.prof")] if profile else []
        if role == WHAT_IF:
            extra += ["--housekeeping-s", "0.5"]
        agent = AgentChild(
            mg_config(run_dir / role / "mg.toml", mode, run_dir / role / "state"), run_dir,
            name=role, extra=extra)
        agent.wait_ready()
        pid = agent.pid
    try:
        time.sleep(args.settle)
        c0 = process_cpu_s(pid)
        time.sleep(args.idle)
        c1 = process_cpu_s(pid)
        s1 = psutil.Process(pid).cpu_times().system
        t0 = time.perf_counter()
        subprocess.run(["canplayer", "-I", str(trace), f"{CHANNEL}={CHANNEL}"], check=True)
        wall = time.perf_counter() - t0
        time.sleep(args.tail)
        c2 = process_cpu_s(pid)
        s2 = psutil.Process(pid).cpu_times().system
    finally:
        if role == "baseline":
            proc.send_signal(signal.SIGTERM)
            out, _ = proc.communicate(timeout=120)
            result = json.loads(out.splitlines()[-1])
        else:
            result = agent.stop()
            result.pop("stderr", None)
            result.update(next(iter(result["buses"].values())))
    result.update(idle_cpu_s=c1 - c0, window_cpu_s=c2 - c1, window_sys_s=s2 - s1,
                  window_s=wall + args.tail,
                  replay_wall_s=wall)
    return result


def receivers(args: argparse.Namespace) -> tuple[str, ...]:
    return RECEIVERS + ((WHAT_IF,) if args.what_if else ())


def one_run(i: int, tmp: Path, trace: Path, dbc: Path, args: argparse.Namespace
            ) -> dict[str, dict[str, Any]]:
    """Each receiver alone through its own replay, in an order that rotates per run:
    the VM has 2 vCPUs, and three receivers at once starved the baseline until the kernel
    dropped its frames."""
    roles = receivers(args)
    k = i % len(roles)
    order = roles[k:] + roles[:k]
    reports = {r: run_receiver(r, tmp / f"run{i}", trace, dbc, args) for r in order}
    print(f"run {i + 1}: " + ", ".join(f"{r} {reports[r]['window_cpu_s']:.3f} s"
                                       for r in roles), file=sys.stderr, flush=True)
    return reports


def report(runs: list[dict[str, dict[str, Any]]], checks: list[dict[str, Any]], mapped: int,
           background: int, args: argparse.Namespace) -> None:
    total = mapped + background
    print(f"# live ingest on SocketCAN — {platform.machine()}, kernel {platform.release()}, "
          f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}, "
          f"{len(runs)} run(s)\n")
    print(f"bus: {total} frames in {args.seconds:g} s ({mapped} of the "
          f"{len(checks)} mapped MG messages, {background} = "
          f"{100 * background / total:.0f} % of the unmapped rest); canplayer took "
          f"{median([r['baseline']['replay_wall_s'] for r in runs]):.1f} s; window = replay "
          f"+ {args.tail:g} s\n")
    print("Mapped messages in the trace (read back from the file):\n")
    print("| id | message | frames | cycle ms | alive counter | checksum "
          "| frames unlike the previous | mapped-bit changes |")
    print("|---|---|---|---|---|---|---|---|")
    for c in checks:
        cycle = f"{c['cycle_ms']:.0f}" if c["cycle_ms"] is not None else "—"
        print(f"| 0x{c['id']:X} | {c['name']} | {c['frames']} | {cycle} | {c['counter']} | "
              f"{c['checksum']} | {c['differ_pct']:.0f} % | {c['mapped_changes']} |")
    roles = receivers(args)
    cpu = {r: [run[r]["window_cpu_s"] / total for run in runs] for r in roles}
    print("\n| receiver | frames (notices) reaching Python | CPU per bus frame µs "
          "| / baseline | of it kernel | idle CPU ms/s |")
    print("|---|---|---|---|---|---|")
    names = {"baseline": "`recv` + `decode_message` of every frame (baseline)",
             "raw": "agent, receive = \"raw\" (`icv-agent run`)",
             "bcm": "agent, receive = \"bcm\" (`icv-agent run`)",
             WHAT_IF: "what-if: bcm agent, loop wait and housekeeping 0.5 s instead of 50 ms"}
    for r in roles:
        last = runs[-1][r]
        if r == "baseline":
            lost = [total - run[r]["received"] for run in runs]
            reached = f"{last['received']}" + (f" (**fell behind: {max(lost)} dropped in "
                                                f"a run**)" if max(lost) > 0 else "")
        elif r == "raw":
            reached = f"{last['received']} (dropped {last['dropped']})"
        else:
            reached = (f"{last['received']} changes + {last['silences']} timeouts "
                       f"(kernel saw {last['bus_frames']} mapped frames; dropped "
                       f"{last['dropped']})")
        ratio = [a / b for a, b in zip(cpu[r], cpu["baseline"], strict=True)]
        idle = [run[r]["idle_cpu_s"] / args.idle for run in runs] if args.idle else []
        kernel = median([run[r].get("window_sys_s", float("nan")) / run[r]["window_cpu_s"]
                         for run in runs])
        print(f"| {names[r]} | {reached} | {fmt_runs(cpu[r], 1e6, 1)} | "
              f"{fmt_runs(ratio, 1, 3) if r != 'baseline' else '1'} | {100 * kernel:.0f} % | "
              f"{fmt_runs(idle, 1e3, 2) if idle else '—'} |")
    for r in roles[1:]:
        recs = [run[r]["records"] for run in runs]
        print(f"\n{r}: records written per run: "
              + " / ".join(str(sum(x.values())) for x in recs) + " (signal.stale: "
              + " / ".join(str(x.get("signal.stale", 0)) for x in recs) + ")", end="")
    for r in roles[1:]:
        ratio = median([a / b for a, b in zip(cpu[r], cpu["baseline"], strict=True)])
        share = (median([run[r]["idle_cpu_s"] for run in runs]) / args.idle
                 * median([run[r]["window_s"] for run in runs])
                 / median([run[r]["window_cpu_s"] for run in runs])) if args.idle else 0.0
        print(f"\n{r} / baseline: {ratio:.3f} (1/{1 / ratio:.0f}); idle housekeeping at the "
              f"idle rate would be {100 * share:.0f} % of its window CPU")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0, help="trace length")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--idle", type=float, default=10.0,
                    help="seconds of no traffic measured before each replay")
    ap.add_argument("--settle", type=float, default=2.0, help=argparse.SUPPRESS)
    # Under the 1 s freshness timeout of the MG messages: the silence after the end of the
    # trace (stale records for every signal: ignition off, not driving) stays outside.
    ap.add_argument("--tail", type=float, default=0.5, help=argparse.SUPPRESS)
    ap.add_argument("--json", type=Path, help="also write every run's figures here")
    ap.add_argument("--what-if", action="store_true",
                    help="also the bcm agent with housekeeping every 0.5 s (not as shipped)")
    ap.add_argument("--profile", type=Path,
                    help="one more run with both agents under cProfile (pstats files here)")
    ap.add_argument("--role", choices=("baseline",), help=argparse.SUPPRESS)
    ap.add_argument("--dbc", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role:
        return baseline_child(args.dbc)
    if not Path(f"/sys/class/net/{CHANNEL}").exists():
        print(f"bench_socketcan: skipped, no {CHANNEL} here (no CAN in this kernel?). Run it "
              "in the vcan VM: python -m hil.vcan_vm run --timing --timeout 1500 -- "
              "python bench/bench_socketcan.py")
        return SKIP
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cfg_path = mg_config(tmp / "mg.toml", "bcm", tmp / "state")
        trace, mapped, background, checks = make_trace(tmp, cfg_path, args.seconds)
        dbc = ROOT / "dbc" / "mg.dbc"
        runs = [one_run(i, tmp, trace, dbc, args) for i in range(args.runs)]
        if args.profile is not None:
            args.profile.mkdir(parents=True, exist_ok=True)
            for mode in ("raw", "bcm"):
                run_receiver(mode, tmp / "profile", trace, dbc, args, profile=args.profile)
    if args.json:
        args.json.write_text(json.dumps({"runs": runs, "checks": checks, "mapped": mapped,
                                         "background": background}, indent=1))
    if runs:
        report(runs, checks, mapped, background, args)
    if args.profile is not None:
        for mode in ("raw", "bcm"):
            print_profile(args.profile / f"{mode}.prof", f"receive = \"{mode}\"")
    return 0


def print_profile(path: Path, title: str, top: int = 15) -> None:
    """Top functions by own CPU time of one agent's pipeline thread, READY=1 to stop
    (idle and replay windows); cProfile's own overhead inflates small calls."""
    import pstats

    entries = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values()) or 1.0
    print(f"\ncProfile, {title}: {total:.2f} s own time in all\n")
    print("| function | calls | own s | own % | cumulative s |")
    print("|---|---|---|---|---|")
    rows = sorted(entries.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    for (file, line, name), (_cc, ncalls, tt, ct, _callers) in rows:
        where = f"{Path(file).name}:{line} {name}" if line else name
        print(f"| `{where}` | {ncalls} | {tt:.3f} | {100 * tt / total:.1f} | {ct:.3f} |")


if __name__ == "__main__":
    sys.exit(main())
