"""Mapping files: canonical signal <- ``message.signal`` of one DBC, with conversion.

The file format is documented in ``docs/mapping.md``. Loading turns every entry into a
``Binding`` whose ``convert`` maps a physical DBC value to a canonical value (or ``None``
for "unknown"), so the decoder's hot path is one call per mapped signal. An entry that
takes a second signal of the same message (``sign``: a direction bit, ``combine``: two
signals into one value) also gets ``extra`` (that signal's name) and ``combine``
(both physical values -> canonical), which the decoder calls instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.settings_loader import Problems, build, read_toml
from agent.signals import BOOL, CATALOGUE, ENUM, FLOAT, INT, SignalSpec

COMBINE_BOOL = ("and", "or")
COMBINE_NUMBER = ("min", "max", "mean")


@dataclass
class SignFrom:
    """``sign = { signal = "STEER_ANGLE_DIRECTION", negative = [1] }``: the value's sign is
    a separate bit (magnitude in ``signal``); raw values in ``negative`` make it negative."""

    signal: str
    negative: list[Any] = field(default_factory=lambda: [1])


@dataclass
class Combine:
    """``combine = { signal = "RIGHT_TURN_SIGNALING", op = "and" }``: the canonical value
    from ``signal`` and this second signal of the same message."""

    signal: str
    op: str


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
    sign: SignFrom | None = None
    combine: Combine | None = None


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
    # A second DBC signal of the same message (``sign``/``combine``): the decoder then
    # calls ``combine(phys, extra_phys)``; ``convert`` alone reads ``dbc_signal`` only.
    extra: str | None = None
    combine: Callable[[Any, Any], Any] | None = None
    # its inverse (trace tools): canonical -> physical values of dbc_signal and extra
    split: Callable[[Any], tuple[float, float]] | None = None
    # Smallest step of the canonical value (DBC scale x factor), 0 if not a number.
    resolution: float = 0.0


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


def raw_of(sig: Any) -> Callable[[Any], int]:
    """Physical -> raw integer of one DBC signal."""
    scale = sig.scale or 1
    offset = sig.offset or 0
    return lambda phys: round((phys - offset) / scale)


def make_combiner(entry: MappingEntry, spec: SignalSpec, message: Any, dbc_signal: Any,
                  convert: Callable[[Any], Any], file: Path, key: str, problems: Problems
                  ) -> tuple[Any, Callable[[Any, Any], Any]] | None:
    """For an entry with ``sign`` or ``combine``: the second DBC signal and the function of
    both physical values; None when the entry has neither (or after a problem)."""
    if entry.sign is None and entry.combine is None:
        return None
    if entry.sign is not None and entry.combine is not None:
        problems.add(file, f"{key}.combine", "sign and combine cannot both be given")
        return None
    second = entry.sign or entry.combine
    assert second is not None
    part = "sign" if entry.sign is not None else "combine"
    name = second.signal
    try:
        other = message.get_signal_by_name(name)
    except KeyError:
        problems.add(file, f"{key}.{part}.signal",
                     f"message {message.name} has no signal {name!r}")
        return None
    if other.name == dbc_signal.name:
        problems.add(file, f"{key}.{part}.signal", f"{name} is the entry's own signal")
        return None
    if other.multiplexer_ids and other.multiplexer_ids != dbc_signal.multiplexer_ids:
        problems.add(file, f"{key}.{part}.signal",
                     f"{name} is multiplexed differently from {dbc_signal.name}: the two "
                     f"are not always in the same frame")
        return None
    if entry.values:
        problems.add(file, f"{key}.{part}",
                     "not with a values table (sign and combine work on numbers and bools)")
        return None
    if entry.sign is not None:
        fn = _signed(entry.sign, spec, other, convert, file, key, problems)
    else:
        fn = _combined(entry, spec, dbc_signal, other, file, key, problems)
    return None if fn is None else (other, fn)


def on_grid(sig: Any, phys: float) -> float:
    """The physical value of the raw integer nearest to ``phys``."""
    scale, offset = sig.scale or 1, sig.offset or 0
    return round((phys - offset) / scale) * scale + offset


def make_splitter(entry: MappingEntry, spec: SignalSpec, first: Any, second: Any
                  ) -> Callable[[Any], tuple[float, float]]:
    """The inverse of ``make_combiner`` for the trace tools: canonical value -> physical
    values of the entry's signal and of the second one."""
    if entry.sign is not None:
        labels = {str(v): int(k) for k, v in (second.choices or {}).items()}
        negative = sorted(x if isinstance(x, int) else labels[x] for x in entry.sign.negative)
        positive = next(r for r in range(1 << second.length) if r not in negative)
        scale, offset = second.scale or 1, second.offset or 0

        def split_sign(want: Any) -> tuple[float, float]:
            size = abs(want)
            phys = (size - entry.offset) / entry.factor if spec.kind == FLOAT else size
            raw = negative[0] if want < 0 else positive
            return on_grid(first, phys), raw * scale + offset

        return split_sign
    assert entry.combine is not None
    if spec.kind == BOOL:
        both = entry.combine.op == "and"

        def split_bool(want: Any) -> tuple[float, float]:
            on = bool(want) is not entry.invert
            return (on_grid(first, 1.0 if on else 0.0),
                    on_grid(second, 1.0 if on and both else 0.0))

        return split_bool

    def split_number(want: Any) -> tuple[float, float]:
        phys = (want - entry.offset) / entry.factor if spec.kind == FLOAT else want
        return on_grid(first, phys), on_grid(second, phys)

    return split_number


