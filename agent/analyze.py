"""``icv-agent analyze``: recorded traces through the whole pipeline (buses, decoders,
monitors, recorder, record chain) as the vehicle would run them, records out as JSON lines.

It lives here, not in ``agent.ingest``, because it drives every stage, not only ingest.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.check_config import load_config_or_exit

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="run the monitors over recorded traces, JSON lines out")
    p.add_argument("--config", "-c", type=Path, required=True)
    p.add_argument("--signals", action="store_true",
                   help="print every canonical signal change instead of event records "
                        "(numbers rounded to the signal's resolution)")
    p.add_argument("--table", action="store_true",
                   help="with --signals: one aligned line per change (time, signal, value, "
                        "unit) instead of JSON lines")
    p.add_argument("--key", type=Path, help="device key to sign with (default: the config's)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 if a trace has unreadable or skipped parts, is cut off or "
                        "holds no frames (default: say so on stderr and go on)")
    p.add_argument("traces", nargs="+", type=Path, metavar="TRACE",
                   help="candump .log, Vector .asc/.blf, or any format python-can reads")
    p.set_defaults(func=analyze)


def analyze(args: argparse.Namespace) -> int:
    from agent.ingest.trace import ChannelRouter, TraceError, TraceReader
    from agent.pipeline import Pipeline, TimeBase

    cfg = load_config_or_exit(args.config)
    if cfg is None:
        return 2
    out = sys.stdout
    timebase = TimeBase("trace")
    if args.table and not args.signals:
        print("error: --table goes with --signals", file=sys.stderr)
        return 2
    if args.signals:
        on_change = signal_printer(cfg, out, table=args.table)
        pipeline = Pipeline(cfg, NullSink(), timebase, [], on_change=on_change)
    else:
        from agent.monitors import ALL

        recorder = offline_recorder(cfg, args.key, timebase, out)
        pipeline = Pipeline(cfg, recorder, timebase, ALL)
    router = ChannelRouter(cfg.buses)
    feed = pipeline.feed
    route = router.route
    last_t = None
    not_before = None      # data time only goes forward, across traces too
    damaged: list[Path] = []
    try:
        for trace in args.traces:
            reader = TraceReader(trace, not_before=not_before)
            for msg in reader:
                idx = route(msg.channel)
                if idx is not None:
                    last_t = msg.timestamp
                    feed(idx, msg, last_t)
            for line in reader.lines():
                print(line, file=sys.stderr)
            if reader.damaged:
                damaged.append(trace)
            if reader.last_t is not None:
                not_before = reader.last_t
    except TraceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        pipeline.stop(last_t)
        return 1
    if last_t is not None:
        pipeline.advance(last_t)
    pipeline.stop(last_t)
    out.flush()
    for dec in pipeline.decoders:
        c = dec.counters
        print(f"bus {dec.setup.name}: {c.frames} frames, {c.decoded} decoded, "
              f"{c.skipped} unchanged, {c.unmapped} unmapped, "
              f"{c.wrong_length + c.undecodable} bad", file=sys.stderr)
    if router.unrouted:
        print(f"{router.unrouted} frames on channels no bus is configured for",
              file=sys.stderr)
    if damaged and args.strict:
        print(f"error: --strict: {len(damaged)} trace(s) damaged or empty: "
              f"{', '.join(map(str, damaged))}", file=sys.stderr)
        return 1
    return 0


def decimals(step: float) -> int:
    """Decimal places that write ``step`` exactly (0.0225 -> 4, 0.1 -> 1, 1.0 -> 0), at
    most 6."""
    for d in range(7):
        if abs(round(step, d) - step) <= abs(step) * 1e-6:
            return d
    return 6


def signal_decimals(cfg: agent_config.AgentConfig) -> dict[str, int]:
    """Per canonical number signal, the decimals of its finest source (DBC scale x the
    mapping's factor): a 0.01-step speed shows ``1.13``, not ``1.1300000000000001``."""
    out: dict[str, int] = {}
    for bus in cfg.buses:
        for plan in bus.plans.values():
            for b in plan.bindings:
                if b.resolution > 0:
                    out[b.canonical] = max(out.get(b.canonical, 0), decimals(b.resolution))
    return out


def signal_printer(cfg: agent_config.AgentConfig, out: Any, *, table: bool = False
                   ) -> Callable[[str, Any, float], None]:
    """The ``--signals`` line writer: JSON lines, or with ``table`` aligned columns
    (``ts  signal  value unit``), numbers rounded to the signal's resolution."""
    from agent.signals import CATALOGUE
    from agent.timefmt import iso_ms

    places = signal_decimals(cfg)
    width = max((len(name) for bus in cfg.buses for name in bus.canonical), default=0)

    def rounded(name: str, value: Any) -> Any:
        d = places.get(name)
        if d is None or not isinstance(value, float):
            return value
        return round(value, d)

    if not table:
        def as_json(name: str, value: Any, t: float) -> None:
            out.write(json.dumps({"ts": iso_ms(t), "signal": name,
                                  "value": rounded(name, value)}) + "\n")
        return as_json

    def as_row(name: str, value: Any, t: float) -> None:
        if value is None:
            shown = "unknown"
        elif isinstance(value, bool):
            shown = "true" if value else "false"
        elif isinstance(value, float) and name in places:
            shown = f"{value:.{places[name]}f}"
        else:
            shown = str(value)
        spec = CATALOGUE.get(name)
        unit = f" {spec.unit}" if spec is not None and spec.unit and value is not None else ""
        out.write(f"{iso_ms(t)}  {name:<{width}}  {shown}{unit}".rstrip() + "\n")

    return as_row


def offline_recorder(cfg: agent_config.AgentConfig, key_path: Path | None, timebase: Any,
                     out: Any) -> Any:
    """Records of an offline run: in-memory state, a fixed id namespace, so the same traces
    and key always give byte-identical output."""
    from agent.recorder import Recorder
    from agent.records.chain import RecordChain
    from agent.records.keys import DeviceKey
    from agent.statestore import StateDB

    path = key_path or cfg.key_path
    try:
        key = DeviceKey.load(path)
    except Exception as exc:
        log.warning("device key %s unusable (%s): records are signed with a throw-away key;"
                    " pass --key or run `icv-agent keys generate`", path, exc)
        key = DeviceKey.generate()
    db = StateDB(None)
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, f"icv-agent:analyze:{cfg.vehicle.vin}")
    chain = RecordChain(db, key, cfg.vehicle.vin, namespace=namespace)

    def deliver(records: list[dict[str, Any]]) -> None:
        for r in records:
            out.write(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n")

    return Recorder(db, chain, timebase.utc, timebase.source, deliver=deliver)


class NullSink:
    def record(self, type_: str, data: dict[str, Any], t: float) -> None:
        pass

    def persist(self, key: str, value: Any) -> None:
        pass

    def load(self, key: str, default: Any = None) -> Any:
        return default

    def flush(self) -> None:
        pass
