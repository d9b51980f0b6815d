"""Live CAN buses: open through python-can with acceptance filters, survive everything.

One reader thread per bus blocks in ``recv`` and hands frames, stamped with the monotonic
clock, to the pipeline thread through one queue. A bus that errors, goes bus-off or
vanishes (USB adapter unplugged, ``ip link set can0 down``) is counted, logged, closed
and reopened with exponential backoff; the other buses go on.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from typing import Any

import can

from agent.ingest.decoder import Silence
from agent.ingest.setup import BusSetup

log = logging.getLogger(__name__)

# SocketCAN error-frame class bits (linux/can/error.h)
CAN_ERR_BUSOFF = 0x00000040


def open_bus(setup: BusSetup) -> Any:
    """The bus as configured: python-can's factory, except SocketCAN, which reads the
    kernel's drop counter and (``receive = "bcm"``) filters contents in the kernel.

    Only the agent config decides: ``ignore_config`` keeps /etc/can.conf, ~/.canrc and the
    CAN_* variables (CAN_CONFIG may add any argument) out of a vehicle's buses. A driver
    outside python-can is one of its plugins: the package declares an entry point in the
    ``can.interface`` group and ``interface`` names it."""
    cfg = setup.config
    if cfg.interface == "socketcan":
        from agent.ingest import socketcan

        if cfg.receive == "bcm":
            return socketcan.BcmBus(cfg.channel, socketcan.content_filters(setup.plans, cfg.fd),
                                    fd=cfg.fd, rcvbuf=cfg.rcvbuf_bytes)
        options = {"receive_own_messages": False, "can_filters": setup.can_filters(),
                   "fd": cfg.fd, **cfg.options}
        return socketcan.RawSocketcanBus(cfg.channel, rcvbuf=cfg.rcvbuf_bytes, **options)
    kwargs: dict[str, Any] = dict(cfg.options)
    kwargs.setdefault("can_filters", setup.can_filters())
    if cfg.fd:
        kwargs.setdefault("fd", True)
        if cfg.data_bitrate:
            kwargs.setdefault("data_bitrate", cfg.data_bitrate)
    if cfg.interface not in ("virtual", "udp_multicast"):
        kwargs.setdefault("bitrate", cfg.bitrate)  # socketcan's bitrate belongs to `ip link`
    return can.Bus(interface=cfg.interface, channel=cfg.channel, ignore_config=True, **kwargs)


BACKLOG_S = 120.0          # how far behind the bus a late reader's frames may be dated
ERROR_LOG_EVERY_S = 10.0   # bus-off / error frames: logged at most this often, always counted
OVERRUN_EVERY_S = 10.0     # a bus.overrun record at most this often per bus


class BusCounters:
    """Per-bus health counters. ``received``: messages the agent read (on ``bcm``, the
    change notices); ``bus_frames``: frames of mapped ids the kernel received for the
    agent (``received + dropped`` on ``raw``, the broadcast manager's own count on
    ``bcm``); ``dropped``: frames (notices) the kernel dropped because the agent's
    receive queue was full (SocketCAN only); ``silences``: receive timeouts on ``bcm``."""

    __slots__ = ("received", "bus_frames", "dropped", "silences", "errors", "bus_off",
                 "reconnects", "open_failures", "connected")

    def __init__(self) -> None:
        self.received = self.bus_frames = self.dropped = self.silences = 0
        self.errors = self.bus_off = 0
        self.reconnects = self.open_failures = 0
        self.connected = False

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class BusLink:
    """One bus, opened on demand and reopened with backoff after any failure.

    ``poll()`` never raises and never blocks longer than its timeout, so the same link
    serves a reader thread (several buses) or the pipeline thread itself (one bus: no
    hand-off between threads per frame).
    """

    def __init__(self, setup: BusSetup):
        self.setup = setup
        self.counters = BusCounters()
        self.bus: can.BusABC | None = None
        self.opened = threading.Event()
        self._min_delay = self._delay = setup.config.reconnect_min_s
        self._retry_at = 0.0
        self._ever_opened = False
        self._last_t = 0.0
        self._offset = 0.0              # time.time() - time.monotonic(), refreshed
        self._clock_at = -1e18          # monotonic time of that reading
        self._since_clock = 0
        self.drops: Any = None          # the open socket's DropCounter (SocketCAN)
        self._dropped_before = 0        # drops and kernel frame counts of closed sockets
        self._frames_before = 0
        self._overrun: list[Any] = [0, None, None]   # drops not yet reported, from, to
        self._overrun_at = -1e18
        self._error_log_at = -1e18
        self._errors_unlogged = 0

    def poll(self, timeout: float) -> tuple[can.Message, float] | None:
        """The next frame and its receive time on the monotonic clock, or None."""
        bus = self.bus
        if bus is None:
            bus = self._open(timeout)
            if bus is None:
                return None
        try:
            msg = bus.recv(timeout)
        except Exception as exc:  # adapter gone, interface down, driver error
            self.counters.errors += 1
            log.warning("bus %s: %s; reopening in %.1f s", self.setup.name, exc, self._delay)
            self.close()
            # A link that fails again right after opening (interface down: the socket opens,
            # the first read gets ENETDOWN) backs off like a failed open.
            self._retry_at = time.monotonic() + self._delay * random.uniform(0.8, 1.2)
            self._delay = min(self._delay * 2, self.setup.config.reconnect_max_s)
            return None
        if msg is None:
            return None
        self._delay = self._min_delay  # a frame: the link really works
        # The driver's receive timestamp (kernel time on SocketCAN) moved onto the
        # monotonic clock: a reader that got the CPU late must not look like a gap on the
        # bus. The wall-to-monotonic offset is read every 64 frames, and at once when a
        # timestamp is not within a second of the last reading; a timestamp in the future
        # or older than BACKLOG_S (bogus, or the wall clock jumped) falls back to "now".
        self._since_clock += 1
        t = msg.timestamp - self._offset
        if self._since_clock >= 64 or not self._last_t - 1.0 < t <= self._clock_at + 1.0:
            self._since_clock = 0
            now = self._clock_at = time.monotonic()
            self._offset = time.time() - now
            t = msg.timestamp - self._offset
            if not now - BACKLOG_S < t <= now + 0.001:
                t = now
        if t < self._last_t:  # the clock offset jitters by microseconds: keep time monotonic
            t = self._last_t
        self._last_t = t
        if msg.is_error_frame:
            self._error_frame(msg, t)
            return None
        if msg.__class__ is Silence:
            self.counters.silences += 1
        else:
            self.counters.received += 1
        return msg, t

    def _error_frame(self, msg: can.Message, t: float) -> None:
        c = self.counters
        c.errors += 1
        if msg.arbitration_id & CAN_ERR_BUSOFF:
            c.bus_off += 1
        self._errors_unlogged += 1
        if t - self._error_log_at >= ERROR_LOG_EVERY_S:
            log.warning("bus %s: %s; %d error frame(s) since the last report, %d bus-off "
                        "in all", self.setup.name,
                        "bus-off" if msg.arbitration_id & CAN_ERR_BUSOFF else
                        f"error frame class 0x{msg.arbitration_id & 0x1FFFFFFF:X}",
                        self._errors_unlogged, c.bus_off)
            self._error_log_at = t
            self._errors_unlogged = 0

    def refresh(self) -> None:
        """Bring ``dropped`` and ``bus_frames`` up to date (health time, not per frame)."""
        c = self.counters
        drops = self.drops
        c.dropped = self._dropped_before + (drops.total if drops is not None else 0)
        kernel = getattr(self.bus, "kernel_frames", None)
        frames = kernel() if kernel is not None else None
        if frames is None:
            c.bus_frames = c.received + c.dropped
        else:
            c.bus_frames = self._frames_before + frames

    def overrun(self, now: float) -> tuple[int, float | None, float | None] | None:
        """Frames the kernel dropped since the last report, at most every OVERRUN_EVERY_S:
        (count, monotonic receive time of the last frame before, of the first after)."""
        self._collect_drops()
        if not self._overrun[0] or now - self._overrun_at < OVERRUN_EVERY_S:
            return None
        self._overrun_at = now
        n, since, until = self._overrun
        self._overrun = [0, None, None]
        self.refresh()
        log.warning("bus %s: the kernel dropped %d frame(s) while the agent was late "
                    "reading (%d in all)", self.setup.name, n, self.counters.dropped)
        return n, since, until

    def _collect_drops(self) -> None:
        drops = self.drops
        if drops is None or not drops.pending:
            return
        n, since, until = drops.take()
        pending = self._overrun
        if not pending[0]:
            pending[1] = None if since is None else since - self._offset
        pending[0] += n
        pending[2] = None if until is None else until - self._offset

    def _open(self, timeout: float) -> can.BusABC | None:
        wait = self._retry_at - time.monotonic()
        if wait > 0:
            time.sleep(min(wait, timeout))
            return None
        try:
            self.bus = open_bus(self.setup)
        except Exception as exc:  # python-can raises per-interface error types
            self.counters.open_failures += 1
            log.warning("bus %s: cannot open %s:%s (%s); retry in %.1f s", self.setup.name,
                        self.setup.config.interface, self.setup.config.channel, exc,
                        self._delay)
            self._retry_at = time.monotonic() + self._delay * random.uniform(0.8, 1.2)
            self._delay = min(self._delay * 2, self.setup.config.reconnect_max_s)
            return None
        if self._ever_opened:
            self.counters.reconnects += 1
            log.warning("bus %s: reconnected", self.setup.name)
        self._ever_opened = True
        self.counters.connected = True
        self.drops = getattr(self.bus, "drops", None)
        self.opened.set()
        return self.bus

    def close(self) -> None:
        if self.bus is not None:
            self.refresh()  # the closing socket's counts live on in the totals
            self._dropped_before = self.counters.dropped
            if getattr(self.bus, "kernel_frames", None) is not None:
                self._frames_before = self.counters.bus_frames
            self._collect_drops()  # reported later, with the next socket's
        bus, self.bus = self.bus, None
        self.drops = None
        self.counters.connected = False
        if bus is not None:
            try:
                bus.shutdown()
            except Exception:
                pass


class BusReader(threading.Thread):
    """Reads one bus into ``out`` as ``(bus_index, msg, t_mono)`` (several-bus setups)."""

    def __init__(self, index: int, setup: BusSetup, out: queue.SimpleQueue, *,
                 recv_timeout: float = 0.5):
        super().__init__(name=f"bus-{setup.name}", daemon=True)
        self.index = index
        self.setup = setup
        self.out = out
        self.recv_timeout = recv_timeout
        self.link = BusLink(setup)
        self.counters = self.link.counters
        self.opened = self.link.opened
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        poll, put, index = self.link.poll, self.out.put, self.index
        try:
            while not self._stopping.is_set():
                item = poll(self.recv_timeout)
                if item is not None:
                    put((index, item[0], item[1]))
        finally:
            self.link.close()
