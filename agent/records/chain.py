"""Event records: sequence-numbered, hash-chained and signed, so gaps and edits show.

The chain head (last seq, last hash, id namespace) lives in the state database under
``"chain"`` and is read back there for every record: ``make`` runs inside the caller's
``db.transaction()``, so a record, the head it advances and whatever the caller stores
with it commit together, and a rollback leaves no gap and no stale head in memory.
"""

from __future__ import annotations

import base64
import hashlib
import math
import numbers
import re
import uuid
from collections.abc import Mapping
from typing import Any

from agent.jcs import MAX_SAFE_INTEGER, canonical_json, canonical_text
from agent.records.keys import DeviceKey
from agent.statestore import StateDB
from agent.timefmt import LATEST, iso_of_ms, to_ms

SCHEMA_VERSION = "icv.record/2"   # /2: hash over RFC 8785 JCS (docs/records.md)
ZERO_HASH = "0" * 64
STATE_KEY = "chain"
TIME_SOURCES = ("trace", "system", "gnss", "ntp", "rtc")
TYPE_PATTERN = re.compile(r"^[a-z]+(\.[a-z_]+)+$")
VIN_PATTERN = re.compile(r"^[A-Z0-9]{17}$")


class RecordError(ValueError):
    """A record cannot be built from what was given (NaN, a non-JSON value, a bad type)."""


class ChainError(Exception):
    """The chain cannot go on: misuse (no transaction) or a state db of another vehicle."""


def canonical_bytes(record: Mapping[str, Any]) -> bytes:
    """What ``hash`` covers: the record without ``hash`` and ``sig`` as RFC 8785 (JCS)
    canonical JSON, UTF-8 (docs/records.md); NaN/Infinity raise ``ValueError``."""
    return canonical_json({k: v for k, v in record.items() if k not in ("hash", "sig")})


