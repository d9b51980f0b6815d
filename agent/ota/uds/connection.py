"""A udsoncan client on ISO-TP for one ECU, with a per-step deadline on every wait.

udsoncan's own ``request_timeout`` is one overall cap that NRC 0x78 does not extend, so it is
switched off (``None``). Instead ``GuardedConnection.deadline`` bounds every send and wait of
the step in progress: P2/P2* and 0x78 handling stay udsoncan's, the step budget is ours.
The guard also drops late answers to an abandoned request (after a timeout and retry), so a
stale positive response can never be taken for the answer to the next request.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import can
import isotp
from udsoncan.client import Client
from udsoncan.configs import default_client_config
from udsoncan.connections import BaseConnection, IsoTPSocketConnection, PythonIsoTpConnection
from udsoncan.exceptions import TimeoutException

from agent.ota.settings import EcuConfig
from agent.ota.uds.security import compute_key
from agent.ota.uds.versions import did_codecs

log = logging.getLogger(__name__)

# Services whose positive response echoes the sub-function (without the SPR bit 0x80).
_ECHO_SUBFUNCTION = {0x10, 0x11, 0x27, 0x28, 0x31, 0x3E, 0x85}


class StepDeadline(Exception):
    """Internal: the current step's budget ran out while sending or waiting."""


def isotp_address(ecu: EcuConfig, *, server: bool = False) -> isotp.Address:
    """The ISO-TP address of the tester side, or of the ECU side with ``server=True``."""
    if ecu.addressing == "normal_fixed_29bit":
        sa, ta = ecu.source_address, ecu.target_address
        if server:
            sa, ta = ta, sa
        return isotp.Address(isotp.AddressingMode.NormalFixed_29bits,
                             source_address=sa, target_address=ta)
    mode = (isotp.AddressingMode.Normal_11bits if ecu.addressing == "normal_11bit"
            else isotp.AddressingMode.Normal_29bits)
    txid, rxid = (ecu.rxid, ecu.txid) if server else (ecu.txid, ecu.rxid)
    return isotp.Address(mode, txid=txid, rxid=rxid)


def functional_address(ecu: EcuConfig) -> isotp.AsymmetricAddress:
    """Where a functionally addressed request goes: the configured ``functional_id``, or
    ISO 15765-4's 0x18DB<ta><sa> for normal fixed addressing. The stack that sends it
    receives only on that same id: never the ECU's answers (the link has those), so it
    never answers them with a second flow control."""
    if ecu.addressing == "normal_fixed_29bit":
        can_id = 0x18DB0000 | (ecu.target_address << 8) | ecu.source_address
    else:
        can_id = ecu.functional_id
    mode = (isotp.AddressingMode.Normal_11bits if ecu.addressing == "normal_11bit"
            else isotp.AddressingMode.Normal_29bits)
    return isotp.AsymmetricAddress(tx_addr=isotp.Address(mode, txid=can_id, tx_only=True),
                                   rx_addr=isotp.Address(mode, rxid=can_id, rx_only=True))


# Linux CAN_ISOTP_SF_BROADCAST: 1-to-N, single frames only, no flow control received.
_KERNEL_SF_BROADCAST = 0x800


def isotp_params(ecu: EcuConfig) -> dict[str, Any]:
    return {
        "stmin": ecu.stmin,
        "blocksize": ecu.blocksize,
        "tx_data_length": ecu.tx_data_length,
        "tx_data_min_length": 8,
        "tx_padding": 0xCC,
        "can_fd": ecu.can_fd,
        "bitrate_switch": ecu.bitrate_switch and ecu.can_fd,
        # The P2 timer starts when send() returns: it must return once the last frame is out.
        "blocking_send": True,
        "max_frame_size": max(4095, ecu.max_block_length),
    }


def _response_matches(request: bytes, response: bytes) -> bool:
    if not request or not response:
        return False
    sid = request[0]
    if response[0] == 0x7F:
        return len(response) >= 2 and response[1] == sid
    if response[0] != sid + 0x40:
        return False
    if sid in _ECHO_SUBFUNCTION and len(request) > 1:
        if len(response) < 2 or response[1] != request[1] & 0x7F:
            return False
        if sid == 0x31:
            return response[2:4] == request[2:4]
    if sid == 0x36:                     # block sequence counter, all 8 bits
        return len(request) > 1 and response[1:2] == request[1:2]
    if sid == 0x22:
        return response[1:3] == request[1:3]
    return True


