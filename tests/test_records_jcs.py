"""The record format as docs/records.md defines it, checked by an independent verifier.

The verifier below is JavaScript run by Node.js: RFC 8785 (JCS) canonical JSON as its §3.2
and the ``canonicalize`` reference put it (``JSON.stringify`` for every primitive, keys
sorted by UTF-16 code units), SHA-256 and Ed25519 from ``node:crypto``. It shares no code
with the agent, so a number Python writes its own way (``1e-07``, ``12.0``) or a key order
of its own makes it fail. The test vector of docs/records.md is recomputed here.
"""

from __future__ import annotations

import base64
import hashlib
import json
import random
import re
import shutil
import struct
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.jcs import canonical_json, number
from agent.records import ZERO_HASH, DeviceKey, RecordChain, canonical_bytes, record_line
from agent.statestore import StateDB

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "records.md"
VIN = "LSJWH4098PN000001"
T0 = datetime(2026, 7, 1, 8, 0, tzinfo=timezone.utc).timestamp()

VERIFIER_JS = r"""
"use strict";
const fs = require("fs");
const crypto = require("crypto");

// RFC 8785: primitives as JSON.stringify writes them (ECMAScript Number::toString),
// object keys sorted by UTF-16 code units (the default Array.prototype.sort order).
function canonicalize(v) {
  if (v === null || typeof v !== "object") return JSON.stringify(v);
  if (Array.isArray(v)) return "[" + v.map(canonicalize).join(",") + "]";
  return "{" + Object.keys(v).sort()
    .map((k) => JSON.stringify(k) + ":" + canonicalize(v[k])).join(",") + "}";
}

const [mode, file, pemFile] = process.argv.slice(2);
const input = fs.readFileSync(file, "utf8");
if (mode === "canon") {          // a JSON array of values -> their canonical texts (a file)
  fs.writeFileSync(pemFile, JSON.stringify(JSON.parse(input).map(canonicalize)), "utf8");
  process.exit(0);
}
const key = crypto.createPublicKey(fs.readFileSync(pemFile));
let prev = null, n = 0;
input.split("\n").forEach((line, i) => {
  if (!line.trim()) return;
  const r = JSON.parse(line);
  const bad = (why) => { console.log(`BAD line ${i + 1} seq ${r.seq}: ${why}`); process.exit(1); };
  const body = Object.assign({}, r);
  delete body.hash;
  delete body.sig;
  const digest = crypto.createHash("sha256").update(Buffer.from(canonicalize(body), "utf8"))
    .digest();
  if (digest.toString("hex") !== r.hash) bad("hash mismatch");
  if (!crypto.verify(null, digest, key, Buffer.from(r.sig, "base64"))) bad("bad signature");
  if (prev === null && r.seq !== 1) bad("the first record is not seq 1");
  if (prev !== null && r.seq !== prev.seq + 1) bad(`seq gap after ${prev.seq}`);
  if (r.prev_hash !== (prev === null ? "0".repeat(64) : prev.hash)) bad("chain broken");
  prev = r;
  n++;
});
console.log(`OK ${n}`);
"""

# Numbers where Python's json.dumps and ECMAScript differ, and their neighbours.
EDGE_NUMBERS: list[float | int] = [
    0.0, -0.0, 1.0, -1.0, 12.0, 0.5, 1e-7, 1.5e-7, 1e-6, 1.2345e-6, 0.0001, 1e-5, 1e15, 1e16,
    1.5e16, 1e20, 1e21, 1.5e21, 1e22, 123456789012345680000.0, 2.0**53, 5e-324,
    1.7976931348623157e308, 0.1 + 0.2, 1 / 3, 31.2304567, 121.4737, -3.1, 9007199254740991,
    -9007199254740991, 0, 7, 100,
]
# Keys whose code-point order differs from their UTF-16 order (U+E000.. vs non-BMP).
TRICKY_KEYS = {"\ue000": 1, "\U0001f600": 2, "b": 3, "a": 4, "é": 5, "\u20ac": 6,
               "A": 7, "\U00010000": 8, "": 9}
TRICKY_STRINGS = ["\u2028\u2029", "\x00\x01\x1f\x7f", 'quote " backslash \\ /',
                  "温度正常 ✓", "\U0001f697", "\t\n\r\b\f"]


