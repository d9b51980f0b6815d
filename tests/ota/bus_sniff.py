"""Find UDS programming requests in sniffed CAN frames.

An attack or a refused image must not reach an ECU at all, so the tests look for *any*
request that starts programming or changes the ECU, not just ``10 02``: programming
session (10 02), SecurityAccess (27), WriteDataByIdentifier (2E), RoutineControl (31),
RequestDownload (34), TransferData (36), RequestTransferExit (37) and ECUReset (11).
The UDS service id is read from the ISO-TP single or first frame of each request.
"""

from __future__ import annotations

from collections.abc import Iterable

import can

from agent.ota.settings import EcuConfig

PROGRAMMING_SIDS = frozenset({0x27, 0x2E, 0x31, 0x34, 0x36, 0x37, 0x11})
SESSION_CONTROL = 0x10
PROGRAMMING_SESSION = 0x02


def request_id(ecu: EcuConfig) -> int:
    """The CAN id the tester sends requests to ``ecu`` on."""
    if ecu.addressing == "normal_fixed_29bit":
        return 0x18DA0000 | (ecu.target_address << 8) | ecu.source_address
    return ecu.txid


def uds_request(data: bytes) -> bytes | None:
    """The start of the UDS payload in an ISO-TP single or first frame, else None."""
    if not data:
        return None
    kind = data[0] >> 4
    if kind == 0:                                    # single frame
        if data[0] & 0x0F == 0 and len(data) > 2:    # CAN FD escape: length in byte 1
            return data[2:]
        return data[1:]
    if kind == 1:                                    # first frame
        if data[0] & 0x0F == 0 and data[1] == 0:     # length > 4095: 32-bit length
            return data[6:]
        return data[2:]
    return None


def is_programming(payload: bytes) -> bool:
    if not payload:
        return False
    if payload[0] == SESSION_CONTROL:
        return len(payload) > 1 and payload[1] & 0x7F == PROGRAMMING_SESSION
    return payload[0] in PROGRAMMING_SIDS


def programming_requests(frames: Iterable[can.Message], ecus: Iterable[EcuConfig]
                         ) -> list[tuple[int, str]]:
    """``(CAN id, payload hex)`` of every programming request to one of ``ecus``."""
    ids = {request_id(e) for e in ecus}
    found = []
    for m in list(frames):
        if m.arbitration_id not in ids:
            continue
        payload = uds_request(bytes(m.data))
        if payload is not None and is_programming(payload):
            found.append((m.arbitration_id, payload[:4].hex(" ")))
    return found
