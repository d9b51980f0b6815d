"""`make soak`: the project's own fault campaign against the real agent process.

Seven fault classes, each against a real Mosquitto (mutual TLS, loopback only) and the
bench backend, except the fuzzing (offline, in this process):

  1 power    SIGKILL of ``icv-agent run`` at random points, many cycles
  2 broker   SIGKILL of Mosquitto again and again during traffic (backend asks for gaps)
  3 outage   broker down for a while, agent records (a crash included), broker back
  4 disk     state dir on a small tmpfs filled to ENOSPC, a crash, a power cut, space back
  5 fuzz     random / malformed / error / remote frames through the Pipeline
  6 hostile  hostile payloads on the command topics of a live agent
  7 clock    wall-clock jumps under libfaketime: durations in records must not stretch

Every class ends with the same bookkeeping, read from the agent's state and the backend:
records durable (the chain's last seq), delivered (distinct records at the backend), lost
(seqs 1..N missing at the backend: must be 0), duplicates (same id again) and the time to
drain. A class that loses a record fails the run (exit 1): that is a finding, not noise.
Every loop is bounded in count and time; only loopback addresses are used.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import os
import platform
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.backend import Backend, BrokerConfig, keygen, load_backend_key  # noqa: E402
from hil.mosquitto import BrokerPKI, MosquittoBroker  # noqa: E402
from tests.live_agent import (  # noqa: E402
    Agent,
    chain_state,
    make_trace,
    multicast_group,
    port_of,
    uplink_section,
    vehicle_keys,
    wait_until,
    write_config,
)

VIN = "LSJWH4098PN000001"
HEALTH = "\n[health]\ninterval_s = 0.2\n"       # a steady stream of records while running


@dataclass
class Figures:
    """One row of the table: what a fault class did to delivery."""

    name: str
    cycles: int = 0
    durable: int = 0
    delivered: int = 0
    lost: int = 0
    duplicates: int = 0
    drain_s: float | None = None
    seconds: float = 0.0
    ok: bool = True
    findings: int = 0
    notes: list[str] = field(default_factory=list)

    def finding(self, what: str) -> None:
        """Wrong but not a loss (the class still delivered everything)."""
        self.findings += 1
        self.notes.append("FINDING: " + what)

    def fail(self, why: str) -> None:
        self.ok = False
        self.notes.append("FAIL: " + why)


# -- shared bench pieces ---------------------------------------------------------------

class Bench:
    """A broker, a backend (with its resend key) and an agent config in one folder: each
    fault class gets its own, so one class's leftovers cannot hide another's losses."""

    def __init__(self, folder: Path, pki: BrokerPKI, *, extra: str = HEALTH,
                 state_dir: Path | None = None, env: dict[str, str] | None = None,
                 backend_start: bool = True):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.broker = MosquittoBroker(folder / "broker", pki)
        self.broker.start()
        self.group = multicast_group()
        backend_priv, backend_pub, _ = keygen(folder / "backend-keys")
        self.backend_priv = load_backend_key(backend_priv)
        cfg_extra = uplink_section(self.broker, pki.client(VIN), backend_key=backend_pub)
        if state_dir is not None:
            cfg_extra += ""
        self.config = write_config(folder, self.group, cfg_extra + extra)
        if state_dir is not None:        # the state dir elsewhere (the tmpfs of class 4)
            text = self.config.read_text().replace(f'dir = "{folder / "state"}"',
                                                   f'dir = "{state_dir}"')
            self.config.write_text(text)
        self.state = state_dir or folder / "state"
        keys_dir = self._keys()
        bcert = pki.client(f"backend-{folder.name}")
        self.backend = Backend(
            BrokerConfig(host=self.broker.host, port=self.broker.port, ca=bcert.ca,
                         cert=bcert.cert, key=bcert.key, backoff_min_s=0.1,
                         backoff_max_s=0.5),
            folder / "backend.db", keys_dir, group="", persistent=True,
            resend_key=self.backend_priv, gap_wait_s=1.0)
        if backend_start and not self.backend.start(30):
            raise RuntimeError("backend did not subscribe")
        self.env = env

    def _keys(self) -> Path:
        """``vehicle_keys`` assumes ``<config dir>/state``; the tmpfs state dir needs the
        same key file copied from wherever the agent keeps it."""
        if self.state == self.folder / "state":
            return vehicle_keys(self.config, VIN)
        subprocess.run([sys.executable, "-m", "agent.cli", "keys", "generate", "--config",
                        str(self.config)], check=True, capture_output=True, cwd=ROOT)
        keys = self.folder / "vehicle-keys"
        keys.mkdir(exist_ok=True)
        (keys / f"{VIN}.pem").write_bytes((self.state / "device.key").read_bytes())
        return keys

    def agent(self) -> Agent:
        return Agent(self.config, env=self.env)

    def seq(self) -> int:
        """The chain's last seq on disk: every record up to it is durable."""
        try:
            return int(chain_state(self.state).get("seq", 0))
        except sqlite3.Error:
            return 0

    def caught_up(self) -> bool:
        s = self.backend.summary(VIN)
        return not s.gaps and s.last_seq is not None and s.last_seq >= self.seq()

    def settle(self, fig: Figures, since: float, timeout: float) -> None:
        """Run the agent until the backend holds everything, stop it (SIGTERM), and fill in
        durable / delivered / lost / duplicates / drain time."""
        agent = self.agent().start()
        try:
            # SIGTERM before the service installed its handler would be Python's default
            # (exit -15), a harness artefact: stop it only once it runs.
            if not agent.wait_running(60):
                fig.fail("agent not running within 60 s of its start")
            if not wait_until(self.caught_up, timeout, every=0.2):
                fig.notes.append("backend not caught up while running: "
                                 + json.dumps(self.backend.summary(VIN).gaps))
            code = agent.stop(signal.SIGTERM, timeout=60)
            if code != 0:
                fig.fail(f"agent exited {code} on SIGTERM")
        finally:
            agent.kill()
        final = self.seq()
        wait_until(lambda: (self.backend.summary(VIN).last_seq or 0) >= final
                   and not self.backend.summary(VIN).gaps, 30, every=0.2)
        fig.drain_s = time.monotonic() - since
        account(fig, self, final)
        if "Traceback" in agent.log_text():
            fig.notes.append("agent log has a Traceback")

    def close(self) -> None:
        self.backend.close()
        self.broker.stop()


