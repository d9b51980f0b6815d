"""Bench Uptane repositories on disk: an Image repository (with a delegated supplier
role) and a Director repository (one TUF repository per VIN, shared keys and root).

Built on ``tuf.repository.Repository`` (python-tuf's metadata-editing base): edits bump
versions, re-sign and write consistent-snapshot files (``N.root.json``, ``timestamp.json``,
``V.snapshot.json``, ``V.<role>.json``); ``publish()`` runs python-tuf's
``do_snapshot``/``do_timestamp``. Snapshot and timestamp carry length + SHA-256 of the files
they name. Knobs for attack tests: ``signers_override`` (sign a role with other keys),
``lifetimes`` and ``clock`` (expiry).
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from securesystemslib.signer import Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from agent.ota.uptane import custom
from agent.ota.uptane.time import attestation_doc, format_time
from hil.repo.keys import KeyStore

TOP = (Root.type, Timestamp.type, Snapshot.type, Targets.type)
DEFAULT_LIFETIMES = {Root.type: timedelta(days=365), Targets.type: timedelta(days=90),
                     Snapshot.type: timedelta(days=7), Timestamp.type: timedelta(days=1)}
_VIN = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class BenchRepository(Repository):
    """One TUF repository in ``folder`` (``metadata/`` and ``targets/``)."""

    def __init__(self, folder: Path | str, keys: KeyStore, *,
                 lifetimes: dict[str, timedelta] | None = None,
                 clock: Callable[[], datetime] = _utcnow):
        self.folder = Path(folder)
        self.meta_dir = self.folder / "metadata"
        self.targets_dir = self.folder / "targets"
        self.keys = keys
        self.lifetimes = {**DEFAULT_LIFETIMES, **(lifetimes or {})}
        self.clock = clock
        self.signers_override: dict[str, list[Signer]] = {}
        # Signs a time attestation of the issue time into every new timestamp.
        self.time_signer: Signer | None = None
        self._md: dict[str, Metadata] = {}
        self._bytes: dict[str, bytes] = {}
        self._load()

    # -- storage --------------------------------------------------------------------------
    def _load(self) -> None:
        if not self.meta_dir.exists():
            return
        roots = sorted(self.meta_dir.glob("*.root.json"), key=lambda p: int(p.name.split(".")[0]))
        if roots:
            self._remember(Root.type, roots[-1].read_bytes())
        ts = self.meta_dir / "timestamp.json"
        if not ts.exists():
            return
        self._remember(Timestamp.type, ts.read_bytes())
        sv = self._md[Timestamp.type].signed.snapshot_meta.version
        self._remember(Snapshot.type, (self.meta_dir / f"{sv}.snapshot.json").read_bytes())
        for fname, meta in self._md[Snapshot.type].signed.meta.items():
            role = fname[: -len(".json")]
            self._remember(role, (self.meta_dir / f"{meta.version}.{fname}").read_bytes())

    def _remember(self, role: str, data: bytes) -> None:
        self._md[role] = Metadata.from_bytes(data)
        self._bytes[role] = data

    def open(self, role: str) -> Metadata:
        if role in self._md:
            return copy.deepcopy(self._md[role])
        signed: Any
        if role == Root.type:
            signed = Root()
        elif role == Timestamp.type:
            signed = Timestamp()
        elif role == Snapshot.type:
            signed = Snapshot(meta={})
        else:
            signed = Targets()
        return Metadata(signed)

    def close(self, role: str, md: Metadata) -> None:
        old = self._md.get(role)
        if old is not None:
            md.signed.version = old.signed.version + 1
        now = self.clock()
        md.signed.expires = now + self.lifetimes.get(role, self.lifetimes[Targets.type])
        if role == Timestamp.type:
            md.signed.unrecognized_fields["issued"] = format_time(now)
            if self.time_signer is not None:
                md.signed.unrecognized_fields[custom.TIMESTAMP_TIME_ATTESTATION] = \
                    attestation_doc(self.time_signer, now)
            info = self.snapshot_info
            if info.version == md.signed.snapshot_meta.version:
                md.signed.snapshot_meta = info
        elif role == Snapshot.type:
            for fname, info in self.targets_infos.items():
                if fname in md.signed.meta and md.signed.meta[fname].version == info.version:
                    md.signed.meta[fname] = info
        self._sign(role, md, old)
        self._write(role, md)

    def _sign(self, role: str, md: Metadata, old: Metadata | None) -> None:
        md.signatures.clear()
        signers = self.signers_override.get(role)
        if signers is None:
            keyids = list(self._delegator_keyids(role, md))
            if role == Root.type and old is not None:   # rotation: old and new threshold
                keyids += old.signed.roles[Root.type].keyids
            mine = self.keys.by_keyid()
            signers = [mine[k] for k in dict.fromkeys(keyids) if k in mine]
        for signer in signers:
            md.sign(signer, append=True)

    def _delegator_keyids(self, role: str, md: Metadata) -> list[str]:
        if role == Root.type:
            return md.signed.roles[Root.type].keyids
        if role in TOP:
            return self._md[Root.type].signed.roles[role].keyids
        for other in self._md.values():
            if isinstance(other.signed, Targets) and other.signed.delegations is not None:
                roles = other.signed.delegations.roles or {}
                if role in roles:
                    return roles[role].keyids
        raise ValueError(f"nobody delegates to {role!r}")

    def _write(self, role: str, md: Metadata) -> None:
        self.meta_dir.mkdir(parents=True, exist_ok=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        if role == Timestamp.type:
            names = ["timestamp.json"]
        elif role == Root.type:
            names = [f"{md.signed.version}.root.json", "root.json"]
        else:
            names = [f"{md.signed.version}.{role}.json"]
        for name in names:
            tmp = self.meta_dir / f".{name}.tmp"
            tmp.write_bytes(data)
            tmp.replace(self.meta_dir / name)
        self._md[role] = md
        self._bytes[role] = data

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        return {f"{role}.json": MetaFile.from_data(md.signed.version, self._bytes[role],
                                                   ["sha256"])
                for role, md in self._md.items() if isinstance(md.signed, Targets)}

    @property
    def snapshot_info(self) -> MetaFile:
        md = self._md[Snapshot.type]
        return MetaFile.from_data(md.signed.version, self._bytes[Snapshot.type], ["sha256"])

    # -- operations -----------------------------------------------------------------------
    def init_root(self, prefix: str, thresholds: dict[str, int] | None = None) -> None:
        """Create keys ``<prefix>-<role>[-n]`` and root v1 (threshold keys per role)."""
        thresholds = thresholds or {}
        with self.edit_root() as root:
            for role in TOP:
                n = thresholds.get(role, 1)
                for i in range(1, n + 1):
                    name = f"{prefix}-{role}" + (f"-{i}" if n > 1 else "")
                    root.add_key(self.keys.ensure(name).public_key, role)
                root.roles[role].threshold = n

    def publish(self, force: bool = False) -> None:
        """New snapshot (if any targets role changed) and a new timestamp."""
        self.do_snapshot(force=force)
        self.do_timestamp(force=True)

    key_prefix = "bench"

    def rotate_root(self, key_names: list[str] | None = None, threshold: int = 1) -> Root:
        """Root N+1 with new root key(s), signed by the old and the new threshold."""
        names = key_names or [f"{self.key_prefix}-root-{self.root().version + 1}"]
        with self.edit_root() as root:
            for keyid in list(root.roles[Root.type].keyids):
                root.revoke_key(keyid, Root.type)
            for name in names:
                root.add_key(self.keys.ensure(name).public_key, Root.type)
            root.roles[Root.type].threshold = threshold
        return self.root()

    def bump_expiry(self, role: str) -> None:
        """Re-sign ``role`` with a fresh expiry (new version)."""
        with self.edit(role):
            pass
        if role not in (Timestamp.type, Root.type):
            self.publish()

    def roles(self) -> list[str]:
        return list(self._md)

    def expires(self, role: str) -> datetime:
        return self._md[role].signed.expires

    def metadata_bytes(self, role: str) -> bytes:
        return self._bytes[role]


class ImageRepository(BenchRepository):
    """Image repository: top-level targets delegates to supplier roles."""

    key_prefix = "image"

    @classmethod
    def create(cls, folder: Path | str, keys: KeyStore, *, targets_threshold: int = 1,
               delegations: dict[str, tuple[list[str], list[str] | None]] | None = None,
               **kw: Any) -> ImageRepository:
        repo = cls(folder, keys, **kw)
        if Root.type in repo._md:
            raise FileExistsError(f"{folder} already holds a repository")
        repo.init_root("image", {Targets.type: targets_threshold})
        with repo.edit_targets():
            pass
        for name, (paths, hw_ids) in (delegations or {"supplier": (["*"], None)}).items():
            repo.add_delegation(name, paths, hw_ids)
        repo.publish(force=True)
        return repo

    def add_delegation(self, name: str, paths: list[str], hardware_ids: list[str] | None,
                       *, terminating: bool = True, key_name: str | None = None,
                       delegator: str = Targets.type) -> None:
        """Delegate ``paths`` (for ``hardware_ids``, None: any) to a new role ``name``, after
        the roles ``delegator`` already delegates to (lower priority)."""
        key = self.keys.ensure(key_name or f"image-{name}").public_key
        with self.edit_targets(delegator) as targets:
            if targets.delegations is None:
                targets.delegations = Delegations({}, {})
            fields = {custom.DELEGATION_HARDWARE_IDS: hardware_ids} if hardware_ids else None
            assert targets.delegations.roles is not None
            targets.delegations.roles[name] = DelegatedRole(name, [], 1, terminating, paths,
                                                            unrecognized_fields=fields)
            targets.add_key(key, name)
        with self.edit_targets(name):
            pass

    def add_image(self, path: str, source: bytes | Path, hardware_id: str,
                  release_counter: int, *, role: str | None = None,
                  versions: dict[str, str] | None = None,
                  hash_algorithms: tuple[str, ...] = ("sha256",), publish: bool = True
                  ) -> TargetFile:
        """Store the image as ``targets/<dir>/<hash>.<file>`` and sign it in ``role``
        (default: the first delegated role whose paths match, else top-level targets)."""
        if not custom.SAFE_PATH.fullmatch(path):
            raise ValueError(f"unsafe target path {path!r}")
        role = role or self.role_for(path)
        if isinstance(source, (bytes, bytearray)):
            info = TargetFile.from_data(path, bytes(source), list(hash_algorithms))
        else:
            info = TargetFile.from_file(path, str(source), list(hash_algorithms))
        info.unrecognized_fields["custom"] = custom.image_custom(hardware_id, release_counter,
                                                                 versions)
        folder, _, base = path.rpartition("/")
        dest_dir = self.targets_dir / folder
        dest_dir.mkdir(parents=True, exist_ok=True)
        for digest in info.hashes.values():
            dest = dest_dir / f"{digest}.{base}"
            if isinstance(source, (bytes, bytearray)):
                dest.write_bytes(source)
            else:
                shutil.copyfile(source, dest)
        with self.edit_targets(role) as targets:
            targets.targets[path] = info
        if publish:
            self.publish()
        return info

    def role_for(self, path: str) -> str:
        delegations = self._md[Targets.type].signed.delegations
        for role in (delegations.roles or {}).values() if delegations else ():
            if role.is_delegated_path(path):
                return role.name
        return Targets.type

    def target(self, path: str) -> tuple[TargetFile, str]:
        for role, md in self._md.items():
            if isinstance(md.signed, Targets) and path in md.signed.targets:
                return md.signed.targets[path], role
        raise KeyError(f"no image {path!r} in {self.folder}")


class DirectorRepository:
    """Director: one TUF repository per VIN under ``folder/<vin>``; keys and root shared.

    The shared root chain lives in ``folder/_root``; every vehicle repository gets a copy
    of each root version, so the agent bootstraps from ``folder/_root/metadata/root.json``.
    """

    def __init__(self, folder: Path | str, keys: KeyStore, **kw: Any):
        self.folder = Path(folder)
        self.keys = keys
        self.kw = kw
        self.shared = BenchRepository(self.folder / "_root", keys, **kw)
        self.shared.key_prefix = "director"
        # Applied to every vehicle repository (attack tests: sign with other keys).
        self.signers_override: dict[str, list[Signer]] = {}
        self.time_signer: Signer | None = None

    @classmethod
    def create(cls, folder: Path | str, keys: KeyStore, **kw: Any) -> DirectorRepository:
        director = cls(folder, keys, **kw)
        if Root.type in director.shared._md:
            raise FileExistsError(f"{folder} already holds a Director repository")
        director.shared.init_root("director")
        return director

    @property
    def root_path(self) -> Path:
        return self.shared.meta_dir / "root.json"

    def vehicles(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir()
                      if p.is_dir() and not p.name.startswith("_"))

    def vehicle(self, vin: str) -> BenchRepository:
        if not _VIN.fullmatch(vin):
            raise ValueError(f"bad VIN {vin!r}")
        folder = self.folder / vin
        fresh = not (folder / "metadata" / "timestamp.json").exists()
        self._copy_roots(folder)
        repo = BenchRepository(folder, self.keys, **self.kw)
        repo.signers_override = self.signers_override
        repo.time_signer = self.time_signer
        if fresh:
            with repo.edit_targets() as targets:
                targets.unrecognized_fields["custom"] = {custom.VIN: vin}
            repo.publish(force=True)
        return repo

    def _copy_roots(self, folder: Path) -> None:
        meta = folder / "metadata"
        meta.mkdir(parents=True, exist_ok=True)
        for src in self.shared.meta_dir.glob("*.root.json"):
            if not (meta / src.name).exists():
                shutil.copyfile(src, meta / src.name)
        shutil.copyfile(self.root_path, meta / "root.json")

    def assign(self, vin: str, ecu_id: str, image: TargetFile, *, hardware_id: str | None = None,
               release_counter: int | None = None, versions: dict[str, str] | None = None,
               path: str | None = None, publish: bool = True, downgrade: bool = False
               ) -> TargetFile:
        """Tell ``vin`` to install ``image`` on ``ecu_id`` (custom fields default to the
        Image repository's; ``downgrade``: explicitly below the ECU's release floor)."""
        icustom = image.custom if isinstance(image.custom, dict) else {}
        hw = hardware_id if hardware_id is not None else icustom[custom.HARDWARE_ID]
        counter = release_counter if release_counter is not None \
            else icustom[custom.RELEASE_COUNTER]
        vers = versions if versions is not None else icustom.get(custom.VERSION, {})
        info = TargetFile(image.length, dict(image.hashes), path or image.path,
                          {"custom": custom.director_custom(ecu_id, hw, counter, vers,
                                                            downgrade)})
        repo = self.vehicle(vin)
        with repo.edit_targets() as targets:
            for p in [p for p, t in targets.targets.items()
                      if isinstance(t.custom, dict) and t.custom.get(custom.ECU_ID) == ecu_id]:
                del targets.targets[p]
            targets.targets[info.path] = info
        if publish:
            repo.publish()
        return info

    def clear(self, vin: str) -> None:
        repo = self.vehicle(vin)
        with repo.edit_targets() as targets:
            targets.targets.clear()
        repo.publish()

    def rotate_root(self, key_names: list[str] | None = None, threshold: int = 1) -> Root:
        root = self.shared.rotate_root(key_names, threshold)
        for vin in self.vehicles():
            self._copy_roots(self.folder / vin)
        return root

    def delegate_time(self, key_name: str = "director-time", *, sign: bool = True) -> Signer:
        """Root N+1 trusts ``key_name`` for time; with ``sign``, every new timestamp then
        carries a time attestation it signed (Uptane's time server, kept simple)."""
        signer = self.keys.ensure(key_name)
        key = signer.public_key
        with self.shared.edit_root() as root:
            root.keys[key.keyid] = key
            root.unrecognized_fields[custom.ROOT_TIME_KEYS] = {"keyids": [key.keyid],
                                                               "threshold": 1}
        for vin in self.vehicles():
            self._copy_roots(self.folder / vin)
        if sign:
            self.time_signer = signer
        return signer


def write_time_attestation(path: Path | str, signer: Signer, when: datetime) -> Path:
    """A signed time file for ``agent.ota.uptane.time.FloorTime``."""
    path = Path(path)
    path.write_text(json.dumps(attestation_doc(signer, when), indent=1))
    return path
