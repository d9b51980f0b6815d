"""Read the identification DIDs of an ECU (ReadDataByIdentifier 0x22) into ``EcuVersions``.

Each DID is read on its own so one DID the ECU does not support (NRC 0x31) is recorded as
missing instead of failing the whole inventory.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import udsoncan
from udsoncan import DidCodec

FINGERPRINT_DID = 0xF198
PROGRAMMING_DATE_DID = 0xF199


class AsciiCodec(DidCodec):
    """Variable-length ASCII; padding (NUL, 0xFF, spaces) is stripped, binary shown as hex."""

    def encode(self, *value: Any) -> bytes:
        if isinstance(value[0], (bytes, bytearray)):     # a recipe's fingerprint layout
            return bytes(value[0])
        return str(value[0]).encode("ascii")

    def decode(self, payload: bytes) -> str:
        raw = bytes(payload).rstrip(b"\x00\xff ")
        if all(0x20 <= b < 0x7F for b in raw):
            return raw.decode("ascii")
        return raw.hex().upper()

    def __len__(self) -> int:
        raise DidCodec.ReadAllRemainingData


class BcdDateCodec(DidCodec):
    """F199 programming date as 4 BCD bytes YYYYMMDD, read and written as "YYYY-MM-DD"."""

    def encode(self, *value: Any) -> bytes:
        day = value[0]
        if isinstance(day, (bytes, bytearray)):
            return bytes(day)
        if isinstance(day, str):
            day = dt.date.fromisoformat(day)
        return bytes.fromhex(day.strftime("%Y%m%d"))

    def decode(self, payload: bytes) -> str:
        digits = bytes(payload).hex()
        return f"{digits[0:4]}-{digits[4:6]}-{digits[6:8]}" if len(digits) == 8 else digits

    def __len__(self) -> int:
        return 4


def did_codecs(dids: Iterable[int]) -> dict[int | str, DidCodec]:
    """Codecs for udsoncan's ``data_identifiers``; any other DID reads as ASCII too."""
    codecs: dict[int | str, DidCodec] = {did: AsciiCodec() for did in dids}
    codecs["default"] = AsciiCodec()
    codecs[FINGERPRINT_DID] = AsciiCodec()
    codecs[PROGRAMMING_DATE_DID] = BcdDateCodec()
    return codecs


def did_key(did: int) -> str:
    return f"{did:04X}"


@dataclass
class EcuVersions:
    ecu: str
    values: dict[int, str] = field(default_factory=dict)
    missing: list[int] = field(default_factory=list)       # NRC 0x31: DID not supported

    def get(self, did: int) -> str | None:
        return self.values.get(did)

    @property
    def software_version(self) -> str | None:
        return self.values.get(0xF189)

    @property
    def hardware_number(self) -> str | None:
        return self.values.get(0xF191)

    def as_dict(self) -> dict[str, str]:
        """``{"F189": "2.1.0", ...}`` for JSON records."""
        return {did_key(did): value for did, value in sorted(self.values.items())}

    def mismatches(self, expected: Mapping[int, str]) -> dict[int, tuple[str, str | None]]:
        return {did: (value, self.values.get(did)) for did, value in expected.items()
                if self.values.get(did) != value}


def read_did(client: udsoncan.Client, did: int) -> str | None:
    """One DID, or None when the ECU says it does not support it (NRC 0x31)."""
    try:
        return client.read_data_by_identifier_first(did)
    except udsoncan.exceptions.NegativeResponseException as exc:
        if exc.response.code == udsoncan.Response.Code.RequestOutOfRange:
            return None
        raise


def read_versions(client: udsoncan.Client, ecu_name: str, dids: Iterable[int]) -> EcuVersions:
    """Read ``dids`` one by one. Transport errors propagate; use under a step budget."""
    versions = EcuVersions(ecu_name)
    for did in dids:
        value = read_did(client, did)
        if value is None:
            versions.missing.append(did)
        else:
            versions.values[did] = value
    return versions


def parse_did_keys(values: Mapping[str | int, str]) -> dict[int, str]:
    """``{"F189": "2.0"}`` or ``{0xF189: "2.0"}`` -> ``{0xF189: "2.0"}``."""
    return {(k if isinstance(k, int) else int(k, 16)): v for k, v in values.items()}
