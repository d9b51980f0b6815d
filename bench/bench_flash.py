"""UDS flash throughput: 1 MiB through FlashSession to a VirtualEcu over python-can's
in-process ``virtual`` bus, classic CAN (8-byte frames) and CAN FD (64-byte frames).

The virtual bus has no wire timing, so the figures show what Python costs (the ceiling of
the software), printed next to what the wire allows:
  classic CAN 500 kbit/s, ISO-TP payload ~31.5 kB/s; CAN FD 2 Mbit/s data phase ~188 kB/s.
CPU is the process time of this process, which runs both the tester and the virtual ECU.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import can

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.ota.settings import EcuConfig  # noqa: E402
from agent.ota.uds import FlashSession  # noqa: E402
from agent.ota.uds.image import build_image  # noqa: E402
from hil.ecu_sim import SimConfig, VirtualEcu, VirtualEcuConfig  # noqa: E402

WIRE_CLASSIC_500K = 31.5e3      # bytes/s of ISO-TP payload
WIRE_FD_2M = 188e3
NEW = {0xF189: "2.0.0"}
IDENTITY = {"F189": "1.0.0", "F191": "HW-1"}


def flash_once(image: Path, fd: bool, block: int) -> tuple[float, float, float, int]:
    channel = f"bench-{uuid.uuid4().hex}"
    tester = can.Bus(interface="virtual", channel=channel)
    ecu_bus = can.Bus(interface="virtual", channel=channel)
    ecu = EcuConfig(name="bench", txid=0x7E0, rxid=0x7E8, security_secret=os.urandom(8).hex(),
                    memory_address=0, memory_size=2 * 1024 * 1024, exit_crc32=True,
                    can_fd=fd, tx_data_length=64 if fd else 8, max_block_length=block,
                    p2_s=0.2)
    sim = VirtualEcu(VirtualEcuConfig(ecu=ecu, identity=dict(IDENTITY), sim=SimConfig(
        p2_ms=200, erase_s=0.0, dependency_s=0.0, boot_s=0.02, max_block_length=block)),
        ecu_bus).start()
    try:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        result = FlashSession(ecu, tester, image, NEW).run()
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    finally:
        sim.stop()
        tester.shutdown()
        ecu_bus.shutdown()
    if not result.ok:
        raise SystemExit(f"flash failed: {result.error}")
    return wall, result.timings["transfer"], cpu, result.blocks


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
        print(f"{'bus':<20}{'blocks':>7}{'wall s':>9}{'transfer s':>12}{'CPU s':>8}"
              f"{'kB/s':>9}{'wire 500k s':>13}{'wire FD2M s':>13}")
        for name, fd in (("classic (8 B)", False), ("CAN FD (64 B)", True)):
            runs = [flash_once(image, fd, args.block) for _ in range(args.runs)]
            wall, transfer, cpu, blocks = min(runs)
            print(f"{name:<20}{blocks:>7}{wall:>9.2f}{transfer:>12.2f}{cpu:>8.2f}"
                  f"{args.size / transfer / 1000:>9.0f}"
                  f"{args.size / WIRE_CLASSIC_500K:>13.1f}{args.size / WIRE_FD_2M:>13.1f}")
    print()
    print("wire columns: the same payload on a real bus (classic 500 kbit/s; FD 2 Mbit/s data"
          " phase), no STmin.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
