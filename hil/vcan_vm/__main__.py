"""``python -m hil.vcan_vm build|run|shell``: the vcan VM from the command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hil.vcan_vm.assets import AssetError, default_cache, prepare
from hil.vcan_vm.vm import VmError, kvm_usable, run


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m hil.vcan_vm",
        description="A small Linux VM with vcan0, vcan1 (CAN FD) and a vxcan pair, running "
                    "commands in this checkout with its virtualenv.")
    p.add_argument("--cache", type=Path, default=None,
                   help=f"kernel/initramfs cache (default {default_cache()})")
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="download the kernel and build the initramfs")
    b.add_argument("--refresh", action="store_true", help="download and build again")
    for name, text in (("run", "run a command in the VM; exit with its exit code"),
                       ("shell", "an interactive shell in the VM (serial console; "
                                 "Ctrl-A X quits qemu)")):
        r = sub.add_parser(name, help=text)
        r.add_argument("--checkout", type=Path, default=None,
                       help="project checkout to share read-write (default: this one)")
        r.add_argument("--venv", type=Path, default=None,
                       help="virtualenv to put first on PATH (default CHECKOUT/.venv)")
        r.add_argument("-e", "--env", action="append", default=[], metavar="KEY=VALUE",
                       help="environment variable for the command (repeatable)")
        r.add_argument("--memory", type=int, default=2048, metavar="MB")
        r.add_argument("--cpus", type=int, default=None)
        r.add_argument("--accel", choices=("auto", "tcg", "kvm"), default="auto",
                       help="auto: kvm only when /dev/kvm works and the CPU has vmx/svm")
        r.add_argument("--timeout", type=float, default=1800.0, metavar="S")
        r.add_argument("--timing", action="store_true",
                       help="print boot and wall time on stderr at the end")
        if name == "run":
            r.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARG...]")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        assets = prepare(args.cache, refresh=getattr(args, "refresh", False))
    except AssetError as exc:
        print(f"vcan-vm: {exc}", file=sys.stderr)
        return 2
    if args.command == "build":
        print(f"kernel {assets.kernel_release} ({assets.kernel_package}): {assets.kernel}\n"
              f"initramfs: {assets.initramfs}\n"
              f"accel: {'kvm' if kvm_usable() else 'tcg'}")
        return 0
    env: dict[str, str] = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"vcan-vm: --env {item!r}: expected KEY=VALUE", file=sys.stderr)
            return 2
        env[key] = value
    if args.command == "shell":
        cmd = ["/bin/bash", "--norc", "-i"] if Path("/bin/bash").exists() else ["/bin/sh", "-i"]
    else:
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            print("vcan-vm: run needs a command: run -- CMD [ARG...]", file=sys.stderr)
            return 2
    try:
        result = run(cmd, checkout=args.checkout, venv=args.venv, env=env,
                     timeout=args.timeout, memory_mb=args.memory, cpus=args.cpus,
                     accel=args.accel, interactive=args.command == "shell", assets=assets)
    except VmError as exc:
        print(f"vcan-vm: {exc}", file=sys.stderr)
        return 125
    if args.timing:
        boot = f"{result.boot_s:.1f} s" if result.boot_s is not None else "?"
        print(f"vcan-vm: {result.accel}, boot {boot}, wall {result.wall_s:.1f} s, "
              f"exit {result.returncode}", file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
