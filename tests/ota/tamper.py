"""Hand-made tampering of the bench repositories (``hil.repo``), shared by the Uptane and
the campaign attack suites: each helper edits and re-signs real metadata the way an
attacker (or a careless repository owner) would, so the agent meets it over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, Signer, SSlibKey
from tuf.api.metadata import Metadata, MetaFile, Targets
from tuf.api.serialization.json import JSONSerializer

from agent.ota.uptane.time import format_time
from hil.repo import BenchRepository, ImageRepository, KeyStore


def alias_signer(keys: KeyStore, name: str, *, upper_hex: bool = True) -> CryptoSigner:
    """The private key ``name`` once more, under another key id (and, with ``upper_hex``,
    its public value spelled in upper-case hex): one key that looks like two."""
    original = keys.signer(name).public_key
    value = dict(original.keyval)
    if upper_hex:
        value["public"] = value["public"].upper()
    public = SSlibKey(f"alias-{original.keyid}", original.keytype, original.scheme, value)
    pem = keys.folder / f"{name}.key"
    private = load_pem_private_key(pem.read_bytes(), None)
    return CryptoSigner(private, public)  # type: ignore[arg-type]


def one_key_twice(image: ImageRepository, role: str, key_name: str) -> None:
    """``role`` asks for a threshold of 2 but lists only ``key_name``, under its own id
    and under an alias; the role is then re-signed with that one key under both ids."""
    signer = image.keys.signer(key_name)
    alias = alias_signer(image.keys, key_name)
    if role == Targets.type:
        with image.edit_root() as root:
            for keyid in list(root.roles[role].keyids):
                if keyid != signer.public_key.keyid:
                    root.revoke_key(keyid, role)
            root.add_key(alias.public_key, role)
            root.roles[role].threshold = 2
    else:
        with image.edit_targets(_delegator(image, role)) as targets:
            assert targets.delegations is not None
            targets.add_key(alias.public_key, role)
            assert targets.delegations.roles is not None
            targets.delegations.roles[role].threshold = 2
    image.signers_override[role] = [signer, alias]
    with image.edit_targets(role):
        pass
    image.publish()


def terminating_shadow(image: ImageRepository, pattern: str, *, first: str, inner: str,
                       rogue: str) -> None:
    """Delegations where ``rogue`` must never be asked about ``pattern``: targets delegates
    ``pattern`` to ``first`` (non-terminating; made so if it exists) and then to ``rogue``;
    ``first`` delegates it on to ``inner``, *terminating*. A target under ``pattern`` that
    ``inner`` does not list has no signer; sign it in ``rogue`` to attack."""
    top = image.open(Targets.type).signed.delegations
    if top is not None and first in (top.roles or {}):
        with image.edit_targets() as targets:
            assert targets.delegations is not None and targets.delegations.roles is not None
            targets.delegations.roles[first].terminating = False
    else:
        image.add_delegation(first, [pattern], None, terminating=False)
    image.add_delegation(inner, [pattern], None, terminating=True, delegator=first)
    image.add_delegation(rogue, [pattern], None, terminating=False)
    image.publish()


def forged_timestamp(repo: BenchRepository, signer: Signer, issued: datetime) -> bytes:
    """``repo``'s timestamp claiming to be issued at ``issued`` (expiring a day later),
    re-signed by ``signer`` alone: what the holder of the online timestamp key can serve."""
    md = Metadata.from_bytes(repo.metadata_bytes("timestamp"))
    md.signed.unrecognized_fields["issued"] = format_time(issued)
    md.signed.expires = issued + timedelta(days=1)
    md.signatures.clear()
    md.sign(signer)
    return md.to_bytes(JSONSerializer(compact=False))


JsonPath = tuple[str | int, ...]


def json_nodes(doc: Any, path: JsonPath = ()) -> Iterator[JsonPath]:
    """Every node of a JSON document (containers and leaves), as paths from the top."""
    yield path
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from json_nodes(value, (*path, key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from json_nodes(value, (*path, i))


def replaced(doc: Any, path: JsonPath, value: Any) -> Any:
    """A copy of ``doc`` with the node at ``path`` replaced by ``value``."""
    out = json.loads(json.dumps(doc))
    if not path:
        return value
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def rebound(repo: BenchRepository, prefix: str, role: str, data: bytes, *,
            snapshot_key: Signer, timestamp_key: Signer) -> dict[str, bytes]:
    """URL path -> body overrides serving ``data`` as the next version of ``role`` (a
    targets role, or ``snapshot``), bound into a snapshot and timestamp re-signed with the
    online keys: what an attacker holding only those keys can make the agent parse."""
    out: dict[str, bytes] = {}
    ts = Metadata.from_bytes(repo.metadata_bytes("timestamp"))
    if role == "snapshot":
        snap_bytes, snap_version = data, ts.signed.snapshot_meta.version + 1
    else:
        version = repo.open(role).signed.version + 1
        out[f"{prefix}/metadata/{version}.{role}.json"] = data
        snap = Metadata.from_bytes(repo.metadata_bytes("snapshot"))
        snap.signed.meta[f"{role}.json"] = MetaFile.from_data(version, data, ["sha256"])
        snap.signed.version += 1
        snap.signatures.clear()
        snap.sign(snapshot_key)
        snap_bytes, snap_version = snap.to_bytes(), snap.signed.version
    out[f"{prefix}/metadata/{snap_version}.snapshot.json"] = snap_bytes
    ts.signed.snapshot_meta = MetaFile.from_data(snap_version, snap_bytes, ["sha256"])
    ts.signed.version += 1
    ts.signatures.clear()
    ts.sign(timestamp_key)
    out[f"{prefix}/metadata/timestamp.json"] = ts.to_bytes()
    return out


def _delegator(image: ImageRepository, role: str) -> str:
    for name in image.roles():
        md = image.open(name)
        if isinstance(md.signed, Targets) and md.signed.delegations is not None \
                and role in (md.signed.delegations.roles or {}):
            return name
    raise KeyError(f"nobody delegates to {role!r}")


__all__ = ["alias_signer", "forged_timestamp", "json_nodes", "one_key_twice", "rebound",
           "replaced", "terminating_shadow"]
