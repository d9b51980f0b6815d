"""Check one incoming record: JSON, schema, topic, pinned vehicle key, hash, signature.

The checks run in the order a forger would have to defeat them, and always all of them:
a record that claims a known ``id`` and ``hash`` is only a duplicate once its content has
been hashed and its signature checked, so a changed copy of a stored record is caught as
tampering, never waved through as a re-send.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.records.chain import VIN_PATTERN, record_hash
from agent.records.keys import KeyFileError, fingerprint, load_public_key
from agent.records.verify import schema_problem

log = logging.getLogger(__name__)

MAX_RECORD = 1024 * 1024
REASONS = ("too_large", "malformed", "schema", "topic_mismatch", "unknown_vin", "hash",
           "signature")


class RecordRejected(Exception):
    """A record failed a check; ``reason`` is one of ``REASONS``."""

    def __init__(self, reason: str, detail: str, record: Mapping[str, Any] | None = None):
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.record = record


class VehicleKeys:
    """The pinned public keys of the fleet: ``<VIN>.pem`` files in a folder and/or a mapping.

    A VIN not known yet is looked up in the folder again when its first record arrives, so
    a vehicle can be added to a running backend by dropping its key file in place.
    """

    def __init__(self, folder: str | Path | None = None,
                 keys: Mapping[str, Ed25519PublicKey] | None = None):
        self.folder = Path(folder) if folder is not None else None
        self._keys: dict[str, Ed25519PublicKey] = dict(keys or {})
        self._lock = threading.Lock()
        if self.folder is not None:
            if not self.folder.is_dir():
                raise KeyFileError(f"{self.folder}: vehicle key folder not found")
            for path in sorted(self.folder.glob("*.pem")):
                if VIN_PATTERN.match(path.stem):
                    self._keys[path.stem] = load_public_key(path)
                else:
                    log.warning("%s: not named <VIN>.pem; ignored", path)

    def get(self, vin: str) -> Ed25519PublicKey | None:
        with self._lock:
            key = self._keys.get(vin)
            if key is None and self.folder is not None and VIN_PATTERN.match(vin):
                path = self.folder / f"{vin}.pem"
                if path.is_file():
                    try:
                        key = self._keys[vin] = load_public_key(path)
                        log.info("%s: key %s pinned from %s", vin, fingerprint(key), path)
                    except KeyFileError as exc:
                        log.error("%s", exc)
            return key

    def add(self, vin: str, key: Ed25519PublicKey) -> None:
        with self._lock:
            self._keys[vin] = key

    def __len__(self) -> int:
        return len(self._keys)

    def vins(self) -> list[str]:
        with self._lock:
            return sorted(self._keys)


@dataclass(frozen=True)
class Checked:
    """A record that passed every check, with the text it arrived as."""

    record: dict[str, Any]
    text: str
    key_id: str


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_record(payload: bytes, keys: VehicleKeys, *, topic_vin: str | None = None,
                 topic_type: str | None = None) -> Checked:
    """The verified record, or ``RecordRejected`` naming the first failed check."""
    if len(payload) > MAX_RECORD:
        raise RecordRejected("too_large", f"{len(payload)} bytes")
    try:
        text = payload.decode("utf-8")
        record = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise RecordRejected("malformed", f"not UTF-8 (byte {exc.start})") from None
    except ValueError as exc:
        raise RecordRejected("malformed", f"not JSON: {str(exc)[:120]}") from None
    if not isinstance(record, dict):
        raise RecordRejected("malformed", f"not a JSON object but {type(record).__name__}")
    problem = schema_problem(record)
    if problem is not None:
        raise RecordRejected("schema", problem, record)
    vin = record["vin"]
    if topic_vin is not None and topic_vin != vin:
        raise RecordRejected("topic_mismatch", f"record of {vin} on the topic of "
                             f"{topic_vin[:40]!r}", record)
    if topic_type is not None and topic_type != record["type"]:
        raise RecordRejected("topic_mismatch", f"{record['type']} record on the topic of "
                             f"{topic_type[:60]!r}", record)
    key = keys.get(vin)
    if key is None:
        raise RecordRejected("unknown_vin", f"no pinned key for {vin}", record)
    digest = record_hash(record)
    if digest != record["hash"]:
        raise RecordRejected("hash", "hash mismatch (content changed)", record)
    try:
        key.verify(base64.b64decode(record["sig"], validate=True), bytes.fromhex(digest))
    except (InvalidSignature, binascii.Error):
        raise RecordRejected("signature", "bad signature (wrong key or forged)", record) from None
    return Checked(record, text, fingerprint(key))
