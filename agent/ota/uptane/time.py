"""Secure time for expiry checks: the system clock alone can be set back to replay old,
expired-but-signed metadata (freeze attack), so the verifier asks a ``SecureTime``.

``FloorTime`` never returns a time below the latest *trusted* time it has seen (a signed
time attestation file, or the ``issued`` field of verified Director timestamp metadata);
that floor is persisted in the StateDB kv table so it survives reboots. The system clock
is only ever a candidate above the floor and is never persisted (a clock set far ahead
must not brick the vehicle's OTA for good).

Attestation file format (JSON)::

    {"signed": {"_type": "time-attestation", "time": "2025-06-01T08:00:00Z"},
     "signatures": [{"keyid": "...", "sig": "<hex>"}]}

signed over the canonical JSON of ``signed`` by one of the configured keys
(securesystemslib key dicts, Ed25519).
"""

from __future__ import annotations

import json
import logging
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

from securesystemslib.exceptions import UnverifiedSignatureError
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key, Signature

from agent.journal.statedb import StateDB

log = logging.getLogger(__name__)

FLOOR_KEY = "uptane.time.floor"
ATTESTATION_TYPE = "time-attestation"


class SecureTime(Protocol):
    def now(self) -> datetime:
        """Current UTC time (timezone-aware) to judge expiry against."""
        ...


class SystemTime:
    def now(self) -> datetime:
        return datetime.now(timezone.utc)


class FixedTime:
    """A settable clock for tests and offline checks."""

    def __init__(self, when: datetime):
        self._when = _aware(when)

    def now(self) -> datetime:
        return self._when

    def set(self, when: datetime) -> None:
        self._when = _aware(when)

    def advance(self, delta: timedelta) -> None:
        self._when += delta


def parse_time(text: str) -> datetime:
    """ISO-8601 with ``Z`` or an offset; naive times are taken as UTC."""
    return _aware(datetime.fromisoformat(text.replace("Z", "+00:00")))


def format_time(when: datetime) -> str:
    return _aware(when).astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def attestation_bytes(signed: dict[str, Any]) -> bytes:
    """The bytes an attestation signature covers (canonical JSON of ``signed``)."""
    return encode_canonical(signed).encode()


def load_public_key(path: Path) -> Key:
    """A public key file: a securesystemslib key dict plus its ``keyid``."""
    data = json.loads(Path(path).read_text())
    keyid = data.pop("keyid")
    return Key.from_dict(keyid, data)


class FloorTime:
    """``max(source.now(), trusted floor)``; the floor only moves forward."""

    def __init__(self, statedb: StateDB, source: SecureTime | None = None, *,
                 attestation: Path | None = None, keys: list[Key] | None = None):
        self.statedb = statedb
        self.source = source if source is not None else SystemTime()
        self.attestation = Path(attestation) if attestation else None
        self.keys = {k.keyid: k for k in (keys or [])}
        self.rejected_attestations = 0
        self._seen_mtime: float | None = None
        self._lock = threading.Lock()

    def floor(self) -> datetime | None:
        value = self.statedb.get(FLOOR_KEY)
        return parse_time(value) if value else None

    def observe(self, when: datetime, origin: str) -> bool:
        """Raise the persisted floor to ``when`` (from a verified source); True if it moved."""
        when = _aware(when)
        with self._lock, self.statedb.transaction():
            value = self.statedb.get(FLOOR_KEY)
            if value and parse_time(value) >= when:
                return False
            self.statedb.put_in(FLOOR_KEY, format_time(when))
        log.info("secure time floor raised to %s (%s)", format_time(when), origin)
        return True

    def now(self) -> datetime:
        self._read_attestation()
        current = _aware(self.source.now())
        floor = self.floor()
        return max(current, floor) if floor else current

    def _read_attestation(self) -> None:
        if self.attestation is None:
            return
        try:
            mtime = self.attestation.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._seen_mtime:
            return
        self._seen_mtime = mtime
        try:
            when = self.verify_attestation(self.attestation.read_bytes())
        except (OSError, ValueError) as exc:
            self.rejected_attestations += 1
            log.warning("time attestation %s rejected: %s", self.attestation, exc)
            return
        self.observe(when, f"attestation {self.attestation.name}")

    def verify_attestation(self, data: bytes) -> datetime:
        """Return the attested time; ValueError if malformed or not signed by a known key."""
        try:
            doc = json.loads(data)
            signed = doc["signed"]
            sigs = [Signature.from_dict(dict(s)) for s in doc["signatures"]]
            if signed.get("_type") != ATTESTATION_TYPE:
                raise ValueError(f"not a {ATTESTATION_TYPE}")
            when = parse_time(signed["time"])
        except (KeyError, TypeError, AttributeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed attestation: {exc!r}") from exc
        payload = attestation_bytes(signed)
        for sig in sigs:
            key = self.keys.get(sig.keyid)
            if key is None:
                continue
            try:
                key.verify_signature(sig, payload)
            except UnverifiedSignatureError:
                continue
            return when
        raise ValueError("no valid signature from a trusted time key")


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