class GuardedConnection(BaseConnection):
    """Wraps a udsoncan connection: step deadline on send/wait, stale answers dropped."""

    def __init__(self, inner: BaseConnection, name: str | None = None):
        super().__init__(name)
        self.inner = inner
        self.deadline: float | None = None
        self.last_activity = time.monotonic()
        self.stale_dropped = 0
        self._request = b""

    def open(self) -> GuardedConnection:
        self.inner.open()
        return self

    def close(self) -> None:
        self.inner.close()

    def is_open(self) -> bool:
        return self.inner.is_open()

    def __enter__(self) -> GuardedConnection:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def empty_rxqueue(self) -> None:
        self.inner.empty_rxqueue()

    def empty_txqueue(self) -> None:
        self.inner.empty_txqueue()

    def _remaining(self) -> float | None:
        if self.deadline is None:
            return None
        return self.deadline - time.monotonic()

    def specific_send(self, payload: bytes, timeout: float | None = None) -> None:
        remaining = self._remaining()
        if remaining is not None:
            if remaining <= 0:
                raise StepDeadline()
            timeout = remaining if timeout is None else min(timeout, remaining)
        self._request = bytes(payload)
        try:
            self.inner.send(payload, timeout=timeout)
        except isotp.BlockingSendTimeout:
            if self.deadline is not None and time.monotonic() >= self.deadline:
                raise StepDeadline() from None
            raise
        finally:
            self.last_activity = time.monotonic()

    def specific_wait_frame(self, timeout: float | None = None) -> bytes | None:
        end = None if timeout is None else time.monotonic() + timeout
        while True:
            limit, by_deadline = end, False
            if self.deadline is not None and (limit is None or self.deadline <= limit):
                limit, by_deadline = self.deadline, True
            wait = None if limit is None else max(0.0, limit - time.monotonic())
            try:
                frame = self.inner.wait_frame(timeout=wait, exception=True)
            except TimeoutException:
                if by_deadline:
                    raise StepDeadline() from None
                raise
            if frame is None:
                raise TimeoutException("no frame")
            self.last_activity = time.monotonic()
            if _response_matches(self._request, frame):
                return frame
            self.stale_dropped += 1
            log.info("dropped a late or unrelated answer %s to request %s",
                     frame[:4].hex(), self._request[:4].hex())


class _DebugLevel(logging.Filter):
    """Re-level every record of a library logger to DEBUG; it passes only where DEBUG is
    enabled for that logger (the level check before the filter saw the old level)."""

    def __init__(self, logger: logging.Logger):
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG:
            record.msg = f"[{record.levelname.lower()}] {record.msg}"
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return self.logger.isEnabledFor(logging.DEBUG)


def demote_to_debug(logger: logging.Logger) -> None:
    """udsoncan's logger at DEBUG: its warnings and errors are details of failures this
    package reports itself (typed, with the step); seen with DEBUG logging on."""
    if not any(isinstance(f, _DebugLevel) for f in logger.filters):
        logger.addFilter(_DebugLevel(logger))


def _security_algo(level: int, seed: bytes, params: Any) -> bytes:
    # udsoncan inspects the signature of this plain function; keep (level, seed, params).
    return compute_key(params["algorithm"], level, seed, params["secret"])


def client_config(ecu: EcuConfig) -> dict[str, Any]:
    config: dict[str, Any] = dict(default_client_config)
    config.update({
        "request_timeout": None,        # budgets are per step, see GuardedConnection
        "p2_timeout": ecu.p2_s,
        "p2_star_timeout": ecu.p2_star_s,
        "use_server_timing": True,
        "security_algo": _security_algo,
        "security_algo_params": {"algorithm": ecu.key_algorithm, "secret": b""},
        "server_address_format": ecu.address_format,
        "server_memorysize_format": ecu.memorysize_format,
        "data_identifiers": did_codecs(ecu.dids),
        "logger_name": ecu.name,
    })
    return config