def node() -> str:
    found = shutil.which("node") or shutil.which("nodejs")
    if found is None:
        pytest.fail("node (Node.js) is not installed: the independent record verifier needs "
                    "it (apt-get install nodejs; .ci/run and hil/ensure-deps.sh do this)")
    return found


def run_js(tmp_path: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "verify.js"
    script.write_text(VERIFIER_JS)
    return subprocess.run([node(), str(script), *map(str, args)], capture_output=True,
                          text=True, timeout=120)


def js_canonical(tmp_path: Path, values: list[Any]) -> list[str]:
    path = tmp_path / "values.json"
    path.write_text(json.dumps(values, ensure_ascii=False), encoding="utf-8")
    out = tmp_path / "canonical.json"
    done = run_js(tmp_path, "canon", path, out)
    assert done.returncode == 0, done.stderr
    return json.loads(out.read_text(encoding="utf-8"))


def random_doubles(n: int, seed: int = 8785) -> list[float]:
    """Doubles from random bit patterns (every exponent) and from everyday ranges."""
    rng = random.Random(seed)
    out: list[float] = []
    while len(out) < n:
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if x == x and abs(x) != float("inf"):
            out.append(x)
        out.append(round(rng.uniform(-500, 500), rng.randint(0, 9)))
        out.append(rng.random() * 10.0 ** rng.randint(-25, 25))
    return out


def test_numbers_are_written_as_ecmascript_writes_them(tmp_path: Path) -> None:
    values = EDGE_NUMBERS + random_doubles(6000)
    ours = [number(v) for v in values]
    theirs = js_canonical(tmp_path, values)
    wrong = [(v, o, t) for v, o, t in zip(values, ours, theirs, strict=True) if o != t]
    assert not wrong, f"{len(wrong)} numbers differ (value, ours, JS), e.g. {wrong[:5]}"


def test_keys_strings_and_nesting_match_an_independent_jcs(tmp_path: Path) -> None:
    values: list[Any] = [TRICKY_KEYS, TRICKY_STRINGS, {"z": [1, {"y": None, "x": True}],
                         "a": {"c": False, "b": [[], {}]}}, "", [], {}]
    ours = [canonical_json(v).decode("utf-8") for v in values]
    assert ours == js_canonical(tmp_path, values)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 2**53, -(2**53), {1: "x"},
                                 b"bytes", "\ud800", {"k": {1, 2}}])
def test_what_canonical_json_cannot_carry_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError):
        canonical_json(bad)


def tricky_records(tmp_path: Path, key: DeviceKey) -> list[dict[str, Any]]:
    """Records of the agent's own chain with the values where formats part ways."""
    db = StateDB(tmp_path / "state.db")
    chain = RecordChain(db, key, VIN)
    out = []
    items: list[tuple[str, dict[str, Any]]] = [
        ("agent.health", {"numbers": EDGE_NUMBERS, "rss_mb": 41.0, "note": "温度正常 ✓"}),
        ("cda.activated", {"function": "LCC", "speed": 72.4}),
        ("agent.health", {"keys": TRICKY_KEYS, "strings": TRICKY_STRINGS}),
        ("accident.trigger", {"trigger": "delta_v", "cda_in_use_5s": True,
                              "cda_in_use_30s": True, "speed": 38.5,
                              "location": {"lat": 31.2304567, "lon": 121.4737},
                              "report_deadline": "2026-07-02T08:00:30.000Z"}),
        ("agent.health", {"samples": random_doubles(300, seed=1)}),
    ]
    try:
        for i, (kind, data) in enumerate(items):
            with db.transaction():
                out.append(chain.make(kind, data, T0 + i * 0.25, time_source="trace",
                                      mono=i * 0.25 + 1e-7))
    finally:
        db.close()
    return out


def write_pub(tmp_path: Path, key: DeviceKey) -> Path:
    path = tmp_path / "device.pub.pem"
    path.write_text(key.public_pem())
    return path


def test_an_independent_verifier_accepts_the_agents_records(tmp_path: Path) -> None:
    key = DeviceKey.generate()
    records = tricky_records(tmp_path, key)
    path = tmp_path / "records.jsonl"
    path.write_text("".join(record_line(r) + "\n" for r in records), encoding="utf-8")
    done = run_js(tmp_path, "verify", path, write_pub(tmp_path, key))
    assert done.stdout.strip() == f"OK {len(records)}", done.stdout + done.stderr


