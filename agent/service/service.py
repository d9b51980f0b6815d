"""``icv-agent run``: buses -> pipeline -> journal -> uplink, as a systemd notify service.

Threads: one reader per bus (python-can ``recv``), the pipeline thread (this one: decode,
state, monitors, records, commands), the uplink (paho's network thread plus a sender
thread with its own SQLite connection). The pipeline never waits for the network; it
waits for frames with a timeout so freshness, ticks, health and the watchdog go on when
the buses are silent.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import queue
import signal
import threading
import time
from typing import Any

import psutil

from agent import __version__
from agent.config import AgentConfig
from agent.ingest.buses import BusLink, BusReader
from agent.journal.outbox import Journal
from agent.journal.recovery import open_state_db
from agent.monitors import ALL
from agent.pipeline import Pipeline, TimeBase
from agent.recorder import Recorder
from agent.records.chain import RecordChain
from agent.records.keys import DeviceKey
from agent.security import EndpointPolicy, SecurityLog, allowed_endpoints, install
from agent.service.health import system_figures
from agent.service.notify import Notifier
from agent.timefmt import iso_ms

log = logging.getLogger(__name__)

STATE_DB = "state.db"
# Housekeeping (freshness of polled buses, monitor ticks, commands, health, watchdog) when
# no frame comes: a quiet bus, or a BCM socket where the kernel keeps unchanged frames away.
# While frames come, the pipeline ticks on their data time every TICK_S anyway, so a slow
# idle period costs no detection, only a quiet gateway's wake-ups (20/s cost more than all
# the change notices of a drive). Commands wait at most this long.
HOUSEKEEPING_S = 0.5
STATUS_EVERY_S = 5.0
INLINE_BATCH = 512        # frames read before the loop looks at the clock again
BACKLOG_LIMIT = 50_000    # queued frames beyond which the watchdog is no longer fed


class Service:
    def __init__(self, cfg: AgentConfig, *, notifier: Notifier | None = None,
                 stop: StopRequest | None = None):
        self.cfg = cfg
        self._stop_request = stop
        self.notifier = notifier or Notifier()
        self.state_dir = cfg.state_dir
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.db_path = self.state_dir / STATE_DB
        self.db, self.quarantine = open_state_db(self.db_path)
        self.key = DeviceKey.load_or_create(cfg.key_path)
        self.chain = RecordChain(self.db, self.key, cfg.vehicle.vin)
        self.journal = Journal(self.db, cfg.journal)
        self.timebase = TimeBase("system")
        self.uplink: Any = None
        self.gate: Any = None
        self.frames: queue.SimpleQueue = queue.SimpleQueue()
        self.commands: queue.SimpleQueue = queue.SimpleQueue()
        # Records of the OTA thread, written by this (pipeline) thread like everything else.
        self.ota_records: queue.SimpleQueue = queue.SimpleQueue()
        self.ota: Any = None
        # GB 44495: one place for security events, and the endpoints the agent may reach.
        self.security = SecurityLog(cfg.security, on_count=self._count_security)
        self.endpoints = EndpointPolicy(allowed_endpoints(cfg), self.security)
        self._exposed_keys: set[str] = set()
        self.recorder = Recorder(self.db, self.chain, self.timebase.utc, "system",
                                 journal=self.journal, deliver=self._delivered,
                                 observe=self.security.observe)
        self.extras: dict[str, Any] = {}
        self.pipeline = Pipeline(cfg, self.recorder, self.timebase, ALL, extras=self.extras)
        # One bus (the usual gateway case): the pipeline thread reads it itself, no hand-off
        # per frame. Several buses: one reader thread each, feeding one queue.
        self.inline = BusLink(cfg.buses[0]) if len(cfg.buses) == 1 else None
        self.readers = [] if self.inline else [BusReader(i, setup, self.frames)
                                               for i, setup in enumerate(cfg.buses)]
        self.links = [self.inline] if self.inline else [r.link for r in self.readers]
        self._stop = stop.event if stop is not None else threading.Event()
        self.stop_reason = ""
        self.proc = psutil.Process()
        self.proc.cpu_percent(None)
        self.frames_fed = 0
        # A BCM bus reports silences itself; its messages are not polled for freshness.
        for setup, dec in zip(cfg.buses, self.pipeline.decoders, strict=True):
            dec.kernel_freshness = (setup.config.interface == "socketcan"
                                    and setup.config.receive == "bcm")
        self._watchdog_every = self.notifier.watchdog_interval()
        self._next_watchdog = 0.0
        self._next_status = time.monotonic() + STATUS_EVERY_S
        self._next_health = time.monotonic() + cfg.health.interval_s

    # -- wiring ------------------------------------------------------------------------
    def _setup_uplink(self) -> None:
        from agent.uplink.client import Uplink
        from agent.uplink.commands import CommandGate

        cfg = self.cfg
        up = cfg.uplink
        resolved = dataclasses.replace(
            up, ca=str(cfg.resolve(up.ca)) if up.ca else "",
            cert=str(cfg.resolve(up.cert)) if up.cert else "",
            key=str(cfg.resolve(up.key)) if up.key else "")
        self.gate = CommandGate.from_config(cfg.commands, self.db, cfg.vehicle.vin,
                                            resolve=cfg.resolve)
        self.gate.register("report.period", self._cmd_report_period)
        self.gate.register("records.resend", self._cmd_records_resend)
        self.gate.register("config.get", self._cmd_config_get)
        self.uplink = Uplink(resolved, cfg.vehicle.vin, self.db_path,
                             on_command=lambda name, payload: self.commands.put((name, payload)),
                             journal_config=cfg.journal, endpoints=self.endpoints,
                             security=self.security)

    def _setup_ota(self) -> None:
        """Campaigns, consent and ECU inventory on their own thread (agent.ota.campaign)."""
        from agent.ota.campaign import CampaignManager

        state = self.pipeline.state
        self.ota = CampaignManager.from_config(
            self.cfg, emit=lambda type_, data: self.ota_records.put((type_, data)),
            read_signal=state.value, extras=self.extras)
        if self.gate is not None:
            self.gate.register("ota.campaign", self._cmd_ota_campaign)
            self.gate.register("ota.consent", self._cmd_ota_consent)
            self.gate.register("ecu.inventory", self._cmd_ecu_inventory)

    def _cmd_ota_campaign(self, command: Any) -> dict[str, Any]:
        from agent.ota.campaign import CampaignError
        from agent.uplink.commands import CommandFailed

        try:
            return self.ota.submit(command.args)
        except CampaignError as exc:
            raise CommandFailed(str(exc)) from None

    def _cmd_ota_consent(self, command: Any) -> dict[str, Any]:
        from agent.ota.consent import ConsentError, parse_decision
        from agent.uplink.commands import CommandFailed

        try:
            decision = parse_decision(command.args, "backend", by=command.key_id)
        except ConsentError as exc:
            raise CommandFailed(str(exc)) from None
        if not self.ota.consent(decision):
            raise CommandFailed(f"no open offer for activity {decision.activity_id}")
        return {"activity_id": decision.activity_id, "decision": command.args["decision"]}

    def _cmd_ecu_inventory(self, command: Any) -> dict[str, Any]:
        return self.ota.request_inventory()

    def _drain_ota(self, t: float) -> None:
        records = self.ota_records
        while not records.empty():
            type_, data = records.get_nowait()
            self.recorder.record(type_, data, t)

    def _drain_security(self, t: float) -> None:
        for type_, data in self.security.drain():
            self.recorder.record(type_, data, t)

    def _count_security(self, kind: str) -> None:
        """Every security event counted in its quarter and year (the period report)."""
        from zoneinfo import ZoneInfo

        from agent.monitors.stats import quarter_of, year_of
        from agent.security import COUNTS_KEY, count_in_periods

        tz, now = ZoneInfo(self.cfg.vehicle.timezone), time.time()
        periods = (quarter_of(now, tz)[0], year_of(now, tz)[0])
        self.recorder.persist(COUNTS_KEY, count_in_periods(
            self.recorder.load(COUNTS_KEY), kind, periods))

    def _check_key_files(self) -> None:
        """A private key that became readable by others while running: a security event
        (at start the agent refuses such a key; this catches a later chmod)."""
        from agent.keyfiles import key_file_exposed

        cfg = self.cfg
        paths = [("device", cfg.key_path)]
        if cfg.uplink.key:
            paths.append(("uplink", cfg.resolve(cfg.uplink.key)))
        if cfg.ota.uptane.client_key:
            paths.append(("ota", cfg.resolve(cfg.ota.uptane.client_key)))
        for what, path in paths:
            problem = key_file_exposed(path)
            if problem and str(path) not in self._exposed_keys:
                self.security.report("key_permission", {"key": what, "path": str(path),
                                                        "problem": problem})
            (self._exposed_keys.add if problem else self._exposed_keys.discard)(str(path))

    def _delivered(self, records: list[dict[str, Any]]) -> None:
        if self.uplink is not None:
            self.uplink.notify()

    # -- commands (run on the pipeline thread: one writer of the record chain) --------
    def _handle_command(self, name: str, payload: bytes, t: float) -> None:
        try:
            outcome = self.gate.handle(name, payload)
        except Exception as exc:  # no payload on any topic may stop the pipeline
            log.exception("command %r: rejected after an internal error", name[:60])
            self.recorder.record("agent.command_rejected", {
                "cmd": name[:120], "reason": "internal", "detail": type(exc).__name__,
                "nonce": None, "key_id": None}, t)
            return
        if not outcome.accepted:
            self.recorder.record("agent.command_rejected", outcome.rejection_data(), t)
        else:
            self.recorder.record("agent.command", {"cmd": outcome.name, "nonce": outcome.nonce,
                                                   "key_id": outcome.key_id,
                                                   "ok": bool(outcome.response and
                                                              outcome.response.get("ok"))}, t)
        if outcome.response is not None and self.uplink is not None:
            self.uplink.respond(outcome.name, outcome.response)

    def _cmd_report_period(self, command: Any) -> dict[str, Any]:
        """The Att.3 二 contribution of this vehicle for ``args.period``; also sent as a
        ``stats.period`` record ("at each period end and on request")."""
        from agent.monitors.stats import CLOSED_KEY, OPEN_KEY
        from agent.reports.period import check_period, find_period, period_report
        from agent.reports.store import ReportError
        from agent.security import COUNTS_KEY, period_counts
        from agent.uplink.commands import CommandFailed

        try:
            period = check_period(str(command.args.get("period", "")))
            data, status, source = find_period(
                period, closed=self.recorder.load(CLOSED_KEY),
                open_totals=self.recorder.load(OPEN_KEY), records=[])
        except (ValueError, ReportError) as exc:
            raise CommandFailed(str(exc)) from None
        self.recorder.record("stats.period", {**data, "on_request": True, "status": status},
                             time.monotonic())
        return period_report(period, self.cfg.vehicle.vin, data, status, source,
                             security=period_counts(self.recorder.load(COUNTS_KEY), period))

    def _cmd_records_resend(self, command: Any) -> dict[str, Any]:
        """The backend lost records (a broker crash): send ``from_seq..to_seq`` again from
        the archive of sent records, behind all live data, on the ``resent`` topics."""
        from agent.uplink.commands import CommandFailed

        first, last = command.args.get("from_seq"), command.args.get("to_seq")
        if not (isinstance(first, int) and isinstance(last, int)
                and not isinstance(first, bool) and not isinstance(last, bool)
                and 1 <= first <= last):
            raise CommandFailed("from_seq and to_seq: integers, 1 <= from_seq <= to_seq")
        queued, missing = self.journal.resend(first, last)
        if self.uplink is not None:
            self.uplink.notify()
        return {"from_seq": first, "to_seq": last, "queued": queued, "not_kept": missing}

    def _cmd_config_get(self, command: Any) -> dict[str, Any]:
        return masked_config(self.cfg)

    # -- lifecycle ---------------------------------------------------------------------
    def request_stop(self, reason: str) -> None:
        self.stop_reason = reason
        self._stop.set()

    def run(self) -> int:
        cfg = self.cfg
        t = time.monotonic()
        self.pipeline.start(t)
        if self.quarantine is not None:
            self.recorder.record("journal.quarantined", self.quarantine.record_data(), t)
        self.recorder.record("agent.started", {
            "version": __version__, "pid": os.getpid(),
            "buses": [{"name": b.name, "interface": b.config.interface,
                       "channel": b.config.channel, "ids": len(b.plans)}
                      for b in cfg.buses],
            "monitors": [m.name for m in self.pipeline.monitors],
            "monitors_off": self.pipeline.off,
            "key": self.key.fingerprint,
            "journal_depth": {str(k): v for k, v in self.journal.depth().items()}}, t)
        self.recorder.flush()
        install(self.endpoints, self.security)
        if cfg.uplink.enabled:
            self._setup_uplink()
            self.uplink.start()
        if cfg.ota.enabled:
            self._setup_ota()
            self.ota.start()
        for r in self.readers:
            r.start()
        if self.inline is not None:
            first = self.inline.poll(0.0)
            if first is not None:
                self.pipeline.feed(0, first[0], first[1])
                self.frames_fed += 1
        for link in self.links:
            link.opened.wait(5.0)
        opened = sum(link.counters.connected for link in self.links)
        self.notifier.ready(self.status_line())
        log.info("running: %d/%d buses open", opened, len(self.links))
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _loop(self) -> None:
        """Frames as they come; housekeeping (freshness, ticks, commands, OTA records,
        health, watchdog) at its period, never per frame."""
        frames = self.frames
        feed = self.pipeline.feed
        poll = self.inline.poll if self.inline is not None else None
        next_housekeeping = 0.0
        # Never slower than the systemd watchdog or the health records ask for.
        period = min(HOUSEKEEPING_S, self.cfg.health.interval_s,
                     self._watchdog_every if self._watchdog_every is not None else math.inf)
        while not self._stop.is_set():
            behind = False
            wait = min(period, max(0.0, next_housekeeping - time.monotonic()))
            if poll is not None:
                item = poll(wait)
                n = 0
                while item is not None:  # what is waiting, then back to housekeeping
                    feed(0, item[0], item[1])
                    n += 1
                    if n >= INLINE_BATCH:
                        behind = True
                        break
                    item = poll(0.0)
                self.frames_fed += n
            else:
                try:
                    idx, msg, t = frames.get(timeout=wait) if wait > 0 else \
                        frames.get_nowait()
                except queue.Empty:  # idle: once per housekeeping, not per frame
                    pass
                else:
                    feed(idx, msg, t)
                    n = 1
                    while n < INLINE_BATCH and not frames.empty():  # one consumer: no race
                        idx, msg, t = frames.get_nowait()
                        feed(idx, msg, t)
                        n += 1
                    self.frames_fed += n
                    behind = not frames.empty()
            now = time.monotonic()
            if now >= next_housekeeping:
                next_housekeeping = now + period
                self._housekeeping(now, behind)

    def _housekeeping(self, now: float, behind: bool = False) -> None:
        # Data time moves to "now" only once the frames received before now are in: while
        # the agent works off a backlog (a slow core, a stall), freshness and monitor ticks
        # stay at the time of the last frame, or every message would look stale.
        pipeline = self.pipeline
        if not behind or pipeline.now is None:
            pipeline.advance(now)
        commands = self.commands
        while not commands.empty():
            name, payload = commands.get_nowait()
            self._handle_command(name, payload, now)
        self._drain_ota(now)
        self._drain_security(now)
        for link in self.links:
            lost = link.overrun(now)
            if lost is not None:
                self.recorder.record("bus.overrun", self._overrun_data(link, *lost), now)
        if now >= self._next_health:
            self._next_health = now + self.cfg.health.interval_s
            self._check_key_files()
            self._drain_security(now)
            self.recorder.record("agent.health", self.health(), now)
        self.recorder.flush()
        if self._watchdog_every is not None and now >= self._next_watchdog:
            # Only from this loop, and only while it keeps up with the buses: a stuck or
            # hopelessly late pipeline stops the pings and systemd restarts the agent.
            if self.frames.qsize() < BACKLOG_LIMIT:
                self.notifier.watchdog()
            self._next_watchdog = now + self._watchdog_every
        if now >= self._next_status:
            self._next_status = now + STATUS_EVERY_S
            self.notifier.status(self.status_line())

    def _overrun_data(self, link: BusLink, dropped: int, since: float | None,
                      until: float | None) -> dict[str, Any]:
        """What a ``bus.overrun`` record says: frames lost in the kernel's receive queue,
        and the receive times of the last frame before and the first after the loss."""
        utc = self.timebase.utc
        return {"bus": link.setup.name, "receive": link.setup.config.receive,
                "dropped": dropped, "dropped_total": link.counters.dropped,
                "after": iso_ms(utc(since)) if since is not None else None,
                "before": iso_ms(utc(until)) if until is not None else None}

    def _shutdown(self) -> None:
        if not self.stop_reason and self._stop_request is not None:
            self.stop_reason = self._stop_request.reason
        self.notifier.stopping(f"stopping ({self.stop_reason or 'end'})")
        for r in self.readers:
            r.stop()
        t = time.monotonic()
        if self.ota is not None:
            self.ota.stop()
            self._drain_ota(t)
        self._drain_security(t)
        install(None, None)
        self.pipeline.stop(t)
        self.recorder.record("agent.stopped", {"reason": self.stop_reason or "end",
                                               "frames": self.frames_fed}, t)
        self.recorder.flush()
        if self.uplink is not None:
            self.uplink.wait_idle(2.0)
            self.uplink.stop()
        for r in self.readers:
            r.join(2.0)
        if self.inline is not None:
            self.inline.close()
        self.db.close()
        self.notifier.close()

    # -- observability -----------------------------------------------------------------
    def counters(self) -> dict[str, Any]:
        buses = {}
        for link, dec in zip(self.links, self.pipeline.decoders, strict=True):
            link.refresh()
            buses[link.setup.name] = {**link.counters.as_dict(), **dec.counters.as_dict(),
                                      "receive": link.setup.config.receive}
        out: dict[str, Any] = {
            "buses": buses,
            "records": dict(self.recorder.counts),
            "records_rejected": self.recorder.rejected,
            "journal": {"depth": {str(k): v for k, v in self.journal.depth().items()},
                        "bytes": self.journal.bytes_used(), "held": self.journal.held,
                        "write_failures": self.journal.write_failures,
                        "floor_held": self.journal.floor_held},
        }
        if self.uplink is not None:
            out["uplink"] = self.uplink.stats()
        if self.gate is not None:
            out["commands"] = {"accepted": self.gate.accepted, "rejected": self.gate.rejected}
        out["security"] = self.security.stats()
        return out

    def health(self) -> dict[str, Any]:
        return {**system_figures(self.state_dir, self.proc), "counters": self.counters()}

    def status_line(self) -> str:
        frames = sum(link.counters.received for link in self.links)
        buses_up = sum(link.counters.connected for link in self.links)
        depth = sum(self.journal.depth().values())
        up = self.uplink.state if self.uplink is not None else "off"
        return (f"buses {buses_up}/{len(self.links)} up, {frames} frames, "
                f"{sum(self.recorder.counts.values())} records, outbox {depth}, uplink {up}")


SECRET_KEYS = {"key", "cert", "password", "secret", "token", "backend_keys"}


def masked_config(cfg: AgentConfig) -> dict[str, Any]:
    """The config as the backend may see it: secrets (and paths to them) masked."""
    def mask(obj: Any, key: str = "") -> Any:
        if dataclasses.is_dataclass(obj):
            return {f.name: mask(getattr(obj, f.name), f.name)
                    for f in dataclasses.fields(obj) if f.init}
        if isinstance(obj, dict):
            return {k: mask(v, k) for k, v in obj.items()}
        if isinstance(obj, list):
            return [mask(v, key) for v in obj]
        if key in SECRET_KEYS and obj:
            return "***"
        return obj

    return mask(cfg)


class StopRequest:
    """SIGTERM/SIGINT at any moment, even before the service exists, means a clean stop."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.reason = ""

    def install(self) -> StopRequest:
        def on_signal(signum: int, _frame: Any) -> None:
            self.reason = signal.Signals(signum).name
            self.event.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        return self


def run(cfg: AgentConfig, stop: StopRequest | None = None) -> int:
    stop = stop or StopRequest().install()
    service = Service(cfg, stop=stop)
    return service.run()

