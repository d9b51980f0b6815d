"""Signed export for readout: ``icv-agent export`` writes an archive that ``icv-agent
verify`` checks offline; any change to it fails with the member and the reason.

The state database is the one a running agent leaves: the records of a real scenario
(scenario -> trace -> analyze, signed by the device key) stored through the journal,
part of them acknowledged into the archive of sent records, OTA history entries and ECU
versions in the inventory's keys."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from agent.journal.outbox import Journal
from agent.ota.history import OtaHistory
from agent.records.chain import record_hash, record_line
from agent.records.export import MANIFEST, MEMBERS, RECORDS
from agent.records.keys import DeviceKey
from agent.statestore import StateDB
from tests.scenario_runner import ROOT, SCENARIOS, run_scenario


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def unit(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """An agent config and the state db a drive with a crash left behind."""
    tmp = tmp_path_factory.mktemp("unit")
    _sc, records = run_scenario(SCENARIOS / "accident_airbag.toml", tmp)
    key_path = tmp / "device.key"
    state = tmp / "state"
    state.mkdir()
    vin = records[0]["vin"]
    cfg = tmp / "agent.toml"
    cfg.write_text(f'[vehicle]\nvin = "{vin}"\n[state]\ndir = "{state}"\n'
                   f'key = "{key_path}"\n')
    db = StateDB(state / "state.db")
    journal = Journal(db)
    with db.transaction():
        for record in records:
            journal.store(record)
        db.put_in("chain", {"seq": records[-1]["seq"], "head": records[-1]["hash"],
                            "namespace": "00000000-0000-0000-0000-000000000000", "vin": vin})
    half = [p.id for p in journal.next_batch(10_000) if p.seq <= len(records) // 2]
    journal.ack_many(half)                              # these went to the backend already
    history = OtaHistory(db)
    history.append({"activity_id": "upd-1", "result": "completed", "ecus": ["adas"]})
    history.append({"activity_id": "upd-2", "result": "rejected", "ecus": []})
    db.put("ota.versions.current", {"adas": {"F189": "2.1.0", "F195": "SW-2.1"}})
    db.put("ota.versions.initial", {"adas": {"F189": "2.0.0", "F195": "SW-2.0"}})
    swin = {"swin": "SWIN-0042", "reported": None, "computed": "c0ffee", "basis": {}}
    db.put("ota.swin", swin)                            # as agent.ota.inventory keeps it
    db.close()
    accident = next(r for r in records if r["type"] == "accident.record")
    return {"cfg": cfg, "records": records, "key": key_path, "tmp": tmp, "vin": vin,
            "accident": accident["data"]["accident_id"], "db": state / "state.db"}


def members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path, "r:gz") as tar:
        return {m.name: tar.extractfile(m).read() for m in tar}  # type: ignore[union-attr]


def write(path: Path, files: dict[str, bytes]) -> Path:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name in MEMBERS:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            tar.addfile(info, io.BytesIO(files[name]))
    path.write_bytes(gzip.compress(raw.getvalue()))
    return path


def test_an_accident_export_round_trips_and_carries_what_a_reader_needs(
        unit: dict[str, Any]) -> None:
    out = unit["tmp"] / "accident.tar.gz"
    r = cli("export", "--config", str(unit["cfg"]), "--accident", unit["accident"],
            "-o", str(out))
    assert r.returncode == 0, r.stderr
    r = cli("verify", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.startswith("OK: export of " + unit["vin"]) and "chain intact" in r.stdout
    pub = unit["tmp"] / "device.pub"
    pub.write_text(DeviceKey.load(unit["key"]).public_pem())
    r = cli("verify", str(out), "--pubkey", str(pub))
    assert r.returncode == 0, r.stdout

    files = members(out)
    manifest = json.loads(files[MANIFEST])
    lines = files[RECORDS].decode().splitlines()
    records = [json.loads(line) for line in lines]
    by_seq = {rec["seq"]: rec for rec in unit["records"]}
    assert lines == [record_line(by_seq[rec["seq"]]) for rec in records]  # as made, sent or not
    types = [rec["type"] for rec in records]
    assert types[0] == "accident.trigger" and types[-1] == "accident.record"
    assert [rec["seq"] for rec in records] == list(range(records[0]["seq"],
                                                         records[-1]["seq"] + 1))
    assert manifest["selection"] == {"accident": unit["accident"]}
    assert manifest["chain"]["missing"] == [] and manifest["chain"]["head_seq"] == \
        unit["records"][-1]["seq"]
    ecu = json.loads(files["ecu.json"])
    assert ecu["versions"]["current"]["adas"]["F189"] == "2.1.0"
    assert ecu["swin"]["swin"] == "SWIN-0042"
    history = [json.loads(x) for x in files["ota-history.jsonl"].splitlines()]
    assert [h["activity_id"] for h in history] == ["upd-1", "upd-2"]
    assert b"PUBLIC KEY" in files["device-key.pem"]


def test_a_time_range_export_and_gaps_the_unit_no_longer_has(unit: dict[str, Any],
                                                            tmp_path: Path) -> None:
    from agent.timefmt import parse_iso

    recs = unit["records"]
    by_time = sorted(recs, key=lambda r: parse_iso(r["ts"]))
    first, last = by_time[1], by_time[-1]         # the drive has 4 records
    inside = [r["seq"] for r in recs
              if parse_iso(first["ts"]) <= parse_iso(r["ts"]) <= parse_iso(last["ts"])]
    out = tmp_path / "range.tar.gz"
    r = cli("export", "--config", str(unit["cfg"]), "--from", first["ts"], "--to", last["ts"],
            "-o", str(out))
    assert r.returncode == 0, r.stderr
    chain = json.loads(members(out)[MANIFEST])["chain"]
    assert (chain["first_seq"], chain["last_seq"]) == (min(inside), max(inside))
    assert cli("verify", str(out)).returncode == 0

    # A record pruned from the unit's archive: the export says so, the rest still verifies.
    gone = min(inside) + 1                          # inside the range
    assert gone < max(inside)
    db = StateDB(unit["db"])
    with db.transaction() as conn:
        removed = {t: conn.execute(f"SELECT * FROM {t} WHERE seq=?", (gone,)).fetchall()
                   for t in ("sent", "outbox")}
        for table in removed:
            conn.execute(f"DELETE FROM {table} WHERE seq=?", (gone,))
    try:
        r = cli("export", "--config", str(unit["cfg"]), "--from", first["ts"], "--to",
                last["ts"], "-o", str(out))
        assert r.returncode == 0 and "1 gap(s)" in r.stdout, r.stderr
        assert json.loads(members(out)[MANIFEST])["chain"]["missing"] == [[gone, gone]]
        r = cli("verify", str(out))
        assert r.returncode == 0 and f"{gone}..{gone}" in r.stderr, r.stdout + r.stderr
    finally:
        with db.transaction() as conn:
            for table, rows in removed.items():
                for row in rows:
                    conn.execute(f"INSERT INTO {table} VALUES ({','.join('?' * len(row))})",
                                 row)
        db.close()


def test_clear_errors_for_what_cannot_be_exported(unit: dict[str, Any],
                                                 tmp_path: Path) -> None:
    out = tmp_path / "x.tar.gz"
    r = cli("export", "--config", str(unit["cfg"]), "--accident", "no-such", "-o", str(out))
    assert r.returncode == 2 and "no records of accident no-such" in r.stderr
    r = cli("export", "--config", str(unit["cfg"]), "--from", "2026-07-01T08:00:00",
            "-o", str(out))
    assert r.returncode == 2 and "without a zone" in r.stderr
    assert not out.exists()
    r = cli("verify", str(unit["cfg"]))                 # a records file without --pubkey
    assert r.returncode == 2 and "--pubkey" in r.stderr


@pytest.fixture(scope="module")
def archive(unit: dict[str, Any]) -> Path:
    out = unit["tmp"] / "original.tar.gz"
    r = cli("export", "--config", str(unit["cfg"]), "--accident", unit["accident"],
            "-o", str(out))
    assert r.returncode == 0, r.stderr
    return out


def _edit_record(files: dict[str, bytes]) -> dict[str, bytes]:
    lines = files[RECORDS].decode().splitlines()
    rec = json.loads(lines[0])
    rec["data"]["cda_in_use_5s"] = not rec["data"].get("cda_in_use_5s")   # "it was off"
    lines[0] = record_line(rec)
    return {**files, RECORDS: ("\n".join(lines) + "\n").encode()}


def test_a_changed_record_fails_at_the_member_that_changed(archive: Path,
                                                           tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.tar.gz", _edit_record(members(archive)))
    r = cli("verify", str(bad))
    assert r.returncode == 1
    assert "FAILED: records.jsonl: SHA-256 does not match the signed manifest" in r.stdout


def test_a_changed_manifest_fails_on_its_hash_then_on_its_signature(
        archive: Path, tmp_path: Path) -> None:
    files = _edit_record(members(archive))
    manifest = json.loads(files[MANIFEST])
    manifest["files"][RECORDS]["sha256"] = hashlib.sha256(files[RECORDS]).hexdigest()
    files[MANIFEST] = json.dumps(manifest).encode()
    r = cli("verify", str(write(tmp_path / "m1.tar.gz", files)))
    assert r.returncode == 1 and "manifest.json: hash mismatch" in r.stdout
    manifest["hash"] = record_hash(manifest)
    files[MANIFEST] = json.dumps(manifest).encode()
    r = cli("verify", str(write(tmp_path / "m2.tar.gz", files)))
    assert r.returncode == 1 and "manifest.json: bad signature" in r.stdout


def test_a_re_signed_manifest_still_cannot_hide_a_changed_record(
        archive: Path, tmp_path: Path, unit: dict[str, Any]) -> None:
    """Even with the manifest re-made and signed, each record's own hash and signature
    give the change away."""
    import base64

    key = DeviceKey.load(unit["key"])
    files = _edit_record(members(archive))
    manifest = json.loads(files[MANIFEST])
    manifest["files"][RECORDS]["sha256"] = hashlib.sha256(files[RECORDS]).hexdigest()
    manifest["hash"] = record_hash(manifest)
    manifest["sig"] = base64.b64encode(key.sign(bytes.fromhex(manifest["hash"]))).decode()
    files[MANIFEST] = json.dumps(manifest).encode()
    r = cli("verify", str(write(tmp_path / "m3.tar.gz", files)))
    assert r.returncode == 1 and "records.jsonl: seq" in r.stdout
    assert "hash mismatch (content changed)" in r.stdout


def test_another_key_and_foreign_members_are_refused(archive: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.pub"
    other.write_text(DeviceKey.generate().public_pem())
    r = cli("verify", str(archive), "--pubkey", str(other))
    assert r.returncode == 1 and "not by the pinned key" in r.stdout
    files = members(archive)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, blob in {**files, "../../etc/cron.d/x": b"* * * * * root sh"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    evil = tmp_path / "evil.tar.gz"
    evil.write_bytes(gzip.compress(raw.getvalue()))
    r = cli("verify", str(evil))
    assert r.returncode == 1 and "unexpected member" in r.stdout
    truncated = tmp_path / "cut.tar.gz"
    truncated.write_bytes(archive.read_bytes()[:200])
    r = cli("verify", str(truncated))
    assert r.returncode == 1 and "FAILED" in r.stdout and "Traceback" not in r.stderr


def test_the_export_reads_the_keys_the_inventory_writes() -> None:
    from agent.ota import inventory
    from agent.records import export

    assert export.SWIN_KEY == inventory.SWIN_KEY
    assert {inventory.INITIAL_KEY, inventory.CURRENT_KEY, inventory.TAMPER_KEY} == {
        export.VERSIONS_PREFIX + k for k in ("initial", "current", "tamper")}
