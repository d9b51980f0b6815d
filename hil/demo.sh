#!/usr/bin/env bash
# `make demo`: the agent on its embedded defaults (bench config, reference DBC).
# Offline first: a scenario becomes a CAN trace, the agent decodes it and produces signed
# records. Then live: broker, backend, `icv-agent run` and a replay (hil/demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=config/bench.toml
OUT=out/demo-offline
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "check the config"
icv-agent check-config "$CONFIG"

KEY=.state/bench/device.key
if [ ! -f "$KEY" ]; then
    step "generate the device key"
    icv-agent keys generate --config "$CONFIG" >/dev/null
fi

step "scenario -> CAN trace (hil/scenarios/drive.toml)"
icv-hil scenario hil/scenarios/drive.toml --config "$CONFIG" -o "$OUT/demo.log"

step "decoded signal timeline (driver and CDA signals)"
icv-agent analyze --signals --table --config "$CONFIG" "$OUT/demo.log" 2>/dev/null \
    | grep -E 'CDA\.(State|WarningLevel)|IsHandsOnWheel|Hazard|Airbag|Restraint|Crash'

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

step "verify the records (with the public key only, as a backend would)"
icv-agent keys public --config "$CONFIG" > "$OUT/device.pub.pem"
icv-agent verify "$OUT/records.jsonl" --pubkey "$OUT/device.pub.pem"

step "the accident report draft (Att.3 一) from those records"
ACC=$(python3 -c 'import json,sys; print(next(json.loads(l)["data"]["accident_id"] for l in open(sys.argv[1]) if "accident.record" in l))' "$OUT/records.jsonl")
icv-agent report accident --config "$CONFIG" --records "$OUT/records.jsonl" --text "$ACC" | head -40

python3 -m hil.demo
