"""The OTA campaign flow, on its own thread: verify -> download -> consent -> safe state ->
flash each ECU -> read back -> history -> tell the user.

``ota.campaign`` (signed command) hands a ``Campaign`` to ``CampaignManager.submit``; the
pipeline thread never waits for it. Every step becomes a record through ``emit(type,
data)`` (the service queues them to the pipeline thread, the only writer of the record
chain); each carries the ``activity_id``. Terminal records: ``ota.completed``,
``ota.failed`` (``reason``), ``ota.rejected`` (``threat``) and ``ota.not_offered``.

The active campaign and its phase are persisted (kv ``ota.campaign.active``). After a
restart a campaign that had not started flashing resumes (``ota.resumed``: verified
again, the same offer and consent deadline, a consent already given still holds); one
interrupted while flashing ends with ``ota.failed`` reason ``interrupted`` and the
versions read from the ECU. A declined campaign (kv ``ota.declined``, per campaign name)
is not offered again until its ``version`` changes. A consent counts only as the answer
to the open offer (``agent.ota.consent.Offer``: activity, campaign, offer nonce, in
time); any other is ``ota.consent_rejected`` with the reason.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from agent.ota.consent import (
    ConsentInbox,
    Decision,
    HmiAdapter,
    Offer,
    RejectLimiter,
    open_offer,
    save_offer,
)
from agent.ota.history import OtaHistory
from agent.ota.inventory import EcuBuses, Inventory, software_versions
from agent.ota.preconditions import SafeState
from agent.ota.settings import CampaignSettings, EcuConfig, OtaConfig
from agent.ota.uds import FlashSession, PreconditionViolated, ProgressEvery
from agent.ota.uds.versions import parse_did_keys
from agent.ota.uptane import EcuInstalled, FloorTime, UpdateRejected, UptaneClient
from agent.ota.uptane.time import load_public_key
from agent.statestore import StateDB
from agent.timefmt import iso_ms

log = logging.getLogger(__name__)

ACTIVE_KEY = "ota.campaign.active"
DECLINED_KEY = "ota.declined"
UPGRADES_SHOWN = 20          # history entries given to accident records

Emit = Callable[[str, dict[str, Any]], None]
Reader = Callable[[str], Any]


class CampaignError(ValueError):
    """The ``ota.campaign`` arguments cannot be used, or the agent cannot take it now."""


iso = iso_ms   # one formatter for every timestamp (agent.timefmt)


@dataclass
class Campaign:
    """What the backend sends and the user is told (regulation §2)."""

    activity_id: str                      # unique per OTA activity
    version: str                          # software (set) version it installs
    purpose: str
    changes: str
    duration_s: float                     # estimated duration of the installation
    unavailable_functions: list[str]
    campaign: str = ""                    # stable name across versions (default: activity)
    recall: bool = False
    recall_number: str = ""
    ecus: list[str] = field(default_factory=list)   # informative; the Director decides
    # The change permit for an update that touches type-approval parameters (notice §(七),
    # GB 44496 SWIN): its number, as the signed campaign states it; "" when there is none.
    type_approval_permit: str = ""

    @classmethod
    def from_args(cls, args: Any) -> Campaign:
        if not isinstance(args, dict):
            raise CampaignError("arguments: expected an object")

        def text(key: str, required: bool = True, limit: int = 2000) -> str:
            value = args.get(key, "")
            if not isinstance(value, str) or (required and not value.strip()):
                raise CampaignError(f"{key}: expected a non-empty string")
            if len(value) > limit:
                raise CampaignError(f"{key}: longer than {limit} characters")
            return value

        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(args) - known)
        if unknown:
            raise CampaignError(f"unknown argument(s): {', '.join(unknown)}")
        duration = args.get("duration_s")
        if not isinstance(duration, (int, float)) or isinstance(duration, bool) \
                or not 0 < duration <= 86400:
            raise CampaignError("duration_s: expected a number of seconds (0, 86400]")
        functions = args.get("unavailable_functions")
        if not isinstance(functions, list) or not all(isinstance(f, str) for f in functions):
            raise CampaignError("unavailable_functions: expected a list of strings")
        ecus = args.get("ecus", [])
        if not isinstance(ecus, list) or not all(isinstance(e, str) for e in ecus):
            raise CampaignError("ecus: expected a list of ECU names")
        recall = args.get("recall", False)
        if not isinstance(recall, bool):
            raise CampaignError("recall: expected true/false")
        number = text("recall_number", required=recall, limit=64)
        activity = text("activity_id", limit=128)
        return cls(activity, text("version", limit=128), text("purpose"), text("changes"),
                   float(duration), list(functions), text("campaign", False, 128) or activity,
                   recall, number, list(ecus), text("type_approval_permit", False, 128))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Resume:
    """What a restarted agent knows of a campaign it had not finished."""

    phase: str
    deadline: float | None = None
    consent: dict[str, Any] | None = None
    received_at: float = 0.0


class Stopped(Exception):
    """The agent is stopping; the campaign state stays persisted for the next start."""


class CampaignManager:
    """Owns the OTA thread. ``submit``, ``consent`` and ``request_inventory`` are thread-safe
    and return at once."""

    def __init__(self, *, vin: str, ecus: list[EcuConfig], buses: list[Any], ota: OtaConfig,
                 settings: CampaignSettings, db_path: Path, config_dir: Path, emit: Emit,
                 read_signal: Reader, extras: dict[str, Any] | None = None,
                 hmi: HmiAdapter | None = None, secure_time: Any = None,
                 download_dir: Path | None = None):
        self.vin = vin
        self.ecus = {e.name: e for e in ecus}
        self.buses = buses
        self.ota = ota
        self.settings = settings
        self.db_path = Path(db_path)
        self.config_dir = Path(config_dir)
        self.emit = emit
        self.read_signal = read_signal
        self.extras = extras if extras is not None else {}
        self.hmi = hmi
        self.secure_time = secure_time
        self.download_dir = download_dir
        self.db: StateDB | None = None
        self.history: OtaHistory | None = None
        self.inventory: Inventory | None = None
        self.inbox: ConsentInbox | None = None
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._consents: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._busy: str | None = None          # activity id queued or running
        self._offer: Offer | None = None       # the offer whose answer is awaited
        self._rejections = RejectLimiter()
        self._inbox_swept = 0.0
        self._seen: set[str] = set()

    @classmethod
    def from_config(cls, cfg: Any, emit: Emit, read_signal: Reader,
                    extras: dict[str, Any] | None = None,
                    settings: CampaignSettings | None = None) -> CampaignManager:
        """From an ``AgentConfig`` (the HMI adapter as its ``[ota.extra.hmi]`` says)."""
        settings = settings or cfg.ota.extra
        manager = cls(vin=cfg.vehicle.vin, ecus=list(cfg.ecu), buses=list(cfg.bus),
                      ota=cfg.ota, settings=settings, db_path=cfg.state_dir / "state.db",
                      config_dir=cfg.path.parent, emit=emit, read_signal=read_signal,
                      extras=extras)
        dl = Path(cfg.ota.uptane.download_dir).expanduser()
        manager.download_dir = dl if dl.is_absolute() else cfg.state_dir / dl
        hmi = settings.hmi
        if hmi.enabled and (hmi.host or cfg.uplink.enabled):
            up = cfg.uplink

            def path(value: str) -> str:
                return str(cfg.resolve(value)) if value else ""

            same = not hmi.host
            manager.hmi = HmiAdapter(
                hmi, cfg.vehicle.vin, manager.consent,
                host=hmi.host or up.host, port=hmi.port or (up.port if same else 1883),
                tls=up.tls if same else hmi.tls,
                ca=path(up.ca if same else hmi.ca), cert=path(up.cert if same else hmi.cert),
                key=path(up.key if same else hmi.key))
        return manager

    # -- API (any thread) ----------------------------------------------------------------

    def start(self) -> CampaignManager:
        self.db = StateDB(self.db_path)
        self.history = OtaHistory(self.db)
        self.inventory = Inventory(self.db, list(self.ecus.values()), self.buses)
        self.inbox = ConsentInbox(self.db)
        self._seen = {e["activity_id"] for e in self.history.entries()}
        active = self.db.get(ACTIVE_KEY)
        if active:
            self._busy = active["campaign"]["activity_id"]
        self._publish_extras()
        if self.hmi is not None:
            self.hmi.start()
        self._thread = threading.Thread(target=self._run, name="icv-ota", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("OTA thread did not stop within %.0f s", timeout)
        if self.hmi is not None:
            self.hmi.stop()

    def submit(self, args: Any) -> dict[str, Any]:
        """Validate and queue a campaign; ``CampaignError`` when it cannot be taken."""
        campaign = Campaign.from_args(args)
        with self._lock:
            if campaign.activity_id in self._seen:
                raise CampaignError(f"activity {campaign.activity_id} is already known")
            if self._busy is not None:
                raise CampaignError(f"activity {self._busy} is in progress")
            self._busy = campaign.activity_id
            self._seen.add(campaign.activity_id)
        self._work.put(("campaign", campaign, None))
        return {"activity_id": campaign.activity_id, "state": "received"}

    def consent(self, decision: Decision) -> bool:
        """A consent from the HMI or the backend; False (and ``ota.consent_rejected``)
        unless it answers the open offer (activity, campaign, nonce, in time)."""
        offer = self._offer
        reason = "no_offer" if offer is None else offer.refusal(decision)
        if reason is not None:
            self._reject(decision, reason, offer)
            return False
        self._consents.put(decision)
        return True

    def request_inventory(self) -> dict[str, Any]:
        self._work.put(("inventory", None, None))
        return {"queued": True, "current": self.inventory.current() if self.inventory else {}}

    def status(self) -> dict[str, Any]:
        assert self.db is not None
        offer = self._offer
        return {"active": self.db.get(ACTIVE_KEY),
                "awaiting_consent": offer.activity_id if offer else None}

    # -- the OTA thread ------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._recover()
            if self.settings.inventory_at_start and self.ecus:
                self._refresh("start")
        except Exception:
            log.exception("OTA start-up failed")
        while not self._stop.is_set():
            try:
                kind, item, resume = self._work.get(timeout=0.2)
            except queue.Empty:
                try:
                    self._sweep_inbox()         # early bench answers: refused at once
                except Exception:   # noqa: BLE001 - a bad row must not end the OTA thread
                    log.exception("OTA: consent inbox sweep failed")
                continue
            try:
                if kind == "campaign":
                    self._campaign(item, resume)
                elif kind == "inventory":
                    self._refresh("command")
            except Stopped:
                log.info("OTA: stopping; campaign state kept for the next start")
                return
            except Exception as exc:   # a bug must end the activity, not the thread
                log.exception("OTA: %s failed", kind)
                if kind == "campaign":
                    self._end(item, "failed", {"reason": "internal_error",
                                               "error": f"{type(exc).__name__}: {exc}"},
                              Resume("internal", received_at=time.time()))
            finally:
                if kind == "campaign":
                    self._release(item.activity_id)

    def _release(self, activity_id: str) -> None:
        with self._lock:
            if self._busy == activity_id:
                self._busy = None

    def _refresh(self, reason: str, names: list[str] | None = None) -> None:
        assert self.inventory is not None
        self.inventory.refresh(reason, self.emit, names)
        self._publish_extras()

    def _publish_extras(self) -> None:
        assert self.inventory is not None and self.history is not None
        self.extras["software_versions"] = software_versions(self.inventory)
        self.extras["software_upgrades"] = self.history.entries()[-UPGRADES_SHOWN:]

    def _recover(self) -> None:
        assert self.db is not None
        active = self.db.get(ACTIVE_KEY)
        if not active:
            return
        campaign = Campaign(**active["campaign"])
        resume = Resume(active["phase"], active.get("deadline"), active.get("consent"),
                        active.get("received_at", time.time()))
        if resume.phase == "installing":
            ecu = active.get("ecu")
            data: dict[str, Any] = {"reason": "interrupted", "phase": resume.phase,
                                    "ecu": ecu, "consent": resume.consent}
            if ecu in self.ecus:
                values = self._read_and_accept(ecu)
                data["versions"] = values
            log.error("OTA %s was interrupted while flashing %s", campaign.activity_id, ecu)
            self._end(campaign, "failed", data, resume)
            return
        self.emit("ota.resumed", {"activity_id": campaign.activity_id, "phase": resume.phase})
        self._work.put(("campaign", campaign, resume))

    def _persist(self, c: Campaign, phase: str, resume: Resume, **more: Any) -> None:
        assert self.db is not None
        resume.phase = phase
        self.db.put(ACTIVE_KEY, {"campaign": c.as_dict(), "phase": phase,
                                 "deadline": resume.deadline, "consent": resume.consent,
                                 "received_at": resume.received_at, **more})

    def _campaign(self, c: Campaign, resume: Resume | None) -> None:
        assert self.db is not None
        if resume is None:
            resume = Resume("received", received_at=time.time())
            self.emit("ota.received", c.as_dict())
        self._persist(c, "verifying", resume)
        declined = self.db.get(DECLINED_KEY, {}).get(c.campaign)
        if declined and declined.get("version") == c.version:
            self._end(c, "not_offered", {"reason": "declined", "version": c.version,
                                         "declined_activity": declined.get("activity_id"),
                                         "declined_at": declined.get("at")}, resume)
            return
        with EcuBuses(self.buses) as buses:
            self._run_campaign(c, resume, buses)

    def _run_campaign(self, c: Campaign, resume: Resume, buses: EcuBuses) -> None:
        assert self.inventory is not None
        before = self.inventory.refresh("campaign", self.emit, buses=buses)
        # What each ECU reports is part of its rollback floor (a fresh or wiped agent has
        # no install record): the verifier maps the versions to a signed release.
        installed = {name: EcuInstalled(values.get("F191", ""), versions=dict(values))
                     for name, values in before.items() if values is not None}
        try:
            client = self._uptane()
            targets = client.check_campaign(self.vin, installed)
            if not targets:
                self._end(c, "failed", {"reason": "nothing_assigned"}, resume)
                return
            named = {t.ecu_id for t in targets}
            if c.ecus and set(c.ecus) != named:
                self._end(c, "failed", {"reason": "campaign_mismatch", "campaign_ecus": c.ecus,
                                        "director_ecus": sorted(named)}, resume)
                return
            touching = sorted(t.ecu_id for t in targets
                              if t.ecu_id in self.ecus and self.ecus[t.ecu_id].approval_relevant)
            if touching and not c.type_approval_permit.strip():
                # Type-approval parameters change (the SWIN): only with a change permit.
                self._end(c, "failed", {"reason": "type_approval_permit_missing",
                                        "type_approval_ecus": touching}, resume)
                return
            self._persist(c, "downloading", resume)
            files = client.download_all(targets, self.download_dir)
        except UpdateRejected as exc:
            self._end(c, "rejected", {"threat": exc.threat, "message": exc.message,
                                      "ecu": exc.ecu_id, "repo": exc.repo, "role": exc.role},
                      resume)
            return
        except (OSError, ValueError) as exc:
            self._end(c, "failed", {"reason": "verification_unavailable",
                                    "error": str(exc)}, resume)
            return
        plan = [{"ecu": t.ecu_id, "target": t.path, "length": t.length,
                 "from": (before.get(t.ecu_id) or {}).get("F189"),
                 "to": t.versions.get("F189"),
                 "type_approval": t.ecu_id in touching} for t in targets]
        decision = self._ask(c, resume, plan)
        if decision is None:
            return
        safe = SafeState(self.ota, self.read_signal, self.settings.not_required)
        violation = safe.check()
        if violation is not None:
            self.emit("ota.precondition_failed", {"activity_id": c.activity_id,
                                                  "when": "before_start",
                                                  **violation.as_dict()})
            self._end(c, "failed", {"reason": "precondition", **violation.as_dict()}, resume)
            return
        done: list[dict[str, Any]] = []
        for target in targets:
            outcome = self._flash(c, resume, target, files[target.ecu_id], safe,
                                  before.get(target.ecu_id) or {}, buses, client)
            done.append(outcome["ecu_result"])
            if not outcome["ok"]:
                self._end(c, "failed", {**outcome["failure"], "ecus": done}, resume)
                self._refresh_after(buses)
                return
        self._end(c, "completed", {"ecus": done, "duration_s":
                                   round(time.time() - resume.received_at, 3)}, resume)
        self._refresh_after(buses)

    def _refresh_after(self, buses: EcuBuses) -> None:
        assert self.inventory is not None
        self.inventory.refresh("ota", self.emit, buses=buses)
        self._publish_extras()

    def _uptane(self) -> UptaneClient:
        assert self.db is not None
        cfg = self.ota.uptane
        clock = self.secure_time
        if clock is None:
            keys = [load_public_key(cfg.resolve(p, self.config_dir))
                    for p in cfg.time_public_keys]
            attestation = cfg.resolve(cfg.time_attestation, self.config_dir) \
                if cfg.time_attestation else None
            clock = FloorTime(self.db, attestation=attestation, keys=keys)
        return UptaneClient(cfg, self.db, clock, config_dir=self.config_dir)

    # -- consent ---------------------------------------------------------------------------

    def _ask(self, c: Campaign, resume: Resume, plan: list[dict[str, Any]]
             ) -> Decision | None:
        """The user's decision; None when the activity ended here (declined, timeout)."""
        assert self.db is not None
        if resume.consent is not None:           # given before a restart
            return Decision(**{k: v for k, v in resume.consent.items() if k != "decision"})
        first = resume.deadline is None
        if first:
            resume.deadline = time.time() + self.settings.consent_timeout_s
        offer = self._make_offer(c, resume.deadline)
        body = {"activity_id": c.activity_id, "campaign": c.campaign, "version": c.version,
                "purpose": c.purpose, "changes": c.changes,
                "estimated_duration_s": c.duration_s,
                "unavailable_functions": c.unavailable_functions, "recall": c.recall,
                "recall_number": c.recall_number, "ecus": plan,
                "type_approval_permit": c.type_approval_permit or None,
                "offer_nonce": offer.nonce, "offered_at": iso(offer.shown_at),
                "expires_at": iso(resume.deadline),
                "answer": {"hmi_topic": f"icv/{self.vin}/hmi/ota/consent",
                           "backend_command": "ota.consent",
                           "consent": {"activity_id": c.activity_id, "campaign": c.campaign,
                                       "offer_nonce": offer.nonce,
                                       "decision": "accept|decline"},
                           "cli": f"icv-agent ota consent {c.activity_id} --nonce "
                                  f"{offer.nonce} --accept"}}
        self._offer = offer                # before the offer goes out: answers may follow
        if first:
            self.emit("ota.consent_requested", body)
        self._persist(c, "awaiting_consent", resume)
        if self.hmi is not None:
            self.hmi.offer(body)
        try:
            decision = self._wait_consent(offer)
        finally:
            self._offer = None
            if not self._stop.is_set():    # stopping: the same offer is shown after restart
                save_offer(self.db, None)
                if self.hmi is not None:
                    self.hmi.clear_offer()
        if decision is None:
            self._end(c, "failed", {"reason": "consent_timeout",
                                    "expired_at": iso(resume.deadline)}, resume)
            return None
        resume.consent = decision.as_dict()
        self.emit("ota.consent", {**decision.as_dict(), "at": iso(decision.at)})
        if not decision.accepted:
            with self.db.transaction():
                declined = self.db.get(DECLINED_KEY, {})
                declined[c.campaign] = {"version": c.version, "activity_id": c.activity_id,
                                        "at": iso(decision.at)}
                self.db.put_in(DECLINED_KEY, declined)
            self._end(c, "failed", {"reason": "declined", "channel": decision.channel},
                      resume)
            return None
        self._persist(c, "consented", resume)
        return decision

    def _make_offer(self, c: Campaign, deadline: float) -> Offer:
        """A new offer (fresh nonce), or after a restart the one already shown: the user
        may be answering it on the screen right now."""
        assert self.db is not None and self.inbox is not None
        shown = open_offer(self.db)
        if shown is not None and shown.activity_id == c.activity_id \
                and shown.campaign == c.campaign and shown.expires_at == deadline:
            return shown
        offer = Offer.new(c.activity_id, c.campaign, deadline, self.inbox.mark())
        save_offer(self.db, offer)         # the bench CLI reads the nonce from here
        return offer

    def _wait_consent(self, offer: Offer) -> Decision | None:
        """The first consent that answers ``offer``; None when it expired. Every other
        consent met on the way is refused and recorded."""
        while True:
            if self._stop.is_set():
                raise Stopped()
            decision = self._sweep_inbox(offer)
            if decision is not None:
                return decision
            left = offer.expires_at - time.time()
            if left <= 0:
                return None
            try:
                decision = self._consents.get(timeout=min(left, self.settings.consent_poll_s))
            except queue.Empty:
                continue
            reason = offer.refusal(decision)      # queued for an offer that has ended?
            if reason is None:
                return decision
            self._reject(decision, reason, offer)

    def _sweep_inbox(self, offer: Offer | None = None) -> Decision | None:
        """Take the bench CLI's rows: the first that answers ``offer`` is returned, all
        others (no offer open, left before it, wrong nonce, a second answer) refused."""
        if self.inbox is None:
            return None
        now = time.monotonic()
        if offer is None and now - self._inbox_swept < self.settings.consent_poll_s:
            return None
        self._inbox_swept = now
        try:
            rows = self.inbox.take()
        except sqlite3.Error:               # locked or broken: try again next time
            log.exception("OTA: consent inbox not readable")
            return None
        chosen: Decision | None = None
        for row, decision in rows:
            reason = "no_offer" if offer is None else offer.refusal(decision, row)
            if reason is None and chosen is not None:
                reason = "already_answered"
            if reason is None:
                chosen = decision
            else:
                self._reject(decision, reason, offer)
        return chosen

    def _reject(self, decision: Decision, reason: str, offer: Offer | None) -> None:
        """``ota.consent_rejected``: a consent that answers no open offer (rate-limited)."""
        record, suppressed = self._rejections.allow(time.monotonic())
        log.log(logging.WARNING if record else logging.DEBUG,
                "OTA consent for %s via %s refused: %s", decision.activity_id,
                decision.channel, reason)
        if not record:
            return
        try:
            at = iso(decision.at)
        except (OverflowError, OSError, TypeError, ValueError):   # a hand-made inbox row
            at = str(decision.at)
        data: dict[str, Any] = {
            "activity_id": decision.activity_id, "channel": decision.channel,
            "decision": "accept" if decision.accepted else "decline", "reason": reason,
            "at": at, "by": decision.by, "campaign": decision.campaign,
            "open_activity": offer.activity_id if offer else None}
        if offer is not None and offer.activity_id == decision.activity_id:
            data["offered_at"] = iso(offer.shown_at)
        if suppressed:
            data["suppressed"] = suppressed
        self.emit("ota.consent_rejected", data)

    # -- flashing ------------------------------------------------------------------------

    def _flash(self, c: Campaign, resume: Resume, target: Any, image: Path, safe: SafeState,
               before: dict[str, str], buses: EcuBuses, client: UptaneClient
               ) -> dict[str, Any]:
        assert self.inventory is not None
        ecu = self.ecus[target.ecu_id]
        result_row: dict[str, Any] = {"ecu": ecu.name, "target": target.path,
                                      "release_counter": target.release_counter,
                                      "before": before, "after": None, "ok": False,
                                      "rolled_back": False}
        violation = safe.check()
        if violation is not None:
            self.emit("ota.precondition_failed", {"activity_id": c.activity_id,
                                                  "when": "before_ecu", "ecu": ecu.name,
                                                  **violation.as_dict()})
            return {"ok": False, "ecu_result": result_row,
                    "failure": {"reason": "precondition", "ecu": ecu.name,
                                **violation.as_dict()}}
        self._persist(c, "installing", resume, ecu=ecu.name)
        self.emit("ota.ecu_started", {"activity_id": c.activity_id, "ecu": ecu.name,
                                      "role": ecu.role, "target": target.path,
                                      "length": target.length, "versions_before": before,
                                      "versions_expected": target.versions})
        stopping = {"flag": False}

        def precondition() -> str | None:
            if self._stop.is_set():
                stopping["flag"] = True
                return "the agent is stopping"
            return safe()

        def progress(done: int, total: int, percent: int) -> None:
            if 0 < percent < 100:
                body = {"activity_id": c.activity_id, "ecu": ecu.name, "percent": percent,
                        "bytes": done, "total": total}
                self.emit("ota.progress", body)
                if self.hmi is not None:
                    self.hmi.progress(body)

        bus = None if ecu.kernel_isotp else buses.get(ecu.bus)
        session = FlashSession(ecu, bus, image, parse_did_keys(target.versions),
                               precondition=precondition,
                               progress=ProgressEvery(progress,
                                                      self.settings.progress_step_percent))
        result = session.run()
        summary = result.as_dict()
        after = summary["versions_after"] or None
        result_row.update(after=after, ok=result.ok, rolled_back=result.rolled_back)
        if result.ok:
            client.mark_installed(ecu.name, target)
            self.inventory.accept(ecu.name, summary["versions_after"])
            self.emit("ota.ecu_done", {"activity_id": c.activity_id, "ecu": ecu.name,
                                       "versions_before": summary["versions_before"],
                                       "versions_after": summary["versions_after"],
                                       "bytes": result.bytes_sent, "blocks": result.blocks,
                                       "timings": summary["timings"],
                                       "retries": summary["retries"]})
            return {"ok": True, "ecu_result": result_row}
        error = summary["error"]
        failure: dict[str, Any] = {"reason": "flash_failed", "ecu": ecu.name, "error": error,
                                   "touched": result.touched,
                                   "rolled_back": result.rolled_back}
        if isinstance(result.error, PreconditionViolated):
            failure["reason"] = "stopped" if stopping["flag"] else "precondition"
            if not stopping["flag"] and safe.last is not None:
                failure.update(safe.last.as_dict())
                self.emit("ota.precondition_failed", {
                    "activity_id": c.activity_id, "when": "during_flash", "ecu": ecu.name,
                    "step": result.error.step, "bytes": result.bytes_sent,
                    **safe.last.as_dict()})
        if result.rolled_back:
            self.emit("ota.rolled_back", {"activity_id": c.activity_id, "ecu": ecu.name,
                                          "versions": summary["versions_after"],
                                          "error": error})
        elif result.restore_error is not None:
            failure["restore_error"] = str(result.restore_error)
        if result.touched:
            # The ECU changed under this activity: whatever it reports now is explained.
            values = self._read_and_accept(ecu.name, buses)
            result_row["after"] = values
            failure["versions_now"] = values
        return {"ok": False, "ecu_result": result_row, "failure": failure}

    def _read_and_accept(self, name: str, buses: EcuBuses | None = None) -> dict[str, str] | None:
        assert self.inventory is not None
        own = buses is None
        pool = buses if buses is not None else EcuBuses(self.buses)
        try:
            values = self.inventory.read(self.ecus[name], pool)
        except Exception as exc:   # noqa: BLE001 - unreachable ECU: report, do not stop
            log.warning("ECU %s: versions not readable after the activity: %s", name, exc)
            return None
        finally:
            if own:
                pool.close()
        self.inventory.accept(name, values)
        return values

    # -- the end of an activity ----------------------------------------------------------

    def _end(self, c: Campaign, result: str, data: dict[str, Any], resume: Resume) -> None:
        """Terminal record, history entry, the user told, active state cleared."""
        assert self.db is not None and self.history is not None
        kind = {"completed": "ota.completed", "failed": "ota.failed",
                "rejected": "ota.rejected", "not_offered": "ota.not_offered"}[result]
        ended = time.time()
        entry = {"activity_id": c.activity_id, "campaign": c.campaign, "version": c.version,
                 "purpose": c.purpose, "changes": c.changes, "recall": c.recall,
                 "recall_number": c.recall_number, "result": result,
                 "type_approval_permit": c.type_approval_permit or None,
                 "received_at": iso(resume.received_at or ended), "ended_at": iso(ended),
                 "consent": resume.consent, "ecus": data.get("ecus", []),
                 "detail": {k: v for k, v in data.items() if k != "ecus"}}
        self.history.append(entry)
        self.db.put(ACTIVE_KEY, None)
        if open_offer(self.db) is not None:
            save_offer(self.db, None)       # an offer left by a stop before this end
        self._publish_extras()
        self._release(c.activity_id)        # the next campaign may come with this record
        told = self.hmi is not None and result != "not_offered"
        self.emit(kind, {"activity_id": c.activity_id, "campaign": c.campaign,
                         "version": c.version, "recall": c.recall,
                         "recall_number": c.recall_number, **data, "user_notified": told})
        if told:
            assert self.hmi is not None
            self.hmi.result({"activity_id": c.activity_id, "result": result,
                             "version": c.version, "reason": data.get("reason"),
                             "threat": data.get("threat"), "ecus": data.get("ecus", []),
                             "at": iso(ended)})
        log.info("OTA %s: %s %s", c.activity_id, result, data.get("reason") or "")
