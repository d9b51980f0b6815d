"""``VirtualEcu``: a UDS server on can-isotp over any python-can bus.

udsoncan is client-only, so this is the small server side: one thread reads ISO-TP
requests, applies injected faults, runs the service handler (``services/``), bridges long
work with NRC 0x78 and sends the answer. The ECU is single-threaded like a real bootloader.
"""

from __future__ import annotations

import logging
import threading
import time

import can
import isotp

from agent.ota.uds.connection import isotp_address, isotp_params
from hil.ecu_sim.faults import Fault
from hil.ecu_sim.services import HANDLERS, Reply, step_of
from hil.ecu_sim.settings import VirtualEcuConfig
from hil.ecu_sim.state import EcuState, Nrc

log = logging.getLogger(__name__)

RESPONSE_PENDING = 0x78
# Negative answers that are not sent to a suppressed request (ISO 14229-1 7.5).
_QUIET_NRCS = {0x11, 0x12, 0x31, 0x7E, 0x7F}


class VirtualEcu:
    """Start with ``start()`` (or ``with``); ``inject(Fault(...))`` adds faults at run time."""

    def __init__(self, config: VirtualEcuConfig, bus: can.BusABC,
                 notifier: can.Notifier | None = None):
        self.config = config
        self.name = config.ecu.name
        self.bus = bus
        self.state = EcuState(config)
        self.faults: list[Fault] = list(config.fault)
        self._lock = threading.Lock()
        self._own_notifier = notifier is None
        self.notifier = notifier or can.Notifier(bus, [], timeout=0.1)
        params = isotp_params(config.ecu)
        self.stack = isotp.NotifierBasedCanStack(
            bus, self.notifier, address=isotp_address(config.ecu, server=True), params=params)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"virtual-ecu-{self.name}")

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> VirtualEcu:
        self.stack.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self.stack.stop()
        if self._own_notifier:
            self.notifier.stop()

    def __enter__(self) -> VirtualEcu:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def versions(self) -> dict[int, str]:
        with self._lock:
            return self.state.versions()

    # -- the loop ----------------------------------------------------------------------

    def _serve(self) -> None:
        while not self._stop.is_set():
            request = self.stack.recv(block=True, timeout=0.02)
            with self._lock:
                self.state.tick(time.monotonic())
                if request is None:
                    continue
                if self.state.rebooting:
                    self.state.count("dropped_while_offline")
                    continue
                try:
                    self._answer(bytes(request))
                except Exception:        # a server bug must not kill the bench ECU
                    log.exception("%s: request %s failed", self.name, bytes(request[:4]).hex())
                self.state.last_request = time.monotonic()

    def _take_faults(self, step: str) -> list[Fault]:
        return [f for f in self.faults if f.take(step)]

    def _answer(self, request: bytes) -> None:
        if not request:
            return
        sid, state = request[0], self.state
        step = step_of(request)
        state.last_request = time.monotonic()
        faults = self._take_faults(step)
        pending = [f for f in faults if f.kind == "pending"]
        slow = [f for f in faults if f.kind == "slow"]
        for fault in faults:
            log.info("%s: fault %s at %s", self.name, fault.kind, step)
            if fault.kind == "drop_out":
                state.count("drop_out")
                state.reboot(fault.offline_s)
                return
            if fault.kind == "dependency_fail":
                state.inject_dependency_fail = True
            if fault.kind == "wrong_version":
                state.version_override = {int(k, 16): v for k, v in fault.values.items()}
        nrc = next((f.nrc for f in faults if f.kind == "nrc"), None)
        handler = HANDLERS.get(sid)
        reply: Reply | None = None
        try:
            if nrc is not None:
                raise Nrc(nrc)
            if handler is None:
                raise Nrc(0x11)                        # serviceNotSupported
            reply = handler(state, request)
        except Nrc as exc:
            nrc = exc.code
        for fault in pending:
            self._pending(sid, fault.count, fault.interval_s)
        if reply is not None and reply.busy_s > 0:
            self._busy(sid, reply.busy_s)
        for fault in slow:
            self._sleep(fault.delay_s)
        if nrc is not None:
            suppressed = len(request) > 1 and request[1] & 0x80 and sid in (0x10, 0x11, 0x3E)
            if not (suppressed and nrc in _QUIET_NRCS):
                self._send(bytes([0x7F, sid, nrc]))
            return
        assert reply is not None
        garbled = next((f for f in faults if f.kind == "garbled"), None)
        if garbled is not None and not reply.suppress:
            self._send(reply.data[:max(1, garbled.keep)])
        elif not reply.suppress:
            self._send(reply.data)
        if reply.after is not None:
            reply.after()

    def _pending(self, sid: int, count: int, interval_s: float) -> None:
        for _ in range(count):
            self._send(bytes([0x7F, sid, RESPONSE_PENDING]))
            self._sleep(interval_s)

    def _busy(self, sid: int, seconds: float) -> None:
        """Work for ``seconds``, with a 0x78 first and then every ``pending_interval_s``."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self._send(bytes([0x7F, sid, RESPONSE_PENDING]))
            self._sleep(min(left, self.config.sim.pending_interval_s))

    def _sleep(self, seconds: float) -> None:
        # Released lock: tests may read state; the ECU itself still does nothing else.
        self._lock.release()
        try:
            self._stop.wait(seconds)
        finally:
            self._lock.acquire()

    def _send(self, payload: bytes) -> None:
        try:
            self.stack.send(payload, send_timeout=2.0)
        except isotp.BlockingSendFailure as exc:
            log.warning("%s: answer %s not sent: %s", self.name, payload[:3].hex(), exc)
