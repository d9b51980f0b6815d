"""Read an ECU's identification DIDs on its own link (agent start, on demand, after OTA)."""

from __future__ import annotations

import can

from agent.ota.settings import EcuConfig
from agent.ota.uds.connection import EcuLink
from agent.ota.uds.steps import StepRunner
from agent.ota.uds.versions import EcuVersions, read_versions


def read_ecu_versions(ecu: EcuConfig, bus: can.BusABC | None,
                      notifier: can.Notifier | None = None) -> EcuVersions:
    """All ``ecu.version_dids`` within ``ecu.budget.versions_s``; raises ``FlashError``."""
    with EcuLink(ecu, bus, notifier) as link:
        return StepRunner(link, ecu.retries).run(
            "versions", ecu.budget.versions_s,
            lambda: read_versions(link.client, ecu.name, ecu.dids))
