"""Virtual ECU file: the agent's ``[ecu]`` table plus identity, simulator timing and faults.

``[ecu]`` is exactly an agent ``[[ecu]]`` entry (addresses are from the tester's view; the
virtual ECU swaps them). ``[identity]`` maps hex DIDs to the ASCII values the ECU reports
before any flash. ``[sim]`` sets the ECU's own timing. ``[[fault]]`` entries inject faults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.model import ConfigError, Problems, build, read_toml
from agent.ota.settings import EcuConfig, check_ecu
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
    for i, fault in enumerate(cfg.fault):
        check_fault(fault, file, problems, f"fault[{i}]")


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
