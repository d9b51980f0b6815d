"""RequestDownload (0x34): open a download into the erased bank."""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import Download, EcuState, Nrc


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 3:
        raise Nrc(0x13)
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
    state.download = Download(address, size)
    state.erased = False
    return Reply(b"\x74\x20" + state.config.sim.max_block_length.to_bytes(2, "big"))
