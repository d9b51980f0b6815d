"""Typed flash errors: each says which step failed and, for ECU refusals, the NRC.

Failures of a request are split the way udsoncan splits them, so a caller can tell "the
ECU did not hear or answer" from "the ECU answered, and the answer says no / is wrong"::

    FlashError
      TransportError        the request or its answer did not get through (ISO-TP, CAN)
        StepTimeout         no answer in time (udsoncan TimeoutException, step budget)
      ProtocolError         an answer came, but not a usable positive one
        InvalidResponse     malformed (udsoncan InvalidResponseException)
        UnexpectedResponse  well formed, but not the answer to this request
                            (udsoncan UnexpectedResponseException)
        NegativeResponse    7F SID NRC (udsoncan NegativeResponseException), with ``nrc``
      PreconditionViolated, RoutineFailed, ChecksumMismatch, VersionMismatch, ImageError
"""

from __future__ import annotations

from collections.abc import Mapping

from udsoncan import Response


class FlashError(Exception):
    """Base of every flash failure; ``step`` is the FlashSession step name."""

    def __init__(self, step: str, message: str):
        self.step = step
        super().__init__(f"{step}: {message}")


class TransportError(FlashError):
    """The request or its answer did not get through: an ISO-TP send that failed (no flow
    control), a CAN or socket error. Retried like a timeout."""


class ProtocolError(FlashError):
    """The ECU answered, but not with a usable positive response."""


class InvalidResponse(ProtocolError):
    """A malformed answer (too short, bad length fields): udsoncan could not parse it."""


class UnexpectedResponse(ProtocolError):
    """A well-formed answer that does not answer the request (wrong echo, a value the
    request rules out, a block length too small to transfer anything)."""


class NegativeResponse(ProtocolError):
    """The ECU refused a request: ``nrc`` (e.g. 0x22 conditionsNotCorrect), ``nrc_name``
    and the refused ``service`` id (None when unknown)."""

    def __init__(self, step: str, nrc: int, service: int | None = None):
        self.nrc = nrc
        self.nrc_name = Response.Code.get_name(nrc) or "unknown"
        self.service = service
        sid = f" to service 0x{service:02X}" if service is not None else ""
        super().__init__(step, f"negative response 0x{nrc:02X} ({self.nrc_name}){sid}")


class StepTimeout(TransportError):
    """No answer: the step's budget ran out, or P2/P2* expired on every attempt."""

    def __init__(self, step: str, budget_s: float, detail: str = ""):
        self.budget_s = budget_s
        super().__init__(step, f"no answer in time (step budget {budget_s:g} s"
                               + (f"; {detail})" if detail else ")"))


class PreconditionViolated(FlashError):
    """The vehicle left the safe state; the flash stopped at a block boundary."""

    def __init__(self, reason: str, step: str = ""):
        self.reason = reason
        super().__init__(step or "precondition", f"precondition violated: {reason}")


class RoutineFailed(FlashError):
    """A RoutineControl answered positively but with a non-zero routine status."""

    def __init__(self, step: str, status: bytes):
        self.status = status
        super().__init__(step, f"routine status {status.hex() or 'empty'}")


class DependencyCheckFailed(RoutineFailed):
    """CheckProgrammingDependencies (0xFF01): the image does not fit this ECU."""

    def __init__(self, status: bytes):
        super().__init__("dependency_check", status)


class ChecksumMismatch(FlashError):
    def __init__(self, expected: int, got: int):
        self.expected = expected
        self.got = got
        super().__init__("transfer_exit", f"ECU CRC32 {got:08X}, image CRC32 {expected:08X}")


class VersionMismatch(FlashError):
    """Versions read back after the reset are not the ones the campaign expected."""

    def __init__(self, expected: Mapping[int, str], got: Mapping[int, str | None]):
        self.expected = dict(expected)
        self.got = dict(got)
        diffs = ", ".join(f"{did:04X}: expected {v!r}, got {self.got.get(did)!r}"
                          for did, v in self.expected.items() if self.got.get(did) != v)
        super().__init__("verify", diffs)


class ImageError(FlashError):
    """The image cannot be flashed (missing, too large, no trailer, body CRC32 wrong);
    found before the ECU is sent anything."""

    def __init__(self, message: str):
        super().__init__("image", message)

