"""Timing-faithful replay of a recorded trace onto any python-can bus."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import can

from agent.ingest.trace import TraceError, TraceReader


@dataclass
class ReplayResult:
    sent: int
    errors: int
    mean_error_ms: float
    max_error_ms: float
    duration_s: float


def load_frames(path: Path, warn: TextIO | None = sys.stderr) -> list[can.Message]:
    """The frames to replay, read like ``icv-agent analyze`` reads them: damaged lines or
    containers and impossible timestamps (which would make a replay wait for centuries) are
    skipped and said on ``warn``. TraceError if there is nothing to replay."""
    reader = TraceReader(path)
    frames = [m for m in reader if not m.is_error_frame]
    lines = reader.lines()
    if not frames:
        prefix = f"warning: {path}: "
        why = "; ".join(x.removeprefix(prefix).rstrip(":") for x in lines
                        if x.startswith(prefix) and "no CAN frames" not in x)
        raise TraceError(f"{path}: no CAN frames to replay" + (f" ({why})" if why else ""))
    if warn is not None:
        for line in lines:
            print(line, file=warn)
    return frames


def replay(path: Path | list[can.Message], bus: can.BusABC, *, speed: float = 1.0,
           loop: bool = False, progress: TextIO | None = sys.stderr,
           stop_after: float | None = None) -> ReplayResult:
    """Send every frame of ``path`` (a trace, or frames from ``load_frames``) at its
    recorded time offset divided by ``speed``.

    Sleeps until shortly before a frame is due and spins the last ~1 ms; the timing error
    (actual send time minus due time) is measured per frame and reported.
    """
    frames = path if isinstance(path, list) else load_frames(path)
    if not frames:
        return ReplayResult(0, 0, 0.0, 0.0, 0.0)
    first = frames[0].timestamp
    span = max(frames[-1].timestamp - first, 1e-9)
    sent = errors = 0
    err_sum = err_max = 0.0
    start = time.perf_counter()
    base = start
    next_bar = 0.0
    while True:
        for msg in frames:
            due = base + (msg.timestamp - first) / speed
            now = time.perf_counter()
            if due - now > 0.002:
                time.sleep(due - now - 0.001)
            while time.perf_counter() < due:
                pass
            try:
                bus.send(_fresh(msg))
            except can.CanError:
                errors += 1
                continue
            err = time.perf_counter() - due
            sent += 1
            err_sum += err
            err_max = max(err_max, err)
            if progress is not None and time.perf_counter() >= next_bar:
                next_bar = time.perf_counter() + 0.2
                _bar(progress, (msg.timestamp - first) / span, sent)
            if stop_after is not None and time.perf_counter() - start >= stop_after:
                loop = False
                break
        if not loop:
            break
        base = time.perf_counter() + 1e-3
    if progress is not None:
        _bar(progress, 1.0, sent)
        progress.write("\n")
    return ReplayResult(sent, errors, 1000 * err_sum / max(sent, 1), 1000 * err_max,
                        time.perf_counter() - start)


def _fresh(msg: Any) -> can.Message:
    return can.Message(arbitration_id=msg.arbitration_id, data=msg.data,
                       is_extended_id=msg.is_extended_id, is_fd=msg.is_fd,
                       bitrate_switch=msg.bitrate_switch, dlc=msg.dlc,
                       is_remote_frame=msg.is_remote_frame)


def _bar(out: TextIO, fraction: float, sent: int) -> None:
    width = 30
    filled = int(width * min(max(fraction, 0.0), 1.0))
    out.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {100 * fraction:5.1f}%  {sent} frames")
    out.flush()
