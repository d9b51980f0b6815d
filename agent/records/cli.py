"""``icv-agent keys`` and ``icv-agent verify``: provision the device key, check exports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agent.model import ConfigError, Problems, build, read_toml
from agent.records.keys import DeviceKey, KeyFileError, fingerprint, load_public_key, public_pem


def register(subparsers: argparse._SubParsersAction) -> None:
    keys = subparsers.add_parser("keys", help="device signing key (Ed25519)",
                                 description="Create or show the device key that signs records.")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")

    gen = keys_sub.add_parser("generate", help="create the device key (mode 0600)",
                              description="Create the device key and print its public key.")
    where = gen.add_mutually_exclusive_group(required=True)
    where.add_argument("--out", type=Path, metavar="PATH", help="write the key here")
    where.add_argument("--config", type=Path, metavar="FILE",
                       help="write the key where this agent config expects it ([state] key)")
    gen.add_argument("--force", action="store_true", help="replace an existing key")
    gen.set_defaults(func=cmd_generate)

    pub = keys_sub.add_parser("public", help="print the public key of the device key",
                              description="Print the public key (PEM) and its fingerprint.")
    src = pub.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", type=Path, metavar="FILE", help="agent config")
    src.add_argument("--key", type=Path, metavar="PATH", help="device key file")
    pub.set_defaults(func=cmd_public)

    ver = subparsers.add_parser(
        "verify", help="check hashes, signatures and the chain of exported records",
        description="Verify a JSONL file of records (one record per line, '-' for stdin).")
    ver.add_argument("records", metavar="RECORDS.jsonl", help="records file, or - for stdin")
    ver.add_argument("--pubkey", type=Path, required=True, metavar="KEY",
                     help="device public key (PEM)")
    ver.set_defaults(func=cmd_verify)


def key_path_from_config(path: Path) -> Path:
    """The device key path of an agent config, read from ``[state]`` only.

    Provisioning the key must not depend on the CAN side (DBCs, mappings) being in place.
    """
    from agent.config import AgentConfig, StateConfig, VehicleConfig

    problems = Problems()
    table = read_toml(path, problems)
    state = build(StateConfig, (table or {}).get("state", {}), path, problems, "state")
    if problems:
        raise ConfigError(problems)
    cfg = AgentConfig(vehicle=VehicleConfig(vin=""), bus=[], state=state)
    cfg.path = path
    return cfg.key_path


def _print_public(key_pub_pem: str, fp: str) -> None:
    sys.stdout.write(key_pub_pem)
    print(f"fingerprint: {fp}")


def cmd_generate(args: argparse.Namespace) -> int:
    try:
        path = args.out if args.out is not None else key_path_from_config(args.config)
        key = DeviceKey.generate()
        key.save(path, overwrite=args.force)
    except (ConfigError, KeyFileError) as exc:
        print(f"icv-agent keys generate: {exc}", file=sys.stderr)
        return 2
    print(f"icv-agent: device key written to {path} (mode 0600)", file=sys.stderr)
    _print_public(key.public_pem(), key.fingerprint)
    return 0


def cmd_public(args: argparse.Namespace) -> int:
    try:
        path = args.key if args.key is not None else key_path_from_config(args.config)
        public = load_public_key(path)
    except (ConfigError, KeyFileError) as exc:
        print(f"icv-agent keys public: {exc}", file=sys.stderr)
        return 2
    _print_public(public_pem(public), fingerprint(public))
    return 0


def _lines(stream: IO[bytes]) -> Iterator[bytes]:
    for raw in stream:
        yield raw.rstrip(b"\r\n")


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.records.verify import verify_records

    try:
        public = load_public_key(args.pubkey)
    except KeyFileError as exc:
        print(f"icv-agent verify: {exc}", file=sys.stderr)
        return 2
    name = args.records
    try:
        if name == "-":
            report = verify_records(_lines(sys.stdin.buffer), public)
        else:
            with open(name, "rb") as fh:
                report = verify_records(_lines(fh), public)
    except OSError as exc:
        print(f"icv-agent verify: {name}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    if not report.ok:
        where = f"{name}:{report.first_bad}"
        if report.bad_seq is not None:
            where += f": seq {report.bad_seq}"
            if report.bad_type is not None:
                where += f" ({report.bad_type})"
        print(f"{where}: {report.reason}")
        if report.count:
            print(f"({report.count} records before it verified, seq "
                  f"{report.first_seq}..{report.last_seq})", file=sys.stderr)
        return 1
    if report.count == 0:
        print(f"{name}: no records")
        return 1
    print(f"OK: {report.count} records, seq {report.first_seq}..{report.last_seq}, "
          "chain intact")
    return 0
