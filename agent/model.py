"""Typed TOML loading: dataclasses in, every problem out as ``key.path: problem``.

One small validator serves the agent config, the mapping files, scenarios and ECU configs,
so each of them reports unknown keys, wrong types and missing keys the same way.
"""

from __future__ import annotations

import dataclasses
import sys
import types
import typing
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

    Fields with defaults are optional; ``metadata={"key": "toml-name"}`` renames a field.
    On problems the returned object still exists (with defaults) so checks can go on.
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
            kwargs[field.name] = _convert(hints[field.name], table[key], file, problems, fpath)
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
