"""The backend's OTA side on the bench: keys, Director + Image repositories, an HTTP server
for their metadata and images, and the signed ``ota.campaign`` command.

Layout of a bench OTA folder::

    keys/               Ed25519 signing keys of the repositories (hil.repo.KeyStore)
    repo/image/         Image repository (TUF, delegated role "supplier" signs images)
    repo/director/      Director (shared root in _root/, one repository per VIN)

Typical use (tests, ``hil/demo_ota.py``, ``icv-hil backend campaign``)::

    ota = BenchOta.create(folder)
    server = ota.serve()                               # http://127.0.0.1:PORT
    text = ota.agent_section(server.url)               # [ota] + [ota.uptane] for the agent
    ota.release(VIN, "eps", "eps/eps-2.0.0.bin", ecu_image(64 * 1024, V2, {"F191": hw}),
                hardware_id=hw, release_counter=2, versions=V2)
    outcome = run_campaign(backend, signing_key, VIN, campaign_args("OTA-1", "2.0.0"),
                           consent="accept")       # the owner app answers the offer

A consent answers one offer: ``consent_args(offer)`` builds it from the
``ota.consent_requested`` record (activity, campaign and the offer's ``offer_nonce``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tuf.api.metadata import TargetFile

from agent.ota.uds.image import build_image
from agent.ota.uds.versions import parse_did_keys
from hil.repo import DirectorRepository, ImageRepository, KeyStore, RepoServer

TERMINAL = ("ota.completed", "ota.failed", "ota.rejected", "ota.not_offered")


def ecu_image(size: int, provides: Mapping[str, str], requires: Mapping[str, str] | None = None,
              seed: str = "") -> bytes:
    """A flash image of exactly ``size`` bytes whose trailer provides ``provides`` (DID hex
    -> value, read back after the flash) and requires ``requires`` (dependency check)."""
    trailer = build_image(b"", parse_did_keys(provides), parse_did_keys(requires or {}))
    if size <= len(trailer):
        raise ValueError(f"image size {size} does not fit the {len(trailer)}-byte trailer")
    body = bytearray()
    counter = 0
    tag = (seed or repr(sorted(provides.items()))).encode()
    while len(body) < size - len(trailer):
        body += hashlib.sha256(tag + counter.to_bytes(8, "big")).digest()
        counter += 1
    return build_image(bytes(body[:size - len(trailer)]), parse_did_keys(provides),
                       parse_did_keys(requires or {}))


def consent_args(offer: Mapping[str, Any], decision: str = "accept") -> dict[str, Any]:
    """The answer to one offer (the data of ``ota.consent_requested`` or the HMI offer):
    ``ota.consent`` arguments and the HMI consent payload alike."""
    return {"activity_id": offer["activity_id"], "campaign": offer["campaign"],
            "offer_nonce": offer["offer_nonce"], "decision": decision}


def campaign_args(activity_id: str, version: str, *, campaign: str = "",
                  purpose: str = "Improve lane keeping on wet roads",
                  changes: str = "EPS torque limits re-tuned; DVR clip upload fix",
                  duration_s: float = 300.0,
                  unavailable_functions: list[str] | None = None, recall: bool = False,
                  recall_number: str = "", ecus: list[str] | None = None,
                  type_approval_permit: str = "") -> dict[str, Any]:
    """Arguments of the ``ota.campaign`` command (everything the user must be told);
    ``type_approval_permit``: the change permit of an update that changes the SWIN."""
    args: dict[str, Any] = {
        "activity_id": activity_id, "version": version, "campaign": campaign or activity_id,
        "purpose": purpose, "changes": changes, "duration_s": duration_s,
        "unavailable_functions": list(unavailable_functions if unavailable_functions
                                      is not None else ["driving", "lane keeping"]),
        "recall": recall, "recall_number": recall_number}
    if ecus:
        args["ecus"] = list(ecus)
    if type_approval_permit:
        args["type_approval_permit"] = type_approval_permit
    return args


class BenchOta:
    def __init__(self, folder: Path | str):
        self.folder = Path(folder)
        self.keys = KeyStore(self.folder / "keys")
        self.repo_dir = self.folder / "repo"
        self.image = ImageRepository(self.repo_dir / "image", self.keys)
        self.director = DirectorRepository(self.repo_dir / "director", self.keys)

    @classmethod
    def create(cls, folder: Path | str, vins: list[str] | None = None) -> BenchOta:
        """New keys and repositories (``FileExistsError`` if the folder has them)."""
        folder = Path(folder)
        keys = KeyStore(folder / "keys")
        ImageRepository.create(folder / "repo" / "image", keys)
        DirectorRepository.create(folder / "repo" / "director", keys)
        ota = cls(folder)
        for vin in vins or []:
            ota.director.vehicle(vin)
        return ota

    @classmethod
    def open_or_create(cls, folder: Path | str) -> BenchOta:
        folder = Path(folder)
        if (folder / "repo" / "image" / "metadata" / "root.json").exists():
            return cls(folder)
        return cls.create(folder)

    @property
    def director_root(self) -> Path:
        return self.director.root_path

    @property
    def image_root(self) -> Path:
        return self.image.meta_dir / "1.root.json"

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> RepoServer:
        """Start the HTTP server for both repositories (``server.stop()`` ends it)."""
        return RepoServer(self.repo_dir, host, port).start()

    def agent_section(self, url: str, **uptane: Any) -> str:
        """``[ota]`` and ``[ota.uptane]`` TOML for an agent using these repositories."""
        lines = ["[ota]", "enabled = true", "", "[ota.uptane]",
                 f'director_url = "{url}/director"', f'image_url = "{url}/image"',
                 f'director_root = "{self.director_root}"',
                 f'image_root = "{self.image_root}"']
        for key, value in uptane.items():
            lines.append(f"{key} = {_toml(value)}")
        return "\n".join(lines) + "\n"

    def release(self, vin: str, ecu_id: str, path: str, image: bytes | Path, *,
                hardware_id: str, release_counter: int, versions: Mapping[str, str],
                publish: bool = True) -> TargetFile:
        """Sign ``image`` in the Image repository and assign it to ``ecu_id`` of ``vin``."""
        info = self.image.add_image(path, image, hardware_id, release_counter,
                                    versions=dict(versions))
        return self.director.assign(vin, ecu_id, info, publish=publish)

    def clear(self, vin: str) -> None:
        """The Director has nothing for ``vin`` any more (after an install)."""
        self.director.clear(vin)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def terminal_record(records: list[dict[str, Any]], activity_id: str) -> dict[str, Any] | None:
    for record in records:
        if record.get("type") in TERMINAL and \
                record.get("data", {}).get("activity_id") == activity_id:
            return record
    return None


def activity_records(records: list[dict[str, Any]], activity_id: str) -> list[dict[str, Any]]:
    return [r for r in records if r.get("data", {}).get("activity_id") == activity_id]


def run_campaign(backend: Any, private_key: Ed25519PrivateKey, vin: str, args: dict[str, Any],
                 *, timeout: float = 120.0, command_timeout: float = 15.0,
                 on_record: Any = None, consent: str = "") -> dict[str, Any]:
    """Send the signed ``ota.campaign`` through a started ``hil.backend.Backend`` and wait
    for the verified terminal record of the activity.

    ``consent`` ``"accept"``/``"decline"``: answer the offer as the owner app does, with
    the signed ``ota.consent`` naming the offer's nonce (``""``: someone else answers).
    Returns ``{"response": ..., "outcome": record | None, "records": [...],
    "consent_response": ...}``; the records are those the backend stored (signature, chain
    and seq checked) for this activity.
    """
    response = backend.send_command(private_key, vin, "ota.campaign", args,
                                    timeout=command_timeout)
    out: dict[str, Any] = {"response": response, "outcome": None, "records": [],
                           "consent_response": None}
    if not response or not response.get("ok"):
        return out
    activity = args["activity_id"]
    seen = 0
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        backend.wait(lambda: False, 0.2)
        records = activity_records(backend.store.records(vin), activity)
        for record in records[seen:]:
            if on_record is not None:
                on_record(record)
            if consent and record.get("type") == "ota.consent_requested":
                out["consent_response"] = backend.send_command(
                    private_key, vin, "ota.consent", consent_args(record["data"], consent),
                    timeout=command_timeout)
        seen = len(records)
        outcome = terminal_record(records, activity)
        if outcome is not None:
            out.update(outcome=outcome, records=records)
            return out
    out["records"] = activity_records(backend.store.records(vin), activity)
    return out


# -- ``icv-hil backend campaign init|run`` ---------------------------------------------------

def register_cli(bsub: Any, broker_options: Any) -> None:
    """Add ``campaign`` to ``icv-hil backend`` (``broker_options(parser)`` adds --host ...)."""
    c = bsub.add_parser("campaign", help="bench OTA: repositories, images, signed campaign")
    csub = c.add_subparsers(dest="campaign_command", required=True, metavar="ACTION")
    i = csub.add_parser("init", help="keys + Director/Image repositories; print [ota] TOML")
    i.add_argument("--ota-dir", type=Path, required=True)
    i.add_argument("--url", default="http://127.0.0.1:8765",
                   help="where 'campaign run' will serve the repositories")
    i.set_defaults(func=_init_cmd)
    r = csub.add_parser("run", help="assign an image, serve the repositories, send the "
                                    "signed ota.campaign and wait for the verified outcome")
    broker_options(r)
    r.add_argument("--ota-dir", type=Path, required=True)
    r.add_argument("--repo-port", type=int, default=8765,
                   help="HTTP port for the repositories")
    r.add_argument("--vin", required=True)
    r.add_argument("--vehicle-key", type=Path, required=True,
                   help="the vehicle's public (or device) key, to verify its records")
    r.add_argument("--signing-key", type=Path, required=True, help="backend command key")
    r.add_argument("--ecu", help="ECU to update (with --image)")
    r.add_argument("--image", type=Path, help="image file (ICVI trailer, see docs/ota.md)")
    r.add_argument("--hardware-id")
    r.add_argument("--release-counter", type=int, default=1)
    r.add_argument("--did", action="append", default=[], metavar="DID=VALUE",
                   help="version read back after the flash (F189 required)")
    r.add_argument("--activity-id", required=True)
    r.add_argument("--version", dest="campaign_version", required=True)
    r.add_argument("--purpose", default="Software update")
    r.add_argument("--changes", default="See release notes")
    r.add_argument("--duration", type=float, default=300.0)
    r.add_argument("--unavailable", action="append", default=None, metavar="FUNCTION")
    r.add_argument("--recall-number", default="")
    r.add_argument("--type-approval-permit", default="",
                   help="change permit of an update that changes type-approval parameters")
    r.add_argument("--consent", choices=("accept", "decline"), default="",
                   help="answer the offer with the signed ota.consent (default: the user "
                        "answers on the HMI or with icv-agent ota consent)")
    r.add_argument("--timeout", type=float, default=600.0)
    r.set_defaults(func=_run_cmd)


def _init_cmd(args: Any) -> int:
    ota = BenchOta.open_or_create(args.ota_dir)
    print(ota.agent_section(args.url))
    return 0


def _run_cmd(args: Any) -> int:
    import json
    import sys

    from agent.records.keys import KeyFileError, load_public_key
    from hil.backend.broker import BrokerConfig, BrokerSetupError
    from hil.backend.receiver import Backend
    from hil.backend.sender import load_backend_key

    try:
        vehicle_key = load_public_key(args.vehicle_key)
        signing = load_backend_key(args.signing_key)
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ota = BenchOta.open_or_create(args.ota_dir)
    if args.ecu:
        if args.image is None or not args.hardware_id:
            print("error: --ecu needs --image and --hardware-id", file=sys.stderr)
            return 2
        versions = dict(item.split("=", 1) for item in args.did if "=" in item)
        if "F189" not in versions:
            print("error: --did F189=VERSION is required", file=sys.stderr)
            return 2
        ota.release(args.vin, args.ecu, f"{args.ecu}/{args.image.name}", args.image,
                    hardware_id=args.hardware_id, release_counter=args.release_counter,
                    versions=versions)
    server = ota.serve(port=args.repo_port)
    broker = BrokerConfig(host=args.host, port=args.port, ca=args.ca or "",
                          cert=args.cert or "", key=args.key or "", tls=not args.no_tls)
    try:
        backend = Backend(broker, args.ota_dir / "backend.db", {args.vin: vehicle_key},
                          group="", persistent=False)
        backend.start(timeout=20)
    except BrokerSetupError as exc:
        server.stop()
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        result = run_campaign(
            backend, signing, args.vin,
            campaign_args(args.activity_id, args.campaign_version, purpose=args.purpose,
                          changes=args.changes, duration_s=args.duration,
                          unavailable_functions=args.unavailable,
                          recall=bool(args.recall_number), recall_number=args.recall_number,
                          type_approval_permit=args.type_approval_permit),
            timeout=args.timeout, consent=args.consent,
            on_record=lambda r: print(f"#{r['seq']:<5} {r['type']:<24} "
                                      f"{json.dumps(r['data'], ensure_ascii=False)[:110]}",
                                      flush=True))
    finally:
        backend.close()
        server.stop()
    if not result["response"] or not result["response"].get("ok"):
        print(f"campaign refused: {result['response']}", file=sys.stderr)
        return 1
    outcome = result["outcome"]
    if outcome is None:
        print(f"no outcome within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(f"outcome: {outcome['type']} {json.dumps(outcome['data'], ensure_ascii=False)[:300]}")
    return 0 if outcome["type"] == "ota.completed" else 1
