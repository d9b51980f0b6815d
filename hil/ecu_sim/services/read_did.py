"""ReadDataByIdentifier (0x22): one or more DIDs; 0x31 when none is supported."""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EcuState, Nrc


def handle(state: EcuState, request: bytes) -> Reply:
    body = request[1:]
    if not body or len(body) % 2:
        raise Nrc(0x13)
    out = bytearray([0x62])
    for i in range(0, len(body), 2):
        value = state.did_value(int.from_bytes(body[i:i + 2], "big"))
        if value is not None:
            out += body[i:i + 2] + value
    if len(out) == 1:
        raise Nrc(0x31)                                # requestOutOfRange
    return Reply(bytes(out))
