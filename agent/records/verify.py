"""Check a run of records the way the backend must: every byte, signature and link.

Stops at the first bad record and says which one and why, in the order a tamperer would
have to defeat the checks: JSON, schema, hash, signature, chain link, seq, VIN.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.records.chain import ZERO_HASH, record_hash
from agent.records.keys import DeviceKey

MAX_MESSAGE = 200


@dataclass
class VerifyReport:
    ok: bool
    count: int                      # records that passed every check
    first_bad: int | None = None    # 1-based line (position in the input) of the first bad one
    reason: str = ""
    bad_seq: int | None = None      # seq and type of the bad record, when it has them
    bad_type: str | None = None
    first_seq: int | None = None
    last_seq: int | None = None
    vin: str | None = None
    notes: list[str] = field(default_factory=list)


class _Bad(Exception):
    pass


def load_schema() -> dict[str, Any]:
    """The record JSON Schema shipped with the package."""
    text = resources.files("agent.records").joinpath("schema.json").read_text("utf-8")
    return json.loads(text)


@lru_cache(maxsize=1)
def _validator() -> Any:
    try:
        from jsonschema import Draft202012Validator
    except ImportError:  # pragma: no cover - depends on the installation
        raise RuntimeError("checking records needs the jsonschema package "
                           "(pip install jsonschema)") from None
    return Draft202012Validator(load_schema())


def schema_problem(record: Any) -> str | None:
    """The most relevant schema violation of ``record`` as ``path: message``, or None."""
    from jsonschema.exceptions import best_match

    validator = _validator()
    if validator.is_valid(record):
        return None
    error = best_match(validator.iter_errors(record))
    if error is None:
        return None
    message = error.message
    if len(message) > MAX_MESSAGE:
        message = message[:MAX_MESSAGE] + "..."
    where = ".".join(str(p) for p in error.absolute_path)
    return f"{where}: {message}" if where else message


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _parse(item: dict | str | bytes) -> dict[str, Any]:
    if isinstance(item, bytes):
        try:
            item = item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Bad(f"not valid UTF-8 (byte {exc.start})") from None
    if isinstance(item, str):
        try:
            item = json.loads(item, parse_constant=_reject_constant)
        except ValueError as exc:
            raise _Bad(f"not valid JSON: {exc}") from None
    if not isinstance(item, dict):
        raise _Bad(f"not a JSON object but {type(item).__name__}")
    return item


def _public(key: Ed25519PublicKey | DeviceKey) -> Ed25519PublicKey:
    return key.public_key if isinstance(key, DeviceKey) else key


def verify_records(records: Iterable[dict | str | bytes],
                   public_key: Ed25519PublicKey | DeviceKey) -> VerifyReport:
    """Verify records in input order; blank strings are skipped but still count as lines."""
    key = _public(public_key)
    report = VerifyReport(ok=True, count=0)
    prev: dict[str, Any] | None = None
    for line, item in enumerate(records, start=1):
        if isinstance(item, (str, bytes)) and not item.strip():
            continue
        record: dict[str, Any] | None = None
        try:
            record = _parse(item)
            _check(record, prev, key, line, report)
        except _Bad as bad:
            report.ok = False
            report.first_bad = line
            report.reason = str(bad)
            if record is not None:
                seq, kind = record.get("seq"), record.get("type")
                report.bad_seq = seq if isinstance(seq, int) else None
                report.bad_type = kind if isinstance(kind, str) else None
            return report
        if prev is None:
            report.first_seq = record["seq"]
            report.vin = record["vin"]
        report.last_seq = record["seq"]
        report.count += 1
        prev = record
    return report


def _check(record: dict[str, Any], prev: dict[str, Any] | None, key: Ed25519PublicKey,
           line: int, report: VerifyReport) -> None:
    problem = schema_problem(record)
    if problem is not None:
        raise _Bad(f"schema: {problem}")
    try:
        digest = record_hash(record)
    except ValueError as exc:  # NaN inside a record handed over as a dict
        raise _Bad(f"not valid JSON: {exc}") from None
    if digest != record["hash"]:
        raise _Bad("hash mismatch (content changed)")
    try:
        key.verify(base64.b64decode(record["sig"], validate=True), bytes.fromhex(digest))
    except (InvalidSignature, binascii.Error):
        raise _Bad("bad signature (wrong key or tampered)") from None
    seq = record["seq"]
    if prev is None:
        if seq == 1 and record["prev_hash"] != ZERO_HASH:
            raise _Bad("chain broken: the first record (seq 1) must have an all-zero prev_hash")
        if seq > 1:
            report.notes.append(f"chain starts at seq {seq} (line {line}): its link to "
                                f"record {seq - 1} is not in the input and was not checked")
        return
    expected = prev["seq"] + 1
    if record["prev_hash"] != prev["hash"]:
        reason = f"chain broken: prev_hash does not match record {prev['seq']}"
        if seq > expected:
            reason += f" (seq gap: expected {expected}, got {seq}: record missing?)"
        elif seq < expected:
            reason += f" (seq out of order: expected {expected}, got {seq})"
        raise _Bad(reason)
    if seq > expected:
        raise _Bad(f"seq gap: expected {expected}, got {seq}")
    if seq < expected:
        raise _Bad(f"seq out of order: expected {expected}, got {seq}")
    if record["vin"] != prev["vin"]:
        raise _Bad(f"vin changed: expected {prev['vin']}, got {record['vin']}")
