"""docs/signals.md is generated from agent/signals.py and the monitors, and cannot drift."""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

from agent.signals import BOOL, CATALOGUE, DOC_PATH, ENUM, FLOAT, INT, markdown

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / DOC_PATH
REGENERATE = f"python -m agent.signals --markdown > {DOC_PATH}"


def test_the_committed_doc_is_what_the_catalogue_generates() -> None:
    assert DOC.exists(), f"{DOC_PATH} is missing; write it with: {REGENERATE}"
    committed = DOC.read_text(encoding="utf-8")
    generated = markdown()
    diff = "".join(difflib.unified_diff(committed.splitlines(True), generated.splitlines(True),
                                        DOC_PATH, "generated", n=1))
    assert committed == generated, f"{DOC_PATH} is out of date; run: {REGENERATE}\n{diff}"


def test_the_command_prints_the_doc() -> None:
    done = subprocess.run([sys.executable, "-m", "agent.signals", "--markdown"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == markdown()


def test_every_signal_and_every_state_has_a_meaning() -> None:
    problems = []
    for spec in CATALOGUE.values():
        if spec.kind not in (FLOAT, INT, BOOL, ENUM):
            problems.append(f"{spec.name}: kind {spec.kind!r}")
        if not spec.doc.strip():
            problems.append(f"{spec.name}: no doc")
        if spec.kind == ENUM:
            if not spec.values:
                problems.append(f"{spec.name}: an enum without values")
            if [v for v, _ in spec.meanings] != list(spec.values):
                problems.append(f"{spec.name}: meanings do not list exactly its values")
        for value, meaning in spec.meanings:
            if not meaning.strip():
                problems.append(f"{spec.name}: {value} has no meaning")
        if spec.kind == FLOAT and not spec.unit:
            problems.append(f"{spec.name}: a float without a unit")
    assert not problems, problems


def test_the_doc_names_every_signal_state_and_monitor() -> None:
    from agent.monitors import ALL

    text = markdown()
    for spec in CATALOGUE.values():
        assert f"### {spec.name}\n" in text, spec.name
        for value in spec.values:
            assert f"| `{value}` |" in text, (spec.name, value)
    for monitor in ALL:
        assert f"| `{monitor.name}` |" in text, monitor.name
        unknown = set(monitor.inputs) | set(monitor.watches)
        assert unknown <= set(CATALOGUE), f"{monitor.name}: {unknown - set(CATALOGUE)}"


def test_no_pointer_to_a_signals_md_that_is_not_there() -> None:
    """README, docs and configs name docs/signals.md by a path that exists."""
    bad = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
                 *sorted((ROOT / "config").glob("*.toml"))]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            rest = line
            while "signals.md" in rest:
                before, _, rest = rest.partition("signals.md")
                # a link or path relative to the file, or the repo path docs/signals.md
                if not (before.endswith("docs/") or (path.parent.name == "docs"
                                                     and not before.endswith("/"))):
                    bad.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not bad, "signals.md named where it is not:\n" + "\n".join(bad)


def test_every_event_type_of_the_schema_is_explained() -> None:
    import json

    schema = json.loads((ROOT / "agent" / "records" / "schema.json").read_text("utf-8"))
    text = markdown()
    for kind, spec in schema["$defs"]["data"].items():
        assert spec.get("description", "").strip(), f"schema.json: {kind} has no description"
        assert f"| `{kind}` | {spec['description']} |" in text, kind
