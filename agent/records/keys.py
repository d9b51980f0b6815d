"""The device's Ed25519 key: it signs every record, so the backend can tell ours from forgeries.

The private key lives in one PEM (PKCS#8) file, mode 0600, written atomically so a power
cut never leaves half a key behind.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from agent.keyfiles import key_file_exposed

log = logging.getLogger(__name__)


class KeyFileError(Exception):
    """A key file is missing, unreadable, not PEM, or not an Ed25519 key."""


def fingerprint(public_key: Ed25519PublicKey) -> str:
    """Short id of a public key: first 16 hex digits of SHA-256 over the raw 32 bytes."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyFileError(f"{path}: key file not found") from None
    except OSError as exc:
        raise KeyFileError(f"{path}: cannot read key: {exc.strerror}") from None


def _kind(key: object) -> str:
    return type(key).__name__.lstrip("_").replace("PrivateKey", "").replace("PublicKey", "")


class DeviceKey:
    """The private signing key of this unit."""

    def __init__(self, private_key: Ed25519PrivateKey, path: Path | None = None):
        self.private_key = private_key
        self.public_key: Ed25519PublicKey = private_key.public_key()
        self.path = path

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: str | Path) -> DeviceKey:
        """Read a PEM PKCS#8 Ed25519 private key; raise ``KeyFileError`` saying what is wrong."""
        path = Path(path)
        blob = _read(path)
        try:
            key = serialization.load_pem_private_key(blob, password=None)
        except TypeError:
            raise KeyFileError(f"{path}: key is encrypted; the device key must not be") from None
        except (ValueError, UnsupportedAlgorithm):
            raise KeyFileError(f"{path}: not a PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyFileError(f"{path}: {_kind(key)} key, expected Ed25519")
        problem = key_file_exposed(path)
        if problem:
            raise KeyFileError(f"{path}: device key {problem}")
        return cls(key, path)

    @classmethod
    def load_or_create(cls, path: str | Path) -> DeviceKey:
        """The key at ``path``; a new one written there (0600, parents created) if none."""
        path = Path(path)
        if path.exists():
            return cls.load(path)
        key = cls.generate()
        key.save(path)
        log.info("%s: created device key %s", path, key.fingerprint)
        return key

    def save(self, path: str | Path, *, overwrite: bool = False) -> None:
        """Write atomically with mode 0600; refuse to replace a key unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise KeyFileError(f"{path}: a key already exists (use --force to replace it)")
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.fchmod(fd, 0o600)
                os.write(fd, pem)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise KeyFileError(f"{path}: cannot write key: {exc.strerror}") from None
        self.path = path

    def sign(self, data: bytes) -> bytes:
        return self.private_key.sign(data)

    def public_pem(self) -> str:
        return public_pem(self.public_key)

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.public_key)


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM file (a private key file gives its public half)."""
    path = Path(path)
    blob = _read(path)
    try:
        key: object = serialization.load_pem_public_key(blob)
    except (ValueError, UnsupportedAlgorithm):
        try:
            key = serialization.load_pem_private_key(blob, password=None).public_key()
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise KeyFileError(f"{path}: not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{path}: {_kind(key)} key, expected Ed25519")
    return key
