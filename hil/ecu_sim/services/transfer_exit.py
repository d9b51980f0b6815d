"""RequestTransferExit (0x37): close the download; answer CRC32 of the received bytes."""

from __future__ import annotations

import zlib

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EcuState, Nrc


def handle(state: EcuState, request: bytes) -> Reply:
    state.require_programming()
    download = state.download
    if download is None or download.finished or download.received != download.size:
        raise Nrc(0x24)                                # requestSequenceError
    download.finished = True
    start = download.address - state.config.ecu.memory_address
    data = memoryview(state.banks[state.target].data)[start:start + download.size]
    record = zlib.crc32(data).to_bytes(4, "big") if state.config.ecu.exit_crc32 else b""
    return Reply(b"\x77" + record)
