"""Custom target fields shared by the bench repositories and the verifier.

Director ``TargetFile.custom``::

    {"ecu_id": "BMS-01", "hardware_id": "bms-hw-a", "release_counter": 7,
     "version": {"F189": "2.4.0", "F188": "SW-123456", "F195": "SUP-2.4.0"}}

plus ``"downgrade": true`` when the Director explicitly asks to go below the ECU's
rollback floor (a recall rollback); without it no release counter may go backwards.

Image repository ``TargetFile.custom``: ``hardware_id`` and ``release_counter`` (the
"SHALL match" section: both must equal the Director's), optionally ``version``.
Director ``targets.json`` also carries ``"custom": {"vin": ...}`` at the top of its signed
part, so one vehicle's instructions cannot be replayed to another.

Director ``root.json`` may delegate keys for time (``time_attestation``: key ids and
threshold, the keys in ``keys``); its ``timestamp.json`` may then carry a
``time_attestation`` they signed, the only Director input trusted to move the agent's
secure-time floor freely (see ``agent.ota.uptane.time``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Any

from agent.ota.uptane.errors import ArbitrarySoftware
from agent.settings_loader import Problems, build

ECU_ID = "ecu_id"
HARDWARE_ID = "hardware_id"
RELEASE_COUNTER = "release_counter"
VERSION = "version"
VIN = "vin"
# Director only: this assignment may go below the ECU's rollback floor (recall rollback).
DOWNGRADE = "downgrade"
# DIDs whose read-back after flashing must equal the signed strings.
DID_SW_VERSION = "F189"
DID_SW_NUMBER = "F188"
DID_SUPPLIER_SW_VERSION = "F195"
VERSION_DIDS = (DID_SW_VERSION, DID_SW_NUMBER, DID_SUPPLIER_SW_VERSION)
# Delegated roles may name the hardware they may sign for (Uptane delegation field).
DELEGATION_HARDWARE_IDS = "hardware_ids"
# Director root: keys trusted for time, {"keyids": [...], "threshold": n} (keys in "keys");
# Director timestamp: a time attestation signed by them (agent.ota.uptane.time format).
ROOT_TIME_KEYS = "time_attestation"
TIMESTAMP_TIME_ATTESTATION = "time_attestation"

_DID = re.compile(r"[0-9A-F]{4}")
# Image paths: no empty, dot-leading or traversal segments; nothing a shell or URL mangles.
SAFE_PATH = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*(/[A-Za-z0-9][A-Za-z0-9._+-]*)*")


@dataclass(frozen=True)
class TargetFields:
    hardware_id: str
    release_counter: int
    ecu_id: str = ""
    versions: dict[str, str] = field(default_factory=dict)
    downgrade: bool = False


@dataclass(kw_only=True)
class ImageCustom:
    """The custom fields of an image repository target, as ``agent.settings_loader`` checks them."""

    hardware_id: str = field(metadata={"min_len": 1})
    release_counter: int = field(metadata={"range": (0, None)})
    version: dict[str, str] = field(default_factory=dict, metadata={
        "keys": {"pattern": _DID.pattern, "pattern_help": "a DID of 4 hex digits"}})


@dataclass(kw_only=True)
class DirectorCustom(ImageCustom):
    """The custom fields of a Director target: also the ECU and an explicit downgrade."""

    ecu_id: str = field(metadata={"min_len": 1})
    downgrade: bool = False


def parse_fields(custom: Any, path: str, *, director: bool, repo: str) -> TargetFields:
    """Validate the custom fields of one target; ``ArbitrarySoftware`` if malformed.
    Fields this agent does not know are ignored (other tools may add their own)."""
    def bad(msg: str) -> ArbitrarySoftware:
        return ArbitrarySoftware(f"target {path!r}: {msg}", repo=repo, role="targets")

    if not SAFE_PATH.fullmatch(path) or len(path) > 255:
        raise bad("unsafe target path")
    if not isinstance(custom, dict):
        raise bad("custom fields missing")
    model: type[ImageCustom] = DirectorCustom if director else ImageCustom
    known = {f.name for f in dataclasses.fields(model)}
    problems = Problems()
    fields = build(model, {k: v for k, v in custom.items() if k in known}, "", problems)
    if problems:
        raise bad("; ".join(f"{key}: {msg}" for _, key, msg in problems))
    if director and DID_SW_VERSION not in fields.version:
        raise bad(f"{VERSION}.{DID_SW_VERSION} is required for the read-back check")
    if isinstance(fields, DirectorCustom):
        return TargetFields(fields.hardware_id, fields.release_counter, fields.ecu_id,
                            dict(fields.version), fields.downgrade)
    return TargetFields(fields.hardware_id, fields.release_counter, "", dict(fields.version))


def director_custom(ecu_id: str, hardware_id: str, release_counter: int,
                    versions: dict[str, str], downgrade: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {ECU_ID: ecu_id, HARDWARE_ID: hardware_id,
                           RELEASE_COUNTER: release_counter, VERSION: dict(versions)}
    if downgrade:
        out[DOWNGRADE] = True
    return out


def image_custom(hardware_id: str, release_counter: int,
                 versions: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {HARDWARE_ID: hardware_id, RELEASE_COUNTER: release_counter}
    if versions:
        out[VERSION] = dict(versions)
    return out
