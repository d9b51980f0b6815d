"""TransferData (0x36): block sequence counter 1..0xFF, 0x00, ...; a repeated block is
acknowledged again without writing (the tester retries when an answer got lost)."""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import EcuState, Nrc


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 2:
        raise Nrc(0x13)
    state.require_programming()
    download = state.download
    if download is None or download.finished:
        raise Nrc(0x24)                                # requestSequenceError
    counter, data = request[1], request[2:]
    if len(request) > state.config.sim.max_block_length:
        raise Nrc(0x13)
    if counter == download.last_counter and len(data) == download.last_length:
        state.count("repeated_block")
        return Reply(bytes([0x76, counter]))
    if counter != download.next_counter:
        raise Nrc(0x73)                                # wrongBlockSequenceCounter
    if download.received + len(data) > download.size:
        raise Nrc(0x71)                                # transferDataSuspended
    offset = download.address - state.config.ecu.memory_address + download.received
    bank = state.banks[state.target]
    bank.data[offset:offset + len(data)] = data
    download.received += len(data)
    download.last_counter, download.last_length = counter, len(data)
    download.next_counter = (counter + 1) & 0xFF
    state.count("transfer_block")
    if counter == 0x00:
        state.count("counter_wrap")
    return Reply(bytes([0x76, counter]))
