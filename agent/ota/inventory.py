"""ECU software inventory: read every configured ECU's identification DIDs over UDS, keep
the initial and the current versions, raise ``ecu.tamper`` for unexplained changes.

The OTA thread opens its own python-can Bus on the interface/channel of the agent bus
named in the ECU config (``EcuBuses``); ``virtual``, ``udp_multicast`` and ``socketcan``
all deliver the same frames to a second Bus. State (kv): ``ota.versions.initial`` and
``ota.versions.current``, each ``{ecu: {"F189": ..., ...}}``. A campaign that changed an
ECU calls ``accept`` with the versions it read back, so only changes made by someone
else are reported as tampering.

The vehicle's software identification number (SWIN, GB 44496 / R156 RXSWIN) is kept
beside them (kv ``ota.swin``): as reported by the ECUs that have a ``swin_did``, and as
computed from the software DIDs (F188, F189, F195) of the ``type_approval`` ECUs:
``SWIN-`` + the first 16 hex digits (upper case) of SHA-256 over the RFC 8785 canonical
JSON of ``{ecu: {did: value}}``. A change is an ``ecu.swin`` record.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import can

from agent.jcs import canonical_json
from agent.ota.settings import EcuConfig
from agent.ota.uds import read_ecu_versions
from agent.ota.uds.errors import FlashError
from agent.statestore import StateDB

log = logging.getLogger(__name__)

INITIAL_KEY = "ota.versions.initial"
CURRENT_KEY = "ota.versions.current"
TAMPER_KEY = "ota.versions.tamper"
SWIN_KEY = "ota.swin"
SWIN_SOFTWARE_DIDS = ("F188", "F189", "F195")

Emit = Callable[[str, dict[str, Any]], None]


class EcuBuses:
    """Second Bus objects (one per agent bus name) for UDS; close them with ``close()``."""

    def __init__(self, buses: Iterable[Any]):
        self.configs = {b.name: b for b in buses}
        self.open: dict[str, can.BusABC] = {}

    def get(self, name: str) -> can.BusABC:
        if name not in self.open:
            cfg = self.configs.get(name)
            if cfg is None:
                raise ValueError(f"no [[bus]] named {name!r}")
            kwargs = dict(cfg.options)
            if cfg.fd:
                kwargs["fd"] = True
            # ignore_config: /etc/can.conf, ~/.canrc and CAN_* must not change the bus
            self.open[name] = can.Bus(interface=cfg.interface, channel=cfg.channel,
                                      ignore_config=True, **kwargs)
        return self.open[name]

    def close(self) -> None:
        for bus in self.open.values():
            try:
                bus.shutdown()
            except (can.CanError, OSError):
                pass
        self.open.clear()

    def __enter__(self) -> EcuBuses:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Inventory:
    def __init__(self, db: StateDB, ecus: list[EcuConfig], buses: Iterable[Any]):
        self.db = db
        self.ecus = {e.name: e for e in ecus}
        self.bus_configs = list(buses)

    def initial(self) -> dict[str, dict[str, str]]:
        return self.db.get(INITIAL_KEY, {})

    def current(self) -> dict[str, dict[str, str]]:
        return self.db.get(CURRENT_KEY, {})

    def tampered(self) -> dict[str, Any]:
        return self.db.get(TAMPER_KEY, {})

    def read(self, ecu: EcuConfig, buses: EcuBuses) -> dict[str, str]:
        """``{"F189": ...}`` of one ECU; raises FlashError / CanError / OSError."""
        bus = None if ecu.kernel_isotp else buses.get(ecu.bus)
        return read_ecu_versions(ecu, bus).as_dict()

    def accept(self, ecu: str, values: dict[str, str]) -> None:
        """An OTA changed ``ecu``: these versions are now the expected ones."""
        with self.db.transaction():
            current = self.db.get(CURRENT_KEY, {})
            current[ecu] = dict(values)
            self.db.put_in(CURRENT_KEY, current)

    def refresh(self, reason: str, emit: Emit, names: Iterable[str] | None = None,
                buses: EcuBuses | None = None) -> dict[str, dict[str, str] | None]:
        """Read the ECUs (all by default); emit ``ecu.versions`` per ECU and
        ``ecu.tamper`` where a version changed without an OTA having said so."""
        own = buses is None
        pool = buses if buses is not None else EcuBuses(self.bus_configs)
        out: dict[str, dict[str, str] | None] = {}
        try:
            for name in (list(names) if names is not None else list(self.ecus)):
                out[name] = self._refresh_one(self.ecus[name], reason, emit, pool)
        finally:
            if own:
                pool.close()
        self._refresh_swin(reason, emit)
        return out

    def swin(self) -> dict[str, Any] | None:
        """The SWIN as last known (``vehicle_swin``), None before the first read."""
        return self.db.get(SWIN_KEY, None)

    def _refresh_swin(self, reason: str, emit: Emit) -> None:
        if not any(e.approval_relevant for e in self.ecus.values()):
            return
        now = vehicle_swin(self.ecus.values(), self.current())
        with self.db.transaction():
            before = self.db.get(SWIN_KEY, None)
            if before is not None and before.get("swin") == now["swin"] \
                    and before.get("reported") == now["reported"]:
                return
            self.db.put_in(SWIN_KEY, now)
        log.info("SWIN %s (was %s)", now["swin"], before and before.get("swin"))
        emit("ecu.swin", {**now, "previous": before and before.get("swin"), "reason": reason})

    def _refresh_one(self, ecu: EcuConfig, reason: str, emit: Emit,
                     buses: EcuBuses) -> dict[str, str] | None:
        try:
            values = self.read(ecu, buses)
        except (FlashError, can.CanError, OSError, ValueError) as exc:
            log.warning("ECU %s: versions not readable: %s", ecu.name, exc)
            emit("ecu.versions", {"ecu": ecu.name, "role": ecu.role, "dids": {},
                                  "reason": reason, "error": str(exc)})
            return None
        with self.db.transaction():
            initial = self.db.get(INITIAL_KEY, {})
            current = self.db.get(CURRENT_KEY, {})
            before = current.get(ecu.name)
            changed = {} if before is None else {
                did: {"expected": before.get(did), "found": values.get(did)}
                for did in sorted(set(before) | set(values))
                if before.get(did) != values.get(did)}
            if ecu.name not in initial:
                initial[ecu.name] = values
                self.db.put_in(INITIAL_KEY, initial)
            current[ecu.name] = values
            self.db.put_in(CURRENT_KEY, current)
            if changed:
                tamper = self.db.get(TAMPER_KEY, {})
                tamper[ecu.name] = {"dids": changed, "reason": reason}
                self.db.put_in(TAMPER_KEY, tamper)
        if changed:
            log.error("ECU %s: versions changed without an OTA: %s", ecu.name, changed)
            emit("ecu.tamper", {"ecu": ecu.name, "role": ecu.role, "dids": changed,
                                "reason": reason})
        emit("ecu.versions", {"ecu": ecu.name, "role": ecu.role, "dids": values,
                              "initial": initial[ecu.name], "reason": reason})
        return values


def vehicle_swin(ecus: Iterable[EcuConfig], current: dict[str, dict[str, str]]
                 ) -> dict[str, Any]:
    """``{swin, reported, computed, basis}``: ``swin`` is what the ECUs report (one value,
    or ``ecu=value; ...`` when several do), else the computed one; ``computed`` is None
    while a type-approval ECU's versions are unknown."""
    ecus = sorted(ecus, key=lambda e: e.name)
    reported = {e.name: (current.get(e.name) or {}).get(f"{int(e.swin_did, 16):04X}")
                for e in ecus if e.swin_did}
    basis = {e.name: {did: (current.get(e.name) or {}).get(did) for did in SWIN_SOFTWARE_DIDS}
             for e in ecus if e.type_approval}
    known = basis and all(e.name in current for e in ecus if e.type_approval)
    computed = ("SWIN-" + hashlib.sha256(canonical_json(basis)).hexdigest()[:16].upper()
                if known else None)
    values = {k: v for k, v in reported.items() if v is not None}
    if len(values) == 1:
        swin: str | None = next(iter(values.values()))
    elif values:
        swin = "; ".join(f"{k}={v}" for k, v in sorted(values.items()))
    else:
        swin = computed
    return {"swin": swin, "reported": reported or None, "computed": computed,
            "basis": basis or None}


def software_versions(inv: Inventory) -> dict[str, Any]:
    """``extras["software_versions"]`` for accident records: initial and current per ECU."""
    initial, current = inv.initial(), inv.current()
    return {name: {"role": ecu.role, "initial": initial.get(name),
                   "current": current.get(name)} for name, ecu in inv.ecus.items()}
