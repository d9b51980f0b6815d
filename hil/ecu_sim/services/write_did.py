"""WriteDataByIdentifier (0x2E): only the programming fingerprint, unlocked.

Lenient: F198 (tester id, 1..64 bytes) and F199 (programming date, 4 bytes) in the
programming session. Strict: only ``[sim] fingerprint_did`` of exactly
``fingerprint_length`` bytes; another DID or another session 0x31 (not supported in the
active session), locked 0x33, wrong length 0x13. It marks the programming session as
fingerprinted, which the erase requires; 22 <did> reads it back.
"""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import PROGRAMMING_SESSION, EcuState, Nrc

WRITABLE = {0xF198: (1, 64), 0xF199: (4, 4)}           # DID: (min, max) length


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 4:
        raise Nrc(0x13)
    did = int.from_bytes(request[1:3], "big")
    if state.strict:
        return strict_write(state, did, bytes(request[3:]))
    if did not in WRITABLE:
        raise Nrc(0x31)
    state.require_programming()
    low, high = WRITABLE[did]
    if not low <= len(request) - 3 <= high:
        raise Nrc(0x13)
    state.board[did] = bytes(request[3:])
    return Reply(bytes([0x6E]) + request[1:3])


def strict_write(state: EcuState, did: int, value: bytes) -> Reply:
    sim = state.config.sim
    if did != sim.fingerprint_did or state.session != PROGRAMMING_SESSION:
        raise Nrc(0x31)                                # requestOutOfRange
    if state.unlocked_level is None:
        raise Nrc(0x33)                                # securityAccessDenied
    if len(value) != sim.fingerprint_length:
        raise Nrc(0x13)
    state.board[did] = value
    state.fingerprint_written = True
    state.count("fingerprint")
    return Reply(bytes([0x6E]) + did.to_bytes(2, "big"))
