"""CommunicationControl (0x28): 28 03 01 stops sending and receiving normal messages so
the flash has the bus, 28 00 01 turns them on again. Only in the extended and programming
sessions (0x7F in default); 0x12 for an unknown controlType, 0x31 for an unknown
communicationType. The default session and a reset enable communication again.

communicationType: bits 0-1 are 1 normal, 2 network management, 3 both; bits 4-7 a
subnet (0 all, 0xF the one the request came on). The virtual ECU only remembers it.
"""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EXTENDED_SESSION, PROGRAMMING_SESSION, EcuState, Nrc

# 0 enableRxAndTx, 1 enableRxAndDisableTx, 2 disableRxAndEnableTx, 3 disableRxAndTx.
CONTROL_TYPES = (0x00, 0x01, 0x02, 0x03)


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 2:
        raise Nrc(0x13)
    state.require_session(EXTENDED_SESSION, PROGRAMMING_SESSION)
    control = request[1] & 0x7F
    if control not in CONTROL_TYPES:
        raise Nrc(0x12)                       # subFunctionNotSupported
    if len(request) != 3:
        raise Nrc(0x13)
    comm_type = request[2]
    if comm_type & 0x03 == 0 or comm_type & 0x0C:
        raise Nrc(0x31)                       # requestOutOfRange
    state.comm_control, state.comm_type = control, comm_type
    state.count(f"communication_control_{control:02x}")
    return Reply(bytes([0x68, control]), suppress=bool(request[1] & 0x80))
