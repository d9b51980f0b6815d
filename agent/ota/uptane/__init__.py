"""Uptane-style verification of OTA metadata and images on the Primary (the gateway).

Two repositories, both fully verified on python-tuf's metadata API: the Director (per
vehicle: which image each ECU gets) and the Image repository (what the suppliers signed,
with delegations). Expiry is judged by a ``SecureTime``, never the bare system clock, and
every rejection is an ``UpdateRejected`` whose ``threat`` names the Uptane threat stopped
(``arbitrary_software``, ``rollback``, ``freeze``, ``mix_and_match``, ``endless_data``,
``slow_retrieval``, ``partial_bundle``, ``wrong_hardware``, ``drop_request``).

Campaign flow::

    db = StateDB(state_dir / "state.db")
    clock = FloorTime(db, attestation=..., keys=[...])        # or SystemTime()/FixedTime()
    client = UptaneClient(cfg.ota.uptane, db, clock, config_dir=cfg.path.parent)
    targets = client.check_campaign(vin, {"BMS-01": EcuInstalled("bms-hw-a", 6), ...})
    files = client.download_all(targets)      # ecu_id -> verified Path, or PartialBundle
    ... preconditions, consent, flash, read back target.versions (F189/F188/F195) ...
    client.mark_installed("BMS-01", target)   # advances the ECU's release-counter floor

URLs: ``{director_url}/{vin}/metadata/{N}.root.json|timestamp.json|{V}.snapshot.json|
{V}.targets.json`` and ``{image_url}/metadata/...`` (plus ``{V}.{role}.json`` for
delegated roles); images at ``{image_url}/targets/{sha256}.{filename}``.
Persistent state (StateDB kv): ``uptane.repo.director``, ``uptane.repo.image`` (trusted
root and version floors), ``uptane.ecu.<ecu_id>`` (installed image, release counter),
``uptane.time.floor``.
"""

from agent.ota.uptane.custom import VERSION_DIDS, TargetFields
from agent.ota.uptane.download import HttpFetcher, TransferLimits
from agent.ota.uptane.errors import (
    THREATS,
    ArbitrarySoftware,
    DownloadFailed,
    EndlessData,
    Freeze,
    MixAndMatch,
    PartialBundle,
    Rollback,
    SlowRetrieval,
    UpdateRejected,
    WrongHardware,
)
from agent.ota.uptane.settings import UptaneConfig, check_uptane, load_uptane
from agent.ota.uptane.time import FixedTime, FloorTime, SecureTime, SystemTime
from agent.ota.uptane.verifier import EcuInstalled, UptaneClient, VerifiedTarget

__all__ = [
    "THREATS", "VERSION_DIDS", "ArbitrarySoftware", "DownloadFailed", "EcuInstalled",
    "EndlessData", "FixedTime", "FloorTime", "Freeze", "HttpFetcher", "MixAndMatch",
    "PartialBundle", "Rollback", "SecureTime", "SlowRetrieval", "SystemTime", "TargetFields",
    "TransferLimits", "UpdateRejected", "UptaneClient", "UptaneConfig", "VerifiedTarget",
    "WrongHardware", "check_uptane", "load_uptane",
]
