"""A full disk, for real: the state database on a small tmpfs filled to the last block.

Accident records still become durable (the journal's reserve is released for them), so a
reset while the disk is full loses none; what waits in memory and what the bounded hold
drops are counted, and the counts survive commits that fail; when space returns
everything held is stored, the drops and the reserve's use are reported, and the reserve
is taken again."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.journal.outbox import Journal
from agent.journal.settings import JournalConfig
from agent.recorder import Recorder
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey
from agent.statestore import StateDB
from tests.helpers import SAMPLE

VIN = "LSJWH4098PN000001"


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 6 MiB tmpfs of its own (mounting needs root: CI and the vcan VM run as root)."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a tmpfs and needs root (sudo make test); "
                    "it is the only way to fill a file system for real")
    mnt = tmp_path / "fs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> Path:
    """Write a filler file until the file system says ENOSPC."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
        with pytest.raises(OSError) as exc:
            os.write(fd, b"\0")
        assert exc.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def outbox(path: Path) -> list[tuple[str, int]]:
    """(type, seq) of what the file holds, read as after a reset (a new connection)."""
    db = StateDB(path)
    try:
        rows = db.conn.execute("SELECT type, seq FROM outbox ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(t, s) for t, s in rows]


def test_accidents_are_durable_on_a_full_disk_and_every_drop_is_counted(small_fs: Path
                                                                        ) -> None:
    path = small_fs / "state.db"
    db = StateDB(path)
    journal = Journal(db, JournalConfig(hold_max=2, reserve_mb=1.0))
    assert journal.reserve.path is not None and journal.reserve.path.exists()
    recorder = Recorder(db, RecordChain(db, DeviceKey.generate(), VIN), lambda t: t,
                        "system", journal=journal, retry_s=0.0)
    recorder.record("agent.health", {"n": 0}, 1.7e9)
    recorder.flush()
    filler = fill(small_fs)
    pad = {"pad": "q" * 50_000}

    # Five low-lane events on a full disk: the hold keeps two, three are dropped (counted).
    for i in range(5):
        recorder.record("agent.health", {"n": i + 1, **pad}, 1.7e9 + i)
    recorder.flush()
    assert journal.held == 2 and journal.write_failures >= 1
    # A commit that fails again must not swallow that count.
    recorder.record("agent.health", {"n": 9, **pad}, 1.7e9 + 9)
    recorder.flush()

    # The crash: its trigger goes into the reserve and is on disk now, with the count of
    # what was dropped so far (one more: the hold keeps accidents first).
    recorder.record("accident.trigger", dict(SAMPLE["accident.trigger"]), 1.7e9 + 10)
    recorder.flush()
    assert journal.reserve.released and journal.reserve.used == 1
    on_disk = outbox(path)                         # what a reset would find
    assert [t for t, _ in on_disk] == ["agent.health", "accident.trigger", "journal.evicted"]
    assert journal.held == 1                       # the low lanes still wait in memory

    filler.unlink()                                # space again
    recorder.flush()
    assert journal.held == 0
    stored = outbox(path)
    seqs = [s for _, s in stored]
    assert seqs == list(range(1, len(seqs) + 1))   # no gap in the chain
    evicted = [json.loads(p) for (p,) in StateDB(path).conn.execute(
        "SELECT payload FROM outbox WHERE type = 'journal.evicted'").fetchall()]
    assert len(evicted) == 1
    tally = evicted[0]["data"]
    # 3 at first, 1 more on the failed retry, 1 to make room for the accident.
    assert tally["unstored"] == {"agent.health": 5}
    assert tally["reserve_used"] == 1
    assert [t for t, _ in stored].count("agent.health") == 1 + 1   # first, and one held
    assert journal.reserve.path.exists() and not journal.reserve.released
    db.close()
