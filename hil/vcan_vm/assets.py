"""Kernel and initramfs of the vcan VM, built once from Debian packages and cached.

The host kernels here lack ``CONFIG_CAN``, so the VM boots Debian's stock
``linux-image-amd64`` (the ``cloud`` flavour lacks the CAN and 9p modules). Only the
kernel image and the handful of modules the guest needs are kept; the 400 MB unpacked
package is thrown away. The initramfs is rebuilt whenever the guest's init script
changes, without downloading the kernel again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hil.vcan_vm.guest import INIT_SCRIPT, MODULES

KERNEL_PACKAGE = "linux-image-amd64"
BUSYBOX = Path("/bin/busybox")
ASSETS_VERSION = 1


class AssetError(RuntimeError):
    """The VM's kernel or initramfs cannot be prepared (missing tool, package, module)."""


@dataclass
class Assets:
    kernel: Path
    initramfs: Path
    kernel_release: str
    kernel_package: str


def default_cache() -> Path:
    env = os.environ.get("ICV_VCAN_VM_CACHE")
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / ".cache" / "vcan-vm"


def _run(cmd: list[str], cwd: Path | None = None) -> str:
    tool = shutil.which(cmd[0])
    if tool is None:
        hint = {"apt-get": "apt", "dpkg-deb": "dpkg", "depmod": "kmod", "cpio": "cpio"}
        raise AssetError(f"{cmd[0]} not found; install the Debian package "
                         f"{hint.get(cmd[0], cmd[0])}")
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise AssetError(f"{' '.join(cmd)} failed ({proc.returncode}): "
                         f"{(proc.stderr or proc.stdout).strip()[-2000:]}")
    return proc.stdout


def _is_static(binary: Path) -> bool:
    """True when the ELF file has no program interpreter (PT_INTERP)."""
    data = binary.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2:           # 64-bit only
        return False
    endian = "<" if data[5] == 1 else ">"
    phoff, = struct.unpack_from(endian + "Q", data, 0x20)
    phentsize, phnum = struct.unpack_from(endian + "HH", data, 0x36)
    for i in range(phnum):
        p_type, = struct.unpack_from(endian + "I", data, phoff + i * phentsize)
        if p_type == 3:
            return False
    return True


def _download_kernel(work: Path) -> tuple[Path, str]:
    """``apt-get download`` the metapackage, then the image package it depends on."""
    _run(["apt-get", "download", KERNEL_PACKAGE], cwd=work)
    meta = next(work.glob(f"{KERNEL_PACKAGE}_*.deb"))
    depends = _run(["dpkg-deb", "-f", str(meta), "Depends"]).strip()
    image = next((d.split()[0] for d in depends.replace("|", ",").split(",")
                  if d.strip().startswith("linux-image-")), "")
    if not image:
        raise AssetError(f"{meta.name}: no linux-image dependency in {depends!r}")
    _run(["apt-get", "download", image], cwd=work)
    deb = next(p for p in work.glob(f"{image}_*.deb"))
    return deb, deb.name.removesuffix(".deb")


def _module_closure(moddir: Path, names: list[str]) -> list[str]:
    """Relative paths of ``names`` and everything they depend on (modules.dep order)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        stem = Path(path).name.split(".ko")[0].replace("-", "_")
        by_name[stem] = path
    wanted: list[str] = []

    def add(path: str) -> None:
        if path in wanted:
            return
        for dep in deps.get(path, []):
            add(dep)
        wanted.append(path)

    builtin = (moddir / "modules.builtin").read_text() if (moddir / "modules.builtin").exists() \
        else ""
    for name in names:
        path = by_name.get(name.replace("-", "_"))
        if path is None:
            if f"/{name}.ko" in builtin or f"/{name.replace('-', '_')}.ko" in builtin:
                continue
            raise AssetError(f"kernel module {name} not found in {moddir}")
        add(path)
    return wanted


def _fetch_kernel(cache: Path) -> dict[str, str]:
    """Download and unpack the kernel; keep vmlinuz and the needed modules in ``cache``."""
    with tempfile.TemporaryDirectory(prefix="vcan-vm-") as tmp:
        work = Path(tmp)
        deb, package = _download_kernel(work)
        root = work / "root"
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        releases = sorted(p.name for p in (root / "lib" / "modules").iterdir())
        if len(releases) != 1:
            raise AssetError(f"{deb.name}: expected one kernel release, found {releases}")
        release = releases[0]
        _run(["depmod", "-b", str(root), release])
        moddir = root / "lib" / "modules" / release
        keep = cache / "modules" / release
        if keep.exists():
            shutil.rmtree(keep)
        keep.mkdir(parents=True)
        for rel in _module_closure(moddir, MODULES):
            (keep / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(moddir / rel, keep / rel)
        for name in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (moddir / name).exists():
                shutil.copy2(moddir / name, keep / name)
        shutil.copy2(root / "boot" / f"vmlinuz-{release}", cache / "vmlinuz")
    return {"release": release, "package": package}


def _build_initramfs(cache: Path, release: str, out: Path) -> None:
    if not BUSYBOX.exists() or not _is_static(BUSYBOX):
        raise AssetError(f"{BUSYBOX} is missing or not statically linked; "
                         "install the Debian package busybox-static")
    with tempfile.TemporaryDirectory(prefix="vcan-initramfs-") as tmp:
        root = Path(tmp)
        for d in ("bin", "dev", "proc", "sys", "lower", "rw", "newroot", "ctl", "lib/modules"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(BUSYBOX, root / "bin" / "busybox")
        (root / "bin" / "sh").symlink_to("busybox")
        shutil.copytree(cache / "modules" / release, root / "lib" / "modules" / release)
        _run(["depmod", "-b", str(root), release])   # modules.dep for busybox modprobe
        init = root / "init"
        init.write_text(INIT_SCRIPT)
        init.chmod(0o755)
        files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
        tmp_out = out.with_suffix(".tmp")
        with open(tmp_out, "wb") as fh:
            proc = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root,
                                  input="\n".join([".", *files]).encode(), stdout=fh,
                                  stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise AssetError(f"cpio failed: {proc.stderr.decode(errors='replace')}")
        tmp_out.replace(out)


def _fingerprint() -> str:
    h = hashlib.sha256()
    h.update(f"{ASSETS_VERSION}\n{' '.join(MODULES)}\n{INIT_SCRIPT}".encode())
    h.update(BUSYBOX.read_bytes() if BUSYBOX.exists() else b"")
    return h.hexdigest()[:16]


def prepare(cache: Path | None = None, *, refresh: bool = False) -> Assets:
    """Kernel and initramfs, from the cache when they are there and current."""
    cache = cache or default_cache()
    cache.mkdir(parents=True, exist_ok=True)
    meta_path = cache / "build.json"
    meta: dict[str, str] = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except ValueError:
            meta = {}
    release = meta.get("release", "")
    if refresh or not release or not (cache / "vmlinuz").exists() \
            or not (cache / "modules" / release).is_dir():
        meta = _fetch_kernel(cache)
        meta_path.write_text(json.dumps(meta, indent=1))
        release = meta["release"]
    initramfs = cache / "initramfs.cpio"
    fingerprint = _fingerprint()
    if refresh or meta.get("initramfs") != fingerprint or not initramfs.exists():
        _build_initramfs(cache, release, initramfs)
        meta["initramfs"] = fingerprint
        meta_path.write_text(json.dumps(meta, indent=1))
    return Assets(cache / "vmlinuz", initramfs, release, meta.get("package", ""))
