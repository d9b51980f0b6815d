"""``icv-agent run``: the service, in the foreground (systemd runs this)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the agent service in the foreground")
    p.add_argument("--config", "-c", type=Path, required=True)
    p.set_defaults(func=run_cmd)


def run_cmd(args: argparse.Namespace) -> int:
    from agent.service.service import StopRequest

    stop = StopRequest().install()   # before the slow imports: systemd may stop us any time
    from agent.check_config import load_config_or_exit
    from agent.records.keys import KeyFileError
    from agent.service.service import run

    cfg = load_config_or_exit(args.config)
    if cfg is None:
        return 2
    try:
        return run(cfg, stop)
    except KeyFileError as exc:  # refused before anything was signed or sent
        print(f"icv-agent: {exc}", file=sys.stderr)
        return 2
