"""``icv-agent``: one entry point, one sub-module per subcommand family.

Each family module exposes ``register(subparsers)``, which adds its parsers and sets
``func(args) -> int`` on them; this file only collects them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

FAMILIES = [
    "agent.check_config",    # check-config
    "agent.analyze",         # analyze
    "agent.ingest.skeleton", # mapping skeleton
    "agent.records.cli",     # keys, verify
    "agent.service.cli",     # run
    "agent.reports.cli",     # report period, report accident
    "agent.ota.cli",
]


def build_parser(prog: str = "icv-agent",
                 description: str = "In-vehicle edge agent for L2 driver-assistance "
                                    "monitoring and OTA.",
                 families: list[str] = FAMILIES) -> argparse.ArgumentParser:
    from agent import __version__

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output on stderr (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in families:
        importlib.import_module(name).register(sub)
    return parser


class JournaldFormatter(logging.Formatter):
    """``<N>`` syslog priority prefix (journald reads it, ``SyslogLevelPrefix=``); no
    timestamps, journald adds its own."""

    PRIORITY = {logging.CRITICAL: 2, logging.ERROR: 3, logging.WARNING: 4, logging.INFO: 6,
                logging.DEBUG: 7}

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in self.PRIORITY if lv <= record.levelno), default=logging.DEBUG)
        return f"<{self.PRIORITY[level]}>{super().format(record)}"


def setup_logging(verbosity: int) -> None:
    level = logging.WARNING - 10 * min(verbosity, 2)
    handler = logging.StreamHandler(sys.stderr)
    fmt = "%(levelname)s %(name)s: %(message)s"
    # Under systemd, stderr goes to the journal (JOURNAL_STREAM is set): tag priorities.
    under_journald = bool(os.environ.get("JOURNAL_STREAM"))
    handler.setFormatter(JournaldFormatter(fmt) if under_journald else logging.Formatter(fmt))
    logging.basicConfig(level=level, handlers=[handler])


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
