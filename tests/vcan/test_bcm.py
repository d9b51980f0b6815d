"""The kernel's broadcast manager as the agent sets it up (``agent.ingest.socketcan``):
content filters on the mapped bits, receive timeouts as silences, multiplex filters, CAN
FD ops, and the drop counter, each checked against frames sent on vcan."""

from __future__ import annotations

import time
from pathlib import Path

import can
import cantools

from agent.ingest.dbc import mask_of
from agent.ingest.decoder import Silence
from agent.ingest.setup import MessagePlan, _mux_filters, frame_key
from agent.ingest.socketcan import BcmBus, content_filters
from tests.vcan.can_bench import SLOW

IDS = 50
FRAMES_PER_ID = 200
CHANGE_EVERY = 20
TIMEOUT_S = 0.5


def probe_dbc(n: int) -> str:
    """``n`` messages: a mapped byte 0 and an alive counter in byte 7 (never mapped)."""
    parts = ['VERSION ""', "", "NS_ :", "", "BS_:", "", "BU_: ECU", ""]
    for i in range(n):
        parts += [f"BO_ {0x300 + i} Probe{i}: 8 ECU",
                  ' SG_ Mapped : 0|8@1+ (1,0) [0|255] "" ECU',
                  ' SG_ Alive : 56|8@1+ (1,0) [0|255] "" ECU', ""]
    parts += ["BO_ 704 Paged: 8 ECU",
              ' SG_ Page M : 0|2@1+ (1,0) [0|3] "" ECU',
              ' SG_ PageZero m0 : 8|8@1+ (1,0) [0|255] "" ECU',
              ' SG_ PageOne m1 : 8|8@1+ (1,0) [0|255] "" ECU',
              ' SG_ Alive : 56|8@1+ (1,0) [0|255] "" ECU', ""]
    return "\n".join(parts)


def plans(db: cantools.database.Database, names: list[str]) -> dict[int, MessagePlan]:
    out = {}
    for name in names:
        msg = db.get_message_by_name(name)
        sigs = [s for s in msg.signals if s.name != "Alive"]
        plan = MessagePlan(msg, msg.length, mask_of(sigs, msg.length), [], TIMEOUT_S, 0.01)
        plan.mux_filters, plan.mux_mask = _mux_filters(msg, sigs)
        out[frame_key(msg.frame_id, False)] = plan
    return out


def read_all(bus: BcmBus, until_idle: float = 3.0) -> list[can.Message | Silence]:
    """Everything the BCM socket delivers until it has been quiet for ``until_idle`` s."""
    out: list[can.Message | Silence] = []
    while True:
        item = bus.recv(until_idle)
        if item is None:
            return out
        out.append(item)


def sender(channel: str, fd: bool = False) -> can.BusABC:
    return can.Bus(interface="socketcan", channel=channel, fd=fd)


