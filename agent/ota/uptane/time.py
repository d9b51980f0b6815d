"""Secure time for expiry checks: the system clock alone can be set back to replay old,
expired-but-signed metadata (freeze attack), so the verifier asks a ``SecureTime``.

``FloorTime`` never returns a time below the latest time it has *accepted*, persisted in
the StateDB kv table so it survives reboots. Two floors, because their sources are not
trusted alike:

- ``uptane.time.floor``: times from a source trusted for time, a signed time attestation
  (a file signed by a configured key, or one the Director embeds in its timestamp signed
  by a key its root delegates for time). It follows the attested time, however far.
- ``uptane.time.online``: the ``issued`` field of verified Director timestamp metadata.
  The timestamp key is an online key; alone it must not be able to move the clock to
  2036 and freeze every later update, so this floor rises at most ``max_step`` above the
  current trusted time (system clock or trusted floor, never this floor itself: repeated
  claims cannot walk it forward).

The system clock is only ever a candidate above the floors and is never persisted (a clock
set far ahead must not brick the vehicle's OTA for good).

Attestation format (JSON)::

    {"signed": {"_type": "time-attestation", "time": "2025-06-01T08:00:00Z"},
     "signatures": [{"keyid": "...", "sig": "<hex>"}]}

signed over the canonical JSON of ``signed`` by one of the trusted keys
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

from agent.ota.uptane.keys import key_value
from agent.security import installed
from agent.statestore import StateDB

log = logging.getLogger(__name__)

FLOOR_KEY = "uptane.time.floor"          # from sources trusted for time
ONLINE_KEY = "uptane.time.online"        # from the online timestamp role, bounded
ATTESTATION_TYPE = "time-attestation"
DEFAULT_MAX_STEP = timedelta(days=30)


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
    """``max(source.now(), floors)``; each floor only moves forward."""

    def __init__(self, statedb: StateDB, source: SecureTime | None = None, *,
                 attestation: Path | None = None, keys: list[Key] | None = None,
                 max_step: timedelta = DEFAULT_MAX_STEP):
        self.statedb = statedb
        self.source = source if source is not None else SystemTime()
        self.attestation = Path(attestation) if attestation else None
        self.keys = {k.keyid: k for k in (keys or [])}
        self.max_step = max_step
        self.rejected_attestations = 0
        self._seen_mtime: float | None = None
        self._lock = threading.Lock()

    def trusted_floor(self) -> datetime | None:
        """The floor set by sources trusted for time."""
        return self._get(FLOOR_KEY)

    def online_floor(self) -> datetime | None:
        """The floor set by the online timestamp role (bounded, see the module doc)."""
        return self._get(ONLINE_KEY)

    def floor(self) -> datetime | None:
        """The persisted floor ``now()`` never goes below."""
        floors = [f for f in (self.trusted_floor(), self.online_floor()) if f is not None]
        return max(floors) if floors else None

    def observe(self, when: datetime, origin: str) -> bool:
        """Raise the trusted floor to ``when``; only for a source trusted for time (a
        verified attestation). True if it moved."""
        return self._raise(FLOOR_KEY, _aware(when), origin)

    def observe_online(self, when: datetime, origin: str,
                       max_step: timedelta | None = None) -> datetime | None:
        """Raise the online floor towards ``when`` (a time an online role signed), at most
        ``max_step`` above the trusted time; returns the new floor if it moved."""
        step = self.max_step if max_step is None else max_step
        when = _aware(when)
        trusted = _aware(self.source.now())
        floor = self.trusted_floor()
        if floor is not None:
            trusted = max(trusted, floor)
        limit = trusted + step
        if when > limit:
            log.warning("%s claims %s, more than %s after the trusted time %s: the time "
                        "floor rises to %s only", origin, format_time(when), step,
                        format_time(trusted), format_time(limit))
            when = limit
        return when if self._raise(ONLINE_KEY, when, origin) else None

    def now(self) -> datetime:
        self._read_attestation()
        current = _aware(self.source.now())
        floor = self.floor()
        return max(current, floor) if floor else current

    def _get(self, key: str) -> datetime | None:
        value = self.statedb.get(key)
        return parse_time(value) if value else None

    def _raise(self, key: str, when: datetime, origin: str) -> bool:
        with self._lock, self.statedb.transaction():
            value = self.statedb.get(key)
            if value and parse_time(value) >= when:
                return False
            self.statedb.put_in(key, format_time(when))
        log.info("secure time floor (%s) raised to %s (%s)", key, format_time(when), origin)
        return True

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
            security = installed()[1]
            if security is not None:        # GB 44495: a signed time that does not verify
                security.report("signature_failure", {"source": "ota.time_attestation",
                                                      "file": str(self.attestation),
                                                      "error": str(exc)[:300]})
            return
        self.observe(when, f"attestation {self.attestation.name}")

    def verify_attestation(self, data: bytes) -> datetime:
        """Return the attested time; ValueError if malformed or not signed by a known key."""
        try:
            doc = json.loads(data)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"malformed attestation: {exc!r}") from exc
        return verify_attestation(doc, self.keys)


def verify_attestation(doc: Any, keys: dict[str, Key], threshold: int = 1) -> datetime:
    """The time ``doc`` attests, signed by ``threshold`` distinct ``keys`` (key id -> key);
    ValueError if malformed or not signed so."""
    try:
        signed = doc["signed"]
        sigs = [Signature.from_dict(dict(s)) for s in doc["signatures"]]
        if signed.get("_type") != ATTESTATION_TYPE:
            raise ValueError(f"not a {ATTESTATION_TYPE}")
        when = parse_time(signed["time"])
        payload = attestation_bytes(signed)
    except Exception as exc:   # wrong types, or floats canonical JSON refuses
        raise ValueError(f"malformed attestation: {exc!r}") from exc
    good: set[str] = set()
    for sig in sigs:
        key = keys.get(sig.keyid)
        if key is None:
            continue
        try:
            key.verify_signature(sig, payload)
        except UnverifiedSignatureError:
            continue
        good.add(key_value(key))
    if len(good) < max(1, threshold):
        raise ValueError(f"signed by {len(good)}/{max(1, threshold)} trusted time keys")
    return when


def attestation_doc(signer: Any, when: datetime) -> dict[str, Any]:
    """A signed time attestation of ``when`` (``signer``: a securesystemslib Signer)."""
    signed = {"_type": ATTESTATION_TYPE, "time": format_time(when)}
    return {"signed": signed, "signatures": [signer.sign(attestation_bytes(signed)).to_dict()]}


def _aware(when: datetime) -> datetime:
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)
