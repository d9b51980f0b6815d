"""SocketCAN as the vehicle has it: the kernel filters contents and counts every lost frame.

Two receive modes per bus (``receive`` in ``[[bus]]``):

``bcm`` (default on SocketCAN)
    One broadcast-manager socket (``CAN_BCM``) with an ``RX_SETUP`` per mapped CAN id
    whose content filter is exactly the mapped bits of that message, so the kernel wakes
    Python only when a mapped bit changed (or the DLC did). The receive timeout
    (``ival1`` = the message's freshness timeout, ``RX_ANNOUNCE_RESUME``) replaces polling
    for freshness: ``RX_TIMEOUT`` arrives as a :class:`Silence`. Multiplexed messages get
    a multiplex filter (frame 0 = multiplexor mask, one frame per mapped multiplexor
    value); an FD bus gets a second set of ops with ``CAN_FD_FRAME`` (the kernel keeps
    classic and FD frames of one id apart). Error frames (bus-off) come through a raw
    socket that accepts no data frames. The kernel's per-op frame counts
    (``/proc/net/can-bcm``) say how many frames the bus carried.

``raw``
    python-can's ``SocketcanBus`` with acceptance filters for the mapped ids, every frame
    read in Python.

Both read the socket's drop counter (``SO_RXQ_OVFL``) with every message, so frames the
kernel dropped because the process was late are counted exactly, and both take a
receive buffer size (``SO_RCVBUF``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import re
import select
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable
from typing import Any

import can
from can.interfaces.socketcan import constants as sc
from can.interfaces.socketcan.socketcan import (
    BcmMsgHead,
    SocketcanBus,
    build_bcm_header,
    build_can_frame,
    dissect_can_frame,
)

from agent.ingest.decoder import Silence

log = logging.getLogger(__name__)

# Not in Python's socket module on every version (asm-generic/socket.h; ARM uses those).
SO_RXQ_OVFL = getattr(socket, "SO_RXQ_OVFL", 40)
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_TIMESTAMPNS = sc.SO_TIMESTAMPNS
CAN_MTU = 16                         # sizeof(struct can_frame)
_TIMESPEC = struct.Struct("@ll")
_U32 = struct.Struct("@I")
ANCILLARY = socket.CMSG_SPACE(_TIMESPEC.size) + socket.CMSG_SPACE(_U32.size)
HEAD_SIZE = ctypes.sizeof(BcmMsgHead)
_HEAD = struct.Struct("@3I4l2I0q")      # bcm_msg_head, padded like the C struct
# A line of /proc/net/can-bcm/<inode>: "rx_op: 125 vcan0 [1]d timeo=... # recv 7 (5000) ..."
_OP_FRAMES = re.compile(r"^rx_op:.*# recv \d+ \((\d+)\)", re.M)
MAX_MUX_FRAMES = 256                 # MAX_NFRAMES of net/can/bcm.c, multiplexor mask included
ERR_MASK = 0x1FFFFFFF                # every error class


def read_message(sock: socket.socket, size: int, flags: int = 0
                 ) -> tuple[bytes, float | None, int | None]:
    """One datagram with its kernel receive time and the socket's drop counter."""
    data, ancdata, _msg_flags, _addr = sock.recvmsg(size, ANCILLARY, flags)
    stamp = drops = None
    for level, kind, value in ancdata:
        if level != socket.SOL_SOCKET:
            continue
        if kind == SO_TIMESTAMPNS and len(value) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(value)
            stamp = sec + nsec * 1e-9
        elif kind == SO_RXQ_OVFL and len(value) >= _U32.size:
            drops = _U32.unpack_from(value)[0]
    return data, stamp, drops


def message_of(frame: bytes, stamp: float | None, channel: str) -> can.Message:
    can_id, dlc, flags, data = dissect_can_frame(frame)
    ext = bool(can_id & sc.CAN_EFF_FLAG)
    return can.Message(
        timestamp=stamp if stamp is not None else 0.0, channel=channel,
        arbitration_id=can_id & (0x1FFFFFFF if ext else 0x7FF), is_extended_id=ext,
        is_remote_frame=bool(can_id & sc.CAN_RTR_FLAG),
        is_error_frame=bool(can_id & sc.CAN_ERR_FLAG), is_fd=len(frame) == sc.CANFD_MTU,
        bitrate_switch=bool(flags & sc.CANFD_BRS),
        error_state_indicator=bool(flags & sc.CANFD_ESI), dlc=dlc, data=data)


def _socket_options(sock: socket.socket, rcvbuf: int) -> None:
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(socket.SOL_SOCKET, SO_RXQ_OVFL, 1)
    if rcvbuf > 0:
        try:  # beyond net.core.rmem_max, with CAP_NET_ADMIN
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # kernel doubles it
        if got < rcvbuf:
            log.warning("socket receive buffer %d bytes, not %d: net.core.rmem_max caps it "
                        "(raise it, or give the agent CAP_NET_ADMIN)", got, rcvbuf)


