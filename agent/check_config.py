"""``icv-agent check-config``; ``load_config_or_exit`` for every command that reads a config.

Beside ``agent.config``, not in a stage: it loads and reports the whole config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import config as agent_config
from agent.settings_loader import ConfigError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check-config", help="validate a config file (exit 2 on problems)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=check_config)


def load_config_or_exit(path: Path) -> agent_config.AgentConfig | None:
    try:
        return agent_config.load(path)
    except ConfigError as exc:
        for line in exc.problems.lines():
            print(line, file=sys.stderr)
        return None


def check_config(args: argparse.Namespace) -> int:
    cfg = load_config_or_exit(args.file)
    if cfg is None:
        return 2
    print(f"{args.file}: OK — vehicle {cfg.vehicle.vin}, {len(cfg.buses)} bus(es)")
    for setup in cfg.buses:
        lacks = len(setup.mapping.mapping.lacks)
        print(f"  bus {setup.name}: {setup.config.interface}:{setup.config.channel}"
              f"{' (CAN FD)' if setup.config.fd else ''} receive {setup.config.receive}, "
              f"{len(setup.plans)} CAN ids, "
              f"{len(setup.canonical)} canonical signals mapped, {lacks} listed as lacking")
        for warning in setup.warnings:
            print(f"  warning: {warning}")
    return 0
