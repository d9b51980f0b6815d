"""What the virtual ECU remembers: session, security, flash banks, the running download."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from hil.ecu_sim.settings import VirtualEcuConfig

DEFAULT_SESSION = 0x01
PROGRAMMING_SESSION = 0x02
EXTENDED_SESSION = 0x03

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
        self.erased = False
        self.download: Download | None = None
        self.last_request = time.monotonic()
        self.offline_until = 0.0
        self.rebooting = False
        self.version_override: dict[int, str] = {}     # fault: versions after next reset
        self.inject_dependency_fail = False
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

    def enter_default(self) -> None:
        self.session = DEFAULT_SESSION
        self.lock()
        self.download = None
        self.erased = False

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

    def require_programming(self, unlocked: bool = True) -> None:
        if self.session != PROGRAMMING_SESSION:
            raise Nrc(0x7F)           # serviceNotSupportedInActiveSession
        if unlocked and self.unlocked_level is None:
            raise Nrc(0x33)           # securityAccessDenied
