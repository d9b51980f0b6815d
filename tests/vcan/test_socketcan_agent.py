"""``icv-agent run`` on a real SocketCAN interface (vcan0): kernel acceptance filters,
traces replayed by can-utils and by ``icv-hil replay``, candump logs analysed offline."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.config import load
from agent.ingest.trace import read_trace
from hil.benchconfig import ROOT
from tests.vcan.can_bench import (
    EXPECTED,
    SLOW,
    analyze,
    candump_log,
    cansend,
    kernel_receivers,
    make_trace,
    monitor_records,
    records,
    running_agent,
    same_facts,
    same_value,
    wait_counters,
    write_config,
)


def kernel_filters(channel: str) -> dict[int, tuple[int, int]]:
    """can_id -> (mask, matches) of the raw-socket filters the kernel holds for ``channel``."""
    return {can_id: (mask, matches)
            for can_id, mask, matches, ident in kernel_receivers(channel) if ident == "raw"}


def receives_everything(channel: str) -> bool:
    """A socket without filters on ``channel`` (it sits in the kernel's rx_all list)."""
    text = Path("/proc/net/can/rcvlist_all").read_text()
    return any(line.split()[:1] == [channel] for line in text.splitlines())


def test_kernel_filters_keep_unmapped_frames_out(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    mapped = {k for k in load(cfg).buses[0].plans}
    assert 0x125 in mapped and 0x124 not in mapped and 0x7FF not in mapped
    unmapped = ["7FF#00", "001#0102", "124#0011223344556677",
                "00000125#0011223344556677",           # 29-bit id with a mapped 11-bit value
                "18DAF110#0210030000000000"]
    speeds = [f"125#{bytes([i] * 8).hex().upper()}" for i in range(1, 6)]
    with running_agent(cfg):
        filters = kernel_filters("vcan0")
        # Exactly the mapped ids, 11-bit only (CAN_EFF_FLAG in the mask), and no socket
        # of the agent that takes every frame.
        assert set(filters) == mapped
        assert {mask for mask, _ in filters.values()} == {0x800007FF}
        assert not receives_everything("vcan0")
        with candump_log(tmp_path, "vcan0") as logs:
            cansend("vcan0", *unmapped, *speeds)
            counters = wait_counters(tmp_path / "state", lambda c: c["received"] >= 5,
                                     "mapped frames received")
        assert kernel_filters("vcan0")[0x125][1] == 5
    on_bus = list(read_trace(logs[0]))
    assert len(on_bus) == len(unmapped) + len(speeds)       # all of them were on vcan0
    final = [r for r in records(tmp_path / "state") if r["type"] == "agent.health"]
    last = final[-1]["data"]["counters"]["buses"]["chassis"]
    for c in (counters, last):
        assert c["received"] == 5 and c["frames"] == 5
        assert c["unmapped"] == 0
        assert c["decoded"] + c["skipped"] == 5 and c["decoded"] >= 1
        assert c["errors"] == 0 and c["reconnects"] == 0


def _replayed_run(tmp_path: Path, trace: Path, send: list[str]) -> list[dict]:
    """Run the agent on vcan0 while ``send`` plays ``trace``, with ``candump -l`` alongside;
    return the live monitor records after checking them against the candump log."""
    frames = sum(1 for _ in read_trace(trace))
    cfg = write_config(tmp_path)
    with running_agent(cfg), candump_log(tmp_path, "vcan0") as logs:
        proc = subprocess.run(send, cwd=ROOT, capture_output=True, text=True, timeout=SLOW)
        assert proc.returncode == 0, proc.stderr
        counters = wait_counters(tmp_path / "state", lambda c: c["frames"] >= frames,
                                 f"all {frames} frames through the pipeline")
    assert counters["received"] == frames and counters["unmapped"] == 0
    live = monitor_records(records(tmp_path / "state"))
    assert [r["type"] for r in live] == EXPECTED
    # The log candump wrote during the run gives the same records offline: same frames,
    # same kernel timestamps, so durations and instants agree too.
    assert len(logs) == 1
    assert sum(1 for _ in read_trace(logs[0])) == frames
    again = monitor_records(analyze(write_config(tmp_path, name="again.toml"), logs[0]))
    assert [r["type"] for r in again] == EXPECTED
    for a, b in zip(live, again, strict=True):
        assert same_value(a["data"], b["data"]), (a["data"], b["data"])
    return live


def test_canplayer_trace_gives_events_and_candump_log_the_same_records(tmp_path: Path
                                                                      ) -> None:
    trace = make_trace(tmp_path)
    offline = monitor_records(analyze(write_config(tmp_path, name="offline.toml"), trace))
    assert [r["type"] for r in offline] == EXPECTED

    live = _replayed_run(tmp_path, trace, ["canplayer", "-I", str(trace), "vcan0=icv-bench"])

    for a, b in zip(live, offline, strict=True):
        assert same_facts(a["data"], b["data"]), (a["data"], b["data"])


def test_icv_hil_replay_onto_socketcan_gives_events(tmp_path: Path) -> None:
    trace = make_trace(tmp_path)
    offline = monitor_records(analyze(write_config(tmp_path, name="offline.toml"), trace))

    # nice: the replay busy-waits for each frame's due time; in the VM's two emulated CPUs
    # the agent must not be the one left waiting.
    live = _replayed_run(tmp_path, trace,
                         ["nice", "-n", "19",
                          sys.executable, "-m", "hil.cli", "replay", str(trace),
                          "--interface", "socketcan", "--channel", "vcan0", "--quiet"])

    for a, b in zip(live, offline, strict=True):
        assert same_facts(a["data"], b["data"]), (a["data"], b["data"])