def _signed(sign: SignFrom, spec: SignalSpec, direction: Any, convert: Callable[[Any], Any],
            file: Path, key: str, problems: Problems) -> Callable[[Any, Any], Any] | None:
    if spec.kind not in (FLOAT, INT):
        problems.add(file, f"{key}.sign", f"{spec.name} is {spec.kind}, sign needs a number")
        return None
    labels = {str(v): int(k) for k, v in (direction.choices or {}).items()}
    negative: set[int] = set()
    for i, item in enumerate(sign.negative):
        if isinstance(item, int) and not isinstance(item, bool):
            negative.add(item)
        elif isinstance(item, str) and item in labels:
            negative.add(labels[item])
        else:
            problems.add(file, f"{key}.sign.negative[{i}]",
                         f"not an integer and not a value of {direction.name}'s table")
    if not negative:
        problems.add(file, f"{key}.sign.negative", "names no raw value")
        return None
    raw = raw_of(direction)

    def signed(phys: Any, dir_phys: Any) -> Any:
        value = convert(phys)
        if value is None or raw(dir_phys) not in negative:
            return value
        return -value

    return signed


def _combined(entry: MappingEntry, spec: SignalSpec, first: Any, second: Any, file: Path,
              key: str, problems: Problems) -> Callable[[Any, Any], Any] | None:
    assert entry.combine is not None
    op = entry.combine.op
    if spec.kind == BOOL:
        ops: tuple[str, ...] = COMBINE_BOOL
    elif spec.kind in (FLOAT, INT):
        ops = COMBINE_NUMBER
    else:
        problems.add(file, f"{key}.combine", f"{spec.name} is {spec.kind}: combine needs "
                     "a bool or a number")
        return None
    if op not in ops:
        problems.add(file, f"{key}.combine.op", f"{op!r} is not one of {', '.join(ops)} "
                     f"(for a {spec.kind} signal)")
        return None
    # the entry's invalid raw values hold for both signals (integers and each one's labels)
    bad_first, bad_second = _invalid_raws(entry.invalid, first), _invalid_raws(entry.invalid,
                                                                              second)
    raw1, raw2 = raw_of(first), raw_of(second)
    if spec.kind == BOOL:
        invert = entry.invert
        both = op == "and"

        def logic(a: Any, b: Any) -> Any:
            if raw1(a) in bad_first or raw2(b) in bad_second:
                return None
            x, y = a != 0, b != 0
            return (x and y if both else x or y) is not invert

        return logic
    factor, off = entry.factor, entry.offset
    pick = {"min": min, "max": max, "mean": lambda a, b: (a + b) / 2}[op]
    as_int = spec.kind == INT

    def number(a: Any, b: Any) -> Any:
        if raw1(a) in bad_first or raw2(b) in bad_second:
            return None
        v = pick(a, b)
        return int(round(v)) if as_int else float(v * factor + off)

    return number


def _invalid_raws(items: list[Any], sig: Any) -> set[int]:
    labels = {str(v): int(k) for k, v in (sig.choices or {}).items()}
    out = set()
    for item in items:
        if isinstance(item, int) and not isinstance(item, bool):
            out.add(item)
        elif isinstance(item, str) and item in labels:
            out.add(labels[item])
    return out


def resolution(entry: MappingEntry, spec: SignalSpec, dbc_signal: Any) -> float:
    """The canonical value's smallest step: DBC scale x factor for numbers, else 0."""
    if spec.kind not in (FLOAT, INT) or entry.values:
        return 0.0
    step = abs((dbc_signal.scale or 1) * (entry.factor if spec.kind == FLOAT else 1.0))
    if entry.combine is not None and entry.combine.op == "mean":
        step /= 2
    return 1.0 if spec.kind == INT else step
