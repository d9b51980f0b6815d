"""Field constraints declared in ``metadata`` and checked by
``agent.settings_loader.build`` with the same ``FILE: key.path: problem`` lines as the type
checks."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from agent.settings_loader import Problems, build


@dataclass
class Inner:
    level: int = field(default=1, metadata={"range": (1, 5)})


@dataclass
class Model:
    name: str = field(metadata={"pattern": r"[A-Z]{3}", "pattern_help": "three capitals"})
    ratio: float = field(default=0.5, metadata={"above": 0, "range": (None, 1)})
    mode: str = field(default="", metadata={"choices": ("fast", "slow")})
    tags: list[str] = field(default_factory=lambda: ["xx"], metadata={
        "min_len": 1, "each": {"min_len": 2}})
    dids: dict[str, str] = field(default_factory=dict, metadata={
        "keys": {"pattern": "[0-9A-F]{4}"}, "each": {"max_len": 3}})
    budget: float = field(default=1.0, metadata={"above": 0, "why": "it divides"})
    odd: int = field(default=1, metadata={"check": lambda v: None if v % 2 else "must be odd"})
    count: int = field(default=0, metadata={"range": (0, None), "message": "{value!r} < 0"})
    inner: Inner = field(default_factory=Inner)


def problems_of(table: dict) -> list[str]:
    problems = Problems()
    build(Model, table, Path("x.toml"), problems)
    return problems.lines()


def test_a_valid_table_has_no_problems() -> None:
    assert problems_of({"name": "ABC", "ratio": 1.0, "mode": "slow", "tags": ["ab"],
                        "dids": {"F189": "1.0"}, "odd": 3, "inner": {"level": 5}}) == []


@pytest.mark.parametrize("table, line", [
    ({"name": "abc"}, "x.toml: name: expected three capitals, got 'abc'"),
    ({"name": "ABC", "ratio": 0}, "x.toml: ratio: must be > 0 and <= 1"),
    ({"name": "ABC", "ratio": 1.5}, "x.toml: ratio: must be > 0 and <= 1"),
    ({"name": "ABC", "ratio": math.nan}, "x.toml: ratio: must be > 0 and <= 1"),
    ({"name": "ABC", "mode": "warp"}, "x.toml: mode: 'warp' is not one of fast, slow"),
    ({"name": "ABC", "tags": []}, "x.toml: tags: must not be empty"),
    ({"name": "ABC", "tags": ["ab", "c"]}, "x.toml: tags[1]: needs at least 2 characters"),
    ({"name": "ABC", "dids": {"f189": "1"}}, "x.toml: dids.f189: 'f189' does not match "
                                             "[0-9A-F]{4}"),
    ({"name": "ABC", "dids": {"F189": "1.0.0"}}, "x.toml: dids.F189: at most 3 characters, "
                                                 "got 5"),
    ({"name": "ABC", "budget": -1}, "x.toml: budget: must be > 0 (it divides)"),
    ({"name": "ABC", "odd": 2}, "x.toml: odd: must be odd"),
    ({"name": "ABC", "count": -3}, "x.toml: count: -3 < 0"),
    ({"name": "ABC", "inner": {"level": 0}}, "x.toml: inner.level: must be >= 1 and <= 5"),
])
def test_each_constraint_names_the_key(table: dict, line: str) -> None:
    assert problems_of(table) == [line]


def test_type_problems_come_first_and_alone() -> None:
    """A wrong type is one problem, not also a range problem."""
    assert problems_of({"name": "ABC", "ratio": "high"}) == [
        "x.toml: ratio: expected a number, got str 'high'"]


def test_every_problem_at_once_and_defaults_are_not_checked() -> None:
    lines = problems_of({"name": "ab", "ratio": 2, "mode": "", "count": -1})
    assert [x.split(": ")[1] for x in lines] == ["name", "ratio", "count"]   # mode "" = unset
