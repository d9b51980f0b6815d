"""Private keys others can read are refused, not warned about; plaintext MQTT off the unit
is a config error unless explicitly allowed for a closed bench network."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.records.keys import DeviceKey, KeyFileError
from hil.benchconfig import bench_config

ROOT = Path(__file__).resolve().parents[1]


def check(cfg: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(cfg)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_a_device_key_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "device.key"
    DeviceKey.generate().save(path)
    assert DeviceKey.load(path).fingerprint
    path.chmod(mode)
    with pytest.raises(KeyFileError, match=f"chmod 600 {path}"):
        DeviceKey.load(path)


def test_the_service_does_not_start_with_an_exposed_device_key(tmp_path: Path) -> None:
    cfg = bench_config(tmp_path / "agent.toml", state_dir=tmp_path / "state")
    key = tmp_path / "state" / "device.key"
    DeviceKey.generate().save(key)
    key.chmod(0o644)
    proc = subprocess.run([sys.executable, "-m", "agent.cli", "run", "--config", str(cfg)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert "accessible to group/others" in proc.stderr and "Traceback" not in proc.stderr


def uplink(tmp: Path, host: str, *, tls: bool, allow: bool = False, key_mode: int = 0o600
           ) -> Path:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp / name).write_text("PEM\n")
    (tmp / "key.pem").chmod(key_mode)
    extra = (f'[uplink]\nenabled = true\nhost = "{host}"\ntls = {str(tls).lower()}\n'
             f'allow_plaintext = {str(allow).lower()}\n'
             f'ca = "{tmp / "ca.pem"}"\ncert = "{tmp / "cert.pem"}"\nkey = "{tmp / "key.pem"}"\n')
    return bench_config(tmp / "agent.toml", extra=extra)


def test_plaintext_mqtt_to_another_host_is_a_config_error(tmp_path: Path) -> None:
    r = check(uplink(tmp_path, "broker.example.net", tls=False))
    assert r.returncode == 2 and "uplink.tls: false to 'broker.example.net'" in r.stderr
    assert check(uplink(tmp_path, "broker.example.net", tls=False, allow=True)).returncode == 0
    assert check(uplink(tmp_path, "127.0.0.1", tls=False)).returncode == 0
    assert check(uplink(tmp_path, "broker.example.net", tls=True)).returncode == 0


def test_an_mqtt_client_key_others_can_read_is_a_config_error(tmp_path: Path) -> None:
    r = check(uplink(tmp_path, "broker.example.net", tls=True, key_mode=0o644))
    assert r.returncode == 2
    assert "uplink.key: MQTT client key is accessible to group/others" in r.stderr
