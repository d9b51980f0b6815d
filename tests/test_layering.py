"""The data flow of design.md, held by the imports, not by intent: each stage is imported
alone in a fresh interpreter and must not load what lies downstream (or beside) it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# stage -> module prefixes it must never load
CONTRACTS = {
    "agent.monitors": ("agent.uplink", "agent.journal", "agent.records", "agent.ota",
                       "agent.recorder", "agent.service", "paho", "cryptography"),
    "agent.uplink.client": ("can", "cantools", "agent.ingest", "agent.monitors",
                            "agent.vehicle", "agent.pipeline"),
    "agent.uplink.commands": ("can", "cantools", "agent.ingest", "agent.monitors"),
    "agent.journal.outbox": ("can", "cantools", "paho", "agent.ingest", "agent.monitors",
                             "agent.uplink"),
    "agent.vehicle.state": ("agent.monitors", "agent.journal", "agent.uplink", "paho",
                            "cryptography"),
}


def loaded(module: str) -> list[str]:
    code = f"import sys, json, {module}; print(json.dumps(sorted(sys.modules)))"
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("module", sorted(CONTRACTS))
def test_a_stage_loads_nothing_downstream(module: str) -> None:
    forbidden = CONTRACTS[module]
    bad = [m for m in loaded(module)
           if any(m == f or m.startswith(f + ".") for f in forbidden)]
    assert not bad, f"importing {module} loads {bad}"
