"""What the virtual ECU remembers: session, security, flash banks, the running download.

With ``[sim] strict = true`` the ECU is an OEM bootloader with the fixed ISO 14229-1
programming flow; each service module checks its own step of it against these fields:

1. ``session``: 10 03 (extended) from default; 10 02 (programming) only from extended,
   else NRC 0x22, and 0x22 while ``preconditions_ok`` is false.
2. Extended: 31 01 <preconditions_routine> reports 0x00 (ok) or 0x01 (not ok).
3. ``dtc_setting`` (85 02 off / 85 01 on) and ``comm_control`` / ``comm_type``
   (28 03 01 disable rx+tx / 28 00 01 enable), in extended or programming session, mostly
   functionally addressed; both back to on/enabled in the default session and on reset.
4. ``unlocked_level``: 27 only in programming; ``max_key_attempts`` wrong keys lock it
   for ``security_delay_s`` (NRC 0x37 until ``security_delay_until``).
5. ``fingerprint_written``: 2E <fingerprint_did> (unlocked) in this programming session.
6. ``erased_range``: 31 01 FF00 (unlocked + fingerprint); 34 only inside it.
7. ``memory_checked``: 31 01 <check_memory_routine> <crc32> after 37.
8. 31 01 FF01 only after a passing memory check; the reset (11 01) then runs the image.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hil.ecu_sim.settings import VirtualEcuConfig

DEFAULT_SESSION = 0x01
PROGRAMMING_SESSION = 0x02
EXTENDED_SESSION = 0x03

DTC_SETTING_ON = 0x01
DTC_SETTING_OFF = 0x02
COMM_ENABLE_RX_TX = 0x00
COMM_DISABLE_RX_TX = 0x03

# Identification DIDs that come from the running image (the image trailer), not the board.
SOFTWARE_DIDS = (0xF187, 0xF188, 0xF189, 0xF195)


class Nrc(Exception):
    """Raised by a service handler: answer with this negative response code."""

    def __init__(self, code: int):
        self.code = code
        super().__init__(f"NRC 0x{code:02X}")


@dataclass
class Bank:
    data: bytearray = field(default_factory=bytearray)
    versions: dict[int, str] = field(default_factory=dict)   # software DIDs of this image
    valid: bool = False


@dataclass
class Download:
    address: int
    size: int
    received: int = 0
    next_counter: int = 1
    last_counter: int | None = None
    last_length: int = 0
    finished: bool = False


class EcuState:
    def __init__(self, config: VirtualEcuConfig):
        self.config = config
        ident = {int(k, 16): v for k, v in config.identity.items()}
        self.board: dict[int, bytes] = {did: v.encode("ascii") for did, v in ident.items()
                                        if did not in SOFTWARE_DIDS}
        first = Bank(versions={d: v for d, v in ident.items() if d in SOFTWARE_DIDS},
                     valid=True)
        self.banks = [first, Bank()] if config.ecu.can_restore else [first]
        self.active = 0
        self.previous: int | None = None     # bank that ran before the last activation
        self.pending: int | None = None      # bank to activate at the next reset
        self.session = DEFAULT_SESSION
        self.unlocked_level: int | None = None
        self.seed: bytes | None = None
        self.seed_level = 0
        self.failed_keys = 0
        self.security_delay_until = 0.0       # strict: seeds refused (0x37) until then
        self.erased = False
        self.erased_range: tuple[int, int] | None = None   # (address, size) of the erase
        self.fingerprint_written = False      # strict: in this programming session
        self.memory_checked = False           # strict: the check-memory routine passed
        self.dtc_setting = DTC_SETTING_ON
        self.comm_control = COMM_ENABLE_RX_TX # controlType of the last 28 request
        self.comm_type = 0x01                 # its communicationType
        self.download: Download | None = None
        self.last_request = time.monotonic()
        self.offline_until = 0.0
        self.rebooting = False
        self.version_override: dict[int, str] = {}     # fault: versions after next reset
        self.inject_dependency_fail = False
        self.inject_preconditions_fail = False         # fault: preconditions report 0x01
        self.programming_base: dict[int, str] = {}     # versions when the erase started
        self.counters: dict[str, int] = {}

    # -- derived -----------------------------------------------------------------------

    @property
    def target(self) -> int:
        """The bank a download writes to: the inactive one on a two-bank ECU."""
        return 1 - self.active if len(self.banks) == 2 else self.active

    @property
    def mode(self) -> str:
        if self.session == PROGRAMMING_SESSION or not self.banks[self.active].valid:
            return "bootloader"
        return "application"

    def did_value(self, did: int) -> bytes | None:
        if did in SOFTWARE_DIDS:
            value = self.banks[self.active].versions.get(did)
            return None if value is None else value.encode("ascii")
        return self.board.get(did)

    def versions(self) -> dict[int, str]:
        """Identification as a tester would read it now."""
        out = {did: v.decode("ascii", "replace") for did, v in self.board.items()}
        out.update(self.banks[self.active].versions)
        return out

    # -- transitions -------------------------------------------------------------------

    def lock(self) -> None:
        self.unlocked_level = None
        self.seed = None

    @property
    def strict(self) -> bool:
        return self.config.sim.strict

    def enter_default(self) -> None:
        """Default session (also after a reset or S3): DTC setting and communication on."""
        self.session = DEFAULT_SESSION
        self.lock()
        self.download = None
        self.erased = False
        self.dtc_setting = DTC_SETTING_ON
        self.comm_control, self.comm_type = COMM_ENABLE_RX_TX, 0x01
        self.forget_programming()

    def forget_programming(self) -> None:
        """A new programming session starts the strict flow over."""
        self.erased_range = None
        self.fingerprint_written = False
        self.memory_checked = False

    def reboot(self, offline_s: float) -> None:
        """Start a reset: silent for ``offline_s``, then ``finish_reboot``."""
        self.enter_default()
        self.offline_until = time.monotonic() + offline_s
        self.rebooting = True

    def finish_reboot(self) -> None:
        self.rebooting = False
        if self.pending is not None:
            self.previous, self.active = self.active, self.pending
            self.pending = None
            if self.version_override:
                self.banks[self.active].versions.update(self.version_override)
                self.version_override = {}
        self.last_request = time.monotonic()

    def tick(self, now: float) -> None:
        if self.rebooting and now >= self.offline_until:
            self.finish_reboot()
        if (self.session != DEFAULT_SESSION and not self.rebooting
                and now - self.last_request > self.config.sim.s3_s):
            self.count("s3_timeout")
            self.enter_default()

    def count(self, name: str) -> None:
        self.counters[name] = self.counters.get(name, 0) + 1

    def require_session(self, *sessions: int) -> None:
        if self.session not in sessions:
            raise Nrc(0x7F)           # serviceNotSupportedInActiveSession

    def require_programming(self, unlocked: bool = True) -> None:
        if self.session != PROGRAMMING_SESSION:
            raise Nrc(0x7F)           # serviceNotSupportedInActiveSession
        if unlocked and self.unlocked_level is None:
            raise Nrc(0x33)           # securityAccessDenied
