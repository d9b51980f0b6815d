"""Damaged trace files, made from a real trace: stray text lines, bit flips in .blf, .asc.gz
and .db, cut-off files, empty files. ``analyze`` reads what can be read, says how much was
skipped and where on stderr, and exits non-zero only with ``--strict``; never a traceback.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import can
import pytest

from agent.ingest.trace import TraceError, TraceReader
from agent.records.keys import DeviceKey

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"
DRIVE = ROOT / "hil" / "scenarios" / "drive.toml"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def analyze(d: dict[str, Any], *traces: Path, strict: bool = False) -> subprocess.CompletedProcess:
    r = run("agent.cli", "analyze", "-c", str(BENCH), "--key", str(d["key"]),
            *(["--strict"] if strict else []), *map(str, traces))
    assert "Traceback" not in r.stderr, r.stderr
    return r


def frames_analysed(stderr: str) -> int:
    m = re.search(r"bus chassis: (\d+) frames", stderr)
    assert m, stderr
    return int(m.group(1))


def write_db(path: Path, msgs: list[can.Message]) -> None:
    """python-can's SqliteWriter (its thread stops after the batch it is in: wait)."""
    writer = can.SqliteWriter(str(path))
    for m in msgs:
        writer.on_message_received(m)
    deadline = time.monotonic() + 60
    while writer.num_frames < len(msgs) and time.monotonic() < deadline:
        time.sleep(0.05)
    writer.stop()
    assert writer.num_frames == len(msgs)


