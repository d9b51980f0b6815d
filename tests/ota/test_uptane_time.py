"""Secure time: the floor only moves forward, only on trusted input, and survives restarts."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from agent.ota.uptane import FixedTime, FloorTime
from agent.ota.uptane.time import load_public_key, parse_time
from agent.statestore import StateDB
from hil.repo import KeyStore, write_time_attestation

T0 = parse_time("2025-06-01T08:00:00Z")


@pytest.fixture
def setup(tmp_path: Path):
    keys = KeyStore(tmp_path / "keys")
    signer = keys.ensure("time")
    key = load_public_key(keys.public_path("time"))
    db = StateDB(tmp_path / "state.db")
    yield tmp_path, keys, signer, key, db
    db.close()


def test_attested_time_lifts_a_clock_that_is_behind_and_persists(setup):
    tmp, _, signer, key, db = setup
    system = FixedTime(T0)
    att = write_time_attestation(tmp / "time.json", signer, T0 + timedelta(days=30))
    assert FloorTime(db, system, attestation=att, keys=[key]).now() == T0 + timedelta(days=30)
    db.close()
    db2 = StateDB(tmp / "state.db")                      # reboot
    assert FloorTime(db2, system).now() == T0 + timedelta(days=30)
    system.set(T0 + timedelta(days=40))                  # clock ahead of the floor wins
    assert FloorTime(db2, system).now() == T0 + timedelta(days=40)
    db2.close()


def test_older_attestation_never_moves_the_floor_back(setup):
    tmp, _, signer, key, db = setup
    clock = FloorTime(db, FixedTime(T0), attestation=tmp / "time.json", keys=[key])
    write_time_attestation(tmp / "time.json", signer, T0 + timedelta(days=10))
    assert clock.now() == T0 + timedelta(days=10)
    att = write_time_attestation(tmp / "time.json", signer, T0 + timedelta(days=2))
    att.touch()
    clock._seen_mtime = None        # force a re-read even within the same mtime tick
    assert clock.now() == T0 + timedelta(days=10)
    assert clock.floor() == T0 + timedelta(days=10)


@pytest.mark.parametrize("tamper", ["unknown-key", "edited-time", "garbage", "no-sigs"])
def test_untrusted_attestation_is_counted_and_ignored(setup, tamper: str):
    tmp, keys, signer, key, db = setup
    path = tmp / "time.json"
    if tamper == "unknown-key":
        write_time_attestation(path, keys.ensure("mallory"), T0 + timedelta(days=9))
    elif tamper == "garbage":
        path.write_bytes(b"\x00not json")
    else:
        write_time_attestation(path, signer, T0 + timedelta(days=1))
        doc = json.loads(path.read_text())
        if tamper == "edited-time":
            doc["signed"]["time"] = "2040-01-01T00:00:00Z"
        else:
            doc["signatures"] = []
        path.write_text(json.dumps(doc))
    clock = FloorTime(db, FixedTime(T0), attestation=path, keys=[key])
    assert clock.now() == T0
    assert clock.rejected_attestations == 1
    assert clock.floor() is None


def test_system_clock_is_never_persisted(setup):
    _, _, _, _, db = setup
    clock = FloorTime(db, FixedTime(T0 + timedelta(days=3650)))
    assert clock.now() == T0 + timedelta(days=3650)
    assert clock.floor() is None
    assert clock.observe(T0, "test") is True
    assert clock.observe(T0 - timedelta(seconds=1), "test") is False
    assert clock.floor() == T0


def test_online_time_rises_at_most_one_step_above_the_trusted_time(setup):
    _, _, _, _, db = setup
    clock = FloorTime(db, FixedTime(T0), max_step=timedelta(days=30))
    assert clock.observe_online(T0 + timedelta(days=3650), "timestamp") == \
        T0 + timedelta(days=30)
    # The bound is taken from the trusted time, never from the online floor itself, so
    # repeating the claim does not walk the floor forward.
    assert clock.observe_online(T0 + timedelta(days=3650), "timestamp") is None
    assert clock.now() == T0 + timedelta(days=30) and clock.trusted_floor() is None
    assert clock.observe_online(T0 + timedelta(days=1), "timestamp") is None   # no way back
    # A source trusted for time moves the trusted floor, and with it the bound.
    assert clock.observe(T0 + timedelta(days=40), "attestation") is True
    assert clock.observe_online(T0 + timedelta(days=3650), "timestamp") == \
        T0 + timedelta(days=70)
    assert clock.floor() == T0 + timedelta(days=70)