def present_seqs(backend: Backend) -> set[int]:
    con = backend.store.conn if hasattr(backend.store, "conn") else None
    if con is None:                        # the store keeps its connection private
        con = sqlite3.connect(backend.store.path)
    return {s for (s,) in con.execute("SELECT seq FROM records WHERE vin = ?", (VIN,))}


def account(fig: Figures, bench: Bench, final: int) -> None:
    """durable, delivered, lost (seq 1..final not at the backend), duplicates, chain."""
    s = bench.backend.summary(VIN)
    seqs = present_seqs(bench.backend)
    missing = sorted(set(range(1, final + 1)) - seqs)
    fig.durable = final
    fig.delivered = s.records
    fig.lost = len(missing)
    fig.duplicates = s.duplicates
    if missing:
        fig.fail(f"seqs missing at the backend: {ranges(missing)}")
    if s.seq_conflicts:
        fig.fail(f"same seq, other record: {s.seq_conflicts[:10]}")
    if s.chain != "intact":
        fig.fail(f"chain {s.chain}")
    if s.evicted:
        fig.notes.append(f"evicted (told by journal.evicted): {s.evicted}")
    if s.alarms:
        fig.notes.append(f"backend alarms: {s.alarms}")
    if bench.backend.counters.conflicts:
        fig.fail(f"{bench.backend.counters.conflicts} same-id records with another hash")


def ranges(seqs: list[int]) -> str:
    out: list[str] = []
    for s in seqs:
        if out and out[-1].endswith(f"-{s - 1}"):
            out[-1] = out[-1].rsplit("-", 1)[0] + f"-{s}"
        elif out and out[-1] == str(s - 1):
            out[-1] = f"{s - 1}-{s}"
        else:
            out.append(str(s))
    return ",".join(out[:20]) + (" ..." if len(out) > 20 else "")


class Replayer:
    """The drive trace played into the bus again and again (in a thread) so that agents
    started during a class see traffic; bounded by ``stop()`` and a deadline."""

    def __init__(self, trace: Path, group: str, speed: float, deadline_s: float):
        self.cmd = [sys.executable, "-m", "hil.cli", "replay", str(trace), "--interface",
                    "udp_multicast", "--channel", group, "-O", f"port={port_of(group)}",
                    "--speed", str(speed), "--quiet"]
        self.deadline = time.monotonic() + deadline_s
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self.rounds = 0
        self._thread = threading.Thread(target=self._run, daemon=True, name="replayer")

    def start(self) -> Replayer:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set() and time.monotonic() < self.deadline:
            self._proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL)
            while self._proc.poll() is None and not self._stop.is_set() \
                    and time.monotonic() < self.deadline:
                time.sleep(0.1)
            if self._proc.poll() is None:
                self._proc.terminate()
                self._proc.wait(10)
            self.rounds += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)


# -- 1 power cuts ----------------------------------------------------------------------

