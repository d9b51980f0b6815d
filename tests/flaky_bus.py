"""A python-can bus plugin that fails the way real adapters do, for recovery tests.

It wraps python-can's in-process ``virtual`` bus (real frames, real filters) and, driven
by a shared plan, raises on ``recv`` (bus error), or refuses to open (interface gone).
Loaded by the agent as python-can loads any plugin: ``install_plugin`` writes the
dist-info of a package that declares it in the ``can.interface`` entry-point group.
"""

from __future__ import annotations

import threading
from typing import Any

import can
from can.interfaces.virtual import VirtualBus

PLAN: dict[str, Any] = {"fail_recv_after": None, "refuse_opens": 0, "opens": 0}
LOCK = threading.Lock()


class FlakyBus(VirtualBus):
    def __init__(self, channel: Any = None, **kwargs: Any):
        with LOCK:
            PLAN["opens"] += 1
            if PLAN["refuse_opens"] > 0:
                PLAN["refuse_opens"] -= 1
                raise can.CanInitializationError(f"No such device: {channel}")
        super().__init__(channel=channel, **kwargs)
        self._received = 0

    def _recv_internal(self, timeout: float | None) -> tuple[can.Message | None, bool]:
        with LOCK:
            limit = PLAN["fail_recv_after"]
            if limit is not None and self._received >= limit:
                PLAN["fail_recv_after"] = None
                raise can.CanOperationError("Network is down [Error Code 100]")
        msg, filtered = super()._recv_internal(timeout)
        if msg is not None:
            self._received += 1
        return msg, filtered


def install_plugin(folder: Any, name: str = "flaky") -> None:
    """Make ``folder`` an installed package declaring ``FlakyBus`` as python-can interface
    ``name`` (``[can.interface]`` entry point). A fresh interpreter with ``folder`` on its
    path sees it at ``import can``; this one, which imported python-can already, re-reads
    the entry points into ``can.interfaces.BACKENDS`` as that import would have."""
    import sys
    from pathlib import Path

    from can._entry_points import read_entry_points
    from can.interfaces import BACKENDS

    info = Path(folder) / "flaky_bus_plugin-1.0.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: flaky-bus-plugin\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(f"[can.interface]\n{name} = "
                                           "tests.flaky_bus:FlakyBus\n")
    (info / "RECORD").write_text("")
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    BACKENDS.update({ep.key: (ep.module_name, ep.class_name)
                     for ep in read_entry_points(group="can.interface")})
