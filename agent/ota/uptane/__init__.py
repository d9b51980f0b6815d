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
``uptane.time.floor`` (time from sources trusted for time) and ``uptane.time.online``
(time the online timestamp role claimed, at most ``max_time_step_days`` ahead).
"""

# Names load on first use (PEP 562): the agent's config imports ``settings`` from here,
# and python-tuf is only worth its memory on a unit that really runs a campaign.
_WHERE = {
    "ArbitrarySoftware": "agent.ota.uptane.errors",
    "DownloadFailed": "agent.ota.uptane.errors",
    "EcuInstalled": "agent.ota.uptane.verifier",
    "EndlessData": "agent.ota.uptane.errors",
    "FixedTime": "agent.ota.uptane.time",
    "FloorTime": "agent.ota.uptane.time",
    "Freeze": "agent.ota.uptane.errors",
    "HttpFetcher": "agent.ota.uptane.download",
    "MixAndMatch": "agent.ota.uptane.errors",
    "PartialBundle": "agent.ota.uptane.errors",
    "Rollback": "agent.ota.uptane.errors",
    "SecureTime": "agent.ota.uptane.time",
    "SlowRetrieval": "agent.ota.uptane.errors",
    "SystemTime": "agent.ota.uptane.time",
    "THREATS": "agent.ota.uptane.errors",
    "TargetFields": "agent.ota.uptane.custom",
    "TransferLimits": "agent.ota.uptane.download",
    "UpdateRejected": "agent.ota.uptane.errors",
    "UptaneClient": "agent.ota.uptane.verifier",
    "UptaneConfig": "agent.ota.uptane.settings",
    "VERSION_DIDS": "agent.ota.uptane.custom",
    "VerifiedTarget": "agent.ota.uptane.verifier",
    "WrongHardware": "agent.ota.uptane.errors",
    "check_uptane": "agent.ota.uptane.settings",
    "load_uptane": "agent.ota.uptane.settings",
}


def __getattr__(name: str) -> object:
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "THREATS", "VERSION_DIDS", "ArbitrarySoftware", "DownloadFailed", "EcuInstalled",
    "EndlessData", "FixedTime", "FloorTime", "Freeze", "HttpFetcher", "MixAndMatch",
    "PartialBundle", "Rollback", "SecureTime", "SlowRetrieval", "SystemTime", "TargetFields",
    "TransferLimits", "UpdateRejected", "UptaneClient", "UptaneConfig", "VerifiedTarget",
    "WrongHardware", "check_uptane", "load_uptane",
]
