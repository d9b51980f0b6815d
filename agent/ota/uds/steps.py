"""Run one UDS step under its own time budget, with retries inside that budget."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

import can
import isotp
from udsoncan.exceptions import (
    InvalidResponseException,
    NegativeResponseException,
    TimeoutException,
    UnexpectedResponseException,
)

from agent.ota.uds.connection import EcuLink, StepDeadline
from agent.ota.uds.errors import (
    FlashError,
    InvalidResponse,
    NegativeResponse,
    StepTimeout,
    TransportError,
    UnexpectedResponse,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

BUSY_REPEAT_REQUEST = 0x21
# NRCs after which the same request may succeed when repeated.
RETRYABLE_NRCS = frozenset({BUSY_REPEAT_REQUEST})


class StepRunner:
    """Per-step watchdog: the deadline bounds every wait; 0x78 keeps waiting inside it.

    udsoncan's exceptions become typed ``FlashError``s (``agent.ota.uds.errors``): timeouts
    and ISO-TP/CAN send failures are ``TransportError``s, invalid, unexpected and negative
    answers ``ProtocolError``s. ``retries`` extra attempts are made after a transport error
    or a retryable NRC, as long as the budget lasts; ``retries=None`` keeps trying until
    the budget ends (used after a reset, while the ECU boots). Time spent and retries made
    are accumulated per step name.
    """

    def __init__(self, link: EcuLink, retries: int):
        self.link = link
        self.retries = retries
        self.timings: dict[str, float] = {}
        self.retry_counts: dict[str, int] = {}

    def run(self, step: str, budget_s: float, action: Callable[[], T], *,
            retries: int | None | str = "default", pause_s: float = 0.0) -> T:
        limit = self.retries if retries == "default" else retries
        start = time.monotonic()
        deadline = start + budget_s
        attempts = 0
        try:
            while True:
                attempts += 1
                failure: FlashError
                self.link.conn.deadline = deadline
                try:
                    with self.link.lock:
                        return action()
                except StepDeadline:
                    raise StepTimeout(step, budget_s, f"attempt {attempts}") from None
                except (TimeoutException, isotp.BlockingSendTimeout, TimeoutError) as exc:
                    failure = StepTimeout(step, budget_s, f"{attempts} attempt(s); last: {exc}")
                except (isotp.BlockingSendFailure, can.CanError, OSError) as exc:
                    failure = TransportError(step, f"{type(exc).__name__}: {exc} "
                                                   f"(attempt {attempts})")
                except NegativeResponseException as exc:
                    failure = NegativeResponse(step, exc.response.code, _service_id(exc))
                    if exc.response.code not in RETRYABLE_NRCS:
                        raise failure from None
                except InvalidResponseException as exc:
                    raise InvalidResponse(step, str(exc)) from None
                except UnexpectedResponseException as exc:
                    raise UnexpectedResponse(step, str(exc)) from None
                finally:
                    self.link.conn.deadline = None
                if isinstance(limit, int) and attempts > limit:
                    raise failure
                if time.monotonic() + pause_s >= deadline:
                    raise StepTimeout(step, budget_s, f"{attempts} attempt(s)")
                self.retry_counts[step] = self.retry_counts.get(step, 0) + 1
                # retries=None polls an ECU that is expected to be silent for a while.
                log.log(logging.INFO if limit is None else logging.WARNING,
                        "%s: %s attempt %d failed (%s); retrying", self.link.ecu.name, step,
                        attempts, failure)
                if pause_s:
                    time.sleep(pause_s)
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.monotonic() - start


def _service_id(exc: NegativeResponseException) -> int | None:
    """The refused request's service id, as udsoncan parsed it from ``7F SID NRC``."""
    service = getattr(exc.response, "service", None)
    try:
        return int(service.request_id()) if service is not None else None
    except (AttributeError, TypeError, ValueError):
        return None
