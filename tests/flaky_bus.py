"""A python-can bus plugin that fails the way real adapters do, for recovery tests.

It wraps python-can's in-process ``virtual`` bus (real frames, real filters) and, driven
by a shared plan, raises on ``recv`` (bus error), or refuses to open (interface gone).
Loaded by the agent through its ``interface = "module:Class"`` plugin syntax.
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
