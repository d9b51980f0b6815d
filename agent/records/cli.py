"""``icv-agent keys`` and ``icv-agent verify``: provision the device key, check exports."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from agent.records.keys import DeviceKey, KeyFileError, fingerprint, load_public_key, public_pem
from agent.settings_loader import ConfigError, Problems, build, read_toml


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
        description="Verify a JSONL file of records (one record per line, '-' for stdin), "
                    "or an export archive (icv-agent export) offline.")
    ver.add_argument("records", metavar="RECORDS.jsonl|ARCHIVE",
                     help="records file, - for stdin, or an export archive")
    ver.add_argument("--pubkey", type=Path, metavar="KEY",
                     help="device public key (PEM); needed for a records file; for an "
                          "archive it pins the key the archive must be signed with")
    ver.set_defaults(func=cmd_verify)

    exp = subparsers.add_parser(
        "export", help="signed archive of records for readout (workshop, investigator)",
        description="Write a self-contained archive signed with the device key: the records "
                    "of a time range or of one accident with their chain, the device "
                    "public key, ECU versions (SWIN where known) and the OTA history. "
                    "'icv-agent verify ARCHIVE' checks it offline.")
    exp.add_argument("--config", type=Path, required=True, metavar="FILE", help="agent config")
    what = exp.add_mutually_exclusive_group(required=True)
    what.add_argument("--from", dest="start", metavar="T",
                      help="first instant, ISO-8601 with zone (e.g. 2026-07-01T08:00:00Z)")
    what.add_argument("--accident", metavar="ID", help="accident_id of one accident")
    exp.add_argument("--to", dest="end", metavar="T", help="last instant (with --from)")
    exp.add_argument("-o", "--output", type=Path, required=True, metavar="FILE",
                     help="archive to write (.tar.gz)")
    exp.set_defaults(func=cmd_export)


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


def cmd_export(args: argparse.Namespace) -> int:
    from agent.records.export import ExportError, Selection, build_archive, parse_time
    from agent.reports.store import STATE_DB, load_light_config

    try:
        if args.start is not None:
            sel = Selection(start=parse_time(args.start),
                            end=parse_time(args.end) if args.end else None)
            if sel.end is not None and sel.end < sel.start:
                raise ValueError("--to is before --from")
        elif args.end is not None:
            raise ValueError("--to goes with --from")
        else:
            sel = Selection(accident=args.accident)
    except ValueError as exc:
        print(f"icv-agent export: {exc}", file=sys.stderr)
        return 2
    try:
        cfg = load_light_config(args.config)
        key = DeviceKey.load(cfg.key_path)
        blob, manifest = build_archive(cfg.state_dir / STATE_DB, key, cfg.vehicle.vin, sel)
    except (ConfigError, KeyFileError, ExportError) as exc:
        print(f"icv-agent export: {exc}", file=sys.stderr)
        return 2
    try:
        tmp = args.output.with_name(args.output.name + ".part")
        tmp.write_bytes(blob)
        tmp.replace(args.output)
    except OSError as exc:
        print(f"icv-agent export: {args.output}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    chain = manifest["chain"]
    print(f"{args.output}: {sum(manifest['counts'].values())} records, seq "
          f"{chain['first_seq']}..{chain['last_seq']}"
          + (f" ({len(chain['missing'])} gap(s) no longer on the unit)"
             if chain["missing"] else "")
          + f", {manifest['ota_history_entries']} OTA history entries, signed by device key "
          f"{manifest['device_key']}")
    return 0


def cmd_verify_archive(args: argparse.Namespace) -> int:
    from agent.records.export import verify_archive

    pinned = None
    if args.pubkey is not None:
        try:
            pinned = load_public_key(args.pubkey)
        except KeyFileError as exc:
            print(f"icv-agent verify: {exc}", file=sys.stderr)
            return 2
    try:
        blob = Path(args.records).read_bytes()
    except OSError as exc:
        print(f"icv-agent verify: {args.records}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    report = verify_archive(blob, pinned)
    if not report.ok:
        print(f"{args.records}: FAILED: {report.reason}")
        return 1
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    m = report.manifest
    chain = m["chain"]
    print(f"OK: export of {m['vin']} ({m['selection']}), {report.records} records, seq "
          f"{chain['first_seq']}..{chain['last_seq']}, chain intact, OTA history intact; "
          f"signed by device key {report.fingerprint}"
          + ("" if pinned is not None else
             " (not pinned: compare it with the key registered for this VIN, or pass "
             "--pubkey)"))
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from agent.records.export import is_archive
    from agent.records.verify import verify_records

    if args.records != "-" and is_archive(Path(args.records)):
        return cmd_verify_archive(args)
    if args.pubkey is None:
        print("icv-agent verify: --pubkey KEY is needed for a records file "
              "(an export archive carries its key)", file=sys.stderr)
        return 2
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
