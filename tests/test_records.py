"""Event records: chain, signatures, schema, device key and ``icv-agent verify``.

Real SQLite files, real Ed25519 keys, the real CLI in a subprocess.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import stat
import subprocess
import sys
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from agent.jcs import canonical_json
from agent.records import (
    ZERO_HASH,
    ChainError,
    DeviceKey,
    KeyFileError,
    RecordChain,
    RecordError,
    canonical_bytes,
    load_public_key,
    record_line,
    verify_records,
)
from agent.statestore import StateDB
from tests.record_schema import assert_valid_record, record_errors

REPO = Path(__file__).resolve().parents[1]
VIN = "LSVAU2180N2183294"
T0 = datetime(2026, 7, 1, 8, 0, tzinfo=timezone.utc).timestamp()

# One realistic record of every type the record schema fixes, and a few free-form ones.
SAMPLES: list[tuple[str, dict]] = [
    ("agent.started", {"versions": {"agent": "0.1.0"}, "boot": 1}),
    ("cda.activated", {"function": "LCC", "speed": 72.4}),
    ("driver.disengagement", {
        "kind": "hands_off", "start": "2026-07-01T08:00:05.000Z", "duration_s": 12.3,
        "max_warning": "HANDS_ON_ESCALATED",
        "warnings": [{"level": "HANDS_ON_REQUEST", "at_s": 4.8, "modality": 1},
                     {"level": "HANDS_ON_ESCALATED", "at_s": 11.0, "modality": 3}],
        "outcome": "reengaged",
        "compliance": {"hands_off_to_request_s": "ok", "hands_request_to_escalated_s": "ok"}}),
    ("cda.mrm", {"cause": "driver_unresponsive", "duration_s": 14.0, "outcome": "standstill",
                 "peak_decel": -3.1, "hazard_lights": True}),
    ("cda.deactivated", {"function": "LCC", "exit_reason": "mrm", "duration_s": 95.2,
                         "distance_km": 1.9, "fault_code": 0}),
    ("cda.lockout", {"reason": "mrm_driver_unresponsive"}),
    ("cda.lockout_cleared", {"reason": "mrm_driver_unresponsive", "duration_s": 1800.0}),
    ("safety.aeb", {"speed": 43.0, "cda_state": "ACTIVE", "duration_s": 1.2}),
    ("safety.elk", {"speed": 88.0, "cda_state": "OFF", "duration_s": 0.8}),
    ("safety.fcw", {"speed": None, "cda_state": None, "duration_s": 2.0}),
    ("accident.trigger", {"trigger": "airbag", "cda_in_use_5s": True, "cda_in_use_30s": True,
                          "speed": 38.5, "location": {"lat": 31.2304, "lon": 121.4737},
                          "report_deadline": "2026-07-02T08:00:30.000Z"}),
    ("accident.record", {"trigger_id": "x", "samples": {"Vehicle.Speed": [[-30.0, 41.0]]},
                         "casualties": None, "coverage_gaps": []}),
    ("selfcheck.violation", {"rule": "mrm_hazard_lights", "expected": True, "observed": False}),
    ("signal.stale", {"signal": "Vehicle.Speed", "last_seen": "2026-07-01T08:01:00.000Z"}),
    ("signal.restored", {"signal": "Vehicle.Speed", "last_seen": "2026-07-01T08:01:02.500Z"}),
    ("stats.period", {"period": "2026-Q3", "active_s": {"LCC": 3600.5},
                      "distance_km": {"LCC": 80.2}, "counts": {"cda.mrm": 1}}),
    ("ecu.versions", {"ecu": "EPS", "dids": {"F188": "EPS-SW-1.2.3", "F191": "HW-7"}}),
    ("ecu.tamper", {"ecu": "EPS", "dids": {"F188": "EPS-SW-9.9.9"}}),
    ("ota.consent", {"activity_id": "OTA-2026-0042", "accepted": True}),
    ("journal.evicted", {"count": 3, "lane": 4}),
    ("agent.health", {"cpu_percent": 3.5, "rss_mb": 41.2, "note": "温度正常 ✓"}),
]


def run_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def append(db: StateDB, chain: RecordChain, n: int, *, start: int = 0) -> list[dict]:
    """``n`` records, cycling through SAMPLES, each committed in its own transaction."""
    out = []
    for i in range(start, start + n):
        kind, data = SAMPLES[i % len(SAMPLES)]
        with db.transaction():
            out.append(chain.make(kind, data, T0 + i * 1.5, time_source="trace",
                                  mono=i * 1.5))
    return out


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(record_line(r) + "\n" for r in records), encoding="utf-8")
    return path


def resign(record: dict, key: DeviceKey) -> dict:
    """What only a holder of the device key could do: recompute hash and signature."""
    digest = hashlib.sha256(canonical_bytes(record)).digest()
    return {**record, "hash": digest.hex(), "sig": base64.b64encode(key.sign(digest)).decode()}


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def key(state: Path) -> DeviceKey:
    return DeviceKey.load_or_create(state / "keys" / "device.key")


@pytest.fixture
def pubkey(tmp_path: Path, key: DeviceKey) -> Path:
    path = tmp_path / "device.pub"
    path.write_text(key.public_pem())
    return path


@pytest.fixture
def db(state: Path):
    db = StateDB(state / "state.db")
    yield db
    db.close()


@pytest.fixture
def hundred(tmp_path: Path, db: StateDB, key: DeviceKey) -> list[dict]:
    return append(db, RecordChain(db, key, VIN), 100)


# --- the chain --------------------------------------------------------------------------


def test_chain_of_100_records_verifies(tmp_path: Path, hundred: list[dict], pubkey: Path,
                                       key: DeviceKey):
    assert [r["seq"] for r in hundred] == list(range(1, 101))
    assert hundred[0]["prev_hash"] == ZERO_HASH
    for prev, rec in zip(hundred, hundred[1:], strict=False):
        assert rec["prev_hash"] == prev["hash"]
    assert len({r["id"] for r in hundred}) == 100
    for rec in hundred:
        assert_valid_record(rec)
        assert rec["vin"] == VIN and rec["schema"] == "icv.record/2"
        assert rec["hash"] == hashlib.sha256(canonical_bytes(rec)).hexdigest()
        key.public_key.verify(base64.b64decode(rec["sig"]), bytes.fromhex(rec["hash"]))

    report = verify_records(hundred, key.public_key)
    assert (report.ok, report.count, report.first_bad) == (True, 100, None)

    path = write_jsonl(tmp_path / "records.jsonl", hundred)
    done = run_cli("verify", path, "--pubkey", pubkey)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "OK: 100 records, seq 1..100, chain intact"


def test_record_fields(db: StateDB, key: DeviceKey):
    chain = RecordChain(db, key, VIN)
    with db.transaction():
        rec = chain.make("cda.activated", {"function": "ACC", "speed": 61.25},
                         T0 + 0.123, time_source="gnss", mono=812.5)
    assert rec["ts"] == "2026-07-01T08:00:00.123Z"
    assert rec["time_source"] == "gnss" and rec["mono"] == 812.5
    assert rec["id"] == str(uuid.uuid5(chain.namespace, "1"))
    assert rec["data"] == {"function": "ACC", "speed": 61.25}
    # The signature covers the 32 raw hash bytes.
    key.public_key.verify(base64.b64decode(rec["sig"]), bytes.fromhex(rec["hash"]))
    # The canonical form (RFC 8785: sorted, compact, UTF-8) leaves hash and sig out.
    body = json.loads(canonical_bytes(rec))
    assert "hash" not in body and "sig" not in body
    assert canonical_bytes(rec) == canonical_json(body)


def test_non_ascii_data_round_trips(tmp_path: Path, db: StateDB, key: DeviceKey,
                                    pubkey: Path):
    chain = RecordChain(db, key, VIN)
    with db.transaction():
        rec = chain.make("agent.health", {"note": "温度正常 ✓", "e": "é"}, T0,
                         time_source="system")
    line = record_line(rec)
    assert "温度正常" in line
    path = tmp_path / "r.jsonl"
    path.write_bytes(line.encode("utf-8") + b"\n")
    done = run_cli("verify", path, "--pubkey", pubkey)
    assert done.returncode == 0, done.stdout + done.stderr


def test_head_persists_across_reopening(state: Path, key: DeviceKey, tmp_path: Path):
    db = StateDB(state / "state.db")
    chain = RecordChain(db, key, VIN)
    first = append(db, chain, 5)
    namespace = chain.namespace
    db.close()

    db = StateDB(state / "state.db")
    again = RecordChain(db, DeviceKey.load(state / "keys" / "device.key"), VIN)
    assert (again.seq, again.head, again.namespace) == (5, first[-1]["hash"], namespace)
    more = append(db, again, 3, start=5)
    db.close()
    assert [r["seq"] for r in more] == [6, 7, 8]
    assert more[0]["prev_hash"] == first[-1]["hash"]
    assert more[0]["id"] == str(uuid.uuid5(namespace, "6"))
    assert verify_records(first + more, key).ok


def test_rollback_leaves_no_gap(db: StateDB, key: DeviceKey, state: Path):
    chain = RecordChain(db, key, VIN)
    [first] = append(db, chain, 1)
    db.conn.execute("CREATE TABLE outbox (seq INTEGER PRIMARY KEY, line TEXT)")

    with pytest.raises(RuntimeError), db.transaction():
        lost = chain.make("cda.activated", {"function": "ACC", "speed": 50.0}, T0 + 1,
                          time_source="trace")
        db.conn.execute("INSERT INTO outbox VALUES (?, ?)", (lost["seq"], record_line(lost)))
        raise RuntimeError("power cut before commit")

    assert (chain.seq, chain.head) == (1, first["hash"])
    with db.transaction():
        kept = chain.make("cda.activated", {"function": "ACC", "speed": 51.0}, T0 + 2,
                          time_source="trace")
        db.conn.execute("INSERT INTO outbox VALUES (?, ?)", (kept["seq"], record_line(kept)))
    assert kept["seq"] == lost["seq"] == 2
    assert kept["prev_hash"] == lost["prev_hash"] == first["hash"]
    assert kept["id"] == lost["id"]   # same idempotency key: the lost one was never sent

    # What is on disk, seen from a second connection: the kept record and its head only.
    other = StateDB(state / "state.db")
    try:
        rows = other.conn.execute("SELECT seq, line FROM outbox").fetchall()
        assert [(s, json.loads(line)["data"]["speed"]) for s, line in rows] == [(2, 51.0)]
        assert other.get("chain")["seq"] == 2
        assert other.get("chain")["head"] == kept["hash"]
    finally:
        other.close()
    assert verify_records([first, kept], key).ok


def test_several_records_in_one_transaction(db: StateDB, key: DeviceKey):
    chain = RecordChain(db, key, VIN)
    with db.transaction():
        recs = [chain.make("signal.stale", {"signal": f"S{i}", "last_seen": None}, T0 + i,
                           time_source="trace") for i in range(4)]
    assert [r["seq"] for r in recs] == [1, 2, 3, 4]
    assert verify_records(recs, key).ok
    with pytest.raises(ValueError), db.transaction():
        chain.make("signal.stale", {"signal": "S", "last_seen": None}, T0, time_source="trace")
        chain.make("signal.stale", {"signal": "S", "last_seen": None}, T0, time_source="trace")
        raise ValueError("undo both")
    assert chain.seq == 4


def test_make_needs_a_transaction(db: StateDB, key: DeviceKey):
    chain = RecordChain(db, key, VIN)
    with pytest.raises(ChainError, match="inside db.transaction"):
        chain.make("cda.activated", {"function": "ACC", "speed": 1.0}, T0, time_source="trace")
    assert chain.seq == 0


def test_same_namespace_same_input_same_bytes(key: DeviceKey, state: Path):
    namespace = uuid.UUID("6f1c1b7e-3f0a-4b8e-9d3c-2f5b8a1e4c77")

    def run(ns: uuid.UUID | None) -> bytes:
        db = StateDB(None)
        chain = RecordChain(db, DeviceKey.load(state / "keys" / "device.key"), VIN,
                            namespace=ns)
        lines = [record_line(r) + "\n" for r in append(db, chain, 30)]
        db.close()
        return "".join(lines).encode("utf-8")

    assert run(namespace) == run(namespace)
    other = run(uuid.UUID("00000000-0000-4000-8000-000000000001"))
    assert other != run(namespace)
    # Without a namespace every new state db draws its own: ids never collide.
    ids_a = {json.loads(line)["id"] for line in run(None).splitlines()}
    ids_b = {json.loads(line)["id"] for line in run(None).splitlines()}
    assert not ids_a & ids_b


@pytest.mark.parametrize("bad, where", [
    ({"speed": math.nan}, "data.speed"),
    ({"speed": math.inf}, "data.speed"),
    ({"deep": {"list": [1.0, -math.inf]}}, r"data.deep.list\[1\]"),
])
def test_nan_and_infinity_are_rejected(db: StateDB, key: DeviceKey, bad: dict, where: str):
    chain = RecordChain(db, key, VIN)
    with db.transaction():
        with pytest.raises(RecordError, match=rf"^{where}: .* not allowed in a record"):
            chain.make("agent.health", bad, T0, time_source="system")
        ok = chain.make("agent.health", {"x": 1.0}, T0, time_source="system")
    assert ok["seq"] == 1   # the rejected record took no seq


def test_bad_inputs_are_rejected_with_a_clear_error(db: StateDB, key: DeviceKey):
    chain = RecordChain(db, key, VIN)
    cases = [
        (dict(type="Cda.Activated", data={}, ts=T0), "type"),
        (dict(type="cda.activated", data={"s": {1, 2}}, ts=T0), "data.s: a set"),
        (dict(type="cda.activated", data={1: "x"}, ts=T0), "data: key 1"),
        (dict(type="cda.activated", data={"b": b"\x00"}, ts=T0), "data.b: a bytes"),
        (dict(type="cda.activated", data={}, ts=math.nan), "ts"),
        (dict(type="cda.activated", data={}, ts="2026-07-01"), "ts"),
        (dict(type="cda.activated", data={}, ts=T0, mono=math.nan), "mono"),
    ]
    with db.transaction():
        for kwargs, message in cases:
            with pytest.raises(RecordError, match=message):
                chain.make(**kwargs, time_source="trace")
        with pytest.raises(RecordError, match="time_source"):
            chain.make("agent.health", {}, T0, time_source="wall")
    assert chain.seq == 0
    with pytest.raises(RecordError, match="not a VIN"):
        RecordChain(db, key, "SHORT")


def test_state_db_of_another_vehicle_is_refused(db: StateDB, key: DeviceKey):
    append(db, RecordChain(db, key, VIN), 1)
    with pytest.raises(ChainError, match=f"chain of VIN {VIN}"):
        RecordChain(db, key, "LFV3A23C0J3000001")
    with pytest.raises(ChainError, match="namespace"):
        RecordChain(db, key, VIN, namespace=uuid.uuid4())


# --- verify: tampering is found, named and explained ------------------------------------


def _tamper_data_byte(lines: list[bytes]) -> list[bytes]:
    line = lines[36]
    at = line.index(b'"data":')
    digit = next(i for i in range(at, len(line)) if line[i:i + 1].isdigit())
    new = b"1" if line[digit:digit + 1] != b"1" else b"2"
    lines[36] = line[:digit] + new + line[digit + 1:]
    return lines


def _remove(lines: list[bytes]) -> list[bytes]:
    del lines[49]
    return lines


def _swap(lines: list[bytes]) -> list[bytes]:
    lines[19], lines[20] = lines[20], lines[19]
    return lines


def _change_seq(lines: list[bytes]) -> list[bytes]:
    rec = json.loads(lines[59])
    rec["seq"] = 61
    lines[59] = record_line(rec).encode()
    return lines


def _bad_json(lines: list[bytes]) -> list[bytes]:
    lines[9] = lines[9][:-5]
    return lines


@pytest.mark.parametrize("tamper, where, reason", [
    (_tamper_data_byte, ":37: seq 37 ({type37}): ", "hash mismatch (content changed)"),
    (_remove, ":50: seq 51 ({type51}): ", "chain broken: prev_hash does not match record 49"),
    (_swap, ":20: seq 21 ({type21}): ", "chain broken: prev_hash does not match record 19"),
    (_change_seq, ":60: seq 61 ({type60}): ", "hash mismatch (content changed)"),
    (_bad_json, ":10: ", "not valid JSON"),
], ids=["changed-byte", "removed", "reordered", "changed-seq", "truncated-line"])
def test_verify_finds_tampering(tmp_path: Path, hundred: list[dict], pubkey: Path,
                                tamper, where: str, reason: str):
    path = write_jsonl(tmp_path / "records.jsonl", hundred)
    lines = tamper(path.read_bytes().splitlines())
    path.write_bytes(b"\n".join(lines) + b"\n")

    done = run_cli("verify", path, "--pubkey", pubkey)
    assert done.returncode == 1, done.stdout + done.stderr
    types = {f"type{r['seq']}": r["type"] for r in hundred}
    assert done.stdout.startswith(f"{path}{where.format(**types)}{reason}"), done.stdout


def test_verify_with_the_wrong_key(tmp_path: Path, hundred: list[dict]):
    path = write_jsonl(tmp_path / "records.jsonl", hundred)
    other = tmp_path / "other.pub"
    other.write_text(DeviceKey.generate().public_pem())
    done = run_cli("verify", path, "--pubkey", other)
    assert done.returncode == 1
    assert done.stdout.strip() == (f"{path}:1: seq 1 ({hundred[0]['type']}): "
                                   "bad signature (wrong key or tampered)")


def test_verify_checks_what_a_key_holder_could_forge(hundred: list[dict], key: DeviceKey):
    """Even records re-signed with the device key cannot hide gaps, reorders or edits."""
    recs = [dict(r) for r in hundred[:10]]

    gap = recs[:5] + [resign({**recs[5], "seq": 7}, key)]
    report = verify_records(gap, key)
    assert (report.ok, report.first_bad, report.reason) == (
        False, 6, "seq gap: expected 6, got 7")

    back = recs[:5] + [resign({**recs[5], "seq": 5}, key)]
    assert verify_records(back, key).reason == "seq out of order: expected 6, got 5"

    edited = list(recs)
    edited[3] = resign({**recs[3], "data": {**recs[3]["data"], "outcome": "driver_override"}}, key)
    report = verify_records(edited, key)
    assert (report.first_bad, report.reason, report.count) == (
        5, "chain broken: prev_hash does not match record 4", 4)

    moved = recs[:5] + [resign({**recs[5], "vin": "LFV3A23C0J3000001"}, key)]
    assert verify_records(moved, key).reason == (
        f"vin changed: expected {VIN}, got LFV3A23C0J3000001")

    broken = recs[:2] + [resign({**recs[2], "data": {"kind": "hands_off"}}, key)]
    report = verify_records(broken, key)
    assert report.first_bad == 3 and report.reason.startswith("schema: data: ")
    assert "is a required property" in report.reason

    forged_start = [resign({**recs[0], "prev_hash": "ab" * 32}, key)]
    assert verify_records(forged_start, key).reason.startswith("chain broken: the first record")


def test_verify_a_tail_of_the_chain_notes_the_unchecked_link(tmp_path: Path,
                                                              hundred: list[dict],
                                                              pubkey: Path):
    path = write_jsonl(tmp_path / "tail.jsonl", hundred[50:])
    path.write_text("\n" + path.read_text() + "\n\n")   # blank lines are ignored
    done = run_cli("verify", path, "--pubkey", pubkey)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.strip() == "OK: 50 records, seq 51..100, chain intact"
    assert "chain starts at seq 51" in done.stderr


def test_verify_refuses_an_empty_file_and_a_missing_key(tmp_path: Path, pubkey: Path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    done = run_cli("verify", empty, "--pubkey", pubkey)
    assert done.returncode == 1 and "no records" in done.stdout
    done = run_cli("verify", empty, "--pubkey", tmp_path / "nope.pub")
    assert done.returncode == 2 and "key file not found" in done.stderr


# --- schema -----------------------------------------------------------------------------


def test_schema_has_teeth(hundred: list[dict]):
    by_type = {r["type"]: r for r in hundred}
    deactivated = by_type["cda.deactivated"]
    missing = {**deactivated, "data": {k: v for k, v in deactivated["data"].items()
                                       if k != "exit_reason"}}
    assert any("'exit_reason' is a required property" in e for e in record_errors(missing))
    wrong_enum = {**deactivated, "data": {**deactivated["data"], "exit_reason": "bored"}}
    assert record_errors(wrong_enum)
    ota = {**by_type["ota.consent"], "data": {"accepted": True}}
    assert any("activity_id" in e for e in record_errors(ota))
    assert record_errors({**deactivated, "ts": "2026-07-01 08:00:00"})
    assert record_errors({**deactivated, "extra": 1})
    # Other fields in data are welcome: monitors may add what they know.
    assert not record_errors({**deactivated, "data": {**deactivated["data"], "odo": 1.0}})


# --- keys -------------------------------------------------------------------------------


def test_device_key_file(state: Path, key: DeviceKey):
    path = state / "keys" / "device.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again = DeviceKey.load_or_create(path)
    assert again.fingerprint == key.fingerprint
    raw = key.public_key.public_bytes(serialization.Encoding.Raw,
                                      serialization.PublicFormat.Raw)
    assert key.fingerprint == hashlib.sha256(raw).hexdigest()[:16]
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()   # PKCS#8, unencrypted


def test_key_files_that_are_not_device_keys(tmp_path: Path):
    junk = tmp_path / "junk.key"
    junk.write_text("hello")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        DeviceKey.load(junk)
    with pytest.raises(KeyFileError, match="not a PEM public key"):
        load_public_key(junk)
    rsa_key = tmp_path / "rsa.key"
    rsa_key.write_bytes(rsa.generate_private_key(65537, 2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    with pytest.raises(KeyFileError, match="RSA key, expected Ed25519"):
        DeviceKey.load(rsa_key)
    with pytest.raises(KeyFileError, match="key file not found"):
        DeviceKey.load(tmp_path / "missing.key")


def test_cli_keys_generate_and_public(tmp_path: Path):
    out = tmp_path / "prov" / "device.key"
    done = run_cli("keys", "generate", "--out", out)
    assert done.returncode == 0, done.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    key = DeviceKey.load(out)
    assert done.stdout == f"{key.public_pem()}fingerprint: {key.fingerprint}\n"

    again = run_cli("keys", "generate", "--out", out)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert DeviceKey.load(out).fingerprint == key.fingerprint

    forced = run_cli("keys", "generate", "--out", out, "--force")
    assert forced.returncode == 0
    assert DeviceKey.load(out).fingerprint != key.fingerprint

    shown = run_cli("keys", "public", "--key", out)
    assert shown.stdout == forced.stdout
    # The printed PEM is a usable public key file for verify.
    pub = tmp_path / "device.pub"
    pub.write_text(shown.stdout)
    assert load_public_key(pub) == DeviceKey.load(out).public_key


def test_cli_keys_with_config(tmp_path: Path):
    config = tmp_path / "agent.toml"
    config.write_text(f'[vehicle]\nvin = "{VIN}"\n\n[state]\ndir = "var"\n'
                      'key = "secret/device.key"\n')
    done = run_cli("keys", "generate", "--config", config)
    assert done.returncode == 0, done.stderr
    path = tmp_path / "var" / "secret" / "device.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    shown = run_cli("keys", "public", "--config", config)
    assert shown.returncode == 0
    assert shown.stdout.endswith(f"fingerprint: {DeviceKey.load(path).fingerprint}\n")

    config.write_text('[state]\ndri = "var"\n')
    bad = run_cli("keys", "public", "--config", config)
    assert bad.returncode == 2 and "state.dri: unknown key" in bad.stderr
