#!/usr/bin/env bash
# `make demo`: the agent on its embedded defaults (bench config, reference DBC).
# A scenario becomes a CAN trace; the agent decodes it and produces signed records.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=config/bench.toml
OUT=out/demo
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "check the config"
icv-agent check-config "$CONFIG"

KEY=.state/bench/device.key
if [ ! -f "$KEY" ]; then
    step "generate the device key"
    icv-agent keys generate --config "$CONFIG" >/dev/null
fi

step "scenario -> CAN trace (hil/scenarios/demo.toml)"
icv-hil scenario hil/scenarios/demo.toml --config "$CONFIG" -o "$OUT/demo.log"

step "decoded signal timeline (driver and CDA signals)"
icv-agent analyze --signals --config "$CONFIG" "$OUT/demo.log" 2>/dev/null \
    | grep -E 'CDA\.(State|WarningLevel)|IsHandsOnWheel|Hazard|Airbag|Restraint|Crash' \
    | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    print("%s  %-44s %s" % (e["ts"], e["signal"], e["value"]))'

step "event records (signed, hash-chained)"
icv-agent analyze --config "$CONFIG" "$OUT/demo.log" > "$OUT/records.jsonl"
python3 - "$OUT/records.jsonl" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    data = json.dumps(r["data"], ensure_ascii=False)
    if len(data) > 150:
        data = data[:147] + "..."
    print(f"#{r['seq']:<3} {r['ts']}  {r['type']:<22} {data}")
PY

step "verify the records"
icv-agent verify "$OUT/records.jsonl" --pubkey "$KEY"
