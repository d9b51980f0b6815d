"""Frames -> canonical values, doing nothing for frames that carry nothing new.

Per frame the hot path is: one dict lookup, one ``int.from_bytes`` and one mask compare.
Only when a mapped bit changed does cantools decode the frame.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from agent.ingest.mapping import Binding
from agent.ingest.setup import BusSetup, MessagePlan

log = logging.getLogger(__name__)


class Silence:
    """No frame of a mapped message for its freshness timeout, as the kernel reports it
    (SocketCAN BCM ``RX_TIMEOUT``). Travels in the frame stream like a ``can.Message``;
    ``timestamp`` is when the notice was read (wall clock, like frames)."""

    __slots__ = ("key", "timestamp")
    is_error_frame = False

    def __init__(self, key: int, timestamp: float):
        self.key = key
        self.timestamp = timestamp


class MessageState:
    """Live state of one mapped CAN id: last masked payload, last time seen, freshness."""

    __slots__ = ("plan", "last", "seen", "stale", "length", "mask", "decode")

    def __init__(self, plan: MessagePlan):
        self.plan = plan
        self.length = plan.length
        self.mask = plan.mask
        self.last: int | None = None
        self.seen: float | None = None
        self.stale = False
        self.decode = plan.codec.decode


class DecoderCounters:
    __slots__ = ("frames", "skipped", "decoded", "wrong_length", "undecodable", "unmapped",
                 "error_frames", "remote_frames")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class FrameDecoder:
    def __init__(self, setup: BusSetup):
        self.setup = setup
        self.messages: dict[int, MessageState] = {k: MessageState(p)
                                                  for k, p in setup.plans.items()}
        self.counters = DecoderCounters()
        self._warned_ids: set[int] = set()
        # Live on a BCM bus the kernel reports silences (``silent``); polling ``seen``
        # would not work there, since frames that changed nothing never reach Python.
        self.kernel_freshness = False

    def decode(self, msg: Any, t: float) -> list[tuple[Binding, Any]] | None:
        """Canonical updates carried by ``msg`` (received at ``t``), or None if nothing new."""
        c = self.counters
        c.frames += 1
        key = msg.arbitration_id | 0x80000000 if msg.is_extended_id else msg.arbitration_id
        ms = self.messages.get(key)
        if ms is None:
            if msg.is_error_frame:
                c.error_frames += 1
            elif msg.is_remote_frame:
                c.remote_frames += 1
            else:
                c.unmapped += 1
            return None
        if msg.is_remote_frame or msg.is_error_frame:  # an error frame's id is its class
            if msg.is_error_frame:
                c.error_frames += 1
            else:
                c.remote_frames += 1
            return None
        data = msg.data
        n = ms.length
        if len(data) < n:
            c.wrong_length += 1
            self._warn(key, f"frame 0x{msg.arbitration_id:X} has {len(data)} bytes, DBC says {n}")
            return None
        ms.seen = t
        ms.stale = False
        bits = int.from_bytes(data if len(data) == n else data[:n], "big") & ms.mask
        if bits == ms.last:
            c.skipped += 1
            return None
        try:
            values = ms.decode(bytes(data[:n]), decode_choices=False)
        except Exception as exc:  # cantools raises assorted errors on bad payloads
            c.undecodable += 1
            self._warn(key, f"frame 0x{msg.arbitration_id:X} undecodable: {exc}")
            return None
        ms.last = bits
        c.decoded += 1
        out = []
        for b in ms.plan.bindings:
            phys = values.get(b.dbc_signal)
            if phys is None:  # multiplexed signal not in this frame
                continue
            if b.extra is None:
                out.append((b, b.convert(phys)))
            else:  # sign bit / second signal (mapping ``sign``, ``combine``)
                other = values.get(b.extra)
                if other is not None:
                    out.append((b, b.combine(phys, other)))  # type: ignore[misc]
        return out

    def expired(self, t: float) -> Iterator[MessageState]:
        """Messages that just went stale at ``t`` (marked so; the next frame decodes fully)."""
        if self.kernel_freshness:
            return
        for ms in self.messages.values():
            if ms.seen is not None and not ms.stale and t - ms.seen > ms.plan.timeout:
                ms.stale = True
                ms.last = None
                yield ms

    def silent(self, key: int, t: float) -> MessageState | None:
        """The kernel saw no frame of message ``key`` for its timeout, noticed at ``t``:
        stale now, last seen one timeout earlier (not before its last change)."""
        ms = self.messages.get(key)
        if ms is None or ms.seen is None or ms.stale:
            return None
        ms.seen = max(ms.seen, t - ms.plan.timeout)
        ms.stale = True
        ms.last = None
        return ms

    def _warn(self, key: int, text: str) -> None:
        if key not in self._warned_ids:  # counted always, logged once per id
            self._warned_ids.add(key)
            log.warning("bus %s: %s (counted; further ones not logged)", self.setup.name, text)
