"""Typed TOML loading: dataclasses in, every problem out as ``key.path: problem``.

One small validator serves the agent config, the mapping files, scenarios and ECU configs,
so each of them reports unknown keys, wrong types, missing keys and values out of range
the same way.

Value constraints are declared on the field, ``field(default=..., metadata={...})``, and
checked by ``build()`` once the value has the right type (one problem per key, the first
that applies). A value equal to the field's default is not checked: defaults are valid by
construction, and an empty-string default means "not set". ``None`` (an unset optional)
is not checked either. The keys:

``range=(lo, hi)``
    inclusive bounds of a number, ``None`` for an open end: "must be >= lo and <= hi".
``above=x`` / ``below=x``
    exclusive bounds: "must be > x", "must be < x" (combined with ``range`` as
    "must be > 0 and <= 3650"). NaN is outside every bound.
``choices=(a, b, ...)``
    the allowed values: "'x' is not one of a, b".
``pattern=regex``
    a string must match it whole: "expected <pattern_help>, got 'x'" with
    ``pattern_help="an http(s) URL"``, else "'x' does not match <regex>".
``min_len=n`` / ``max_len=n``
    length of a string, list or table: "must not be empty", "needs at least n items",
    "at most n characters".
``each={...}`` / ``keys={...}``
    the same keys for every item of a list or value of a table / every key of a table,
    reported at ``key.path[i]`` / ``key.path.k``.
``check=fn``
    ``fn(value) -> str | None``: a problem text, for what the keys above cannot say.
``why="..."``
    appended to the generated message in parentheses: "must be > 0 (why)".
``message="..."``
    replaces the generated message; ``{value!r}`` is the value.
``key="toml-name"``
    (not a constraint) the TOML key of the field when it differs from the field name.

``check_value(metadata, value, ...)`` applies the same keys to a value built otherwise.
Checks across fields (two keys that go together, a quota against floors) stay in code
next to the model.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

T = TypeVar("T")


class Problems(list):
    """Collected ``(file, key_path, message)`` problems; empty means valid."""

    def add(self, file: str | Path, key: str, message: str) -> None:
        self.append((str(file), key, message))

    def lines(self) -> list[str]:
        return [f"{f}: {k}: {m}" if k else f"{f}: {m}" for f, k, m in self]


class ConfigError(Exception):
    """Raised with every problem of a file; ``str()`` is one ``FILE: key: problem`` per line."""

    def __init__(self, problems: Problems):
        self.problems = problems
        super().__init__("\n".join(problems.lines()))


def read_toml(path: Path, problems: Problems) -> dict[str, Any] | None:
    """The TOML table of ``path``, or None with the reason in ``problems``: a wrong file
    given by mistake (binary, a directory, nested without end) is a problem, not a
    traceback."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        problems.add(path, "", "file not found")
    except tomllib.TOMLDecodeError as exc:
        problems.add(path, "", f"not valid TOML: {exc}")
    except UnicodeDecodeError as exc:   # tomllib decodes UTF-8 before it parses
        problems.add(path, "", f"not a TOML file: byte 0x{exc.object[exc.start]:02x} at "
                     f"offset {exc.start} is not UTF-8 text (a binary file?)")
    except RecursionError:
        problems.add(path, "", "not valid TOML: arrays or tables nested too deeply")
    except OSError as exc:
        problems.add(path, "", f"cannot read: {exc.strerror or exc}")
    return None


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    part = key if key.replace("_", "").replace("-", "").isalnum() else f'"{key}"'
    return f"{path}.{part}" if path else part


_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true/false"}


def build(cls: type[T], table: Any, file: str | Path, problems: Problems, path: str = "") -> T:
    """Build dataclass ``cls`` from a TOML table, recording problems instead of raising.

    Fields with defaults are optional; ``metadata`` renames a field and declares its value
    constraints (module docstring). On problems the returned object still exists (with
    defaults) so checks can go on.
    """
    if not isinstance(table, dict):
        problems.add(file, path, "expected a table")
        table = {}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    known = set()
    for field in dataclasses.fields(cls):
        if not field.init:
            continue
        key = field.metadata.get("key", field.name)
        known.add(key)
        fpath = _join(path, key)
        if key in table:
            before = len(problems)
            value = _convert(hints[field.name], table[key], file, problems, fpath)
            kwargs[field.name] = value
            if field.metadata and len(problems) == before and not _is_default(field, value):
                check_value(field.metadata, value, file, problems, fpath)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.add(file, fpath, "missing required key")
            kwargs[field.name] = _placeholder(hints[field.name])
    for key in table:
        if key not in known:
            problems.add(file, _join(path, key), "unknown key")
    return cls(**kwargs)


