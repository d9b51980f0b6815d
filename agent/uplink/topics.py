"""The MQTT topic tree of one vehicle (documented in docs/mqtt.md)."""

from __future__ import annotations

ROOT = "icv"


def events(vin: str, type_: str) -> str:
    """Where a record of ``type_`` is published (QoS 1), e.g. icv/VIN/events/cda.activated."""
    return f"{ROOT}/{vin}/events/{type_}"


def resent(vin: str, type_: str) -> str:
    """Where a record goes again when the backend asked for it (``records.resend``): the
    same signed record, marked re-sent by its topic (as 补发 data of GB/T 32960)."""
    return f"{ROOT}/{vin}/resent/{type_}"


def status(vin: str) -> str:
    """Retained ``online`` / ``offline`` (the last will)."""
    return f"{ROOT}/{vin}/status"


def commands(vin: str) -> str:
    """Filter the agent subscribes to for signed commands."""
    return f"{ROOT}/{vin}/cmd/#"


def command(vin: str, name: str) -> str:
    return f"{ROOT}/{vin}/cmd/{name}"


def response(vin: str, name: str) -> str:
    """Where the answer to command ``name`` goes (QoS 1)."""
    return f"{ROOT}/{vin}/responses/{name}"


def command_name(vin: str, topic: str) -> str | None:
    """The command name in a topic under ``icv/VIN/cmd/``, else None."""
    prefix = f"{ROOT}/{vin}/cmd/"
    return topic[len(prefix):] if topic.startswith(prefix) and len(topic) > len(prefix) else None
