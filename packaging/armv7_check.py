"""``make test-armv7``: the armv7l bundle installed offline and run under qemu-arm, its
output compared byte for byte with the x86_64 bundle run natively.

The same check as ``arm64_check.py`` (whose helpers it uses), for 32-bit ARM: Debian 12's
armhf python3.11 (``debian_rootfs.py --arch armhf``, extracted .debs in ``.cache/armhf``),
the armv7l bundle with its cross-built cffi, psutil and msgpack wheels
(``armhf_wheels.py``), installed by the bundle's ``install.sh`` with no index and run by
``qemu-arm-static -L ROOTFS``. Install, ``check-config``, ``icv-hil scenario``, ``analyze``,
``analyze --signals`` and ``verify`` on the reference drive and ``mg_safety``, and the
refusal of the bundle by the host's x86_64 Python; no test
files (``make test-arm64`` runs those emulated on aarch64).

    python packaging/armv7_check.py --bundles build/bundle --cache .cache/armhf
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))

import debian_rootfs  # noqa: E402
from arm64_check import (  # noqa: E402
    CheckError,
    Side,
    compare_outputs,
    install,
    summarise,
    unpack,
)

QEMU = "qemu-arm-static"
ARCH = "armv7l"


def check(args: argparse.Namespace) -> int:
    t_all = time.monotonic()
    cache = args.cache.resolve()
    t0 = time.monotonic()
    cached = (cache / "rootfs.json").exists()
    rootfs = debian_rootfs.build("armhf", cache)
    t_rootfs = time.monotonic() - t0
    print(f"rootfs: {rootfs} ({'cached' if cached else 'built'}, {t_rootfs:.1f} s)")

    work = cache / "work"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir()
    pubkey = args.bundles / "bundle-signing.pub.pem"
    host_py = getattr(sys, "_base_executable", sys.executable)
    sides: dict[str, Side] = {}
    for arch, prefix, python in [
            ("x86_64", [], host_py),
            (ARCH, [QEMU, "-L", str(rootfs)], str(rootfs / "usr/bin/python3.11"))]:
        tars = sorted(args.bundles.glob(f"icv-agent-*-{arch}-cp311*.tar.gz"))
        vehicle = [t for t in tars if not t.name.endswith("-bench.tar.gz")]
        bench = [t for t in tars if t.name.endswith("-bench.tar.gz")]
        if len(vehicle) != 1 or len(bench) != 1:
            raise CheckError(f"{args.bundles}: want one {arch} bundle and its -bench add-on "
                             f"(make bundle), found {[t.name for t in tars]}")
        side = Side(arch, work / arch / "opt" / "venv", prefix)
        b = unpack(vehicle[0], work / arch, pubkey)
        bb = unpack(bench[0], work / arch, pubkey)
        install(side, b, bb, python, " ".join(prefix))
        sides[arch] = side
    native, emu = sides["x86_64"], sides[ARCH]
    results: list[tuple[str, bool, str]] = []
    # A gateway of another CPU must refuse the bundle, saying which Python and CPU it wants.
    tree = next((work / ARCH).glob(f"icv-agent-*-{ARCH}-cp311"))
    r = subprocess.run(["sh", str(tree / "install.sh"), "--prefix", str(work / "refused"),
                        "--python", host_py, "--no-system"], capture_output=True, text=True)
    results.append(("refuse: bundle for another CPU",
                    r.returncode != 0 and f"on {ARCH}" in r.stderr,
                    f"exit {r.returncode}: {r.stderr.strip()[-200:]}"))
    # The cross-built extensions load and work: a cffi call through libffi, psutil's
    # reading of /proc, a msgpack round trip with the C packer.
    r = emu.run("platform", [*emu.python(), "-c",
                             "import platform,sys,struct,cffi,psutil,msgpack;"
                             "ffi = cffi.FFI(); ffi.cdef('size_t strlen(const char *);');"
                             "n = ffi.dlopen(None).strlen(b'armv7l');"
                             "rss = psutil.Process().memory_info().rss;"
                             "m = msgpack.unpackb(msgpack.packb({'v': [1, 2.5]}));"
                             "assert n == 6 and rss > 0 and m == {'v': [1, 2.5]}, (n, rss, m);"
                             "assert msgpack.Packer.__module__ == 'msgpack._cmsgpack';"
                             "print(platform.machine(), struct.calcsize('P') * 8, 'bit',"
                             " sys.version.split()[0], 'cffi', cffi.__version__,"
                             " 'psutil', psutil.__version__, 'msgpack', msgpack.version)"])
    print(f"emulated: {r.stdout.decode().strip()}")

    compare_outputs(native, emu, work / "out", results)
    return summarise(native, emu, results, report=args.report, t_all=t_all,
                     t_rootfs=t_rootfs, cached=cached)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundles", type=Path, default=ROOT / "build" / "bundle")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "armhf")
    p.add_argument("--report", type=Path, help="write the timings as JSON here")
    args = p.parse_args(argv)
    if shutil.which(QEMU) is None:
        print(f"error: {QEMU} missing: apt-get install qemu-user-static", file=sys.stderr)
        return 1
    try:
        return check(args)
    except (CheckError, debian_rootfs.RootfsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