@pytest.fixture(scope="module")
def drive(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The drive scenario as candump .log, converted with python-can's writers to .blf,
    .asc, .asc.gz and .db; a key; the records of the clean trace."""
    tmp = tmp_path_factory.mktemp("damaged")
    log = tmp / "drive.log"
    r = run("hil.cli", "scenario", str(DRIVE), "-c", str(BENCH), "-o", str(log))
    assert r.returncode == 0, r.stderr
    msgs = list(can.LogReader(str(log)))
    for suffix in (".blf", ".asc", ".asc.gz"):
        with can.Logger(str(tmp / f"drive{suffix}")) as writer:
            for m in msgs:
                writer.on_message_received(m)
    write_db(tmp / "drive.db", msgs)
    key = tmp / "device.key"
    DeviceKey.generate().save(key)
    d = {"tmp": tmp, "log": log, "frames": len(msgs), "key": key}
    r = analyze(d, log)
    assert r.returncode == 0 and r.stdout.count("\n") > 5, r.stderr
    d["records"] = r.stdout
    for suffix in (".blf", ".asc.gz", ".db"):
        r = analyze(d, tmp / f"drive{suffix}")
        assert r.returncode == 0 and frames_analysed(r.stderr) == len(msgs), r.stderr
        assert "warning" not in r.stderr, r.stderr
    return d


def damaged(d: dict[str, Any], name: str, data: bytes) -> Path:
    path = d["tmp"] / name
    path.write_bytes(data)
    return path


# -- text formats: one bad line costs that line ----------------------------------------------

def test_candump_log_that_begins_with_a_text_line(drive: dict[str, Any]) -> None:
    """Like a published candump log: a text line first used to give 0 frames analysed."""
    text = b"Logging CAN traffic on can0 since boot\n" + drive["log"].read_bytes()
    trace = damaged(drive, "text_first.log", text)
    r = analyze(drive, trace)
    assert r.returncode == 0, r.stderr
    assert "1 unreadable line skipped" in r.stderr, r.stderr
    assert f"{trace}:1: 'Logging CAN traffic" in r.stderr
    assert frames_analysed(r.stderr) == drive["frames"]
    assert r.stdout == drive["records"]

    r = analyze(drive, trace, strict=True)
    assert r.returncode == 1 and "--strict" in r.stderr and str(trace) in r.stderr
    assert r.stdout == drive["records"], "strict still analyses everything"


def test_garbled_lines_mid_log_are_skipped_and_located(drive: dict[str, Any]) -> None:
    lines = drive["log"].read_bytes().splitlines(keepends=True)
    for at in (20000, 10000, 5000):
        lines.insert(at, b"(1782892810.000000) icv-bench 1G5#zz\n" if at != 10000
                     else b"\x00\xff\xfe\x9c binary junk\n")
    trace = damaged(drive, "garbled.log", b"".join(lines))
    r = analyze(drive, trace)
    assert r.returncode == 0, r.stderr
    assert "3 unreadable lines skipped" in r.stderr
    for line in (5001, 10002, 20003):     # each insertion moved the ones after it
        assert f"{trace}:{line}:" in r.stderr, r.stderr
    assert r.stdout == drive["records"]


def test_cut_off_last_line(drive: dict[str, Any]) -> None:
    trace = damaged(drive, "cut.log", drive["log"].read_bytes()[:-15])
    r = analyze(drive, trace)
    assert r.returncode == 0
    assert f"{trace}:{drive['frames']}: the file ends inside this line" in r.stderr, r.stderr
    assert analyze(drive, trace, strict=True).returncode == 1


def test_stray_lines_in_asc_and_csv_are_skipped(tmp_path: Path, drive: dict[str, Any]) -> None:
    msgs = list(can.LogReader(str(drive["log"])))[:500]
    csv = tmp_path / "t.csv"
    with can.Logger(str(csv)) as w:
        for m in msgs:
            w.on_message_received(m)
    asc_lines = (drive["tmp"] / "drive.asc").read_text().splitlines(keepends=True)
    asc_lines.insert(300, "   1.000000 1  12Z             Rx   d 8 zz 00 00 00 00 00 00 00\n")
    asc = tmp_path / "t.asc"
    asc.write_text("".join(asc_lines))
    csv_lines = csv.read_text().splitlines(keepends=True)
    csv_lines.insert(100, "not,a,frame\n")
    csv.write_text("".join(csv_lines))
    for path, total, line in ((asc, drive["frames"], 301), (csv, 500, 101)):
        reader = TraceReader(path)
        assert sum(1 for _ in reader) == total
        assert reader.unreadable.count == 1
        assert reader.unreadable.examples[0].startswith(f"{path}:{line}:"), reader.lines()


def test_empty_trace_is_reported(drive: dict[str, Any]) -> None:
    trace = damaged(drive, "empty.log", b"")
    r = analyze(drive, trace)
    assert r.returncode == 0
    assert f"warning: {trace}: no CAN frames in this trace" in r.stderr, r.stderr
    assert analyze(drive, trace, strict=True).returncode == 1


def test_a_file_of_garbage_named_log(drive: dict[str, Any]) -> None:
    junk = bytes((i * 7919 + 13) % 256 for i in range(20000))
    trace = damaged(drive, "junk.log", junk)
    r = analyze(drive, trace)
    assert r.returncode == 0, r.stderr
    assert "unreadable line" in r.stderr and "no CAN frames" in r.stderr, r.stderr
    assert analyze(drive, trace, strict=True).returncode == 1


# -- BLF --------------------------------------------------------------------------------------

def test_bit_flipped_blf_loses_one_container(drive: dict[str, Any]) -> None:
    data = bytearray((drive["tmp"] / "drive.blf").read_bytes())
    data[len(data) // 2] ^= 0x10
    trace = damaged(drive, "flipped.blf", bytes(data))
    r = analyze(drive, trace)
    assert r.returncode == 0, r.stderr
    assert re.search(rf"1 damaged BLF container skipped:\n  {re.escape(str(trace))}: byte \d+",
                     r.stderr), r.stderr
    n = frames_analysed(r.stderr)
    assert drive["frames"] * 0.6 < n < drive["frames"], "one container lost, not the rest"
    assert analyze(drive, trace, strict=True).returncode == 1


def test_truncated_blf_is_reported(drive: dict[str, Any]) -> None:
    data = (drive["tmp"] / "drive.blf").read_bytes()
    trace = damaged(drive, "cut.blf", data[: len(data) * 2 // 3])
    r = analyze(drive, trace)
    assert r.returncode == 0, r.stderr
    assert "cut off" in r.stderr, r.stderr
    assert 0 < frames_analysed(r.stderr) < drive["frames"]
    assert analyze(drive, trace, strict=True).returncode == 1


def test_garbage_named_blf_is_a_clear_error(drive: dict[str, Any]) -> None:
    trace = damaged(drive, "junk.blf", b"not a BLF file at all\n" * 50)
    r = analyze(drive, trace)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {trace}: cannot open trace")


# -- compressed text --------------------------------------------------------------------------

@pytest.mark.parametrize("how", ["flip", "cut"])
def test_damaged_asc_gz(drive: dict[str, Any], how: str) -> None:
    data = bytearray((drive["tmp"] / "drive.asc.gz").read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0x04
    else:
        del data[len(data) // 2:]
    trace = damaged(drive, f"{how}.asc.gz", bytes(data))
    r = analyze(drive, trace)
    assert r.returncode == 0, r.stderr
    assert "compressed data damaged" in r.stderr and "the rest of the file was not read" in \
        r.stderr, r.stderr
    assert re.search(rf"{re.escape(str(trace))}:\d+: compressed data damaged", r.stderr)
    assert 0 < frames_analysed(r.stderr) < drive["frames"] + 1
    assert analyze(drive, trace, strict=True).returncode == 1


def test_log_gz_that_is_not_gzip_is_a_clear_error(tmp_path: Path) -> None:
    trace = tmp_path / "x.log.gz"
    trace.write_text("(1.0) can0 123#00\n")
    with pytest.raises(TraceError, match="cannot open trace"):
        list(TraceReader(trace))


# -- SQLite -----------------------------------------------------------------------------------

def test_damaged_database_page(drive: dict[str, Any]) -> None:
    data = bytearray((drive["tmp"] / "drive.db").read_bytes())
    page = 4096
    mid = (len(data) // page // 2) * page
    data[mid:mid + page] = b"\xff" * page
    trace = damaged(drive, "damaged.db", bytes(data))
    r = analyze(drive, trace)
    assert r.returncode == 0, r.stderr
    assert f"{trace}: database damaged" in r.stderr, r.stderr
    assert frames_analysed(r.stderr) < drive["frames"]
    assert analyze(drive, trace, strict=True).returncode == 1


def test_database_rows_that_make_no_frame(tmp_path: Path, drive: dict[str, Any]) -> None:
    db = tmp_path / "rows.db"
    msgs = list(can.LogReader(str(drive["log"])))[:100]
    write_db(db, msgs)
    con = sqlite3.connect(db)
    with con:
        con.execute("INSERT INTO messages VALUES (NULL, 293, 0, 0, 0, 8, x'00')")
        con.execute("INSERT INTO messages VALUES ('soon', 293, 0, 0, 0, 8, x'00')")
    con.close()
    reader = TraceReader(db)
    assert sum(1 for _ in reader) == 100
    assert reader.unreadable.count == 2
    assert reader.lines()[0] == f"warning: {db}: 2 unreadable rows skipped:"
    assert reader.unreadable.examples[0].startswith(f"{db}: row 101:")


def test_garbage_named_db_is_a_clear_error(drive: dict[str, Any]) -> None:
    trace = damaged(drive, "junk.db", b"SQLite? no.\n" * 400)
    r = analyze(drive, trace)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1].startswith(f"error: {trace}: cannot open trace")
    assert trace.read_bytes() == b"SQLite? no.\n" * 400, "reading must not write"


# -- several traces ---------------------------------------------------------------------------

def test_strict_names_only_the_damaged_trace(drive: dict[str, Any]) -> None:
    empty = damaged(drive, "nothing.log", b"")
    r = analyze(drive, drive["log"], empty, strict=True)
    assert r.returncode == 1
    last = r.stderr.strip().splitlines()[-1]
    assert last == f"error: --strict: 1 trace(s) damaged or empty: {empty}", last
    assert r.stdout == drive["records"]

