"""Key identity for thresholds: a key id is a name the delegator chose, not the key."""

from __future__ import annotations

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    PublicFormat,
    load_pem_public_key,
)
from securesystemslib.formats import encode_canonical
from securesystemslib.signer import Key


def key_value(key: Key) -> str:
    """What a key *is*, whatever its key id or spelling: the raw Ed25519 bytes or the DER
    of a PEM public key. Key ids are names chosen by the delegator, not the key itself,
    so a threshold is counted over these values."""
    public = key.keyval.get("public") if isinstance(key.keyval, dict) else None
    if isinstance(public, str):
        try:
            if key.keytype == "ed25519":
                return f"ed25519:{bytes.fromhex(public).hex()}"
            der = load_pem_public_key(public.encode()).public_bytes(
                Encoding.DER, PublicFormat.SubjectPublicKeyInfo)
            return f"spki:{der.hex()}"
        except (ValueError, TypeError, UnsupportedAlgorithm):
            pass
    try:
        return f"{key.keytype}:{encode_canonical(key.keyval)}"
    except Exception:   # noqa: BLE001 - not canonical JSON: compare as written
        return f"{key.keytype}:{key.keyval!r}"
