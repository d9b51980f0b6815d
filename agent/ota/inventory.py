"""ECU software inventory: read every configured ECU's identification DIDs over UDS, keep
the initial and the current versions, raise ``ecu.tamper`` for unexplained changes.

The OTA thread opens its own python-can Bus on the interface/channel of the agent bus
named in the ECU config (``EcuBuses``); ``virtual``, ``udp_multicast`` and ``socketcan``
all deliver the same frames to a second Bus. State (kv): ``ota.versions.initial`` and
``ota.versions.current``, each ``{ecu: {"F189": ..., ...}}``. A campaign that changed an
ECU calls ``accept`` with the versions it read back, so only changes made by someone
else are reported as tampering.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import can

from agent.journal.statedb import StateDB
from agent.ota.settings import EcuConfig
from agent.ota.uds import read_ecu_versions
from agent.ota.uds.errors import FlashError

log = logging.getLogger(__name__)

INITIAL_KEY = "ota.versions.initial"
CURRENT_KEY = "ota.versions.current"
TAMPER_KEY = "ota.versions.tamper"

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
            self.open[name] = can.Bus(interface=cfg.interface, channel=cfg.channel, **kwargs)
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
        return out

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


def software_versions(inv: Inventory) -> dict[str, Any]:
    """``extras["software_versions"]`` for accident records: initial and current per ECU."""
    initial, current = inv.initial(), inv.current()
    return {name: {"role": ecu.role, "initial": initial.get(name),
                   "current": current.get(name)} for name, ecu in inv.ecus.items()}
