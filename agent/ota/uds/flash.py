"""``FlashSession``: program one ECU over UDS and prove the new software runs.

Sequence (step names as used in errors, timings and retries)::

    (image)           trailer and body CRC32 checked before anything is sent
    versions          read identification DIDs (before)
    session           DiagnosticSessionControl programming (0x10 02), P2/P2* from the ECU
    security          SecurityAccess seed/key at the configured level
    fingerprint       WriteDataByIdentifier F198 (tester) and F199 (date)
    erase             RoutineControl start 0xFF00 (eraseMemory, address and size)
    request_download  RequestDownload -> maxNumberOfBlockLength
    transfer          TransferData blocks of max_length - 2, counter 1..0xFF, 0x00, ...
    transfer_exit     RequestTransferExit (ECU answers CRC32 when ``exit_crc32``)
    dependency_check  RoutineControl start 0xFF01 (checkProgrammingDependencies)
    reset             ECUReset hardReset (0x11 01)
    verify            read the DIDs again; success only if they equal ``expected``

A failure before the erase leaves the ECU's memory untouched (``touched`` False); it is only
asked back to the default session. On a later failure (after retries), an ECU with
``can_restore`` is asked to go back to the image it ran before: programming session,
security access, RoutineControl start 0xFF02 (``ROUTINE_ACTIVATE_PREVIOUS``, "activate
previous bank"), ECUReset, and its versions are read back; ``rolled_back`` is True only
if they equal the versions read before the flash.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import can
from udsoncan import MemoryLocation
from udsoncan.services import DiagnosticSessionControl, ECUReset

from agent.ota.settings import EcuConfig
from agent.ota.uds.connection import EcuLink
from agent.ota.uds.errors import (
    ChecksumMismatch,
    DependencyCheckFailed,
    FlashError,
    ImageError,
    PreconditionViolated,
    ProtocolError,
    RoutineFailed,
    TransportError,
    UnexpectedResponse,
    VersionMismatch,
)
from agent.ota.uds.image import ImageFormatError, check_image
from agent.ota.uds.keepalive import TesterPresentKeeper
from agent.ota.uds.steps import StepRunner
from agent.ota.uds.versions import (
    FINGERPRINT_DID,
    PROGRAMMING_DATE_DID,
    EcuVersions,
    read_versions,
)

log = logging.getLogger(__name__)

ROUTINE_ERASE_MEMORY = 0xFF00
ROUTINE_CHECK_DEPENDENCIES = 0xFF01
ROUTINE_ACTIVATE_PREVIOUS = 0xFF02

Precondition = Callable[[], "str | None"]   # None: safe; a string: why it is not
Progress = Callable[[int, int], None]        # (bytes done, bytes total)


@dataclass
class FlashResult:
    ecu: str
    ok: bool = False
    versions_before: EcuVersions | None = None
    versions_after: EcuVersions | None = None
    timings: dict[str, float] = field(default_factory=dict)   # step -> seconds
    retries: dict[str, int] = field(default_factory=dict)     # step -> retries made
    bytes_sent: int = 0
    blocks: int = 0
    touched: bool = False          # the ECU's memory was erased: it may not run the old image
    rolled_back: bool = False
    error: FlashError | None = None
    restore_error: FlashError | None = None

    def raise_for_error(self) -> None:
        if self.error is not None:
            raise self.error

    def as_dict(self) -> dict[str, object]:
        """JSON-ready summary for progress and result records."""
        return {
            "ecu": self.ecu, "ok": self.ok, "touched": self.touched,
            "rolled_back": self.rolled_back,
            "versions_before": self.versions_before.as_dict() if self.versions_before else {},
            "versions_after": self.versions_after.as_dict() if self.versions_after else {},
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
            "retries": dict(self.retries), "bytes_sent": self.bytes_sent,
            "blocks": self.blocks,
            "error": None if self.error is None else {
                "type": type(self.error).__name__, "category": error_category(self.error),
                "step": self.error.step, "nrc": getattr(self.error, "nrc", None),
                "service": getattr(self.error, "service", None), "message": str(self.error)},
        }


class FlashSession:
    """Flash ``image`` into ``ecu`` on ``bus``; ``run()`` returns a ``FlashResult``.

    ``expected`` maps DIDs to the values the ECU must report after the reset (from the
    signed campaign metadata). ``precondition`` is called before every step and between
    transfer blocks; a non-None answer stops the flash after the current block.
    ``progress(done, total)`` is called after every block. The bus may be shared: pass the
    ``notifier`` already reading it, or one is created for the session.
    """

    def __init__(self, ecu: EcuConfig, bus: can.BusABC | None, image: str | Path,
                 expected: Mapping[int, str], *,
                 precondition: Precondition | None = None,
                 progress: Progress | None = None,
                 on_step: Callable[[str], None] | None = None,
                 notifier: can.Notifier | None = None,
                 tester_id: str = "ICV-AGENT",
                 programming_date: dt.date | None = None,
                 restore_on_failure: bool = True):
        self.ecu = ecu
        self.bus = bus
        self.image = Path(image)
        self.expected = dict(expected)
        self.precondition = precondition
        self.progress = progress
        self.on_step = on_step
        self.notifier = notifier
        self.tester_id = tester_id
        self.programming_date = programming_date
        self.restore_on_failure = restore_on_failure
        self.step = ""
        # Every expected DID is read back, also one the ECU config does not list.
        self.dids = ecu.dids + [did for did in self.expected if did not in ecu.dids]

    # -- public -----------------------------------------------------------------------

    def run(self) -> FlashResult:
        result = FlashResult(self.ecu.name)
        try:
            size = self.image.stat().st_size
        except OSError as exc:
            result.error = ImageError(f"{self.image}: {exc.strerror}")
            return result
        if size == 0 or size > self.ecu.memory_size:
            result.error = ImageError(f"{self.image}: {size} bytes does not fit the "
                                      f"{self.ecu.memory_size}-byte memory of {self.ecu.name}")
            return result
        try:        # before the link opens: a damaged image never reaches the ECU
            check_image(self.image)
        except (ImageFormatError, OSError) as exc:
            result.error = ImageError(str(exc))
            return result
        try:
            link = self._connect()
        except TransportError as exc:
            result.error = exc
            return result
        try:
            self._session(link, size, result)
        finally:
            link.close()
        return result

    def _connect(self) -> EcuLink:
        """The open link; a socket or bus that cannot be opened is a ``TransportError``
        (not an exception the campaign would call an internal error)."""
        link: EcuLink | None = None
        try:
            link = EcuLink(self.ecu, self.bus, self.notifier)
            return link.open()
        except (OSError, can.CanError) as exc:       # e.g. no such kernel interface
            if link is not None:
                with contextlib.suppress(Exception):
                    link.close()
            raise TransportError("connect", f"{type(exc).__name__}: {exc}") from None

    def _session(self, link: EcuLink, size: int, result: FlashResult) -> None:
        steps = StepRunner(link, self.ecu.retries)
        keeper = TesterPresentKeeper(link, self.ecu.tester_present_s).start()
        try:
            self._flash(link, steps, keeper, size, result)
            result.ok = True
        except FlashError as exc:
            log.error("%s: flash failed: %s", self.ecu.name, exc)
            result.error = exc
            if not result.touched:
                self._leave_programming(link, steps)
            elif self.ecu.can_restore and self.restore_on_failure:
                self._restore(link, steps, keeper, result)
        finally:
            keeper.stop()
            result.timings = steps.timings
            result.retries = steps.retry_counts

    # -- the sequence -------------------------------------------------------------------

    def _enter(self, step: str) -> None:
        self.step = step
        if self.on_step is not None:
            self.on_step(step)
        self._check_precondition()

    def _check_precondition(self) -> None:
        if self.precondition is None:
            return
        reason = self.precondition()
        if reason:
            raise PreconditionViolated(reason, self.step)

    def _flash(self, link: EcuLink, steps: StepRunner, keeper: TesterPresentKeeper,
               size: int, result: FlashResult) -> None:
        ecu, budget, client = self.ecu, self.ecu.budget, link.client
        self._enter("versions")
        result.versions_before = steps.run(
            "versions", budget.versions_s, lambda: read_versions(client, ecu.name, self.dids))

        self._enter("session")
        steps.run("session", budget.session_s,
                  lambda: client.change_session(
                      DiagnosticSessionControl.Session.programmingSession))
        keeper.active = True

        self._enter("security")
        steps.run("security", budget.security_s,
                  lambda: client.unlock_security_access(ecu.security_level))

        self._enter("fingerprint")
        day = self.programming_date or dt.datetime.now(dt.timezone.utc).date()

        def fingerprint() -> None:
            client.write_data_by_identifier(FINGERPRINT_DID, self.tester_id)
            client.write_data_by_identifier(PROGRAMMING_DATE_DID, day)
        steps.run("fingerprint", budget.fingerprint_s, fingerprint)

        location = MemoryLocation(ecu.memory_address, size, ecu.address_format,
                                  ecu.memorysize_format)
        self._enter("erase")
        result.touched = True
        erase_record = (bytes([location.alfid.get_byte_as_int()])
                        + location.get_address_bytes() + location.get_memorysize_bytes())
        answer = steps.run("erase", budget.erase_s,
                           lambda: client.start_routine(ROUTINE_ERASE_MEMORY, erase_record))
        _check_routine_status("erase", answer.service_data.routine_status_record)

        self._enter("request_download")
        answer = steps.run("request_download", budget.download_s,
                           lambda: client.request_download(location))
        max_length = min(answer.service_data.max_length, ecu.max_block_length)
        if max_length < 3:
            raise UnexpectedResponse("request_download",
                                     f"ECU block length {max_length} too small")

        self._enter("transfer")
        crc = self._transfer(link, steps, size, max_length - 2, result)

        self._enter("transfer_exit")
        answer = steps.run("transfer_exit", budget.exit_s, client.request_transfer_exit)
        if ecu.exit_crc32:
            record = answer.service_data.parameter_records
            got = int.from_bytes(record[:4], "big") if len(record) >= 4 else -1
            if got != crc:
                raise ChecksumMismatch(crc, got)

        self._enter("dependency_check")
        answer = steps.run("dependency_check", budget.dependency_s,
                           lambda: client.start_routine(ROUTINE_CHECK_DEPENDENCIES))
        status = answer.service_data.routine_status_record
        if status[:1] not in (b"", b"\x00"):
            raise DependencyCheckFailed(status)

        self._enter("reset")
        steps.run("reset", budget.reset_s,
                  lambda: client.ecu_reset(ECUReset.ResetType.hardReset))
        keeper.active = False
        client.session_timing.p2_server_max = None      # default session timing again
        client.session_timing.p2_star_server_max = None

        self.step = "verify"
        if self.on_step is not None:
            self.on_step("verify")
        result.versions_after = self._read_after_reset(steps, "verify")
        if result.versions_after.mismatches(self.expected):
            raise VersionMismatch(self.expected, result.versions_after.values)

    def _transfer(self, link: EcuLink, steps: StepRunner, size: int, block_size: int,
                  result: FlashResult) -> int:
        """Stream the file; stop between blocks when the precondition fails."""
        client, budget = link.client, self.ecu.budget.transfer_block_s
        crc = 0
        counter = 1
        done = 0
        if self.progress is not None:
            self.progress(0, size)
        with open(self.image, "rb") as fh:
            while done < size:
                block = fh.read(block_size)
                if not block:
                    raise ImageError(f"{self.image} shrank while flashing")

                def send(counter: int = counter, block: bytes = block) -> None:
                    client.transfer_data(counter, block)
                steps.run("transfer", budget, send)
                crc = zlib.crc32(block, crc)
                done += len(block)
                result.bytes_sent = done
                result.blocks += 1
                counter = (counter + 1) & 0xFF
                if self.progress is not None:
                    self.progress(done, size)
                if done < size:
                    self._check_precondition()
        return crc

    def _read_after_reset(self, steps: StepRunner, step: str) -> EcuVersions:
        """The ECU reboots after the reset: keep asking until it answers or the budget ends."""
        link = steps.link
        return steps.run(step, self.ecu.budget.reset_s,
                         lambda: read_versions(link.client, self.ecu.name, self.dids),
                         retries=None, pause_s=min(0.05, self.ecu.p2_s))

    def _leave_programming(self, link: EcuLink, steps: StepRunner) -> None:
        """Nothing was erased: one polite request back to the default session."""
        try:
            steps.run("leave", self.ecu.budget.session_s,
                      lambda: link.client.change_session(
                          DiagnosticSessionControl.Session.defaultSession), retries=0)
        except FlashError as exc:
            log.info("%s: could not return to the default session: %s", self.ecu.name, exc)

    def _restore(self, link: EcuLink, steps: StepRunner, keeper: TesterPresentKeeper,
                 result: FlashResult) -> None:
        """Ask a two-bank ECU to activate the image it ran before this flash."""
        client, budget = link.client, self.ecu.budget
        assert result.versions_before is not None
        log.warning("%s: restoring the previous image", self.ecu.name)
        try:
            steps.run("restore", budget.restore_s,
                      lambda: client.change_session(
                          DiagnosticSessionControl.Session.programmingSession),
                      retries=None, pause_s=min(0.05, self.ecu.p2_s))
            keeper.active = True
            steps.run("restore", budget.security_s,
                      lambda: client.unlock_security_access(self.ecu.security_level))
            answer = steps.run("restore", budget.restore_s,
                               lambda: client.start_routine(ROUTINE_ACTIVATE_PREVIOUS))
            _check_routine_status("restore", answer.service_data.routine_status_record)
            steps.run("restore", budget.reset_s,
                      lambda: client.ecu_reset(ECUReset.ResetType.hardReset))
            keeper.active = False
            client.session_timing.p2_server_max = None
            client.session_timing.p2_star_server_max = None
            result.versions_after = self._read_after_reset(steps, "restore_verify")
            before = result.versions_before.values
            result.rolled_back = not result.versions_after.mismatches(before)
            if not result.rolled_back:
                result.restore_error = VersionMismatch(before, result.versions_after.values)
        except FlashError as exc:
            log.error("%s: restore failed: %s", self.ecu.name, exc)
            result.restore_error = exc
        finally:
            keeper.active = False


def error_category(error: FlashError) -> str:
    """``transport`` (no answer got through), ``protocol`` (the ECU said no or answered
    wrongly) or ``flash`` (image, routine status, checksum, versions, precondition)."""
    if isinstance(error, TransportError):
        return "transport"
    if isinstance(error, ProtocolError):
        return "protocol"
    return "flash"


def _check_routine_status(step: str, status: bytes) -> None:
    if status[:1] not in (b"", b"\x00"):
        raise RoutineFailed(step, status)