def power_cuts(tmp: Path, pki: BrokerPKI, trace: Path, cycles: int, rng: random.Random
               ) -> Figures:
    """Each cycle: start the agent, let it record and send for 0.2-1.5 s, SIGKILL. A
    record committed before the kill must reach the backend later; none may come twice
    with another content (a seq re-used after a torn write would show as a conflict)."""
    fig = Figures("1 power cuts (SIGKILL agent)")
    bench = Bench(tmp / "power", pki)
    replay = Replayer(trace, bench.group, 1.0, deadline_s=cycles * 6 + 60).start()
    try:
        first = bench.agent().start()
        wait_until(lambda: bench.backend.summary(VIN).records > 0, 60)
        first.kill()
        seqs_before: list[int] = []
        for i in range(cycles):
            agent = bench.agent().start()
            # Most cuts while it runs; every fifth at a random point of its start-up
            # (journal recovery, key loading, the first connect).
            if i % 5 == 4 or not agent.wait_running(30):
                time.sleep(rng.uniform(0.0, 1.5))
            else:
                time.sleep(rng.uniform(0.2, 1.5))
            agent.kill()                        # SIGKILL: a power cut
            seqs_before.append(bench.seq())
            fig.cycles += 1
        if any(b < a for a, b in zip(seqs_before, seqs_before[1:], strict=False)):
            fig.fail("the chain's seq on disk went backwards after a power cut")
        replay.stop()
        grew = sum(b > a for a, b in zip([0, *seqs_before], seqs_before, strict=False))
        fig.notes.append(f"cycles that added records: {grew}")
        bench.settle(fig, time.monotonic(), 120)
    finally:
        replay.stop()
        bench.close()
    return fig


# -- 2 broker kills --------------------------------------------------------------------

def broker_kills(tmp: Path, pki: BrokerPKI, trace: Path, kills: int, rng: random.Random
                 ) -> Figures:
    """Mosquitto SIGKILLed during traffic: what it acknowledged and then lost comes again
    from the agent's archive when the backend asks for its gaps (records.resend)."""
    fig = Figures("2 broker kills (SIGKILL mosquitto)")
    bench = Bench(tmp / "broker", pki)
    replay = Replayer(trace, bench.group, 1.0, deadline_s=kills * 3 + 120).start()
    agent = bench.agent().start()
    try:
        wait_until(lambda: bench.backend.summary(VIN).records > 0, 60)
        for _ in range(kills):
            time.sleep(rng.uniform(0.3, 1.5))
            bench.broker.kill()
            time.sleep(rng.uniform(0.1, 0.6))
            bench.broker.start()
            fig.cycles += 1
        replay.stop()
        since = time.monotonic()
        if not wait_until(bench.caught_up, 120, every=0.2):
            fig.notes.append("gaps still open after 120 s of running")
        agent.stop(signal.SIGTERM, timeout=60)
        final = bench.seq()
        wait_until(lambda: (bench.backend.summary(VIN).last_seq or 0) >= final, 30)
        fig.drain_s = time.monotonic() - since
        account(fig, bench, final)
        c = bench.backend.counters
        fig.notes.append(f"resend requests {c.resend_requests}, re-sent {c.resent}")
    finally:
        replay.stop()
        agent.kill()
        bench.close()
    return fig


# -- 3 outage with restart -------------------------------------------------------------

def outage(tmp: Path, pki: BrokerPKI, trace: Path, seconds: float) -> Figures:
    """The broker away for ``seconds`` while the agent records a drive with a crash; when
    it is back everything arrives, the accident lanes (0, 1) before the rest."""
    fig = Figures(f"3 outage {seconds:g} s + restart")
    bench = Bench(tmp / "outage", pki)
    agent = bench.agent().start()
    try:
        wait_until(lambda: bench.backend.summary(VIN).records > 0, 60)
        wait_until(bench.caught_up, 30)
        before = bench.seq()
        bench.broker.stop()
        t0 = time.monotonic()
        speed = max(1.0, 45.0 / max(seconds - 5, 1.0))   # the crash inside the outage
        replay = Replayer(trace, bench.group, speed, deadline_s=seconds).start()
        replay._thread.join(max(seconds - 1, 1))
        replay.stop()
        time.sleep(max(0.0, seconds - (time.monotonic() - t0)))
        backlog = bench.seq() - before
        bench.broker.start()
        fig.cycles = 1
        since = time.monotonic()
        if not wait_until(bench.caught_up, 180, every=0.2):
            fig.notes.append("not caught up 180 s after the broker came back")
        fig.drain_s = time.monotonic() - since
        agent.stop(signal.SIGTERM, timeout=60)
        final = bench.seq()
        wait_until(lambda: (bench.backend.summary(VIN).last_seq or 0) >= final, 30)
        account(fig, bench, final)
        con = sqlite3.connect(bench.backend.store.path)
        rows = con.execute("SELECT seq, lane, type FROM records WHERE vin = ? AND seq > ? "
                           "AND seq <= ? ORDER BY arrival", (VIN, before, before + backlog)
                           ).fetchall()
        con.close()
        ranks = [i + 1 for i, (_, lane, _) in enumerate(rows) if lane <= 1]
        fig.notes.append(f"backlog {backlog} records; accident records arrived at "
                         f"positions {ranks} of {len(rows)}")
        if not ranks:
            fig.fail("no accident record in the outage (the crash was not replayed?)")
        elif max(ranks) > len(ranks) + 20:          # 20: one in-flight window
            fig.fail("accident lanes did not go first")
    finally:
        agent.kill()
        bench.close()
    return fig


