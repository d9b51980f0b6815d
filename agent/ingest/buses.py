"""Live CAN buses: open through python-can with acceptance filters, survive everything.

One reader thread per bus blocks in ``recv`` and hands frames, stamped with the monotonic
clock, to the pipeline thread through one queue. A bus that errors, goes bus-off or
vanishes (USB adapter unplugged, ``ip link set can0 down``) is counted, logged, closed
and reopened with exponential backoff; the other buses go on.
"""

from __future__ import annotations

import importlib
import logging
import queue
import random
import threading
import time
from typing import Any

import can

from agent.ingest.setup import BusSetup

log = logging.getLogger(__name__)

# SocketCAN error-frame class bits (linux/can/error.h)
CAN_ERR_BUSOFF = 0x00000040
CAN_ERR_RESTARTED = 0x00000100


def open_bus(setup: BusSetup) -> can.BusABC:
    cfg = setup.config
    kwargs: dict[str, Any] = dict(cfg.options)
    kwargs.setdefault("can_filters", setup.can_filters())
    if cfg.fd:
        kwargs.setdefault("fd", True)
        if cfg.data_bitrate:
            kwargs.setdefault("data_bitrate", cfg.data_bitrate)
    if cfg.interface not in ("socketcan", "virtual", "udp_multicast"):
        kwargs.setdefault("bitrate", cfg.bitrate)  # socketcan's bitrate belongs to `ip link`
    if cfg.interface == "socketcan":
        kwargs.setdefault("receive_own_messages", False)
    if ":" in cfg.interface:  # "package.module:BusClass": a vendor driver outside python-can
        module, _, cls = cfg.interface.partition(":")
        bus_class = getattr(importlib.import_module(module), cls)
        return bus_class(channel=cfg.channel, **kwargs)
    return can.Bus(interface=cfg.interface, channel=cfg.channel, **kwargs)


class BusCounters:
    __slots__ = ("received", "errors", "bus_off", "reconnects", "open_failures", "connected")

    def __init__(self) -> None:
        self.received = self.errors = self.bus_off = 0
        self.reconnects = self.open_failures = 0
        self.connected = False

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class BusReader(threading.Thread):
    """Reads one bus into ``out`` as ``(bus_index, msg, t_mono)``."""

    def __init__(self, index: int, setup: BusSetup, out: queue.SimpleQueue, *,
                 recv_timeout: float = 0.5):
        super().__init__(name=f"bus-{setup.name}", daemon=True)
        self.index = index
        self.setup = setup
        self.out = out
        self.recv_timeout = recv_timeout
        self.counters = BusCounters()
        self.bus: can.BusABC | None = None
        self.opened = threading.Event()
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        delay = self.setup.config.reconnect_min_s
        first = True
        while not self._stopping.is_set():
            try:
                self.bus = open_bus(self.setup)
            except Exception as exc:  # python-can raises per-interface error types
                self.counters.open_failures += 1
                log.warning("bus %s: cannot open %s:%s (%s); retry in %.1f s",
                            self.setup.name, self.setup.config.interface,
                            self.setup.config.channel, exc, delay)
                self._stopping.wait(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.setup.config.reconnect_max_s)
                continue
            if not first:
                self.counters.reconnects += 1
                log.warning("bus %s: reconnected", self.setup.name)
            first = False
            delay = self.setup.config.reconnect_min_s
            self.counters.connected = True
            self.opened.set()
            try:
                self._pump(self.bus)
            except Exception as exc:
                self.counters.errors += 1
                log.warning("bus %s: %s; reopening", self.setup.name, exc)
            finally:
                self.counters.connected = False
                try:
                    self.bus.shutdown()
                except Exception:
                    pass
                self.bus = None
            if not self._stopping.is_set():
                self._stopping.wait(delay)

    def _pump(self, bus: can.BusABC) -> None:
        recv = bus.recv
        put = self.out.put
        index = self.index
        mono = time.monotonic
        wall = time.time
        counters = self.counters
        while not self._stopping.is_set():
            msg = recv(self.recv_timeout)
            if msg is None:
                continue
            # The driver's receive timestamp (kernel time on SocketCAN) moved onto the
            # monotonic clock: a reader thread that got the CPU late must not look like a
            # gap on the bus. A bogus or jumped timestamp falls back to "now".
            now = mono()
            t = msg.timestamp - (wall() - now)
            if not now - 1.0 < t <= now:
                t = now
            if msg.is_error_frame:
                counters.errors += 1
                if msg.arbitration_id & CAN_ERR_BUSOFF:
                    counters.bus_off += 1
                    log.warning("bus %s: bus-off", self.setup.name)
                continue
            counters.received += 1
            put((index, msg, t))
