"""A consent answers *this* offer (issue 10, hole 5): bound to the activity, the campaign
and the offer nonce drawn when the offer is shown, given after it was shown and before it
expires. An ``accept`` left before the offer existed, or naming another offer's nonce, is
refused and recorded (``ota.consent_rejected``) and nothing reaches the ECU: the bus is
sniffed for every programming service (10 02, 27, 2E, 31, 34, 36, 37, 11)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from bus_sniff import programming_requests
from campaign_bench import EPS_V2, Bench, make_bench

from agent.ota.consent import (
    ConsentError,
    ConsentInbox,
    Decision,
    HmiAdapter,
    Offer,
    RejectLimiter,
    parse_decision,
)
from agent.ota.settings import HmiConfig
from agent.statestore import StateDB
from hil.backend.campaign import campaign_args, consent_args

ROOT = Path(__file__).resolve().parents[2]
QUIET_S = 1.5          # how long nothing may happen after a refused consent (7 inbox polls)


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def programming(bench: Bench) -> list[tuple[int, str]]:
    return programming_requests(bench.sniffed, bench.cfg.ecu)


def backend_consent(bench: Bench, args: dict[str, Any]) -> bool:
    """What the agent's ``ota.consent`` command handler does (agent/service/service.py)."""
    assert bench.manager is not None
    return bench.manager.consent(parse_decision(args, "backend", by="owner-app"))


def hmi_consent(bench: Bench, payload: dict[str, Any]) -> None:
    """A message on the HMI consent topic, through the adapter's own message handler."""
    assert bench.manager is not None
    adapter = HmiAdapter(HmiConfig(), "VIN", bench.manager.consent, host="127.0.0.1",
                         port=1, tls=False)
    adapter._on_message(None, None, SimpleNamespace(payload=json.dumps(payload).encode()))


def rejected(bench: Bench, activity: str) -> list[dict[str, Any]]:
    return bench.records.of("ota.consent_rejected", activity)


@pytest.fixture
def bench(tmp_path: Path):
    with make_bench(tmp_path) as b:
        yield b


# -- the offer check on its own -------------------------------------------------------------

def test_offer_refuses_every_consent_that_does_not_answer_it():
    offer = Offer.new("OTA-1", "eps-tuning", time.time() + 60, inbox_mark=7)

    def d(**kw: Any) -> Decision:
        values: dict[str, Any] = dict(activity_id="OTA-1", accepted=True, channel="hmi",
                                      at=time.time(), offer_nonce=offer.nonce,
                                      campaign="eps-tuning")
        values.update(kw)
        return Decision(**values)

    assert offer.refusal(d()) is None
    assert offer.refusal(d(), row=8) is None
    assert offer.refusal(d(activity_id="OTA-2")) == "no_offer"
    assert offer.refusal(d(at=offer.shown_at - 0.001)) == "before_offer"
    assert offer.refusal(d(channel="cli"), row=7) == "before_offer"  # left before, any clock
    assert offer.refusal(d(at=offer.expires_at + 1)) == "expired"
    assert offer.refusal(d(offer_nonce="")) == "nonce_missing"
    assert offer.refusal(d(offer_nonce=Offer.new("OTA-1", "eps-tuning", 0).nonce)) == \
        "nonce_mismatch"
    assert offer.refusal(d(campaign="")) == "campaign_mismatch"
    assert offer.refusal(d(campaign="other")) == "campaign_mismatch"
    assert len(offer.nonce) == 32 and offer.nonce != Offer.new("OTA-1", "x", 0).nonce


def test_consent_messages_parse_with_or_without_a_nonce_but_not_with_a_wrong_type():
    ok = parse_decision({"activity_id": "A", "campaign": "c", "offer_nonce": "ab",
                         "decision": "accept"}, "hmi")
    assert (ok.offer_nonce, ok.campaign, ok.accepted) == ("ab", "c", True)
    bare = parse_decision({"activity_id": "A", "decision": "decline"}, "backend", by="k")
    assert (bare.offer_nonce, bare.campaign, bare.by) == ("", "", "k")   # refused later
    for bad in ({"activity_id": "A", "decision": "accept", "offer_nonce": 7},
                {"activity_id": "A", "decision": "accept", "campaign": ["x"]},
                {"activity_id": "A", "decision": "yes"}):
        with pytest.raises(ConsentError):
            parse_decision(bad, "hmi")


def test_inbox_of_an_older_database_gains_the_nonce_columns(tmp_path: Path):
    db = StateDB(tmp_path / "state.db")
    db.conn.execute("CREATE TABLE ota_consent_inbox (id INTEGER PRIMARY KEY, activity_id TEXT"
                    " NOT NULL, decision TEXT NOT NULL, channel TEXT NOT NULL, at REAL NOT "
                    "NULL, taken INTEGER NOT NULL DEFAULT 0)")
    db.conn.execute("INSERT INTO ota_consent_inbox(activity_id, decision, channel, at) "
                    "VALUES ('OLD', 'accept', 'cli', 1.0)")
    inbox = ConsentInbox(db)
    row = inbox.post("NEW", True, offer_nonce="ab", campaign="c")
    assert inbox.mark() == row == 2
    taken = inbox.take()
    assert [(r, d.activity_id, d.offer_nonce, d.campaign) for r, d in taken] == \
        [(1, "OLD", "", ""), (2, "NEW", "ab", "c")]
    assert inbox.take() == []                            # each row is looked at once
    db.close()


