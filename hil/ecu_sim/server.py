"""``VirtualEcu``: a UDS server on can-isotp over any python-can bus.

udsoncan is client-only, so this is the small server side: one thread reads ISO-TP
requests, applies injected faults, runs the service handler (``services/``), bridges long
work with NRC 0x78 and sends the answer. The ECU is single-threaded like a real bootloader.

Functionally addressed requests (85 82, 28 83 01, 3E 80 to every ECU of the bus) arrive
on a second, receive-only can-isotp stack on the functional id (``[ecu] functional_id``
for normal 11/29-bit addressing, ISO 15765-4's 0x18DB<TA><SA> for normal fixed); its
transmit side is never used for single frames, which is all a functional request may be.
Answers go out on the physical response id. ISO 14229-1 7.5: a functional request never
hears NRC 0x11, 0x12, 0x31, 0x7E or 0x7F; any other NRC is sent, suppressPosRsp or not.
In strict mode a physical request with suppressPosRsp gets every NRC, and the final
positive answer after a 0x78.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import can
import isotp

from agent.ota.settings import EcuConfig
from agent.ota.uds.connection import isotp_address, isotp_params
from hil.ecu_sim.faults import Fault
from hil.ecu_sim.services import HANDLERS, Reply, step_of
from hil.ecu_sim.settings import VirtualEcuConfig
from hil.ecu_sim.state import EcuState, Nrc

log = logging.getLogger(__name__)

RESPONSE_PENDING = 0x78
# Negative answers that are not sent to a suppressed request (ISO 14229-1 7.5).
_QUIET_NRCS = {0x11, 0x12, 0x31, 0x7E, 0x7F}


def physical_address(ecu: EcuConfig) -> isotp.Address:
    """The ECU's physical address. can-isotp's normal-fixed address also takes the
    functional 0x18DB.... frames; here only the functional stack may see those, so its
    functional bits are set to the physical ones."""
    if ecu.addressing != "normal_fixed_29bit":
        return isotp_address(ecu, server=True)
    return isotp.Address(isotp.AddressingMode.NormalFixed_29bits,
                         source_address=ecu.target_address, target_address=ecu.source_address,
                         functional_id=0x18DA0000)


def functional_address(ecu: EcuConfig) -> isotp.AsymmetricAddress:
    """Receive on the functional request id, transmit (flow control only, which single
    frames never need) on the physical response id."""
    if ecu.addressing == "normal_fixed_29bit":
        tester = isotp_address(ecu)
        fid = tester.get_tx_arbitration_id(isotp.TargetAddressType.Functional)
        tx = physical_address(ecu)
        rx = isotp.Address(isotp.AddressingMode.Normal_29bits, rxid=fid, rx_only=True)
        tx_part = isotp.Address(isotp.AddressingMode.Normal_29bits,
                               txid=tx.get_tx_arbitration_id(), tx_only=True)
        return isotp.AsymmetricAddress(tx_addr=tx_part, rx_addr=rx)
    mode = (isotp.AddressingMode.Normal_11bits if ecu.addressing == "normal_11bit"
            else isotp.AddressingMode.Normal_29bits)
    return isotp.AsymmetricAddress(
        tx_addr=isotp.Address(mode, txid=ecu.rxid, tx_only=True),
        rx_addr=isotp.Address(mode, rxid=ecu.functional_id, rx_only=True))


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
            bus, self.notifier, address=physical_address(config.ecu), params=params)
        self.functional = isotp.NotifierBasedCanStack(
            bus, self.notifier, address=functional_address(config.ecu), params=params)
        self._requests: queue.Queue[tuple[bool, bytes]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"virtual-ecu-{self.name}")
        self._readers = [
            threading.Thread(target=self._read, args=(stack, functional), daemon=True,
                             name=f"virtual-ecu-{self.name}-{kind}")
            for stack, functional, kind in ((self.stack, False, "physical"),
                                            (self.functional, True, "functional"))]

    # -- lifecycle ---------------------------------------------------------------------

    def start(self) -> VirtualEcu:
        self.stack.start()
        self.functional.start()
        for reader in self._readers:
            reader.start()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        for reader in self._readers:
            reader.join(timeout=5.0)
        self.stack.stop()
        self.functional.stop()
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

    def _read(self, stack: isotp.NotifierBasedCanStack, functional: bool) -> None:
        """Both stacks into one queue, so the ECU answers one request at a time."""
        while not self._stop.is_set():
            request = stack.recv(block=True, timeout=0.1)
            if request is not None:
                self._requests.put((functional, bytes(request)))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                functional, request = self._requests.get(timeout=0.02)
            except queue.Empty:
                functional, request = False, None
            with self._lock:
                self.state.tick(time.monotonic())
                if request is None:
                    continue
                if self.state.rebooting:
                    self.state.count("dropped_while_offline")
                    continue
                try:
                    self._answer(request, functional)
                except Exception:        # a server bug must not kill the bench ECU
                    log.exception("%s: request %s failed", self.name, request[:4].hex())
                self.state.last_request = time.monotonic()
                if functional:
                    self.state.count("functional_request")

    def _take_faults(self, step: str) -> list[Fault]:
        return [f for f in self.faults if f.take(step)]

    def _answer(self, request: bytes, functional: bool = False) -> None:
        if not request:
            return
        sid, state = request[0], self.state
        step = step_of(request, self.config.sim)
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
            if fault.kind == "preconditions_fail":
                state.inject_preconditions_fail = True
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
            if functional:
                quiet = nrc in _QUIET_NRCS
            elif state.strict:
                quiet = False
            else:
                suppressed = (len(request) > 1 and request[1] & 0x80
                              and sid in (0x10, 0x11, 0x3E))
                quiet = bool(suppressed) and nrc in _QUIET_NRCS
            if not quiet:
                self._send(bytes([0x7F, sid, nrc]))
            return
        assert reply is not None
        # After a 0x78 the final answer is due even with suppressPosRsp (ISO 14229-1 7.5).
        suppress = reply.suppress and not (state.strict and (pending or reply.busy_s > 0))
        garbled = next((f for f in faults if f.kind == "garbled"), None)
        if garbled is not None and not suppress:
            self._send(reply.data[:max(1, garbled.keep)])
        elif not suppress:
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
