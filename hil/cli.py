"""``icv-hil``: the bench and HIL tools, built like ``icv-agent`` (one module per family,
each exposing ``register(subparsers)``)."""

from __future__ import annotations

import argparse
import sys

from agent.cli import build_parser as _build_parser
from agent.cli import main as _main

FAMILIES = [
    "hil.trace.cli",         # scenario, replay
    "hil.backend.cli",       # backend (receive, summary, send, keygen, campaign)
    "hil.repo.cli",          # repo (bench Director + Image repositories)
    "hil.ecu_sim.cli",       # ecu-sim (virtual ECU, UDS server on ISO-TP)
]


def build_parser() -> argparse.ArgumentParser:
    return _build_parser("icv-hil", "Bench and HIL tools for icv-edge-agent.", FAMILIES)


def main(argv: list[str] | None = None) -> int:
    return _main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
