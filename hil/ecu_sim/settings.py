"""Virtual ECU file: the agent's ``[ecu]`` table plus identity, simulator timing and faults.

``[ecu]`` is exactly an agent ``[[ecu]]`` entry (addresses are from the tester's view; the
virtual ECU swaps them). ``[identity]`` maps hex DIDs to the ASCII values the ECU reports
before any flash. ``[sim]`` sets the ECU's own timing and, with ``strict = true``, a
bootloader that enforces the ISO 14229-1 OEM programming flow (see ``hil.ecu_sim.state``).
``[[fault]]`` entries inject faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.ota.settings import EcuConfig, check_ecu
from agent.settings_loader import ConfigError, Problems, build, read_toml
from hil.ecu_sim.faults import Fault, check_fault


@dataclass
class SimConfig:
    p2_ms: int = 50                       # sent in the session response
    p2_star_ms: int = 2000                # sent in the session response (10 ms resolution)
    s3_s: float = 5.0                     # back to default session after this idle time
    pending_interval_s: float = 0.5       # NRC 0x78 cadence during long operations
    erase_s: float = 0.05                 # time an erase takes
    dependency_s: float = 0.02            # time the dependency check takes
    boot_s: float = 0.1                   # time from ECUReset to the first answer
    max_block_length: int = 0x402         # maxNumberOfBlockLength in the download answer
    seed_length: int = 4
    max_key_attempts: int = 3
    # Strict OEM bootloader (ISO 14229-1 flow; off: the lenient bench bootloader of before).
    strict: bool = False
    session_switch_s: float = 0.0         # 10 02: booting into the bootloader (0x78 first)
    preconditions_routine: int = 0x0203   # 31 01 <id>: check programming preconditions
    preconditions_ok: bool = True         # false: the routine reports 0x01, 10 02 gets 0x22
    check_memory_routine: int = 0x0202    # 31 01 <id> <crc32>: check the downloaded data
    check_memory_s: float = 0.02          # time the memory check takes
    fingerprint_did: int = 0xF15A         # the one DID 2E writes in programming session
    fingerprint_length: int = 9
    security_delay_s: float = 10.0        # after max_key_attempts wrong keys: NRC 0x37


@dataclass
class VirtualEcuConfig:
    ecu: EcuConfig
    identity: dict[str, str] = field(default_factory=dict)
    sim: SimConfig = field(default_factory=SimConfig)
    fault: list[Fault] = field(default_factory=list)


def check_sim(cfg: VirtualEcuConfig, file: str | Path, problems: Problems) -> None:
    check_ecu(cfg.ecu, file, problems, "ecu")
    for did, value in cfg.identity.items():
        try:
            if not 0 <= int(did, 16) <= 0xFFFF:
                raise ValueError
        except ValueError:
            problems.add(file, f"identity.{did}", "not a 16-bit hex DID")
        if not value.isascii():
            problems.add(file, f"identity.{did}", "value must be ASCII")
    if not 3 <= cfg.sim.max_block_length <= 0xFFFF:
        problems.add(file, "sim.max_block_length", "must be 3..65535")
    if not 0 < cfg.sim.p2_ms <= 0xFFFF:
        problems.add(file, "sim.p2_ms", "must be 1..65535")
    if not 0 < cfg.sim.p2_star_ms <= 0xFFFF * 10:
        problems.add(file, "sim.p2_star_ms", "must be 10..655350")
    if not 1 <= cfg.sim.seed_length <= 64:
        problems.add(file, "sim.seed_length", "must be 1..64")
    check_strict(cfg.sim, file, problems)
    for i, fault in enumerate(cfg.fault):
        check_fault(fault, file, problems, f"fault[{i}]")


def check_strict(sim: SimConfig, file: str | Path, problems: Problems) -> None:
    """The strict bootloader's own ids and times (checked in lenient mode too)."""
    fixed = {0xFF00: "erase", 0xFF01: "dependency check", 0xFF02: "restore"}
    for key in ("preconditions_routine", "check_memory_routine"):
        value = getattr(sim, key)
        if not 0 <= value <= 0xFFFF:
            problems.add(file, f"sim.{key}", "must be a 16-bit routine identifier")
        elif value in fixed:
            problems.add(file, f"sim.{key}", f"0x{value:04X} is the {fixed[value]} routine")
    if sim.preconditions_routine == sim.check_memory_routine:
        problems.add(file, "sim.check_memory_routine", "must differ from "
                                                       "preconditions_routine")
    if not 0 <= sim.fingerprint_did <= 0xFFFF:
        problems.add(file, "sim.fingerprint_did", "must be a 16-bit DID")
    if not 1 <= sim.fingerprint_length <= 64:
        problems.add(file, "sim.fingerprint_length", "must be 1..64")
    for key in ("session_switch_s", "check_memory_s", "security_delay_s"):
        if getattr(sim, key) < 0:
            problems.add(file, f"sim.{key}", "must be >= 0")


def load_sim_config(path: str | Path) -> VirtualEcuConfig:
    """Load and check a virtual ECU file; raise ``ConfigError`` listing every problem."""
    path = Path(path)
    problems = Problems()
    table = read_toml(path, problems)
    if table is None:
        raise ConfigError(problems)
    cfg = build(VirtualEcuConfig, table, path, problems)
    check_sim(cfg, path, problems)
    if problems:
        raise ConfigError(problems)
    return cfg
