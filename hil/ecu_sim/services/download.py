"""RequestDownload (0x34): open a download into the erased bank.

Strict: locked 0x33; the range must lie inside the erased range of this programming
session (0x22 otherwise, also while a download is open), outside the memory 0x31.
"""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import Download, EcuState, Nrc


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 3:
        raise Nrc(0x13)
    if state.strict:
        return strict_download(state, request)
    state.require_programming()
    dfi, alfid = request[1], request[2]
    alen, slen = alfid & 0x0F, alfid >> 4
    if dfi != 0x00:
        raise Nrc(0x31)                      # no compression/encryption in this ECU
    if not alen or not slen or len(request) != 3 + alen + slen:
        raise Nrc(0x13)
    if not state.erased:
        raise Nrc(0x70)                      # uploadDownloadNotAccepted: erase first
    if state.download is not None and not state.download.finished:
        raise Nrc(0x22)
    address = int.from_bytes(request[3:3 + alen], "big")
    size = int.from_bytes(request[3 + alen:], "big")
    ecu = state.config.ecu
    if (size == 0 or address < ecu.memory_address
            or address + size > ecu.memory_address + ecu.memory_size):
        raise Nrc(0x31)
    return _open(state, address, size)


def strict_download(state: EcuState, request: bytes) -> Reply:
    state.require_programming(unlocked=False)
    dfi, alfid = request[1], request[2]
    alen, slen = alfid & 0x0F, alfid >> 4
    if not alen or not slen or len(request) != 3 + alen + slen:
        raise Nrc(0x13)
    address = int.from_bytes(request[3:3 + alen], "big")
    size = int.from_bytes(request[3 + alen:], "big")
    ecu = state.config.ecu
    if (dfi != 0x00 or size == 0 or address < ecu.memory_address
            or address + size > ecu.memory_address + ecu.memory_size):
        raise Nrc(0x31)                      # requestOutOfRange
    if state.unlocked_level is None:
        raise Nrc(0x33)                      # securityAccessDenied
    erased = state.erased_range
    if (not state.erased or erased is None or address < erased[0]
            or address + size > erased[0] + erased[1]):
        raise Nrc(0x22)                      # conditionsNotCorrect: erase this range first
    if state.download is not None and not state.download.finished:
        raise Nrc(0x22)
    return _open(state, address, size)


def _open(state: EcuState, address: int, size: int) -> Reply:
    state.download = Download(address, size)
    state.erased = False
    return Reply(b"\x74\x20" + state.config.sim.max_block_length.to_bytes(2, "big"))
