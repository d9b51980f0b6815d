"""Bench signing keys: Ed25519, one PEM (PKCS#8) + one public JSON file per key name.

Keys live in a folder given on the command line (never in the repository tree). The public
file is what the agent config and ``load_public_key`` read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner, SSlibKey


class KeyStore:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._cache: dict[str, CryptoSigner] = {}

    def _paths(self, name: str) -> tuple[Path, Path]:
        if not name or "/" in name or name.startswith("."):
            raise ValueError(f"bad key name {name!r}")
        return self.folder / f"{name}.key", self.folder / f"{name}.pub.json"

    def exists(self, name: str) -> bool:
        return self._paths(name)[0].exists()

    def generate(self, name: str) -> CryptoSigner:
        priv, pub = self._paths(name)
        if priv.exists():
            raise FileExistsError(f"key {name!r} already exists in {self.folder}")
        signer = CryptoSigner.generate_ed25519()
        fd = os.open(priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(signer.private_bytes)
        pub.write_text(json.dumps({"keyid": signer.public_key.keyid,
                                   **signer.public_key.to_dict()}, indent=1))
        self._cache[name] = signer
        return signer

    def signer(self, name: str) -> CryptoSigner:
        if name in self._cache:
            return self._cache[name]
        priv, pub = self._paths(name)
        data = json.loads(pub.read_text())
        key = SSlibKey.from_dict(data.pop("keyid"), data)
        signer = CryptoSigner(load_pem_private_key(priv.read_bytes(), None), key)
        self._cache[name] = signer
        return signer

    def ensure(self, name: str) -> CryptoSigner:
        return self.signer(name) if self.exists(name) else self.generate(name)

    def public(self, name: str) -> SSlibKey:
        return self.signer(name).public_key

    def public_path(self, name: str) -> Path:
        return self._paths(name)[1]

    def by_keyid(self) -> dict[str, CryptoSigner]:
        out = {}
        for pub in sorted(self.folder.glob("*.pub.json")):
            signer = self.signer(pub.name[: -len(".pub.json")])
            out[signer.public_key.keyid] = signer
        return out
