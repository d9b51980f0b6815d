"""ECUReset (0x11): answer, then go silent for ``boot_s`` and come back in the default
session, running the newly activated bank if a dependency check validated one."""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EcuState, Nrc

HARD_RESET = 0x01
SOFT_RESET = 0x03


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) != 2:
        raise Nrc(0x13)
    kind = request[1] & 0x7F
    if kind not in (HARD_RESET, SOFT_RESET):
        raise Nrc(0x12)
    state.count("reset")
    return Reply(bytes([0x51, kind]), suppress=bool(request[1] & 0x80),
                 after=lambda: state.reboot(state.config.sim.boot_s))
