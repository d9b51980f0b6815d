"""The Primary's Uptane flow: Director + Image repository, cross-check, per-ECU anti-rollback."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import Targets
from tuf.api.metadata import Timestamp as TimestampRole

from agent.ota.uptane.custom import (
    ROOT_TIME_KEYS,
    TIMESTAMP_TIME_ATTESTATION,
    VIN,
    TargetFields,
    parse_fields,
)
from agent.ota.uptane.download import HttpFetcher
from agent.ota.uptane.errors import (
    ArbitrarySoftware,
    EndlessData,
    Freeze,
    MixAndMatch,
    PartialBundle,
    Rollback,
    UpdateRejected,
    WrongHardware,
)
from agent.ota.uptane.repository import RoleCaps, TrustedRepository
from agent.ota.uptane.settings import UptaneConfig
from agent.ota.uptane.time import SecureTime, parse_time, verify_attestation
from agent.statestore import StateDB

log = logging.getLogger(__name__)

ECU_KEY = "uptane.ecu.{}"


@dataclass(frozen=True)
class EcuInstalled:
    """What the vehicle reports for one ECU before the campaign: its hardware id, the
    release counter if something trusted knows it (None: unknown), and the version DIDs
    the ECU itself reports over UDS (mapped to a release through the Image repository)."""

    hardware_id: str
    release_counter: int | None = None
    versions: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)


@dataclass(frozen=True)
class VerifiedTarget:
    """One image the Director assigned to one ECU, verified against both repositories."""

    ecu_id: str
    hardware_id: str
    path: str                       # target path in both repositories
    length: int
    hashes: dict[str, str] = field(hash=False)      # algorithm -> hex digest
    release_counter: int = 0
    versions: dict[str, str] = field(default_factory=dict, hash=False)  # DID -> string
    image_role: str = "targets"     # Image-repository role that signed the image
    url: str = ""                   # where download() fetches it
    director_version: int = 0       # Director targets version that assigned it
    custom: dict[str, Any] = field(default_factory=dict, hash=False)
    downgrade: bool = False         # the Director signed an explicit downgrade


def repository_error(exc: tuf_exc.RepositoryError) -> UpdateRejected:
    """A python-tuf error as the rejection naming its threat (malformed or badly signed
    data is arbitrary software), so no repository problem ends as an internal error."""
    kinds: list[tuple[type[Exception], type[UpdateRejected]]] = [
        (tuf_exc.ExpiredMetadataError, Freeze), (tuf_exc.BadVersionNumberError, Rollback),
        (tuf_exc.LengthOrHashMismatchError, MixAndMatch)]
    cls = next((kind for base, kind in kinds if isinstance(exc, base)), ArbitrarySoftware)
    return cls(f"{type(exc).__name__}: {exc}")


class UptaneClient:
    """Full verification on the Primary; see the package docstring for the flow."""

    def __init__(self, config: UptaneConfig, statedb: StateDB, secure_time: SecureTime,
                 fetcher: HttpFetcher | None = None, *, config_dir: Path = Path(".")):
        self.config = config
        self.statedb = statedb
        self.secure_time = secure_time
        self.config_dir = Path(config_dir)
        self.fetcher = fetcher or HttpFetcher.from_config(config, self.config_dir)
        self.caps = RoleCaps(config.max_root_bytes, config.max_timestamp_bytes,
                             config.max_snapshot_bytes, config.max_targets_bytes)
        self.director: TrustedRepository | None = None
        self.image: TrustedRepository | None = None
        self._releases_cache: dict[str, dict[str, tuple[int, dict[str, str]]]] = {}

    def _repo(self, name: str, url: str, root_file: str, delegations: bool) -> TrustedRepository:
        root_path = self.config.resolve(root_file, self.config_dir)
        bootstrap = b""
        if self.statedb.get(f"uptane.repo.{name}") is None:
            try:
                bootstrap = root_path.read_bytes()
            except OSError as exc:
                raise FileNotFoundError(f"trusted {name} root {root_path}: {exc.strerror}") \
                    from exc
        return TrustedRepository(name, url, self.fetcher, self.statedb,
                                 bootstrap_root=bootstrap, caps=self.caps,
                                 max_rotations=self.config.max_root_rotations,
                                 max_delegations=self.config.max_delegations,
                                 allow_delegations=delegations)

    def check_campaign(self, vin: str, ecus: Mapping[str, EcuInstalled]) -> list[VerifiedTarget]:
        """Refresh and fully verify both repositories; return what the Director assigns.

        Raises an ``UpdateRejected`` subclass naming the threat; nothing is installed or
        marked installed here. An empty list means the Director has nothing for ``vin``.
        """
        try:
            return self._check_campaign(vin, ecus)
        except tuf_exc.RepositoryError as exc:      # a python-tuf check we did not wrap
            raise repository_error(exc) from exc

    def _check_campaign(self, vin: str, ecus: Mapping[str, EcuInstalled]
                        ) -> list[VerifiedTarget]:
        now = self.secure_time.now()
        self._releases_cache = {}
        self.director = self._repo("director", f"{self.config.director_url.rstrip('/')}/{vin}",
                                   self.config.director_root, delegations=False)
        dtargets = self.director.refresh(now)
        self._observe_time()
        self._check_vin(dtargets, vin)
        assigned = self._director_assignments(dtargets, ecus)
        if not assigned:
            return []
        self.image = self._repo("image", self.config.image_url, self.config.image_root,
                                delegations=True)
        self.image.refresh(now)
        out = []
        for path, info, fields in assigned:
            target = self._cross_check(path, info, fields, dtargets.version)
            self._check_floor(target, ecus[target.ecu_id])
            out.append(target)
        return out

    def _observe_time(self) -> None:
        """Time from the verified Director timestamp: an attestation signed by keys the
        Director root delegates for time moves the trusted floor; the timestamp's own
        ``issued`` (online key) only the bounded online floor."""
        assert self.director is not None and self.director.timestamp is not None
        ts = self.director.timestamp
        attested = self._attested_time(ts)
        observe = getattr(self.secure_time, "observe", None)
        if attested is not None and observe is not None:
            observe(attested, "director time attestation")
        online = getattr(self.secure_time, "observe_online", None)
        issued = ts.unrecognized_fields.get("issued")
        if not (self.config.time_from_timestamp and online and isinstance(issued, str)):
            return
        try:
            when = parse_time(issued)
        except ValueError:
            log.warning("director timestamp has an unreadable 'issued' field %r", issued)
            return
        # Signed by the timestamp key; not later than the role's own expiry.
        if when <= ts.expires:
            online(when, "director timestamp",
                   timedelta(days=self.config.max_time_step_days))

    def _attested_time(self, ts: TimestampRole) -> datetime | None:
        doc = ts.unrecognized_fields.get(TIMESTAMP_TIME_ATTESTATION)
        if doc is None:
            return None
        assert self.director is not None and self.director.root is not None
        root = self.director.root
        spec = root.unrecognized_fields.get(ROOT_TIME_KEYS)
        try:
            if not isinstance(spec, dict):
                raise ValueError("the Director root delegates no key for time")
            keyids, threshold = spec.get("keyids"), spec.get("threshold", 1)
            if not isinstance(keyids, list) or not isinstance(threshold, int) \
                    or isinstance(threshold, bool) or threshold < 1:
                raise ValueError(f"malformed {ROOT_TIME_KEYS} in the Director root")
            keys = {k: root.keys[k] for k in keyids if isinstance(k, str) and k in root.keys}
            return verify_attestation(doc, keys, threshold)
        except ValueError as exc:
            log.warning("director time attestation ignored: %s", exc)
            return None

    def _check_vin(self, targets: Targets, vin: str) -> None:
        custom = targets.unrecognized_fields.get("custom")
        signed_vin = custom.get(VIN) if isinstance(custom, dict) else None
        if signed_vin != vin:
            raise MixAndMatch(f"Director targets are for vehicle {signed_vin!r}, not {vin!r}",
                              repo="director", role="targets")

    def _director_assignments(self, targets: Targets, ecus: Mapping[str, EcuInstalled]
                              ) -> list[tuple[str, Any, TargetFields]]:
        seen: set[str] = set()
        out = []
        for path, info in targets.targets.items():
            fields = parse_fields(info.custom, path, director=True, repo="director")
            ecu = fields.ecu_id
            if ecu in seen:
                raise MixAndMatch("ECU named by more than one Director target",
                                  repo="director", role="targets", ecu_id=ecu)
            seen.add(ecu)
            if ecu not in ecus:
                raise MixAndMatch("Director names an ECU this vehicle does not have",
                                  repo="director", role="targets", ecu_id=ecu)
            if fields.hardware_id != ecus[ecu].hardware_id:
                raise WrongHardware(f"image {path!r} is for hardware {fields.hardware_id!r}, "
                                    f"ECU is {ecus[ecu].hardware_id!r}", repo="director",
                                    ecu_id=ecu)
            floor = self.installed_counter(ecu, ecus[ecu])
            if fields.release_counter < floor and not fields.downgrade:
                raise Rollback(f"release counter {fields.release_counter} is below the "
                               f"installed {floor}", repo="director", ecu_id=ecu)
            out.append((path, info, fields))
        return out

    def _cross_check(self, path: str, dinfo: Any, dfields: TargetFields,
                     director_version: int) -> VerifiedTarget:
        assert self.image is not None
        ecu = dfields.ecu_id
        found = self.image.find_target(path, dfields.hardware_id)
        if found is None:
            raise PartialBundle(f"no Image-repository role signs {path!r} for hardware "
                                f"{dfields.hardware_id!r}", repo="image", ecu_id=ecu)
        iinfo, role = found
        ifields = parse_fields(iinfo.custom, path, director=False, repo="image")
        if iinfo.length != dinfo.length or iinfo.hashes != dinfo.hashes:
            raise MixAndMatch(f"Director and Image repository disagree on {path!r}: length "
                              f"{dinfo.length}/{iinfo.length}, hashes {dinfo.hashes} / "
                              f"{iinfo.hashes}", ecu_id=ecu)
        if ifields.hardware_id != dfields.hardware_id:
            raise WrongHardware(f"Image repository signs {path!r} for hardware "
                                f"{ifields.hardware_id!r}, Director says "
                                f"{dfields.hardware_id!r}", repo="image", ecu_id=ecu)
        if ifields.release_counter != dfields.release_counter:
            raise MixAndMatch(f"release counter {dfields.release_counter} (Director) vs "
                              f"{ifields.release_counter} (Image) for {path!r}", ecu_id=ecu)
        # Consistent-snapshot name: <dir>/<hash>.<file>, preferring the SHA-256 name.
        digest = iinfo.hashes.get("sha256") or next(iter(iinfo.hashes.values()))
        folder, _, base = path.rpartition("/")
        rel = f"{folder}/{digest}.{base}" if folder else f"{digest}.{base}"
        url = f"{self.config.image_url.rstrip('/')}/targets/{rel}"
        return VerifiedTarget(ecu, dfields.hardware_id, path, dinfo.length, dict(dinfo.hashes),
                              dfields.release_counter, dict(dfields.versions), role, url,
                              director_version, dict(dinfo.custom), dfields.downgrade)

    # -- the rollback floor ----------------------------------------------------------------
    def _check_floor(self, target: VerifiedTarget, reported: EcuInstalled) -> None:
        """No release counter below the ECU's floor; with no floor known, only the newest
        release the Image repository signs for the hardware (nothing signed is newer, so
        it cannot be a downgrade); either way unless the Director signed a downgrade."""
        floor, source = self.release_floor(target.ecu_id, reported)
        counter = target.release_counter
        if target.downgrade:
            if floor is None or counter < floor:
                log.warning("ECU %s: explicit downgrade to release %d signed by the Director "
                            "(floor %s, %s)", target.ecu_id, counter, floor, source)
            return
        if floor is not None:
            if counter < floor:
                raise Rollback(f"release counter {counter} is below {floor} ({source})",
                               ecu_id=target.ecu_id)
            return
        newest = max(self._releases(target.hardware_id).values(), default=counter)
        if counter < newest:
            raise Rollback(f"the installed release is unknown ({source}); release counter "
                           f"{counter} is not provably newer: the Image repository signs "
                           f"{newest} for {target.hardware_id!r}", ecu_id=target.ecu_id)

    def release_floor(self, ecu_id: str, reported: EcuInstalled | None = None
                      ) -> tuple[int | None, str]:
        """The highest release counter the ECU is known to run or have run, and where that
        comes from: the install record, a counter the caller trusts, the OTA history (hash
        chain verified) and the versions the ECU reports, mapped to a release through the
        Image repository (after ``check_campaign`` refreshed it). (None, why) if unknown."""
        found: list[tuple[int, str]] = []
        rec = self.installed(ecu_id)
        if rec is not None:
            found.append((int(rec.get("release_counter", 0)), "install record"))
        if reported is not None and reported.release_counter is not None:
            found.append((reported.release_counter, "reported release counter"))
        history = self._history_counter(ecu_id)
        if history is not None:
            found.append((history, "OTA history"))
        if reported is not None and reported.versions and self.image is not None:
            for path, (counter, versions) in self._release_versions(
                    reported.hardware_id).items():
                if versions and all(reported.versions.get(did) == value
                                    for did, value in versions.items()):
                    found.append((counter, f"the ECU reports the versions of {path}"))
        if not found:
            return None, ("no install record, no OTA history, and no image signed for the "
                          "hardware carries the versions the ECU reports")
        return max(found)

    def _history_counter(self, ecu_id: str) -> int | None:
        from agent.ota.history import OtaHistory, verify_entries

        entries = OtaHistory(self.statedb).entries()
        if not entries:
            return None
        report = verify_entries(entries)
        if not report.ok:
            log.warning("OTA history not used for the rollback floor: %s", report.reason)
            return None
        counters = [row["release_counter"] for entry in entries
                    for row in entry.get("ecus") or []
                    if isinstance(row, dict) and row.get("ecu") == ecu_id and row.get("ok")
                    and isinstance(row.get("release_counter"), int)]
        return max(counters) if counters else None

    def _release_versions(self, hardware_id: str) -> dict[str, tuple[int, dict[str, str]]]:
        """path -> (release counter, versions) of each image signed for ``hardware_id``."""
        assert self.image is not None
        cache = self._releases_cache.get(hardware_id)
        if cache is None:
            cache = {}
            for path, (info, _role) in self.image.signed_targets(hardware_id).items():
                try:
                    fields = parse_fields(info.custom, path, director=False, repo="image")
                except UpdateRejected as exc:
                    log.warning("image %s not used for the rollback floor: %s", path, exc)
                    continue
                if fields.hardware_id == hardware_id:
                    cache[path] = (fields.release_counter, dict(fields.versions))
            self._releases_cache[hardware_id] = cache
        return cache

    def _releases(self, hardware_id: str) -> dict[str, int]:
        return {p: c for p, (c, _) in self._release_versions(hardware_id).items()}

    # -- images --------------------------------------------------------------------------
    def download(self, target: VerifiedTarget, dest_dir: Path | None = None) -> Path:
        """Fetch and verify one image; returns the verified file (typed failure otherwise)."""
        dest_dir = Path(dest_dir) if dest_dir is not None else \
            self.config.resolve(self.config.download_dir, self.config_dir)
        if target.length > self.config.max_image_bytes:
            raise EndlessData(f"signed length {target.length} exceeds max_image_bytes",
                              ecu_id=target.ecu_id)
        digest = target.hashes.get("sha256") or next(iter(target.hashes.values()))
        name = f"{digest[:16]}.{target.path.rsplit('/', 1)[-1]}"
        try:
            try:
                return self.fetcher.download_image(target.url, dest_dir / name,
                                                   target.length, target.hashes)
            except tuf_exc.RepositoryError as exc:
                raise repository_error(exc) from exc
        except UpdateRejected as exc:
            if not exc.ecu_id:
                exc.ecu_id = target.ecu_id
            raise

    def download_all(self, targets: Iterable[VerifiedTarget],
                     dest_dir: Path | None = None) -> dict[str, Path]:
        """All images of the bundle or none: a failed one raises ``PartialBundle``.

        Install nothing until this returns, so a blocked image cannot leave the vehicle
        with half a bundle. Tampered or oversized images keep their own threat.
        """
        out: dict[str, Path] = {}
        for target in targets:
            try:
                out[target.ecu_id] = self.download(target, dest_dir)
            except UpdateRejected as exc:
                if exc.threat in ("drop_request", "slow_retrieval"):
                    raise PartialBundle(f"image {target.path!r} could not be fetched: "
                                        f"{exc.message} ({exc.threat})",
                                        ecu_id=target.ecu_id) from exc
                raise
        return out

    # -- per-ECU anti-rollback -------------------------------------------------------------
    def installed(self, ecu_id: str) -> dict[str, Any] | None:
        return self.statedb.get(ECU_KEY.format(ecu_id))

    def installed_counter(self, ecu_id: str, reported: EcuInstalled | None = None) -> int:
        """Floor from the install record and a trusted reported counter (0 if neither)."""
        rec = self.installed(ecu_id) or {}
        known = reported.release_counter if reported and reported.release_counter else 0
        return max(int(rec.get("release_counter", 0)), known)

    def mark_installed(self, ecu_id: str, target: VerifiedTarget) -> None:
        """Advance the ECU's anti-rollback floor after the flash was read back as good."""
        if target.ecu_id != ecu_id:
            raise ValueError(f"target is for ECU {target.ecu_id}, not {ecu_id}")
        key = ECU_KEY.format(ecu_id)
        with self.statedb.transaction():
            rec = self.statedb.get(key) or {}
            if target.release_counter < int(rec.get("release_counter", 0)) \
                    and not target.downgrade:
                raise Rollback(f"release counter {target.release_counter} is below the "
                               f"installed {rec['release_counter']}", ecu_id=ecu_id)
            self.statedb.put_in(key, {
                "path": target.path, "length": target.length, "hashes": target.hashes,
                "hardware_id": target.hardware_id, "release_counter": target.release_counter,
                "versions": target.versions, "director_version": target.director_version})

    def metadata_bytes(self) -> dict[str, dict[str, bytes]]:
        """Verified metadata of the last check, per repository, for full-verification
        Secondaries."""
        return {r.name: dict(r.raw) for r in (self.director, self.image) if r is not None}
