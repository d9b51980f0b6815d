"""Campaign flow in the agent's OTA thread against real parts: bench repositories over
HTTP, two virtual ECUs on a python-can bus (ISO-TP), the state database on disk. The
vehicle state is set by the test (the end-to-end test feeds real CAN frames instead)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from campaign_bench import (
    DVR_V2,
    EPS_V2,
    VIN,
    Bench,
    Records,
    consent_via_inbox,
    make_bench,
    wait_until,
)

from agent.ota.campaign import ACTIVE_KEY
from agent.ota.history import OtaHistory
from agent.ota.preconditions import GEAR, SOC
from agent.statestore import StateDB
from hil.backend.campaign import campaign_args
from hil.ecu_sim.faults import Fault
from hil.repo import Faults


@pytest.fixture
def bench(tmp_path: Path):
    with make_bench(tmp_path) as b:
        yield b


def offer(bench: Bench, activity: str, version: str = "2.0", **kw: Any) -> dict[str, Any]:
    assert bench.manager is not None
    bench.manager.submit(campaign_args(activity, version, **kw))
    return bench.records.wait("ota.consent_requested", activity)


def history(bench: Bench) -> list[dict[str, Any]]:
    db = bench.db()
    try:
        h = OtaHistory(db)
        assert h.verify().ok
        return h.entries()
    finally:
        db.close()


def test_accepted_campaign_flashes_both_ecus_and_keeps_history(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.release("dvr", DVR_V2, 2)
    bench.start_manager()
    asked = offer(bench, "OTA-1", recall=True, recall_number="RC-7")
    assert {e["ecu"]: (e["from"], e["to"]) for e in asked["ecus"]} == \
        {"eps": ("1.0.0", "2.0.0"), "dvr": ("0.7.0", "0.8.0")}
    assert asked["recall_number"] == "RC-7" and asked["estimated_duration_s"] == 300.0
    consent_via_inbox(bench, "OTA-1")
    kind, data = bench.records.terminal("OTA-1")
    assert kind == "ota.completed", data
    assert [p["percent"] for p in bench.records.of("ota.progress", "OTA-1")
            if p["ecu"] == "eps"] == [25, 50, 75]
    done = {d["ecu"]: d for d in bench.records.of("ota.ecu_done", "OTA-1")}
    assert done["eps"]["versions_before"]["F189"] == "1.0.0"
    assert done["eps"]["versions_after"]["F189"] == "2.0.0"
    assert bench.ecus["dvr"].versions()[0xF189] == "0.8.0"
    entry, = history(bench)
    assert (entry["activity_id"], entry["result"], entry["recall_number"]) == \
        ("OTA-1", "completed", "RC-7")
    assert entry["consent"]["decision"] == "accepted"
    assert {r["ecu"]: r["after"]["F189"] for r in entry["ecus"]} == \
        {"eps": "2.0.0", "dvr": "0.8.0"}
    # accident records carry the versions and the upgrade history
    extras = bench.manager.extras
    assert extras["software_versions"]["eps"]["initial"]["F189"] == "1.0.0"
    assert extras["software_versions"]["eps"]["current"]["F189"] == "2.0.0"
    assert extras["software_upgrades"][-1]["activity_id"] == "OTA-1"


def test_declined_is_not_offered_again_until_the_version_changes(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    offer(bench, "OTA-A", "2.0", campaign="eps-tuning")
    consent_via_inbox(bench, "OTA-A", accept=False)
    kind, data = bench.records.terminal("OTA-A")
    assert (kind, data["reason"]) == ("ota.failed", "declined")
    assert bench.records.of("ota.consent", "OTA-A")[0]["decision"] == "declined"
    assert not bench.programming_requests("eps")
    bench.manager.submit(campaign_args("OTA-B", "2.0", campaign="eps-tuning"))
    kind, data = bench.records.terminal("OTA-B")
    assert (kind, data["reason"], data["declined_activity"]) == \
        ("ota.not_offered", "declined", "OTA-A")
    assert not bench.records.of("ota.consent_requested", "OTA-B")
    # a restart does not forget the decline
    bench.stop_manager()
    bench.start_manager()
    bench.manager.submit(campaign_args("OTA-C", "2.0", campaign="eps-tuning"))
    assert bench.records.terminal("OTA-C")[0] == "ota.not_offered"
    bench.manager.submit(campaign_args("OTA-D", "2.1", campaign="eps-tuning"))
    bench.records.wait("ota.consent_requested", "OTA-D")
    consent_via_inbox(bench, "OTA-D")
    assert bench.records.terminal("OTA-D")[0] == "ota.completed"
    assert [e["result"] for e in history(bench)] == \
        ["failed", "not_offered", "not_offered", "completed"]


def test_consent_timeout_fails_without_touching_an_ecu(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.start_manager(consent_timeout_s=1.0)
    offer(bench, "OTA-T")
    kind, data = bench.records.terminal("OTA-T")
    assert (kind, data["reason"]) == ("ota.failed", "consent_timeout")
    assert not bench.programming_requests("eps")
    consent_via_inbox(bench, "OTA-T")          # too late: nothing happens any more
    assert bench.ecus["eps"].versions()[0xF189] == "1.0.0"


def test_unsafe_vehicle_before_start_flashes_nothing(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.vehicle[GEAR] = "D"
    bench.start_manager()
    offer(bench, "OTA-P")
    consent_via_inbox(bench, "OTA-P")
    kind, data = bench.records.terminal("OTA-P")
    assert (kind, data["reason"], data["condition"]) == ("ota.failed", "precondition", "gear")
    failed, = bench.records.of("ota.precondition_failed", "OTA-P")
    assert (failed["when"], failed["value"], failed["required"]) == ("before_start", "D", "P")
    assert not bench.programming_requests("eps")


def test_unknown_signal_blocks_unless_not_required(tmp_path: Path):
    with make_bench(tmp_path) as bench:
        bench.release("eps", EPS_V2, 2)
        bench.vehicle[SOC] = None                   # unmapped / stale
        bench.start_manager()
        offer(bench, "OTA-U1")
        consent_via_inbox(bench, "OTA-U1")
        kind, data = bench.records.terminal("OTA-U1")
        assert (kind, data["condition"], data["value"]) == ("ota.failed", "soc", None)
        bench.stop_manager()
        bench.start_manager(not_required=["soc"])   # e.g. no traction battery
        offer(bench, "OTA-U2")
        consent_via_inbox(bench, "OTA-U2")
        assert bench.records.terminal("OTA-U2")[0] == "ota.completed"


class GearChangeAt(Records):
    """The driver shifts out of P once the flash reached ``percent``."""

    def __init__(self, vehicle: dict[str, Any], percent: int):
        super().__init__()
        self.vehicle, self.percent = vehicle, percent

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        if type_ == "ota.progress" and data["percent"] >= self.percent:
            self.vehicle[GEAR] = "D"
        super().__call__(type_, data)


def test_unsafe_vehicle_during_flash_stops_at_a_block_and_restores(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.records = GearChangeAt(bench.vehicle, 25)
    bench.start_manager()
    offer(bench, "OTA-D")
    consent_via_inbox(bench, "OTA-D")
    kind, data = bench.records.terminal("OTA-D")
    assert (kind, data["reason"], data["condition"]) == ("ota.failed", "precondition", "gear")
    stopped, = bench.records.of("ota.precondition_failed", "OTA-D")
    assert (stopped["when"], stopped["step"], stopped["ecu"]) == \
        ("during_flash", "transfer", "eps")
    assert 0 < stopped["bytes"] < 24 * 1024       # a block boundary, not the end
    rolled, = bench.records.of("ota.rolled_back", "OTA-D")
    assert rolled["versions"]["F189"] == "1.0.0"  # two banks: the old image runs again
    assert bench.ecus["eps"].versions()[0xF189] == "1.0.0"
    assert history(bench)[-1]["ecus"][0]["rolled_back"] is True


def test_interrupted_download_resumes_with_range(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.server.set_faults(Faults(only="/image/targets/", drop_after=10_000))
    bench.start_manager()
    offer(bench, "OTA-R")
    image = [r for r in bench.server.requests if "/image/targets/" in r.path]
    assert [(r.range, r.status) for r in image] == [(None, 200), ("bytes=10000-", 206)]
    consent_via_inbox(bench, "OTA-R")
    assert bench.records.terminal("OTA-R")[0] == "ota.completed"


def test_dependency_check_failure_rolls_back(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.ecus["eps"].inject(Fault(kind="dependency_fail", times=0))
    bench.start_manager()
    offer(bench, "OTA-F")
    consent_via_inbox(bench, "OTA-F")
    kind, data = bench.records.terminal("OTA-F")
    assert (kind, data["reason"], data["error"]["step"]) == \
        ("ota.failed", "flash_failed", "dependency_check")
    assert bench.records.of("ota.rolled_back", "OTA-F")[0]["versions"]["F189"] == "1.0.0"
    assert bench.ecus["eps"].versions()[0xF189] == "1.0.0"
    # the failed activity explains what the ECU reports now: no tamper alarm afterwards
    bench.manager.request_inventory()
    bench.records.wait("ecu.versions", count=bench.records.types().count("ecu.versions") + 2)
    assert not bench.records.of("ecu.tamper")


def test_single_bank_ecu_failing_is_reported_not_hidden(bench: Bench):
    bench.release("dvr", DVR_V2, 2)
    bench.ecus["dvr"].inject(Fault(kind="nrc", step="transfer_exit", nrc=0x72, times=0))
    bench.start_manager()
    offer(bench, "OTA-S")
    consent_via_inbox(bench, "OTA-S")
    kind, data = bench.records.terminal("OTA-S")
    assert (kind, data["ecu"], data["touched"], data["rolled_back"]) == \
        ("ota.failed", "dvr", True, False)
    assert data["error"]["nrc"] == 0x72
    assert not bench.records.of("ota.rolled_back", "OTA-S")


def test_version_changed_without_ota_is_tamper(bench: Bench):
    bench.start_manager()
    bench.records.wait("ecu.versions", count=2)
    assert not bench.records.of("ecu.tamper")
    ecu = bench.ecus["eps"]
    with ecu._lock:            # someone reflashed the ECU behind the agent's back
        ecu.state.banks[ecu.state.active].versions[0xF189] = "6.6.6"
    bench.manager.request_inventory()
    tamper = bench.records.wait("ecu.tamper")
    assert tamper["ecu"] == "eps"
    assert tamper["dids"] == {"F189": {"expected": "1.0.0", "found": "6.6.6"}}
    assert tamper["reason"] == "command"


def test_restart_while_awaiting_consent_resumes_with_the_same_deadline(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    asked = offer(bench, "OTA-X")
    bench.stop_manager()                       # agent restarts before the user answers
    bench.start_manager()
    bench.records.wait("ota.resumed", "OTA-X")
    assert bench.records.of("ota.consent_requested", "OTA-X") == [asked]   # not asked twice
    consent_via_inbox(bench, "OTA-X")
    assert bench.records.terminal("OTA-X")[0] == "ota.completed"


def test_power_cut_while_flashing_ends_the_activity_on_the_next_start(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    offer(bench, "OTA-K")
    bench.stop_manager()
    db = StateDB(bench.cfg.state_dir / "state.db")
    active = db.get(ACTIVE_KEY)
    db.put(ACTIVE_KEY, {**active, "phase": "installing", "ecu": "eps"})   # as if mid-flash
    db.close()
    bench.start_manager()
    kind, data = bench.records.terminal("OTA-K")
    assert (kind, data["reason"], data["ecu"]) == ("ota.failed", "interrupted", "eps")
    assert data["versions"]["F189"] == "1.0.0"
    assert wait_until(lambda: bench.manager.status()["active"] is None, 5)


def test_bad_campaign_arguments_and_duplicates_are_refused(bench: Bench):
    from agent.ota.campaign import CampaignError

    bench.start_manager()
    args = campaign_args("OTA-Z", "1")
    for broken in ({**args, "duration_s": "soon"}, {**args, "recall": True},
                   {**args, "colour": "red"}, {k: v for k, v in args.items()
                                                 if k != "purpose"}):
        with pytest.raises(CampaignError):
            bench.manager.submit(broken)
    bench.manager.submit(args)
    with pytest.raises(CampaignError, match="in progress|already known"):
        bench.manager.submit(args)
    bench.records.terminal("OTA-Z")           # nothing assigned by the Director
    assert bench.records.of("ota.failed", "OTA-Z")[0]["reason"] == "nothing_assigned"
    with pytest.raises(CampaignError, match="already known"):
        bench.manager.submit(args)
    assert json.dumps(history(bench))          # history stays JSON and chained
    assert VIN
