"""Cross-compile the armv7l wheels PyPI lacks (cffi, psutil, msgpack) on this x86_64 host.

PyPI has no cp311 armv7l wheels of ``cffi`` (cryptography's dependency), ``psutil`` and
``msgpack`` (the bench add-on's), and
building them in an emulated armhf Debian would run gcc under qemu. Instead Debian's cross
compiler (``gcc-arm-linux-gnueabihf``) builds them against a sysroot of Debian 12's own
armhf headers and libraries (``libpython3.11-dev``, ``libffi-dev``, ``libc6-dev``, ...),
downloaded and checked as ``debian_rootfs.py`` does (signed InRelease, SHA-256 of the index
and of every .deb) and extracted with ``dpkg-deb -x``. The build runs on the host's Python
with the armhf ``_sysconfigdata`` (so the extension suffix is
``.cpython-311-arm-linux-gnueabihf.so``) and ``_PYTHON_HOST_PLATFORM=linux-armv7l`` (so
the tag is ``linux_armv7l``). Every ``.so`` is checked to be 32-bit ARM, EABI5, hard-float.

    python packaging/armhf_wheels.py --cache .cache/armhf
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from zipfile import ZipFile

sys.path.insert(0, str(Path(__file__).resolve().parent))

import debian_rootfs  # noqa: E402

TRIPLET = "arm-linux-gnueabihf"
# The headers and link-time libraries the two builds need (no dependency closure: only
# files are wanted, nothing is run).
SYSROOT_PACKAGES = ("libc6", "libc6-dev", "linux-libc-dev", "libgcc-s1", "libffi8",
                    "libffi-dev", "libpython3.11", "libpython3.11-dev",
                    "libpython3.11-minimal")
# cffi, psutil: the vehicle bundle; msgpack: the bench add-on (python-can's udp_multicast).
WHEELS = ("cffi", "psutil", "msgpack")


def sysroot(cache: Path, mirror: str | None) -> Path:
    """``cache/sysroot``: the armhf .debs above, verified and extracted (kept if present)."""
    root = cache / "sysroot"
    if (root / "usr/include/python3.11/Python.h").exists():
        return root
    debian_rootfs.MIRROR = mirror or debian_rootfs.apt_mirror()
    index = debian_rootfs.packages_index("armhf", cache)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for name in SYSROOT_PACKAGES:
        pkg = index.get(name)
        if pkg is None:
            raise debian_rootfs.RootfsError(f"no package {name} in {debian_rootfs.SUITE} armhf")
        deb = debian_rootfs.fetch(f"{debian_rootfs.MIRROR}/{pkg['Filename']}",
                                  cache / "debs" / Path(pkg["Filename"]).name, pkg["SHA256"])
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    for top in ("bin", "sbin", "lib"):
        link = root / top
        if not link.exists() and (root / "usr" / top).is_dir():
            link.symlink_to(f"usr/{top}")
    return root


def check_elf(so: bytes, name: str) -> str:
    """``readelf -h -A`` of one extension: must be ELF32 ARM, EABI5, hard-float VFP."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".so") as f:
        f.write(so)
        f.flush()
        head = subprocess.run(["readelf", "-h", "-A", f.name], capture_output=True,
                              text=True, check=True).stdout
    need = ("ELF32", "Machine:                           ARM", "Version5 EABI",
            "hard-float ABI", "Tag_ABI_VFP_args: VFP registers")
    missing = [n for n in need if n not in head]
    if missing:
        raise SystemExit(f"error: {name}: not an armhf object (no {missing})")
    return "ELF32 ARM EABI5 hard-float"


def build(cache: Path, mirror: str | None) -> list[Path]:
    root = sysroot(cache, mirror).resolve()
    out = cache / "wheels"
    out.mkdir(parents=True, exist_ok=True)
    gcc = shutil.which(f"{TRIPLET}-gcc")
    if gcc is None:
        raise SystemExit(f"error: no {TRIPLET}-gcc (apt-get install gcc-{TRIPLET})")
    # A host venv for the build, with the armhf build-time variables in its site-packages
    # (pip's isolated build environments drop PYTHONPATH, so it is built without isolation).
    venv = (cache / "buildenv").resolve()
    py = venv / "bin/python"
    if not py.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        "setuptools>=77", "wheel", "pycparser"], check=True)
    site = next(venv.glob("lib/python3.*/site-packages"))
    shutil.copyfile(root / f"usr/lib/python3.11/_sysconfigdata__{TRIPLET}.py",
                    site / f"_sysconfigdata__linux_{TRIPLET}.py")
    flags = (f"--sysroot={root} -I{root}/usr/include/python3.11 "
             f"-I{root}/usr/include/{TRIPLET}/python3.11")
    env = {**os.environ,
           "CC": f"{gcc} {flags}", "CXX": f"{TRIPLET}-g++ {flags}",
           "LDSHARED": f"{gcc} --sysroot={root} -shared",
           "CFLAGS": "-O2", "LDFLAGS": f"-L{root}/usr/lib/{TRIPLET}",
           "_PYTHON_HOST_PLATFORM": "linux-armv7l",
           "_PYTHON_SYSCONFIGDATA_NAME": f"_sysconfigdata__linux_{TRIPLET}",
           "PKG_CONFIG_SYSROOT_DIR": str(root),
           "PKG_CONFIG_LIBDIR": f"{root}/usr/lib/{TRIPLET}/pkgconfig"}
    made = []
    for name in WHEELS:
        if any(out.glob(f"{name}-*linux_armv7l.whl")):
            made += sorted(out.glob(f"{name}-*linux_armv7l.whl"))
            continue
        t0 = time.monotonic()
        subprocess.run([str(py), "-m", "pip", "wheel", "-q", "--no-build-isolation",
                        "--disable-pip-version-check", "--no-cache-dir", "--no-deps",
                        "--no-binary", ":all:",
                        "-w", str(out), name], env=env, check=True)
        wheel = next(out.glob(f"{name}-*linux_armv7l.whl"))
        print(f"{wheel.name}  {time.monotonic() - t0:.0f} s", file=sys.stderr)
        made.append(wheel)
    for wheel in made:
        with ZipFile(wheel) as zf:
            for so in (n for n in zf.namelist() if n.endswith(".so")):
                if not so.endswith((f".cpython-311-{TRIPLET}.so", ".abi3.so")):
                    raise SystemExit(f"error: {wheel.name}: {so}: not a cp311 armhf name")
                print(f"{wheel.name}: {so}: {check_elf(zf.read(so), so)}")
    return made


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cache", type=Path, default=Path(".cache/armhf"))
    p.add_argument("--mirror", help="Debian archive URL (default: this machine's apt source)")
    args = p.parse_args(argv)
    try:
        build(args.cache, args.mirror)
    except (debian_rootfs.RootfsError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
