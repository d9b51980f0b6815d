"""Boot the vcan VM with qemu, run one command inside, hand back its output and exit code.

TCG (software emulation) unless KVM really works: on these hosts ``/dev/kvm`` exists but
belongs to a paravirtual scheme without ``vmx``/``svm``, and a stock guest kernel hangs
with ``-enable-kvm``. The guest has no network device.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from hil.vcan_vm.assets import Assets, prepare

QEMU = "qemu-system-x86_64"
HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class VmError(RuntimeError):
    """The VM did not boot, or did not report the command's exit code."""


@dataclass
class RunResult:
    returncode: int
    stdout: str
    stderr: str
    boot_s: float | None          # qemu start -> guest ready to run the command
    wall_s: float                 # qemu start -> qemu exit
    accel: str
    console: str = field(repr=False, default="")


def kvm_usable() -> bool:
    """Real KVM: /dev/kvm we may open and a CPU with hardware virtualisation."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    words = set(flags.split())
    return "vmx" in words or "svm" in words


def _qemu_path(value: Path | str) -> str:
    """A path inside a qemu option value: commas are doubled."""
    return str(value).replace(",", ",,")


def find_checkout() -> Path:
    return Path(__file__).resolve().parents[2]


def _guest_script(cmd: Sequence[str], checkout: Path, venv: Path | None,
                  env: dict[str, str]) -> str:
    path = HOST_PATH
    exports = {"HOME": "/root", "LANG": "C.UTF-8", "ICV_IN_VM": "1",
               "PYTHONUNBUFFERED": "1"}
    if venv is not None:
        path = f"{venv / 'bin'}:{path}"
        exports["VIRTUAL_ENV"] = str(venv)
    exports["PATH"] = path
    exports.update(env)
    lines = ["set -e"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    lines.append(f"cd {shlex.quote(str(checkout))}")
    lines.append("set +e")
    lines.append("exec " + " ".join(shlex.quote(c) for c in cmd))
    return "\n".join(lines) + "\n"


class _Tail:
    """Copies what the guest appends to a file on the 9p share to a host stream."""

    def __init__(self, path: Path, sink: BinaryIO | None):
        self.path = path
        self.sink = sink
        self.pos = 0
        self.data = bytearray()

    def poll(self) -> None:
        try:
            with open(self.path, "rb") as fh:
                fh.seek(self.pos)
                chunk = fh.read()
        except FileNotFoundError:
            return
        if chunk:
            self.pos += len(chunk)
            self.data += chunk
            if self.sink is not None:
                self.sink.write(chunk)
                self.sink.flush()


def qemu_command(assets: Assets, ctl: Path, checkout: Path, *, memory_mb: int, cpus: int,
                 accel: str, interactive: bool = False) -> list[str]:
    if accel == "kvm":
        accel_args = ["-accel", "kvm", "-cpu", "host"]
    else:
        accel_args = ["-accel", "tcg,thread=multi", "-cpu", "max"]
    serial = ["-serial", "mon:stdio"] if interactive else \
        ["-serial", f"file:{_qemu_path(ctl / 'console.log')}"]
    cmdline = "console=ttyS0 panic=-1 mitigations=off " + ("" if interactive else "quiet")
    args = [QEMU, "-nodefaults", "-no-user-config", "-no-reboot", "-display", "none",
            "-machine", "pc", *accel_args, "-smp", str(cpus), "-m", str(memory_mb),
            "-nic", "none", *serial,
            "-kernel", str(assets.kernel), "-initrd", str(assets.initramfs),
            "-append", cmdline.strip()]
    shares = [("hostroot", Path("/"), True), ("work", checkout, False), ("ctl", ctl, False)]
    for tag, path, readonly in shares:
        opts = f"local,id={tag},path={_qemu_path(path)},security_model=none,multidevs=remap"
        if readonly:
            opts += ",readonly=on"
        args += ["-fsdev", opts, "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]
    return args


def run(cmd: Sequence[str], *, checkout: Path | None = None, venv: Path | None = None,
        env: dict[str, str] | None = None, timeout: float = 1800.0, memory_mb: int = 2048,
        cpus: int | None = None, accel: str = "auto", stream: bool = True,
        interactive: bool = False, assets: Assets | None = None) -> RunResult:
    """Boot the VM, run ``cmd`` (argv) in the checkout, return its output and exit code.

    ``stream`` copies the command's stdout/stderr to ours while it runs. ``venv``
    defaults to the checkout's ``.venv`` when it exists.
    """
    if shutil.which(QEMU) is None:
        raise VmError(f"{QEMU} not found; install the Debian package qemu-system-x86")
    checkout = (checkout or find_checkout()).resolve()
    if venv is None and (checkout / ".venv" / "bin" / "python").exists():
        venv = checkout / ".venv"
    assets = assets or prepare()
    if accel == "auto":
        accel = "kvm" if kvm_usable() else "tcg"
    cpus = cpus or min(os.cpu_count() or 1, 4)
    with tempfile.TemporaryDirectory(prefix="vcan-vm-ctl-") as tmp:
        ctl = Path(tmp)
        (ctl / "vm.conf").write_text(
            f"CHECKOUT={shlex.quote(str(checkout))}\n"
            f"MODE={'shell' if interactive else 'run'}\nMSIZE=512000\n")
        (ctl / "cmd.sh").write_text(_guest_script(cmd, checkout, venv, env or {}))
        argv = qemu_command(assets, ctl, checkout, memory_mb=memory_mb, cpus=cpus,
                            accel=accel, interactive=interactive)
        out = _Tail(ctl / "stdout", sys.stdout.buffer if stream else None)
        err = _Tail(ctl / "stderr", sys.stderr.buffer if stream else None)
        start = time.monotonic()
        boot_s: float | None = None
        if interactive:
            proc = subprocess.Popen(argv)
        else:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT)
        timed_out = False
        try:
            while True:
                try:
                    proc.wait(0.1)
                    break
                except subprocess.TimeoutExpired:
                    pass
                if boot_s is None and (ctl / "ready").exists():
                    boot_s = time.monotonic() - start
                out.poll()
                err.poll()
                if time.monotonic() - start > timeout:
                    timed_out = True
                    proc.kill()
                    proc.wait()
                    break
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        wall_s = time.monotonic() - start
        if boot_s is None and (ctl / "ready").exists():
            boot_s = wall_s
        out.poll()
        err.poll()
        qemu_says = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
        console = (ctl / "console.log").read_text(errors="replace") \
            if (ctl / "console.log").exists() else ""
        console += qemu_says
        rc_file = ctl / "rc"
        if timed_out:
            raise VmError(f"the VM did not finish within {timeout:.0f} s; console:\n"
                          + _tail(console))
        if not rc_file.exists():
            failed = (ctl / "failed").read_text().strip() if (ctl / "failed").exists() else ""
            why = f"guest init failed: {failed}" if failed else \
                f"qemu exited with {proc.returncode} before the command finished"
            raise VmError(f"{why}; console:\n{_tail(console)}")
        rc = int(rc_file.read_text().strip() or "255")
        return RunResult(rc, out.data.decode(errors="replace"),
                         err.data.decode(errors="replace"), boot_s, wall_s, accel, console)


def _tail(text: str, lines: int = 40) -> str:
    return "\n".join(text.splitlines()[-lines:])
