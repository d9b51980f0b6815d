"""The software identification number (SWIN, GB 44496 / UN R156 RXSWIN): read over UDS
from the ECU's configured DID or computed from the type-approval ECUs' versions, recorded
when it changes, shown beside Attachment 2 #35-40, and an update that changes it needs the
change permit the signed campaign names (notice §(七)). Real parts: bench repositories
over HTTP, virtual ECUs over ISO-TP, the state database on disk."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
from campaign_bench import EPS_V2, Bench, consent_via_inbox, make_bench

from agent.ota.cli import format_table, versions_table
from agent.ota.history import OtaHistory
from agent.ota.inventory import Inventory
from hil.backend.campaign import campaign_args

SWIN_DID = 0xF1A0


@pytest.fixture
def bench(tmp_path: Path):
    with make_bench(tmp_path) as b:
        yield b


def approval(bench: Bench, *, swin_did: str = "", type_approval: bool = True) -> None:
    """The eps is a type-approval ECU (and reports the SWIN at ``swin_did``)."""
    bench.cfg.ecu = [dataclasses.replace(e, type_approval=type_approval, swin_did=swin_did)
                     if e.name == "eps" else e for e in bench.cfg.ecu]


def expected_swin(versions: dict[str, dict[str, str]]) -> str:
    """Written out here as a verifier would: SHA-256 over the canonical JSON (ASCII strings
    only, so sorted keys and no spaces are the RFC 8785 form) of the software DIDs."""
    basis = {ecu: {did: v.get(did) for did in ("F188", "F189", "F195")}
             for ecu, v in versions.items()}
    text = json.dumps(basis, sort_keys=True, separators=(",", ":"))
    return "SWIN-" + hashlib.sha256(text.encode()).hexdigest()[:16].upper()


def test_swin_computed_from_type_approval_ecus_and_recorded_when_it_changes(bench: Bench):
    approval(bench)
    bench.start_manager()
    first = bench.records.wait("ecu.swin")
    eps = bench.ecus["eps"].versions()
    want = expected_swin({"eps": {"F188": eps[0xF188], "F189": eps[0xF189],
                                  "F195": eps[0xF195]}})
    assert (first["swin"], first["computed"], first["previous"]) == (want, want, None)
    assert first["basis"] == {"eps": {"F188": "SW-EPS-0100", "F189": "1.0.0",
                                      "F195": "SUP-1.0.0"}}
    bench.manager.request_inventory()                         # unchanged: no record
    bench.records.wait("ecu.versions", count=4)
    assert len(bench.records.of("ecu.swin")) == 1
    sim = bench.ecus["eps"]
    with sim._lock:                                           # reflashed behind our back
        sim.state.banks[sim.state.active].versions[0xF189] = "1.0.1"
    bench.manager.request_inventory()
    second = bench.records.wait("ecu.swin", count=2)
    assert second["previous"] == want and second["swin"] != want
    assert bench.records.wait("ecu.tamper")["dids"]["F189"]["found"] == "1.0.1"


def test_swin_read_over_uds_from_the_configured_did_and_shown_with_att2(bench: Bench):
    approval(bench, swin_did=f"{SWIN_DID:04X}", type_approval=False)
    sim = bench.ecus["eps"]
    with sim._lock:
        sim.state.board[SWIN_DID] = b"R156-SWIN-0042"
    bench.start_manager()
    got = bench.records.wait("ecu.swin")
    assert got["swin"] == "R156-SWIN-0042"
    assert got["reported"] == {"eps": "R156-SWIN-0042"} and got["computed"] is None
    db = bench.db()
    try:
        inventory = Inventory(db, list(bench.cfg.ecu), list(bench.cfg.bus))
        table = versions_table(bench.cfg, inventory.initial(), inventory.current(),
                               inventory.tampered(), inventory.swin())
    finally:
        db.close()
    text = format_table(table)
    assert "SWIN (GB 44496): R156-SWIN-0042 (reported by eps)" in text
    assert table["swin"]["swin"] == "R156-SWIN-0042"
    eps_row = next(e for e in table["ota_ecus"]["ecus"] if e["ecu"] == "eps")
    assert eps_row["type_approval"] is True


def test_update_of_a_type_approval_ecu_without_a_change_permit_is_refused(bench: Bench):
    """Nothing is downloaded, the user is not asked, no programming request reaches the
    ECU: the campaign ends as failed, reason type_approval_permit_missing."""
    approval(bench)
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    bench.records.wait("ecu.swin")
    bench.manager.submit(campaign_args("OTA-TA-1", "2.0", ecus=["eps"]))
    kind, data = bench.records.terminal("OTA-TA-1")
    assert kind == "ota.failed"
    assert data["reason"] == "type_approval_permit_missing"
    assert data["type_approval_ecus"] == ["eps"]
    assert not bench.records.of("ota.consent_requested", "OTA-TA-1")
    assert bench.programming_requests("eps") == []
    assert bench.ecus["eps"].versions()[0xF189] == "1.0.0"


def test_with_the_signed_permit_the_update_runs_and_the_history_keeps_the_permit(
        bench: Bench):
    approval(bench)
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    before = bench.records.wait("ecu.swin")
    bench.manager.submit(campaign_args("OTA-TA-2", "2.0", ecus=["eps"],
                                       type_approval_permit="MIIT-OTA-2026-0815"))
    asked = bench.records.wait("ota.consent_requested", "OTA-TA-2")
    assert asked["type_approval_permit"] == "MIIT-OTA-2026-0815"
    assert asked["ecus"][0]["type_approval"] is True            # the user is told
    consent_via_inbox(bench, "OTA-TA-2")
    assert bench.records.terminal("OTA-TA-2")[0] == "ota.completed"
    after = bench.records.wait("ecu.swin", count=2)
    assert after["previous"] == before["swin"] and after["swin"] != before["swin"]
    assert after["reason"] == "ota"
    db = bench.db()
    try:
        (entry,) = OtaHistory(db).entries()
    finally:
        db.close()
    assert entry["type_approval_permit"] == "MIIT-OTA-2026-0815"
