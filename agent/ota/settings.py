"""OTA section of the agent config (``[ota]``, ``[[ecu]]``).

An ``[[ecu]]`` table describes one flashable ECU: where it sits (bus, ISO-TP addresses),
how to unlock it, where its application lives and how long each UDS step may take.
The same table is the ``[ecu]`` part of a virtual ECU file (``config/ecu/*.toml``), so the
bench ECU and the agent can never disagree on addresses, security or memory layout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from agent.ota.recipe import FlashStep, check_steps, default_flash, default_restore
from agent.ota.uptane.settings import UptaneConfig
from agent.settings_loader import ConfigError, Problems, build, read_toml


def _conditions(names: list[str]) -> str | None:
    from agent.ota.preconditions import CONDITIONS  # it reads OtaConfig: imported late

    unknown = [n for n in names if n not in CONDITIONS]
    if not unknown:
        return None
    return f"unknown condition(s) {', '.join(map(repr, unknown))}, known: " \
        + ", ".join(CONDITIONS)


@dataclass
class HmiConfig:
    """``[ota.extra.hmi]``: the HMI adapter on (local) MQTT, see docs/ota.md."""

    enabled: bool = True
    host: str = ""                 # "" = same broker as [uplink]
    port: int = field(default=0, metadata={"range": (0, 65535)})  # 0 = [uplink] port
    tls: bool = True
    ca: str = ""
    cert: str = ""
    key: str = ""
    client_id: str = ""            # default "<VIN>-hmi"


@dataclass
class CampaignSettings:
    """``[ota.extra]``: how a campaign talks to the user and what it may leave unknown."""

    consent_timeout_s: float = field(default=3600.0, metadata={"above": 0})
    not_required: list[str] = field(default_factory=list, metadata={"check": _conditions})
    progress_step_percent: int = field(default=25, metadata={
        "range": (1, 100), "message": "must be 1..100"})
    # how often the bench CLI's consent rows are looked for
    consent_poll_s: float = field(default=0.2, metadata={"above": 0})
    inventory_at_start: bool = True
    hmi: HmiConfig = field(default_factory=HmiConfig)


@dataclass
class OtaConfig:
    enabled: bool = False
    # Preconditions for the safe state (regulation §2).
    require_gear: str = "P"
    require_parking_brake: bool = True
    max_speed_kmh: float = 0.0
    allowed_power_states: list[str] = field(default_factory=lambda: ["ON"])
    min_lv_voltage: float = 12.0
    min_soc_percent: float = 30.0
    require_cda_off: bool = True
    extra: CampaignSettings = field(default_factory=CampaignSettings)
    uptane: UptaneConfig = field(default_factory=UptaneConfig)


ROLES = ("steering", "brake", "dvr", "edr", "ota_host", "adas", "gateway", "powertrain",
         "body", "other")
ADDRESSING = ("normal_11bit", "normal_29bit", "normal_fixed_29bit")
DEFAULT_VERSION_DIDS = ["F187", "F188", "F189", "F18C", "F191", "F195", "F190"]


def _hex_did(text: str) -> str | None:
    try:
        if 0 <= int(text, 16) <= 0xFFFF:
            return None
    except ValueError:
        pass
    return f"not a 16-bit hex DID: {text!r}"


def _hex(text: str) -> str | None:
    try:
        bytes.fromhex(text)
    except ValueError:
        return "must be hex"
    return None


def _seed_level(level: int) -> str | None:
    return None if 1 <= level <= 0x7D and level % 2 else "must be an odd seed level 0x01..0x7D"


def _stmin(value: int) -> str | None:
    if 0 <= value <= 0x7F or 0xF1 <= value <= 0xF9:
        return None
    return "must be 0x00..0x7F (ms) or 0xF1..0xF9 (100-900 us)"


def _key_algorithm(name: str) -> str | None:
    from agent.ota.uds.security import known_algorithms

    known = known_algorithms()
    if name in known:
        return None
    return f"unknown algorithm {name!r}, known: {', '.join(sorted(known))}"


POSITIVE = {"above": 0}
BYTE = {"range": (0, 0xFF), "message": "must be 0x00..0xFF"}
FORMAT_BITS = {"choices": (8, 16, 24, 32, 40), "message": "must be 8, 16, 24, 32 or 40"}


@dataclass
class StepBudgets:
    """Seconds each flash step may take, retries and NRC 0x78 waits included.

    There is no global timeout: a 30 s erase answered with 0x78 keep-alives is fine as long
    as it stays inside ``erase_s``.
    """

    versions_s: float = field(default=5.0, metadata=POSITIVE)
    session_s: float = field(default=5.0, metadata=POSITIVE)
    security_s: float = field(default=5.0, metadata=POSITIVE)
    fingerprint_s: float = field(default=5.0, metadata=POSITIVE)
    erase_s: float = field(default=60.0, metadata=POSITIVE)
    download_s: float = field(default=10.0, metadata=POSITIVE)
    transfer_block_s: float = field(default=10.0, metadata=POSITIVE)
    exit_s: float = field(default=30.0, metadata=POSITIVE)
    dependency_s: float = field(default=60.0, metadata=POSITIVE)
    reset_s: float = field(default=30.0, metadata=POSITIVE)
    restore_s: float = field(default=60.0, metadata=POSITIVE)


@dataclass
class EcuConfig:
    name: str = field(metadata={"min_len": 1})
    role: str = field(default="other", metadata={
        "choices": ROLES, "message": "unknown role {value!r}, expected one of " + ", ".join(ROLES)})
    bus: str = ""                          # name of an agent [[bus]]
    addressing: str = field(default="normal_11bit", metadata={
        "choices": ADDRESSING,
        "message": "unknown addressing {value!r}, expected one of " + ", ".join(ADDRESSING)})
    txid: int = 0                          # tester -> ECU (physical request id)
    rxid: int = 0                          # ECU -> tester (response id)
    source_address: int = field(default=0xF1, metadata=BYTE)   # normal_fixed_29bit: tester
    target_address: int = field(default=0, metadata=BYTE)      # normal_fixed_29bit: ECU
    # Functionally addressed requests (85, 28, 3E to every ECU of the bus): the 11/29-bit
    # request id; normal_fixed_29bit uses ISO 15765-4's 0x18DB.... with target_address.
    functional_id: int = 0x7DF
    can_fd: bool = False
    bitrate_switch: bool = False
    tx_data_length: int = 8                # 8, or up to 64 with can_fd
    # Raw flow-control STmin byte we ask the ECU for.
    stmin: int = field(default=0, metadata={"check": _stmin})
    # 0: the ECU may send all consecutive frames at once.
    blocksize: int = field(default=0, metadata={"range": (0, 255), "message": "must be 0..255"})
    # Kernel ISO-TP socket (Linux >= 5.10, module can-isotp) instead of can-isotp in Python.
    kernel_isotp: bool = False
    kernel_interface: str = ""             # e.g. "can0"; empty: the bus channel
    # Security access: odd level requests the seed, level + 1 sends the key.
    security_level: int = field(default=0x11, metadata={"check": _seed_level})
    key_algorithm: str = field(default="xor",                 # agent.ota.uds.security
                               metadata={"check": _key_algorithm})
    security_secret: str = field(default="", metadata={"check": _hex})   # bench ECUs only
    security_secret_file: str = ""         # file holding the hex secret
    security_secret_env: str = ""          # environment variable holding the hex secret
    # Application memory.
    memory_address: int = 0
    memory_size: int = 0
    address_format: int = field(default=32, metadata=FORMAT_BITS)
    memorysize_format: int = field(default=32, metadata=FORMAT_BITS)
    max_block_length: int = field(default=4095, metadata={   # cap on the ECU's answer
        "range": (3, 0xFFFF), "message": "must be 3..65535"})
    exit_crc32: bool = False               # ECU answers TransferExit with CRC32 of the data
    # Timing.
    p2_s: float = field(default=0.05, metadata=POSITIVE)
    p2_star_s: float = field(default=5.0, metadata=POSITIVE)
    tester_present_s: float = field(default=2.0, metadata=POSITIVE)
    # Extra attempts per step / per transfer block.
    retries: int = field(default=2, metadata={"range": (0, None)})
    budget: StepBudgets = field(default_factory=StepBudgets)
    can_restore: bool = False              # second bank: previous image can be re-activated
    version_dids: list[str] = field(default_factory=lambda: list(DEFAULT_VERSION_DIDS),
                                    metadata={"each": {"check": _hex_did}})
    # Type approval (GB 44496 / UN R156): the DID where the ECU reports the vehicle's
    # software identification number (SWIN, R156's RXSWIN), e.g. "F1A0" (OEM-specific);
    # ``type_approval``: its software is one the approval depends on (it enters the SWIN
    # computed from versions, and an update of it needs a change permit).
    swin_did: str = field(default="", metadata={"check": _hex_did})
    type_approval: bool = False
    # TesterPresent while idle in a non-default session: to this ECU, or functionally to
    # every ECU of the bus (keeps the ones a recipe silenced with 28/85 in their session).
    tester_present_functional: bool = False
    # The programming sequence (agent.ota.recipe); defaults: the bench ECUs'.
    flash: list[FlashStep] = field(default_factory=default_flash)
    after: list[FlashStep] = field(default_factory=list)
    restore: list[FlashStep] = field(default_factory=default_restore)

    @property
    def dids(self) -> list[int]:
        """The identification DIDs read for the inventory (the SWIN DID included)."""
        dids = [int(d, 16) for d in self.version_dids]
        if self.swin_did and int(self.swin_did, 16) not in dids:
            dids.append(int(self.swin_did, 16))
        return dids

    @property
    def approval_relevant(self) -> bool:
        """An update of this ECU touches type-approval parameters (notice §(七))."""
        return self.type_approval or bool(self.swin_did)

    def secret(self) -> bytes:
        """The security-access secret from wherever the config says it lives."""
        text = self.security_secret
        if self.security_secret_env:
            text = os.environ.get(self.security_secret_env, "")
            if not text:
                raise ValueError(f"ECU {self.name}: environment variable "
                                 f"{self.security_secret_env} is not set")
        elif self.security_secret_file:
            text = Path(self.security_secret_file).expanduser().read_text().strip()
        return bytes.fromhex(text)


def check_ecu(ecu: EcuConfig, file: str | Path, problems: Problems, path: str = "") -> None:
    """The checks across fields (ids by addressing, frame length by CAN FD, one secret
    source, the recipe); single values are checked by their field declarations."""

    def add(key: str, message: str) -> None:
        problems.add(file, f"{path}.{key}" if path else key, message)

    if ecu.addressing in ADDRESSING and ecu.addressing != "normal_fixed_29bit":
        limit = 0x7FF if ecu.addressing == "normal_11bit" else 0x1FFFFFFF
        for key in ("txid", "rxid"):
            if not 0 < getattr(ecu, key) <= limit:
                add(key, f"must be 0x1..0x{limit:X} for {ecu.addressing}")
        if ecu.txid == ecu.rxid:
            add("rxid", "must differ from txid")
        if not 0 < ecu.functional_id <= limit:
            add("functional_id", f"must be 0x1..0x{limit:X} for {ecu.addressing}")
        elif ecu.functional_id in (ecu.txid, ecu.rxid):
            add("functional_id", "must differ from txid and rxid")
    valid_lengths = (8, 12, 16, 20, 24, 32, 48, 64) if ecu.can_fd else (8,)
    if ecu.tx_data_length not in valid_lengths:
        add("tx_data_length", f"must be one of {valid_lengths}"
                              + ("" if ecu.can_fd else " (set can_fd for more)"))
    sources = [k for k in ("security_secret", "security_secret_file", "security_secret_env")
               if getattr(ecu, k)]
    if len(sources) > 1:
        add(sources[1], f"give only one of {', '.join(sources)}")
    if ecu.memory_size <= 0:                # its default, 0, means "not set"
        add("memory_size", "must be > 0")
    from agent.ota.uds.security import known_algorithms

    for kind in ("flash", "after", "restore"):
        check_steps(getattr(ecu, kind), kind, add, algorithms=known_algorithms(), kind=kind)


def load_ecu(path: str | Path, table_name: str = "ecu") -> EcuConfig:
    """Load a standalone ECU file (its ``[ecu]`` table); raise ``ConfigError`` on problems."""
    path = Path(path)
    problems = Problems()
    table = read_toml(path, problems)
    if table is None:
        raise ConfigError(problems)
    ecu = build(EcuConfig, table.get(table_name, {}), path, problems, table_name)
    check_ecu(ecu, path, problems, table_name)
    if problems:
        raise ConfigError(problems)
    return ecu
