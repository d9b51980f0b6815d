"""Mapping files: canonical signal <- ``message.signal`` of one DBC, with conversion.

The file format is documented in ``docs/mapping.md``. Loading turns every entry into a
``Binding`` whose ``convert`` maps a physical DBC value to a canonical value (or ``None``
for "unknown"), so the decoder's hot path is one call per mapped signal.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.model import Problems, build, read_toml
from agent.signals import BOOL, CATALOGUE, ENUM, FLOAT, INT, SignalSpec


@dataclass
class MappingEntry:
    name: str
    message: str
    signal: str
    factor: float = 1.0
    offset: float = 0.0
    values: dict[str, Any] = field(default_factory=dict)
    default: Any = None
    invert: bool = False
    timeout: float = 0.0
    # Raw values (integers or value-table labels such as "SNA") that mean "not available".
    invalid: list[Any] = field(default_factory=list)


@dataclass
class MappingMeta:
    description: str = ""
    lacks: dict[str, str] = field(default_factory=dict)


@dataclass
class MappingFile:
    mapping: MappingMeta = field(default_factory=MappingMeta)
    signal: list[MappingEntry] = field(default_factory=list)


@dataclass
class Binding:
    """One mapped DBC signal feeding one canonical signal at one priority rank."""

    canonical: str
    rank: int
    dbc_signal: str
    convert: Callable[[Any], Any]
    timeout: float


def load_mapping(path: Path, problems: Problems) -> MappingFile | None:
    table = read_toml(path, problems)
    if table is None:
        return None
    mf = build(MappingFile, table, path, problems)
    for i, entry in enumerate(mf.signal):
        if entry.name not in CATALOGUE:
            problems.add(path, f"signal[{i}].name", f"{entry.name!r} is not a canonical signal")
    for name in mf.mapping.lacks:
        if name not in CATALOGUE:
            problems.add(path, f"mapping.lacks.{name}", "not a canonical signal")
        elif any(e.name == name for e in mf.signal):
            problems.add(path, f"mapping.lacks.{name}", "listed as lacking but also mapped")
    return mf


def make_converter(entry: MappingEntry, spec: SignalSpec, dbc_signal: Any, file: Path,
                   key: str, problems: Problems) -> Callable[[Any], Any] | None:
    """Build the physical -> canonical function for one entry, validating it on the way."""
    scale = dbc_signal.scale or 1
    offset = dbc_signal.offset or 0
    choices = {str(v): int(k) for k, v in (dbc_signal.choices or {}).items()}

    invalid: set[int] = set()
    for i, item in enumerate(entry.invalid):
        if isinstance(item, int) and not isinstance(item, bool):
            invalid.add(item)
        elif isinstance(item, str) and item in choices:
            invalid.add(choices[item])
        else:
            problems.add(file, f"{key}.invalid[{i}]",
                         f"not an integer and not a value of {dbc_signal.name}'s table")
    convert = _converter(entry, spec, dbc_signal, choices, file, key, problems)
    if convert is None or not invalid:
        return convert

    def unless_invalid(phys: Any) -> Any:
        if round((phys - offset) / scale) in invalid:
            return None
        return convert(phys)

    return unless_invalid


def _converter(entry: MappingEntry, spec: SignalSpec, dbc_signal: Any, choices: dict[str, int],
               file: Path, key: str, problems: Problems) -> Callable[[Any], Any] | None:
    scale = dbc_signal.scale or 1
    offset = dbc_signal.offset or 0
    table: dict[int, Any] = {}
    for raw_key, canon in entry.values.items():
        try:
            raw = int(raw_key, 0)
        except ValueError:
            if raw_key not in choices:
                problems.add(file, f"{key}.values.{raw_key}",
                             f"not an integer and not a value of {dbc_signal.name}'s table")
                continue
            raw = choices[raw_key]
        try:
            table[raw] = spec.coerce(canon)
        except ValueError as exc:
            problems.add(file, f"{key}.values.{raw_key}", str(exc))
    default = entry.default
    if default is not None:
        try:
            default = spec.coerce(default)
        except ValueError as exc:
            problems.add(file, f"{key}.default", str(exc))
            default = None

    if table or spec.kind == ENUM:
        if not table:
            problems.add(file, f"{key}.values", f"{spec.name} is an enum: a values table is needed")
            return None
        get = table.get

        def by_table(phys: Any) -> Any:
            return get(round((phys - offset) / scale), default)

        return by_table
    if spec.kind == BOOL:
        invert = entry.invert
        return lambda phys: (phys != 0) is not invert
    if spec.kind == INT:
        return lambda phys: int(round(phys))
    if spec.kind == FLOAT:
        factor, off = entry.factor, entry.offset
        if factor == 1.0 and off == 0.0:
            return float
        return lambda phys: phys * factor + off
    return None  # pragma: no cover - all kinds handled above
