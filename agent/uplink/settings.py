"""Uplink and command sections of the agent config (``[uplink]``, ``[commands]``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UplinkConfig:
    enabled: bool = False
    host: str = "localhost"
    port: int = field(default=8883, metadata={"range": (1, 65535)})
    protocol: str = field(default="5", metadata={"choices": ("5", "3.1.1")})  # MQTT 5 or 3.1.1
    client_id: str = ""              # default: the VIN
    ca: str = ""                     # CA bundle (PEM) that signed the broker certificate
    cert: str = ""                   # client certificate (PEM) for mutual TLS
    key: str = ""                    # client private key (PEM)
    tls: bool = True
    allow_plaintext: bool = False    # tls = false to a host other than this unit (bench only)
    keepalive_s: int = field(default=30, metadata={"range": (0, None)})
    # records published and not yet acknowledged
    inflight: int = field(default=20, metadata={"range": (1, None)})
    backoff_min_s: float = field(default=0.5, metadata={"above": 0})
    backoff_max_s: float = field(default=60.0, metadata={"above": 0})
    # TCP + TLS + CONNACK
    connect_timeout_s: float = field(default=10.0, metadata={"above": 0})
    # Broker keeps our command subscription (and commands sent meanwhile) this long offline.
    session_expiry_s: int = field(default=3600, metadata={"range": (0, None)})


@dataclass
class CommandsConfig:
    # Backend Ed25519 public keys (PEM files) allowed to sign commands.
    backend_keys: list[str] = field(default_factory=list)
    # Oldest accepted "issued" (and longest accepted validity); nonces are kept this long.
    max_age_s: float = field(default=600.0, metadata={"above": 0})
    # Tolerated clock difference for "issued" in the future.
    clock_skew_s: float = field(default=30.0, metadata={"range": (0, None)})
