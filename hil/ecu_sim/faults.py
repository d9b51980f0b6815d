"""Fault injection for the virtual ECU, from ``[[fault]]`` tables or ``VirtualEcu.inject``.

A fault fires on the ``after + 1``-th request of its ``step`` (counted since injection) and
then on the following ones until it has fired ``times`` times (0: forever).

kinds:
  pending          ``count`` NRC 0x78 answers ``interval_s`` apart, then the real answer
  slow             answer ``delay_s`` late, no 0x78 (an ECU breaking P2)
  nrc              answer negative response ``nrc`` instead
  drop_out         no answer; the ECU resets and is silent for ``offline_s``
  dependency_fail  CheckProgrammingDependencies reports status 0x01 (step dependency_check)
  wrong_version    after the reset the new image reports ``values`` (step reset)
  garbled          the positive answer cut to its first ``keep`` bytes (a malformed
                   answer: the tester's InvalidResponse)
  preconditions_fail  the strict precondition routine reports 0x01 (step preconditions)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.settings_loader import Problems

STEPS = ("session", "security", "fingerprint", "erase", "request_download", "transfer",
         "transfer_exit", "dependency_check", "reset", "restore", "read", "tester_present",
         "dtc_setting", "communication_control", "preconditions", "check_memory")
KINDS = ("pending", "slow", "nrc", "drop_out", "dependency_fail", "wrong_version",
         "garbled", "preconditions_fail")
DEFAULT_STEP = {"dependency_fail": "dependency_check", "wrong_version": "reset",
                "preconditions_fail": "preconditions"}


@dataclass
class Fault:
    kind: str
    step: str = ""
    after: int = 0
    times: int = 1
    count: int = 10
    interval_s: float = 0.1
    delay_s: float = 1.0
    nrc: int = 0x22
    offline_s: float = 0.5
    values: dict[str, str] = field(default_factory=dict)
    keep: int = 1
    # Not from TOML: requests of ``step`` seen and times fired so far.
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        if not self.step:
            self.step = DEFAULT_STEP.get(self.kind, "")

    def take(self, step: str) -> bool:
        """Count one request of ``step``; True when the fault fires on it."""
        if step != self.step or (self.times and self.fired >= self.times):
            return False
        self.seen += 1
        if self.seen <= self.after:
            return False
        self.fired += 1
        return True


def check_fault(fault: Fault, file: str | Path, problems: Problems, path: str) -> None:
    if fault.kind not in KINDS:
        problems.add(file, f"{path}.kind", f"unknown fault kind {fault.kind!r}, expected one "
                                           f"of {', '.join(KINDS)}")
    if fault.step not in STEPS:
        problems.add(file, f"{path}.step", f"unknown step {fault.step!r}, expected one of "
                                           f"{', '.join(STEPS)}")
    if fault.after < 0 or fault.times < 0 or fault.count < 0 or fault.keep < 0:
        problems.add(file, path, "after, times, count and keep must be >= 0")
    if not 0 < fault.nrc <= 0xFF or fault.nrc == 0x78:
        problems.add(file, f"{path}.nrc", "must be 0x01..0xFF and not 0x78 (use pending)")
