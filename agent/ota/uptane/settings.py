"""Uptane part of the agent config (``[ota.uptane]``), loaded with ``agent.settings_loader.build``.

Paths are relative to the config file's folder (``AgentConfig.resolve``); the client
takes them already resolved through its ``config_dir`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.settings_loader import Problems, build

POSITIVE = {"above": 0}
NOT_NEGATIVE = {"range": (0, None)}
URL = {"pattern": r"https?://.*", "pattern_help": "an http(s) URL"}
BUDGET = {"above": 0, "why": "it sets every transfer's total time budget"}
TIME_STEP = {"above": 0, "range": (None, 3650)}


@dataclass
class UptaneConfig:
    # Director base URL; the VIN is appended (``{director_url}/{vin}/metadata/...``).
    director_url: str = field(default="", metadata=URL)
    # Image repository base URL (``/metadata/...`` and ``/targets/...`` below it).
    image_url: str = field(default="", metadata=URL)
    # Root metadata shipped at build time; only read until a newer root is trusted.
    director_root: str = "uptane/director-root.json"
    image_root: str = "uptane/image-root.json"
    # Where images are downloaded (``.part`` files survive a restart for Range resume).
    download_dir: str = "ota/downloads"
    # Byte caps per metadata role (endless-data attack); snapshot/targets also obey the
    # length signed in timestamp/snapshot when it is listed.
    max_root_bytes: int = field(default=512 * 1024, metadata=POSITIVE)
    max_timestamp_bytes: int = field(default=16 * 1024, metadata=POSITIVE)
    max_snapshot_bytes: int = field(default=2 * 1024 * 1024, metadata=POSITIVE)
    max_targets_bytes: int = field(default=5 * 1024 * 1024, metadata=POSITIVE)
    max_image_bytes: int = field(default=1024 * 1024 * 1024, metadata=POSITIVE)
    # root N -> N+1 steps in one refresh
    max_root_rotations: int = field(default=32, metadata=POSITIVE)
    # delegated roles visited per image
    max_delegations: int = field(default=32, metadata=POSITIVE)
    # Slow-retrieval floor: fewer than min_speed_bytes_s * speed_window_s bytes in any
    # window of speed_window_s seconds aborts the transfer.
    min_speed_bytes_s: float = field(default=1024.0, metadata=NOT_NEGATIVE)
    speed_window_s: float = field(default=30.0, metadata=POSITIVE)
    # Total budget per transfer (image or metadata file): transfer_allowance_s +
    # length / min_average_bytes_s, over all attempts and pauses (slow retrieval).
    min_average_bytes_s: float = field(default=16 * 1024.0, metadata=BUDGET)
    transfer_allowance_s: float = field(default=120.0, metadata=NOT_NEGATIVE)
    connect_timeout_s: float = field(default=10.0, metadata=NOT_NEGATIVE)
    # retries after a failed attempt, per file
    retries: int = field(default=4, metadata=NOT_NEGATIVE)
    # first pause, doubled each retry
    backoff_s: float = field(default=1.0, metadata=NOT_NEGATIVE)
    backoff_max_s: float = field(default=30.0, metadata=NOT_NEGATIVE)
    chunk_bytes: int = field(default=64 * 1024, metadata=POSITIVE)
    ca_file: str = ""                     # extra CA bundle for HTTPS ("" = system store)
    client_cert: str = ""                 # mTLS client certificate (PEM), optional
    client_key: str = ""
    # Signed time attestation (see agent.ota.uptane.time) and the keys trusted for it.
    time_attestation: str = ""
    time_public_keys: list[str] = field(default_factory=list)
    # Raise the persisted time floor from the "issued" field of verified Director
    # timestamp metadata, by at most max_time_step_days above the trusted time (the
    # timestamp key is online: alone it must not push the clock into the future).
    time_from_timestamp: bool = True
    max_time_step_days: float = field(default=30.0, metadata=TIME_STEP)

    def resolve(self, value: str, config_dir: Path) -> Path:
        p = Path(value).expanduser()
        return p if p.is_absolute() else config_dir / p


def load_uptane(table: Any, file: str | Path, problems: Problems,
                path: str = "ota.uptane") -> UptaneConfig:
    """Build and check ``[ota.uptane]``; problems are added, never raised."""
    cfg = build(UptaneConfig, table if table is not None else {}, file, problems, path)
    check_uptane(cfg, file, problems, path)
    return cfg


def check_uptane(cfg: UptaneConfig, file: str | Path, problems: Problems,
                 path: str = "ota.uptane") -> None:
    """Checks across fields (each field's own range is declared on it, checked by
    ``build()``)."""
    if bool(cfg.client_cert) != bool(cfg.client_key):
        problems.add(file, f"{path}.client_cert", "client_cert and client_key go together")
    if cfg.time_attestation and not cfg.time_public_keys:
        problems.add(file, f"{path}.time_public_keys",
                     "a time attestation needs at least one public key")
