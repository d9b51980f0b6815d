"""UDS flash throughput: 1 MiB through FlashSession to a VirtualEcu over python-can's
in-process ``virtual`` bus, classic CAN (8-byte frames) and CAN FD (64-byte frames).

The virtual bus has no wire timing, so the figures show what Python costs (the ceiling of
the software), printed next to what the wire allows:
  classic CAN 500 kbit/s, ISO-TP payload ~31.5 kB/s; CAN FD 2 Mbit/s data phase ~188 kB/s.
CPU is split by thread (psutil): the tester's (the flash thread and its CAN notifier, what
the agent spends) and the virtual ECU's (its server thread and notifier); both run in this
process. Each recipe of ``config/ecu/`` is flashed: the bench sequence and the strict
ISO 14229-1 bootloader (``bcm.toml``, functional 85/28, check-memory routine).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import can
import isotp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.ota.settings import EcuConfig  # noqa: E402
from agent.ota.uds import FlashSession  # noqa: E402
from agent.ota.uds.image import build_image  # noqa: E402
from hil.ecu_sim import (  # noqa: E402
    SimConfig,
    VirtualEcu,
    VirtualEcuConfig,
    load_sim_config,
)

WIRE_CLASSIC_500K = 31.5e3      # bytes/s of ISO-TP payload
WIRE_FD_2M = 188e3
NEW = {0xF189: "2.0.0"}
IDENTITY = {"F189": "1.0.0", "F191": "HW-1"}


def thread_times() -> dict[int, float]:
    """CPU seconds (user + system) per native thread id, from the kernel's counters."""
    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


def ecu_threads(server: VirtualEcu, notifier: can.Notifier) -> set[int]:
    """The virtual ECU's threads: its server loop, notifier and its ISO-TP stacks'."""
    threads = [server._thread, *notifier._readers]
    for stack in vars(server).values():
        if isinstance(stack, isotp.TransportLayer):
            threads += [stack.main_thread, stack.relay_thread]
    return {t.native_id for t in threads if t.native_id is not None}


def flash_once(image: Path, recipe: str, fd: bool, block: int) -> dict[str, float]:
    channel = f"bench-{uuid.uuid4().hex}"
    tester = can.Bus(interface="virtual", channel=channel)
    ecu_bus = can.Bus(interface="virtual", channel=channel)
    base = load_sim_config(ROOT / "config" / "ecu" / "bcm.toml")
    ecu = EcuConfig(name="bench", txid=0x7E0, rxid=0x7E8, security_secret=os.urandom(16).hex(),
                    key_algorithm="aes128-cmac", memory_address=base.ecu.memory_address,
                    memory_size=2 * 1024 * 1024, exit_crc32=recipe == "bench",
                    can_fd=fd, tx_data_length=64 if fd else 8, max_block_length=block,
                    p2_s=0.2)
    sim = SimConfig(p2_ms=200, erase_s=0.0, dependency_s=0.0, boot_s=0.02,
                    max_block_length=block)
    if recipe == "strict":
        ecu = dataclasses.replace(ecu, flash=base.ecu.flash, after=base.ecu.after,
                                  tester_present_functional=True)
        sim = dataclasses.replace(base.sim, p2_ms=200, erase_s=0.0, dependency_s=0.0,
                                  check_memory_s=0.0, session_switch_s=0.0, boot_s=0.02,
                                  max_block_length=block)
    # Each side reads the bus in a notifier thread of its own.
    tester_notifier = can.Notifier(tester, [], timeout=0.1)
    ecu_notifier = can.Notifier(ecu_bus, [], timeout=0.1)
    server = VirtualEcu(VirtualEcuConfig(ecu=ecu, identity=dict(IDENTITY), sim=sim),
                        ecu_bus, ecu_notifier).start()
    result_box: list[object] = []
    try:
        session = FlashSession(ecu, tester, image, NEW, notifier=tester_notifier)
        flasher = threading.Thread(target=lambda: result_box.append(session.run()),
                                   name="bench-flash")
        ecu_ids = ecu_threads(server, ecu_notifier)
        me = threading.get_native_id()
        before = thread_times()
        seen: dict[int, float] = {}
        wall0 = time.perf_counter()
        flasher.start()
        while flasher.is_alive():    # sample: threads that end keep their last figure
            seen.update(thread_times())
            flasher.join(0.02)
        wall = time.perf_counter() - wall0
        seen.update(thread_times())
        spent = {tid: cpu - before.get(tid, 0.0) for tid, cpu in seen.items() if tid != me}
        cpu = {"ecu": sum(v for tid, v in spent.items() if tid in ecu_ids),
               "tester": sum(v for tid, v in spent.items() if tid not in ecu_ids)}
    finally:
        server.stop()
        tester_notifier.stop()
        ecu_notifier.stop()
        tester.shutdown()
        ecu_bus.shutdown()
    (result,) = result_box
    if not result.ok:                                          # type: ignore[attr-defined]
        raise SystemExit(f"{recipe}: flash failed: {result.error}")  # type: ignore[attr-defined]
    return {"wall": wall, "transfer": result.timings["transfer"],   # type: ignore[attr-defined]
            "tester_cpu": cpu["tester"], "ecu_cpu": cpu["ecu"],
            "blocks": float(result.blocks)}                        # type: ignore[attr-defined]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024 * 1024, help="image bytes")
    parser.add_argument("--block", type=lambda s: int(s, 0), default=0xFFF,
                        help="maxNumberOfBlockLength (default 0xFFF)")
    parser.add_argument("--runs", type=int, default=2, help="best of N")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        image = Path(tmp) / "image.bin"
        trailer = len(build_image(b"", NEW, {0xF191: "HW-1"}))
        image.write_bytes(build_image(os.urandom(args.size - trailer), NEW,
                                      {0xF191: "HW-1"}))
        print(f"python {platform.python_version()} on {platform.machine()}, "
              f"image {args.size / 1024:.0f} KiB, block 0x{args.block:X}, best of {args.runs}")
        print()
        print(f"{'recipe':<8}{'bus':<15}{'blocks':>7}{'wall s':>8}{'transfer s':>11}"
              f"{'agent CPU s':>12}{'ECU CPU s':>10}{'wire s':>8}{'agent/wire':>11}")
        for recipe in ("bench", "strict"):
            for name, fd, wire in (("classic (8 B)", False, WIRE_CLASSIC_500K),
                                   ("CAN FD (64 B)", True, WIRE_FD_2M)):
                runs = [flash_once(image, recipe, fd, args.block) for _ in range(args.runs)]
                best = min(runs, key=lambda r: r["tester_cpu"])
                wire_s = args.size / wire
                print(f"{recipe:<8}{name:<15}{best['blocks']:>7.0f}{best['wall']:>8.2f}"
                      f"{best['transfer']:>11.2f}{best['tester_cpu']:>12.2f}"
                      f"{best['ecu_cpu']:>10.2f}{wire_s:>8.1f}"
                      f"{best['tester_cpu'] / wire_s:>11.3f}")
    print()
    print("wire s: the same payload on a real bus (classic 500 kbit/s; FD 2 Mbit/s data"
          " phase), no STmin. agent CPU: every thread of the tester (flash, ISO-TP stacks,"
          " notifier, TesterPresent); ECU CPU: the virtual ECU's threads (same process).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
