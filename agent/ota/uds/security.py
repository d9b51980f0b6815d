"""Seed/key algorithms for SecurityAccess (0x27), by name.

OEM algorithms are secret and differ per ECU, so they plug in by name:
``register_key_algorithm("oem-x", fn)`` with ``fn(level, seed, secret) -> key``. The virtual
ECU uses the same registry to check keys, so a bench ECU accepts exactly what the agent sends.
"""

from __future__ import annotations

from collections.abc import Callable

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

KeyAlgorithm = Callable[[int, bytes, bytes], bytes]

KEY_ALGORITHMS: dict[str, KeyAlgorithm] = {}


class UnknownKeyAlgorithm(KeyError):
    pass


def register_key_algorithm(name: str, algorithm: KeyAlgorithm) -> None:
    KEY_ALGORITHMS[name] = algorithm


def key_algorithm(name: str) -> KeyAlgorithm:
    try:
        return KEY_ALGORITHMS[name]
    except KeyError:
        raise UnknownKeyAlgorithm(f"unknown key algorithm {name!r}, known: "
                                  f"{', '.join(sorted(KEY_ALGORITHMS))}") from None


def compute_key(name: str, level: int, seed: bytes, secret: bytes) -> bytes:
    return key_algorithm(name)(level, seed, secret)


def xor_key(level: int, seed: bytes, secret: bytes) -> bytes:
    """Seed XOR a constant (repeated): the classic weak scheme, fine for a bench ECU."""
    if not secret:
        raise ValueError("xor key algorithm needs a non-empty secret")
    return bytes(s ^ secret[i % len(secret)] for i, s in enumerate(seed))


def aes128_cmac_key(level: int, seed: bytes, secret: bytes) -> bytes:
    """AES-128-CMAC over level || seed with a 16-byte ECU key; the key is the full MAC."""
    if len(secret) != 16:
        raise ValueError("aes128-cmac needs a 16-byte (32 hex digit) secret")
    mac = CMAC(algorithms.AES(secret))
    mac.update(bytes([level]) + seed)
    return mac.finalize()


register_key_algorithm("xor", xor_key)
register_key_algorithm("aes128-cmac", aes128_cmac_key)
