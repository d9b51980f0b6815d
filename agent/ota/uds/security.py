"""Seed/key algorithms for SecurityAccess (0x27), by name.

OEM algorithms are secret and differ per ECU, so they plug in by name, without a change to
the agent: an installed package declares an entry point in the group ``icv_agent.seed_key``
(``oem-x = "oem_keys:compute"``) whose object is ``fn(level, seed, secret) -> key``; or code
calls ``register_key_algorithm("oem-x", fn)``. ``xor`` and ``aes128-cmac`` are built in.
The virtual ECU uses the same registry to check keys, so a bench ECU accepts exactly what
the agent sends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from importlib.metadata import entry_points

from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC

KeyAlgorithm = Callable[[int, bytes, bytes], bytes]

ENTRY_POINT_GROUP = "icv_agent.seed_key"
KEY_ALGORITHMS: dict[str, KeyAlgorithm] = {}
log = logging.getLogger(__name__)


class UnknownKeyAlgorithm(KeyError):
    pass


def register_key_algorithm(name: str, algorithm: KeyAlgorithm) -> None:
    KEY_ALGORITHMS[name] = algorithm


def known_algorithms() -> set[str]:
    """Registered and installed (entry point) names; entry points are not imported here."""
    return set(KEY_ALGORITHMS) | {ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)}


def key_algorithm(name: str) -> KeyAlgorithm:
    """The algorithm ``name``; an entry point is loaded on first use and then registered."""
    if name in KEY_ALGORITHMS:
        return KEY_ALGORITHMS[name]
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name != name:
            continue
        try:
            algorithm = ep.load()
        except Exception as exc:        # a broken plug-in is a config problem, not a crash
            raise UnknownKeyAlgorithm(f"key algorithm {name!r} ({ep.value}) cannot be "
                                      f"loaded: {type(exc).__name__}: {exc}") from None
        if not callable(algorithm):
            raise UnknownKeyAlgorithm(f"key algorithm {name!r} ({ep.value}) is not callable")
        register_key_algorithm(name, algorithm)
        return algorithm
    raise UnknownKeyAlgorithm(f"unknown key algorithm {name!r}, known: "
                              f"{', '.join(sorted(known_algorithms()))}")


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