# -- 4 full disk -----------------------------------------------------------------------

@contextlib.contextmanager
def tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)],
                   check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(fs: Path) -> Path:
    """A filler file written until the file system says ENOSPC."""
    filler = fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 65536)
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 512)
    finally:
        os.close(fd)
    try:
        with open(fs / "probe", "wb") as f:
            f.write(b"\0" * 4096)
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:
        assert exc.errno == errno.ENOSPC, exc
    return filler


def outbox_types(state: Path) -> dict[str, int]:
    con = sqlite3.connect(f"file:{state / 'state.db'}?mode=ro", uri=True)
    try:
        return dict(con.execute("SELECT type, count(*) FROM outbox GROUP BY type"))
    finally:
        con.close()


def full_disk(tmp: Path, pki: BrokerPKI, trace: Path, speed: float) -> Figures:
    """State dir on an 8 MiB tmpfs filled to ENOSPC with the broker away (so nothing
    leaves the outbox), a drive with a crash, then a power cut while the disk is full: the
    accident must be on disk, drops counted in journal.evicted. Then space and broker come
    back and every durable record must arrive."""
    fig = Figures("4 full disk (tmpfs ENOSPC)")
    if os.geteuid() != 0:
        fig.ok = False
        fig.notes.append("SKIPPED: needs root to mount a tmpfs")
        return fig
    with tmpfs(tmp / "fs", "8m") as fs:
        bench = Bench(tmp / "disk", pki, state_dir=fs / "state",
                      extra=HEALTH + "\n[journal]\nhold_max = 20\nreserve_mb = 1.0\n")
        agent = bench.agent().start()
        try:
            wait_until(lambda: bench.backend.summary(VIN).records > 0, 60)
            wait_until(bench.caught_up, 30)
            bench.broker.stop()
            filler = fill(fs)
            (fs / "probe").unlink(missing_ok=True)
            before = bench.seq()
            r = subprocess.run(Replayer(trace, bench.group, speed, 0).cmd, cwd=ROOT,
                               capture_output=True, timeout=300)
            time.sleep(12 / speed + 2)             # accident.record: 10 s after the crash
            agent.kill()                           # power cut while the disk is full
            fig.cycles = 1
            on_disk = outbox_types(bench.state)
            fig.notes.append(f"replay rc {r.returncode}; seq {before} -> {bench.seq()} "
                             f"while full; outbox after the cut: {on_disk}")
            if not on_disk.get("accident.trigger"):
                fig.fail("no accident.trigger on disk after a power cut on a full disk")
            filler.unlink()
            bench.broker.start()
            since = time.monotonic()
            bench.settle(fig, since, 120)
            con = sqlite3.connect(bench.backend.store.path)
            tallies = [json.loads(p)["data"] for (p,) in con.execute(
                "SELECT payload FROM records WHERE vin = ? AND type = 'journal.evicted'",
                (VIN,))]
            types = dict(con.execute("SELECT type, count(*) FROM records WHERE vin = ? "
                                     "GROUP BY type", (VIN,)))
            con.close()
            fig.notes.append(f"journal.evicted records: {tallies}")
            fig.notes.append(f"accident records at the backend: "
                             f"trigger {types.get('accident.trigger', 0)}, "
                             f"record {types.get('accident.record', 0)}")
            if not tallies:
                fig.notes.append("no journal.evicted at the backend: nothing was dropped, "
                                 "or drops were not counted")
        finally:
            agent.kill()
            bench.close()
    return fig


# -- 5 fuzzed frames -------------------------------------------------------------------

