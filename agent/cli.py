"""``icv-agent``: one entry point, one sub-module per subcommand family.

Each family module exposes ``register(subparsers)``, which adds its parsers and sets
``func(args) -> int`` on them; this file only collects them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

FAMILIES = [
    "agent.ingest.cli",      # check-config, analyze
    "agent.records.cli",     # keys, verify
    "agent.service.cli",     # run
    "agent.reports.cli",     # report period, report accident
    "agent.ota.cli",
]


def build_parser(prog: str = "icv-agent",
                 description: str = "In-vehicle edge agent for L2 driver-assistance "
                                    "monitoring and OTA.",
                 families: list[str] = FAMILIES) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in families:
        importlib.import_module(name).register(sub)
    return parser


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    # journald adds its own timestamps; the <N> prefix carries the syslog priority.
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    args = (parser or build_parser()).parse_args(argv)
    setup_logging(args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
