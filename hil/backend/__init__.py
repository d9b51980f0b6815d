"""Bench backend: receive, verify and store the fleet's records; send signed commands."""

from hil.backend.broker import BrokerConfig, BrokerSetupError
from hil.backend.receiver import DEFAULT_GROUP, Backend, Counters, subscriptions
from hil.backend.report import format_summaries, format_summary, summaries_json
from hil.backend.sender import CommandResult, SendError, keygen, load_backend_key, send_command
from hil.backend.store import BackendStore, VehicleSummary
from hil.backend.verify import REASONS, RecordRejected, VehicleKeys, check_record

__all__ = [
    "DEFAULT_GROUP", "REASONS", "Backend", "BackendStore", "BrokerConfig", "BrokerSetupError",
    "CommandResult", "Counters", "RecordRejected", "SendError", "VehicleKeys",
    "VehicleSummary", "check_record", "format_summaries", "format_summary", "keygen",
    "load_backend_key", "send_command", "subscriptions", "summaries_json",
]
