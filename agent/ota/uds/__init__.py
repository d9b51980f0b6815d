"""UDS flashing and ECU identification over ISO-TP (udsoncan client side).

One module per part of a flash (udsoncan has one per service; this package builds on
it): ``connection`` (ISO-TP stack + client, per-step deadline, functional requests),
``security`` (seed/key algorithms, entry points), ``versions`` (identification DIDs),
``image`` (image trailer), ``steps`` (budgets and retries), ``keepalive`` (TesterPresent),
``flash`` (``FlashSession`` runs the ECU's recipe, ``agent.ota.recipe``), ``errors``
(typed failures), ``inventory`` (read versions), ``progress`` (progress bar and record
throttle).
"""

from agent.ota.uds.errors import (
    ChecksumMismatch,
    DependencyCheckFailed,
    FlashError,
    ImageError,
    InvalidResponse,
    NegativeResponse,
    PreconditionViolated,
    ProtocolError,
    RoutineFailed,
    StepTimeout,
    TransportError,
    UnexpectedResponse,
    VersionMismatch,
)
from agent.ota.uds.flash import FlashResult, FlashSession
from agent.ota.uds.inventory import read_ecu_versions
from agent.ota.uds.progress import ProgressBar, ProgressEvery
from agent.ota.uds.versions import EcuVersions

__all__ = [
    "ChecksumMismatch", "DependencyCheckFailed", "EcuVersions", "FlashError", "FlashResult",
    "FlashSession", "ImageError", "InvalidResponse", "NegativeResponse",
    "PreconditionViolated", "ProgressBar", "ProgressEvery", "ProtocolError",
    "RoutineFailed", "StepTimeout", "TransportError",
    "UnexpectedResponse", "VersionMismatch", "read_ecu_versions",
]
