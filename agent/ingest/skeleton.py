"""``icv-agent mapping skeleton --dbc FILE``: the start of a mapping file for an OEM DBC.

Every canonical signal is listed under ``[mapping.lacks]`` (a valid mapping that maps
nothing), with its type, and the DBC's messages and signals follow as comments: the
engineer moves one entry at a time from ``lacks`` into a ``[[signal]]`` table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent.ingest.dbc import load_dbc
from agent.signals import CATALOGUE


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("mapping", help="mapping files: start one from a DBC")
    msub = p.add_subparsers(dest="mapping_command", required=True, metavar="COMMAND")
    s = msub.add_parser("skeleton", help="write a mapping listing every canonical signal")
    s.add_argument("--dbc", type=Path, required=True)
    s.add_argument("-o", "--output", type=Path, help="file to write (default: stdout)")
    s.set_defaults(func=skeleton_cmd)


def skeleton(dbc: Path) -> str:
    db, warning = load_dbc(dbc)
    lines = ["# Mapping of the canonical signals onto " + dbc.name + " (docs/mapping.md).",
             "# Move each entry from [mapping.lacks] into a [[signal]] table once you know",
             "# its message and signal, e.g.",
             "#   [[signal]]",
             '#   name = "Vehicle.Speed"',
             '#   message = "<DBC message>"',
             '#   signal = "<DBC signal>"',
             "# and keep in [mapping.lacks] what the DBC does not carry, saying why.",
             "", "[mapping]", f'description = "{dbc.stem}: not yet mapped"', "",
             "[mapping.lacks]"]
    for name, spec in CATALOGUE.items():
        kind = spec.kind + (f" ({', '.join(spec.values)})" if spec.values else "") + \
            (f" [{spec.unit}]" if spec.unit else "")
        lines.append(f'"{name}" = "not mapped yet: {kind}"')
    lines += ["", f"# Messages of {dbc.name}:"]
    if warning:
        lines.append(f"# ({warning})")
    for msg in sorted(db.messages, key=lambda m: m.frame_id):
        lines.append(f"#   0x{msg.frame_id:X} {msg.name} ({msg.length} bytes)")
        for sig in msg.signals:
            extra = f" {sig.unit}" if sig.unit else ""
            choices = f" values {dict(sig.choices)}" if sig.choices else ""
            lines.append(f"#     {sig.name}{extra}{choices}"[:200])
    return "\n".join(lines) + "\n"


def skeleton_cmd(args: argparse.Namespace) -> int:
    if not args.dbc.is_file():
        print(f"icv-agent: {args.dbc}: DBC file not found", file=sys.stderr)
        return 2
    try:
        text = skeleton(args.dbc)
    except Exception as exc:  # cantools raises assorted errors on broken files
        print(f"icv-agent: {args.dbc}: cannot load DBC: {exc}", file=sys.stderr)
        return 2
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"wrote {args.output}: {len(CATALOGUE)} canonical signals listed as lacking",
              file=sys.stderr)
    return 0
