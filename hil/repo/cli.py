"""``icv-hil repo``: bench Director + Image repositories (keys, images, assignments, root
rotation, expiry, time attestation) and an HTTP server for them.

Layout of ``--repo DIR``: ``image/`` (one TUF repository) and ``director/`` (``_root/`` plus
one repository per VIN). Keys live in ``--keys DIR``, outside the source tree.
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from agent.ota.uptane.custom import VERSION_DIDS
from agent.ota.uptane.time import parse_time
from hil.repo.keys import KeyStore
from hil.repo.repository import DirectorRepository, ImageRepository, write_time_attestation
from hil.repo.server import RepoServer


def register(subparsers: argparse._SubParsersAction) -> None:
    repo = subparsers.add_parser("repo", help="bench Uptane repositories (Director + Image)",
                                 description=__doc__)
    sub = repo.add_subparsers(dest="repo_command", required=True, metavar="ACTION")

    def common(p: argparse.ArgumentParser, keys: bool = True) -> None:
        p.add_argument("--repo", required=True, type=Path, help="repositories folder")
        if keys:
            p.add_argument("--keys", required=True, type=Path,
                           help="signing keys folder (keep it outside the source tree)")

    p = sub.add_parser("init", help="create keys, the Image and the Director repository")
    common(p)
    p.add_argument("--targets-threshold", type=int, default=1,
                   help="signatures needed on the Image repository's top-level targets")
    p.add_argument("--delegate", action="append", default=[], metavar="ROLE=PATTERN[@HW,..]",
                   help="delegated supplier role, e.g. supplier-bms=bms/*@bms-hw-a "
                        "(default: supplier=*)")
    p.add_argument("--vin", action="append", default=[], help="create a vehicle repository")
    p.set_defaults(func=cmd_init)

    p = sub.add_parser("add-image", help="add an image file to the Image repository")
    common(p)
    p.add_argument("file", type=Path)
    p.add_argument("--path", help="target path (default: the file name)")
    p.add_argument("--hardware-id", required=True)
    p.add_argument("--release-counter", required=True, type=int)
    p.add_argument("--role", help="signing role (default: the delegation matching the path)")
    p.add_argument("--version", action="append", default=[], metavar="DID=STRING",
                   help=f"DID read back after flashing ({', '.join(VERSION_DIDS)})")
    p.add_argument("--sha512", action="store_true", help="also list a SHA-512")
    p.set_defaults(func=cmd_add_image)

    p = sub.add_parser("assign", help="sign Director targets: VIN + ECU gets an image")
    common(p)
    p.add_argument("--vin", required=True)
    p.add_argument("--ecu", required=True, help="ECU identifier")
    p.add_argument("--image", required=True, help="target path in the Image repository")
    p.add_argument("--hardware-id", help="default: the Image repository's")
    p.add_argument("--release-counter", type=int, help="default: the Image repository's")
    p.add_argument("--version", action="append", default=None, metavar="DID=STRING")
    p.set_defaults(func=cmd_assign)

    p = sub.add_parser("rotate-root", help="root N+1 signed by the old and the new keys")
    common(p)
    p.add_argument("--which", choices=["director", "image"], required=True)
    p.add_argument("--key", action="append", default=None, help="new root key name(s)")
    p.add_argument("--threshold", type=int, default=1)
    p.set_defaults(func=cmd_rotate_root)

    p = sub.add_parser("expire", help="re-sign a role with a new lifetime")
    common(p)
    p.add_argument("--which", choices=["director", "image"], required=True)
    p.add_argument("--role", required=True)
    p.add_argument("--days", type=float, required=True)
    p.add_argument("--vin", help="Director: only this vehicle (default: all)")
    p.set_defaults(func=cmd_expire)

    p = sub.add_parser("attest-time", help="write a signed time attestation file")
    p.add_argument("--keys", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--time", help="ISO-8601 UTC (default: now)")
    p.add_argument("--key-name", default="time")
    p.set_defaults(func=cmd_attest_time)

    p = sub.add_parser("serve", help="serve both repositories over HTTP (Range supported)")
    common(p, keys=False)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_serve)


def _fail(msg: str) -> int:
    print(f"icv-hil repo: {msg}", file=sys.stderr)
    return 2


def _versions(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        did, sep, value = item.partition("=")
        if not sep or len(did) != 4:
            raise ValueError(f"--version wants DID=STRING (e.g. F189=2.4.0), got {item!r}")
        out[did.upper()] = value
    return out


def _run(fn, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    try:
        return fn(args)
    except (FileExistsError, FileNotFoundError, KeyError, ValueError) as exc:
        return _fail(str(exc.args[0]) if exc.args else repr(exc))


def cmd_init(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        keys = KeyStore(args.keys)
        delegations: dict[str, tuple[list[str], list[str] | None]] = {}
        for item in args.delegate:
            role, sep, rest = item.partition("=")
            if not sep or not role or not rest:
                raise ValueError(f"--delegate wants ROLE=PATTERN[@HW,...], got {item!r}")
            patterns, _, hws = rest.partition("@")
            delegations[role] = (patterns.split(","), hws.split(",") if hws else None)
        image = ImageRepository.create(args.repo / "image", keys,
                                       targets_threshold=args.targets_threshold,
                                       delegations=delegations or None)
        director = DirectorRepository.create(args.repo / "director", keys)
        for vin in args.vin:
            director.vehicle(vin)
        print(f"image root:    {image.meta_dir / '1.root.json'}")
        print(f"director root: {director.root_path}")
        return 0
    return _run(go, args)


def cmd_add_image(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        if not args.file.is_file():
            raise FileNotFoundError(f"no image file {args.file}")
        image = ImageRepository(args.repo / "image", KeyStore(args.keys))
        algos = ("sha256", "sha512") if args.sha512 else ("sha256",)
        info = image.add_image(args.path or args.file.name, args.file, args.hardware_id,
                               args.release_counter, role=args.role,
                               versions=_versions(args.version), hash_algorithms=algos)
        print(f"{info.path} {info.length} bytes sha256={info.hashes['sha256']}")
        return 0
    return _run(go, args)


def cmd_assign(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        keys = KeyStore(args.keys)
        info, _ = ImageRepository(args.repo / "image", keys).target(args.image)
        director = DirectorRepository(args.repo / "director", keys)
        versions = _versions(args.version) if args.version is not None else None
        director.assign(args.vin, args.ecu, info, hardware_id=args.hardware_id,
                        release_counter=args.release_counter, versions=versions)
        print(f"{args.vin}: {args.ecu} <- {info.path}")
        return 0
    return _run(go, args)


def cmd_rotate_root(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        keys = KeyStore(args.keys)
        if args.which == "image":
            root = ImageRepository(args.repo / "image", keys).rotate_root(args.key,
                                                                          args.threshold)
        else:
            root = DirectorRepository(args.repo / "director", keys).rotate_root(
                args.key, args.threshold)
        print(f"{args.which} root is now v{root.version}")
        return 0
    return _run(go, args)


def cmd_expire(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        keys = KeyStore(args.keys)
        life = {args.role: timedelta(days=args.days)}
        if args.which == "image":
            repos = [ImageRepository(args.repo / "image", keys, lifetimes=life)]
        else:
            director = DirectorRepository(args.repo / "director", keys, lifetimes=life)
            repos = [director.vehicle(v) for v in ([args.vin] if args.vin
                                                   else director.vehicles())]
        for repo in repos:
            if args.role not in repo.roles():
                raise KeyError(f"no role {args.role!r} in {repo.folder}")
            repo.bump_expiry(args.role)
            print(f"{repo.folder}: {args.role} expires {repo.expires(args.role).isoformat()}")
        return 0
    return _run(go, args)


def cmd_attest_time(args: argparse.Namespace) -> int:
    def go(args: argparse.Namespace) -> int:
        when = parse_time(args.time) if args.time else datetime.now(timezone.utc)
        signer = KeyStore(args.keys).ensure(args.key_name)
        write_time_attestation(args.out, signer, when)
        print(f"{args.out}: {when.isoformat()} signed by {signer.public_key.keyid[:12]}")
        return 0
    return _run(go, args)


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.repo.is_dir():
        return _fail(f"no repositories folder {args.repo}")
    server = RepoServer(args.repo, args.host, args.port).start()
    print(f"serving {args.repo} on {server.url} "
          f"(director {server.url}/director, image {server.url}/image)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()
