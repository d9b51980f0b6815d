"""Attack suite: each Uptane threat must be rejected with its name, and the installed
state (per-ECU release counters in the StateDB) must not advance.

Real keys, real repositories on disk, a real HTTP server on 127.0.0.1; the attacks are
the ones of python-tuf's client tests (repository simulator) and the Uptane threat list.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
from datetime import timedelta
from pathlib import Path

import pytest
from tamper import (
    forged_timestamp,
    json_nodes,
    one_key_twice,
    rebound,
    replaced,
    terminating_shadow,
)
from tuf.api.metadata import TargetFile
from uptane_fixtures import ECUS, VERSIONS, VIN, Bench, image_bytes, make_bench

from agent.ota.uptane import (
    EcuInstalled,
    FixedTime,
    FloorTime,
    UpdateRejected,
    UptaneClient,
)
from agent.ota.uptane.custom import image_custom
from agent.ota.uptane.time import load_public_key, parse_time
from hil.repo import DirectorRepository, Faults, ImageRepository, write_time_attestation

BMS_V4 = image_bytes("bms-2.4.0")
BMS_V5 = image_bytes("bms-2.5.0")
ADAS_V11 = image_bytes("adas-11", 120_000)


@pytest.fixture
def bench(tmp_path: Path):
    with make_bench(tmp_path) as b:
        yield b


@pytest.fixture
def installed(bench: Bench) -> Bench:
    """A vehicle that already took one good campaign: BMS-01 at release counter 4."""
    bench.add_and_assign("BMS-01", "bms/bms-2.4.0.bin", BMS_V4, "bms-hw-a", 4)
    run_campaign(bench.client())
    assert bench.client().installed("BMS-01")["release_counter"] == 4
    return bench


def run_campaign(client: UptaneClient, ecus: dict[str, EcuInstalled] = ECUS) -> dict:
    targets = client.check_campaign(VIN, ecus)
    files = client.download_all(targets)
    for target in targets:
        client.mark_installed(target.ecu_id, target)
    return {t.ecu_id: (t, files[t.ecu_id]) for t in targets}


def installed_state(bench: Bench) -> dict[str, str]:
    rows = bench.db.conn.execute(
        "SELECT key, value FROM kv WHERE key LIKE 'uptane.ecu.%'").fetchall()
    return dict(rows)


def rejected(bench: Bench, threat: str, client: UptaneClient | None = None,
             ecus: dict[str, EcuInstalled] = ECUS) -> UpdateRejected:
    before = installed_state(bench)
    with pytest.raises(UpdateRejected) as info:
        run_campaign(client or bench.client(), ecus)
    assert info.value.threat == threat, str(info.value)
    assert installed_state(bench) == before
    return info.value


def served_name(info: TargetFile) -> str:
    folder, _, base = info.path.rpartition("/")
    return f"{folder}/{info.hashes['sha256']}.{base}"


# -- positive paths -------------------------------------------------------------------------

def test_two_ecu_campaign_verifies_downloads_and_advances_counters(bench: Bench):
    bench.add_and_assign("BMS-01", "bms/bms-2.4.0.bin", BMS_V4, "bms-hw-a", 4)
    bench.add_and_assign("ADAS-01", "adas/adas-11.bin", ADAS_V11, "adas-hw-b", 11)
    client = bench.client()
    done = run_campaign(client)

    bms, bms_file = done["BMS-01"]
    adas, adas_file = done["ADAS-01"]
    assert bms_file.read_bytes() == BMS_V4 and adas_file.read_bytes() == ADAS_V11
    assert bms.image_role == "supplier-bms" and adas.image_role == "supplier-adas"
    assert bms.versions == VERSIONS and bms.hardware_id == "bms-hw-a"
    assert bms.hashes == {"sha256": hashlib.sha256(BMS_V4).hexdigest()}
    assert client.installed("BMS-01")["release_counter"] == 4
    assert client.installed("ADAS-01")["release_counter"] == 11
    assert not list(bms_file.parent.glob("*.part"))
    meta = client.metadata_bytes()
    assert {"timestamp.json"} <= set(meta["director"]) and "timestamp.json" in meta["image"]


def test_nothing_assigned_means_no_targets_and_no_image_traffic(bench: Bench):
    assert bench.client().check_campaign(VIN, ECUS) == []
    assert bench.fetched("/director/") and not bench.fetched("/image/")


def test_sha512_listed_is_verified_too(bench: Bench):
    info = bench.image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5,
                                 versions=VERSIONS, hash_algorithms=("sha256", "sha512"))
    bench.director.assign(VIN, "BMS-01", info)
    (target, path), = run_campaign(bench.client()).values()
    assert set(target.hashes) == {"sha256", "sha512"}
    assert path.read_bytes() == BMS_V5


def test_root_rotation_of_both_repositories_is_accepted(installed: Bench):
    installed.director.rotate_root(["director-root-2"])
    installed.image.rotate_root(["image-root-2"])
    installed.director.rotate_root(["director-root-3", "director-root-3b"], threshold=2)
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    client = installed.client()
    run_campaign(client)
    assert installed.db.get("uptane.repo.director")["root"]["signed"]["version"] == 3
    assert installed.db.get("uptane.repo.image")["root"]["signed"]["version"] == 2
    assert client.installed("BMS-01")["release_counter"] == 5


def test_interrupted_download_resumes_with_range_and_verifies(bench: Bench):
    info = bench.add_and_assign("BMS-01", "bms/bms-2.4.0.bin", BMS_V4, "bms-hw-a", 4)
    bench.server.set_faults(Faults(only="/image/targets/", drop_after=50_000))
    (target, path), = run_campaign(bench.client()).values()
    assert path.read_bytes() == BMS_V4
    image_requests = bench.fetched(served_name(info))
    assert [(r.range, r.status) for r in image_requests] == [(None, 200),
                                                            ("bytes=50000-", 206)]


def test_download_resumes_after_restart_from_part_file(bench: Bench):
    info = bench.add_and_assign("BMS-01", "bms/bms-2.4.0.bin", BMS_V4, "bms-hw-a", 4)
    bench.server.set_faults(Faults(only="/image/targets/", drop_after=70_000))
    client = bench.client(retries=0)
    (target,) = client.check_campaign(VIN, ECUS)
    with pytest.raises(UpdateRejected) as info_exc:
        client.download(target)
    assert info_exc.value.threat == "drop_request"
    parts = list(Path(bench.config.download_dir).glob("*.part"))
    assert [p.stat().st_size for p in parts] == [70_000]

    bench.server.set_faults(None)
    fresh = bench.client(retries=0)            # a new process: state from disk only
    path = fresh.download(target)
    assert path.read_bytes() == BMS_V4
    assert bench.fetched(served_name(info))[-1].range == "bytes=70000-"


# -- arbitrary software ---------------------------------------------------------------------

def test_image_bytes_changed_on_the_server(installed: Bench):
    info = installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    served = installed.image.targets_dir / served_name(info)
    evil = bytearray(BMS_V5)
    evil[1000] ^= 0xFF
    served.write_bytes(bytes(evil))
    err = rejected(installed, "arbitrary_software")
    assert err.ecu_id == "BMS-01"
    assert not list(Path(installed.config.download_dir).glob("*bms-2.5.0*"))


def test_director_targets_signed_by_a_wrong_key(installed: Bench):
    installed.director.signers_override["targets"] = [installed.keys.ensure("mallory")]
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    err = rejected(installed, "arbitrary_software")
    assert (err.repo, err.role) == ("director", "targets")


def test_image_targets_signed_below_threshold(installed: Bench):
    installed.image.signers_override["targets"] = [installed.keys.signer("image-targets-1")]
    installed.image.bump_expiry("targets")
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    err = rejected(installed, "arbitrary_software")
    assert (err.repo, err.role) == ("image", "targets")
    assert "1/2" in err.message


def test_delegated_role_signed_by_a_wrong_key(installed: Bench):
    installed.image.signers_override["supplier-bms"] = [installed.keys.ensure("mallory")]
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    err = rejected(installed, "arbitrary_software")
    assert (err.repo, err.role) == ("image", "supplier-bms")


@pytest.mark.parametrize("role,key", [("targets", "image-targets-1"),
                                      ("supplier-bms", "image-supplier-bms")])
def test_one_key_under_two_key_ids_does_not_meet_a_threshold_of_two(installed: Bench,
                                                                    role: str, key: str):
    # Root (for targets) or targets (for supplier-bms) asks for 2 signatures but lists one
    # key twice, the second time under another key id with its hex in upper case.
    one_key_twice(installed.image, role, key)
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    err = rejected(installed, "arbitrary_software")
    assert (err.repo, err.role) == ("image", role)
    assert "1/2 distinct keys" in err.message


@pytest.mark.parametrize("signer", ["new-only", "old-only"])
def test_root_rotation_without_both_thresholds(installed: Bench, signer: str):
    new = installed.keys.ensure("director-root-2")
    old = installed.keys.signer("director-root")
    installed.director.shared.signers_override["root"] = [new] if signer == "new-only" \
        else [old]
    installed.director.rotate_root(["director-root-2"])
    err = rejected(installed, "arbitrary_software")
    assert (err.repo, err.role) == ("director", "root")
    assert installed.db.get("uptane.repo.director")["root"]["signed"]["version"] == 1


# -- malformed metadata ----------------------------------------------------------------------

def fresh_agent_rejection(bench: Bench, overrides: dict[str, bytes]) -> str:
    """Serve ``overrides`` to an agent that trusts only its shipped roots; return the
    threat it named, or what else happened."""
    bench.db.conn.execute("DELETE FROM kv WHERE key LIKE 'uptane.repo.%'")
    bench.server.set_faults(Faults(overrides=overrides))
    try:   # no speed floor to speak of: only the content is on trial here
        run_campaign(bench.client(retries=1, speed_window_s=10.0, min_speed_bytes_s=1.0))
    except UpdateRejected as exc:
        return exc.threat
    except Exception as exc:   # noqa: BLE001 - the failure this test looks for
        return f"{type(exc).__name__}: {exc}"
    finally:
        bench.server.set_faults(None)
    return "accepted"


def test_a_float_anywhere_in_any_metadata_is_arbitrary_software(bench: Bench):
    # Canonical JSON has no floats: python-tuf cannot even compute the signed bytes, so no
    # key is needed to send one. Every node of every metadata file a campaign reads (both
    # repositories, a root rotation included) is replaced by 1.5 in turn; files bound by
    # hash are re-bound with the online snapshot/timestamp keys so the agent parses them.
    bench.image.rotate_root(["image-root-2"])      # the agent ships image root v1
    bench.add_and_assign("BMS-01", "bms/bms-2.4.0.bin", BMS_V4, "bms-hw-a", 4)
    assert fresh_agent_rejection(bench, {}) == "accepted"
    fetched = sorted({r.path for r in bench.server.requests
                      if "/metadata/" in r.path and r.status == 200})
    assert len(fetched) == 8, fetched       # 2 roots, then 3 + 4 files per repository
    repos = {f"/director/{VIN}": (bench.director.vehicle(VIN), "director"),
             "/image": (bench.image, "image")}
    outcomes: dict[str, list[str]] = {}
    for url in fetched:
        prefix, _, name = url.rpartition("/metadata/")
        repo, keys = repos[prefix]
        role = name.split(".")[-2]
        doc = json.loads(bench.server.read(url) or b"")
        bound = role not in ("root", "timestamp")
        if bound:
            doc["signed"]["version"] += 1
        for path in json_nodes(doc):
            data = json.dumps(replaced(doc, path, 1.5)).encode()
            overrides = rebound(repo, prefix, role, data,
                                snapshot_key=bench.keys.signer(f"{keys}-snapshot"),
                                timestamp_key=bench.keys.signer(f"{keys}-timestamp")) \
                if bound else {url: data}
            outcome = fresh_agent_rejection(bench, overrides)
            outcomes.setdefault(outcome, []).append(f"{url} {path}")
    assert set(outcomes) == {"arbitrary_software"}, \
        {k: v[:5] for k, v in outcomes.items() if k != "arbitrary_software"}
    assert sum(map(len, outcomes.values())) > 150


@pytest.mark.parametrize("body", [
    b'{"signed": {"_type": "timestamp", "version": NaN}, "signatures": []}',
    b'{"signed": {"_type": "timestamp", "version": Infinity}, "signatures": []}',
    b'{"signed": {"_type": "timestamp", "version": 1e999}, "signatures": []}',
    b"[" * 6_000 + b"]" * 6_000,
    b'{"signed": "\xff\xfe"}',
    b"",
])
def test_unparseable_timestamp_is_arbitrary_software(bench: Bench, body: bytes):
    url = f"/director/{VIN}/metadata/timestamp.json"
    assert fresh_agent_rejection(bench, {url: body}) == "arbitrary_software"


# -- rollback -------------------------------------------------------------------------------

def test_older_director_timestamp_is_a_rollback(installed: Bench):
    old_timestamp = (installed.director.folder / VIN / "metadata" / "timestamp.json").read_bytes()
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    installed.client().check_campaign(VIN, ECUS)          # trusts the newer versions
    installed.server.set_faults(Faults(overrides={
        f"/director/{VIN}/metadata/timestamp.json": old_timestamp}))
    err = rejected(installed, "rollback")
    assert (err.repo, err.role) == ("director", "timestamp")


def test_lower_release_counter_than_installed(installed: Bench):
    installed.add_and_assign("BMS-01", "bms/bms-2.3.0.bin", image_bytes("bms-2.3"),
                             "bms-hw-a", 3)
    err = rejected(installed, "rollback")
    assert err.ecu_id == "BMS-01"


def test_lower_release_counter_than_the_ecu_reports(bench: Bench):
    bench.add_and_assign("ADAS-01", "adas/adas-9.bin", image_bytes("adas-9"), "adas-hw-b", 9)
    rejected(bench, "rollback")          # ECUS says ADAS-01 runs release 10


BMS_V10 = {"F189": "1.0.0", "F188": "SW-BMS-0100", "F195": "SUP-1.0.0"}
BMS_V09 = {"F189": "0.9.0", "F188": "SW-BMS-0090", "F195": "SUP-0.9.0"}


def signed_bms_releases(bench: Bench) -> TargetFile:
    """The Image repository signs bms 1.0.0 (release 10) and 0.9.0 (9); returns 0.9.0."""
    bench.image.add_image("bms/bms-1.0.0.bin", image_bytes("bms-1.0.0"), "bms-hw-a", 10,
                          versions=BMS_V10)
    return bench.image.add_image("bms/bms-0.9.0.bin", image_bytes("bms-0.9.0"), "bms-hw-a",
                                 9, versions=BMS_V09)


def test_fresh_agent_refuses_a_downgrade_below_what_the_ecu_runs(bench: Bench):
    # No install record, no history, no trusted counter: only what the ECU reports over
    # UDS (1.0.0), which the Image repository signs as release 10.
    bench.director.assign(VIN, "BMS-01", signed_bms_releases(bench))
    ecus = {**ECUS, "BMS-01": EcuInstalled("bms-hw-a", versions=dict(BMS_V10))}
    err = rejected(bench, "rollback", ecus=ecus)
    assert err.ecu_id == "BMS-01" and "bms/bms-1.0.0.bin" in err.message, err.message


def test_unknown_installed_release_takes_only_the_newest_signed_release(bench: Bench):
    older = signed_bms_releases(bench)
    ecus = {**ECUS, "BMS-01": EcuInstalled("bms-hw-a", versions={"F189": "0.1-factory"})}
    bench.director.assign(VIN, "BMS-01", older)
    err = rejected(bench, "rollback", ecus=ecus)
    assert "not provably newer" in err.message, err.message
    bench.director.assign(VIN, "BMS-01", bench.image.target("bms/bms-1.0.0.bin")[0])
    (target, _), = run_campaign(bench.client(), ecus).values()
    assert target.release_counter == 10


def test_ota_history_keeps_the_floor_when_the_install_record_is_lost(bench: Bench):
    from agent.ota.history import OtaHistory

    OtaHistory(bench.db).append({"activity_id": "OTA-1", "result": "completed", "ecus": [
        {"ecu": "BMS-01", "target": "bms/bms-1.0.0.bin", "release_counter": 10, "ok": True}]})
    bench.director.assign(VIN, "BMS-01", signed_bms_releases(bench))
    err = rejected(bench, "rollback", ecus={**ECUS, "BMS-01": EcuInstalled("bms-hw-a")})
    assert "OTA history" in err.message, err.message


def test_signed_explicit_downgrade_goes_below_the_floor(installed: Bench):
    info = installed.image.add_image("bms/bms-2.3.0.bin", image_bytes("bms-2.3"), "bms-hw-a",
                                     3, versions=VERSIONS)
    installed.director.assign(VIN, "BMS-01", info)
    rejected(installed, "rollback")
    installed.director.assign(VIN, "BMS-01", info, downgrade=True)    # a recall rollback
    client = installed.client()
    (target, _), = run_campaign(client).values()
    assert target.downgrade and client.installed("BMS-01")["release_counter"] == 3


def test_mark_installed_refuses_to_go_backwards(installed: Bench):
    client = installed.client()
    installed.add_and_assign("BMS-01", "bms/bms-2.4.0.bin", BMS_V4, "bms-hw-a", 4)
    (target,) = client.check_campaign(VIN, ECUS)
    older = dataclasses.replace(target, release_counter=2)
    with pytest.raises(UpdateRejected) as info:
        client.mark_installed("BMS-01", older)
    assert info.value.threat == "rollback"
    assert client.installed("BMS-01")["release_counter"] == 4


# -- freeze ---------------------------------------------------------------------------------

def test_expired_timestamp_by_secure_time_although_system_clock_is_fine(installed: Bench):
    system_clock = FixedTime(installed.clock.now())       # the (wrong) system clock
    time_key = installed.keys.ensure("time")
    attestation = write_time_attestation(installed.tmp / "time.json", time_key,
                                         installed.clock.now() + timedelta(days=3))
    secure = FloorTime(installed.db, system_clock, attestation=attestation,
                       keys=[load_public_key(installed.keys.public_path("time"))])
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    client = UptaneClient(installed.config, installed.db, secure, config_dir=installed.tmp)
    err = rejected(installed, "freeze", client)
    assert (err.repo, err.role) == ("director", "timestamp")
    # The attested time was persisted: without the file the floor still holds.
    assert FloorTime(installed.db, system_clock).now() >= system_clock.now() + timedelta(days=3)


def test_verified_director_timestamp_raises_the_time_floor(bench: Bench):
    system_clock = FixedTime(bench.clock.now() - timedelta(days=20))   # far behind
    secure = FloorTime(bench.db, system_clock)
    bench.director.vehicle(VIN).bump_expiry("timestamp")
    UptaneClient(bench.config, bench.db, secure, config_dir=bench.tmp) \
        .check_campaign(VIN, ECUS)
    issued = bench.director.vehicle(VIN).open("timestamp").signed.unrecognized_fields["issued"]
    assert secure.floor() == parse_time(issued)
    assert secure.now() > system_clock.now() + timedelta(days=19)


@pytest.mark.parametrize("step_days,later_days", [(None, 31), (0.5, 0)])
def test_online_timestamp_key_alone_cannot_move_the_time_floor_to_2036(
        bench: Bench, step_days: float | None, later_days: int):
    t0 = bench.clock.now()
    step = timedelta(days=step_days if step_days is not None else 30)   # 30: the default
    forged = forged_timestamp(bench.director.vehicle(VIN),
                              bench.keys.signer("director-timestamp"),
                              parse_time("2036-01-01T00:00:00Z"))
    bench.server.set_faults(Faults(overrides={
        f"/director/{VIN}/metadata/timestamp.json": forged}))
    secure = FloorTime(bench.db, bench.clock)
    options = {} if step_days is None else {"max_time_step_days": step_days}
    client = UptaneClient(dataclasses.replace(bench.config, **options), bench.db, secure,
                          config_dir=bench.tmp)
    assert client.check_campaign(VIN, ECUS) == []      # genuinely signed by the online key
    floor = secure.floor()
    assert floor is not None and floor <= t0 + step + timedelta(seconds=1), floor
    assert secure.trusted_floor() is None
    # The attacker is gone; the next legitimate update (at the vehicle's time then) passes.
    bench.server.set_faults(None)
    later = t0 + timedelta(days=later_days)
    bench.clock.set(later)
    signed_at = later.replace(microsecond=0)
    image = ImageRepository(bench.image.folder, bench.keys, clock=lambda: signed_at)
    director = DirectorRepository(bench.director.folder, bench.keys, clock=lambda: signed_at)
    director.assign(VIN, "BMS-01", image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5,
                                                   versions=VERSIONS))
    run_campaign(client)
    assert client.installed("BMS-01")["release_counter"] == 5


@pytest.mark.parametrize("attested_by", ["director-time", "director-timestamp"])
def test_time_attested_by_a_key_the_director_root_delegates_moves_the_floor(
        bench: Bench, attested_by: str):
    t0 = bench.clock.now()
    bench.director.delegate_time("director-time")
    # The vehicle's clock is 60 days behind the Director's.
    ahead = (t0 + timedelta(days=60)).replace(microsecond=0)
    director = DirectorRepository(bench.director.folder, bench.keys, clock=lambda: ahead)
    director.time_signer = bench.keys.signer(attested_by)
    director.vehicle(VIN).bump_expiry("timestamp")
    secure = FloorTime(bench.db, bench.clock)
    UptaneClient(bench.config, bench.db, secure, config_dir=bench.tmp).check_campaign(VIN, ECUS)
    if attested_by == "director-time":          # delegated for time by the Director root
        assert secure.trusted_floor() == ahead and secure.now() == ahead
    else:                                       # the online key cannot attest time
        online = secure.online_floor()
        assert online is not None and online <= t0 + timedelta(days=30, seconds=1)
        assert secure.trusted_floor() is None and secure.now() == online


def test_expired_targets_is_a_freeze(installed: Bench):
    installed.clock.advance(timedelta(days=8))     # snapshot lifetime is 7 days
    rejected(installed, "freeze")


# -- mix and match --------------------------------------------------------------------------

def test_snapshot_names_one_targets_version_another_is_served(installed: Bench):
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    meta = installed.image.meta_dir
    current = installed.image._md["supplier-bms"].signed.version
    older = (meta / f"{current - 1}.supplier-bms.json").read_bytes()   # validly signed
    installed.server.set_faults(Faults(overrides={
        f"/image/metadata/{current}.supplier-bms.json": older}))
    err = rejected(installed, "mix_and_match")
    assert (err.repo, err.role) == ("image", "supplier-bms")


def test_director_and_image_disagree_on_hash_and_length(installed: Bench):
    installed.image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5, versions=VERSIONS)
    other = TargetFile.from_data("bms/bms-2.5.0.bin", BMS_V5 + b"!", ["sha256"])
    other.unrecognized_fields["custom"] = image_custom("bms-hw-a", 5, VERSIONS)
    installed.director.assign(VIN, "BMS-01", other)
    err = rejected(installed, "mix_and_match")
    assert err.ecu_id == "BMS-01"


def test_director_and_image_disagree_on_release_counter(installed: Bench):
    info = installed.image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5,
                                     versions=VERSIONS)
    installed.director.assign(VIN, "BMS-01", info, release_counter=6)
    rejected(installed, "mix_and_match")


def test_metadata_of_another_vehicle_is_rejected(installed: Bench):
    other = "LSVAU2180N2999999"
    # The attacker answers for vehicle `other` with VIN's validly signed metadata.
    os.symlink(installed.director.folder / VIN, installed.director.folder / other)
    with pytest.raises(UpdateRejected) as info:
        installed.client().check_campaign(other, ECUS)
    assert info.value.threat == "mix_and_match" and VIN in info.value.message
    assert info.value.role == "targets"


def test_director_names_an_ecu_the_vehicle_does_not_have(bench: Bench):
    bench.add_and_assign("GW-01", "bms/bms-2.4.0.bin", BMS_V4, "bms-hw-a", 4)
    err = rejected(bench, "mix_and_match")
    assert err.ecu_id == "GW-01"


# -- endless data, size caps, slow retrieval ------------------------------------------------

def test_server_sends_more_than_the_signed_length(installed: Bench):
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    installed.server.set_faults(Faults(only="/image/targets/", endless=True))
    rejected(installed, "endless_data")
    assert not list(Path(installed.config.download_dir).glob("*bms-2.5.0*"))


def test_endless_timestamp_metadata(installed: Bench):
    installed.server.set_faults(Faults(only="/director/", endless=True))
    err = rejected(installed, "endless_data")
    assert err.message.startswith("http") and "timestamp.json" in err.message


@pytest.mark.parametrize("cap", ["max_timestamp_bytes", "max_targets_bytes", "max_root_bytes"])
def test_metadata_larger_than_its_cap(installed: Bench, cap: str):
    if cap == "max_root_bytes":
        installed.director.rotate_root(["director-root-2"])
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    rejected(installed, "endless_data", installed.client(**{cap: 300}))


def test_image_trickled_below_the_speed_floor(installed: Bench):
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    installed.server.set_faults(Faults(only="/image/targets/", slow_bytes_per_s=2_000))
    client = installed.client(retries=0)
    (target,) = client.check_campaign(VIN, ECUS)
    with pytest.raises(UpdateRejected) as info:
        client.download(target)
    assert info.value.threat == "slow_retrieval"
    # Within a bundle, an image that cannot be had is a partial bundle.
    err = rejected(installed, "partial_bundle", client)
    assert isinstance(err.__cause__, UpdateRejected)
    assert err.__cause__.threat == "slow_retrieval"


def test_image_trickled_above_the_speed_floor_but_past_its_total_budget(installed: Bench):
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    # 40 kB/s is twice the bench's speed floor; 200 kB take 5 s, the budget is 1.5 s.
    installed.server.set_faults(Faults(only="/image/targets/", slow_bytes_per_s=40_000))
    client = installed.client(retries=0, min_average_bytes_s=200_000.0,
                              transfer_allowance_s=0.5)
    (target,) = client.check_campaign(VIN, ECUS)
    with pytest.raises(UpdateRejected) as info:
        client.download(target)
    assert info.value.threat == "slow_retrieval", str(info.value)
    err = rejected(installed, "partial_bundle", client)
    assert isinstance(err.__cause__, UpdateRejected)
    assert err.__cause__.threat == "slow_retrieval"


def test_metadata_trickled_below_the_speed_floor(installed: Bench):
    installed.server.set_faults(Faults(only="/director/", slow_bytes_per_s=1_000))
    rejected(installed, "slow_retrieval", installed.client(retries=0))


# -- partial bundle, wrong hardware ---------------------------------------------------------

def test_director_names_two_ecus_one_image_missing_from_image_repo(installed: Bench):
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    unsigned = TargetFile.from_data("adas/adas-11.bin", ADAS_V11, ["sha256"])
    installed.director.assign(VIN, "ADAS-01", unsigned, hardware_id="adas-hw-b",
                              release_counter=11, versions=VERSIONS)
    err = rejected(installed, "partial_bundle")
    assert err.ecu_id == "ADAS-01"


def test_image_file_missing_on_the_server(installed: Bench):
    info = installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    (installed.image.targets_dir / served_name(info)).unlink()
    rejected(installed, "partial_bundle", installed.client(retries=0))


def test_director_hardware_id_does_not_match_the_ecu(installed: Bench):
    info = installed.image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5,
                                     versions=VERSIONS)
    installed.director.assign(VIN, "ADAS-01", info)     # ADAS-01 is adas-hw-b
    err = rejected(installed, "wrong_hardware")
    assert err.ecu_id == "ADAS-01"


def test_image_repo_signs_the_image_for_other_hardware(installed: Bench):
    info = installed.image.add_image("adas/adas-11.bin", ADAS_V11, "adas-hw-z", 11,
                                     versions=VERSIONS)
    installed.director.assign(VIN, "ADAS-01", info, hardware_id="adas-hw-b")
    err = rejected(installed, "wrong_hardware")
    assert err.repo == "image"


def test_delegation_limited_to_other_hardware_finds_nothing(installed: Bench):
    # supplier-bms may only sign for bms-hw-a: an ECU of other hardware gets no image.
    info = installed.image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5,
                                     versions=VERSIONS)
    ecus = {**ECUS, "BMS-01": EcuInstalled("bms-hw-c", 3)}
    installed.director.assign(VIN, "BMS-01", info, hardware_id="bms-hw-c")
    rejected(installed, "partial_bundle", ecus=ecus)


def test_terminating_delegation_ends_the_search(installed: Bench):
    # targets -> supplier-bms (bms/*, not terminating) -> bms-boot (bms/*, terminating);
    # targets -> fleet (bms/*) comes later: once bms-boot matched, fleet may not be asked.
    terminating_shadow(installed.image, "bms/*", first="supplier-bms", inner="bms-boot",
                       rogue="fleet")
    installed.image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5, role="fleet",
                              versions=VERSIONS)
    installed.director.assign(VIN, "BMS-01", installed.image.target("bms/bms-2.5.0.bin")[0])
    err = rejected(installed, "partial_bundle")
    assert err.ecu_id == "BMS-01"
    assert not installed.fetched(".fleet.json"), "the search went past a terminating role"


def test_terminating_delegation_signs_what_it_owns(installed: Bench):
    terminating_shadow(installed.image, "bms/*", first="supplier-bms", inner="bms-boot",
                       rogue="fleet")
    installed.image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5, role="bms-boot",
                              versions=VERSIONS)
    installed.director.assign(VIN, "BMS-01", installed.image.target("bms/bms-2.5.0.bin")[0])
    (target, _), = run_campaign(installed.client()).values()
    assert target.image_role == "bms-boot"


def test_delegations_are_searched_pre_order_depth_first(installed: Bench):
    # targets -> supplier-bms -> bms-boot (not terminating here), then targets -> fleet:
    # supplier-bms's subtree comes before fleet, so bms-boot's image is the one chosen.
    img = installed.image
    with img.edit_targets() as targets:
        assert targets.delegations is not None and targets.delegations.roles is not None
        targets.delegations.roles["supplier-bms"].terminating = False
    img.add_delegation("bms-boot", ["bms/*"], None, terminating=False, delegator="supplier-bms")
    img.add_delegation("fleet", ["bms/*"], None, terminating=False)
    img.add_image("bms/bms-2.5.0.bin", image_bytes("fleet-bms"), "bms-hw-a", 5, role="fleet",
                  versions=VERSIONS)
    info = img.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5, role="bms-boot",
                         versions=VERSIONS)
    installed.director.assign(VIN, "BMS-01", info)
    (target, path), = run_campaign(installed.client()).values()
    assert target.image_role == "bms-boot" and path.read_bytes() == BMS_V5


def test_delegation_hardware_ids_must_be_a_list(installed: Bench):
    # A string would match by substring: "bms-hw-a" in "bms-hw-a2" is True.
    with installed.image.edit_targets() as targets:
        assert targets.delegations is not None and targets.delegations.roles is not None
        targets.delegations.roles["supplier-bms"].unrecognized_fields["hardware_ids"] = \
            "bms-hw-a2"
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    err = rejected(installed, "arbitrary_software")
    assert (err.repo, err.role) == ("image", "targets")


def test_hostile_target_path_is_refused(installed: Bench):
    info = installed.image.add_image("bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5,
                                     versions=VERSIONS)
    installed.director.assign(VIN, "BMS-01", info, path="../../etc/passwd")
    rejected(installed, "arbitrary_software")


def test_rejections_leave_no_files_behind(installed: Bench):
    installed.add_and_assign("BMS-01", "bms/bms-2.5.0.bin", BMS_V5, "bms-hw-a", 5)
    installed.server.set_faults(Faults(only="/image/targets/", endless=True))
    rejected(installed, "endless_data")
    leftovers = sorted(p.name for p in Path(installed.config.download_dir).iterdir())
    assert all("bms-2.4.0" in name for name in leftovers)
    shutil.rmtree(installed.config.download_dir)
