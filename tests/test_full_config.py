"""config/full.toml lists every key of the agent config at its default, and is valid.

The list of keys comes from the config dataclasses themselves, so a field added to the
model without a line in config/full.toml fails here, named.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

from agent.config import AgentConfig
from agent.settings_loader import tomllib  # tomli on Python 3.10

ROOT = Path(__file__).resolve().parents[1]
FULL = ROOT / "config" / "full.toml"


def _key(field: dataclasses.Field) -> str:
    return field.metadata.get("key", field.name)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _model(tp: Any) -> tuple[type | None, bool]:
    """The dataclass behind a field type and whether it is a list of them."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return tp, False
    if origin is list and args and dataclasses.is_dataclass(args[0]):
        return args[0], True
    return None, False


def comment_lines(text: str) -> dict[tuple[str, str], str]:
    """(table header, key) -> the whole line, for the comments next to example values."""
    out: dict[tuple[str, str], str] = {}
    header = ""
    for line in text.splitlines():
        stripped = line.strip()
        m = re.match(r"^\[\[?([A-Za-z0-9_.]+)\]\]?", stripped)
        if m:
            header = m.group(1)
            continue
        m = re.match(r"^([A-Za-z0-9_]+)\s*=", stripped)
        if m:
            out[(header, m.group(1))] = line
    return out


class Audit:
    def __init__(self, lines: dict[tuple[str, str], str]):
        self.lines = lines
        self.missing: list[str] = []
        self.wrong: list[str] = []

    def walk(self, cls: type, tables: list[dict[str, Any]], path: str, example: bool) -> None:
        """Every field of ``cls`` in ``tables`` (several: a list of tables, keys united)."""
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            if not field.init:
                continue
            key, where = _key(field), f"{path}.{_key(field)}" if path else _key(field)
            model, many = _model(hints[field.name])
            present = [t[key] for t in tables if key in t]
            if not present:
                if model is not None and many:
                    fields = ", ".join(_key(f) for f in dataclasses.fields(model) if f.init)
                    self.missing.append(f"{where}: no [[{where}]] table (keys: {fields})")
                else:
                    self.missing.append(where)
                continue
            if model is not None:
                subs = [s for v in present for s in (v if many else [v])]
                self.walk(model, subs, where, example or many)
            else:
                self.check_default(field, present, where, path, key, example)

    def check_default(self, field: dataclasses.Field, present: list[Any], where: str,
                      header: str, key: str, example: bool) -> None:
        default = _default(field)
        if default is dataclasses.MISSING:
            return                                  # required: an example value
        if all(v == default and type(v) is type(default) or
               (isinstance(default, float) and type(v) is float and v == default)
               for v in present):
            return
        line = self.lines.get((header, key), "")
        if example and "default" in line.partition("#")[2]:
            return                                  # an example that names its default
        self.wrong.append(f"{where} = {present[0]!r}, the default is {default!r}")


def test_full_config_lists_every_field_at_its_default() -> None:
    text = FULL.read_text(encoding="utf-8")
    audit = Audit(comment_lines(text))
    audit.walk(AgentConfig, [tomllib.loads(text)], "", False)
    assert not audit.missing, ("config/full.toml lacks these config fields:\n  "
                               + "\n  ".join(audit.missing))
    assert not audit.wrong, ("config/full.toml shows values that are not the defaults "
                             "(an example in [[bus]]/[[ecu]] says 'default ...' in its "
                             "comment):\n  " + "\n  ".join(audit.wrong))


def test_every_key_says_what_it_does() -> None:
    bare = [f"{n}: {line}" for n, line in
            enumerate(FULL.read_text(encoding="utf-8").splitlines(), 1)
            if re.match(r"^[A-Za-z0-9_]+\s*=", line) and "#" not in line]
    assert not bare, "keys without a comment in config/full.toml:\n  " + "\n  ".join(bare)


def test_check_config_accepts_it() -> None:
    done = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(FULL)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout


def test_the_audit_names_a_missing_field(tmp_path: Path) -> None:
    """The check can fail: a dropped key, a dropped table and changed defaults are named."""
    text = FULL.read_text(encoding="utf-8")
    text = re.sub(r"^hold_max = .*\n", "", text, flags=re.M)
    text = re.sub(r"^quota_mb = 64.0", "quota_mb = 65.0", text, flags=re.M)
    text = re.sub(r"^p2_s = 0.05", "p2_s = 0.06", text, flags=re.M)
    text = text.replace("[ecu.budget]", "[ecu.not_budget]")
    table = tomllib.loads(text)
    del table["ecu"][0]["not_budget"]
    audit = Audit(comment_lines(text))
    audit.walk(AgentConfig, [table], "", False)
    assert "journal.hold_max" in audit.missing
    assert "ecu.budget" in audit.missing
    assert audit.wrong == ["journal.quota_mb = 65.0, the default is 64.0",
                           "ecu.p2_s = 0.06, the default is 0.05"]
