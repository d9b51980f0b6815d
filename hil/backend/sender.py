"""Signed commands from the bench (one connection per command) and the backend key pair.

The agent pins the public half (``[commands] backend_keys``); the private half signs with
``agent.uplink.commands.sign_command``, the same code the agent verifies against.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.reasoncodes import ReasonCode

from agent.records.keys import DeviceKey, KeyFileError
from agent.uplink import topics
from agent.uplink.commands import sign_command
from hil.backend.broker import BrokerConfig


class SendError(Exception):
    """The command could not be delivered to the broker (connection, TLS, refusal)."""


@dataclass
class CommandResult:
    """What happened to one command: the envelope sent and the response, if any."""

    vin: str
    cmd: str
    nonce: str
    envelope: dict[str, Any]
    response: dict[str, Any] | None       # None: no answer within the timeout

    @property
    def ok(self) -> bool:
        return bool(self.response and self.response.get("ok") is True)


def load_backend_key(path: str | Path) -> Ed25519PrivateKey:
    """The backend's private signing key (PEM, PKCS#8); ``KeyFileError`` if unusable."""
    return DeviceKey.load(path).private_key


def keygen(folder: str | Path, name: str = "backend", *, overwrite: bool = False
           ) -> tuple[Path, Path, str]:
    """Write ``<name>.key`` (private, 0600) and ``<name>.pub`` (public PEM) into ``folder``;
    returns both paths and the key id the agent will see in ``key_id``."""
    folder = Path(folder)
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    if public.exists() and not overwrite:
        raise KeyFileError(f"{public}: a key already exists (use --force to replace it)")
    key = DeviceKey.generate()
    key.save(private, overwrite=overwrite)
    try:
        public.write_text(key.public_pem())
    except OSError as exc:
        raise KeyFileError(f"{public}: cannot write key: {exc.strerror}") from None
    return private, public, key.fingerprint


def send_command(broker: BrokerConfig, private_key: Ed25519PrivateKey, vin: str, cmd: str,
                 args: Mapping[str, Any] | None = None, *, timeout: float = 10.0,
                 ttl_s: float = 300.0) -> CommandResult:
    """Connect, subscribe to the response topic, publish the signed command (QoS 1) and wait
    up to ``timeout`` seconds for the response carrying its nonce.

    Raises ``SendError`` when the broker cannot be reached or refuses us; a command the
    vehicle does not answer (offline, bad signature) gives ``response=None``."""
    payload = sign_command(private_key, vin, cmd, args, ttl_s)
    envelope = json.loads(payload)
    nonce = envelope["nonce"]
    cond = threading.Condition()
    state: dict[str, Any] = {"connected": False, "subscribed": False, "error": None,
                             "response": None}

    def on_connect(client: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        with cond:
            if reason.is_failure:
                state["error"] = f"broker refused the connection: {reason}"
            else:
                state["connected"] = True
                client.subscribe(topics.response(vin, cmd), qos=1)
            cond.notify_all()

    def on_connect_fail(_c: mqtt.Client, _u: Any) -> None:
        with cond:
            state["error"] = "connection failed"
            cond.notify_all()

    def on_disconnect(_c: mqtt.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any) -> None:
        with cond:
            if not state["subscribed"]:
                state["error"] = state["error"] or f"the broker closed the connection: {reason}"
            cond.notify_all()

    def on_subscribe(_c: mqtt.Client, _u: Any, _m: int, codes: list[ReasonCode],
                     _p: Any) -> None:
        with cond:
            if any(c.is_failure for c in codes):
                state["error"] = f"broker refused the subscription: {codes[0]}"
            else:
                state["subscribed"] = True
            cond.notify_all()

    def on_message(_c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(body, dict) and body.get("nonce") == nonce:
            with cond:
                state["response"] = body
                cond.notify_all()

    client = broker.make_client("icv-backend-send")
    client.on_connect = on_connect
    client.on_connect_fail = on_connect_fail
    client.on_disconnect = on_disconnect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    kwargs = broker.connect_kwargs()
    try:
        client.connect(**kwargs)
    except OSError as exc:
        raise SendError(f"cannot connect to {broker.host}:{broker.port}: {exc}") from None
    client.loop_start()
    try:
        with cond:
            if not cond.wait_for(lambda: state["subscribed"] or state["error"], timeout):
                raise SendError(f"no connection to {broker.host}:{broker.port} within "
                                f"{timeout:g} s")
            if state["error"]:
                raise SendError(state["error"])
        info = client.publish(topics.command(vin, cmd), payload, qos=1)
        try:
            info.wait_for_publish(timeout)
        except (RuntimeError, ValueError) as exc:
            raise SendError(f"publish failed: {exc}") from None
        if not info.is_published():
            raise SendError(f"the broker did not acknowledge the command within {timeout:g} s")
        with cond:
            cond.wait_for(lambda: state["response"] is not None, timeout)
            response = state["response"]
    finally:
        client.disconnect()
        client.loop_stop()
    return CommandResult(vin, cmd, nonce, envelope, response)
