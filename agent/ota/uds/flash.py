"""``FlashSession``: program one ECU over UDS and prove the new software runs.

The sequence is the ECU's recipe (``[[ecu.flash]]``, see ``agent.ota.recipe``); step
names in errors, timings and retries are the recipe's labels, plus these fixed ones::

    (image)           trailer and body CRC32 checked before anything is sent
    versions          read identification DIDs (before), always first
    request_download  RequestDownload -> maxNumberOfBlockLength (the ``download`` step)
    transfer          TransferData blocks of max_length - 2, counter 1..0xFF, 0x00, ...
    transfer_exit     RequestTransferExit (ECU answers CRC32 when ``exit_crc32``)
    verify            read the DIDs again; success only if they equal ``expected``

A failure before the memory is touched (erase or download) leaves the ECU's memory as it
was; it is only asked back to the default session. On a later failure (after retries), an
ECU with ``can_restore`` runs its ``restore`` steps (by default: programming session,
security access, RoutineControl 0xFF02 "activate previous bank", ECUReset) and its versions
are read back; ``rolled_back`` is True only if they equal the versions read before the
flash. The ``after`` steps (85 01, 28 00 to the whole bus) run at the end in every case.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import can
from udsoncan import CommunicationType, MemoryLocation, Request
from udsoncan.services import (
    CommunicationControl,
    ControlDTCSetting,
    DiagnosticSessionControl,
    TesterPresent,
)

from agent.ota.recipe import ACTIONS, FlashStep, fingerprint_bytes
from agent.ota.settings import EcuConfig
from agent.ota.uds.connection import EcuLink
from agent.ota.uds.errors import (
    ChecksumMismatch,
    DependencyCheckFailed,
    FlashError,
    ImageError,
    NegativeResponse,
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
from agent.ota.uds.versions import EcuVersions, read_versions

log = logging.getLogger(__name__)
T = TypeVar("T")

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
    after_errors: list[FlashError] = field(default_factory=list)   # re-enable steps

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
            "after_errors": [str(e) for e in self.after_errors],
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
        keeper = TesterPresentKeeper(link, self.ecu.tester_present_s,
                                     functional=self.ecu.tester_present_functional).start()
        run = _Run(link, steps, keeper, result, size)
        try:
            self._flash(run)
            result.ok = True
        except FlashError as exc:
            log.error("%s: flash failed: %s", self.ecu.name, exc)
            result.error = exc
            if result.touched and self.ecu.can_restore and self.restore_on_failure:
                self._restore(run)
            else:       # untouched, or nothing to go back to: its bootloader stays in charge
                self._leave_programming(link, steps)
        finally:
            try:
                self._after(run)
            finally:
                keeper.stop()
                result.timings = steps.timings
                result.retries = steps.retry_counts

    # -- the sequence -------------------------------------------------------------------

    def _enter(self, step: str) -> None:
        """Announce ``step`` and check the vehicle is still in its safe state."""
        self._announce(step)
        self._check_precondition()

    def _announce(self, step: str) -> None:
        """``on_step`` once for consecutive steps of one name (two fingerprint writes)."""
        if self.on_step is not None and step != self.step:
            self.on_step(step)
        self.step = step

    def _check_precondition(self) -> None:
        if self.precondition is None:
            return
        reason = self.precondition()
        if reason:
            raise PreconditionViolated(reason, self.step)

    def _flash(self, run: _Run) -> None:
        self._enter("versions")
        client = run.link.client
        run.result.versions_before = run.steps.run(
            "versions", self.ecu.budget.versions_s,
            lambda: read_versions(client, self.ecu.name, self.dids))
        for step in self.ecu.flash:
            self._do(step, run, self.expected)

    def _do(self, step: FlashStep, run: _Run, expected: Mapping[int, str]) -> None:
        """One recipe step; the precondition is checked first (not before verify: the
        ECU is reset already and nothing more can be stopped)."""
        if step.do == "verify":
            self._announce(step.label)
        elif step.do != "download":             # it announces its three parts itself
            self._enter(step.label)
        _ACTIONS[step.do](self, step, run, expected)

    def _budget(self, step: FlashStep) -> float:
        return step.budget_s or getattr(self.ecu.budget, step.budget_key)

    # -- actions (one per recipe ``do``) ------------------------------------------------

    def _session_step(self, step: FlashStep, run: _Run, expected: Mapping[int, str]) -> None:
        client = run.link.client
        if step.functional:
            request = DiagnosticSessionControl.make_request(step.session)
            self._functional(step, run, request)
        else:
            self._physical(step, run, lambda: client.change_session(step.session))
        run.keeper.active = step.session != 0x01

    def _tester_present_step(self, step: FlashStep, run: _Run,
                             expected: Mapping[int, str]) -> None:
        if step.functional:
            self._functional(step, run, TesterPresent.make_request())
        else:
            self._physical(step, run, run.link.client.tester_present)

    def _dtc_setting_step(self, step: FlashStep, run: _Run,
                          expected: Mapping[int, str]) -> None:
        setting = (ControlDTCSetting.SettingType.on if step.setting == "on"
                   else ControlDTCSetting.SettingType.off)
        if step.functional:
            self._functional(step, run, ControlDTCSetting.make_request(setting))
        else:
            self._physical(step, run, lambda: run.link.client.control_dtc_setting(setting))

    def _communication_control_step(self, step: FlashStep, run: _Run,
                                    expected: Mapping[int, str]) -> None:
        kind = CommunicationType.from_byte(step.communication_type)
        if step.functional:
            self._functional(step, run, CommunicationControl.make_request(step.control, kind))
        else:
            self._physical(step, run,
                           lambda: run.link.client.communication_control(step.control, kind))

    def _security_step(self, step: FlashStep, run: _Run, expected: Mapping[int, str]) -> None:
        client = run.link.client
        params = client.config["security_algo_params"]
        params["algorithm"] = step.algorithm or self.ecu.key_algorithm
        try:
            self._physical(step, run, lambda: client.unlock_security_access(
                step.level or self.ecu.security_level))
        finally:
            params["algorithm"] = self.ecu.key_algorithm

    def _fingerprint_step(self, step: FlashStep, run: _Run,
                          expected: Mapping[int, str]) -> None:
        day = self.programming_date or dt.datetime.now(dt.timezone.utc).date()
        data = fingerprint_bytes(step.layout, self.tester_id, day)
        self._physical(step, run,
                       lambda: run.link.client.write_data_by_identifier(step.did, data))

    def _routine_step(self, step: FlashStep, run: _Run, expected: Mapping[int, str]) -> None:
        if step.do == "erase":
            run.result.touched = True
        record = self._record(step, run)
        answer = self._physical(step, run,
                                lambda: run.link.client.start_routine(step.routine, record))
        status = answer.service_data.routine_status_record if answer is not None else b""
        if step.ok_status and status[:1] and status[0] not in step.ok_status:
            if step.do == "dependency_check":
                raise DependencyCheckFailed(status)
            raise RoutineFailed(step.label, status)

    def _record(self, step: FlashStep, run: _Run) -> bytes | None:
        if step.record == "memory":
            location = run.location
            return (bytes([location.alfid.get_byte_as_int()])
                    + location.get_address_bytes() + location.get_memorysize_bytes())
        if step.record == "crc32":
            if run.crc is None:
                raise ImageError(f"{step.label}: no data sent yet to take the CRC of")
            return run.crc.to_bytes(4, "big")
        if step.record.startswith("hex:"):
            return bytes.fromhex(step.record[4:])
        return None

    def _download_step(self, step: FlashStep, run: _Run, expected: Mapping[int, str]) -> None:
        """34 with the image's memory range, 36 blocks of the ECU's length, 37."""
        ecu, client, steps = self.ecu, run.link.client, run.steps
        self._enter("request_download")
        run.result.touched = True
        answer = steps.run("request_download", self._budget(step),
                           lambda: client.request_download(run.location))
        max_length = min(answer.service_data.max_length, ecu.max_block_length)
        if max_length < 3:
            raise UnexpectedResponse("request_download",
                                     f"ECU block length {max_length} too small")

        self._enter("transfer")
        run.crc = self._transfer(run.link, steps, run.size, max_length - 2, run.result)

        self._enter("transfer_exit")
        answer = steps.run("transfer_exit", ecu.budget.exit_s, client.request_transfer_exit)
        if ecu.exit_crc32:
            record = answer.service_data.parameter_records
            got = int.from_bytes(record[:4], "big") if len(record) >= 4 else -1
            if got != run.crc:
                raise ChecksumMismatch(run.crc, got)

    def _reset_step(self, step: FlashStep, run: _Run, expected: Mapping[int, str]) -> None:
        client = run.link.client
        self._physical(step, run, lambda: client.ecu_reset(step.reset))
        run.keeper.active = False
        client.session_timing.p2_server_max = None      # default session timing again
        client.session_timing.p2_star_server_max = None

    def _verify_step(self, step: FlashStep, run: _Run, expected: Mapping[int, str]) -> None:
        run.result.versions_after = self._read_after_reset(run.steps, step.label,
                                                           self._budget(step))
        if run.result.versions_after.mismatches(expected):
            raise VersionMismatch(expected, run.result.versions_after.values)

    # -- how a request goes out ---------------------------------------------------------

    def _physical(self, step: FlashStep, run: _Run, action: Callable[[], T]) -> T:
        client = run.link.client
        if not step.suppress_response:
            return run.steps.run(step.label, self._budget(step), action)

        def suppressed() -> T:
            with client.suppress_positive_response(wait_nrc=True):
                return action()
        return run.steps.run(step.label, self._budget(step), suppressed)

    def _functional(self, step: FlashStep, run: _Run, request: Request) -> None:
        """To every ECU at once, positive answers suppressed; this ECU's NRC fails it."""
        payload = request.get_payload(suppress_positive_response=True)

        def send() -> None:
            nrc = run.link.functional_request(payload, wait_s=self.ecu.p2_s)
            if nrc is not None:
                raise NegativeResponse(step.label, nrc, payload[0])
        run.steps.run(step.label, self._budget(step), send)

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

    def _read_after_reset(self, steps: StepRunner, step: str,
                          budget_s: float | None = None) -> EcuVersions:
        """The ECU reboots after the reset: keep asking until it answers or the budget ends."""
        link = steps.link
        return steps.run(step, budget_s or self.ecu.budget.reset_s,
                         lambda: read_versions(link.client, self.ecu.name, self.dids),
                         retries=None, pause_s=min(0.05, self.ecu.p2_s))

    def _leave_programming(self, link: EcuLink, steps: StepRunner) -> None:
        """One polite request back to the default session (an ECU whose memory was erased
        stays in its bootloader there), so the ``after`` steps find every ECU alike."""
        try:
            steps.run("leave", self.ecu.budget.session_s,
                      lambda: link.client.change_session(
                          DiagnosticSessionControl.Session.defaultSession), retries=0)
        except FlashError as exc:
            log.info("%s: could not return to the default session: %s", self.ecu.name, exc)

    def _restore(self, run: _Run) -> None:
        """Ask a two-bank ECU to activate the image it ran before this flash (the
        ``restore`` steps); ``rolled_back`` only if its versions are the ones from before."""
        result = run.result
        assert result.versions_before is not None
        before = result.versions_before.values
        log.warning("%s: restoring the previous image", self.ecu.name)
        client = run.link.client
        try:
            for step in self.ecu.restore:
                if step.do == "session" and step.session != 0x01:
                    # The ECU may still be rebooting after a failed reset: keep asking.
                    run.steps.run(step.label, self.ecu.budget.restore_s,
                                  lambda s=step.session: client.change_session(s),
                                  retries=None, pause_s=min(0.05, self.ecu.p2_s))
                    run.keeper.active = True
                elif step.do == "verify":
                    result.versions_after = self._read_after_reset(run.steps, step.label)
                else:
                    if step.do == "routine" and not step.budget_s:
                        step = dataclasses.replace(step, budget_s=self.ecu.budget.restore_s)
                    _ACTIONS[step.do](self, step, run, before)
            if result.versions_after is not None:
                result.rolled_back = not result.versions_after.mismatches(before)
            if not result.rolled_back:
                result.restore_error = VersionMismatch(
                    before, result.versions_after.values if result.versions_after else {})
        except FlashError as exc:
            log.error("%s: restore failed: %s", self.ecu.name, exc)
            result.restore_error = exc
        finally:
            run.keeper.active = False

    def _after(self, run: _Run) -> None:
        """Switch back on what the flash switched off on the bus (85 01, 28 00, ...), on
        success and on failure, also when the vehicle left its safe state (these steps undo,
        they do not program); a failure here is logged and kept, the flash result stays."""
        for step in self.ecu.after:
            self._announce(step.label)
            try:
                _ACTIONS[step.do](self, step, run, {})
            except FlashError as exc:
                log.error("%s: %s after the flash failed: %s", self.ecu.name, step.label, exc)
                run.result.after_errors.append(exc)


