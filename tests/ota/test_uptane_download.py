"""Transport: bounded retries, Range resume corner cases, caps, speed floor."""

from __future__ import annotations

import hashlib
import socket
import time
from pathlib import Path

import pytest
from uptane_fixtures import image_bytes

from agent.ota.uptane import DownloadFailed, HttpFetcher, TransferLimits, UpdateRejected
from agent.ota.uptane.download import SpeedFloor
from hil.repo import Faults, RepoServer

DATA = image_bytes("download", 300_000)
SHA = {"sha256": hashlib.sha256(DATA).hexdigest()}


@pytest.fixture
def served(tmp_path: Path):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "fw.bin").write_bytes(DATA)
    with RepoServer(tmp_path / "www") as server:
        yield server, tmp_path


def fetcher(retries: int = 2, **kw) -> tuple[HttpFetcher, list[float]]:
    pauses: list[float] = []
    lim = TransferLimits(min_speed_bytes_s=20_000, speed_window_s=0.5, connect_timeout_s=5,
                         retries=retries, backoff_s=0.01, backoff_max_s=0.03, **kw)
    return HttpFetcher(lim, sleep=pauses.append), pauses


def threat_of(fn) -> str:
    with pytest.raises(UpdateRejected) as info:
        fn()
    return info.value.threat


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_speed_floor_judges_full_windows_only():
    clock = FakeClock()
    early = SpeedFloor(1000, 2.0, clock)
    clock.t = 1.9
    early.add(1, "x")                    # 1 byte in 1.9 s: no full window yet, no verdict
    clock.t = 0.0
    floor = SpeedFloor(1000, 2.0, clock)
    for _ in range(10):                  # 2000 B/s for 5 s: fine
        clock.t += 0.5
        floor.add(1000, "x")
    trickled = 0
    with pytest.raises(UpdateRejected) as info:
        for _ in range(10):              # 20 B/s: caught once the window is mostly trickle
            clock.t += 0.5
            floor.add(10, "x")
            trickled += 1
    assert info.value.threat == "slow_retrieval"
    assert trickled == 2                 # third trickle: window holds 1000 + 30 < 2000


def test_refused_connection_is_retried_with_capped_backoff_then_drop_request(tmp_path: Path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]          # closed again: nobody listens there
    f, pauses = fetcher(retries=3)
    assert threat_of(lambda: f.fetch_metadata(f"http://127.0.0.1:{port}/x.json", 100)) == \
        "drop_request"
    assert pauses == [0.01, 0.02, 0.03]


def test_server_errors_are_bounded(served):
    server, tmp = served
    server.set_faults(Faults(status=503))
    f, pauses = fetcher(retries=2)
    assert threat_of(lambda: f.download_image(f"{server.url}/fw.bin", tmp / "out.bin",
                                              len(DATA), SHA)) == "drop_request"
    assert len(server.requests) == 3 and len(pauses) == 2


def test_server_ignoring_range_restarts_from_zero(served):
    server, tmp = served
    server.set_faults(Faults(drop_after=100_000, ignore_range=True))
    f, _ = fetcher()
    out = f.download_image(f"{server.url}/fw.bin", tmp / "out.bin", len(DATA), SHA)
    assert out.read_bytes() == DATA
    assert [(r.range, r.status) for r in server.requests] == [(None, 200),
                                                             ("bytes=100000-", 200)]


def test_oversized_leftover_part_is_discarded(served):
    server, tmp = served
    (tmp / "out.bin.part").write_bytes(DATA + b"junk")
    f, _ = fetcher()
    assert f.download_image(f"{server.url}/fw.bin", tmp / "out.bin", len(DATA),
                            SHA).read_bytes() == DATA
    assert server.requests[0].range is None


def test_complete_part_from_earlier_run_is_verified_not_refetched(served):
    server, tmp = served
    (tmp / "out.bin.part").write_bytes(DATA)
    f, _ = fetcher()
    assert f.download_image(f"{server.url}/fw.bin", tmp / "out.bin", len(DATA),
                            SHA).read_bytes() == DATA
    assert server.requests == []


def test_tampered_part_from_earlier_run_is_caught(served):
    server, tmp = served
    (tmp / "out.bin.part").write_bytes(b"\xff" * 1000)
    f, _ = fetcher()
    assert threat_of(lambda: f.download_image(f"{server.url}/fw.bin", tmp / "out.bin",
                                              len(DATA), SHA)) == "arbitrary_software"
    assert not (tmp / "out.bin").exists() and not (tmp / "out.bin.part").exists()


def test_announced_length_beyond_the_signed_one(served):
    server, tmp = served
    server.set_faults(Faults(overrides={"/fw.bin": DATA + bytes(10)}))
    f, _ = fetcher()
    assert threat_of(lambda: f.download_image(f"{server.url}/fw.bin", tmp / "out.bin",
                                              len(DATA), SHA)) == "endless_data"
    assert len(server.requests) == 1          # hostile: not retried


def test_unknown_hash_algorithm_cannot_be_verified(served):
    server, tmp = served
    f, _ = fetcher()
    assert threat_of(lambda: f.download_image(f"{server.url}/fw.bin", tmp / "out.bin",
                                              len(DATA), {"md5": "00"})) == \
        "arbitrary_software"


def test_usable_as_python_tuf_fetcher(served):
    server, _ = served
    f, _ = fetcher()
    assert f.download_bytes(f"{server.url}/fw.bin", len(DATA)) == DATA


def test_total_budget_ends_a_transfer_that_stays_above_the_speed_floor(served):
    server, tmp = served
    server.set_faults(Faults(slow_bytes_per_s=50_000))      # 2.5 x the floor: 6 s in all
    f, _ = fetcher(retries=0, min_average_bytes_s=300_000, allowance_s=0.5)   # 1.5 s
    start = time.monotonic()
    with pytest.raises(UpdateRejected) as info:
        f.download_image(f"{server.url}/fw.bin", tmp / "fw.bin", len(DATA), SHA)
    assert info.value.threat == "slow_retrieval" and "total time budget" in str(info.value)
    assert time.monotonic() - start < 1.5 + 0.5 + 1.0      # budget + one read window + slack
    assert not (tmp / "fw.bin").exists()
    # The same trickle inside a budget that allows it is fine.
    f, _ = fetcher(retries=0, min_average_bytes_s=30_000, allowance_s=1.0)    # 11 s
    f.download_image(f"{server.url}/fw.bin", tmp / "fw.bin", len(DATA), SHA)
    assert (tmp / "fw.bin").read_bytes() == DATA


def test_total_budget_spans_every_attempt_and_pause():
    clock = FakeClock()

    def sleep(s: float) -> None:
        clock.t += s

    lim = TransferLimits(retries=100, backoff_s=1.0, backoff_max_s=1.0,
                         min_average_bytes_s=1000, allowance_s=5.0)
    f = HttpFetcher(lim, sleep=sleep, clock=clock)
    starts: list[float] = []

    def attempt(deadline: float) -> None:       # a server that drops every connection
        starts.append(clock.t)
        clock.t += 2.0
        raise DownloadFailed("connection reset")

    with pytest.raises(UpdateRejected) as info:
        f._with_retries("http://x/fw.bin", attempt, lim.budget_s(5000))     # 10 s
    assert info.value.threat == "slow_retrieval"
    assert starts == [0.0, 3.0, 6.0, 9.0]     # no attempt and no pause past 10 s
