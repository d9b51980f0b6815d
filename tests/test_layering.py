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
DOWNSTREAM_OF_MONITORS = ("agent.uplink", "agent.journal", "agent.records", "agent.ota",
                          "agent.recorder", "agent.service", "agent.config", "paho",
                          "cryptography")
DOWNSTREAM_OF_INGEST = ("agent.config", "agent.monitors", "agent.journal", "agent.records",
                        "agent.uplink", "agent.ota", "agent.recorder", "agent.service",
                        "paho", "cryptography")
BESIDE_UPLINK = ("can", "cantools", "agent.ingest", "agent.monitors", "agent.vehicle",
                 "agent.pipeline")


def modules(package: str) -> list[str]:
    """The package and each of its modules: a contract holds for every one alone."""
    folder = ROOT.joinpath(*package.split("."))
    return [package, *(f"{package}.{p.stem}" for p in sorted(folder.glob("*.py"))
                       if p.stem != "__init__")]


CONTRACTS = {
    **dict.fromkeys(modules("agent.monitors"), DOWNSTREAM_OF_MONITORS),
    **dict.fromkeys(modules("agent.ingest"), DOWNSTREAM_OF_INGEST),
    **dict.fromkeys(modules("agent.uplink"), BESIDE_UPLINK),
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


def test_the_contracts_cover_the_stages() -> None:
    """A module added to a stage is under its contract without editing this file."""
    for package in ("agent.monitors", "agent.ingest", "agent.uplink"):
        assert len([m for m in CONTRACTS if m.startswith(package + ".")]) >= 3, package
    assert "agent.monitors.crash" in CONTRACTS and "agent.ingest.settings" in CONTRACTS
