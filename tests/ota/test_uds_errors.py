"""Transport errors vs protocol errors, split the way udsoncan splits them (timeout,
invalid, unexpected, negative), each typed, with the NRC and service of a refusal; and
udsoncan's own log lines kept at DEBUG instead of silenced."""

from __future__ import annotations

import errno
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import can
import isotp
import pytest
from udsoncan import Response
from udsoncan.exceptions import (
    InvalidResponseException,
    NegativeResponseException,
    TimeoutException,
    UnexpectedResponseException,
)

from agent.ota.uds import (
    FlashSession,
    InvalidResponse,
    NegativeResponse,
    ProtocolError,
    StepTimeout,
    TransportError,
    UnexpectedResponse,
)
from agent.ota.uds.steps import StepRunner
from hil.ecu_sim.faults import Fault
from tests.ota.conftest import UDS_NEW_VERSIONS


@dataclass
class FakeConn:
    deadline: float | None = None


@dataclass
class FakeEcu:
    name: str = "eps"


@dataclass
class FakeLink:
    """What StepRunner uses of an EcuLink: the connection's deadline, the lock, the name."""

    conn: FakeConn = field(default_factory=FakeConn)
    lock: Any = field(default_factory=threading.RLock)
    ecu: FakeEcu = field(default_factory=FakeEcu)


def failing(exc: Exception, calls: list[int]) -> Any:
    def action() -> None:
        calls.append(1)
        raise exc
    return action


def run(exc: Exception, retries: int = 2) -> tuple[Exception, int]:
    calls: list[int] = []
    with pytest.raises(Exception) as info:
        StepRunner(FakeLink(), retries).run("erase", 5.0, failing(exc, calls))  # type: ignore[arg-type]
    return info.value, len(calls)


def test_negative_response_carries_nrc_name_and_service_and_is_a_protocol_error():
    response = Response.from_payload(bytes([0x7F, 0x31, 0x22]))
    error, calls = run(NegativeResponseException(response))
    assert isinstance(error, NegativeResponse) and isinstance(error, ProtocolError)
    assert not isinstance(error, TransportError)
    assert (error.nrc, error.service, error.step) == (0x22, 0x31, "erase")
    assert error.nrc_name == "ConditionsNotCorrect"
    assert "0x22 (ConditionsNotCorrect) to service 0x31" in str(error)
    assert calls == 1                                   # a refusal is not repeated


@pytest.mark.parametrize("exc, kind", [
    (InvalidResponseException(Response.from_payload(b"\x74"), "too short"), InvalidResponse),
    (UnexpectedResponseException(Response.from_payload(b"\x71\x01\xff\x00"), "wrong id"),
     UnexpectedResponse),
])
def test_invalid_and_unexpected_answers_are_distinct_protocol_errors(exc, kind):
    error, calls = run(exc)
    assert type(error) is kind and isinstance(error, ProtocolError)
    assert not isinstance(error, TransportError)
    assert calls == 1


@pytest.mark.parametrize("exc", [
    can.CanOperationError("bus off"),
    OSError(errno.ENETDOWN, "Network is down"),
    isotp.BlockingSendFailure("no flow control"),
])
def test_send_failures_are_transport_errors_and_retried(exc):
    """Before the split a CAN or socket error escaped the step untyped (and the campaign
    called it an internal error)."""
    error, calls = run(exc, retries=2)
    assert type(error) is TransportError and not isinstance(error, ProtocolError)
    assert type(exc).__name__ in str(error) and error.step == "erase"
    assert calls == 3


def test_no_answer_is_a_timeout_which_is_a_transport_error():
    error, calls = run(TimeoutException("P2 expired"), retries=1)
    assert isinstance(error, StepTimeout) and isinstance(error, TransportError)
    assert calls == 2


def test_ecu_refusal_on_the_bus_is_typed_and_udsoncan_logs_it_at_debug(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image, caplog):
    ecu = uds_ecu_config()
    uds_virtual_ecu(ecu, fault=[Fault(kind="nrc", step="request_download", nrc=0x70)])
    caplog.set_level(logging.DEBUG, logger=f"UdsClient[{ecu.name}]")

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, NegativeResponse), result.error
    assert (result.error.nrc, result.error.service) == (0x70, 0x34)
    error = result.as_dict()["error"]
    assert (error["category"], error["nrc"], error["service"]) == ("protocol", 0x70, 0x34)
    uds = [r for r in caplog.records if r.name == f"UdsClient[{ecu.name}]"]
    assert any("UploadDownloadNotAccepted" in r.getMessage() for r in uds), \
        [r.getMessage() for r in uds]                  # udsoncan's line: not silenced ...
    assert {r.levelno for r in uds} == {logging.DEBUG}  # ... but at DEBUG


def test_malformed_answer_on_the_bus_is_an_invalid_response(
        uds_buses, uds_ecu_config, uds_virtual_ecu, uds_image):
    ecu = uds_ecu_config()
    uds_virtual_ecu(ecu, fault=[Fault(kind="garbled", step="request_download", keep=1)])

    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, InvalidResponse), result.error
    assert result.error.step == "request_download"
    assert result.as_dict()["error"]["category"] == "protocol"


def test_a_link_that_cannot_be_opened_is_a_transport_error(uds_ecu_config, uds_image):
    ecu = uds_ecu_config(kernel_isotp=True, kernel_interface="icvnope0")

    result = FlashSession(ecu, None, uds_image(8 * 1024), UDS_NEW_VERSIONS).run()

    assert isinstance(result.error, TransportError) and result.error.step == "connect"
    assert result.as_dict()["error"]["category"] == "transport"
    assert not result.touched


def test_udsoncan_lines_pass_only_where_debug_is_on():
    """With ``-v`` (root at INFO, handler at NOTSET, as logging.basicConfig does) a
    re-levelled udsoncan warning must not be printed after all."""
    from agent.ota.uds.connection import demote_to_debug

    logger = logging.getLogger("UdsClient[test-levels]")
    seen: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = seen.append  # type: ignore[method-assign]
    logger.addHandler(handler)
    logger.propagate = False
    try:
        demote_to_debug(logger)
        demote_to_debug(logger)                          # once per logger, not per link
        logger.setLevel(logging.INFO)
        logger.warning("NRC 0x31 for DID %04X", 0xF18C)
        assert seen == []
        logger.setLevel(logging.DEBUG)
        logger.warning("NRC 0x31 for DID %04X", 0xF18C)
        assert [(r.levelno, r.getMessage()) for r in seen] == \
            [(logging.DEBUG, "[warning] NRC 0x31 for DID F18C")]
        assert len(logger.filters) == 1
    finally:
        logger.removeHandler(handler)
        logger.filters.clear()
        logger.setLevel(logging.NOTSET)
