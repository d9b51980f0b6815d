"""What a service handler returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Reply:
    data: bytes                                  # positive response
    busy_s: float = 0.0                          # work time, bridged with NRC 0x78
    after: Callable[[], None] | None = None      # runs once the answer is on the wire
    suppress: bool = False                       # suppressPosRspMsgIndicationBit was set