def _placeholder(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return []
    if origin is dict:
        return {}
    if dataclasses.is_dataclass(tp):
        return build(tp, {}, "", Problems())
    return {str: "", int: 0, float: 0.0, bool: False}.get(tp)


def _convert(tp: Any, value: Any, file: str | Path, problems: Problems, path: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        trial = Problems()
        for arg in args:
            result = _convert(arg, value, file, trial, path)
            if not trial:
                return result
            trial.clear()
        return _convert(args[0], value, file, problems, path)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return build(tp, value, file, problems, path)
    if origin is list:
        (item,) = typing.get_args(tp)
        if not isinstance(value, list):
            if item is str and isinstance(value, str):
                return [value]  # a single path where a list is allowed
            problems.add(file, path, "expected a list")
            return []
        return [_convert(item, v, file, problems, _join(path, i)) for i, v in enumerate(value)]
    if origin is dict:
        _, vt = typing.get_args(tp)
        if not isinstance(value, dict):
            problems.add(file, path, "expected a table")
            return {}
        return {k: _convert(vt, v, file, problems, _join(path, k)) for k, v in value.items()}
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp in (str, bool):
        if isinstance(value, tp):
            return value
    else:  # pragma: no cover - programming error in a model
        raise TypeError(f"unsupported model type {tp!r}")
    problems.add(file, path, f"expected {_TYPE_NAMES[tp]}, got {type(value).__name__}"
                 f" {value!r}")
    return _placeholder(tp)


def _is_default(field: dataclasses.Field, value: Any) -> bool:
    if field.default is not dataclasses.MISSING:
        return bool(value == field.default)
    if field.default_factory is not dataclasses.MISSING:
        return bool(value == field.default_factory())
    return False


def check_value(meta: Mapping[str, Any], value: Any, file: str | Path, problems: Problems,
                path: str) -> None:
    """The constraints of ``meta`` (module docstring) on ``value``, problems at ``path``."""
    problem = _problem(meta, value)
    if problem is not None:
        problems.add(file, path, problem)
    each, keys = meta.get("each"), meta.get("keys")
    if each and isinstance(value, list):
        for i, item in enumerate(value):
            check_value(each, item, file, problems, _join(path, i))
    if isinstance(value, dict) and (each or keys):
        for k, item in value.items():
            if keys:
                check_value(keys, k, file, problems, _join(path, k))
            if each:
                check_value(each, item, file, problems, _join(path, k))


def _problem(meta: Mapping[str, Any], value: Any) -> str | None:
    if value is None:
        return None
    text = _bounds(meta, value) or _choice(meta, value) or _length(meta, value) \
        or _pattern(meta, value)
    check = meta.get("check")
    if text is None and check is not None:
        text = check(value)
    if text is None:
        return None
    if "message" in meta:
        return str(meta["message"]).format(value=value)
    return f"{text} ({meta['why']})" if meta.get("why") else text


def _bounds(meta: Mapping[str, Any], value: Any) -> str | None:
    lo, hi = meta.get("range", (None, None))
    above, below = meta.get("above"), meta.get("below")
    if (lo, hi, above, below) == (None, None, None, None):
        return None
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return None
    nan = isinstance(value, float) and math.isnan(value)
    ok = not nan and (above is None or value > above) and (lo is None or value >= lo) \
        and (below is None or value < below) and (hi is None or value <= hi)
    if ok:
        return None
    parts = [f"{op} {_number(x)}" for op, x in ((">", above), (">=", lo), ("<", below),
                                                  ("<=", hi)) if x is not None]
    return "must be " + " and ".join(parts)


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _choice(meta: Mapping[str, Any], value: Any) -> str | None:
    choices = meta.get("choices")
    if choices is None or value in choices:
        return None
    return f"{value!r} is not one of {', '.join(str(c) for c in choices)}"


def _length(meta: Mapping[str, Any], value: Any) -> str | None:
    lo, hi = meta.get("min_len"), meta.get("max_len")
    if (lo is None and hi is None) or not isinstance(value, (str, list, dict)):
        return None
    unit = "characters" if isinstance(value, str) else "items"
    if lo is not None and len(value) < lo:
        return "must not be empty" if lo == 1 else f"needs at least {lo} {unit}"
    if hi is not None and len(value) > hi:
        return f"at most {hi} {unit}, got {len(value)}"
    return None


def _pattern(meta: Mapping[str, Any], value: Any) -> str | None:
    pattern = meta.get("pattern")
    if pattern is None or not isinstance(value, str) or re.fullmatch(pattern, value):
        return None
    help_ = meta.get("pattern_help")
    return f"expected {help_}, got {value!r}" if help_ else f"{value!r} does not match {pattern}"
