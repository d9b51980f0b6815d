"""The agent service exactly as ``icv-agent run`` runs it (agent.service.cli.run_cmd:
StopRequest, config, ``Service(cfg).run()``, logging as under systemd), in a process of
its own, for benchmarks that must measure the real loop and not a stand-in.

On a clean stop it prints one JSON line on stdout: the bus and decoder counters (read
without the refresh that would overwrite the kernel's frame count after the close), the
records written, and, with ``--replay``, the CPU time of the service thread over the
replay window.

``--replay TRACE`` is for python-can's ``virtual`` bus, which exists only inside one
process: once the service is ready, a second thread plays the trace onto the configured
channel in real time, and the pipeline thread's own CPU clock is read at the window's
edges (the sender thread's CPU is not in the figure). ``--profile OUT`` runs cProfile on
the pipeline thread from READY=1 to the stop (a profile of the running loop only).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import replay_realtime, thread_cpu_s  # noqa: E402

from agent.cli import setup_logging  # noqa: E402
from agent.service.notify import Notifier  # noqa: E402
from agent.service.service import StopRequest  # noqa: E402


class HookNotifier(Notifier):
    """The real notifier (NOTIFY_SOCKET from the environment), telling this process too
    when the service is ready and when it starts stopping."""

    def __init__(self, profile: cProfile.Profile | None):
        super().__init__()
        self.ready_at = threading.Event()
        self.profile = profile

    def ready(self, status: str) -> None:
        super().ready(status)
        if self.profile is not None:   # called on the pipeline thread: profiles that one
            self.profile.enable()
        self.ready_at.set()

    def stopping(self, status: str = "stopping") -> None:
        if self.profile is not None:
            self.profile.disable()
        super().stopping(status)


def replay_thread(service: Any, notifier: HookNotifier, trace: Path, args: argparse.Namespace,
                  report: dict[str, Any]) -> None:
    import can

    frames = list(can.LogReader(str(trace)))
    tx = can.Bus(interface="virtual", channel=service.cfg.buses[0].config.channel)
    main = threading.main_thread().ident
    assert main is not None
    notifier.ready_at.wait()
    time.sleep(args.settle)
    c0 = thread_cpu_s(main)
    time.sleep(args.idle)
    c1 = thread_cpu_s(main)
    wall = replay_realtime(tx, frames, args.speed)
    time.sleep(args.tail)
    c2 = thread_cpu_s(main)
    report.update(idle_s=args.idle, idle_cpu_s=c1 - c0, replay_wall_s=wall,
                  window_s=wall + args.tail, window_cpu_s=c2 - c1, frames_sent=len(frames))
    tx.shutdown()
    service.request_stop("bench")


def counters(service: Any) -> dict[str, Any]:
    buses = {}
    for link, dec in zip(service.links, service.pipeline.decoders, strict=True):
        buses[link.setup.name] = {**link.counters.as_dict(), **dec.counters.as_dict(),
                                  "receive": link.setup.config.receive}
    return {"buses": buses, "frames_fed": service.frames_fed,
            "records": dict(service.recorder.counts)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--replay", type=Path, help="virtual bus: play this trace once ready")
    ap.add_argument("--speed", type=float, default=1.0)
    ap.add_argument("--settle", type=float, default=1.0, help="s after READY=1, not measured")
    ap.add_argument("--idle", type=float, default=0.0, help="s of idle measured before it")
    ap.add_argument("--tail", type=float, default=1.0, help="s after the replay, measured")
    ap.add_argument("--profile", type=Path, help="cProfile of the running loop (pstats)")
    ap.add_argument("--modules", type=Path, help="write sys.modules at the stop (JSON)")
    ap.add_argument("--housekeeping-s", type=float,
                    help="what-if experiments only: patch the loop's wait and housekeeping "
                         "period (agent.service.service IDLE_WAIT_S, HOUSEKEEPING_S)")
    args = ap.parse_args()

    stop = StopRequest().install()          # as run_cmd: before the slow imports
    setup_logging(0)                        # as under systemd: warnings and errors only
    from agent.check_config import load_config_or_exit
    from agent.service.service import Service

    if args.housekeeping_s is not None:
        import agent.service.service as service_module

        service_module.IDLE_WAIT_S = service_module.HOUSEKEEPING_S = args.housekeeping_s
    cfg = load_config_or_exit(args.config)
    if cfg is None:
        return 2
    # CPU time of this thread, not wall time: the loop mostly waits in select/queue.get.
    profile = cProfile.Profile(time.thread_time) if args.profile else None
    notifier = HookNotifier(profile)
    service = Service(cfg, notifier=notifier, stop=stop)
    report: dict[str, Any] = {}
    sender = None
    if args.replay:
        sender = threading.Thread(target=replay_thread, daemon=True,
                                  args=(service, notifier, args.replay, args, report))
        sender.start()
    service.run()
    if sender is not None:
        sender.join(5.0)
    if profile is not None:
        profile.dump_stats(str(args.profile))
    if args.modules:
        args.modules.write_text(json.dumps(list(sys.modules)))
    report.update(counters(service))
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
