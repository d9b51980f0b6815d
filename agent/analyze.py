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
from pathlib import Path
from typing import Any

from agent import config as agent_config
from agent.ingest.cli import load_config_or_exit

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("analyze", help="run the monitors over recorded traces, JSON lines out")
    p.add_argument("--config", "-c", type=Path, required=True)
    p.add_argument("--signals", action="store_true",
                   help="print every canonical signal change instead of event records")
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
    if args.signals:
        from agent.timefmt import iso_ms

        def on_change(name: str, value: Any, t: float) -> None:
            out.write(json.dumps({"ts": iso_ms(t), "signal": name, "value": value}) + "\n")

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


def offline_recorder(cfg: agent_config.AgentConfig, key_path: Path | None, timebase: Any,
                     out: Any) -> Any:
    """Records of an offline run: in-memory state, a fixed id namespace, so the same traces
    and key always give byte-identical output."""
    from agent.journal.statedb import StateDB
    from agent.recorder import Recorder
    from agent.records.chain import RecordChain
    from agent.records.keys import DeviceKey

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
