"""``make bundle``: an offline install bundle of the agent for one gateway architecture.

A gateway in the field has no route to PyPI, and one that builds wheels from source on its
own is a gateway with a compiler. So everything it needs is built here, as wheels for its
CPU and Python (``pip download --platform ... --only-binary=:all:``), and shipped with an
install script that creates the virtualenv without network, the systemd unit and an
example config. ``SHA256SUMS`` covers every file inside; the tarball itself is signed with
Ed25519 (``.sig``, 64 raw bytes, checkable with ``openssl pkeyutl -verify -rawin``).

Two tarballs per architecture: the vehicle bundle (runtime dependencies only) and a
``-bench`` add-on (msgpack for python-can's udp_multicast bus, pytest, hypothesis) for
bench/HIL units and the emulated check (``make test-arm64``).

    python packaging/bundle.py --arch aarch64 --out build/bundle --key .cache/bundle-key/signing.key
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agent.settings_loader import tomllib  # noqa: E402

# Debian 12 has glibc 2.36: any manylinux tag up to that runs there.
PLATFORMS = {
    # x86_64: the native reference of `make test-arm64` (and x86 gateways)
    "x86_64": ["manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"],
    "aarch64": ["manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"],
    "armv7l": ["manylinux2014_armv7l", "manylinux_2_28_armv7l", "manylinux_2_31_armv7l",
               "manylinux_2_34_armv7l", "manylinux_2_35_armv7l",
               # cffi, psutil, msgpack: cross-built against Debian 12 (armhf_wheels.py)
               "linux_armv7l"],
}
# What the bench add-on brings besides the project's `bench` extra (ruff, a linter, no).
BENCH_EXTRAS = ("bench", "test")
BENCH_LEAVE_OUT = {"ruff"}
SHIPPED = {  # bundle path: source path in the repo
    "icv-agent.service": "systemd/icv-agent.service",
    "install.sh": "packaging/install.sh",
    "README.md": "packaging/README.bundle.md",
    "docs/deploy.md": "docs/deploy.md",
    "docs/systemd.md": "systemd/README.md",
    "config/mg.toml": "config/mg.toml",
    "dbc/mg.dbc": "dbc/mg.dbc",
    "dbc/mg.map.toml": "dbc/mg.map.toml",
}


class BundleError(Exception):
    """pip could not get a wheel for the target, or the key is unusable."""


def sh(cmd: list[str], **kw: object) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    if r.returncode != 0:
        raise BundleError(f"{' '.join(cmd[:6])} ...: exit {r.returncode}\n"
                          f"{r.stdout[-2000:]}{r.stderr[-4000:]}")


def pip_download(reqs: list[str], dest: Path, arch: str, python: str,
                 find_links: list[Path] = ()) -> None:  # type: ignore[assignment]
    """Wheels of ``reqs`` and all they depend on, for the target, never an sdist."""
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check",
           "--only-binary=:all:", "--python-version", python, "--implementation", "cp",
           "-d", str(dest)]
    for plat in PLATFORMS[arch]:
        cmd += ["--platform", plat]
    for link in find_links:
        cmd += ["--find-links", str(link)]
    sh(cmd + reqs)


def missing_for_target(dest: Path, arch: str, python: str, extras: set[str]) -> list[str]:
    """Requirements the wheels in ``dest`` have on the target that pip left out.

    pip download takes ``--python-version`` for wheel tags only and evaluates environment
    markers against the Python running it: a 3.10 bundle built on 3.11 would lack
    ``tomli``, one built on x86_64 would lack a ``platform_machine == 'aarch64'`` dependency.
    So every wheel's Requires-Dist is evaluated again for the target."""
    from email.parser import HeaderParser
    from zipfile import ZipFile

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    env = {"python_version": python, "python_full_version": f"{python}.0",
           "platform_machine": arch, "sys_platform": "linux", "platform_system": "Linux",
           "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython"}
    have = {canonicalize_name(p.name.split("-")[0]) for p in dest.glob("*.whl")}
    want: list[str] = []
    for wheel in sorted(dest.glob("*.whl")):
        with ZipFile(wheel) as zf:
            meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
            headers = HeaderParser().parsestr(zf.read(meta).decode("utf-8"))
        own = extras if canonicalize_name(headers["Name"]) == "icv-edge-agent" else set()
        for text in headers.get_all("Requires-Dist") or []:
            req = Requirement(text)
            if req.marker is not None and not any(
                    req.marker.evaluate({**env, "extra": e}) for e in own | {""}):
                continue
            if canonicalize_name(req.name) not in have:
                req.marker = None
                want.append(str(req))
    return sorted(set(want))