class DropCounter:
    """The kernel's drop counter of one socket, as last reported, and where the loss lay:
    between the receive times of the last frame before and the first frame after it."""

    __slots__ = ("total", "pending", "since", "until", "_last_stamp")

    def __init__(self) -> None:
        self.total = 0           # frames the kernel dropped on this socket
        self.pending = 0         # of those, not yet taken by take()
        self.since: float | None = None
        self.until: float | None = None
        self._last_stamp: float | None = None

    def update(self, drops: int | None, stamp: float | None) -> None:
        if drops is not None and drops != self.total:
            new = (drops - self.total) & 0xFFFFFFFF
            self.total = drops
            if not self.pending:
                self.since = self._last_stamp
            self.pending += new
            self.until = stamp
        if stamp is not None:
            self._last_stamp = stamp

    def take(self) -> tuple[int, float | None, float | None] | None:
        if not self.pending:
            return None
        out = (self.pending, self.since, self.until)
        self.pending = 0
        return out


class RawSocketcanBus(SocketcanBus):
    """python-can's SocketCAN bus that also reads the drop counter with every frame."""

    def __init__(self, channel: str = "", *, rcvbuf: int = 0, **kwargs: Any):
        super().__init__(channel=channel, **kwargs)
        _socket_options(self.socket, rcvbuf)
        self.drops = DropCounter()

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        try:
            ready, _, _ = select.select([self.socket], [], [], timeout)
            if not ready:
                return None, self._is_filtered
            frame, stamp, drops = read_message(self.socket, sc.CANFD_MTU)
        except OSError as error:
            raise can.CanOperationError(f"Failed to receive: {error.strerror}",
                                        error.errno) from error
        self.drops.update(drops, stamp)
        return message_of(frame, stamp, self.channel), self._is_filtered


class ContentFilter:
    """One BCM receive op: CAN id, frame type and the content filter frames."""

    __slots__ = ("key", "can_id", "fd", "timeout", "frames")

    def __init__(self, key: int, can_id: int, fd: bool, timeout: float, frames: list[bytes]):
        self.key = key
        self.can_id = can_id
        self.fd = fd
        self.timeout = timeout
        self.frames = frames

    def setup(self) -> bytes:
        flags = (sc.SETTIMER | socket.CAN_BCM_RX_ANNOUNCE_RESUME
                 | socket.CAN_BCM_RX_CHECK_DLC | (socket.CAN_BCM_CAN_FD_FRAME if self.fd else 0))
        sec = int(self.timeout)
        usec = int(round((self.timeout - sec) * 1e6))
        # SETTIMER without STARTTIMER: the timer starts with the first frame, so a message
        # never seen is not reported silent (the raw path does not either).
        return build_bcm_header(socket.CAN_BCM_RX_SETUP, flags, 0, sec, usec, 0, 0,
                                self.can_id, len(self.frames)) + b"".join(self.frames)


def content_filters(plans: dict[int, Any], fd: bool) -> list[ContentFilter]:
    """BCM receive ops for the mapped messages (``plans``: frame key -> MessagePlan)."""
    ops = []
    for key, plan in plans.items():
        msg = plan.message
        ext = bool(msg.is_extended_frame)
        can_id = msg.frame_id | (sc.CAN_EFF_FLAG if ext else 0)
        for as_fd in ((False, True) if fd else (False,)):
            if plan.length > (64 if as_fd else 8):
                continue
            patterns = plan.mux_filters if plan.mux_filters else [(0, plan.mask)]
            frames = [_filter_frame(msg.frame_id, ext, as_fd, value | mask, plan.length)
                      for value, mask in patterns]
            if plan.mux_filters:
                frames.insert(0, _filter_frame(msg.frame_id, ext, as_fd, plan.mux_mask,
                                               plan.length))
            ops.append(ContentFilter(key, can_id, as_fd, plan.timeout, frames))
    return ops


def _filter_frame(frame_id: int, ext: bool, fd: bool, bits: int, length: int) -> bytes:
    data = bits.to_bytes(length, "big") if length else b""
    return build_can_frame(can.Message(arbitration_id=frame_id, is_extended_id=ext,
                                       is_fd=fd, data=data.ljust(64 if fd else 8, b"\0")))


