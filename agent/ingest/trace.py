"""Recorded traces as a frame source: any format python-can's ``LogReader`` reads."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from agent.ingest.setup import BusSetup
from agent.timefmt import plausible

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


MAX_EXAMPLES = 5


@dataclass
class Skipped:
    """One kind of input skipped while reading a trace: how many, and where the first were."""

    noun: str                                # singular: "unreadable line"
    detail: str = ""                         # after the noun: "with an impossible timestamp"
    count: int = 0
    examples: list[str] = field(default_factory=list)

    def add(self, where: str, detail: str) -> None:
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(f"{where}: {detail}")

    def lines(self, path: Path) -> list[str]:
        if not self.count:
            return []
        more = self.count - len(self.examples)
        what = f"{self.noun}{'' if self.count == 1 else 's'} {self.detail}".rstrip()
        return ([f"warning: {path}: {self.count} {what} skipped:"]
                + [f"  {e}" for e in self.examples]
                + ([f"  ... and {more} more"] if more else []))


class TraceReader:
    """Frames of one trace file, in file order, each with a time the pipeline can use.

    The monitors run on data time, so a frame whose timestamp is not finite or lies outside
    1970..2200 (a damaged recording; datetime cannot even format most of it) is skipped and
    counted, and so is a frame that goes back in time. One frame far ahead of its
    neighbours (a single damaged timestamp) is the one skipped, not all the frames after it:
    a frame is handed on only once the next one has confirmed its time.
    ``not_before`` is the last time of the previous trace of the same run.
    """

    def __init__(self, path: Path, *, not_before: float | None = None):
        self.path = path
        self.not_before = not_before
        self.frames = 0                          # handed on
        self.last_t: float | None = None         # time of the last frame handed on
        self.bad_time = Skipped("frame", "with an impossible timestamp")
        self.out_of_order = Skipped("frame", "out of time order")
        self._index = 0                          # frames read from the file so far

    def where(self) -> str:
        """Where the frame read last is, for messages."""
        return f"{self.path}: frame {self._index}"

    def lines(self) -> list[str]:
        """What was skipped, as warnings for stderr."""
        return self.bad_time.lines(self.path) + self.out_of_order.lines(self.path)

    def __iter__(self) -> Iterator[can.Message]:
        floor = -math.inf if self.not_before is None else self.not_before
        held: can.Message | None = None
        held_where = ""
        for msg in self._read():
            t = msg.timestamp
            if not plausible(t):
                self.bad_time.add(self.where(), f"timestamp {t!r}")
                continue
            if held is None:
                if t < floor:
                    self.out_of_order.add(self.where(), _before(t, floor))
                    continue
            elif t >= held.timestamp:
                floor = held.timestamp
                self.frames += 1
                self.last_t = floor
                yield held
            elif t >= floor:           # the held frame is ahead of both its neighbours
                self.out_of_order.add(held_where, f"timestamp {held.timestamp!r} is "
                                      f"{held.timestamp - t:.6f} s after the next frame's")
            else:
                self.out_of_order.add(self.where(), _before(t, floor))
                continue
            held, held_where = msg, self.where()
        if held is not None:
            self.frames += 1
            self.last_t = held.timestamp
            yield held

    def _read(self) -> Iterator[can.Message]:
        """The frames as the file holds them."""
        path = self.path
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
                for msg in reader:
                    self._index += 1
                    yield msg
        except (ValueError, IndexError, KeyError) as exc:
            # python-can's readers raise these on garbled lines; the frames so far count.
            raise TraceError(f"{path}: trace is corrupt after the frames read so far ({exc})"
                             ) from exc


def _before(t: float, floor: float) -> str:
    return f"timestamp {t!r} is {floor - t:.6f} s before the frame before it"


def read_trace(path: Path) -> Iterator[can.Message]:
    """Frames of one trace file, in file order (see ``TraceReader``). Raises TraceError for
    unreadable files."""
    yield from TraceReader(path)