def fuzz(tmp: Path, frames: int, rng: random.Random) -> Figures:
    """Random ids, lengths and payloads, DLCs that disagree with the data, error and
    remote frames, timestamps that stall or step back, through the real Pipeline with
    every monitor (offline, signed records into memory). Nothing may raise and the
    decoder's counters must add up to the frames fed."""
    import can

    from agent import config as agent_config
    from agent.analyze import offline_recorder
    from agent.monitors import ALL
    from agent.pipeline import Pipeline, TimeBase
    from hil.benchconfig import bench_config

    fig = Figures(f"5 fuzz {frames:,} frames")
    cfg = agent_config.load(bench_config(tmp / "fuzz" / "agent.toml", state_dir=tmp / "fuzz"))
    records: list[dict[str, Any]] = []

    class Out:
        """Keeps seq and type only: a million frames make hundreds of thousands."""

        def write(self, line: str) -> None:
            r = json.loads(line)
            records.append({"seq": r["seq"], "type": r["type"]})

    tb = TimeBase("trace")
    rec = offline_recorder(cfg, None, tb, Out())
    pipe = Pipeline(cfg, rec, tb, ALL)
    mapped = sorted(cfg.buses[0].plans)
    lengths = {k: p.length for k, p in cfg.buses[0].plans.items()}
    t = 1.7e9
    kinds = {"mapped_ok": 0, "mapped_short": 0, "random_std": 0, "random_ext": 0,
             "bad_dlc": 0, "error": 0, "remote": 0, "fd_long": 0}
    errors: list[str] = []
    for i in range(frames):
        t += rng.choice((0.0, 0.0002, 0.001, 0.002, 0.005))
        if rng.random() < 0.001:
            t -= rng.uniform(0, 0.05)               # a logger's interleaving step back
        roll = rng.random()
        kw: dict[str, Any] = {"timestamp": t, "check": False}
        if roll < 0.45:
            key = rng.choice(mapped)
            n = lengths[key]
            kw.update(arbitration_id=key & 0x1FFFFFFF, is_extended_id=bool(key & 0x80000000),
                      data=rng.randbytes(n))
            kinds["mapped_ok"] += 1
        elif roll < 0.55:
            key = rng.choice(mapped)
            kw.update(arbitration_id=key & 0x1FFFFFFF, is_extended_id=bool(key & 0x80000000),
                      data=rng.randbytes(rng.randrange(0, max(lengths[key], 1))))
            kinds["mapped_short"] += 1
        elif roll < 0.70:
            kw.update(arbitration_id=rng.randrange(0x800), data=rng.randbytes(rng.randrange(9)))
            kinds["random_std"] += 1
        elif roll < 0.80:
            kw.update(arbitration_id=rng.randrange(1 << 29), is_extended_id=True,
                      data=rng.randbytes(rng.randrange(9)))
            kinds["random_ext"] += 1
        elif roll < 0.88:
            key = rng.choice(mapped) if rng.random() < 0.5 else rng.randrange(0x800)
            kw.update(arbitration_id=key & 0x1FFFFFFF, is_extended_id=bool(key & 0x80000000),
                      dlc=rng.choice((0, 9, 15, 64, 255)),
                      data=rng.randbytes(rng.randrange(12)))
            kinds["bad_dlc"] += 1
        elif roll < 0.93:
            # As agent/ingest/socketcan.py builds them: no EFF flag, so a standard id
            # that is the error class bits (0x001 TX timeout .. 0x100 restarted).
            std = [k for k in mapped if k < 0x200]
            key = rng.choice(std) if rng.random() < 0.3 else rng.randrange(1, 0x200)
            kw.update(arbitration_id=key, is_extended_id=False, is_error_frame=True,
                      data=rng.randbytes(8))
            kinds["error"] += 1
        elif roll < 0.98:
            key = rng.choice(mapped) if rng.random() < 0.5 else rng.randrange(0x800)
            kw.update(arbitration_id=key & 0x1FFFFFFF, is_extended_id=bool(key & 0x80000000),
                      is_remote_frame=True, dlc=rng.randrange(16))
            kinds["remote"] += 1
        else:
            key = rng.choice(mapped)
            kw.update(arbitration_id=key & 0x1FFFFFFF, is_extended_id=bool(key & 0x80000000),
                      is_fd=True, data=rng.randbytes(rng.choice((12, 16, 32, 64))))
            kinds["fd_long"] += 1
        try:
            pipe.feed(0, can.Message(**kw), t)
        except Exception as exc:                     # a finding: report, go on
            if len(errors) < 5:
                errors.append(f"frame {i}: {type(exc).__name__}: {exc} ({kw})")
            fig.lost += 0
        fig.cycles += 1
    pipe.stop()
    c = pipe.decoders[0].counters.as_dict()
    parts = sum(v for k, v in c.items() if k != "frames")
    fig.notes.append(f"kinds {kinds}")
    fig.notes.append(f"decoder counters {c}")
    fig.durable = len(records)
    fig.delivered = len(records)
    seqs = [r["seq"] for r in records]
    if seqs != list(range(1, len(seqs) + 1)):
        fig.fail("record seqs not 1..N")
    if c["frames"] != frames:
        fig.fail(f"decoder saw {c['frames']} frames of {frames} fed")
    if parts != c["frames"]:
        fig.fail(f"counters add up to {parts}, not {c['frames']}")
    if errors:
        fig.fail(f"{len(errors)}+ exceptions: {errors}")
    if c["error_frames"] != kinds["error"]:
        fig.finding(f"{kinds['error'] - c['error_frames']} of {kinds['error']} error frames "
                    "were decoded as data: their id (the error class bits) equals a mapped "
                    "id (FrameDecoder.decode checks is_error_frame only for unmapped ids)")
    if c["remote_frames"] != kinds["remote"]:
        fig.finding(f"remote frames fed {kinds['remote']}, counted {c['remote_frames']}")
    types: dict[str, int] = {}
    for r in records:
        types[r["type"]] = types.get(r["type"], 0) + 1
    fig.notes.append(f"records by type {types}")
    return fig


