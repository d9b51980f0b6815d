"""A minimal Debian 12 root file system of another CPU, for qemu-user: python3.11 and the
libraries it loads, extracted from Debian's own .debs with ``dpkg-deb -x``.

Why not debootstrap: its second stage runs every maintainer script emulated (~23 min for
arm64 here); Python needs none of them, only the files. Why not ``apt-get download`` with
``dpkg --add-architecture``: that changes the machine's apt state for everyone on it. Here
the signed ``InRelease`` is checked with ``gpgv`` against Debian's archive keyring, the
``Packages`` index against its SHA-256 in ``InRelease``, and every .deb against its SHA-256
in the index, so nothing unverified is extracted. Everything is cached under ``--cache``.

    python packaging/debian_rootfs.py --arch arm64 --cache .cache/arm64
"""

from __future__ import annotations

import argparse
import hashlib
import json
import lzma
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SUITE = "bookworm"
APT_SOURCES = (Path("/etc/apt/sources.list.d"), Path("/etc/apt/sources.list"))
KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
# What the rootfs must hold: the interpreter with its standard library and the shared
# libraries its extension modules and the bundle's wheels load (libc, libssl, libffi, ...).
ROOTS = ("python3.11", "libpython3.11-stdlib", "ca-certificates", "tzdata")
# Needed only by maintainer scripts, which are never run here.
SKIP = {"debconf", "debconf-2.0", "perl-base", "dpkg", "init-system-helpers", "openssl",
        "media-types", "mailcap", "mime-support", "install-info", "readline-common",
        "sensible-utils", "libc-bin"}


class RootfsError(Exception):
    """A download, signature or checksum did not check out."""


def apt_mirror() -> str:
    """The Debian archive this machine's apt is set up with (deb822 ``.sources`` or
    ``sources.list``): the one entry whose suite is ours, security and updates aside."""
    files: list[Path] = []
    for src in APT_SOURCES:
        if src.is_dir():
            files += sorted(src.glob("*.sources")) + sorted(src.glob("*.list"))
        elif src.is_file():
            files.append(src)
    for f in files:
        text = f.read_text(errors="replace")
        for stanza in text.split("\n\n"):
            fields = dict(line.split(":", 1) for line in stanza.splitlines()
                          if ":" in line and not line.startswith((" ", "#")))
            suites = fields.get("Suites", "").split()
            if SUITE in suites and "Types" in fields and "deb" in fields["Types"].split():
                return fields["URIs"].split()[0].rstrip("/")
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and SUITE in parts[2:3]:
                return parts[1].rstrip("/")
    raise RootfsError(f"no apt source for {SUITE} in {', '.join(map(str, APT_SOURCES))}; "
                      "pass --mirror URL")


MIRROR = ""   # set by build(): --mirror, or the machine's apt source


