"""Storage floors (GB 44497 Type I as the design model): room for >= 5 accidents and
>= 2,500 event records, whatever the lower lanes do; locked accidents never go.

The quota is filled for real (records made and signed by the chain, stored in SQLite),
then pressed by every lane; the archive of sent records is pruned past its age and size;
a real tmpfs is filled to its last block. The floors must hold in each case."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.config import load
from agent.journal.outbox import Journal, lane_of, payload_of
from agent.journal.settings import MIB, JournalConfig, check_journal, floor_bytes
from agent.recorder import Recorder
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey
from agent.settings_loader import ConfigError, Problems
from agent.statestore import StateDB
from tests.helpers import SAMPLE
from tests.test_config import BASE, check, has_problem, write_config
from tests.test_full_disk import fill, outbox, small_fs  # noqa: F401 (fixture)

VIN = "LSJWH4098PN000001"
EVENT_PAD = 400            # ~ a real event record (largest measured: 989 B)
ACCIDENT_PAD = 6_000       # ~ a real accident.record (largest measured: 6,275 B)


def make(db: StateDB, journal: Journal, chain: RecordChain, type_: str, n: int = 1,
         **extra: Any) -> list[dict[str, Any]]:
    """``n`` records of ``type_`` in one transaction; returns what was made."""
    pad = ACCIDENT_PAD if lane_of(type_) <= 1 else EVENT_PAD
    made = []
    with db.transaction():
        for _ in range(n):
            data = {**SAMPLE.get(type_, {}), "pad": "x" * pad, **extra}
            record = chain.make(type_, data, 1.7e9 + chain.seq, time_source="system")
            journal.store(record)
            made.append(record)
    return made


def lane_counts(db: StateDB) -> dict[int, int]:
    rows = db.conn.execute("SELECT lane, COUNT(*) FROM outbox GROUP BY lane").fetchall()
    return {lane: n for lane, n in rows}


def sizes(db: StateDB, journal: Journal, chain: RecordChain) -> tuple[int, int]:
    """Payload bytes of one accident (trigger + record) and one event of this test."""
    probe = RecordChain(StateDB(None), chain.key, VIN)
    with probe.db.transaction():
        acc = sum(len(payload_of(probe.make(t, {**SAMPLE[t], "pad": "x" * ACCIDENT_PAD,
                                                "accident_id": "a" * 36}, 1.7e9,
                                               time_source="system")))
                  for t in ("accident.trigger", "accident.record"))
        ev = len(payload_of(probe.make("safety.aeb", {**SAMPLE["safety.aeb"],
                                                      "pad": "x" * EVENT_PAD}, 1.7e9,
                                       time_source="system")))
    return acc + 2 * 8, ev + 8      # the probe's seq is 1: room for 8 more digits


def test_a_quota_sized_for_the_floors_holds_them_under_every_lane(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    chain = RecordChain(db, DeviceKey.generate(), VIN)
    acc, ev = sizes(db, Journal(db), chain)
    cfg = JournalConfig(accident_bytes=acc, event_bytes=ev, quota_mb=1.0)
    cfg.quota_mb = floor_bytes(cfg) / MIB          # exactly what check-config asks for
    journal = Journal(db, cfg)
    assert cfg.floor_accidents == 5 and cfg.floor_events == 2500      # the defaults

    # The lower lanes fill the quota first, then 2,600 event records come.
    while journal.bytes_used() < journal.quota_bytes - 20 * ev:
        make(db, journal, chain, "agent.health", 50)
        make(db, journal, chain, "ecu.versions", 50)
    make(db, journal, chain, "safety.aeb", 2600)
    assert lane_counts(db).get(4, 0) == 0 and lane_counts(db).get(3, 0) == 0
    events = lane_counts(db)[2]
    assert events >= 2500

    # Accidents beyond the floor of 5 keep coming: they are never dropped, and they push
    # out event records only down to the newest 2,500, never further.
    accidents = []
    for i in range(12):
        accidents += make(db, journal, chain, "accident.trigger", accident_id=f"acc-{i}")
        accidents += make(db, journal, chain, "accident.record", accident_id=f"acc-{i}")
    kept = {p.id for p in journal.next_batch(100_000)}
    assert all(r["id"] in kept for r in accidents)
    assert lane_counts(db)[2] == 2500
    assert journal.floor_held > 0
    newest = [r[0] for r in db.conn.execute(
        "SELECT seq FROM outbox WHERE lane=2 ORDER BY seq")]
    assert newest == list(range(newest[0], newest[0] + 2500))     # the newest, gapless

    # A lower lane cannot take the events' room: the newcomer is dropped, counted.
    with db.transaction():
        health = chain.make("agent.health", {"pad": "y" * EVENT_PAD}, 1.7e9,
                            time_source="system")
        ota = chain.make("ota.progress", {"pad": "y" * EVENT_PAD}, 1.7e9,
                         time_source="system")
        assert journal.store(health) is False and journal.store(ota) is False
    assert lane_counts(db)[2] == 2500
    # An event record (of the size the floor was computed for) replaces the oldest event
    # record (oldest first): the floor stays.
    oldest = db.conn.execute("SELECT MIN(seq) FROM outbox WHERE lane=2").fetchone()[0]
    fresh = make(db, journal, chain, "safety.aeb", 200)
    kept = {p.id for p in journal.next_batch(100_000)}
    assert all(r["id"] in kept for r in fresh + accidents)
    assert lane_counts(db)[2] >= 2500
    assert db.conn.execute("SELECT MIN(seq) FROM outbox WHERE lane=2").fetchone()[0] > oldest
    db.close()


def test_the_archive_keeps_the_floors_past_its_age_and_size(tmp_path: Path) -> None:
    db = StateDB(tmp_path / "state.db")
    chain = RecordChain(db, DeviceKey.generate(), VIN)
    journal = Journal(db, JournalConfig(archive_mb=0.05, archive_days=1.0))
    locked = make(db, journal, chain, "accident.record", accident_id="locked-1", locked=True)
    for i in range(7):
        make(db, journal, chain, "accident.trigger", accident_id=f"acc-{i}")
        make(db, journal, chain, "accident.record", accident_id=f"acc-{i}")
    make(db, journal, chain, "driver.disengagement", 2700)
    make(db, journal, chain, "agent.health", 100)
    journal.ack_many([p.id for p in journal.next_batch(100_000)], now=1.7e9)
    make(db, journal, chain, "agent.health")
    far = 1.7e9 + 30 * 86400.0                     # past every window and the size bound
    journal.ack_many([p.id for p in journal.next_batch(100_000)], now=far)
    rows = db.conn.execute("SELECT seq, type, CAST(payload AS TEXT) FROM sent").fetchall()
    types = [t for _, t, _ in rows]
    assert types.count("driver.disengagement") == 2500 and "agent.health" not in types
    kept_ids = {p.split('"accident_id":"')[1].split('"')[0] for _, t, p in rows
                if t.startswith("accident.")}
    assert kept_ids == {"locked-1", "acc-2", "acc-3", "acc-4", "acc-5", "acc-6"}
    assert locked[0]["seq"] in {s for s, _, _ in rows}
    db.close()


def test_check_config_refuses_a_quota_that_cannot_hold_the_floors(tmp_path: Path) -> None:
    need = floor_bytes(JournalConfig())
    assert need == 5 * 32768 + 2500 * 1536         # the documented figures
    cfg = write_config(tmp_path, BASE + "[journal]\nquota_mb = 2.0\n")
    r = check(cfg)
    assert r.returncode == 2
    assert has_problem(r.stderr, cfg, "journal.quota_mb", "cannot hold the storage floors")
    # Floors are configurable: fewer events fit the same quota.
    cfg.write_text(cfg.read_text() + "floor_events = 1000\n")
    assert load(cfg).journal.floor_events == 1000
    problems = Problems()
    check_journal(JournalConfig(reserve_mb=0.01), "x.toml", problems)
    assert [k for _, k, _ in problems] == ["journal.reserve_mb"]
    try:
        load(write_config(tmp_path, BASE + "[journal]\nfloor_events = -1\n"))
    except ConfigError as exc:
        assert "journal.floor_events: must be 0 or more" in str(exc)
    else:
        raise AssertionError("a negative floor was accepted")


def test_on_a_full_disk_no_floor_record_is_given_up(small_fs: Path) -> None:  # noqa: F811
    path = small_fs / "state.db"
    db = StateDB(path)
    journal = Journal(db, JournalConfig(reserve_mb=1.0))
    chain = RecordChain(db, DeviceKey.generate(), VIN)
    recorder = Recorder(db, chain, lambda t: t, "system", journal=journal, retry_s=0.0)
    make(db, journal, chain, "cda.deactivated", 2500)
    fill(small_fs)
    for i in range(3):
        recorder.record("agent.health", {"n": i, "pad": "z" * 20_000}, 1.7e9 + i)
        recorder.record("safety.fcw", {**SAMPLE.get("safety.fcw", {}), "n": i}, 1.7e9 + i)
    recorder.flush()
    recorder.record("accident.trigger", dict(SAMPLE["accident.trigger"]), 1.7e9 + 10)
    recorder.flush()
    on_disk = outbox(path)                         # as a reset would find it
    assert [t for t, _ in on_disk].count("cda.deactivated") == 2500
    assert "accident.trigger" in [t for t, _ in on_disk]
    assert journal.held >= 3                       # the new events wait, none was dropped
    db.close()
