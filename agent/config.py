"""The agent configuration: one TOML file, one typed model, validated once at load.

Each stage owns its section (``ingest/settings.py`` ``[[bus]]``, ``monitors/settings.py``
``[limits]``, ``journal/settings.py``, ``uplink/settings.py``, ``ota/settings.py``,
``security/settings.py``); this module composes them and checks what spans sections.

Paths in the file are relative to the file's own folder. ``load()`` either returns a
complete, checked ``AgentConfig`` (DBCs and mappings loaded) or raises ``ConfigError``
carrying every problem as ``FILE: key.path: problem``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.ingest.settings import BusConfig, check_bus
from agent.journal.settings import JournalConfig, check_journal
from agent.keyfiles import key_file_exposed
from agent.monitors.settings import LimitsConfig
from agent.ota.settings import EcuConfig, OtaConfig
from agent.security.settings import SecurityConfig
from agent.settings_loader import ConfigError, Problems, build, read_toml
from agent.uplink.settings import CommandsConfig, UplinkConfig

VIN = re.compile(r"^[A-Z0-9]{17}$")


def _time_zone(name: str) -> str | None:
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(name)
    except Exception:
        return f"unknown time zone {name!r}"
    return None


@dataclass
class VehicleConfig:
    vin: str = field(metadata={"pattern": VIN.pattern, "message":
                               "{value!r} is not a VIN (17 characters, A-Z and 0-9)"})
    manufacturer: str = ""
    model: str = ""
    category: str = "M1"                 # GB/T 15089 vehicle category
    power_type: str = ""                 # e.g. BEV, PHEV, ICE
    perception_system: str = ""          # e.g. "1 front camera, 1 front radar"
    risk_mitigation_strategy: str = ""   # e.g. "in-lane stop with hazard lights"
    software_version: str = ""           # vehicle software version (Att.2 #40)
    # reporting periods are calendar quarters here
    timezone: str = field(default="Asia/Shanghai", metadata={"check": _time_zone})


@dataclass
class StateConfig:
    dir: str = "/var/lib/icv-agent"
    key: str = "device.key"              # Ed25519 device key, relative to dir


@dataclass
class HistoryConfig:
    seconds: float = field(default=40.0, metadata={"above": 0})
    max_samples_per_signal: int = field(default=20000, metadata={"above": 0})


@dataclass
class HealthConfig:
    interval_s: float = field(default=60.0, metadata={"above": 0})


@dataclass
class AgentConfig:
    vehicle: VehicleConfig
    bus: list[BusConfig]
    state: StateConfig = field(default_factory=StateConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    health: HealthConfig = field(default_factory=HealthConfig)
    journal: JournalConfig = field(default_factory=JournalConfig)
    uplink: UplinkConfig = field(default_factory=UplinkConfig)
    commands: CommandsConfig = field(default_factory=CommandsConfig)
    ota: OtaConfig = field(default_factory=OtaConfig)
    ecu: list[EcuConfig] = field(default_factory=list)
    security: SecurityConfig = field(default_factory=SecurityConfig)

    # Filled by load(), not from TOML.
    path: Path = field(default=Path("."), init=False)
    buses: list[Any] = field(default_factory=list, init=False)   # agent.ingest.BusSetup

    def resolve(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(value).expanduser()
        return p if p.is_absolute() else (self.path.parent / p)

    @property
    def state_dir(self) -> Path:
        return self.resolve(self.state.dir)

    @property
    def key_path(self) -> Path:
        p = Path(self.state.key)
        return p if p.is_absolute() else self.state_dir / p


LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _check_uplink(cfg: AgentConfig, path: Path, problems: Problems) -> None:
    """No plaintext MQTT off the unit unless asked for; no client key others can read."""
    up = cfg.uplink
    if not up.enabled:
        return
    loopback = up.host in LOOPBACK_HOSTS or up.host.startswith("127.")
    if not up.tls and not loopback and not up.allow_plaintext:
        problems.add(path, "uplink.tls", f"false to {up.host!r}, which is not this unit: "
                     "records and commands would cross the network in clear "
                     "(set allow_plaintext = true only on a closed bench network)")
    for name in ("ca", "cert", "key"):
        value = getattr(up, name)
        if value and not cfg.resolve(value).is_file():
            problems.add(path, f"uplink.{name}", f"file not found: {cfg.resolve(value)}")
    if up.key:
        exposed = key_file_exposed(cfg.resolve(up.key))
        if exposed:
            problems.add(path, "uplink.key", f"MQTT client key {exposed}")


def _check_ota(cfg: AgentConfig, path: Path, problems: Problems) -> None:
    from agent.ota.settings import check_ecu
    from agent.ota.uptane.settings import check_uptane

    check_uptane(cfg.ota.uptane, path, problems)
    names: set[str] = set()
    buses = {b.name for b in cfg.bus}
    for i, ecu in enumerate(cfg.ecu):
        key = f"ecu[{i}]"
        check_ecu(ecu, path, problems, key)
        if ecu.name in names:
            problems.add(path, f"{key}.name", f"duplicate ECU name {ecu.name!r}")
        names.add(ecu.name)
        if ecu.bus not in buses:
            problems.add(path, f"{key}.bus", f"no [[bus]] named {ecu.bus!r}")


def load(path: str | Path) -> AgentConfig:
    """Load and validate; raise ``ConfigError`` listing every problem."""
    # Loaded on use: DBC loading (cantools) is heavy, and readers of [vehicle] or [state]
    # alone (reports, keys) need none of it.
    from agent.ingest.setup import load_bus
    from agent.security import check_security

    path = Path(path)
    problems = Problems()
    table = read_toml(path, problems)
    if table is None:
        raise ConfigError(problems)
    cfg = build(AgentConfig, table, path, problems)
    cfg.path = path
    if "bus" in table and not cfg.bus:
        problems.add(path, "bus", "at least one [[bus]] is needed")
    seen: set[str] = set()
    for i, bus in enumerate(cfg.bus):
        key = f"bus[{i}]"
        if bus.name in seen:
            problems.add(path, f"{key}.name", f"duplicate bus name {bus.name!r}")
        seen.add(bus.name)
        check_bus(bus, path, key, problems)
        setup = load_bus(cfg, bus, key, problems)
        if setup is not None:
            cfg.buses.append(setup)
    _check_ota(cfg, path, problems)
    _check_uplink(cfg, path, problems)
    check_journal(cfg.journal, path, problems)
    check_security(cfg, path, problems)
    if problems:
        raise ConfigError(problems)
    return cfg
