"""Security events (GB 44495): every security-relevant refusal as one ``security.*`` record.

One place (``SecurityLog``) for everything the agent refuses for a security reason:
forged or replayed commands, signature and certificate failures, ECU versions that changed
without an update, refused update metadata, private keys others can read, connections to
endpoints outside the allow-list. Each becomes a ``security.<kind>`` record, hash-chained
and signed like every record, in journal lane 3 (with ``ota.*`` and ``ecu.*``), counted
per kind for ``agent.health`` and per reporting period for ``icv-agent report period``.

Refusals the agent already records under their own type (``agent.command_rejected``,
``ota.rejected``, ``ota.consent_rejected``, ``ecu.tamper``) keep that record; the recorder
shows each record to ``observe()``, which adds the security record next to it in the same
transaction. Refusals seen on other threads (the uplink's TLS and endpoint checks, the OTA
downloads) go through ``report()``, a thread-safe queue the pipeline drains.
"""

from __future__ import annotations

import fnmatch
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

from agent.security.settings import SecurityConfig

log = logging.getLogger(__name__)

KINDS = ("command_rejected", "signature_failure", "certificate_failure",
         "ecu_version_change", "update_refused", "key_permission", "endpoint_refused")
COUNTS_KEY = "security.counts"     # state db: totals and per-period counts
PERIODS_KEPT = 12                  # periods (quarters and years) kept in COUNTS_KEY

# ota.failed reasons that are a refused update, not a failed one: the signed campaign and
# the Director's signed assignment disagree (mix and match), or an update of type-approval
# ECUs came without the change permit (notice §(七)).
REFUSED_UPDATE_REASONS = ("campaign_mismatch", "type_approval_permit_missing")
# agent.command_rejected reasons that mean a signature did not hold.
SIGNATURE_REASONS = ("unsigned", "bad_signature")


class EndpointRefused(OSError):
    """A connection to an endpoint outside ``[security] allowed_endpoints``."""


def _split(endpoint: str) -> tuple[str, str]:
    host, _, port = endpoint.strip().rpartition(":")
    return host.strip("[]").lower(), port


class EndpointPolicy:
    """``host:port`` patterns; ``allows()`` says whether a connection may be made."""

    def __init__(self, patterns: Iterable[str], security: SecurityLog | None = None):
        self.patterns = [_split(p) for p in patterns]
        self.security = security
        self.refused = 0

    def allows(self, host: str, port: int) -> bool:
        host = host.strip("[]").lower()
        return any(fnmatch.fnmatchcase(host, h) and (p == "*" or p == str(port))
                   for h, p in self.patterns)

    def check(self, host: str, port: int, what: str) -> None:
        """Raise ``EndpointRefused`` (and record it) unless ``host:port`` is allowed."""
        if self.allows(host, port):
            return
        self.refused += 1
        endpoint = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if self.security is not None:
            self.security.report("endpoint_refused", {"endpoint": endpoint, "what": what})
        raise EndpointRefused(f"{what}: {endpoint} is not in [security] allowed_endpoints")

    def check_url(self, url: str, what: str) -> None:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        self.check(parts.hostname or "", port, what)


def endpoint_of_url(url: str) -> str:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def allowed_endpoints(cfg: Any) -> list[str]:
    """The allow-list of an ``AgentConfig``: the configured one, or what the config names."""
    if cfg.security.allowed_endpoints:
        return list(cfg.security.allowed_endpoints)
    out = []
    if cfg.uplink.enabled:
        out.append(f"{cfg.uplink.host}:{cfg.uplink.port}")
    uptane = cfg.ota.uptane
    for url in (uptane.director_url, uptane.image_url):
        if url:
            out.append(endpoint_of_url(url))
    return out


def check_security(cfg: Any, path: Any, problems: Any) -> None:
    """check-config: patterns that parse, and the configured endpoints inside the list."""
    sec = cfg.security
    for i, pattern in enumerate(sec.allowed_endpoints):
        host, port = _split(pattern)
        if not host or not (port == "*" or (port.isdigit() and 0 < int(port) < 65536)):
            problems.add(path, f"security.allowed_endpoints[{i}]",
                         f"{pattern!r} is not host:port (port a number or *)")
    if sec.events_per_window < 1 or not sec.window_s > 0:
        problems.add(path, "security.events_per_window", "needs events_per_window >= 1 "
                     "and window_s > 0")
    if not sec.allowed_endpoints:
        return
    policy = EndpointPolicy(sec.allowed_endpoints)
    if cfg.uplink.enabled and not policy.allows(cfg.uplink.host, cfg.uplink.port):
        problems.add(path, "uplink.host", f"{cfg.uplink.host}:{cfg.uplink.port} is not in "
                     "security.allowed_endpoints: the agent would refuse to connect")
    uptane = cfg.ota.uptane
    for key in ("director_url", "image_url"):
        url = getattr(uptane, key)
        if url:
            host, port = _split(endpoint_of_url(url))
            if not policy.allows(host, int(port)):
                problems.add(path, f"ota.uptane.{key}", f"{endpoint_of_url(url)} is not in "
                             "security.allowed_endpoints: downloads would be refused")