def test_the_independent_verifier_reads_what_the_journal_sends(tmp_path: Path) -> None:
    """The wire form is plain json.dumps (Python number spelling): the verifier parses and
    canonicalises, so only the values count, not how the sender spelled them."""
    from agent.journal.outbox import payload_of

    key = DeviceKey.generate()
    records = tricky_records(tmp_path, key)
    path = tmp_path / "wire.jsonl"
    path.write_bytes(b"".join(payload_of(r) + b"\n" for r in records))
    assert b"1e-07" in path.read_bytes()           # Python's own spelling is on the wire
    done = run_js(tmp_path, "verify", path, write_pub(tmp_path, key))
    assert done.stdout.strip() == f"OK {len(records)}", done.stdout + done.stderr


def test_an_independent_verifier_accepts_what_analyze_writes(tmp_path: Path) -> None:
    """The whole drive of the demo (activation, warnings, MRM, lockout, accident with its
    window of every signal) through ``icv-hil scenario`` and ``icv-agent analyze``."""
    key = DeviceKey.generate()
    key.save(tmp_path / "device.key")
    trace, records = tmp_path / "drive.log", tmp_path / "records.jsonl"
    for module, *args in (
            ("hil.cli", "scenario", ROOT / "hil" / "scenarios" / "drive.toml", "--config",
             ROOT / "config" / "bench.toml", "-o", trace),
            ("agent.cli", "analyze", "--config", ROOT / "config" / "bench.toml", "--key",
             tmp_path / "device.key", trace)):
        done = subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=ROOT,
                              capture_output=True, timeout=300)
        assert done.returncode == 0, done.stderr.decode()
    records.write_bytes(done.stdout)
    kinds = [json.loads(line)["type"] for line in done.stdout.splitlines()]
    assert "accident.record" in kinds and "cda.mrm" in kinds, kinds
    verified = run_js(tmp_path, "verify", records, write_pub(tmp_path, key))
    assert verified.stdout.strip() == f"OK {len(kinds)}", verified.stdout + verified.stderr


@pytest.mark.parametrize("tamper", ["value", "drop", "key"])
def test_the_independent_verifier_can_fail(tmp_path: Path, tamper: str) -> None:
    key = DeviceKey.generate()
    records = tricky_records(tmp_path, key)
    if tamper == "value":
        records[1]["data"]["speed"] = 72.5
        expected = "BAD line 2 seq 2: hash mismatch"
    elif tamper == "drop":
        del records[2]
        expected = "BAD line 3 seq 4: seq gap after 2"
    else:
        key = DeviceKey.generate()
        expected = "BAD line 1 seq 1: bad signature"
    path = tmp_path / "records.jsonl"
    path.write_text("".join(record_line(r) + "\n" for r in records), encoding="utf-8")
    done = run_js(tmp_path, "verify", path, write_pub(tmp_path, key))
    assert done.returncode == 1 and done.stdout.strip() == expected, done.stdout


def test_icv_agent_verify_and_the_backend_use_the_same_bytes(tmp_path: Path) -> None:
    """One canonical function: the chain's hash is what the bench backend recomputes."""
    from hil.backend.verify import record_hash as backend_hash

    key = DeviceKey.generate()
    for record in tricky_records(tmp_path, key):
        assert backend_hash(record) == record["hash"]
        assert hashlib.sha256(canonical_bytes(record)).hexdigest() == record["hash"]


# -- the worked example of docs/records.md -------------------------------------------------

VECTOR_SEED = b"icv-edge-agent docs/records.md test vector (not a secret)"
VECTOR_NAMESPACE = uuid.UUID("6f0e3b52-7d1c-4f5a-9a43-2b8c1d0e4f61")
VECTOR_TS = datetime(2026, 7, 1, 8, 0, 5, 250000, tzinfo=timezone.utc).timestamp()
VECTOR_DATA = {"function": "LCC", "speed": 72.0, "peak": 1e-7, "note": "温度"}


def vector_key() -> DeviceKey:
    """A key anyone can rebuild: the private bytes are SHA-256 of a published phrase."""
    return DeviceKey(Ed25519PrivateKey.from_private_bytes(hashlib.sha256(VECTOR_SEED).digest()))


