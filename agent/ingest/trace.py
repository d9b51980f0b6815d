"""Recorded traces as a frame source: any format python-can's ``LogReader`` reads."""

from __future__ import annotations

import gzip
import logging
import math
import sqlite3
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

import can

from agent.ingest.setup import BusSetup
from agent.timefmt import EARLIEST, LATEST

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


# A multi-channel logger (Vector BLF/ASC) interleaves its channels with small time
# inversions; those frames are real, so they are kept, at the previous frame's time.
REORDER_S = 0.05


class TraceReader:
    """Frames of one trace file, in file order, each with a time the pipeline can use.

    A damaged trace is read as far as it goes: an unreadable line (a stray text line in a
    candump log, a garbled frame), a BLF container whose compressed data is damaged or a
    database row that makes no frame is skipped and counted, and reading goes on after
    it; a stream that cannot go on (damaged gzip data, a damaged database page) ends the
    file with a note. ``lines()`` says what was skipped and where (``file:line`` for text
    formats). Only a file that cannot be opened as a trace at all raises TraceError.

    The monitors run on data time, so a frame whose timestamp is not finite or lies outside
    1970..2200 (a damaged recording; datetime cannot even format most of it) is skipped and
    counted, and so is a frame that goes back in time by more than REORDER_S (less: kept at
    the previous frame's time, and said). One frame far ahead of its
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
        self.unreadable = Skipped("unreadable line")
        self.reordered = 0                       # taken at the previous frame's time
        self.notes: list[str] = []               # cut off, rest unreadable
        self._index = 0                          # frames read from the file so far
        self._lines: _Lines | None = None        # text formats: the line counter

    def where(self) -> str:
        """Where the frame read last is, for messages."""
        return self._at(self._index, self._lines.lineno if self._lines is not None else 0)

    def _at(self, index: int, lineno: int) -> str:
        if self._lines is not None:
            return f"{self.path}:{lineno}"
        return f"{self.path}: frame {index}"

    @property
    def damaged(self) -> bool:
        """Anything skipped, cut off, or no frame at all (``analyze --strict`` fails)."""
        return bool(self.bad_time.count or self.out_of_order.count or self.unreadable.count
                    or self.notes or not self.frames)

    def lines(self) -> list[str]:
        """What was skipped, as warnings for stderr."""
        out = (self.unreadable.lines(self.path) + self.bad_time.lines(self.path)
               + self.out_of_order.lines(self.path))
        out += [f"warning: {note}" for note in self.notes]
        if self.reordered:
            out.append(f"note: {self.path}: {self.reordered} frame(s) up to "
                       f"{REORDER_S * 1000:.0f} ms before the previous one (channels "
                       "logged interleaved) taken at the previous frame's time")
        if not self.frames:
            out.append(f"warning: {self.path}: no CAN frames in this trace")
        return out

    def __iter__(self) -> Iterator[can.Message]:
        # The hot loop of ``analyze``: locals only; locations are made when something is
        # skipped, from the frame index and line number kept for the held frame.
        floor = -math.inf if self.not_before is None else self.not_before
        held: can.Message | None = None
        held_t = held_index = held_line = 0
        index = 0
        frames = self._open()
        lines = self._lines
        for msg in frames:
            index += 1
            t = msg.timestamp
            if not EARLIEST <= t < LATEST:             # NaN compares false: skipped too
                self._index = index
                self.bad_time.add(self.where(), f"timestamp {t!r}")
                continue
            ahead = held_t if held is not None else floor
            if t < ahead and ahead - t <= REORDER_S:  # channels interleaved, not damage
                msg.timestamp = t = ahead
                self.reordered += 1
            if held is None:
                if t < floor:
                    self._index = index
                    self.out_of_order.add(self.where(), _before(t, floor))
                    continue
            elif t >= held_t:
                floor = held_t
                self.frames += 1
                yield held
            elif t >= floor:           # the held frame is ahead of both its neighbours
                self.out_of_order.add(self._at(held_index, held_line),
                                      f"timestamp {held_t!r} is {held_t - t:.6f} s after "
                                      "the next frame's")
            else:
                self._index = index
                self.out_of_order.add(self.where(), _before(t, floor))
                continue
            held, held_t, held_index = msg, t, index
            if lines is not None:
                held_line = lines.lineno
        self._index = index
        if held is not None:
            self.frames += 1
            floor = held_t
            yield held
        if floor > -math.inf and self.frames:
            self.last_t = floor

    # -- formats -------------------------------------------------------------------------
    def _open(self) -> Iterator[can.Message]:
        """The frames as the file holds them, damage skipped and noted."""
        path = self.path
        if not path.is_file():
            raise TraceError(f"{path}: trace file not found")
        suffixes = [x.lower() for x in path.suffixes]
        gz = bool(suffixes) and suffixes[-1] == ".gz"
        suffix = (suffixes[-2] if len(suffixes) > 1 else "") if gz else path.suffix.lower()
        text = TEXT_READERS.get(suffix)
        if text is not None:
            self._lines = _Lines(self._open_binary(gz))
            return self._read_text(text, suffix)
        if suffix == ".blf":
            return self._read_blf(gz)
        if suffix == ".db" and not gz:
            return self._read_db()
        return self._read_other()

    def _open_binary(self, gz: bool) -> BinaryIO:
        try:
            return gzip.open(self.path, "rb") if gz else open(self.path, "rb")  # noqa: SIM115
        except OSError as exc:
            raise TraceError(f"{self.path}: cannot open trace ({exc})") from exc

    def _read_text(self, cls: type[can.io.generic.MessageReader], suffix: str
                   ) -> Iterator[can.Message]:
        """candump .log, .asc, .csv, .trc: python-can's reader over a line counter; after an
        unreadable line a fresh iteration of the same reader goes on with the next line."""
        lines = self._lines
        assert lines is not None
        kwargs = {"relative_timestamp": False} if suffix == ".asc" else {}  # header's date
        try:
            reader = cls(lines, **kwargs)
        except Exception as exc:
            lines.close()
            raise TraceError(f"{self.path}: cannot open trace ({exc})") from exc
        with reader:
            while True:
                before = lines.lineno
                try:
                    yield from reader
                    break
                except Exception as exc:
                    if lines.lineno == before:     # no progress: the reader is stuck
                        self.notes.append(f"{self.where()}: cannot read on ({exc}); the rest "
                                          "of the file was not read")
                        break
                    self._unreadable_line(exc)
                _resume(reader, lines)
        if lines.broken is not None:
            if lines.lineno == 0:
                raise TraceError(f"{self.path}: cannot open trace ({lines.broken})")
            self.notes.append(f"{self.path}:{lines.lineno}: compressed data damaged after "
                              f"this line ({lines.broken}); the rest of the file was not read")
        elif lines.last and not lines.last.endswith("\n") and not self.notes:
            # the last line was read as a frame, but a writer ends every line: cut off?
            self.notes.append(f"{self.path}:{lines.lineno}: the file ends inside this line "
                              "(cut off?)")

    def _unreadable_line(self, exc: Exception) -> None:
        assert self._lines is not None
        line = self._lines.last
        if not line.endswith("\n") and self._lines.at_end():
            self.notes.append(f"{self.where()}: the file ends inside this line (cut off?)")
            return
        text = line.strip()
        shown = repr(text if len(text) <= 60 else text[:57] + "...")
        self.unreadable.add(self.where(), f"{shown} ({type(exc).__name__}: {exc})"[:160])

    def _read_blf(self, gz: bool) -> Iterator[can.Message]:
        """Vector BLF, container by container: a container whose compressed data is damaged
        is skipped, reading picks up at the next object header."""
        f = self._open_binary(gz)
        self.unreadable = Skipped("damaged BLF container")
        try:
            reader = can.BLFReader(f)
        except Exception as exc:
            f.close()
            why = ("too short for a BLF header" if isinstance(exc, struct.error)
                   else "no BLF signature" if isinstance(exc, can.io.blf.BLFParseError)
                   else str(exc))
            raise TraceError(f"{self.path}: cannot open trace (not a BLF file: {why})"
                             ) from exc
        if not hasattr(reader, "_parse_container"):   # another python-can: its own loop
            reader.stop()
            yield from self._read_other()
            return
        with reader:
            try:
                yield from self._blf_objects(reader, f)
            except (OSError, EOFError, zlib.error) as exc:   # the .gz around it
                self.notes.append(f"{self.path}: byte {f.tell()}: compressed data damaged "
                                  f"({exc}); the rest of the file was not read")
                return
            if reader._tail and not self.notes:
                self.notes.append(f"{self.path}: the file ends inside a frame (cut off?)")
            size = f.tell()
            if not gz and reader.file_size > size and not self.notes:
                self.notes.append(f"{self.path}: cut off: the header says {reader.file_size} "
                                  f"bytes, the file has {size}")

    def _blf_objects(self, reader: Any, f: BinaryIO) -> Iterator[can.Message]:
        from can.io import blf

        head_size = blf.OBJ_HEADER_BASE_STRUCT.size
        resync = False         # after damage: the next container may start mid-object
        while True:
            pos = f.tell()
            head = f.read(head_size)
            if not head:
                return
            if len(head) < head_size:
                self.notes.append(f"{self.path}: byte {pos}: the file ends inside an object "
                                  "header (cut off?)")
                return
            signature, _, _, obj_size, obj_type = blf.OBJ_HEADER_BASE_STRUCT.unpack(head)
            if signature != b"LOBJ" or not head_size <= obj_size <= MAX_BLF_OBJECT:
                self.unreadable.add(f"{self.path}: byte {pos}", "not an object header")
                if not _seek_to(f, b"LOBJ", pos + 1):
                    return
                reader._tail, resync = b"", True
                continue
            body = f.read(obj_size - head_size)
            f.read(obj_size % 4)
            if len(body) < obj_size - head_size:
                self.notes.append(f"{self.path}: byte {pos}: the file ends inside a "
                                  f"container ({len(body) + head_size} of {obj_size} bytes; "
                                  "cut off?)")
            if obj_type != blf.LOG_CONTAINER:
                continue
            try:
                method, _ = blf.LOG_CONTAINER_STRUCT.unpack_from(body)
                data = body[blf.LOG_CONTAINER_STRUCT.size:]
                if method == blf.ZLIB_DEFLATE:
                    data = zlib.decompressobj().decompress(data)
                elif method != blf.NO_COMPRESSION:
                    raise ValueError(f"unknown compression method {method}")
            except (zlib.error, struct.error, ValueError) as exc:
                self.unreadable.add(f"{self.path}: byte {pos}", str(exc))
                reader._tail, resync = b"", True
                # a damaged size field would have swallowed what follows: look again
                if not _seek_to(f, b"LOBJ", pos + head_size):
                    return
                continue
            if resync:
                start = data.find(b"LOBJ")
                data = data[start:] if start >= 0 else b""
                resync = False
            try:
                yield from reader._parse_container(data)
            except blf.BLFParseError as exc:
                self.unreadable.add(f"{self.path}: byte {pos}",
                                    f"objects inside the container damaged ({exc or 'LOBJ'})")
                reader._tail, resync = b"", True

    def _read_db(self) -> Iterator[can.Message]:
        """python-can's SQLite format (table ``messages``), read-only; a row that makes no
        frame is skipped, a damaged page ends the file."""
        self.unreadable = Skipped("unreadable row")
        try:
            con = sqlite3.connect(f"file:{quote(str(self.path.resolve()))}?mode=ro", uri=True)
            rows = con.execute("SELECT rowid, * FROM messages")
        except sqlite3.Error as exc:
            raise TraceError(f"{self.path}: cannot open trace ({exc})") from exc
        rowid = None
        try:
            for row in rows:
                rowid = row[0]
                try:
                    ts, can_id, ext, remote, error, dlc, data = row[1:8]
                    if not isinstance(ts, (int, float)) or not isinstance(can_id, int):
                        raise ValueError(f"timestamp {ts!r}, id {can_id!r}")
                    msg = can.Message(timestamp=float(ts), arbitration_id=can_id,
                                      is_extended_id=bool(ext), is_remote_frame=bool(remote),
                                      is_error_frame=bool(error), dlc=dlc, data=data)
                except (ValueError, TypeError) as exc:
                    self.unreadable.add(f"{self.path}: row {rowid}", str(exc)[:120])
                    continue
                yield msg
        except sqlite3.Error as exc:
            after = f"after row {rowid}" if rowid is not None else "before the first row"
            self.notes.append(f"{self.path}: database damaged {after} ({exc}); the rest was "
                              "not read")
        finally:
            con.close()

    def _read_other(self) -> Iterator[can.Message]:
        """Any other format python-can reads: up to the first error, which is noted."""
        try:
            reader = can.LogReader(str(self.path))
        except ValueError as exc:
            raise TraceError(f"{self.path}: unsupported trace format ({exc})") from exc
        except Exception as exc:
            raise TraceError(f"{self.path}: cannot open trace ({exc})") from exc
        with reader:
            try:
                yield from reader
            except Exception as exc:
                self.notes.append(f"{self.path}: unreadable after frame {self._index} "
                                  f"({type(exc).__name__}: {exc}); the rest was not read")


# Text formats read line by line; after an unreadable line the reader is resumed.
TEXT_READERS: dict[str, type[can.io.generic.MessageReader]] = {
    ".log": can.CanutilsLogReader, ".asc": can.ASCReader, ".csv": can.CSVReader,
    ".trc": can.TRCReader}
MAX_BLF_OBJECT = 64 << 20      # a container is ~128 KiB; a larger size is a damaged header
MAX_LINE = 64 << 10


class _Lines:
    """A text file for python-can's text readers: counts lines, decodes leniently (one
    binary line must not stop the file) and turns a damaged compressed stream into the end
    of the file, kept in ``broken``."""

    def __init__(self, raw: BinaryIO):
        self._raw = raw
        self.lineno = 0
        self.last = ""
        self.broken: str | None = None
        self._pushed: list[str] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self._pushed:
            return self._pushed.pop()
        try:
            line = self._raw.readline(MAX_LINE)
            if len(line) == MAX_LINE and not line.endswith(b"\n"):
                while (more := self._raw.readline(MAX_LINE)) and not more.endswith(b"\n"):
                    pass                      # an endless line: keep its start only
        except (OSError, EOFError, zlib.error) as exc:
            self.broken = f"{type(exc).__name__}: {exc}"
            raise StopIteration from None
        if not line:
            raise StopIteration
        self.lineno += 1
        self.last = line.decode("utf-8", "replace")
        return self.last

    def readline(self) -> str:
        return next(self, "")

    def push(self, line: str) -> None:
        """Hand ``line`` out next, uncounted (a header line a resumed reader skips)."""
        self._pushed.append(line)

    def at_end(self) -> bool:
        try:
            return not self._raw.peek(1) if hasattr(self._raw, "peek") else False
        except (OSError, EOFError, zlib.error):
            return False

    def close(self) -> None:
        self._raw.close()

    @property
    def closed(self) -> bool:
        return bool(self._raw.closed)


def _resume(reader: Any, lines: _Lines) -> None:
    """Prepare ``reader`` for a second ``iter()`` that goes on after the bad line: the
    header was read already (ASC, TRC), or a header line is skipped again (CSV)."""
    if hasattr(reader, "_extract_header"):
        reader._extract_header = lambda: None
    if isinstance(reader, can.CSVReader):
        lines.push("")


def _seek_to(f: BinaryIO, marker: bytes, start: int) -> bool:
    """Move ``f`` to the next ``marker`` at or after ``start``; False at the end."""
    f.seek(start)
    carry = b""
    offset = start
    while chunk := f.read(1 << 20):
        buf = carry + chunk
        i = buf.find(marker)
        if i >= 0:
            f.seek(offset - len(carry) + i)
            return True
        carry = buf[-(len(marker) - 1):]
        offset += len(chunk)
    return False


def _before(t: float, floor: float) -> str:
    return f"timestamp {t!r} is {floor - t:.6f} s before the frame before it"


def read_trace(path: Path) -> Iterator[can.Message]:
    """Frames of one trace file, in file order (see ``TraceReader``), what was skipped
    logged as warnings. Raises TraceError for a file that is not a readable trace."""
    reader = TraceReader(path)
    yield from reader
    for line in reader.lines():
        log.warning("%s", line.removeprefix("warning: "))
