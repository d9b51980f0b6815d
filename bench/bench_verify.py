"""Uptane verification cost on this machine: image hash + length check (python-tuf's
``TargetFile.verify_length_and_hashes``) next to ``sha256sum`` of the same file, the full
download path over loopback HTTP (streamed hashing), and a full metadata refresh of both
repositories (Director + Image with a delegation).

    python3 bench/bench_verify.py [--mib 32] [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuf.api.metadata import TargetFile  # noqa: E402

from agent.ota.uptane import (  # noqa: E402
    EcuInstalled,
    FixedTime,
    HttpFetcher,
    TransferLimits,
    UptaneClient,
    UptaneConfig,
)
from agent.statestore import StateDB  # noqa: E402
from hil.repo import DirectorRepository, ImageRepository, KeyStore, RepoServer  # noqa: E402

VIN = "BENCH000000000001"


def timed(fn, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def row(name: str, samples: list[float], mib: float | None = None) -> str:
    med = statistics.median(samples)
    rate = f"{mib / med:8.0f} MiB/s" if mib else " " * 14
    return f"{name:<48} {med * 1000:9.1f} ms  {min(samples) * 1000:9.1f} ms  {rate}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=32)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-verify-"))
    try:
        image = tmp / "image.bin"
        image.write_bytes(os.urandom(args.mib * 1024 * 1024))
        info = TargetFile.from_file("ecu/image.bin", str(image), ["sha256"])

        def tuf_verify() -> None:
            with open(image, "rb") as fh:
                info.verify_length_and_hashes(fh)

        def hashlib_file() -> None:
            with open(image, "rb") as fh:
                hashlib.file_digest(fh, "sha256")

        sha256sum = shutil.which("sha256sum")

        def coreutils() -> None:
            out = subprocess.run([sha256sum, str(image)], check=True, capture_output=True,
                                 text=True).stdout
            assert out.split()[0] == info.hashes["sha256"]

        www = tmp / "www"
        www.mkdir()
        shutil.copyfile(image, www / "image.bin")
        fetcher = HttpFetcher(TransferLimits(retries=0))
        rows = []
        with RepoServer(www) as server:
            def download() -> None:
                dest = tmp / "dl" / "image.bin"
                dest.unlink(missing_ok=True)
                fetcher.download_image(f"{server.url}/image.bin", dest, info.length,
                                       info.hashes)
            rows.append(row("download + streamed verify (loopback HTTP)",
                            timed(download, args.runs), args.mib))
        rows.insert(0, row(f"python-tuf verify_length_and_hashes ({args.mib} MiB)",
                           timed(tuf_verify, args.runs), args.mib))
        if hasattr(hashlib, "file_digest"):
            rows.insert(1, row("hashlib.file_digest sha256", timed(hashlib_file, args.runs),
                               args.mib))
        if sha256sum:
            rows.insert(2, row("sha256sum (subprocess)", timed(coreutils, args.runs),
                               args.mib))
        rows.append(row("metadata refresh, Director + Image (cold)",
                        refresh_samples(tmp, args.runs, cold=True)))
        rows.append(row("metadata refresh, Director + Image (warm)",
                        refresh_samples(tmp, args.runs, cold=False)))
        print(f"{'what':<48} {'median':>12} {'best':>12} {'rate':>14}")
        print("\n".join(rows))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


def refresh_samples(tmp: Path, runs: int, *, cold: bool) -> list[float]:
    """check_campaign(): root N+1 probe, timestamp, snapshot, targets, delegated role, for
    both repositories, plus the cross-check of one assigned image."""
    base = tmp / ("cold" if cold else "warm")
    keys = KeyStore(base / "keys")
    image = ImageRepository.create(base / "repo" / "image", keys,
                                   delegations={"supplier": (["ecu/*"], None)})
    director = DirectorRepository.create(base / "repo" / "director", keys)
    target = image.add_image("ecu/image.bin", os.urandom(4096), "hw-a", 1,
                             versions={"F189": "1.0"})
    director.assign(VIN, "ECU-01", target)
    ecus = {"ECU-01": EcuInstalled("hw-a", 0)}
    clock = FixedTime(datetime.now(timezone.utc))
    with RepoServer(base / "repo") as server:
        cfg = UptaneConfig(director_url=f"{server.url}/director", image_url=f"{server.url}/image",
                           director_root=str(director.root_path),
                           image_root=str(image.meta_dir / "1.root.json"))
        warm_db = StateDB(None)

        def refresh() -> None:
            db = StateDB(None) if cold else warm_db
            assert len(UptaneClient(cfg, db, clock).check_campaign(VIN, ecus)) == 1

        refresh()
        return timed(refresh, runs)


if __name__ == "__main__":
    sys.exit(main())