def pip_download_for_target(reqs: list[str], dest: Path, arch: str, python: str,
                            find_links: list[Path] = (),  # type: ignore[assignment]
                            extras: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    pip_download(reqs, dest, arch, python, find_links)
    for _ in range(5):
        more = missing_for_target(dest, arch, python, set(extras))
        if not more:
            return
        pip_download(more, dest, arch, python, find_links)
    raise BundleError(f"still missing for {arch}/{python}: {more}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_sums(tree: Path) -> None:
    lines = [f"{sha256(p)}  {p.relative_to(tree).as_posix()}"
             for p in sorted(tree.rglob("*")) if p.is_file() and p.name != "SHA256SUMS"]
    (tree / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def tar_reproducibly(tree: Path, out: Path, mtime: int) -> None:
    """Same files, same bytes: sorted names, fixed owner and mtime, no gzip timestamp."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in [tree, *sorted(tree.rglob("*"))]:
            info = tar.gettarinfo(str(path), arcname=path.relative_to(tree.parent).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = mtime
            if info.isfile():
                info.mode = 0o755 if path.suffix == ".sh" else 0o644
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                info.mode = 0o755
                tar.addfile(info)
    with open(out, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0,
                                               filename="") as gz:
        gz.write(buf.getvalue())


def signing_key(path: Path):  # type: ignore[no-untyped-def]
    """The bench signing key, created with the agent's own key tooling if there is none."""
    from agent.records.keys import DeviceKey

    if not path.exists():
        sh([sys.executable, "-m", "agent.cli", "keys", "generate", "--out", str(path)],
           cwd=ROOT)
    return DeviceKey.load(path)


def sign(tarball: Path, key) -> None:  # type: ignore[no-untyped-def]
    tarball.with_name(tarball.name + ".sha256").write_text(
        f"{sha256(tarball)}  {tarball.name}\n")
    tarball.with_name(tarball.name + ".sig").write_bytes(key.sign(tarball.read_bytes()))


def git_head() -> tuple[str, int]:
    r = subprocess.run(["git", "log", "-1", "--format=%H %ct"], cwd=ROOT,
                       capture_output=True, text=True)
    if r.returncode != 0 or not r.stdout.strip():
        return "unknown", 0
    commit, ct = r.stdout.split()
    return commit, int(ct)


def build(arch: str, python: str, out: Path, key_path: Path,
          find_links: list[Path] = ()) -> list[Path]:  # type: ignore[assignment]
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    version = project["version"]
    pytag = "cp" + python.replace(".", "")
    name = f"icv-agent-{version}-{arch}-{pytag}"
    commit, commit_time = git_head()
    out.mkdir(parents=True, exist_ok=True)
    key = signing_key(key_path)
    made: list[Path] = []
    with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
        tmpdir = Path(tmp)
        dist = tmpdir / "dist"
        sh([sys.executable, "-m", "pip", "wheel", "-q", "--disable-pip-version-check",
            "--no-deps", "-w", str(dist), str(ROOT)])
        wheel = next(dist.glob("icv_edge_agent-*.whl"))

        tree = tmpdir / name
        wheels = tree / "wheels"
        wheels.mkdir(parents=True)
        shutil.copy2(wheel, wheels)
        pip_download_for_target([str(wheel), "pip"], wheels, arch, python, list(find_links))
        for dest, src in SHIPPED.items():
            target = tree / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / src, target)
        manifest = {
            "name": "icv-edge-agent", "version": version, "arch": arch, "python": python,
            "platforms": PLATFORMS[arch], "commit": commit,
            "wheels": {p.name: sha256(p) for p in sorted(wheels.glob("*.whl"))},
        }
        (tree / "MANIFEST.json").write_text(json.dumps(manifest, indent=1) + "\n")
        write_sums(tree)

        bench = tmpdir / f"{name}-bench"
        bench_wheels = bench / "wheels"
        bench_wheels.mkdir(parents=True)
        reqs = [r for extra in BENCH_EXTRAS for r in project["optional-dependencies"][extra]
                if r.split(">")[0].split("=")[0].strip() not in BENCH_LEAVE_OUT]
        reqs = sorted(set(reqs))
        pip_download_for_target(reqs, bench_wheels, arch, python,
                                [wheels, *find_links])
        for p in bench_wheels.glob("*.whl"):   # already in the vehicle bundle
            if (wheels / p.name).exists():
                p.unlink()
        (bench / "requirements.txt").write_text("\n".join(reqs) + "\n")
        (bench / "MANIFEST.json").write_text(json.dumps({
            "name": "icv-edge-agent-bench", "version": version, "arch": arch,
            "python": python, "commit": commit, "requires": reqs,
            "wheels": {p.name: sha256(p) for p in sorted(bench_wheels.glob("*.whl"))},
        }, indent=1) + "\n")
        write_sums(bench)

        for t in (tree, bench):
            tarball = out / f"{t.name}.tar.gz"
            tar_reproducibly(t, tarball, commit_time)
            sign(tarball, key)
            made.append(tarball)
    (out / "bundle-signing.pub.pem").write_text(key.public_pem())
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arch", action="append", choices=sorted(PLATFORMS),
                   help="target CPU (repeatable; default aarch64)")
    p.add_argument("--python", default="3.11", help="target CPython (Debian 12: 3.11)")
    p.add_argument("--out", type=Path, default=ROOT / "build" / "bundle")
    p.add_argument("--key", type=Path, default=ROOT / ".cache" / "bundle-key" / "signing.key",
                   help="Ed25519 signing key (created if missing: a bench key)")
    p.add_argument("--find-links", type=Path, action="append", default=[],
                   help="extra wheels for the target, e.g. .cache/armhf/wheels (repeatable)")
    args = p.parse_args(argv)
    status = 0
    for arch in args.arch or ["aarch64"]:
        try:
            made = build(arch, args.python, args.out, args.key, args.find_links)
        except BundleError as exc:
            print(f"error: {arch}: {exc}", file=sys.stderr)
            status = 1
            continue
        for t in made:
            print(f"{t}  {t.stat().st_size / 1e6:.1f} MB")
    return status


if __name__ == "__main__":
    sys.exit(main())
