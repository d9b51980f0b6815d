"""The ingest stage's own part of the agent config: ``[[bus]]`` entries, and the checks of
one entry that need nothing but the entry. ``agent.config`` composes it into the agent
config and hands each entry to ``agent.ingest.setup.load_bus``; ingest never imports
``agent.config`` (the data flows config -> ingest, never back).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from agent.settings_loader import Problems


class ConfigFiles(Protocol):
    """What ingest needs of the whole config: where it is, to resolve DBC and mapping paths."""

    path: Path

    def resolve(self, value: str) -> Path: ...


@dataclass
class BusConfig:
    name: str
    dbc: list[str]
    mapping: str
    interface: str = "socketcan"
    channel: str = "can0"
    fd: bool = False
    bitrate: int = 500000
    data_bitrate: int = 0
    # Extra keyword arguments for python-can's Bus() (interface specific).
    options: dict[str, Any] = field(default_factory=dict)
    # Floor for the freshness timeouts of this bus (3 x cycle time otherwise): for bench
    # buses fed by a software replayer whose timing jitters more than real ECUs do.
    min_timeout_s: float = field(default=0.0, metadata={"range": (0, None)})
    # Seconds between reconnect attempts grow from min to max.
    reconnect_min_s: float = field(default=0.5, metadata={"above": 0})
    reconnect_max_s: float = field(default=30.0, metadata={"above": 0})
    # SocketCAN only. "bcm": the kernel's broadcast manager compares the mapped bits of
    # every frame and wakes the agent only on a change or a timeout; "raw": every frame of
    # a mapped id is read (kernel acceptance filters). Default: bcm on socketcan.
    receive: str = field(default="", metadata={"choices": ("bcm", "raw")})
    # SocketCAN socket receive buffer (SO_RCVBUF; SO_RCVBUFFORCE when allowed): what the
    # kernel holds while the agent is late. About 1,500 frames at the default; 0 = the
    # kernel's net.core.rmem_default.
    rcvbuf_bytes: int = field(default=1048576, metadata={
        "range": (0, None), "message": "must be 0 (kernel default) or more"})


def check_bus(bus: BusConfig, file: str | Path, key: str, problems: Problems) -> None:
    """Checks of one entry across its fields; the receive mode defaults from the interface."""
    from can.interfaces import BACKENDS  # python-can's interfaces and installed plugins

    if bus.interface not in BACKENDS:
        hint = ("; a driver outside python-can is installed as a python-can plugin (an entry "
                "point in the 'can.interface' group) and named here"
                if ":" in bus.interface or "." in bus.interface else "")
        problems.add(file, f"{key}.interface", f"{bus.interface!r} is not a python-can "
                     f"interface (known: {', '.join(sorted(BACKENDS))}){hint}")
    if not bus.dbc:
        problems.add(file, f"{key}.dbc", "at least one DBC file is needed")
    if not bus.receive:
        bus.receive = "bcm" if bus.interface == "socketcan" else "raw"
    if bus.receive == "bcm" and bus.interface != "socketcan":
        problems.add(file, f"{key}.receive", "\"bcm\" (the kernel's broadcast manager) "
                     f"needs interface = \"socketcan\", not {bus.interface!r}")
