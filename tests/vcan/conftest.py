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
    """Bigger default socket receive buffers while the suite runs, for can-utils.

    ``candump -l`` records every frame each test compares the agent against; under
    software emulation it can stall for most of a second, and the default 208 KiB holds
    about 0.3 s of the test drive. The agent's own sockets do not depend on this: they
    take ``rcvbuf_bytes`` from its config, and what the kernel drops is counted."""
    knob = Path("/proc/sys/net/core/rmem_default")
    before = knob.read_text().strip()
    knob.write_text(str(8 * 1024 * 1024))
    yield
    knob.write_text(before)
