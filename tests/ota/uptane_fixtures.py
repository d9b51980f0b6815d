"""Shared set-up for the Uptane tests: real keys, real repositories on disk, a real HTTP
server on a free 127.0.0.1 port, a real SQLite StateDB. Imported by test modules (pytest
only collects fixtures from conftest.py, so the modules wrap ``make_bench`` themselves)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from agent.ota.uptane import EcuInstalled, FixedTime, UptaneClient, UptaneConfig
from agent.statestore import StateDB
from hil.repo import DirectorRepository, ImageRepository, KeyStore, RepoServer

VIN = "LSVAU2180N2183294"
ECUS = {"BMS-01": EcuInstalled("bms-hw-a", 3), "ADAS-01": EcuInstalled("adas-hw-b", 10)}
VERSIONS = {"F189": "2.4.0", "F188": "SW-0000123456", "F195": "SUP-2.4.0"}


def image_bytes(tag: str, size: int = 200_000) -> bytes:
    """Deterministic, non-repeating image content."""
    seed = tag.encode()
    out = bytearray()
    i = 0
    import hashlib
    while len(out) < size:
        out += hashlib.sha256(seed + i.to_bytes(8, "big")).digest()
        i += 1
    return bytes(out[:size])


@dataclass
class Bench:
    tmp: Path
    keys: KeyStore
    image: ImageRepository
    director: DirectorRepository
    server: RepoServer
    db: StateDB
    clock: FixedTime
    config: UptaneConfig

    def client(self, **overrides: Any) -> UptaneClient:
        cfg = replace(self.config, **overrides)
        return UptaneClient(cfg, self.db, self.clock, config_dir=self.tmp)

    def add_and_assign(self, ecu_id: str, path: str, data: bytes, hardware_id: str,
                       counter: int, **kw: Any) -> Any:
        info = self.image.add_image(path, data, hardware_id, counter, versions=VERSIONS, **kw)
        return self.director.assign(VIN, ecu_id, info)

    def fetched(self, fragment: str) -> list[Any]:
        return [r for r in self.server.requests if fragment in r.path]


@contextlib.contextmanager
def make_bench(tmp: Path, **config: Any) -> Iterator[Bench]:
    keys = KeyStore(tmp / "keys")
    repo_dir = tmp / "repo"
    image = ImageRepository.create(
        repo_dir / "image", keys, targets_threshold=2,
        delegations={"supplier-bms": (["bms/*"], ["bms-hw-a"]),
                     "supplier-adas": (["adas/*"], None)})
    director = DirectorRepository.create(repo_dir / "director", keys)
    director.vehicle(VIN)
    db = StateDB(tmp / "state" / "state.db")
    server = RepoServer(repo_dir).start()
    defaults: dict[str, Any] = dict(
        director_url=f"{server.url}/director", image_url=f"{server.url}/image",
        director_root=str(director.root_path),
        image_root=str(image.meta_dir / "1.root.json"),
        download_dir=str(tmp / "downloads"),
        min_speed_bytes_s=20_000.0, speed_window_s=0.5, connect_timeout_s=5.0,
        retries=2, backoff_s=0.01, backoff_max_s=0.05)
    defaults.update(config)
    cfg = UptaneConfig(**defaults)
    clock = FixedTime(datetime.now(timezone.utc))
    try:
        yield Bench(tmp, keys, image, director, server, db, clock, cfg)
    finally:
        server.stop()
        db.close()
