"""Typed rejections: each names the Uptane threat (Standard §"Description of threats") it stopped.

The campaign flow reports ``threat`` upstream unchanged, so a backend can count attacks by
kind without parsing messages.
"""

from __future__ import annotations

THREATS = (
    "arbitrary_software", "rollback", "freeze", "mix_and_match", "endless_data",
    "slow_retrieval", "partial_bundle", "wrong_hardware", "drop_request",
)


class UpdateRejected(Exception):
    """Base of every rejection; ``threat`` is one of ``THREATS``."""

    threat = "arbitrary_software"

    def __init__(self, message: str, *, repo: str = "", role: str = "", ecu_id: str = ""):
        self.message = message
        self.repo = repo
        self.role = role
        self.ecu_id = ecu_id
        where = "/".join(p for p in (repo, role) if p)
        prefix = f"{where}: " if where else ""
        if ecu_id:
            prefix = f"{prefix}ECU {ecu_id}: "
        super().__init__(f"{prefix}{message} [{self.threat}]")


class ArbitrarySoftware(UpdateRejected):
    """Bad or missing signatures, hash mismatch, malformed signed data."""

    threat = "arbitrary_software"


class Rollback(UpdateRejected):
    """A metadata version or an ECU release counter went backwards."""

    threat = "rollback"


class Freeze(UpdateRejected):
    """Metadata expired according to the secure time."""

    threat = "freeze"


class MixAndMatch(UpdateRejected):
    """Metadata files or repositories that do not belong together."""

    threat = "mix_and_match"


class EndlessData(UpdateRejected):
    """More bytes than the signed length or the per-role cap."""

    threat = "endless_data"


class SlowRetrieval(UpdateRejected):
    """Transfer below the configured speed floor."""

    threat = "slow_retrieval"


class PartialBundle(UpdateRejected):
    """Part of the bundle the Director asked for cannot be had."""

    threat = "partial_bundle"


class WrongHardware(UpdateRejected):
    """Image not made for the hardware of the ECU it is meant for."""

    threat = "wrong_hardware"


class DownloadFailed(UpdateRejected):
    """Repository unreachable after bounded retries (Uptane's drop-request attack)."""

    threat = "drop_request"
