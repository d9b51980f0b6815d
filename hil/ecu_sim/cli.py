"""``icv-hil ecu-sim``: run virtual ECUs in the foreground until Ctrl-C / SIGTERM.

Between processes use ``udp_multicast`` (the default); ``virtual`` only reaches the same
process. One line ``ready <name> ...`` per ECU goes to stdout once it listens.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

import can

from agent.settings_loader import ConfigError
from hil.ecu_sim.server import VirtualEcu
from hil.ecu_sim.settings import VirtualEcuConfig, load_sim_config

DEFAULT_GROUP = "239.74.163.2"      # python-can's udp_multicast default IPv4 group


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "ecu-sim", help="run virtual ECUs (UDS server on ISO-TP)",
        description="Run one or more virtual ECUs (bootloader + application, emulated flash, "
                    "fault injection) on a python-can bus until interrupted.")
    p.add_argument("--config", action="append", required=True, metavar="ECU.toml",
                   help="virtual ECU file (repeat for several ECUs on one bus)")
    p.add_argument("--interface", default="udp_multicast",
                   help="python-can interface (default udp_multicast)")
    p.add_argument("--channel", default=None,
                   help=f"python-can channel (default {DEFAULT_GROUP} for udp_multicast)")
    p.add_argument("--fd", action="store_true", help="open the bus for CAN FD")
    p.add_argument("--bus-option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra python-can Bus() argument, e.g. port=43114 (repeatable)")
    p.add_argument("--check", action="store_true",
                   help="only validate the files and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    configs: list[VirtualEcuConfig] = []
    failed = False
    for path in args.config:
        try:
            configs.append(load_sim_config(path))
        except ConfigError as exc:
            print(exc, file=sys.stderr)
            failed = True
    if failed:
        return 2
    if args.check:
        for cfg in configs:
            print(f"ok {cfg.ecu.name}")
        return 0
    channel = args.channel or (DEFAULT_GROUP if args.interface == "udp_multicast" else "0")
    fd = args.fd or any(c.ecu.can_fd for c in configs)
    options: dict[str, Any] = {}
    for item in args.bus_option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"ecu-sim: --bus-option {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        options[key] = int(value, 0) if value.lstrip("-").isdigit() else value
    try:
        bus = can.Bus(interface=args.interface, channel=channel, fd=fd, **options)
    except (can.CanError, OSError, ValueError, ImportError) as exc:
        print(f"ecu-sim: cannot open {args.interface} {channel}: {exc}", file=sys.stderr)
        return 1
    notifier = can.Notifier(bus, [], timeout=0.1)
    ecus = [VirtualEcu(cfg, bus, notifier) for cfg in configs]
    stop = stop or threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        for ecu in ecus:
            ecu.start()
            e = ecu.config.ecu
            ids = (f"sa=0x{e.source_address:02X} ta=0x{e.target_address:02X}"
                   if e.addressing == "normal_fixed_29bit"
                   else f"txid=0x{e.txid:X} rxid=0x{e.rxid:X}")
            print(f"ready {e.name} role={e.role} {ids} on {args.interface}:{channel}",
                  flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        for ecu in ecus:
            ecu.stop()
            summary = {"ecu": ecu.name, "versions": {f"{k:04X}": v for k, v in
                                                     sorted(ecu.versions().items())},
                       "counters": ecu.state.counters}
            print(json.dumps(summary), flush=True)
        notifier.stop()
        bus.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m hil.ecu_sim.cli ecu-sim ...`` (same as ``icv-hil ecu-sim ...``)."""
    parser = argparse.ArgumentParser(prog="ecu-sim")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
