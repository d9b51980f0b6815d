"""Journal: lanes, quota eviction, quarantine, durability under SIGKILL, full disk."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from agent.journal.outbox import Journal, JournalError, is_disk_full, lane_of
from agent.journal.recovery import open_state_db
from agent.journal.settings import JournalConfig
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey, load_public_key
from agent.records.verify import verify_records
from agent.statestore import StateDB
from tests.helpers import SAMPLE, ChildLines

VIN = "LSVTEST0000000001"
ROOT = Path(__file__).resolve().parents[1]



def append(db: StateDB, journal: Journal, chain: RecordChain, types: list[str],
           pad: int = 0) -> list[dict[str, Any]]:
    """Make and store records of ``types`` in one transaction (one group commit)."""
    made = []
    with db.transaction():
        for type_ in types:
            data = dict(SAMPLE[type_], pad="x" * pad)
            record = chain.make(type_, data, 1.7e9 + chain.seq, time_source="system")
            journal.store(record)
            made.append(record)
    return made


@pytest.fixture
def state(tmp_path: Path) -> tuple[StateDB, Journal, RecordChain]:
    db = StateDB(tmp_path / "state.db")
    yield db, Journal(db), RecordChain(db, DeviceKey.generate(), VIN)
    db.close()


@pytest.mark.parametrize(("type_", "lane"), [
    ("accident.trigger", 0), ("accident.record", 1), ("cda.activated", 2),
    ("driver.disengagement", 2), ("safety.aeb", 2), ("selfcheck.violation", 2),
    ("ota.progress", 3), ("ecu.tamper", 3), ("stats.period", 4), ("agent.health", 4),
    ("signal.stale", 4), ("journal.evicted", 4), ("something.new", 4),
])
def test_lane_of_each_family(type_: str, lane: int) -> None:
    assert lane_of(type_) == lane


def test_next_batch_is_lane_then_seq_and_ack_deletes(state) -> None:
    db, journal, chain = state
    types = ["agent.health", "stats.period", "ecu.versions", "safety.aeb", "accident.record",
             "accident.trigger", "agent.health", "safety.aeb", "accident.trigger"]
    made = append(db, journal, chain, types)
    batch = journal.next_batch(100)
    expected = sorted(made, key=lambda r: (lane_of(r["type"]), r["seq"]))
    assert [p.id for p in batch] == [r["id"] for r in expected]
    assert [p.lane for p in batch] == [0, 0, 1, 2, 2, 3, 4, 4, 4]
    assert json.loads(batch[0].payload) == expected[0]
    assert journal.depth() == {0: 2, 1: 1, 2: 2, 3: 1, 4: 3, 5: 0}
    assert journal.bytes_used() == sum(len(p.payload) for p in batch)

    first_two = [batch[0].id, batch[1].id]
    assert [p.id for p in journal.next_batch(3, exclude=first_two)] == [p.id for p in batch[2:5]]
    assert journal.ack(batch[0].id) is True
    assert journal.ack(batch[0].id) is False            # idempotent
    assert journal.ack_many([p.id for p in batch[1:4]]) == 3
    assert [p.id for p in journal.next_batch(100)] == [p.id for p in batch[4:]]
    assert journal.depth() == {0: 0, 1: 0, 2: 1, 3: 1, 4: 3, 5: 0}


def test_store_outside_a_transaction_is_refused(state) -> None:
    db, journal, chain = state
    with db.transaction():
        record = chain.make("agent.health", {}, 1.7e9, time_source="system")
    with pytest.raises(JournalError):
        journal.store(record)


def test_record_and_chain_head_roll_back_together(state) -> None:
    db, journal, chain = state
    append(db, journal, chain, ["agent.health"])
    with pytest.raises(RuntimeError), db.transaction():
        for _ in range(3):
            journal.store(chain.make("safety.aeb", SAMPLE["safety.aeb"], 1.7e9,
                                     time_source="system"))
        raise RuntimeError("pipeline failed before commit")
    assert chain.seq == 1
    assert journal.depth()[2] == 0
    assert [r["seq"] for r in append(db, journal, chain, ["safety.aeb"])] == [2]


def test_quota_evicts_low_lanes_first_never_accidents(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    journal = Journal(db, JournalConfig(quota_mb=40_000 / 1024 / 1024))
    chain = RecordChain(db, DeviceKey.generate(), VIN)
    # ~1 kB records: 10 of each lane-4, lane-3, lane-2 type, 4 accident triggers/records.
    early = append(db, journal, chain,
                   ["agent.health", "stats.period", "ecu.versions", "safety.aeb"] * 5
                   + ["accident.trigger", "accident.record"] * 2, pad=600)
    assert journal.evicted == 0
    # 30 more safety records: the quota is hit and lanes 4, then 3, give way first.
    later = []
    for _ in range(30):
        later += append(db, journal, chain, ["safety.aeb"], pad=600)
    assert journal.bytes_used() <= journal.quota_bytes
    kept = {p.id for p in journal.next_batch(10_000)}
    lost = [r for r in early + later if r["id"] not in kept]
    assert all(r["id"] in kept for r in early if lane_of(r["type"]) <= 1)
    lost_lanes = [lane_of(r["type"]) for r in lost]
    assert lost_lanes.count(4) == 10 and lost_lanes.count(3) == 5   # all of them gone ...
    assert all(lane_of(r["type"]) >= 2 for r in lost)
    oldest_first = sorted(r["seq"] for r in early + later if lane_of(r["type"]) == 2)
    assert sorted(r["seq"] for r in lost if lane_of(r["type"]) == 2) == \
        oldest_first[:lost_lanes.count(2)]                          # ... then the oldest of 2

    with db.transaction():
        tally = journal.take_evictions()
        chain.make("journal.evicted", tally, 1.7e9, time_source="system")
    assert tally["count"] == len(lost) == journal.evicted
    assert tally["lanes"] == {str(k): lost_lanes.count(k) for k in set(lost_lanes)}
    assert tally["types"] == {t: sum(r["type"] == t for r in lost) for t in
                              {r["type"] for r in lost}}
    assert tally["first_seq"] == min(r["seq"] for r in lost)
    assert tally["last_seq"] == max(r["seq"] for r in lost)
    covered = {s for a, b in tally["seq_ranges"] for s in range(a, b + 1)}
    assert covered == {r["seq"] for r in lost}
    with db.transaction():
        assert journal.take_evictions() is None                    # counted exactly once
    db.close()


def test_quota_full_of_accidents_keeps_them_and_drops_low_lanes(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    journal = Journal(db, JournalConfig(quota_mb=5_000 / 1024 / 1024))
    chain = RecordChain(db, DeviceKey.generate(), VIN)
    accidents = append(db, journal, chain, ["accident.trigger", "accident.record"] * 5, pad=600)
    assert journal.bytes_used() > journal.quota_bytes                   # stored anyway
    assert journal.over_quota > 0
    with db.transaction():
        health = chain.make("agent.health", {"pad": "y" * 600}, 1.7e9, time_source="system")
        assert journal.store(health) is False                           # the newcomer goes
    assert {p.id for p in journal.next_batch(100)} == {r["id"] for r in accidents}
    db.close()
    # The tally survives a restart: the counted record can still be written.
    db = StateDB(tmp_path / "state.db")
    journal = Journal(db)
    with db.transaction():
        tally = journal.take_evictions()
    assert tally["types"] == {"agent.health": 1}
    assert tally["first_seq"] == tally["last_seq"] == health["seq"]
    db.close()


def test_garbage_database_is_quarantined_and_replaced(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not sqlite " * 500)
    db, info = open_state_db(path)
    assert info is not None
    assert "not a database" in info.reason
    moved = info.moved[0]
    assert moved.name.startswith("state.db.corrupt-") and moved.read_bytes().startswith(b"this")
    journal = Journal(db)
    chain = RecordChain(db, DeviceKey.generate(), VIN)
    with db.transaction():
        journal.store(chain.make("journal.quarantined", info.record_data(), 1.7e9,
                                 time_source="system"))
    assert journal.depth()[4] == 1
    assert json.loads(journal.next_batch(1)[0].payload)["data"]["moved_to"] == [moved.name]
    db.close()
    again, info2 = open_state_db(path)                 # the fresh one is sound
    assert info2 is None and again.get("chain")["seq"] == 1
    again.close()


def test_damaged_pages_are_found_by_quick_check(state, tmp_path: Path) -> None:
    db, journal, chain = state
    for _ in range(20):
        append(db, journal, chain, ["stats.period"] * 10, pad=500)
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    db.close()
    path = tmp_path / "state.db"
    blob = bytearray(path.read_bytes())
    blob[4096 * 3:4096 * 3 + 2000] = b"\x55" * 2000          # scribble over a b-tree page
    path.write_bytes(bytes(blob))
    fresh, info = open_state_db(path)
    assert info is not None and info.size == len(blob)
    assert sorted(p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name) == \
        sorted(p.name for p in info.moved)
    assert Journal(fresh).depth() == {0: 0, 1: 0, 2: 0, 3: 0, 4: 0, 5: 0}
    fresh.close()


def test_sound_database_is_left_alone(state, tmp_path: Path) -> None:
    db, journal, chain = state
    append(db, journal, chain, ["safety.aeb"] * 3)
    db.close()
    again, info = open_state_db(tmp_path / "state.db")
    assert info is None and Journal(again).depth()[2] == 3
    again.close()


CHILD = textwrap.dedent("""
    import sys
    from agent.journal.outbox import Journal
    from agent.statestore import StateDB
    from agent.records.chain import RecordChain
    from agent.records.keys import DeviceKey

    folder = sys.argv[1]
    key = DeviceKey.generate()
    key.save(folder + "/device.key")
    db = StateDB(folder + "/state.db")
    journal = Journal(db)
    chain = RecordChain(db, key, "LSVTEST0000000001")
    print("ready", flush=True)
    n = 0
    while True:
        n += 1
        with db.transaction():
            for i in range(n % 3 + 1):
                r = chain.make("safety.aeb", {"speed": 1.0, "cda_state": "ACTIVE",
                               "duration_s": 0.1, "pad": "z" * 300}, 1.7e9 + n,
                               time_source="system")
                journal.store(r)
        print(r["seq"], flush=True)