class EcuLink:
    """The ISO-TP stack, connection and udsoncan client for one ECU; open/close as a unit.

    ``lock`` serialises requests between the flash thread and the TesterPresent keeper.
    With ``ecu.kernel_isotp`` the kernel socket is used and ``bus`` is not needed.
    """

    def __init__(self, ecu: EcuConfig, bus: can.BusABC | None = None,
                 notifier: can.Notifier | None = None):
        self.ecu = ecu
        self.bus = bus
        self.lock = threading.RLock()
        self._own_notifier = notifier is None and not ecu.kernel_isotp
        self.notifier = notifier
        self.stack: isotp.NotifierBasedCanStack | None = None
        if ecu.kernel_isotp:
            interface = ecu.kernel_interface or (str(bus.channel_info) if bus else "")
            if not interface:
                raise ValueError(f"ECU {ecu.name}: kernel_isotp needs kernel_interface")
            inner: BaseConnection = IsoTPSocketConnection(
                interface, isotp_address(ecu), tpsock=self._kernel_socket(ecu), name=ecu.name)
        else:
            if bus is None:
                raise ValueError(f"ECU {ecu.name}: a python-can bus is needed")
            if self.notifier is None:
                self.notifier = can.Notifier(bus, [], timeout=0.1)
            self.stack = isotp.NotifierBasedCanStack(
                bus, self.notifier, address=isotp_address(ecu), params=isotp_params(ecu))
            inner = PythonIsoTpConnection(self.stack, name=ecu.name)
        self.conn = GuardedConnection(inner, name=ecu.name)
        config = client_config(ecu)
        secret = ecu.secret()
        config["security_algo_params"] = {"algorithm": ecu.key_algorithm, "secret": secret}
        self.client = Client(self.conn, config=config)
        # udsoncan logs every NRC 0x31 (DID not supported) and every P2 timeout while an ECU
        # reboots at WARNING/ERROR; this package turns them into typed errors and logs what
        # matters, so udsoncan's own lines go out at DEBUG (kept for a bench trace, not
        # silenced), whatever level the "UdsClient[<name>]" logger has.
        demote_to_debug(self.client.logger)

    @staticmethod
    def _kernel_socket(ecu: EcuConfig) -> isotp.socket:
        sock = isotp.socket(timeout=0.1)
        sock.set_fc_opts(bs=ecu.blocksize, stmin=ecu.stmin)
        if ecu.can_fd:
            sock.set_ll_opts(mtu=isotp.socket.LinkLayerProtocol.CAN_FD,
                             tx_dl=ecu.tx_data_length,
                             tx_flags=1 if ecu.bitrate_switch else 0)  # CANFD_BRS
        return sock

    def open(self) -> EcuLink:
        self.client.open()
        return self

    def send_functional(self, payload: bytes, timeout: float) -> None:
        """One single-frame request to every ECU of the bus (ISO 14229-1 functional
        addressing), on a stack of its own (see ``functional_address``) opened per
        request: these requests are rare."""
        address = functional_address(self.ecu)
        if self.ecu.kernel_isotp:
            sock = isotp.socket(timeout=timeout)
            sock.set_opts(optflag=_KERNEL_SF_BROADCAST)
            interface = self.ecu.kernel_interface or (str(self.bus.channel_info)
                                                      if self.bus else "")
            try:
                sock.bind(interface, address)
                sock.send(payload)
            finally:
                sock.close()
            return
        assert self.bus is not None and self.notifier is not None
        stack = isotp.NotifierBasedCanStack(self.bus, self.notifier, address=address,
                                            params=isotp_params(self.ecu))
        stack.start()
        try:
            stack.send(payload, send_timeout=timeout)
        finally:
            stack.stop()

    def functional_request(self, payload: bytes, wait_s: float) -> int | None:
        """Send ``payload`` (suppressPosRsp set) to every ECU; this ECU's negative answer
        within ``wait_s`` (P2; P2* after 0x78) is returned as its NRC, else None. Other
        ECUs' answers arrive on their own ids and are not ours to judge."""
        self.conn.empty_rxqueue()
        self.conn._request = bytes(payload)
        self.send_functional(payload, timeout=max(wait_s, 0.1))
        self.conn.last_activity = time.monotonic()
        wait = wait_s
        while True:
            try:
                frame = self.conn.specific_wait_frame(timeout=wait)
            except TimeoutException:
                return None
            if len(frame) >= 3 and frame[0] == 0x7F:
                if frame[2] != 0x78:
                    return frame[2]
                wait = self.client.session_timing.p2_star_server_max or self.ecu.p2_star_s

    def close(self) -> None:
        try:
            self.client.close()
        finally:
            if self._own_notifier and self.notifier is not None:
                self.notifier.stop()

    def __enter__(self) -> EcuLink:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()
