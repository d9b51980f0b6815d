"""Uptane part of the agent config (``[ota.uptane]``), loaded with ``agent.model.build``.

Paths are relative to the config file's folder (``AgentConfig.resolve``); the client
takes them already resolved through its ``config_dir`` argument.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.model import Problems, build


@dataclass
class UptaneConfig:
    # Director base URL; the VIN is appended (``{director_url}/{vin}/metadata/...``).
    director_url: str = ""
    # Image repository base URL (``/metadata/...`` and ``/targets/...`` below it).
    image_url: str = ""
    # Root metadata shipped at build time; only read until a newer root is trusted.
    director_root: str = "uptane/director-root.json"
    image_root: str = "uptane/image-root.json"
    # Where images are downloaded (``.part`` files survive a restart for Range resume).
    download_dir: str = "ota/downloads"
    # Byte caps per metadata role (endless-data attack); snapshot/targets also obey the
    # length signed in timestamp/snapshot when it is listed.
    max_root_bytes: int = 512 * 1024
    max_timestamp_bytes: int = 16 * 1024
    max_snapshot_bytes: int = 2 * 1024 * 1024
    max_targets_bytes: int = 5 * 1024 * 1024
    max_image_bytes: int = 1024 * 1024 * 1024
    max_root_rotations: int = 32          # root N -> N+1 steps in one refresh
    max_delegations: int = 32             # delegated roles visited per image
    # Slow-retrieval floor: fewer than min_speed_bytes_s * speed_window_s bytes in any
    # window of speed_window_s seconds aborts the transfer.
    min_speed_bytes_s: float = 1024.0
    speed_window_s: float = 30.0
    # Total budget per transfer (image or metadata file): transfer_allowance_s +
    # length / min_average_bytes_s, over all attempts and pauses (slow retrieval).
    min_average_bytes_s: float = 16 * 1024.0
    transfer_allowance_s: float = 120.0
    connect_timeout_s: float = 10.0
    retries: int = 4                      # retries after a failed attempt, per file
    backoff_s: float = 1.0                # first pause, doubled each retry
    backoff_max_s: float = 30.0
    chunk_bytes: int = 64 * 1024
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
    max_time_step_days: float = 30.0

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
    """Value checks ``build()`` cannot do (for when ``OtaConfig`` embeds ``UptaneConfig``)."""
    for key in ("max_root_bytes", "max_timestamp_bytes", "max_snapshot_bytes",
                "max_targets_bytes", "max_image_bytes", "max_root_rotations",
                "max_delegations", "chunk_bytes"):
        if getattr(cfg, key) <= 0:
            problems.add(file, f"{path}.{key}", "must be > 0")
    for key in ("min_speed_bytes_s", "speed_window_s", "connect_timeout_s", "backoff_s",
                "backoff_max_s", "transfer_allowance_s"):
        if getattr(cfg, key) < 0:
            problems.add(file, f"{path}.{key}", "must be >= 0")
    if cfg.min_average_bytes_s <= 0:
        problems.add(file, f"{path}.min_average_bytes_s",
                     "must be > 0 (it sets every transfer's total time budget)")
    if not 0 < cfg.max_time_step_days <= 3650:
        problems.add(file, f"{path}.max_time_step_days", "must be > 0 and <= 3650")
    if cfg.speed_window_s == 0:
        problems.add(file, f"{path}.speed_window_s", "must be > 0")
    if cfg.retries < 0:
        problems.add(file, f"{path}.retries", "must be >= 0")
    for key in ("director_url", "image_url"):
        url = getattr(cfg, key)
        if url and not url.startswith(("http://", "https://")):
            problems.add(file, f"{path}.{key}", f"expected an http(s) URL, got {url!r}")
    if bool(cfg.client_cert) != bool(cfg.client_key):
        problems.add(file, f"{path}.client_cert", "client_cert and client_key go together")
    if cfg.time_attestation and not cfg.time_public_keys:
        problems.add(file, f"{path}.time_public_keys",
                     "a time attestation needs at least one public key")
