"""TesterPresent (0x3E): only keeps the session (the server loop restarts S3)."""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EcuState, Nrc


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) != 2:
        raise Nrc(0x13)
    if request[1] & 0x7F != 0:
        raise Nrc(0x12)
    state.count("tester_present")
    return Reply(b"\x7e\x00", suppress=bool(request[1] & 0x80))
