"""One module per UDS service, like udsoncan; ``HANDLERS`` maps request SID to handler."""

from __future__ import annotations

from collections.abc import Callable

from hil.ecu_sim.services import (
    communication_control,
    download,
    dtc_setting,
    read_did,
    reset,
    routine,
    security,
    session,
    tester_present,
    transfer,
    transfer_exit,
    write_did,
)
from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.settings import SimConfig
from hil.ecu_sim.state import EcuState

Handler = Callable[[EcuState, bytes], Reply]

HANDLERS: dict[int, Handler] = {
    0x10: session.handle,
    0x11: reset.handle,
    0x22: read_did.handle,
    0x27: security.handle,
    0x28: communication_control.handle,
    0x2E: write_did.handle,
    0x31: routine.handle,
    0x34: download.handle,
    0x36: transfer.handle,
    0x37: transfer_exit.handle,
    0x3E: tester_present.handle,
    0x85: dtc_setting.handle,
}


def step_of(request: bytes, sim: SimConfig | None = None) -> str:
    """The flash step a request belongs to (names shared with faults and FlashSession);
    the precondition and memory-check routine ids are the ECU's (``sim``)."""
    sim = sim or SimConfig()
    sid = request[0]
    if sid == 0x31 and len(request) >= 4:
        return {0xFF00: "erase", 0xFF01: "dependency_check", 0xFF02: "restore",
                sim.preconditions_routine: "preconditions",
                sim.check_memory_routine: "check_memory"}.get(
            int.from_bytes(request[2:4], "big"), "routine")
    return {0x10: "session", 0x11: "reset", 0x22: "read", 0x27: "security",
            0x28: "communication_control", 0x2E: "fingerprint", 0x34: "request_download",
            0x36: "transfer", 0x37: "transfer_exit", 0x3E: "tester_present",
            0x85: "dtc_setting"}.get(sid, "other")


__all__ = ["HANDLERS", "Reply", "step_of"]
