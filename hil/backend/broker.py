"""Connection settings shared by the receiver and the command sender (mutual TLS, MQTT 5)."""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties


class BrokerSetupError(Exception):
    """The TLS files cannot be used (missing, unreadable, not PEM)."""


@dataclass
class BrokerConfig:
    host: str = "localhost"
    port: int = 8883
    ca: str | Path = ""             # CA that signed the broker certificate
    cert: str | Path = ""           # our client certificate (the broker requires one)
    key: str | Path = ""            # its private key
    tls: bool = True
    client_id: str = ""             # empty: a random id and a session that ends with us
    keepalive_s: int = 30
    session_expiry_s: int = 0       # with a fixed client_id: keep our queue this long
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0

    def make_client(self, prefix: str) -> mqtt.Client:
        """A paho MQTT 5 client with TLS set up; does not connect."""
        client_id = self.client_id or f"{prefix}-{secrets.token_hex(4)}"
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                             protocol=mqtt.MQTTv5)
        if self.tls:
            for name in ("ca", "cert", "key"):
                value = getattr(self, name)
                if value and not Path(value).is_file():
                    raise BrokerSetupError(f"--{name}: {value}: file not found")
            try:
                client.tls_set(ca_certs=str(self.ca) or None, certfile=str(self.cert) or None,
                               keyfile=str(self.key) or None, cert_reqs=ssl.CERT_REQUIRED,
                               tls_version=ssl.PROTOCOL_TLS_CLIENT)
            except (OSError, ssl.SSLError, ValueError) as exc:
                raise BrokerSetupError(f"TLS setup: {exc}") from None
        client.reconnect_delay_set(self.backoff_min_s, self.backoff_max_s)  # type: ignore[arg-type]
        return client

    def connect_properties(self) -> Properties:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s if self.client_id else 0
        return props

    def connect_kwargs(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "keepalive": self.keepalive_s,
                "clean_start": not (self.client_id and self.session_expiry_s),
                "properties": self.connect_properties()}
