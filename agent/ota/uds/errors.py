"""Typed flash errors: each says which step failed and, for ECU refusals, the NRC."""

from __future__ import annotations

from collections.abc import Mapping

from udsoncan import Response


class FlashError(Exception):
    """Base of every flash failure; ``step`` is the FlashSession step name."""

    def __init__(self, step: str, message: str):
        self.step = step
        super().__init__(f"{step}: {message}")


class NegativeResponse(FlashError):
    """The ECU refused a request with a negative response code."""

    def __init__(self, step: str, nrc: int):
        self.nrc = nrc
        name = Response.Code.get_name(nrc) or "unknown"
        super().__init__(step, f"negative response 0x{nrc:02X} ({name})")


class StepTimeout(FlashError):
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


class ProtocolError(FlashError):
    """A malformed or unexpected answer, or a transport failure."""
