"""Agent configs for bench runs, derived from ``config/bench.toml`` in one place.

The demo, the tests and the benchmarks all need "the bench config, but on this bus, with
this state dir and this broker": this writes it, with absolute DBC paths, so the file can
live anywhere.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"


def uplink_section(host: str, port: int, cert: Any, *, backend_key: Path | None = None,
                   backoff_min_s: float = 0.1, backoff_max_s: float = 0.5) -> str:
    """``[uplink]`` for a broker with mutual TLS (``cert``: .ca, .cert, .key paths) and,
    with ``backend_key``, the pinned key of ``[commands]``."""
    text = f"""
[uplink]
enabled = true
host = "{host}"
port = {port}
ca = "{cert.ca}"
cert = "{cert.cert}"
key = "{cert.key}"
backoff_min_s = {backoff_min_s}
backoff_max_s = {backoff_max_s}
"""
    if backend_key is not None:
        text += f'\n[commands]\nbackend_keys = ["{backend_key}"]\n'
    return text


def bench_config(path: Path, *, interface: str = "virtual", channel: str = "icv-bench",
                 bus_lines: str = "", state_dir: Path | None = None, extra: str = "") -> Path:
    """Write the bench config to ``path`` with the bus, state dir and extra sections given.

    ``bus_lines`` are added to the ``[[bus]]`` table (e.g. ``options = { port = 43114 }``);
    ``extra`` is appended (whole sections such as ``uplink_section(...)``).
    """
    text = BENCH.read_text()
    text = text.replace('interface = "virtual"', f'interface = "{interface}"', 1)
    bus = f'channel = "{channel}"' + (f"\n{bus_lines}" if bus_lines else "")
    text = text.replace('channel = "icv-bench"', bus, 1)
    text = text.replace('"../dbc/', f'"{ROOT}/dbc/')
    state = state_dir if state_dir is not None else path.parent / "state"
    text = text.replace('dir = "../.state/bench"', f'dir = "{state}"')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n" + extra)
    return path


def ecu_entries(*names: str, bus: str = "chassis") -> str:
    """``[[ecu]]`` tables for the agent, taken from the virtual ECUs' own files in
    ``config/ecu/`` (their ``[ecu]`` table is the agent's entry, by design), all on ``bus``."""
    out = []
    for name in names:
        text = (ROOT / "config" / "ecu" / f"{name}.toml").read_text()
        start = text.index("\n[ecu]\n") + 1
        end = text.index("\n[identity]\n")
        table = re.sub(r'(?m)^bus = "[^"]*"', f'bus = "{bus}"', text[start + len("[ecu]"):end])
        out.append("[[ecu]]" + table.rstrip() + "\n")
    return "\n" + "\n".join(out)