# -- 6 hostile commands ----------------------------------------------------------------

def hostile_payloads(rng: random.Random, n_random: int) -> list[bytes]:
    """The shapes of tests/test_hostile_commands.py plus random bytes and random JSON."""
    base = [
        b"[" * 1000 + b"]" * 1000, b'{"a":' * 1000 + b"1" + b"}" * 1000,
        b'{"x": "' + b"[" * 5000 + b'"}', b"9" * 5000,
        b'{"cmd": "report.period", "sig": NaN}', b'{"cmd": Infinity}', b"\xff" * 100,
        b"", b"null", b"[]", b"{}", b'"string"', b"1e999999", b"-0", b"\x00" * 64,
        b'{"cmd": 1, "vin": [], "nonce": {}, "issued": 2, "expires": null, "args": "x",'
        b' "key_id": 3, "sig": "AAAA"}',
        json.dumps({"cmd": "records.resend", "vin": VIN, "nonce": "n", "issued": 0,
                    "expires": 1e300, "args": {"first": 1, "last": 10 ** 12},
                    "key_id": "x", "sig": "A" * 88}).encode(),
        b"{" * (60 * 1024),
    ]
    for _ in range(n_random):
        if rng.random() < 0.5:
            base.append(rng.randbytes(rng.randrange(1, 4096)))
        else:
            base.append(json.dumps({rng.choice(["cmd", "vin", "sig", "args", "x"]):
                                    rng.choice([None, 1, "a" * rng.randrange(100), [], {},
                                                2 ** 70, -1.5])
                                    for _ in range(rng.randrange(1, 6))}).encode())
    return base


def hostile(tmp: Path, pki: BrokerPKI, n_random: int, rng: random.Random) -> Figures:
    """Each payload published on a command topic of the live agent (QoS 1): it keeps
    running, records one agent.command_rejected per payload, answers a signed command."""
    import paho.mqtt.client as mqtt

    from agent.uplink.commands import MAX_PAYLOAD, sign_command

    fig = Figures("6 hostile commands")
    bench = Bench(tmp / "hostile", pki, extra="")
    payloads = [p for p in hostile_payloads(rng, n_random) if len(p) <= MAX_PAYLOAD]
    agent = bench.agent().start()
    cert = pki.client("hostile-sender")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="hostile-sender",
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(cert.ca), certfile=str(cert.cert), keyfile=str(cert.key))
    try:
        if not agent.wait_running(60):
            fig.fail("agent not running")
            return fig
        wait_until(lambda: bench.backend.summary(VIN).records > 0, 30)
        client.connect(bench.broker.host, bench.broker.port)
        client.loop_start()
        topics = ["report.period", "config.get", "ota.campaign", "ota.consent",
                  "records.resend", "ecu.inventory", "no.such.command"]
        infos = []
        for i, payload in enumerate(payloads):
            infos.append(client.publish(f"icv/{VIN}/cmd/{topics[i % len(topics)]}", payload,
                                        qos=1))
            fig.cycles += 1
        for info in infos:
            info.wait_for_publish(10)
        good = sign_command(bench.backend_priv, VIN, "config.get", {})
        client.publish(f"icv/{VIN}/cmd/config.get", good, qos=1).wait_for_publish(10)

        def rejected() -> int:
            return bench.backend.summary(VIN).types.get("agent.command_rejected", 0)

        since = time.monotonic()
        wait_until(lambda: rejected() >= len(payloads)
                   and bench.backend.summary(VIN).responses > 0, 90, every=0.2)
        fig.drain_s = time.monotonic() - since
        alive = agent.proc is not None and agent.proc.poll() is None
        if not alive:
            fig.fail("the agent died")
        n = rejected()
        fig.notes.append(f"{len(payloads)} hostile payloads sent, {n} agent.command_rejected "
                         f"recorded, signed command answered: "
                         f"{bench.backend.summary(VIN).responses > 0}")
        if n != len(payloads):
            fig.fail(f"{len(payloads) - n} hostile payloads without a rejection record")
        if agent.stop(signal.SIGTERM, timeout=60) != 0:
            fig.fail("agent did not exit 0 on SIGTERM")
        final = bench.seq()
        wait_until(lambda: (bench.backend.summary(VIN).last_seq or 0) >= final, 30)
        account(fig, bench, final)
        if "Traceback" in agent.log_text():
            fig.fail("Traceback in the agent log")
    finally:
        client.loop_stop()
        client.disconnect()
        agent.kill()
        bench.close()
    return fig


