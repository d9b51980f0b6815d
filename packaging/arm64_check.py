"""``make test-arm64``: the aarch64 bundle installed offline and run under qemu-user, its
output compared byte for byte with the x86_64 bundle run natively.

What runs emulated is what a Debian 12 arm64 gateway runs: Debian's own python3.11 and
libraries (``debian_rootfs.py``, extracted .debs), the bundle's aarch64 wheels
(cryptography, cffi, psutil, bitstruct, ...) installed by the bundle's ``install.sh``
with no index. ``qemu-aarch64-static -L ROOTFS`` runs it directly: no binfmt_misc, no
chroot, no privileges. Each step is timed on both sides; the ratio emulated/native is
what the emulator costs here, not what a gateway's CPU would take.

    python packaging/arm64_check.py --bundles build/bundle --cache .cache/arm64
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "packaging"))

import debian_rootfs  # noqa: E402

QEMU = "qemu-aarch64-static"
TEST_FILES = ["tests/test_decoder.py", "tests/test_records.py", "tests/test_journal.py",
              "tests/test_config.py"]
# (name, scenario, config): the reference drive and one scenario on a real OEM DBC
DRIVES = [("reference", "hil/scenarios/drive.toml", "config/bench.toml"),
          ("mg", "tests/scenarios/mg_safety.toml", "config/mg.toml")]


class CheckError(Exception):
    """The environment could not be set up (download, install, signature)."""


@dataclass
class Side:
    """One installation: native x86_64 or emulated aarch64."""

    name: str
    venv: Path
    prefix: list[str]              # what runs the venv's python: [] or [qemu, -L, rootfs]
    times: dict[str, float] = field(default_factory=dict)

    def python(self) -> list[str]:
        return [*self.prefix, str(self.venv / "bin" / "python")]

    def run(self, step: str, args: list[str], *, env: dict[str, str] | None = None,
            cwd: Path = ROOT, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        t0 = time.monotonic()
        r = subprocess.run(args, cwd=cwd, capture_output=True, env=env)
        self.times[step] = self.times.get(step, 0.0) + time.monotonic() - t0
        if check and r.returncode != 0:
            raise CheckError(f"{self.name}: {step}: exit {r.returncode}\n"
                             f"{r.stderr.decode(errors='replace')[-3000:]}")
        return r

    def tool(self, step: str, script: str, *args: str) -> subprocess.CompletedProcess[bytes]:
        """A console script of the venv, run by its python (its #! is the target's)."""
        return self.run(step, [*self.python(), str(self.venv / "bin" / script), *args])


def unpack(tarball: Path, dest: Path, pubkey: Path) -> Path:
    """Check the tarball's Ed25519 signature (openssl, as on a gateway), then unpack it."""
    sig = tarball.with_name(tarball.name + ".sig")
    r = subprocess.run(["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", str(pubkey),
                        "-rawin", "-in", str(tarball), "-sigfile", str(sig)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise CheckError(f"{tarball.name}: signature does not verify: {r.stdout}{r.stderr}")
    with tarfile.open(tarball) as tar:
        tar.extractall(dest, filter="data")
    return dest / tarball.name.removesuffix(".tar.gz")


def install(side: Side, bundle: Path, bench: Path, python: str, env_exec: str) -> None:
    env = {**os.environ, "ICV_EXEC": env_exec}
    side.run("install", ["sh", str(bundle / "install.sh"), "--prefix", str(side.venv.parent),
                         "--python", python, "--bench", str(bench), "--no-system"], env=env)


def test_tree(dest: Path) -> Path:
    """The test files with the data they read, but not the agent's source: the tests
    import the agent from the installed bundle (a directory without __init__.py, such as
    agent/records/ for the schema, never shadows the installed package)."""
    for rel in ["tests", "config", "dbc", "agent/records/schema.json", "pyproject.toml"]:
        src, dst = ROOT / rel, dest / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "vcan",
                                                                    "ota"))
        else:
            shutil.copy2(src, dst)
    return dest


def refusals(work: Path, bundles: Path, pubkey: Path, host_py: str
             ) -> list[tuple[str, bool, str]]:
    """What a gateway must refuse: a tarball changed after signing, a bundle whose files
    do not match SHA256SUMS, and a bundle for another CPU. Each must fail, saying why."""
    found: list[tuple[str, bool, str]] = []
    tarball = next(t for t in sorted(bundles.glob("icv-agent-*-aarch64-cp311.tar.gz")))
    bad_tar = work / "tampered" / tarball.name
    bad_tar.parent.mkdir()
    blob = bytearray(tarball.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    bad_tar.write_bytes(bytes(blob))
    shutil.copy(tarball.with_name(tarball.name + ".sig"), bad_tar.parent)
    try:
        unpack(bad_tar, bad_tar.parent, pubkey)
        found.append(("refuse: tarball changed after signing", False, "unpacked"))
    except CheckError:
        found.append(("refuse: tarball changed after signing", True, ""))
    tree = work / "aarch64" / tarball.name.removesuffix(".tar.gz")
    copy = work / "tampered" / "bundle"
    shutil.copytree(tree, copy)
    wheel = next(copy.glob("wheels/cryptography-*.whl"))
    wheel.write_bytes(wheel.read_bytes() + b"\0")
    for name, bundle, why in (("refuse: a wheel changed", copy, "bundle damaged"),
                              ("refuse: bundle for another CPU", tree, "on aarch64")):
        r = subprocess.run(["sh", str(bundle / "install.sh"), "--prefix",
                            str(work / "tampered" / "opt"), "--python", host_py,
                            "--no-system"], capture_output=True, text=True)
        ok = r.returncode != 0 and why in r.stderr
        found.append((name, ok, f"exit {r.returncode}: {r.stderr.strip()[-200:]}"))
    return found


def tests_python(side: Side, rootfs: Path | None) -> list[str]:
    """The python the test files run with. Emulated, ``sys.executable`` must be a host
    script that re-enters qemu, or the tests' own subprocesses could not start."""
    if rootfs is None:
        return side.python()
    wrapper = side.venv / "bin" / "python-qemu"
    wrapper.write_text(f'#!/bin/sh\nexec {QEMU} -L "{rootfs}" -0 "$0" '
                       f'"{side.venv / "bin" / "python"}" "$@"\n')
    wrapper.chmod(0o755)
    return [QEMU, "-L", str(rootfs), "-0", str(wrapper), str(side.venv / "bin" / "python")]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--bundles", type=Path, default=ROOT / "build" / "bundle")
    p.add_argument("--cache", type=Path, default=ROOT / ".cache" / "arm64")
    p.add_argument("--report", type=Path, help="write the timings as JSON here")
    p.add_argument("--skip-tests", action="store_true", help="no pytest run (quick look)")
    args = p.parse_args(argv)
    if shutil.which(QEMU) is None:
        print(f"error: {QEMU} missing: apt-get install qemu-user-static", file=sys.stderr)
        return 1
    try:
        return check(args)
    except (CheckError, debian_rootfs.RootfsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def check(args: argparse.Namespace) -> int:
    t_all = time.monotonic()
    cache = args.cache.resolve()
    t0 = time.monotonic()
    cached = (cache / "rootfs.json").exists()
    rootfs = debian_rootfs.build("arm64", cache)
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
            ("aarch64", [QEMU, "-L", str(rootfs)], str(rootfs / "usr/bin/python3.11"))]:
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
    native, emu = sides["x86_64"], sides["aarch64"]
    results: list[tuple[str, bool, str]] = refusals(work, args.bundles, pubkey, host_py)
    r = emu.run("platform", [*emu.python(), "-c",
                             "import platform,sys; print(platform.machine(), sys.version)"])
    print(f"emulated: {r.stdout.decode().strip()}")

    out = work / "out"
    compare_outputs(native, emu, out, results)

    test_summary = {}
    if not args.skip_tests:
        tree = test_tree(work / "tests")
        for side, rfs in ((native, None), (emu, rootfs)):
            r = side.run("pytest", [*tests_python(side, rfs), "-m", "pytest",
                                    "-p", "no:cacheprovider", "--durations=8", *TEST_FILES],
                         cwd=tree, check=False)
            text = r.stdout.decode(errors="replace")
            (out / f"{side.name}-pytest.out").write_text(text)
            tail = [ln for ln in text.strip().splitlines() if " in " in ln][-1:]
            test_summary[side.name] = tail[0].strip("= ") if tail else f"exit {r.returncode}"
            print(f"pytest {side.name}: {test_summary[side.name]}")
            if r.returncode != 0:
                print(text[-6000:], file=sys.stderr)
                results.append((f"pytest {side.name}", False, test_summary[side.name]))

    return summarise(native, emu, results, report=args.report, t_all=t_all,
                     t_rootfs=t_rootfs, cached=cached, extra={"pytest": test_summary})


def compare_outputs(native: Side, emu: Side, out: Path,
                    results: list[tuple[str, bool, str]]) -> None:
    """check-config, scenario, analyze and analyze --signals on both sides, byte for byte
    (one trace for both analyses), then each side verifies the emulated side's records."""
    out.mkdir()
    key = out / "device.key"
    native.tool("keys", "icv-agent", "keys", "generate", "--out", str(key))
    pub = out / "device.pub.pem"
    pub.write_bytes(native.tool("keys", "icv-agent", "keys", "public", "--key", str(key)).stdout)

    def same(step: str, args_: list[str], tool: str = "icv-agent",
             outputs: tuple[str, ...] = ()) -> None:
        got: dict[str, bytes] = {}
        for side in (native, emu):
            files = {o: out / f"{side.name}-{o}.log" for o in outputs}
            argv_ = [a.format(**{k: str(v) for k, v in files.items()}) for a in args_]
            r = side.tool(step, tool, *argv_)
            got[side.name] = r.stdout + b"".join(f.read_bytes() for f in files.values())
            (out / f"{side.name}-{step}.out").write_bytes(got[side.name])
        ok = got[native.name] == got[emu.name]
        results.append((step, ok, f"{len(got[native.name])} bytes"))

    for cfg in ("config/bench.toml", "config/mg.toml"):
        same(f"check-config {Path(cfg).stem}", ["check-config", cfg])
    for name, scenario, cfg in DRIVES:
        same(f"scenario {name}", ["scenario", scenario, "--config", cfg, "-o", "{trace}"],
             tool="icv-hil", outputs=("trace",))
        fixed = out / f"{name}.log"
        shutil.copy(out / f"{native.name}-trace.log", fixed)   # both analyse one trace
        same(f"analyze {name}", ["analyze", "--config", cfg, "--key", str(key), str(fixed)])
        same(f"analyze --signals {name}", ["analyze", "--signals", "--config", cfg,
                                           str(fixed)])
        records = out / f"{emu.name}-analyze {name}.out"
        for side in (emu, native):
            side.tool(f"verify {name}", "icv-agent", "verify", str(records), "--pubkey",
                      str(pub))


def summarise(native: Side, emu: Side, results: list[tuple[str, bool, str]], *,
              report: Path | None, t_all: float, t_rootfs: float, cached: bool,
              extra: dict[str, Any] | None = None) -> int:
    """The table of times and verdicts, the JSON report; 1 when anything differed."""
    print(f"\n{'step':<28} {native.name + ' s':>9} {emu.name + ' s':>10} {'ratio':>6}"
          "  same output")
    verdict = {s: ok for s, ok, _ in results}
    for step in emu.times:
        n, e = native.times.get(step), emu.times[step]
        ratio = f"{e / n:6.1f}" if n else "     -"
        ns = f"{n:9.2f}" if n is not None else "        -"
        mark = {True: "yes", False: "NO"}.get(verdict.get(step), "")
        print(f"{step:<28} {ns} {e:10.2f} {ratio}  {mark}")
    total = time.monotonic() - t_all
    print(f"rootfs {t_rootfs:.1f} s ({'cached' if cached else 'cold'}); "
          f"whole check {total:.1f} s on {platform.machine()}, {os.cpu_count()} cpu")
    for step, ok, _ in results:
        if step.startswith("refuse:"):
            print(f"{step:<40} {'yes' if ok else 'NO'}")
    bad = [f"{s} ({d})" for s, ok, d in results if not ok]
    if report:
        report.write_text(json.dumps({
            "native": native.times, "emulated": emu.times, "rootfs_s": t_rootfs,
            "rootfs_cached": cached, "total_s": total, **(extra or {}),
            "differ": bad}, indent=1) + "\n")
    if bad:
        print("FAILED: " + "; ".join(bad), file=sys.stderr)
        return 1
    print(f"{len(results)} passed, 0 failed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