@dataclass
class _Run:
    """What the steps of one flash share."""

    link: EcuLink
    steps: StepRunner
    keeper: TesterPresentKeeper
    result: FlashResult
    size: int
    crc: int | None = None             # CRC-32 of the data sent, once the download ran

    @property
    def location(self) -> MemoryLocation:
        ecu = self.link.ecu
        return MemoryLocation(ecu.memory_address, self.size, ecu.address_format,
                              ecu.memorysize_format)


_ACTIONS: dict[str, Callable[[FlashSession, FlashStep, _Run, Mapping[int, str]], None]] = {
    "session": FlashSession._session_step,
    "tester_present": FlashSession._tester_present_step,
    "dtc_setting": FlashSession._dtc_setting_step,
    "communication_control": FlashSession._communication_control_step,
    "routine": FlashSession._routine_step,
    "security": FlashSession._security_step,
    "fingerprint": FlashSession._fingerprint_step,
    "erase": FlashSession._routine_step,
    "download": FlashSession._download_step,
    "check_memory": FlashSession._routine_step,
    "dependency_check": FlashSession._routine_step,
    "reset": FlashSession._reset_step,
    "verify": FlashSession._verify_step,
}
assert set(_ACTIONS) == set(ACTIONS)


def error_category(error: FlashError) -> str:
    """``transport`` (no answer got through), ``protocol`` (the ECU said no or answered
    wrongly) or ``flash`` (image, routine status, checksum, versions, precondition)."""
    if isinstance(error, TransportError):
        return "transport"
    if isinstance(error, ProtocolError):
        return "protocol"
    return "flash"
