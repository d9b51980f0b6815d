"""Small things several suites share: sample record data per type, and waiting."""

from __future__ import annotations

import time
from typing import Any

# ``data`` of a plausible record per type (schema-valid), for journal/uplink/backend tests.
SAMPLE: dict[str, dict[str, Any]] = {
    "accident.trigger": {"trigger": "airbag", "cda_in_use_5s": True, "cda_in_use_30s": True,
                         "speed": 42.0, "location": None,
                         "report_deadline": "2025-01-02T00:00:00.000Z"},
    "accident.record": {"samples": []},
    "safety.aeb": {"speed": 30.0, "cda_state": "ACTIVE", "duration_s": 1.2},
    "ecu.versions": {"ecu": "brake", "dids": {"F189": "1.0"}},
    "stats.period": {"period": "2025Q1"},
    "agent.health": {"cpu": 1.0},
}


def wait_until(predicate: Any, timeout: float, every: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds passed; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return bool(predicate())
