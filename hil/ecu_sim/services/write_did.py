"""WriteDataByIdentifier (0x2E): only the programming fingerprint F198/F199, unlocked."""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EcuState, Nrc

WRITABLE = {0xF198: (1, 64), 0xF199: (4, 4)}           # DID: (min, max) length


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 4:
        raise Nrc(0x13)
    did = int.from_bytes(request[1:3], "big")
    if did not in WRITABLE:
        raise Nrc(0x31)
    state.require_programming()
    low, high = WRITABLE[did]
    if not low <= len(request) - 3 <= high:
        raise Nrc(0x13)
    state.board[did] = bytes(request[3:])
    return Reply(bytes([0x6E]) + request[1:3])
