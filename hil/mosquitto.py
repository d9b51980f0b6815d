"""A local Mosquitto with mutual TLS for the bench, the demo, the tests and benchmarks.

Everything is generated at run time in a folder of the caller: a CA, the broker's
certificate, client certificates signed by that CA and, for refusal tests, a client
certificate signed by an unrelated CA. The broker requires a client certificate
(``require_certificate``) and uses its CN as the MQTT user name. It keeps sessions on disk
(``persistence``), so it can be stopped and restarted on the same port without losing
queued QoS 1 messages.
"""

from __future__ import annotations

import datetime as dt
import getpass
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["BrokerError", "BrokerPKI", "ClientCert", "MosquittoBroker", "find_mosquitto"]


class BrokerError(RuntimeError):
    """The test broker could not be started (missing binary, bad config, port trouble)."""


@dataclass(frozen=True)
class ClientCert:
    """What a client needs for mutual TLS: the CA that signed the broker, its cert and key."""

    ca: Path
    cert: Path
    key: Path


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


class _Authority:
    """One certificate authority (key + self-signed certificate) that can issue leaves."""

    def __init__(self, folder: Path, cn: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(_name(cn))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True,
                                         False, False), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.path = folder / f"{cn}.crt"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, folder: Path, cn: str, *, server: bool) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(cn)).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_path, key_path = folder / f"{cn}.crt", folder / f"{cn}.key"
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
        return cert_path, key_path


class BrokerPKI:
    """CA, broker certificate and client certificates in ``folder`` (generated once)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._ca = _Authority(self.folder, "icv-test-ca")
        self._rogue = _Authority(self.folder, "icv-rogue-ca")
        self.ca = self._ca.path
        self.server_cert, self.server_key = self._ca.issue(self.folder, "localhost", server=True)

    def client(self, cn: str) -> ClientCert:
        """A client certificate the broker accepts (CN becomes the MQTT user name)."""
        cert, key = self._ca.issue(self.folder, cn, server=False)
        return ClientCert(self.ca, cert, key)

    def rogue_client(self, cn: str) -> ClientCert:
        """A client certificate from an unrelated CA: the broker must refuse it."""
        cert, key = self._rogue.issue(self.folder, f"rogue-{cn}", server=False)
        return ClientCert(self.ca, cert, key)


def find_mosquitto() -> str:
    """Path of the mosquitto binary, or a BrokerError saying how to install it."""
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)),
        None)
    if not found:
        raise BrokerError("mosquitto is not installed (Debian/Ubuntu: apt-get install mosquitto); "
                          "the MQTT tests need a real broker")
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoBroker:
    """A mosquitto process on 127.0.0.1 with mutual TLS; restartable on the same port."""

    def __init__(self, folder: Path, pki: BrokerPKI, port: int | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.host = "127.0.0.1"
        self.port = port or _free_port()
        self._port_chosen = port is None      # ours to change until the first start works
        self.binary = find_mosquitto()
        self.log_path = self.folder / "mosquitto.log"
        self.conf_path = self.folder / "mosquitto.conf"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write_conf(self) -> None:
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        self.conf_path.write_text("\n".join([
            f"user {getpass.getuser()}",
            "persistence true",
            f"persistence_location {data}/",
            # Save sessions and queued messages after every change, not every 30 min: a
            # crash (power cut, OOM kill) then loses the last moments only, and those the
            # backend gets again through records.resend.
            "autosave_on_changes true",
            "autosave_interval 1",
            "max_queued_messages 0",
            "max_inflight_messages 20",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            f"listener {self.port} {self.host}",
            f"cafile {self.pki.ca}",
            f"certfile {self.pki.server_cert}",
            f"keyfile {self.pki.server_key}",
            "require_certificate true",
            "use_identity_as_username true",
            "allow_anonymous false",
            "",
        ]))

    def start(self, timeout: float = 10.0) -> None:
        """Start (or restart on the same port); a free port taken meanwhile is replaced once
        or twice before the first start, never after it."""
        attempts = 3 if self._port_chosen else 1
        for attempt in range(attempts):
            try:
                self._start(timeout)
                self._port_chosen = False
                return
            except BrokerError as exc:
                if attempt == attempts - 1 or "in use" not in str(exc):
                    raise
                self.port = _free_port()

    def _start(self, timeout: float) -> None:
        if self.running:
            return
        self._write_conf()
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        self.proc = subprocess.Popen([self.binary, "-c", str(self.conf_path)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            # Ready when this run's log says "running"; a TCP probe could reach another
            # process that holds the port.
            log = self._log_since(offset)
            proc = self.proc
            if proc.poll() is not None or "Error:" in log.split(" running", 1)[0]:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                self.proc = None
                raise BrokerError(f"mosquitto failed on port {self.port}: {err.strip()} "
                                  f"{log.strip()}")
            if " running" in log:
                return
            time.sleep(0.02)
        self.stop()
        raise BrokerError(f"mosquitto did not start on port {self.port} within {timeout} s")

    def _log_since(self, offset: int) -> str:
        try:
            with self.log_path.open("rb") as f:
                f.seek(offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop like systemd does (SIGTERM): sessions and queued messages are saved."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def kill(self) -> None:
        """Crash (SIGKILL): nothing is saved beyond the last autosave."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait()
        if proc.stderr:
            proc.stderr.close()

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> MosquittoBroker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


