"""``icv-hil scenario`` and ``icv-hil replay``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.settings_loader import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("scenario", help="turn a scenario timeline into a CAN trace")
    p.add_argument("scenario", type=Path)
    p.add_argument("--config", "-c", type=Path, required=True,
                   help="agent config whose buses, DBCs and mappings encode the trace")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="trace file; format by suffix (.log candump, .asc, .blf)")
    p.add_argument("--lenient", action="store_true",
                   help="write the trace even where it cannot be what the scenario says (a "
                        "step after duration, a signal the config lacks, an enum value its "
                        "mapping cannot express, a number beyond the DBC range), with a "
                        "warning for each; default: exit 2")
    p.set_defaults(func=scenario_cmd)

    p = sub.add_parser("replay", help="replay a trace onto a CAN bus in real time")
    p.add_argument("trace", type=Path)
    p.add_argument("--interface", "-i", default="socketcan")
    p.add_argument("--channel", "-C", default="vcan0")
    p.add_argument("--fd", action="store_true", help="open the bus in CAN FD mode")
    p.add_argument("--bus-option", "-O", action="append", default=[], metavar="KEY=VALUE",
                   help="extra python-can Bus() argument, e.g. port=43114 (repeatable)")
    p.add_argument("--speed", type=float, default=1.0, help="time scale (2 = twice as fast)")
    p.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=replay_cmd)


def scenario_cmd(args: argparse.Namespace) -> int:
    from agent import config as agent_config
    from hil.trace.scenario import GenerateError, check_scenario, generate, load_scenario

    try:
        cfg = agent_config.load(args.config)
        sc = load_scenario(args.scenario)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    problems = check_scenario(cfg, sc, args.scenario)
    if problems and not args.lenient:
        print(ConfigError(problems), file=sys.stderr)
        return 2
    for line in problems.lines():
        print(f"warning: {line}", file=sys.stderr)
    try:
        n = generate(cfg, sc, args.output)
    except GenerateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.output}: {n} frames, {sc.duration:g} s", file=sys.stderr)
    return 0


def replay_cmd(args: argparse.Namespace) -> int:
    import can

    from agent.ingest.trace import TraceError
    from hil.trace.replay import load_frames, replay

    if not args.speed > 0 or args.speed == float("inf"):
        print("error: --speed must be a number > 0", file=sys.stderr)
        return 2
    try:
        options = parse_bus_options(args.bus_option)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:   # before the bus opens: a wrong file is said at once, in one line
        frames = load_frames(args.trace)
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        bus = can.Bus(interface=args.interface, channel=args.channel, fd=args.fd, **options)
    except Exception as exc:
        print(f"error: cannot open {args.interface}:{args.channel}: {exc}", file=sys.stderr)
        return 1
    try:
        result = replay(frames, bus, speed=args.speed, loop=args.loop,
                        progress=None if args.quiet else sys.stderr)
    except KeyboardInterrupt:
        return 130
    finally:
        bus.shutdown()
    print(f"sent {result.sent} frames in {result.duration_s:.2f} s, {result.errors} send errors,"
          f" timing error mean {result.mean_error_ms:.3f} ms max {result.max_error_ms:.3f} ms")
    return 0 if result.errors == 0 else 1


def parse_bus_options(items: list[str]) -> dict[str, object]:
    """``["port=43114", "receive_own_messages=false"]`` -> typed keyword arguments."""
    options: dict[str, object] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ValueError(f"bus option {item!r} is not KEY=VALUE")
        value: object = raw
        if raw.lower() in ("true", "false"):
            value = raw.lower() == "true"
        else:
            try:
                value = int(raw, 0)
            except ValueError:
                try:
                    value = float(raw)
                except ValueError:
                    pass
        options[key] = value
    return options