# -- 7 wall-clock jumps ----------------------------------------------------------------

def find_libfaketime() -> str | None:
    for p in ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1",
              "/usr/lib/aarch64-linux-gnu/faketime/libfaketime.so.1",
              "/usr/lib/faketime/libfaketime.so.1"):
        if os.path.exists(p):
            return p
    return None


EXPECTED_DURATIONS = {"driver.disengagement": "duration_s", "cda.mrm": "duration_s",
                      "cda.deactivated": "duration_s"}


def clock_jumps(tmp: Path, pki: BrokerPKI, trace: Path) -> Figures:
    """The agent under libfaketime (wall clock only, monotonic untouched, as an NTP step
    does it): +300 s, then -120 s, then +3600 s while the drive is replayed in real time.
    Durations in its records must match the trace's own (``icv-agent analyze``)."""
    fig = Figures("7 wall-clock jumps (libfaketime)")
    lib = find_libfaketime()
    if lib is None:
        fig.ok = False
        fig.notes.append("SKIPPED: libfaketime not installed (apt-get install faketime)")
        return fig
    offset_file = tmp / "clock" / "faketime.rc"
    offset_file.parent.mkdir(parents=True, exist_ok=True)
    offset_file.write_text("+0s\n")
    env = {"LD_PRELOAD": lib, "FAKETIME_TIMESTAMP_FILE": str(offset_file),
           "FAKETIME_NO_CACHE": "1", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
           "DONT_FAKE_MONOTONIC": "1"}
    expected = offline_durations(trace)
    bench = Bench(tmp / "clock", pki, env=env, extra="")
    agent = bench.agent().start()
    try:
        if not agent.wait_running(60):
            fig.fail("agent not running under libfaketime")
            return fig
        wait_until(lambda: bench.backend.summary(VIN).records > 0, 30)
        replay = Replayer(trace, bench.group, 1.0, deadline_s=120)
        proc = subprocess.Popen(replay.cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        jumps = [(8, "+300s"), (18, "-120s"), (30, "+3600s")]
        t0 = time.monotonic()
        for at, off in jumps:
            time.sleep(max(0.0, at - (time.monotonic() - t0)))
            offset_file.write_text(off + "\n")
            fig.cycles += 1
        proc.wait(120)
        probe = subprocess.run([sys.executable, "-c", "import time; print(time.time())"],
                               env={**os.environ, **env}, capture_output=True, text=True)
        real = time.time()
        time.sleep(12)                               # accident.record: 10 s after
        since = time.monotonic()
        wait_until(bench.caught_up, 60, every=0.2)
        fig.drain_s = time.monotonic() - since
        agent.stop(signal.SIGTERM, timeout=60)
        final = bench.seq()
        wait_until(lambda: (bench.backend.summary(VIN).last_seq or 0) >= final, 30)
        account(fig, bench, final)
        con = sqlite3.connect(bench.backend.store.path)
        got = [json.loads(p) for (p,) in con.execute(
            "SELECT payload FROM records WHERE vin = ? ORDER BY seq", (VIN,))]
        con.close()
        live: dict[str, float] = {}
        for r in got:
            key = EXPECTED_DURATIONS.get(r["type"])
            if key and key in r["data"]:
                live[r["type"]] = r["data"][key]
        with contextlib.suppress(ValueError):
            fig.notes.append(f"wall clock under libfaketime after the jumps: "
                             f"{float(probe.stdout) - real:+.0f} s from the real one")
        fig.notes.append(f"durations offline {expected}, live under jumps {live}")
        for type_, want in expected.items():
            have = live.get(type_)
            if have is None:
                fig.fail(f"no {type_} in the live run")
            elif abs(have - want) > 2.0:
                fig.fail(f"{type_} duration {have} s, trace says {want} s (stretched)")
        ts = [r["ts"] for r in got]
        fig.notes.append(f"ts of first/last record: {ts[0] if ts else None} / "
                         f"{ts[-1] if ts else None}")
    finally:
        agent.kill()
        bench.close()
    return fig


def offline_durations(trace: Path) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "-c",
                          str(ROOT / "config" / "bench.toml"), str(trace)], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    found: dict[str, float] = {}
    for line in out.splitlines():
        r = json.loads(line)
        key = EXPECTED_DURATIONS.get(r["type"])
        if key and key in r["data"]:
            found[r["type"]] = r["data"][key]
    return found


# -- report ----------------------------------------------------------------------------

