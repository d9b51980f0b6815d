"""Attacks at campaign level: each is rejected with ``ota.rejected`` naming the Uptane
threat, the user is never asked, and the ECU never sees a programming request (checked on
the bus itself, by a sniffer that reads every single and first ISO-TP frame for any
programming service: 10 02, 27, 2E, 31, 34, 36, 37, 11, ...)."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from campaign_bench import (
    EPS_IDENTITY,
    EPS_V2,
    VIN,
    Bench,
    consent_via_inbox,
    make_bench,
    uds_start,
)
from tamper import forged_timestamp, one_key_twice, terminating_shadow

from agent.ota.uptane.time import parse_time
from hil.backend.campaign import campaign_args, ecu_image
from hil.repo import DirectorRepository, Faults


def tampered_image(b: Bench) -> None:
    info = b.release("eps", EPS_V2, 2)
    served = b.ota.image.targets_dir / "eps" / f"{info.hashes['sha256']}.eps-2.0.0.bin"
    data = bytearray(served.read_bytes())
    data[100] ^= 0x01
    served.write_bytes(bytes(data))


def director_wrong_key(b: Bench) -> None:
    b.ota.director.signers_override["targets"] = [b.ota.keys.ensure("mallory")]
    b.release("eps", EPS_V2, 2)


def wrong_hardware(b: Bench) -> None:
    b.release("eps", EPS_V2, 2, hardware_id="HW-EPS-99")


def unknown_ecu(b: Bench) -> None:
    info = b.ota.image.add_image("gw/gw-1.bin", ecu_image(4096, {"F189": "1"}), "HW-GW", 1,
                                 versions={"F189": "1"})
    b.ota.director.assign(VIN, "gateway", info)


def expired_director(b: Bench) -> None:
    past = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=30)
    old = DirectorRepository(b.ota.repo_dir / "director", b.ota.keys, clock=lambda: past)
    info = b.ota.image.add_image("eps/eps-2.0.0.bin", ecu_image(8192, EPS_V2), "HW-EPS-03", 2,
                                 versions=EPS_V2)
    old.assign(VIN, "eps", info)


def endless_image(b: Bench) -> None:
    b.release("eps", EPS_V2, 2)
    b.server.set_faults(Faults(only="/image/targets/", endless=True))


def slow_image(b: Bench) -> None:
    b.release("eps", EPS_V2, 2)
    b.server.set_faults(Faults(only="/image/targets/", slow_bytes_per_s=2000))


def missing_image(b: Bench) -> None:
    info = b.release("eps", EPS_V2, 2)
    b.server.set_faults(Faults(missing={
        f"/image/targets/eps/{info.hashes['sha256']}.eps-2.0.0.bin"}))


def float_in_timestamp(b: Bench) -> None:
    b.release("eps", EPS_V2, 2)
    url = f"/director/{VIN}/metadata/timestamp.json"
    doc = json.loads(b.server.read(url) or b"")
    doc["signed"]["x-note"] = 0.5            # no key needed: canonical JSON has no floats
    b.server.set_faults(Faults(overrides={url: json.dumps(doc).encode()}))


def one_key_counted_twice(b: Bench) -> None:
    one_key_twice(b.ota.image, "targets", "image-targets")   # eps/* is signed by targets
    b.release("eps", EPS_V2, 2)


def terminating_delegation_bypassed(b: Bench) -> None:
    terminating_shadow(b.ota.image, "eps/*", first="eps-tier1", inner="eps-boot",
                       rogue="fleet")
    info = b.ota.image.add_image("eps/eps-2.0.0.bin", ecu_image(8192, EPS_V2), "HW-EPS-03", 2,
                                 role="fleet", versions=EPS_V2)
    b.ota.director.assign(VIN, "eps", info)


def downgrade_on_a_fresh_agent(b: Bench) -> None:
    # The agent has never installed anything; the ECU reports 1.0.0, signed as release 3.
    runs = {k: EPS_IDENTITY[k] for k in ("F189", "F188", "F195")}
    b.ota.image.add_image("eps/eps-1.0.0.bin", ecu_image(8192, runs), "HW-EPS-03", 3,
                          versions=runs)
    b.release("eps", {"F189": "0.9.0", "F188": "SW-EPS-0090", "F195": "SUP-0.9.0"}, 2)


ATTACKS: dict[str, tuple[Callable[[Bench], None], str]] = {
    "image changed on the server": (tampered_image, "arbitrary_software"),
    "director signed by a wrong key": (director_wrong_key, "arbitrary_software"),
    "image for other hardware": (wrong_hardware, "wrong_hardware"),
    "director names an ECU the vehicle lacks": (unknown_ecu, "mix_and_match"),
    "expired director metadata": (expired_director, "freeze"),
    "endless image": (endless_image, "endless_data"),
    "image trickled below the speed floor": (slow_image, "partial_bundle"),
    "image missing on the server": (missing_image, "partial_bundle"),
    "one key counted twice toward a threshold": (one_key_counted_twice, "arbitrary_software"),
    "a float in a signed part": (float_in_timestamp, "arbitrary_software"),
    "downgrade below what the ECU runs, on a fresh agent": (downgrade_on_a_fresh_agent,
                                                             "rollback"),
    "lower-priority role signs what a terminating role owns":
        (terminating_delegation_bypassed, "partial_bundle"),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_rejected_before_the_user_or_the_ecu_sees_it(
        tmp_path: Path, name: str, caplog: pytest.LogCaptureFixture):
    attack, threat = ATTACKS[name]
    with make_bench(tmp_path) as bench:
        attack(bench)
        bench.start_manager()
        bench.manager.submit(campaign_args("OTA-EVIL", "6.6.6"))
        kind, data = bench.records.terminal("OTA-EVIL", timeout=50)
        assert (kind, data["threat"]) == ("ota.rejected", threat), data
        assert data["message"]
        assert not bench.records.of("ota.consent_requested", "OTA-EVIL")
        consent_via_inbox(bench, "OTA-EVIL")           # a consent cannot revive it
        assert not bench.programming_requests("eps")
        assert not bench.programming_requests("dvr")
        assert bench.ecus["eps"].versions()[0xF189] == "1.0.0"
        # only a .part (kept for a Range resume) may stay; never an image ready to flash
        assert not list((tmp_path / "downloads").glob("*eps*.bin")), "unverified image kept"
        # A rejection is an outcome, not a crash: no traceback is logged for it.
        assert not [r.getMessage() for r in caplog.records if r.exc_info]


def test_rollback_to_an_older_release_after_an_update(tmp_path: Path):
    with make_bench(tmp_path) as bench:
        bench.release("eps", EPS_V2, 5)
        bench.start_manager()
        bench.manager.submit(campaign_args("OTA-NEW", "2.0"))
        bench.records.wait("ota.consent_requested", "OTA-NEW")
        consent_via_inbox(bench, "OTA-NEW")
        assert bench.records.terminal("OTA-NEW")[0] == "ota.completed"
        requests_after_update = len(bench.programming_requests("eps"))
        services = {uds_start(bytes(m.data))[:1].hex() for m in
                    bench.programming_requests("eps")}
        assert {"10", "27", "2e", "31", "34", "36", "37", "11"} <= services   # the sniffer
        bench.release("eps", {"F189": "1.5.0", "F188": "SW-EPS-0150", "F195": "SUP-1.5.0"}, 4)
        bench.manager.submit(campaign_args("OTA-OLD", "1.5"))
        kind, data = bench.records.terminal("OTA-OLD")
        assert (kind, data["threat"], data["ecu"]) == ("ota.rejected", "rollback", "eps")
        assert len(bench.programming_requests("eps")) == requests_after_update
        assert bench.ecus["eps"].versions()[0xF189] == "2.0.0"


def test_online_timestamp_key_cannot_freeze_later_updates(tmp_path: Path):
    # The online timestamp key claims 2036; the agent raises its time floor by half a day
    # at most ([ota.uptane] max_time_step_days), so the next genuine update still installs.
    with make_bench(tmp_path, uptane={"max_time_step_days": 0.5}) as bench:
        forged = forged_timestamp(bench.ota.director.vehicle(VIN),
                                  bench.ota.keys.signer("director-timestamp"),
                                  parse_time("2036-01-01T00:00:00Z"))
        bench.server.set_faults(Faults(overrides={
            f"/director/{VIN}/metadata/timestamp.json": forged}))
        bench.start_manager()
        bench.manager.submit(campaign_args("OTA-2036", "1.0"))
        kind, data = bench.records.terminal("OTA-2036")
        assert (kind, data.get("reason")) == ("ota.failed", "nothing_assigned"), data
        bench.server.set_faults(None)
        bench.release("eps", EPS_V2, 2)
        bench.manager.submit(campaign_args("OTA-NEXT", "2.0"))
        bench.records.wait("ota.consent_requested", "OTA-NEXT")
        assert not bench.programming_requests("eps")
        consent_via_inbox(bench, "OTA-NEXT")
        kind, data = bench.records.terminal("OTA-NEXT")
        assert kind == "ota.completed", data
        assert bench.ecus["eps"].versions()[0xF189] == "2.0.0"


def test_image_above_the_speed_floor_but_past_its_total_budget(tmp_path: Path):
    # 20 kB/s is twice the bench's speed floor, but 24 KiB may take 0.2 + 0.25 s in all.
    options = {"min_average_bytes_s": 100_000.0, "transfer_allowance_s": 0.2}
    with make_bench(tmp_path, uptane=options) as bench:
        bench.release("eps", EPS_V2, 2)
        bench.server.set_faults(Faults(only="/image/targets/", slow_bytes_per_s=20_000))
        bench.start_manager()
        bench.manager.submit(campaign_args("OTA-SLOW", "2.0"))
        kind, data = bench.records.terminal("OTA-SLOW")
        assert (kind, data.get("threat")) == ("ota.rejected", "partial_bundle"), data
        assert "slow_retrieval" in data["message"] and "total time budget" in data["message"]
        assert not bench.records.of("ota.consent_requested", "OTA-SLOW")
        assert not bench.programming_requests("eps")
        assert not bench.programming_requests("dvr")
