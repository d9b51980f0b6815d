"""DiagnosticSessionControl (0x10): programming session means the bootloader runs."""

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
    if session == DEFAULT_SESSION:
        state.enter_default()
    else:
        if session != state.session:
            state.lock()
        state.session = session
        if session == PROGRAMMING_SESSION:
            state.download = None
    sim = state.config.sim
    timing = struct.pack(">HH", sim.p2_ms, sim.p2_star_ms // 10)
    return Reply(bytes([0x50, session]) + timing, suppress=bool(request[1] & 0x80))
