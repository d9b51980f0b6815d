"""CAN FD on vcan1 (mtu 72): an agent bus with ``fd = true`` reads and decodes FD frames,
sent by ``cansend`` (``##`` syntax) and replayed by ``canplayer``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import can

from agent.ingest.trace import read_trace
from tests.vcan.can_bench import (
    EXPECTED,
    SLOW,
    analyze,
    candump_log,
    cansend,
    make_trace,
    monitor_records,
    records,
    running_agent,
    same_facts,
    same_value,
    trace_ids,
    wait_counters,
    wait_replayed,
    write_config,
)

FD_LENGTH = 64


def to_fd(trace: Path, out: Path) -> Path:
    """The trace with every frame as a 64-byte CAN FD frame with bit rate switch (the DBC
    payload first, zero padding after: what an FD gateway forwarding it would send)."""
    with can.CanutilsLogWriter(str(out), channel="icv-bench") as writer:
        for msg in read_trace(trace):
            writer.on_message_received(can.Message(
                timestamp=msg.timestamp, arbitration_id=msg.arbitration_id,
                is_extended_id=msg.is_extended_id, is_fd=True, bitrate_switch=True,
                data=bytes(msg.data).ljust(FD_LENGTH, b"\0"), channel="icv-bench"))
    return out


def test_fd_frames_on_vcan1_are_decoded(tmp_path: Path) -> None:
    fd_trace = to_fd(make_trace(tmp_path), tmp_path / "drive-fd.log")
    frames = list(read_trace(fd_trace))
    assert all(m.is_fd and len(m.data) == FD_LENGTH for m in frames)
    cfg = write_config(tmp_path, "vcan1", fd=True)
    offline = monitor_records(analyze(cfg, fd_trace))
    assert [r["type"] for r in offline] == EXPECTED
    fd_speed = "125##1" + "11" * FD_LENGTH
    # A real FD frame: the classic-only vcan0 (mtu 16) refuses it.
    refused = subprocess.run(["cansend", "vcan0", fd_speed], capture_output=True, timeout=SLOW)
    assert refused.returncode != 0

    with running_agent(cfg):
        cansend("vcan1", fd_speed)
        first = wait_counters(tmp_path / "state", lambda c: c["silences"] >= 1,
                              "FD frame from cansend, then its silence")
        with candump_log(tmp_path, "vcan1") as logs:
            proc = subprocess.run(["canplayer", "-I", str(fd_trace), "vcan1=icv-bench"],
                                  capture_output=True, text=True, timeout=SLOW)
            assert proc.returncode == 0, proc.stderr
            done = wait_replayed(tmp_path / "state", len(frames) + 1,
                                 len(trace_ids(fd_trace)), silences_before=1)

    assert first["received"] == 1 and first["decoded"] == 1 and first["wrong_length"] == 0
    assert first["receive"] == "bcm" and first["bus_frames"] == 1
    # Through the FD ops of the broadcast manager: the kernel counted every frame, only
    # the changes reached Python.
    assert done["bus_frames"] == len(frames) + 1 and done["dropped"] == 0
    assert done["received"] < len(frames) / 2
    assert done["unmapped"] == 0 and done["wrong_length"] == 0 and done["undecodable"] == 0
    live = monitor_records(records(tmp_path / "state"))
    assert [r["type"] for r in live] == EXPECTED
    for a, b in zip(live, offline, strict=True):
        assert same_facts(a["data"], b["data"]), (a["data"], b["data"])
    # candump logged the FD frames as such, and they give the same records offline.
    dumped = list(read_trace(logs[0]))
    assert len(dumped) == len(frames)
    assert all(m.is_fd and m.bitrate_switch and len(m.data) == FD_LENGTH for m in dumped)
    again = monitor_records(analyze(cfg, logs[0]))
    assert [r["type"] for r in again] == EXPECTED
    for a, b in zip(live, again, strict=True):
        assert same_value(a["data"], b["data"]), (a["data"], b["data"])
