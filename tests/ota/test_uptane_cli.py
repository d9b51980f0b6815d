"""``icv-hil repo`` end to end: build repositories with the CLI, serve them with the CLI,
verify and download with the agent's client."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from uptane_fixtures import image_bytes

from agent.ota.uptane import (
    EcuInstalled,
    FixedTime,
    FloorTime,
    UpdateRejected,
    UptaneClient,
    UptaneConfig,
)
from agent.ota.uptane.time import load_public_key, parse_time
from agent.statestore import StateDB
from hil.repo import RepoServer
from hil.repo.cli import register

VIN = "LSVAU2180N2183294"
ROOT = Path(__file__).resolve().parents[2]


def repo_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="icv-hil")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["repo", *argv])
    return args.func(args)


@pytest.fixture
def built(tmp_path: Path):
    keys, repo = str(tmp_path / "keys"), str(tmp_path / "repo")
    firmware = tmp_path / "bms-2.4.0.bin"
    firmware.write_bytes(image_bytes("cli-bms"))
    assert repo_cli("init", "--keys", keys, "--repo", repo, "--targets-threshold", "2",
                    "--delegate", "supplier-bms=bms/*@bms-hw-a", "--vin", VIN) == 0
    assert repo_cli("add-image", "--keys", keys, "--repo", repo, str(firmware),
                    "--path", "bms/bms-2.4.0.bin", "--hardware-id", "bms-hw-a",
                    "--release-counter", "4", "--version", "F189=2.4.0",
                    "--version", "F188=SW-1", "--sha512") == 0
    assert repo_cli("assign", "--keys", keys, "--repo", repo, "--vin", VIN, "--ecu",
                    "BMS-01", "--image", "bms/bms-2.4.0.bin") == 0
    return tmp_path, keys, repo, firmware


def _now() -> FixedTime:
    return FixedTime(datetime.now(timezone.utc))


def client_for(tmp: Path, url: str, clock: FixedTime | None = None) -> UptaneClient:
    """Config paths relative to the config folder, as in a real agent config."""
    cfg = UptaneConfig(director_url=f"{url}/director", image_url=f"{url}/image",
                       director_root="repo/director/_root/metadata/1.root.json",
                       image_root="repo/image/metadata/1.root.json",
                       download_dir="downloads", backoff_s=0.01)
    return UptaneClient(cfg, StateDB(tmp / "state.db"), clock or _now(), config_dir=tmp)


def test_cli_built_repositories_verify_and_download(built, capsys):
    tmp, keys, repo, firmware = built
    assert repo_cli("rotate-root", "--keys", keys, "--repo", repo, "--which", "director") == 0
    assert "director root is now v2" in capsys.readouterr().out
    with RepoServer(repo) as server:
        client = client_for(tmp, server.url)
        (target,) = client.check_campaign(VIN, {"BMS-01": EcuInstalled("bms-hw-a", 3)})
        assert target.versions == {"F189": "2.4.0", "F188": "SW-1"}
        assert set(target.hashes) == {"sha256", "sha512"}
        assert client.download(target).read_bytes() == firmware.read_bytes()
    assert client.statedb.get("uptane.repo.director")["root"]["signed"]["version"] == 2
    new_key = Path(keys) / "director-root-2.key"
    assert new_key.exists() and new_key.stat().st_mode & 0o077 == 0


def test_cli_expire_makes_timestamp_short_lived(built, capsys):
    tmp, keys, repo, _ = built
    assert repo_cli("expire", "--keys", keys, "--repo", repo, "--which", "director",
                    "--role", "timestamp", "--days", "0.5") == 0
    assert "timestamp expires" in capsys.readouterr().out
    with RepoServer(repo) as server:
        late = _now()
        late.advance(timedelta(days=0.75))
        client = client_for(tmp, server.url, late)
        with pytest.raises(UpdateRejected) as info:
            client.check_campaign(VIN, {"BMS-01": EcuInstalled("bms-hw-a", 3)})
    assert info.value.threat == "freeze" and info.value.role == "timestamp"


def test_cli_time_attestation_is_trusted_by_floor_time(built):
    tmp, keys, _, _ = built
    out = tmp / "time.json"
    assert repo_cli("attest-time", "--keys", keys, "--out", str(out),
                    "--time", "2031-05-01T00:00:00Z") == 0
    key = load_public_key(Path(keys) / "time.pub.json")
    db = StateDB(tmp / "t.db")
    clock = FloorTime(db, FixedTime(parse_time("2025-01-01T00:00:00Z")), attestation=out,
                      keys=[key])
    assert clock.now() == parse_time("2031-05-01T00:00:00Z")


@pytest.mark.parametrize("argv, message", [
    (["add-image", "{keys}", "{repo}", "missing.bin", "--hardware-id", "x",
      "--release-counter", "1"], "no image file"),
    (["assign", "{keys}", "{repo}", "--vin", VIN, "--ecu", "E", "--image", "nope.bin"],
     "no image"),
    (["assign", "{keys}", "{repo}", "--vin", VIN, "--ecu", "E", "--image",
      "bms/bms-2.4.0.bin", "--version", "F189"], "DID=STRING"),
    (["init", "{keys}", "{repo}"], "already holds"),
])
def test_cli_bad_input_is_a_clear_error(built, capsys, argv, message):
    tmp, keys, repo, _ = built
    fixed = []
    for a in argv:
        fixed += {"{keys}": ["--keys", keys], "{repo}": ["--repo", repo]}.get(a, [a])
    assert repo_cli(*fixed) == 2
    assert message in capsys.readouterr().err


def test_cli_serve_answers_range_requests_and_stops_on_sigint(built):
    _, _, repo, _ = built
    code = ("import argparse, sys; from hil.repo.cli import register; "
            "p = argparse.ArgumentParser(); register(p.add_subparsers()); "
            "a = p.parse_args(sys.argv[1:]); sys.exit(a.func(a))")
    proc = subprocess.Popen([sys.executable, "-c", code, "repo", "serve", "--repo", repo,
                             "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        line = proc.stdout.readline()
        url = line.split(" on ")[1].split(" ")[0]
        req = urllib.request.Request(f"{url}/image/metadata/1.root.json",
                                     headers={"Range": "bytes=0-9"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            first = (Path(repo) / "image" / "metadata" / "1.root.json").read_bytes()[:10]
            assert resp.status == 206 and resp.read() == first
            assert resp.headers["Content-Range"].startswith("bytes 0-9/")
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 0
