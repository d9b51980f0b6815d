"""Recorded traces as a frame source: any format python-can's ``LogReader`` reads."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import can

from agent.ingest.setup import BusSetup

log = logging.getLogger(__name__)


class TraceError(Exception):
    pass


class ChannelRouter:
    """Which configured bus a recorded frame belongs to.

    A trace names its channel ("can0" in candump logs, 1..n in Vector ASC/BLF). A frame
    goes to the bus whose ``channel`` or ``name`` matches, or whose position (1-based)
    matches a numeric channel; with a single bus everything goes to it.
    """

    def __init__(self, buses: list[BusSetup]):
        self.buses = buses
        self.table: dict[str, int] = {}
        for i, b in enumerate(buses):
            self.table.setdefault(str(b.config.channel), i)
            self.table.setdefault(b.name, i)
            self.table.setdefault(str(i + 1), i)
        self.unrouted = 0

    def route(self, channel: Any) -> int | None:
        if len(self.buses) == 1:
            return 0
        idx = self.table.get(str(channel))
        if idx is None:
            self.unrouted += 1
        return idx


def read_trace(path: Path) -> Iterator[can.Message]:
    """Frames of one trace file, in file order. Raises TraceError for unreadable files."""
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found")
    kwargs = {}
    if path.suffix.lower() == ".asc":
        kwargs["relative_timestamp"] = False  # absolute time from the header's date line
    try:
        reader = can.LogReader(str(path), **kwargs)
    except ValueError as exc:
        raise TraceError(f"{path}: unsupported trace format ({exc})") from exc
    except Exception as exc:
        raise TraceError(f"{path}: cannot open trace ({exc})") from exc
    try:
        with reader:
            yield from reader
    except (ValueError, IndexError, KeyError) as exc:
        # python-can's readers raise these on garbled lines; the frames so far count.
        raise TraceError(f"{path}: trace is corrupt after the frames read so far ({exc})") from exc