def table(figs: list[Figures]) -> str:
    head = ("| class | cycles | records durable | delivered | lost | duplicates | "
            "time to drain | result |")
    rows = [head, "|" + "---|" * 8]
    for f in figs:
        drain = f"{f.drain_s:.1f} s" if f.drain_s is not None else "-"
        result = "ok" if f.ok else ("skipped" if any("SKIPPED" in n for n in f.notes)
                                    else "FAIL")
        if f.findings:
            result += f", {f.findings} finding{'s' if f.findings > 1 else ''}"
        rows.append(f"| {f.name} | {f.cycles:,} | {f.durable:,} | {f.delivered:,} | "
                    f"{f.lost} | {f.duplicates} | {drain} | {result} ({f.seconds:.0f} s) |")
    return "\n".join(rows)


def notes(figs: list[Figures]) -> str:
    out = []
    for f in figs:
        out.append(f"- **{f.name}**")
        out.extend(f"  - {n}" for n in f.notes)
    return "\n".join(out)


def machine() -> str:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    load = os.getloadavg()
    return (f"{platform.node()}: {platform.system()} {platform.release()}, {os.cpu_count()} "
            f"CPUs ({cpu}), Python {platform.python_version()}, load average at the end "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f}")


CLASSES = ("power", "broker", "outage", "disk", "fuzz", "hostile", "clock")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="a ~3 minute run (smaller sizes)")
    ap.add_argument("--cycles", type=int, help="power-cut cycles (default 200, quick 25)")
    ap.add_argument("--kills", type=int, help="broker kills (default 30, quick 8)")
    ap.add_argument("--outage", type=float, help="outage seconds (default 60, quick 15)")
    ap.add_argument("--frames", type=int, help="fuzzed frames (default 1000000, quick 100000)")
    ap.add_argument("--hostile", type=int, help="random hostile payloads (default 200, quick 40)")
    ap.add_argument("--only", nargs="*", choices=CLASSES, help="run only these classes")
    ap.add_argument("--seed", type=int, default=20250101)
    ap.add_argument("--write", type=Path, help="write the results section to this file "
                                               "(RELIABILITY.md)")
    args = ap.parse_args(argv)
    # The backend's reconnect warnings while a broker is down on purpose are expected.
    logging.getLogger("hil.backend").setLevel(logging.CRITICAL)
    q = args.quick
    cycles = args.cycles or (25 if q else 200)
    kills = args.kills or (8 if q else 30)
    seconds = args.outage or (15.0 if q else 60.0)
    frames = args.frames or (100_000 if q else 1_000_000)
    n_hostile = args.hostile if args.hostile is not None else (40 if q else 200)
    only = set(args.only or CLASSES)
    rng = random.Random(args.seed)
    started = datetime.now(timezone.utc)
    t_start = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix="icv-soak-"))
    figs: list[Figures] = []
    try:
        pki = BrokerPKI(tmp / "pki")
        trace = make_trace(tmp)
        plan: list[tuple[str, Callable[[], Figures]]] = [
            ("power", lambda: power_cuts(tmp, pki, trace, cycles, rng)),
            ("broker", lambda: broker_kills(tmp, pki, trace, kills, rng)),
            ("outage", lambda: outage(tmp, pki, trace, seconds)),
            ("disk", lambda: full_disk(tmp, pki, trace, 3.0)),
            ("fuzz", lambda: fuzz(tmp, frames, rng)),
            ("hostile", lambda: hostile(tmp, pki, n_hostile, rng)),
            ("clock", lambda: clock_jumps(tmp, pki, trace)),
        ]
        for name, run in plan:
            if name not in only:
                continue
            print(f"== {name} ...", flush=True)
            t0 = time.monotonic()
            try:
                fig = run()
            except Exception as exc:  # a class that crashes is a finding, not the end
                fig = Figures(name)
                fig.fail(f"{type(exc).__name__}: {exc}")
            fig.seconds = time.monotonic() - t0
            figs.append(fig)
            print(table([fig]).splitlines()[-1], flush=True)
            for n in fig.notes:
                print("   ", n, flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    total = time.monotonic() - t_start
    given = list(argv if argv is not None else sys.argv[1:])
    if "--write" in given:                      # make soak always passes it
        i = given.index("--write")
        del given[i:i + 2]
    command = "make soak" + (f" SOAK_ARGS='{' '.join(given)}'" if given else "")
    report = (f"Run {started:%Y-%m-%d %H:%M} UTC, {total / 60:.1f} min, seed {args.seed}; "
              f"command: `{command}`\n\nMachine: {machine()}\n\n{table(figs)}\n\n"
              f"Details:\n\n{notes(figs)}\n")
    print("\n" + report)
    if args.write:
        text = args.write.read_text() if args.write.exists() else ""
        marker = "<!-- soak results -->"
        head = text.split(marker)[0] if marker in text else text
        args.write.write_text(head.rstrip() + f"\n\n{marker}\n\n" + report)
    failed = [f for f in figs if not f.ok and not any("SKIPPED" in n for n in f.notes)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