def test_refusal_records_are_rate_limited_and_the_rest_counted():
    limiter = RejectLimiter(limit=2, window_s=10.0)
    assert [limiter.allow(100.0 + i * 0.1) for i in range(4)] == \
        [(True, 0), (True, 0), (False, 0), (False, 0)]
    assert limiter.allow(111.0) == (True, 2)             # next window says what it missed


# -- the campaign: consents left before the offer --------------------------------------------

def test_cli_force_accept_left_before_the_offer_flashes_nothing(bench: Bench):
    """Before the fix the pre-placed row was taken as the answer and the ECU flashed."""
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    config = str(bench.cfg.path)
    refused = cli("ota", "consent", "OTA-PRE", "--accept", "--config", config)
    assert refused.returncode == 1 and "no OTA activity is open" in refused.stderr
    left = cli("ota", "consent", "OTA-PRE", "--accept", "--force", "--config", config)
    assert left.returncode == 0 and "the agent will refuse it" in left.stdout, left
    first = bench.records.wait("ota.consent_rejected", "OTA-PRE")
    assert (first["reason"], first["channel"], first["decision"], first["open_activity"]) == \
        ("no_offer", "cli", "accept", None)
    # the same, left while the agent is down: nobody could have seen an offer yet
    bench.stop_manager()
    assert cli("ota", "consent", "OTA-PRE", "--accept", "--force", "--config",
               config).returncode == 0
    bench.start_manager()
    bench.manager.submit(campaign_args("OTA-PRE", "2.0"))
    asked = bench.records.wait("ota.consent_requested", "OTA-PRE")
    second = bench.records.wait("ota.consent_rejected", "OTA-PRE", count=2)
    assert (second["reason"], second["open_activity"]) == ("before_offer", "OTA-PRE")
    time.sleep(QUIET_S)
    assert not bench.records.of("ota.consent", "OTA-PRE")
    assert programming(bench) == []
    assert bench.manager.status()["awaiting_consent"] == "OTA-PRE"
    status = cli("ota", "status", "--config", config)
    assert f"offer: campaign OTA-PRE offer_nonce {asked['offer_nonce']}" in status.stdout
    # the user answers the offer shown: the CLI reads its nonce; now it flashes
    done = cli("ota", "consent", "OTA-PRE", "--accept", "--config", config)
    assert done.returncode == 0, done.stderr
    kind, data = bench.records.terminal("OTA-PRE")
    assert kind == "ota.completed", data
    consent, = bench.records.of("ota.consent", "OTA-PRE")
    assert (consent["channel"], consent["offer_nonce"]) == ("cli", asked["offer_nonce"])
    assert programming(bench)                            # the sniffer does see a flash


def test_backend_and_hmi_accept_before_the_offer_are_refused_and_recorded(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    early = {"activity_id": "OTA-EARLY", "campaign": "OTA-EARLY", "decision": "accept"}
    assert backend_consent(bench, early) is False
    hmi_consent(bench, early)
    bench.manager.submit(campaign_args("OTA-EARLY", "2.0"))
    bench.records.wait("ota.consent_requested", "OTA-EARLY")
    time.sleep(QUIET_S)
    assert [(r["channel"], r["reason"], r["by"]) for r in rejected(bench, "OTA-EARLY")] == \
        [("backend", "no_offer", "owner-app"), ("hmi", "no_offer", "")]
    assert not bench.records.of("ota.consent", "OTA-EARLY")
    assert programming(bench) == []


def test_wrong_or_old_nonce_is_refused_and_the_offers_own_flashes(bench: Bench):
    bench.release("eps", EPS_V2, 2)
    bench.start_manager()
    bench.manager.submit(campaign_args("OTA-OLD", "2.0"))
    old = bench.records.wait("ota.consent_requested", "OTA-OLD")
    assert backend_consent(bench, consent_args(old, "decline")) is True
    assert bench.records.terminal("OTA-OLD")[1]["reason"] == "declined"
    bench.manager.submit(campaign_args("OTA-NEW", "2.0"))
    new = bench.records.wait("ota.consent_requested", "OTA-NEW")
    assert new["offer_nonce"] != old["offer_nonce"]
    replayed = {**consent_args(new), "offer_nonce": old["offer_nonce"]}
    assert backend_consent(bench, replayed) is False                 # old offer's nonce
    hmi_consent(bench, {**consent_args(new), "offer_nonce": "0" * 32})  # a guess
    hmi_consent(bench, {**consent_args(new), "campaign": "other"})
    hmi_consent(bench, {k: v for k, v in consent_args(new).items() if k != "offer_nonce"})
    db = bench.db()
    try:
        ConsentInbox(db).post("OTA-NEW", True, offer_nonce=old["offer_nonce"])
    finally:
        db.close()
    want = ["nonce_mismatch", "nonce_mismatch", "campaign_mismatch", "nonce_missing",
            "nonce_mismatch"]
    bench.records.wait("ota.consent_rejected", "OTA-NEW", count=len(want))
    time.sleep(QUIET_S)
    assert [r["reason"] for r in rejected(bench, "OTA-NEW")] == want
    assert [r["channel"] for r in rejected(bench, "OTA-NEW")] == \
        ["backend", "hmi", "hmi", "hmi", "cli"]
    assert not bench.records.of("ota.consent", "OTA-NEW")
    assert programming(bench) == []
    # the answer to this offer counts
    assert backend_consent(bench, consent_args(new)) is True
    kind, data = bench.records.terminal("OTA-NEW")
    assert kind == "ota.completed", data
    consent, = bench.records.of("ota.consent", "OTA-NEW")
    assert (consent["decision"], consent["offer_nonce"]) == ("accepted", new["offer_nonce"])
    assert programming(bench)
