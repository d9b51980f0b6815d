"""Full verification of one repository (Uptane Standard "Full verification", TUF client
workflow) on python-tuf's metadata API, judged against an injected secure time.

python-tuf's ``Updater`` reads the system clock and knows one repository; the Primary
needs two and a secure time, so the steps are written out here: root chain N -> N+1 (both
thresholds), timestamp, snapshot bound by hash/length/version, targets and delegated
targets bound by the snapshot, per-role byte caps, and anti-rollback versions persisted in
the StateDB kv table (``uptane.repo.<name>``) so they survive reboots.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import (
    Metadata,
    MetaFile,
    Root,
    Signed,
    Snapshot,
    TargetFile,
    Targets,
    VerificationResult,
)
from tuf.api.metadata import Timestamp as TimestampRole
from tuf.api.serialization import DeserializationError, SerializationError

from agent.ota.uptane.custom import DELEGATION_HARDWARE_IDS
from agent.ota.uptane.download import HttpFetcher, NotFound
from agent.ota.uptane.errors import (
    ArbitrarySoftware,
    DownloadFailed,
    Freeze,
    MixAndMatch,
    Rollback,
    UpdateRejected,
)
from agent.ota.uptane.keys import key_value
from agent.statestore import StateDB

log = logging.getLogger(__name__)

S = TypeVar("S", bound=Signed)


@dataclass
class RoleCaps:
    root: int = 512 * 1024
    timestamp: int = 16 * 1024
    snapshot: int = 2 * 1024 * 1024
    targets: int = 5 * 1024 * 1024


class TrustedRepository:
    """Trusted metadata of one repository; ``refresh(now)`` then ``find_target()``."""

    def __init__(self, name: str, base_url: str, fetcher: HttpFetcher, statedb: StateDB, *,
                 bootstrap_root: bytes, caps: RoleCaps | None = None,
                 max_rotations: int = 32, max_delegations: int = 32,
                 allow_delegations: bool = True):
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.fetcher = fetcher
        self.statedb = statedb
        self.caps = caps or RoleCaps()
        self.max_rotations = max_rotations
        self.max_delegations = max_delegations
        self.allow_delegations = allow_delegations
        self._bootstrap_root = bootstrap_root
        self.state_key = f"uptane.repo.{name}"
        self.root: Root | None = None
        self.timestamp: TimestampRole | None = None
        self.snapshot: Snapshot | None = None
        self.targets: dict[str, Targets] = {}
        # Verified bytes of this refresh, for Secondaries that verify themselves.
        self.raw: dict[str, bytes] = {}
        self._now: datetime | None = None
        self._state: dict[str, Any] = {}

    # -- refresh --------------------------------------------------------------------
    def refresh(self, now: datetime) -> Targets:
        """Verify root, timestamp, snapshot and top-level targets; return targets."""
        self._now = now
        self.raw = {}
        self.targets = {}
        self._state = self._load_state()
        self._update_root()
        self._update_timestamp()
        self._update_snapshot()
        targets = self._update_targets(Targets.type, self._trusted_root())
        if not self.allow_delegations and targets.delegations is not None:
            raise ArbitrarySoftware("Director targets must not delegate", repo=self.name,
                                    role=Targets.type)
        self._save_state()
        return targets

    def _load_state(self) -> dict[str, Any]:
        state = self.statedb.get(self.state_key)
        if state is None:
            md = self._parse(self._bootstrap_root, Root, "root")
            self._verify(md.signed, "root", md)   # the trust anchor signs itself
            state = {"root": md.to_dict(), "timestamp": 0, "snapshot": 0, "meta": {},
                     "targets": {}}
        self.root = Metadata.from_dict(copy.deepcopy(state["root"])).signed  # type: ignore
        return state

    def _save_state(self) -> None:
        self.statedb.put(self.state_key, self._state)

    def _trusted_root(self) -> Root:
        assert self.root is not None
        return self.root

    def _update_root(self) -> None:
        root = self._trusted_root()
        for _ in range(self.max_rotations):
            nxt = root.version + 1
            try:
                data = self._fetch(f"{nxt}.root.json", self.caps.root, may_be_missing=True)
            except NotFound:
                break
            md = self._parse(data, Root, "root")
            new = md.signed
            if new.version != nxt:
                cls = Rollback if new.version <= root.version else ArbitrarySoftware
                raise cls(f"{nxt}.root.json holds version {new.version}, expected {nxt}",
                          repo=self.name, role="root")
            try:
                result = new.get_root_verification_result(root, md.signed_bytes,
                                                          md.signatures)
            except ValueError as exc:
                raise ArbitrarySoftware(str(exc), repo=self.name, role="root") from exc
            for which, part in (("previous", result.first), ("new", result.second)):
                distinct = distinct_signers(part)
                if distinct < part.threshold:
                    raise ArbitrarySoftware(
                        f"root v{nxt} signed by {distinct}/{part.threshold} distinct keys "
                        f"of the {which} root", repo=self.name, role="root")
            # Fast-forward recovery: rotated timestamp/snapshot keys reset their floors.
            if set(new.roles["timestamp"].keyids) != set(root.roles["timestamp"].keyids):
                self._state["timestamp"] = 0
            if set(new.roles["snapshot"].keyids) != set(root.roles["snapshot"].keyids):
                self._state["snapshot"] = 0
                self._state["meta"] = {}
            log.info("%s: root rotated v%d -> v%d", self.name, root.version, new.version)
            root = new
            self.root = new
            self._state["root"] = md.to_dict()
            self.raw[f"{nxt}.root.json"] = data
        else:
            log.warning("%s: stopped after %d root rotations", self.name, self.max_rotations)
        self._check_expiry(root, "root")

    def _update_timestamp(self) -> None:
        data = self._fetch("timestamp.json", self.caps.timestamp)
        md = self._parse(data, TimestampRole, "timestamp")
        self._verify(self._trusted_root(), "timestamp", md)
        ts = md.signed
        if ts.version < self._state["timestamp"]:
            raise Rollback(f"timestamp v{ts.version} is older than trusted "
                           f"v{self._state['timestamp']}", repo=self.name, role="timestamp")
        if ts.snapshot_meta.version < self._state["snapshot"]:
            raise Rollback(f"timestamp names snapshot v{ts.snapshot_meta.version}, trusted "
                           f"is v{self._state['snapshot']}", repo=self.name, role="timestamp")
        self._check_expiry(ts, "timestamp")
        self.timestamp = ts
        self._state["timestamp"] = ts.version
        self.raw["timestamp.json"] = data

    def _update_snapshot(self) -> None:
        assert self.timestamp is not None
        meta = self.timestamp.snapshot_meta
        data = self._fetch(f"{meta.version}.snapshot.json",
                           min(self.caps.snapshot, meta.length or self.caps.snapshot))
        self._bind(meta, data, "snapshot")
        md = self._parse(data, Snapshot, "snapshot")
        self._verify(self._trusted_root(), "snapshot", md)
        snap = md.signed
        if snap.version != meta.version:
            raise MixAndMatch(f"snapshot v{snap.version} served where timestamp names "
                              f"v{meta.version}", repo=self.name, role="snapshot")
        if snap.version < self._state["snapshot"]:
            raise Rollback(f"snapshot v{snap.version} is older than trusted "
                           f"v{self._state['snapshot']}", repo=self.name, role="snapshot")
        for fname, old_version in self._state["meta"].items():
            new_meta = snap.meta.get(fname)
            if new_meta is None:
                raise Rollback(f"snapshot dropped {fname}", repo=self.name, role="snapshot")
            if new_meta.version < old_version:
                raise Rollback(f"snapshot lists {fname} v{new_meta.version}, trusted is "
                               f"v{old_version}", repo=self.name, role="snapshot")
        self._check_expiry(snap, "snapshot")
        self.snapshot = snap
        self._state["snapshot"] = snap.version
        self._state["meta"] = {k: v.version for k, v in snap.meta.items()}
        self.raw[f"{snap.version}.snapshot.json"] = data

    def _update_targets(self, role: str, delegator: Root | Targets) -> Targets:
        assert self.snapshot is not None
        meta = self.snapshot.meta.get(f"{role}.json")
        if meta is None:
            raise MixAndMatch(f"snapshot does not list {role}.json", repo=self.name,
                              role=role)
        data = self._fetch(f"{meta.version}.{role}.json",
                           min(self.caps.targets, meta.length or self.caps.targets))
        self._bind(meta, data, role)
        md = self._parse(data, Targets, role)
        self._verify(delegator, role, md)
        targets = md.signed
        if targets.version != meta.version:
            raise MixAndMatch(f"{role} v{targets.version} served where snapshot names "
                              f"v{meta.version}", repo=self.name, role=role)
        trusted = self._state["targets"].get(role, 0)
        if targets.version < trusted:
            raise Rollback(f"{role} v{targets.version} is older than trusted v{trusted}",
                           repo=self.name, role=role)
        self._check_expiry(targets, role)
        self._state["targets"][role] = targets.version
        self.targets[role] = targets
        self.raw[f"{targets.version}.{role}.json"] = data
        return targets

    # -- delegation resolution ----------------------------------------------------------
    def find_target(self, path: str, hardware_id: str) -> tuple[TargetFile, str] | None:
        """Pre-order depth-first walk of the delegation tree (Uptane "resolve delegations").

        Returns the target and the role that signed it, or None when no role that may
        sign ``path`` for ``hardware_id`` lists it. Loads and verifies delegated roles on
        the way; an invalid role aborts with its rejection.
        """
        top = self.targets.get(Targets.type)
        if top is None:
            raise RuntimeError("refresh() first")
        found = self._walk(path, hardware_id)
        self._save_state()
        return found

    def _walk(self, path: str, hardware_id: str) -> tuple[TargetFile, str] | None:
        """TUF client workflow 5.6.7.2 as python-tuf's ngclient
        ``_preorder_depth_first_walk``: pre-order depth first, children in the order their
        delegator lists them, and a *terminating* delegation that matches ends the search
        there: no later sibling and no role still pending may be asked (dropping only the
        siblings let a lower-priority role sign a path a terminating role owns)."""
        stack: list[tuple[str, Root | Targets | None]] = [(Targets.type, None)]
        visited: set[str] = set()
        while stack and len(visited) <= self.max_delegations:
            role, delegator = stack.pop()
            if role in visited:
                continue
            targets = self.targets.get(role)
            if targets is None:
                assert isinstance(delegator, Targets)
                targets = self._update_targets(role, delegator)
            if path in targets.targets:
                return targets.targets[path], role
            visited.add(role)
            children: list[tuple[str, Root | Targets | None]] = []
            for child, terminating in self._delegated(targets, role, path, hardware_id):
                children.append((child, targets))
                if terminating:
                    stack.clear()
                    break
            stack.extend(reversed(children))
        if stack:
            log.warning("%s: %s not found within %d delegated roles", self.name, path,
                        self.max_delegations)
        return None

    def _delegated(self, targets: Targets, role: str, path: str, hardware_id: str
                   ) -> Iterator[tuple[str, bool]]:
        """(role, terminating) of the delegations of ``targets`` that apply to ``path`` on
        ``hardware_id``, in priority order. A delegation applies when its paths match and,
        if it names hardware ids (Uptane), ``hardware_id`` is one of them."""
        delegations = targets.delegations
        if delegations is None:
            return
        if delegations.succinct_roles is not None:
            yield delegations.succinct_roles.get_role_for_target(path), True
            return
        for child in (delegations.roles or {}).values():
            if child.is_delegated_path(path) and self._hardware_ok(child, role, hardware_id):
                yield child.name, child.terminating

    def signed_targets(self, hardware_id: str) -> dict[str, tuple[TargetFile, str]]:
        """Every target the repository signs for ``hardware_id``: path -> (target, role),
        each the one the delegation search gives for its path (a listing a terminating or
        higher-priority role shadows does not count). Loads every delegated role that may
        sign for ``hardware_id`` (succinct hash-bin roles are not enumerated); an invalid
        one aborts with its rejection, so a hidden newer release cannot lower a floor."""
        if Targets.type not in self.targets:
            raise RuntimeError("refresh() first")
        stack: list[tuple[str, Targets | None]] = [(Targets.type, None)]
        seen: set[str] = set()
        paths: set[str] = set()
        while stack and len(seen) <= self.max_delegations:
            role, delegator = stack.pop()
            if role in seen:
                continue
            seen.add(role)
            targets = self.targets.get(role)
            if targets is None:
                assert delegator is not None
                targets = self._update_targets(role, delegator)
            paths.update(targets.targets)
            delegations = targets.delegations
            children = [] if delegations is None or delegations.roles is None else [
                c for c in delegations.roles.values()
                if self._hardware_ok(c, role, hardware_id)]
            stack.extend((c.name, targets) for c in reversed(children))
        out = {}
        for path in sorted(paths):
            found = self._walk(path, hardware_id)
            if found is not None:
                out[path] = found
        self._save_state()
        return out

    def _hardware_ok(self, child: Any, role: str, hardware_id: str) -> bool:
        hw_ids = child.unrecognized_fields.get(DELEGATION_HARDWARE_IDS)
        if hw_ids is None:
            return True
        if not isinstance(hw_ids, list) or not all(isinstance(h, str) for h in hw_ids):
            raise ArbitrarySoftware(f"delegation to {child.name}: {DELEGATION_HARDWARE_IDS} "
                                    f"must be a list of strings", repo=self.name, role=role)
        return hardware_id in hw_ids

    # -- helpers --------------------------------------------------------------------------
    def _fetch(self, fname: str, cap: int, *, may_be_missing: bool = False) -> bytes:
        try:
            return self.fetcher.fetch_metadata(f"{self.base_url}/metadata/{fname}", cap)
        except NotFound as exc:
            if may_be_missing:
                raise
            raise DownloadFailed(str(exc), repo=self.name) from exc

    def _parse(self, data: bytes, cls: type[S], role: str) -> Metadata[S]:
        """Metadata of type ``cls`` whose signed part has canonical bytes; anything else
        (wrong types, a float, NaN, deep nesting, bad UTF-8) is arbitrary software, found
        before any field is used and without needing a key to cause it."""
        try:
            md = Metadata.from_bytes(data)
            _ = md.signed_bytes     # canonical JSON refuses floats: fail here, not later
        except (DeserializationError, SerializationError, ValueError, KeyError, TypeError,
                RecursionError) as exc:
            raise ArbitrarySoftware(f"not valid metadata: {type(exc).__name__}: {exc}",
                                    repo=self.name, role=role) from exc
        if md.signed.type != cls.type:
            raise ArbitrarySoftware(f"expected {cls.type} metadata, got {md.signed.type}",
                                    repo=self.name, role=role)
        return md  # type: ignore[return-value]

    def _verify(self, delegator: Root | Targets, role: str, md: Metadata[Any]) -> None:
        """The delegator's threshold, met by distinct keys (``verify_delegate`` counts key
        ids, and one key listed under two ids would count twice)."""
        try:
            result = delegator.get_verification_result(role, md.signed_bytes, md.signatures)
        except ValueError as exc:
            raise ArbitrarySoftware(f"no delegation for {role}: {exc}", repo=self.name,
                                    role=role) from exc
        distinct = distinct_signers(result)
        if distinct < result.threshold:
            raise ArbitrarySoftware(f"signature threshold not met: {role} was signed by "
                                    f"{distinct}/{result.threshold} distinct keys",
                                    repo=self.name, role=role)

    def _bind(self, meta: MetaFile, data: bytes, role: str) -> None:
        try:
            meta.verify_length_and_hashes(data)
        except tuf_exc.LengthOrHashMismatchError as exc:
            raise MixAndMatch(f"file does not match the length/hashes its parent role "
                              f"signed: {exc}", repo=self.name, role=role) from exc

    def _check_expiry(self, signed: Signed, role: str) -> None:
        assert self._now is not None
        if signed.is_expired(self._now):
            raise Freeze(f"v{signed.version} expired {signed.expires.isoformat()} "
                         f"(secure time {self._now.isoformat()})", repo=self.name, role=role)


def distinct_signers(result: VerificationResult) -> int:
    """How many different keys (by value, not by key id) made the valid signatures."""
    return len({key_value(key) for key in result.signed.values()})


__all__ = ["RoleCaps", "TrustedRepository", "UpdateRejected", "distinct_signers"]
