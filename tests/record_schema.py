"""Check records against the repo's JSON Schema (``agent/records/schema.json``).

Every suite that produces records calls ``assert_valid_record`` on each of them.
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "agent" / "records" / "schema.json"


@lru_cache(maxsize=1)
def validator() -> Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text("utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def record_errors(record: dict[str, Any]) -> list[str]:
    """Every schema violation as ``path: message`` (empty when valid)."""
    errors = sorted(validator().iter_errors(record), key=lambda e: list(e.absolute_path))
    out = [f"{'.'.join(map(str, e.absolute_path)) or '<record>'}: {e.message}" for e in errors]
    if not out:
        # What a pattern cannot say: the timestamp is a real instant, the id a real UUID.
        try:
            datetime.strptime(record["ts"], "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            out.append(f"ts: {record['ts']!r} is not a date and time")
        if str(uuid.UUID(record["id"])) != record["id"]:
            out.append(f"id: {record['id']!r} is not a canonical UUID")
    return out


def assert_valid_record(record: dict[str, Any]) -> None:
    errors = record_errors(record)
    assert not errors, (f"record seq {record.get('seq')} ({record.get('type')}) breaks the "
                        "schema:\n  " + "\n  ".join(errors))