def vector_record(tmp_path: Path) -> dict[str, Any]:
    db = StateDB(tmp_path / "vector.db")
    try:
        chain = RecordChain(db, vector_key(), VIN, namespace=VECTOR_NAMESPACE)
        with db.transaction():
            return chain.make("cda.activated", VECTOR_DATA, VECTOR_TS, time_source="gnss",
                              mono=812.5)
    finally:
        db.close()


def vector_blocks() -> dict[str, str]:
    """The fenced blocks of docs/records.md tagged ``vector:NAME``."""
    text = DOC.read_text(encoding="utf-8")
    return {m.group(1): m.group(2).strip("\n")
            for m in re.finditer(r"```\w* vector:([a-z-]+)\n(.*?)```", text, re.S)}


def vector_values(tmp_path: Path) -> dict[str, str]:
    key = vector_key()
    record = vector_record(tmp_path)
    raw = key.public_key.public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
    return {
        "private-seed": hashlib.sha256(VECTOR_SEED).hexdigest(),
        "public-key": key.public_pem().strip(),
        "public-key-raw": raw.hex(),
        "canonical": canonical_bytes(record).decode("utf-8"),
        "hash": record["hash"],
        "sig": record["sig"],
        "record": record_line(record),
    }


def test_the_doc_test_vector_is_what_the_agent_makes(tmp_path: Path) -> None:
    blocks = vector_blocks()
    values = vector_values(tmp_path)
    missing = sorted(set(values) - set(blocks))
    assert not missing, f"docs/records.md lacks the vector blocks {missing}"
    for name, value in values.items():
        assert blocks[name] == value, (
            f"docs/records.md block vector:{name} is not what the agent makes; regenerate "
            f"with: python -m tests.test_records_jcs\n--- doc\n{blocks[name]}\n--- agent\n"
            f"{value}")
    record = json.loads(blocks["record"])
    assert record["prev_hash"] == ZERO_HASH and record["seq"] == 1
    assert hashlib.sha256(blocks["canonical"].encode("utf-8")).hexdigest() == blocks["hash"]
    vector_key().public_key.verify(base64.b64decode(blocks["sig"]), bytes.fromhex(blocks["hash"]))


def test_the_doc_test_vector_passes_the_independent_verifier(tmp_path: Path) -> None:
    blocks = vector_blocks()
    path = tmp_path / "vector.jsonl"
    path.write_text(blocks["record"] + "\n", encoding="utf-8")
    pem = tmp_path / "vector.pub.pem"
    pem.write_text(blocks["public-key"] + "\n")
    done = run_js(tmp_path, "verify", path, pem)
    assert done.stdout.strip() == "OK 1", done.stdout + done.stderr


def test_the_doc_javascript_checks_the_test_vector(tmp_path: Path) -> None:
    """The JavaScript of docs/records.md, as printed, accepts the vector and catches an edit."""
    snippet = re.search(r"```js\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    assert snippet, "docs/records.md has no ```js block"
    script = tmp_path / "doc.js"
    script.write_text(snippet.group(1) + 'const fs = require("fs");\n'
                      'for (const file of process.argv.slice(3)) {\n'
                      '  const r = JSON.parse(fs.readFileSync(file, "utf8"));\n'
                      '  console.log(check(r, null, fs.readFileSync(process.argv[2], "utf8"))'
                      ' ?? "OK");\n}\n')
    blocks = vector_blocks()
    pem = tmp_path / "vector.pub.pem"
    pem.write_text(blocks["public-key"] + "\n")
    good = tmp_path / "good.json"
    good.write_text(blocks["record"], encoding="utf-8")
    edited = json.loads(blocks["record"])
    edited["data"]["speed"] = 73
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edited), encoding="utf-8")
    done = subprocess.run([node(), str(script), str(pem), str(good), str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert done.stdout.split("\n")[:2] == ["OK", "hash mismatch"], done.stdout + done.stderr


if __name__ == "__main__":        # print the vector blocks for docs/records.md
    import tempfile

    with tempfile.TemporaryDirectory() as where:
        for name, value in vector_values(Path(where)).items():
            sys.stdout.write(f"```text vector:{name}\n{value}\n```\n\n")
