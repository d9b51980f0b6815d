"""SecurityAccess (0x27): seed on the odd level, key on level + 1, same algorithms as the agent.

Strict: only in the programming session (0x7F elsewhere); the ``max_key_attempts``-th
wrong key answers 0x36 and starts a delay of ``security_delay_s``: every seed request
answers 0x37 (requiredTimeDelayNotExpired) until it ran out, then the attempts start over.
The delay survives a reset, as in a real ECU. Lenient: 0x37 from then on, for good.
"""

from __future__ import annotations

import hmac
import os
import time

from agent.ota.uds.security import compute_key
from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import DEFAULT_SESSION, PROGRAMMING_SESSION, EcuState, Nrc


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 2:
        raise Nrc(0x13)
    sub = request[1] & 0x7F
    ecu = state.config.ecu
    if state.strict:
        state.require_session(PROGRAMMING_SESSION)
    elif state.session == DEFAULT_SESSION:
        raise Nrc(0x7F)
    if sub % 2 == 1:                                   # requestSeed
        if sub != ecu.security_level:
            raise Nrc(0x12)
        if state.strict and state.security_delay_until:
            if time.monotonic() < state.security_delay_until:
                raise Nrc(0x37)                        # requiredTimeDelayNotExpired
            state.security_delay_until = 0.0
            state.failed_keys = 0
        if state.failed_keys >= state.config.sim.max_key_attempts:
            raise Nrc(0x37)                            # requiredTimeDelayNotExpired
        if state.unlocked_level == sub:
            return Reply(bytes([0x67, sub]) + bytes(state.config.sim.seed_length))
        state.seed = os.urandom(state.config.sim.seed_length)
        state.seed_level = sub
        return Reply(bytes([0x67, sub]) + state.seed)
    level = sub - 1                                    # sendKey
    if level != ecu.security_level:
        raise Nrc(0x12)
    if state.seed is None or state.seed_level != level:
        raise Nrc(0x24)                                # requestSequenceError
    expected = compute_key(ecu.key_algorithm, level, state.seed, ecu.secret())
    state.seed = None
    if not hmac.compare_digest(expected, bytes(request[2:])):
        state.failed_keys += 1
        if state.failed_keys >= state.config.sim.max_key_attempts:
            if state.strict:
                state.security_delay_until = (time.monotonic()
                                              + state.config.sim.security_delay_s)
            raise Nrc(0x36)                            # exceededNumberOfAttempts
        raise Nrc(0x35)                                # invalidKey
    state.failed_keys = 0
    state.unlocked_level = level
    return Reply(bytes([0x67, sub]))