""")


def test_sigkill_loses_nothing_reported_stored(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True, env=env)
    lines = ChildLines(child, "the journal writer")
    try:
        # Generous deadlines: a loaded machine is slow, a hung child still fails the test.
        lines.wait_for(lambda line: line == "ready", 60, "'ready'")
        reported = int(lines.wait_for(lambda line: int(line) >= 400, 120,
                                      "a stored seq >= 400"))
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
        lines.close()

    db, info = open_state_db(tmp_path / "state.db")
    assert info is None
    journal = Journal(db)
    stored = [json.loads(p.payload) for p in journal.next_batch(1_000_000)]
    seqs = sorted(r["seq"] for r in stored)
    assert seqs[-1] >= reported                         # everything reported is there
    assert seqs == list(range(1, seqs[-1] + 1))         # and nothing has a gap
    assert db.get("chain")["seq"] == seqs[-1]           # head and records committed together
    report = verify_records(sorted(stored, key=lambda r: r["seq"]),
                            load_public_key(tmp_path / "device.key"))
    assert report.ok, report.reason
    db.close()


def test_full_disk_holds_events_and_retries(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    journal = Journal(db, JournalConfig(hold_max=3))
    chain = RecordChain(db, DeviceKey.generate(), VIN)
    append(db, journal, chain, ["agent.health"])
    pages = db.conn.execute("PRAGMA page_count").fetchone()[0]
    db.conn.execute(f"PRAGMA max_page_count={pages}")   # the "disk" is now full

    def flush(events: list[tuple[str, dict[str, Any]]]) -> bool:
        """What the pipeline does each loop: held events first, then the new ones."""
        events = journal.take_held() + events
        try:
            with db.transaction():
                for type_, data in events:
                    journal.store(chain.make(type_, data, 1.7e9, time_source="system"))
        except sqlite3.OperationalError as exc:
            assert is_disk_full(exc)
            journal.hold(events, exc=exc)
            return False
        return True

    big = {"pad": "q" * 20_000}
    assert flush([("accident.trigger", dict(SAMPLE["accident.trigger"], **big))]) is False
    assert flush([("agent.health", big), ("stats.period", dict(SAMPLE["stats.period"], **big)),
                  ("safety.aeb", dict(SAMPLE["safety.aeb"], **big))]) is False
    # hold_max=3: the oldest of the lowest lane went first, the accident stayed.
    assert journal.held == 3 and journal.write_failures == 2
    assert chain.seq == 1                                # nothing half-written
    db.conn.execute("PRAGMA max_page_count=1073741823")  # space again
    assert flush([]) is True
    assert journal.held == 0
    stored = [(p.type, p.seq) for p in journal.next_batch(100)]
    assert stored == [("accident.trigger", 2), ("safety.aeb", 4), ("agent.health", 1),
                      ("stats.period", 3)]
    with db.transaction():
        tally = journal.take_evictions()
    assert tally["unstored"] == {"agent.health": 1}
    db.close()