class BcmBus:
    """Mapped messages through the broadcast manager: changes and silences, not frames.

    Has the surface of a python-can bus that the agent uses (``recv``, ``shutdown``);
    ``recv`` returns a ``can.Message`` for a change or error frame and a
    :class:`Silence` for a receive timeout."""

    def __init__(self, channel: str, filters: Iterable[ContentFilter], *, fd: bool = False,
                 rcvbuf: int = 0):
        self.channel = channel
        self.filters = list(filters)
        self._ops = {(f.can_id, f.fd): f for f in self.filters}
        self._size = HEAD_SIZE + (sc.CANFD_MTU if fd else CAN_MTU)
        self.drops = DropCounter()
        self.silences = 0
        self.bcm: socket.socket | None = None
        self.errors: socket.socket | None = None
        try:
            self.bcm = socket.socket(socket.AF_CAN, socket.SOCK_DGRAM, socket.CAN_BCM)
            _socket_options(self.bcm, rcvbuf)
            self.bcm.connect((channel,))
            for f in self.filters:
                self.bcm.send(f.setup())
            # Error frames only (bus-off, restarts): no data frame passes an empty filter.
            self.errors = socket.socket(socket.AF_CAN, socket.SOCK_RAW, socket.CAN_RAW)
            self.errors.setsockopt(socket.SOL_CAN_RAW, socket.CAN_RAW_FILTER, b"")
            self.errors.setsockopt(sc.SOL_CAN_RAW, sc.CAN_RAW_ERR_FILTER,
                                   _U32.pack(ERR_MASK))
            self.errors.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            self.errors.bind((channel,))
        except OSError as exc:
            self.shutdown()
            hint = " (kernel module can-bcm missing? or set receive = \"raw\")" \
                if exc.errno in (93, 97) else ""
            raise can.CanInitializationError(
                f"CAN_BCM on {channel}: {exc.strerror or exc}{hint}", exc.errno) from exc
        self._sockets = [self.bcm, self.errors]
        self._ready: deque[can.Message | Silence] = deque()

    def recv(self, timeout: float | None = None) -> can.Message | Silence | None:
        if self._ready:
            return self._ready.popleft()
        try:
            item = self._read(self.bcm, socket.MSG_DONTWAIT)
            if item is None:
                ready, _, _ = select.select(self._sockets, [], [], timeout)
                for sock in ready:
                    item = self._read(sock, socket.MSG_DONTWAIT)
                    if item is not None:
                        break
            if isinstance(item, Silence):
                self._date(item)
        except OSError as error:  # interface down or gone: the link reopens
            raise can.CanOperationError(f"Failed to receive: {error.strerror}",
                                        error.errno) from error
        return item

    def _read(self, sock: Any, flags: int) -> can.Message | Silence | None:
        try:
            if sock is self.errors:
                frame, stamp, _ = read_message(sock, sc.CANFD_MTU, flags)
                return message_of(frame, stamp, self.channel)
            data, stamp, drops = read_message(sock, self._size, flags)
        except BlockingIOError:
            return None
        self.drops.update(drops, stamp)
        opcode, op_flags, _count, _s1, _u1, _s2, _u2, can_id, nframes = \
            _HEAD.unpack_from(data)
        if opcode == socket.CAN_BCM_RX_CHANGED and nframes:
            return message_of(data[HEAD_SIZE:], stamp, self.channel)
        if opcode == socket.CAN_BCM_RX_TIMEOUT:
            op = self._ops.get((can_id, bool(op_flags & socket.CAN_BCM_CAN_FD_FRAME)))
            if op is not None:
                self.silences += 1
                return Silence(op.key, time.time())
        return None

    def _date(self, silence: Silence) -> None:
        """A kernel timeout carries no time; read late (a backlog), the time it is read
        would put it after frames the kernel received before it. Whatever the queue holds
        behind it came later, so the first frame among that dates it (and the silences
        between) at the latest; those items are handed out next, in order."""
        after: list[can.Message | Silence] = []
        while True:
            item = self._read(self.bcm, socket.MSG_DONTWAIT)
            if item is None:
                break
            after.append(item)
            if item.__class__ is not Silence:
                silence.timestamp = min(silence.timestamp, item.timestamp)
                break
        for other in after:
            if other.__class__ is Silence:
                other.timestamp = min(other.timestamp, silence.timestamp)
        self._ready.extend(after)

    def kernel_frames(self) -> int | None:
        """Frames of the mapped ids the kernel received on this socket (its op counters)."""
        if self.bcm is None:
            return None
        try:
            path = f"/proc/net/can-bcm/{os.fstat(self.bcm.fileno()).st_ino}"
            with open(path) as fh:
                text = fh.read()
        except OSError:
            return None
        return sum(int(m.group(1)) for m in _OP_FRAMES.finditer(text))

    def shutdown(self) -> None:
        for sock in (self.bcm, self.errors):
            if sock is not None:
                try:
                    sock.close()
                except OSError:
                    pass
        self.bcm = self.errors = None


