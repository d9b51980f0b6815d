"""DiagnosticSessionControl (0x10): programming session means the bootloader runs.

Strict: 10 02 only from the extended session (NRC 0x22 from default, and while the
programming preconditions are not met); the switch into the bootloader takes
``session_switch_s`` (bridged with 0x78). 10 03 from programming is refused (0x22): the
bootloader leaves only by a reset or 10 01.
"""

from __future__ import annotations

import struct

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import (
    DEFAULT_SESSION,
    EXTENDED_SESSION,
    PROGRAMMING_SESSION,
    EcuState,
    Nrc,
)


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) != 2:
        raise Nrc(0x13)
    session = request[1] & 0x7F
    if session not in (DEFAULT_SESSION, PROGRAMMING_SESSION, EXTENDED_SESSION):
        raise Nrc(0x12)                       # subFunctionNotSupported
    busy = 0.0
    if state.strict:
        busy = strict_switch(state, session)
    if session == DEFAULT_SESSION:
        state.enter_default()
    else:
        if session != state.session:
            state.lock()
            if session == PROGRAMMING_SESSION:
                state.forget_programming()
        state.session = session
        if session == PROGRAMMING_SESSION:
            state.download = None
    sim = state.config.sim
    timing = struct.pack(">HH", sim.p2_ms, sim.p2_star_ms // 10)
    return Reply(bytes([0x50, session]) + timing, suppress=bool(request[1] & 0x80),
                 busy_s=busy)


def strict_switch(state: EcuState, session: int) -> float:
    """The strict bootloader's session transitions; the time the switch takes."""
    if session == PROGRAMMING_SESSION:
        if state.session == PROGRAMMING_SESSION:
            return 0.0
        if state.session != EXTENDED_SESSION or not state.config.sim.preconditions_ok:
            raise Nrc(0x22)                   # conditionsNotCorrect
        state.count("boot_into_bootloader")
        return state.config.sim.session_switch_s
    if session == EXTENDED_SESSION and state.session == PROGRAMMING_SESSION:
        raise Nrc(0x22)
    return 0.0
