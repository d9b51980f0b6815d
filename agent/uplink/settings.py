"""Uplink and command sections of the agent config (``[uplink]``, ``[commands]``)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class UplinkConfig:
    enabled: bool = False
    host: str = "localhost"
    port: int = 8883
    protocol: str = "5"              # "5" (MQTT 5) or "3.1.1"
    client_id: str = ""              # default: the VIN
    ca: str = ""                     # CA bundle (PEM) that signed the broker certificate
    cert: str = ""                   # client certificate (PEM) for mutual TLS
    key: str = ""                    # client private key (PEM)
    tls: bool = True
    allow_plaintext: bool = False    # tls = false to a host other than this unit (bench only)
    keepalive_s: int = 30
    inflight: int = 20               # records published and not yet acknowledged
    backoff_min_s: float = 0.5
    backoff_max_s: float = 60.0
    connect_timeout_s: float = 10.0  # TCP + TLS + CONNACK
    # Broker keeps our command subscription (and commands sent meanwhile) this long offline.
    session_expiry_s: int = 3600


@dataclass
class CommandsConfig:
    # Backend Ed25519 public keys (PEM files) allowed to sign commands.
    backend_keys: list[str] = field(default_factory=list)
    # Oldest accepted "issued" (and longest accepted validity); nonces are kept this long.
    max_age_s: float = 600.0
    # Tolerated clock difference for "issued" in the future.
    clock_skew_s: float = 30.0