def record_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``canonical_bytes``: what ``hash`` must be and ``prev_hash`` links to."""
    return hashlib.sha256(canonical_bytes(record)).hexdigest()


def record_line(record: Mapping[str, Any]) -> str:
    """One whole record as a JSONL line (no newline), in canonical form: same record, same
    bytes."""
    return canonical_text(record)


def format_ts(ts: float) -> str:
    """Epoch seconds (UTC) as ISO-8601 with milliseconds and ``Z``; exact integer maths."""
    if isinstance(ts, bool) or not isinstance(ts, numbers.Real):
        raise RecordError(f"ts: expected epoch seconds, got {type(ts).__name__}")
    if not math.isfinite(ts):
        raise RecordError(f"ts: {ts!r} is not a time")
    if not 0 <= ts < LATEST:
        raise RecordError(f"ts: {ts!r} is out of range")
    return iso_of_ms(to_ms(float(ts)))


def clean(value: Any, path: str = "data") -> Any:
    """A plain-JSON copy of ``value`` that serialises the same way every time.

    Enum members become their values, tuples lists; NaN/Infinity, non-string keys and
    anything JSON cannot carry raise ``RecordError`` naming where it sits.
    """
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise RecordError(f"{path}: string is not valid Unicode") from None
        return str.__str__(value)
    if isinstance(value, numbers.Integral):
        if abs(int(value)) > MAX_SAFE_INTEGER:
            raise RecordError(f"{path}: integer {int(value)} is outside ±(2**53 - 1), which "
                              "verifiers reading JSON numbers as doubles cannot hold")
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        if not math.isfinite(number):
            raise RecordError(f"{path}: {number!r} is not allowed in a record "
                              "(JSON has no NaN/Infinity)")
        return number
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecordError(f"{path}: key {key!r} is not a string")
            out[clean(key, path)] = clean(item, f"{path}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [clean(item, f"{path}[{i}]") for i, item in enumerate(value)]
    raise RecordError(f"{path}: a {type(value).__name__} cannot go into a record")


def _uuid(value: uuid.UUID | str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise RecordError(f"namespace: {value!r} is not a UUID") from None


class RecordChain:
    """The per-vehicle chain of event records on one state database.

    ``namespace`` seeds the record ids (uuid5 of namespace and seq). Left out, a random one
    is made and stored with the first record, so a re-created state db never reuses ids;
    offline analysis passes a fixed one so the same trace gives the same records.
    """

    def __init__(self, db: StateDB, key: DeviceKey, vin: str, *,
                 namespace: uuid.UUID | str | None = None):
        if not isinstance(vin, str) or not VIN_PATTERN.match(vin):
            raise RecordError(f"vin: {vin!r} is not a VIN (17 characters, A-Z and 0-9)")
        self.db = db
        self.key = key
        self.vin = vin
        wanted = _uuid(namespace) if namespace is not None else None
        state = self._state()
        if state is not None:
            if state["vin"] != vin:
                raise ChainError(f"the state db holds the chain of VIN {state['vin']}, "
                                 f"not of {vin}; use another state dir")
            stored = _uuid(state["namespace"])
            if wanted is not None and wanted != stored:
                raise ChainError(f"the state db chain uses namespace {stored}, not {wanted}")
            wanted = stored
        self._namespace = wanted or uuid.uuid4()

    def _state(self) -> dict[str, Any] | None:
        state = self.db.get(STATE_KEY)
        if state is None:
            return None
        if (not isinstance(state, dict) or not isinstance(state.get("seq"), int)
                or not isinstance(state.get("head"), str) or "namespace" not in state
                or "vin" not in state):
            raise ChainError(f"state db key {STATE_KEY!r} is damaged: {state!r}")
        return state

    @property
    def namespace(self) -> uuid.UUID:
        return self._namespace

    @property
    def seq(self) -> int:
        """Seq of the last record (0 before the first), as this connection sees it."""
        state = self._state()
        return 0 if state is None else state["seq"]

    @property
    def head(self) -> str:
        """Hash of the last record (zeros before the first)."""
        state = self._state()
        return ZERO_HASH if state is None else state["head"]

    def make(self, type: str, data: Mapping[str, Any], ts: float, *, time_source: str,
             mono: float | None = None) -> dict[str, Any]:
        """Build, hash and sign the next record and advance the head in the open transaction.

        Must run inside ``with db.transaction():``; the record exists once that commits.
        """
        if not isinstance(type, str) or not TYPE_PATTERN.match(type):
            raise RecordError(f"type: {type!r} does not look like 'family.event'")
        if time_source not in TIME_SOURCES:
            raise RecordError(f"time_source: {time_source!r} is not one of "
                              f"{', '.join(TIME_SOURCES)}")
        if not isinstance(data, Mapping):
            raise RecordError(f"data: expected an object, got {data.__class__.__name__}")
        body = clean(data)
        stamp = format_ts(ts)
        if mono is not None:
            if isinstance(mono, bool) or not isinstance(mono, numbers.Real):
                raise RecordError(f"mono: expected seconds, got {mono.__class__.__name__}")
            mono = clean(float(mono), "mono")
        with self.db.lock:
            if not self.db.conn.in_transaction:
                raise ChainError("RecordChain.make() must run inside db.transaction()")
            state = self._state()
            if state is None:
                seq, head, namespace = 1, ZERO_HASH, self._namespace
            else:
                seq, head = state["seq"] + 1, state["head"]
                namespace = self._namespace = _uuid(state["namespace"])
            record: dict[str, Any] = {
                "schema": SCHEMA_VERSION,
                "id": str(uuid.uuid5(namespace, str(seq))),
                "seq": seq,
                "type": type,
                "ts": stamp,
                "time_source": time_source,
            }
            if mono is not None:
                record["mono"] = mono
            record["vin"] = self.vin
            record["prev_hash"] = head
            record["data"] = body
            digest = hashlib.sha256(canonical_bytes(record)).digest()
            record["hash"] = digest.hex()
            record["sig"] = base64.b64encode(self.key.sign(digest)).decode("ascii")
            self.db.put_in(STATE_KEY, {"seq": seq, "head": record["hash"],
                                       "namespace": str(namespace), "vin": self.vin,
                                       "key": self.key.fingerprint})
        return record
