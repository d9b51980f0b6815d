"""RoutineControl (0x31): erase 0xFF00, check dependencies 0xFF01, activate previous 0xFF02.

Only ``startRoutine`` (0x01) is supported; the status record byte is 0x00 for success.
0xFF02 (activate previous bank) exists only on two-bank ECUs (``can_restore``): it drops a
half-programmed or just-activated image, and the next ECUReset runs the previous image.

Strict adds ``[sim] preconditions_routine`` (0x0203, extended or programming session:
status 0x00 ok, 0x01 not ok) and ``[sim] check_memory_routine`` (0x0202, option record =
CRC-32 of the downloaded data, 4 bytes big-endian: 0x00 match, 0x01 mismatch; only after
37, else 0x24). A routine outside its session is 0x31 (not supported in the active
session), sub-function other than start 0x12, locked 0x33. The erase needs the option
record (0x13 without), the fingerprint of this programming session (0x22 without) and
remembers the erased range for 34; 0xFF01 needs a passing memory check (0x24 before).
"""

from __future__ import annotations

import zlib

from agent.ota.uds.image import ImageFormatError, parse_trailer
from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EXTENDED_SESSION, PROGRAMMING_SESSION, EcuState, Nrc

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
    if state.strict:
        return strict_routine(state, request)
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


def strict_routine(state: EcuState, request: bytes) -> Reply:
    sim = state.config.sim
    routine = int.from_bytes(request[2:4], "big")
    sessions = {sim.preconditions_routine: (EXTENDED_SESSION, PROGRAMMING_SESSION)}.get(
        routine, (PROGRAMMING_SESSION,))
    if request[1] & 0x7F != 0x01:
        raise Nrc(0x12)                                # only startRoutine
    known = (ERASE, CHECK_DEPENDENCIES, ACTIVATE_PREVIOUS, sim.preconditions_routine,
             sim.check_memory_routine)
    if routine not in known or state.session not in sessions:
        raise Nrc(0x31)                                # not supported (in this session)
    option, busy = bytes(request[4:]), 0.0
    if routine == sim.preconditions_routine:
        status = check_preconditions(state)
    else:
        if state.unlocked_level is None:
            raise Nrc(0x33)                            # securityAccessDenied
        if routine == ERASE:
            if not option:
                raise Nrc(0x13)                        # the range to erase is required
            if not state.fingerprint_written:
                raise Nrc(0x22)                        # conditionsNotCorrect
            status, busy = erase(state, option), sim.erase_s
        elif routine == sim.check_memory_routine:
            status, busy = check_memory(state, option), sim.check_memory_s
        elif routine == CHECK_DEPENDENCIES:
            if not state.memory_checked:
                raise Nrc(0x24)                        # requestSequenceError
            status, busy = check_dependencies(state), sim.dependency_s
        else:
            status = activate_previous(state)
    return Reply(bytes([0x71, 0x01]) + request[2:4] + bytes([status]), busy_s=busy,
                 suppress=bool(request[1] & 0x80))


def check_preconditions(state: EcuState) -> int:
    """Vehicle ready for programming (speed, voltage, ... on a real ECU): 0x00 yes."""
    state.count("preconditions")
    if state.inject_preconditions_fail:
        state.inject_preconditions_fail = False
        return STATUS_INCOMPATIBLE
    return STATUS_OK if state.config.sim.preconditions_ok else STATUS_INCOMPATIBLE


def check_memory(state: EcuState, option: bytes) -> int:
    download = state.download
    if download is None or not download.finished:
        raise Nrc(0x24)                                # requestSequenceError: 37 first
    if len(option) != 4:
        raise Nrc(0x13)
    start = download.address - state.config.ecu.memory_address
    data = memoryview(state.banks[state.target].data)[start:start + download.size]
    state.memory_checked = zlib.crc32(data) == int.from_bytes(option, "big")
    state.count("check_memory")
    return STATUS_OK if state.memory_checked else STATUS_INCOMPATIBLE


def erase(state: EcuState, option: bytes) -> int:
    ecu = state.config.ecu
    address, size = ecu.memory_address, ecu.memory_size
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
    state.erased_range = (address, size)
    state.memory_checked = False
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
