"""The vcan suite runs inside the VM of ``hil/vcan_vm`` (``make test-vcan``), where the
kernel has SocketCAN and vcan0 / vcan1 / vxcan0-1 exist. Everywhere else (``make test``,
plain ``pytest``) it is not collected: the host kernels here have no CAN at all."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

IN_VM = bool(os.environ.get("ICV_IN_VM"))

if not IN_VM:
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session", autouse=True)
def can_links() -> None:
    """Fail clearly when the VM (or a machine set up like it) is not what we run on."""
    missing = [n for n in ("vcan0", "vcan1") if not Path(f"/sys/class/net/{n}").exists()]
    if missing:
        pytest.fail(f"no {', '.join(missing)}: run this suite with `make test-vcan`")
    tools = [t for t in ("cansend", "candump", "canplayer", "ip") if shutil.which(t) is None]
    if tools:
        pytest.fail(f"missing {', '.join(tools)}: apt-get install can-utils iproute2")


@pytest.fixture(scope="session", autouse=True)
def socket_buffers() -> Iterator[None]:
    """Bigger default socket receive buffers while the suite runs.

    Under software emulation a process can stall for most of a second (the replaying
    process busy-waits on the other CPU); the default 208 KiB holds about 0.3 s of the
    test drive, and the kernel drops what does not fit. On a real gateway the agent runs
    15x faster than here and the default is plenty."""
    knob = Path("/proc/sys/net/core/rmem_default")
    before = knob.read_text().strip()
    knob.write_text(str(8 * 1024 * 1024))
    yield
    knob.write_text(before)
