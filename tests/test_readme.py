"""README: every command of its table exists with the options it shows, every file it
links to is there, and ``--version`` says the package version."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from agent.settings_loader import tomllib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
PROGRAMS = {"icv-agent": "agent.cli", "icv-hil": "hil.cli"}


def table_commands() -> list[tuple[str, list[str], list[str]]]:
    """(program, subcommand words, --options) of each row of the Commands table."""
    section = README.split("## Commands", 1)[1].split("\n## ", 1)[0]
    rows = []
    for cell in re.findall(r"^\| `([^`]+)`", section, re.M):
        words = cell.split()
        program, rest = words[0], words[1:]
        sub = []
        for w in rest:
            if w.startswith("-") or not re.fullmatch(r"[a-z][a-z-]*", w):
                break
            sub.append(w)
        options = [o.split("=")[0].strip("[]|\\") for o in re.findall(r"--[a-z-]+", cell)]
        rows.append((program, sub, options))
    return rows


def help_text(program: str, sub: list[str]) -> str:
    done = subprocess.run([sys.executable, "-m", PROGRAMS[program], *sub, "--help"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{program} {' '.join(sub)}: {done.stderr}"
    return done.stdout


def test_the_table_has_the_commands_it_should() -> None:
    names = {f"{p} {' '.join(s)}".strip() for p, s, _ in table_commands()}
    for wanted in ("icv-agent keys public", "icv-agent ota status", "icv-agent ota consent",
                   "icv-agent ota history", "icv-agent ecu versions", "icv-hil ecu-sim",
                   "icv-agent verify"):
        assert wanted in names, wanted


@pytest.mark.parametrize("program, sub, options", table_commands(),
                         ids=lambda v: " ".join(v) if isinstance(v, list) else str(v))
def test_each_command_of_the_table_exists(program: str, sub: list[str],
                                          options: list[str]) -> None:
    if sub and sub[-1] == "...":
        sub = sub[:-1]
    text = help_text(program, sub)
    for option in options:
        assert option in text, \
            f"{program} {' '.join(sub)} has no {option}"


def test_version_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for program, module in PROGRAMS.items():
        done = subprocess.run([sys.executable, "-m", module, "--version"], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.stdout.strip() == f"{program} {version}", done.stdout + done.stderr


def test_linked_files_exist() -> None:
    missing = [target for target in re.findall(r"\]\(([^)#]+)\)", README)
               if not target.startswith("http") and not (ROOT / target).exists()]
    assert not missing, missing