class SecurityLog:
    """Counts, rate-limits and words every security event; thread-safe ``report()``."""

    def __init__(self, config: SecurityConfig | None = None, *,
                 clock: Callable[[], float] = time.monotonic,
                 on_count: Callable[[str], None] | None = None):
        self.config = config or SecurityConfig()
        self.clock = clock
        self.on_count = on_count      # every event, recorded or suppressed (caller's thread)
        self.counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self.suppressed: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._window: dict[str, tuple[float, int]] = {}
        self._queue: queue.SimpleQueue[tuple[str, dict[str, Any]]] = queue.SimpleQueue()
        self._lock = threading.Lock()

    # -- classification of records the agent makes anyway (pipeline thread) -------------
    def observe(self, type_: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        """The security record that goes with record ``type_``, or None."""
        event = classify(type_, data)
        if event is None:
            return None
        return self._admit(*event)

    # -- events seen elsewhere (any thread) ------------------------------------------------
    def report(self, kind: str, data: dict[str, Any]) -> None:
        """A refusal seen on another thread: queued for the pipeline (``drain()``)."""
        self._queue.put((kind, dict(data)))

    def drain(self) -> list[tuple[str, dict[str, Any]]]:
        """Security records (type, data) of what was reported since the last call."""
        out = []
        while True:
            try:
                kind, data = self._queue.get_nowait()
            except queue.Empty:
                return out
            admitted = self._admit(kind, data)
            if admitted is not None:
                out.append(admitted)

    # -- internals -------------------------------------------------------------------------
    def _admit(self, kind: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
        if kind not in KINDS:
            raise ValueError(f"unknown security event kind {kind!r}")
        now = self.clock()
        if self.on_count is not None:
            self.on_count(kind)
        with self._lock:
            self.counts[kind] += 1
            start, n = self._window.get(kind, (now, 0))
            if now - start >= self.config.window_s:
                start, n = now, 0
            if n >= self.config.events_per_window:
                self._window[kind] = (start, n)
                self.suppressed[kind] += 1
                if self.suppressed[kind] == 1 or self.suppressed[kind] % 100 == 0:
                    log.warning("security: %s events beyond %d per %g s are counted only",
                                kind, self.config.events_per_window, self.config.window_s)
                return None
            self._window[kind] = (start, n + 1)
            held, self.suppressed[kind] = self.suppressed[kind], 0
        log.warning("security event %s: %s", kind, data)
        return f"security.{kind}", {**data, "count": self.counts[kind], "suppressed": held}

    def stats(self) -> dict[str, Any]:
        """For ``agent.health``."""
        with self._lock:
            return {"counts": dict(self.counts), "total": sum(self.counts.values())}


def classify(type_: str, data: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """Which security event a record of the agent is, with the data worth keeping."""
    if type_ == "agent.command_rejected":
        kind = ("signature_failure" if data.get("reason") in SIGNATURE_REASONS
                else "command_rejected")
        return kind, {"source": type_, "cmd": data.get("cmd"), "reason": data.get("reason"),
                      "detail": data.get("detail"), "key_id": data.get("key_id")}
    if type_ == "ota.consent_rejected":
        return "command_rejected", {"source": type_, "cmd": "ota.consent",
                                    "reason": data.get("reason"),
                                    "activity_id": data.get("activity_id")}
    if type_ == "ota.rejected":
        return "update_refused", {"source": type_, "activity_id": data.get("activity_id"),
                                  "threat": data.get("threat"), "repo": data.get("repo"),
                                  "role": data.get("role"), "ecu": data.get("ecu"),
                                  "message": data.get("message")}
    if type_ == "ota.failed" and data.get("reason") in REFUSED_UPDATE_REASONS:
        return "update_refused", {"source": type_, "activity_id": data.get("activity_id"),
                                  "reason": data.get("reason")}
    if type_ == "ecu.tamper":
        return "ecu_version_change", {"source": type_,
                                      **{k: v for k, v in data.items() if k != "source"}}
    return None


def period_counts(stored: Any, period: str) -> dict[str, int]:
    """Security events per kind in ``period`` (YYYYQn or YYYY) from ``COUNTS_KEY``."""
    periods = stored.get("periods", {}) if isinstance(stored, dict) else {}
    counts = periods.get(period) if isinstance(periods, dict) else None
    return {k: int(counts.get(k, 0)) for k in KINDS} if isinstance(counts, dict) else \
        dict.fromkeys(KINDS, 0)


def count_in_periods(stored: Any, kind: str, periods: Iterable[str]) -> dict[str, Any]:
    """``COUNTS_KEY`` with one more ``kind`` in each of ``periods`` (and the total)."""
    out: dict[str, Any] = dict(stored) if isinstance(stored, dict) else {}
    total = dict(out.get("total") or {})
    total[kind] = int(total.get(kind, 0)) + 1
    by_period = dict(out.get("periods") or {})
    for period in periods:
        counts = dict(by_period.get(period) or {})
        counts[kind] = int(counts.get(kind, 0)) + 1
        by_period[period] = counts
    keep = sorted(by_period)[-PERIODS_KEPT:]
    out["total"] = total
    out["periods"] = {p: by_period[p] for p in keep}
    return out


# The running service's policy and log, for the parts it does not construct itself (the
# OTA downloads are made deep inside the campaign); None outside the service.
_installed: tuple[EndpointPolicy | None, SecurityLog | None] = (None, None)


def install(policy: EndpointPolicy | None, security: SecurityLog | None) -> None:
    global _installed
    _installed = (policy, security)


def installed() -> tuple[EndpointPolicy | None, SecurityLog | None]:
    return _installed
