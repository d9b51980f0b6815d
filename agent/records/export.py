"""Signed export for readout: one self-contained archive that a workshop or an
investigator checks offline (``icv-agent export`` / ``icv-agent verify ARCHIVE``).

The archive is a gzip'd tar of five members::

    manifest.json        what is inside, signed with the device key (hash + sig)
    records.jsonl        the records of the selection, seq order, as the chain made them
    device-key.pem       the device's public key (Ed25519)
    ecu.json             ECU software versions (initial, current, unexplained changes),
                         SWIN where the inventory has one
    ota-history.jsonl    the hash-chained OTA history (every update, its consent, result)

The records of a selection are a contiguous seq range (all records between the first and
the last selected one), so the chain links of every record are checked, not only their
signatures; seqs the unit no longer holds are declared in the manifest (``missing``) and
the chain is checked per segment. The manifest is hashed like a record (the chain's
``record_hash``: RFC 8785 canonical JSON without ``hash``/``sig``) and signed by the
device key, and it carries the SHA-256 of every other member: a changed byte anywhere
fails ``verify_archive`` with the member and the reason.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import io
import json
import sqlite3
import tarfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.ota.history import verify_entries
from agent.records.chain import record_hash, record_line
from agent.records.keys import DeviceKey, fingerprint
from agent.records.verify import verify_records
from agent.timefmt import iso_ms, parse_iso

FORMAT = "icv.export/1"
MANIFEST, RECORDS, KEY, ECU, HISTORY = ("manifest.json", "records.jsonl", "device-key.pem",
                                        "ecu.json", "ota-history.jsonl")
MEMBERS = (MANIFEST, RECORDS, KEY, ECU, HISTORY)
MAX_MEMBER = 256 * 1024 * 1024      # bytes read from one member at most (a hostile archive)
VERSIONS_PREFIX = "ota.versions."   # the inventory's kv keys (initial, current, tamper)
SWIN_KEY = "ota.swin"               # agent.ota.inventory.SWIN_KEY (not imported: no UDS here)


class ExportError(Exception):
    """The export cannot be made (no such accident, empty range, unreadable state db)."""


@dataclass
class Selection:
    """What to export: a time range (UTC epoch seconds) or one accident."""

    start: float | None = None
    end: float | None = None
    accident: str | None = None

    def describe(self) -> dict[str, Any]:
        if self.accident is not None:
            return {"accident": self.accident}
        return {"from": iso_ms(self.start) if self.start is not None else None,
                "to": iso_ms(self.end) if self.end is not None else None}


def parse_time(text: str) -> float:
    """``--from``/``--to``: ISO-8601 with a zone (an export must name its instants)."""
    return parse_iso(text, zone_required=True)


# -- reading the state db -----------------------------------------------------------------

def _open_ro(db_path: Path) -> sqlite3.Connection:
    if not db_path.exists():
        raise ExportError(f"{db_path}: no state database")
    try:
        conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        conn.execute("SELECT 1 FROM sqlite_master").fetchall()
    except sqlite3.Error as exc:
        raise ExportError(f"{db_path}: cannot read the state db: {exc}") from None
    return conn


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def stored_records(conn: sqlite3.Connection) -> dict[int, bytes]:
    """Every record the unit still holds, by seq: the outbox and the archive of sent ones."""
    tables = _tables(conn)
    out: dict[int, bytes] = {}
    for table in ("sent", "outbox"):
        if table in tables:
            for seq, payload in conn.execute(f"SELECT seq, payload FROM {table}"):
                out.setdefault(int(seq), bytes(payload))
    return out


def _kv(conn: sqlite3.Connection) -> dict[str, Any]:
    if "kv" not in _tables(conn):
        return {}
    out = {}
    for key, value in conn.execute("SELECT key, value FROM kv"):
        try:
            out[key] = json.loads(value)
        except ValueError:
            continue
    return out


def select(records: dict[int, bytes], sel: Selection) -> tuple[int, int]:
    """The seq range of the selection: first..last selected record (everything between)."""
    chosen = []
    for seq, payload in records.items():
        rec = json.loads(payload)
        if sel.accident is not None:
            if (rec.get("type", "").startswith("accident.")
                    and (rec.get("data") or {}).get("accident_id") == sel.accident):
                chosen.append(seq)
            continue
        try:
            ts = parse_iso(rec["ts"])
        except (KeyError, ValueError):
            continue
        if (sel.start is None or ts >= sel.start) and (sel.end is None or ts <= sel.end):
            chosen.append(seq)
    if not chosen:
        what = (f"accident {sel.accident}" if sel.accident is not None
                else f"{sel.describe()['from']} .. {sel.describe()['to']}")
        raise ExportError(f"no records of {what} on this unit")
    return min(chosen), max(chosen)


def segments(seqs: Iterable[int]) -> list[list[int]]:
    out: list[list[int]] = []
    for s in sorted(seqs):
        if out and s == out[-1][1] + 1:
            out[-1][1] = s
        else:
            out.append([s, s])
    return out


# -- writing ------------------------------------------------------------------------------

def build_archive(db_path: Path, key: DeviceKey, vin: str, sel: Selection,
                  *, now: float | None = None) -> tuple[bytes, dict[str, Any]]:
    """The archive bytes and its manifest."""
    conn = _open_ro(db_path)
    try:
        records = stored_records(conn)
        first, last = select(records, sel)
        kept = [s for s in range(first, last + 1) if s in records]
        lines = [record_line(json.loads(records[s])) for s in kept]
        kv = _kv(conn)
        history = ([json.loads(r[0]) for r in conn.execute(
            "SELECT entry FROM ota_history ORDER BY n")]
            if "ota_history" in _tables(conn) else [])
    finally:
        conn.close()
    versions = {k[len(VERSIONS_PREFIX):]: v for k, v in kv.items()
                if k.startswith(VERSIONS_PREFIX)}
    ecu = {"versions": versions, "swin": kv.get(SWIN_KEY)}
    head = kv.get("chain") if isinstance(kv.get("chain"), dict) else {}
    counts: dict[str, int] = {}
    for line in lines:
        t = json.loads(line)["type"]
        counts[t] = counts.get(t, 0) + 1
    files = {
        RECORDS: ("\n".join(lines) + "\n").encode("utf-8"),
        KEY: key.public_pem().encode("ascii"),
        ECU: (json.dumps(ecu, ensure_ascii=False, sort_keys=True, indent=1) + "\n"
              ).encode("utf-8"),
        HISTORY: "".join(json.dumps(e, ensure_ascii=False, sort_keys=True) + "\n"
                         for e in history).encode("utf-8"),
    }
    created = time.time() if now is None else now
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "vin": vin,
        "created": iso_ms(created),
        "selection": sel.describe(),
        "device_key": fingerprint(key.public_key),
        "chain": {"first_seq": first, "last_seq": last, "segments": segments(kept),
                  "missing": [[a, b] for a, b in _gaps(first, last, kept)],
                  "head_seq": head.get("seq"), "head_hash": head.get("head")},
        "counts": counts,
        "ota_history_entries": len(history),
        "files": {name: {"sha256": hashlib.sha256(blob).hexdigest(), "size": len(blob)}
                  for name, blob in files.items()},
    }
    manifest["hash"] = record_hash(manifest)
    manifest["sig"] = base64.b64encode(key.sign(bytes.fromhex(manifest["hash"]))
                                       ).decode("ascii")
    files = {MANIFEST: (json.dumps(manifest, ensure_ascii=False, indent=1) + "\n"
                        ).encode("utf-8"), **files}
    return _tar(files, created), manifest


def _gaps(first: int, last: int, kept: list[int]) -> list[tuple[int, int]]:
    have = set(kept)
    missing = [s for s in range(first, last + 1) if s not in have]
    return [(a, b) for a, b in segments(missing)]


def _tar(files: dict[str, bytes], mtime: float) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in MEMBERS:
            info = tarfile.TarInfo(name)
            info.size = len(files[name])
            info.mtime = int(mtime)
            info.mode = 0o444
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), mtime=int(mtime))


# -- checking -----------------------------------------------------------------------------

@dataclass
class ArchiveReport:
    ok: bool
    reason: str = ""
    manifest: dict[str, Any] = field(default_factory=dict)
    records: int = 0
    fingerprint: str = ""
    notes: list[str] = field(default_factory=list)


class _Bad(Exception):
    pass


def is_archive(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(2) == b"\x1f\x8b"
    except OSError:
        return False


def _members(blob: bytes) -> dict[str, bytes]:
    """The members of the archive, read in memory (never extracted to disk)."""
    out: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as tar:
            for info in tar:
                if info.name not in MEMBERS:
                    raise _Bad(f"unexpected member {info.name[:80]!r}")
                if not info.isreg():
                    raise _Bad(f"member {info.name} is not a regular file")
                if info.name in out:
                    raise _Bad(f"member {info.name} appears twice")
                if info.size > MAX_MEMBER:
                    raise _Bad(f"member {info.name} is {info.size} bytes "
                               f"(limit {MAX_MEMBER})")
                fh = tar.extractfile(info)
                assert fh is not None
                out[info.name] = fh.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _Bad(f"not a readable export archive (gzip'd tar): {exc}") from None
    missing = [m for m in MEMBERS if m not in out]
    if missing:
        raise _Bad(f"member(s) missing: {', '.join(missing)}")
    return out


def verify_archive(blob: bytes, pinned: Ed25519PublicKey | None = None) -> ArchiveReport:
    """Every check a reader needs, offline; stops at the first failure and says which."""
    report = ArchiveReport(ok=False)
    try:
        _verify(blob, pinned, report)
    except _Bad as bad:
        report.reason = str(bad)
        return report
    report.ok = True
    return report


def _verify(blob: bytes, pinned: Ed25519PublicKey | None, report: ArchiveReport) -> None:
    files = _members(blob)
    try:
        manifest = json.loads(files[MANIFEST])
    except ValueError as exc:
        raise _Bad(f"{MANIFEST}: not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _Bad(f"{MANIFEST}: not an {FORMAT} manifest")
    report.manifest = manifest
    try:
        public = serialization.load_pem_public_key(files[KEY])
    except (ValueError, TypeError):
        raise _Bad(f"{KEY}: not a PEM public key") from None
    if not isinstance(public, Ed25519PublicKey):
        raise _Bad(f"{KEY}: not an Ed25519 key")
    report.fingerprint = fingerprint(public)
    if pinned is not None and fingerprint(pinned) != report.fingerprint:
        raise _Bad(f"signed by device key {report.fingerprint}, not by the pinned key "
                   f"{fingerprint(pinned)}")
    if manifest.get("device_key") != report.fingerprint:
        raise _Bad(f"{MANIFEST}: names device key {manifest.get('device_key')}, the archive "
                   f"holds {report.fingerprint}")
    try:
        digest = record_hash(manifest)
    except (ValueError, TypeError) as exc:
        raise _Bad(f"{MANIFEST}: {exc}") from None
    if digest != manifest.get("hash"):
        raise _Bad(f"{MANIFEST}: hash mismatch (manifest changed)")
    try:
        public.verify(base64.b64decode(str(manifest.get("sig")), validate=True),
                      bytes.fromhex(digest))
    except (InvalidSignature, binascii.Error, ValueError):
        raise _Bad(f"{MANIFEST}: bad signature (not signed by this device key)") from None
    listed = manifest.get("files") or {}
    for name in (RECORDS, KEY, ECU, HISTORY):
        want = (listed.get(name) or {}).get("sha256")
        if hashlib.sha256(files[name]).hexdigest() != want:
            raise _Bad(f"{name}: SHA-256 does not match the signed manifest (changed)")
    _check_records(files[RECORDS], manifest, public, report)
    try:
        history = [json.loads(line) for line in files[HISTORY].splitlines() if line.strip()]
    except ValueError as exc:
        raise _Bad(f"{HISTORY}: not JSON lines: {exc}") from None
    chain = verify_entries(history)
    if not chain.ok:
        raise _Bad(f"{HISTORY}: {chain.reason}")


def _check_records(blob: bytes, manifest: dict[str, Any], public: Ed25519PublicKey,
                   report: ArchiveReport) -> None:
    lines = [line for line in blob.splitlines() if line.strip()]
    try:
        seqs = [json.loads(line)["seq"] for line in lines]
    except (ValueError, KeyError, TypeError):
        raise _Bad(f"{RECORDS}: a line without a seq") from None
    chain = manifest.get("chain") or {}
    if segments(seqs) != chain.get("segments") or seqs != sorted(seqs):
        raise _Bad(f"{RECORDS}: seqs do not match the manifest's segments")
    start = 0
    for first, last in chain["segments"]:
        part = lines[start:start + last - first + 1]
        start += len(part)
        result = verify_records(part, public)
        if not result.ok:
            raise _Bad(f"{RECORDS}: seq {result.bad_seq}: {result.reason}")
        if result.vin != manifest.get("vin"):
            raise _Bad(f"{RECORDS}: VIN {result.vin}, the manifest says {manifest.get('vin')}")
        report.notes += [n for n in result.notes if not n.startswith("chain starts")]
        report.records += result.count
    if chain.get("missing"):
        report.notes.append("seqs no longer on the unit (pruned before the export): "
                            + ", ".join(f"{a}..{b}" for a, b in chain["missing"]))
