"""RoutineControl (0x31): erase 0xFF00, check dependencies 0xFF01, activate previous 0xFF02.

Only ``startRoutine`` (0x01) is supported; the status record byte is 0x00 for success.
0xFF02 (activate previous bank) exists only on two-bank ECUs (``can_restore``): it drops a
half-programmed or just-activated image, and the next ECUReset runs the previous image.
"""

from __future__ import annotations

from agent.ota.uds.image import ImageFormatError, parse_trailer
from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EcuState, Nrc

ERASE = 0xFF00
CHECK_DEPENDENCIES = 0xFF01
ACTIVATE_PREVIOUS = 0xFF02

STATUS_OK = 0x00
STATUS_INCOMPATIBLE = 0x01
STATUS_BAD_IMAGE = 0x02


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 4:
        raise Nrc(0x13)
    control = request[1] & 0x7F
    routine = int.from_bytes(request[2:4], "big")
    if routine not in (ERASE, CHECK_DEPENDENCIES, ACTIVATE_PREVIOUS):
        raise Nrc(0x31)
    if control != 0x01:
        raise Nrc(0x12)
    state.require_programming()
    option = bytes(request[4:])
    if routine == ERASE:
        status, busy = erase(state, option), state.config.sim.erase_s
    elif routine == CHECK_DEPENDENCIES:
        status, busy = check_dependencies(state), state.config.sim.dependency_s
    else:
        status, busy = activate_previous(state), 0.0
    return Reply(bytes([0x71, 0x01]) + request[2:4] + bytes([status]), busy_s=busy,
                 suppress=bool(request[1] & 0x80))


def erase(state: EcuState, option: bytes) -> int:
    ecu = state.config.ecu
    if option:
        alfid = option[0]
        alen, slen = alfid & 0x0F, alfid >> 4
        if len(option) != 1 + alen + slen:
            raise Nrc(0x13)
        address = int.from_bytes(option[1:1 + alen], "big")
        size = int.from_bytes(option[1 + alen:], "big")
        if address < ecu.memory_address or address + size > ecu.memory_address + ecu.memory_size:
            raise Nrc(0x31)
    state.programming_base = dict(state.banks[state.active].versions)
    bank = state.banks[state.target]
    bank.data = bytearray(b"\xff" * ecu.memory_size)
    bank.valid = False
    bank.versions = {}
    state.pending = None
    state.download = None
    state.erased = True
    state.count("erase")
    return STATUS_OK


def check_dependencies(state: EcuState) -> int:
    download = state.download
    if download is None or not download.finished:
        raise Nrc(0x24)                                # requestSequenceError
    bank = state.banks[state.target]
    if state.inject_dependency_fail:
        state.inject_dependency_fail = False
        return STATUS_INCOMPATIBLE
    try:
        trailer = parse_trailer(memoryview(bank.data)[:download.size])
    except ImageFormatError:
        return STATUS_BAD_IMAGE
    for did, value in trailer.requires.items():
        current = state.did_value(did)
        if current is None or current.decode("ascii", "replace") != value:
            return STATUS_INCOMPATIBLE
    bank.versions = {**state.programming_base, **trailer.provides}
    bank.valid = True
    state.pending = state.target
    state.download = None
    return STATUS_OK


def activate_previous(state: EcuState) -> int:
    if len(state.banks) < 2:
        raise Nrc(0x31)                                # no second bank: not supported
    state.download = None
    state.erased = False
    if state.pending is not None:                      # new image not yet activated: drop it
        state.banks[state.pending].valid = False
        state.pending = None
    if state.previous is not None and state.banks[state.previous].valid:
        state.banks[state.active].valid = False        # the rejected image
        state.pending, state.previous = state.previous, None
    elif not state.banks[state.active].valid:
        raise Nrc(0x22)                                # nothing valid to go back to
    state.count("restore")
    return STATUS_OK