def fetch(url: str, dest: Path, sha256: str | None = None, tries: int = 3) -> Path:
    """Download ``url`` to ``dest`` (kept if present and its SHA-256 matches)."""
    if dest.exists() and (sha256 is None or _sha256(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + ".part")
    last: Exception | None = None
    for attempt in range(tries):
        try:
            with urllib.request.urlopen(url, timeout=60) as resp, open(tmp, "wb") as out:
                shutil.copyfileobj(resp, out, 1 << 20)
            break
        except OSError as exc:
            last = exc
            time.sleep(2 * (attempt + 1))
    else:
        raise RootfsError(f"{url}: download failed: {last}")
    if sha256 is not None and _sha256(tmp) != sha256:
        tmp.unlink()
        raise RootfsError(f"{url}: SHA-256 mismatch")
    tmp.replace(dest)
    return dest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def packages_index(arch: str, cache: Path) -> dict[str, dict[str, str]]:
    """The suite's main Packages index for ``arch``, verified through the signed InRelease."""
    inrelease = cache / "InRelease"
    fetch(f"{MIRROR}/dists/{SUITE}/InRelease", inrelease)
    gpg = subprocess.run(["gpgv", "--keyring", str(KEYRING), str(inrelease)],
                         capture_output=True, text=True)
    if gpg.returncode != 0:
        inrelease.unlink()
        raise RootfsError(f"InRelease: bad signature: {gpg.stderr.strip()}")
    want = f"main/binary-{arch}/Packages.xz"
    sha = None
    in_sha256 = False
    for line in inrelease.read_text().splitlines():
        if not line.startswith(" "):
            in_sha256 = line.startswith("SHA256:")
            continue
        parts = line.split()
        if in_sha256 and len(parts) == 3 and parts[2] == want:
            sha = parts[0]
    if sha is None:
        raise RootfsError(f"InRelease lists no {want}")
    xz = fetch(f"{MIRROR}/dists/{SUITE}/{want}", cache / f"Packages-{arch}.xz", sha)
    index: dict[str, dict[str, str]] = {}
    for stanza in lzma.decompress(xz.read_bytes()).decode("utf-8").split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in stanza.splitlines():
            if line.startswith((" ", "\t")):
                continue
            key, _, value = line.partition(":")
            fields[key] = value.strip()
        if "Package" in fields:
            index[fields["Package"]] = fields
            for prov in fields.get("Provides", "").split(","):
                name = prov.split("(")[0].strip()
                if name:
                    index.setdefault(f"virtual:{name}", fields)
    return index


def closure(index: dict[str, dict[str, str]], roots: tuple[str, ...]) -> list[dict[str, str]]:
    """Every package ``roots`` depend on (Depends, Pre-Depends; first alternative present)."""
    seen: dict[str, dict[str, str]] = {}
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in SKIP:
            continue
        pkg = index.get(name) or index.get(f"virtual:{name}")
        if pkg is None:
            raise RootfsError(f"no package {name} in {SUITE}")
        if pkg["Package"] in seen:
            continue
        seen[pkg["Package"]] = pkg
        deps = ",".join(pkg.get(f, "") for f in ("Pre-Depends", "Depends"))
        for dep in deps.split(","):
            alts = [a.split("(")[0].split(":")[0].strip() for a in dep.split("|")]
            alts = [a for a in alts if a]
            if not alts or any(a in SKIP for a in alts):
                continue
            pick = next((a for a in alts if a in index or f"virtual:{a}" in index), alts[0])
            todo.append(pick)
    return sorted(seen.values(), key=lambda p: p["Package"])


def build(arch: str, cache: Path, mirror: str | None = None) -> Path:
    """Create (or reuse) ``cache/rootfs``; returns it. ``cache/rootfs.json`` says what's in it."""
    global MIRROR
    rootfs = cache / "rootfs"
    stamp = cache / "rootfs.json"
    if stamp.exists() and (rootfs / "usr/bin/python3.11").exists():
        return rootfs
    MIRROR = mirror or apt_mirror()
    t0 = time.monotonic()
    index = packages_index(arch, cache)
    pkgs = closure(index, ROOTS)
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.mkdir(parents=True)
    total = 0
    for pkg in pkgs:
        deb = fetch(f"{MIRROR}/{pkg['Filename']}", cache / "debs" / Path(pkg["Filename"]).name,
                    pkg["SHA256"])
        total += deb.stat().st_size
        subprocess.run(["dpkg-deb", "-x", str(deb), str(rootfs)], check=True)
    # Debian 12 is merged-/usr: /lib, /bin, ... are symlinks made by base-files' scripts.
    for top in ("bin", "sbin", "lib"):
        link = rootfs / top
        if not link.exists() and (rootfs / "usr" / top).is_dir():
            link.symlink_to(f"usr/{top}")
    stamp.write_text(json.dumps({
        "suite": SUITE, "arch": arch, "mirror": MIRROR,
        "packages": {p["Package"]: p["Version"] for p in pkgs},
        "debs_bytes": total, "seconds": round(time.monotonic() - t0, 1),
    }, indent=1) + "\n")
    return rootfs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", default="arm64", help="Debian architecture: arm64, armhf")
    p.add_argument("--cache", type=Path, required=True, help="cache directory")
    p.add_argument("--mirror", help="Debian archive URL (default: this machine's apt source)")
    args = p.parse_args(argv)
    try:
        rootfs = build(args.arch, args.cache, args.mirror)
    except (RootfsError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(rootfs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