def test_content_filter_and_timeouts_reach_python_only_for_changes(tmp_path: Path) -> None:
    db = cantools.database.load_string(probe_dbc(IDS), database_format="dbc")
    setup = plans(db, [f"Probe{i}" for i in range(IDS)])
    bus = BcmBus("vcan0", content_filters(setup, fd=False), rcvbuf=4 << 20)
    try:
        with sender("vcan0") as tx:
            for n in range(FRAMES_PER_ID):
                for i in range(IDS):
                    data = bytes([n // CHANGE_EVERY + 1, 0, 0, 0, 0, 0, 0, n % 256])
                    tx.send(can.Message(arbitration_id=0x300 + i, is_extended_id=False,
                                        data=data))
        got = read_all(bus)
        frames = bus.kernel_frames()
    finally:
        bus.shutdown()
    changes = [m for m in got if isinstance(m, can.Message)]
    silences = [m for m in got if isinstance(m, Silence)]
    assert frames == IDS * FRAMES_PER_ID          # the kernel saw every frame
    assert len(changes) == IDS * FRAMES_PER_ID // CHANGE_EVERY
    assert len(silences) == IDS
    assert {s.key for s in silences} == set(setup)
    assert bus.drops.total == 0
    for i in range(IDS):
        mine = [m.data[0] for m in changes if m.arbitration_id == 0x300 + i]
        assert mine == list(range(1, FRAMES_PER_ID // CHANGE_EVERY + 1))
    # Kernel receive timestamps, in order, before the silences were noticed.
    stamps = [m.timestamp for m in changes]
    assert stamps == sorted(stamps) and abs(stamps[-1] - time.time()) < SLOW


def test_a_silent_message_comes_back_announced(tmp_path: Path) -> None:
    db = cantools.database.load_string(probe_dbc(1), database_format="dbc")
    bus = BcmBus("vcan0", content_filters(plans(db, ["Probe0"]), fd=False))
    same = can.Message(arbitration_id=0x300, is_extended_id=False, data=bytes(8))
    try:
        with sender("vcan0") as tx:
            tx.send(same)
            first = read_all(bus)
            tx.send(same)                     # unchanged, but after the timeout
            again = read_all(bus)
    finally:
        bus.shutdown()
    assert [type(m).__name__ for m in first] == ["Message", "Silence"]
    assert [type(m).__name__ for m in again] == ["Message", "Silence"]


def test_multiplex_filter_per_page(tmp_path: Path) -> None:
    db = cantools.database.load_string(probe_dbc(0), database_format="dbc")
    setup = plans(db, ["Paged"])
    bus = BcmBus("vcan0", content_filters(setup, fd=False))

    def page(p: int, value: int, alive: int) -> can.Message:
        return can.Message(arbitration_id=704, is_extended_id=False,
                           data=bytes([p, value, 0, 0, 0, 0, 0, alive]))

    sent = [page(0, 5, 1), page(1, 9, 2), page(0, 5, 3), page(1, 9, 4),   # pages alternate
            page(2, 7, 5),                                                # unmapped page
            page(0, 6, 6), page(1, 9, 7), page(1, 10, 8)]
    try:
        with sender("vcan0") as tx:
            for m in sent:
                tx.send(m)
        got = [m for m in read_all(bus) if isinstance(m, can.Message)]
    finally:
        bus.shutdown()
    assert [(m.data[0], m.data[1]) for m in got] == [(0, 5), (1, 9), (0, 6), (1, 10)]


def test_fd_frames_through_an_fd_op(tmp_path: Path) -> None:
    db = cantools.database.load_string(probe_dbc(1), database_format="dbc")
    bus = BcmBus("vcan1", content_filters(plans(db, ["Probe0"]), fd=True), fd=True)
    try:
        with sender("vcan1", fd=True) as tx:
            for value, fd in ((1, True), (1, True), (2, True), (2, False), (3, False)):
                tx.send(can.Message(arbitration_id=0x300, is_extended_id=False, is_fd=fd,
                                    bitrate_switch=fd,
                                    data=bytes([value] + [0] * (63 if fd else 7))))
        got = [m for m in read_all(bus) if isinstance(m, can.Message)]
    finally:
        bus.shutdown()
    # Classic and FD frames of one id are filtered apart (two ops), each on its own.
    assert [(m.is_fd, m.data[0], len(m.data)) for m in got] == \
        [(True, 1, 64), (True, 2, 64), (False, 2, 8), (False, 3, 8)]


def test_drops_are_counted_exactly_when_python_is_late(tmp_path: Path) -> None:
    db = cantools.database.load_string(probe_dbc(1), database_format="dbc")
    # A queue of a few notices, and 2,000 changes sent before Python reads any.
    bus = BcmBus("vcan0", content_filters(plans(db, ["Probe0"]), fd=False), rcvbuf=4096)
    sent = 2000
    try:
        with sender("vcan0") as tx:
            for n in range(sent):
                tx.send(can.Message(arbitration_id=0x300, is_extended_id=False,
                                    data=bytes([n % 256, n // 256, 0, 0, 0, 0, 0, 0])))
            got = read_all(bus)
            # One more change after the queue was read: it and the silence after it reach
            # Python and carry the drop counter as it is at the end.
            tx.send(can.Message(arbitration_id=0x300, is_extended_id=False, data=bytes([9] * 8)))
            got += read_all(bus)
        frames = bus.kernel_frames()
    finally:
        bus.shutdown()
    assert frames == sent + 1
    assert bus.drops.total > 0
    assert isinstance(got[-1], Silence) and isinstance(got[-2], can.Message)
    # Every notice the kernel made (a change per frame, a silence after each burst) was
    # either read or counted as dropped.
    assert len(got) + bus.drops.total == sent + 1 + 2
