"""Event records: canonical form, hash chain, device signature, JSON Schema, verification."""

from agent.records.chain import (
    SCHEMA_VERSION,
    TIME_SOURCES,
    ZERO_HASH,
    ChainError,
    RecordChain,
    RecordError,
    canonical_bytes,
    format_ts,
    record_hash,
    record_line,
)
from agent.records.keys import DeviceKey, KeyFileError, fingerprint, load_public_key
from agent.records.verify import VerifyReport, load_schema, verify_records

__all__ = [
    "SCHEMA_VERSION", "TIME_SOURCES", "ZERO_HASH", "ChainError", "DeviceKey", "KeyFileError",
    "RecordChain", "RecordError", "VerifyReport", "canonical_bytes", "fingerprint",
    "format_ts", "load_public_key", "load_schema", "record_hash", "record_line",
    "verify_records",
]
