"""The archive of sent records behind ``records.resend``: what the broker acknowledged is
kept (bounded by size and age, accidents past their report window), queued again behind
live data on request, and never counted as evicted when the quota drops a copy."""

from __future__ import annotations

from pathlib import Path

from agent.journal.outbox import ACCIDENT_KEEP_S, RESEND_LANE, Journal
from agent.journal.settings import JournalConfig
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey
from agent.statestore import StateDB
from tests.test_journal import VIN, append


def setup(tmp_path: Path, **config: float) -> tuple[StateDB, Journal, RecordChain]:
    db = StateDB(tmp_path / "state.db")
    return db, Journal(db, JournalConfig(**config)), RecordChain(db, DeviceKey.generate(), VIN)


def sent_all(journal: Journal, now: float = 1.7e9) -> None:
    journal.ack_many([p.id for p in journal.next_batch(10_000)], now=now)


def test_acknowledged_records_are_archived_and_sent_again_behind_live_data(tmp_path: Path
                                                                           ) -> None:
    db, journal, chain = setup(tmp_path)
    append(db, journal, chain, ["agent.health", "accident.trigger", "safety.aeb"])
    sent_all(journal)
    assert sum(journal.depth().values()) == 0
    append(db, journal, chain, ["stats.period"])                       # live: seq 4
    queued, missing = journal.resend(1, 6)
    assert queued == 3 and missing == [[5, 6]]          # 4 is still in the outbox
    batch = journal.next_batch(10)
    assert [(p.seq, p.lane) for p in batch] == [(4, 4), (1, RESEND_LANE), (2, RESEND_LANE),
                                                (3, RESEND_LANE)]
    assert journal.resend(1, 3)[0] == 0                 # queued already: not twice
    sent_all(journal)
    assert sum(journal.depth().values()) == 0
    assert journal.resend(2, 2) == (1, [])              # still archived after the re-send
    db.close()


def test_the_archive_keeps_its_bounds_but_accidents_until_their_window_closed(
        tmp_path: Path) -> None:
    # No accident floor here (tests/test_storage_floors.py has it): the window alone.
    db, journal, chain = setup(tmp_path, archive_mb=0.01, archive_days=1.0,
                               floor_accidents=0)
    append(db, journal, chain, ["accident.trigger"], pad=3000)
    append(db, journal, chain, ["agent.health"] * 10, pad=3000)
    now = 1.7e9
    sent_all(journal, now)
    kept = {r[0] for r in db.conn.execute("SELECT seq FROM sent")}
    assert 1 in kept and len(kept) < 11                 # over 10 KB: oldest health gone
    assert max(kept) == 11                              # the newest stay
    append(db, journal, chain, ["agent.health"])                       # seq 12
    sent_all(journal, now + 2 * 86400)                  # two days on: past archive_days
    assert {r[0] for r in db.conn.execute("SELECT seq FROM sent")} == {1, 12}
    append(db, journal, chain, ["agent.health"])                       # seq 13
    sent_all(journal, now + ACCIDENT_KEEP_S + 1)
    assert {r[0] for r in db.conn.execute("SELECT seq FROM sent")} == {13}
    db.close()


def test_the_quota_drops_resent_copies_first_and_does_not_count_them(tmp_path: Path) -> None:
    db, journal, chain = setup(tmp_path, quota_mb=0.02)
    append(db, journal, chain, ["agent.health"] * 4, pad=3000)
    sent_all(journal)
    journal.resend(1, 4)
    append(db, journal, chain, ["safety.aeb"] * 4, pad=3000)           # needs the room
    assert journal.depth()[RESEND_LANE] < 4 and journal.depth()[2] == 4
    assert journal.evicted == 0 and journal.take_evictions() is None
    db.close()
