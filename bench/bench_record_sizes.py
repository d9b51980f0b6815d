"""Record sizes the journal's storage floors are sized with (``[journal] accident_bytes``,
``event_bytes``; docs/journal.md "Storage floors").

Every scenario of ``tests/scenarios/`` through the real chain (``icv-hil scenario`` ->
trace -> ``icv-agent analyze``); the payload bytes of each record as the journal stores
them, per type: count, largest (and in which scenario), mean; then the largest accident
(its triggers plus its record) and the largest event record (lane 2).

    python3 bench/bench_record_sizes.py [--scenarios DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.journal.outbox import lane_of, payload_of  # noqa: E402
from agent.records.keys import DeviceKey  # noqa: E402
from hil.trace.scenario import load_scenario  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", type=Path, default=ROOT / "tests" / "scenarios")
    args = parser.parse_args()
    sizes: dict[str, list[tuple[int, str]]] = {}
    accidents: list[tuple[int, str]] = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        key = tmp / "device.key"
        DeviceKey.generate().save(key)
        paths = sorted(args.scenarios.glob("*.toml"))
        for path in paths:
            config = ROOT / "config" / f"{load_scenario(path).config}.toml"
            trace = tmp / f"{path.stem}.log"
            subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(path), "--config",
                            str(config), "-o", str(trace)], cwd=ROOT, check=True,
                           capture_output=True)
            out = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--config",
                                  str(config), "--key", str(key), str(trace)], cwd=ROOT,
                                 check=True, capture_output=True, text=True).stdout
            per_accident: dict[str, int] = {}
            for line in out.splitlines():
                if not line.strip():
                    continue
                record = json.loads(line)
                n = len(payload_of(record))
                sizes.setdefault(record["type"], []).append((n, path.stem))
                if lane_of(record["type"]) <= 1:
                    acc = str(record["data"].get("accident_id"))
                    per_accident[acc] = per_accident.get(acc, 0) + n
            accidents += [(n, path.stem) for n in per_accident.values()]
    print(f"{len(paths)} scenarios, {sum(len(v) for v in sizes.values())} records "
          "(payload bytes as the journal stores them)\n")
    print(f"{'lane':>4}  {'type':<28}{'n':>5}{'largest':>9}{'mean':>9}  largest in")
    for type_, values in sorted(sizes.items(), key=lambda kv: (lane_of(kv[0]), kv[0])):
        big = max(values)
        mean = sum(v for v, _ in values) / len(values)
        print(f"{lane_of(type_):>4}  {type_:<28}{len(values):>5}{big[0]:>9}{mean:>9.0f}  "
              f"{big[1]}")
    events = [v for t, vs in sizes.items() if lane_of(t) == 2 for v in vs]
    if accidents:
        print(f"\nlargest accident (triggers + record): {max(accidents)[0]} B "
              f"({max(accidents)[1]})")
    if events:
        print(f"largest event record (lane 2): {max(events)[0]} B ({max(events)[1]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
