"""Memory: peak RSS of ``icv-agent run`` during a drive, next to what any program pays that
merely imports python-can and cantools (the floor of a Python CAN tool), same run; and
where the megabytes come from, for the owner of agent/ to cut.

    python3 bench/bench_rss.py [--speed 3] [--no-imports]

The import report runs the agent twice more on the same drive:

1. ``icv-agent run`` under a profile hook that notes every source file one of whose
   functions runs outside an import (module bodies and what they call while importing do
   not count), from the first line to the stop, and which modules are loaded at the stop;
2. ``python -X importtime`` of the same command: who imported whom;
3. a fresh interpreter that imports those modules in the agent's own order with
   importlib's loader wrapped: each module is charged the RSS (and, in a second pass,
   tracemalloc's Python-object bytes) its own import added, nested imports excluded.

A package none of whose functions ran while the agent did its work is loaded for nothing
(its import side effects aside): those rows are the suggestions.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hil.benchconfig import bench_config  # noqa: E402

GROUP_DEPTH = {"agent": 2, "can": 2, "cantools": 3, "cryptography": 3, "email": 1,
               "encodings": 1}
_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)$")


def peak_rss(proc: subprocess.Popen, stop: threading.Event, out: list[float]) -> None:
    p = psutil.Process(proc.pid)
    peak = 0
    while not stop.is_set() and proc.poll() is None:
        try:
            peak = max(peak, p.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.05)
    out.append(peak / 2**20)


def floor_rss() -> float:
    code = ("import can, cantools, psutil, sys; "
            "print(psutil.Process().memory_info().rss / 2**20)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True).stdout)


class Drive:
    """The agent config on a UDP multicast bus (crosses processes) and the drive trace."""

    def __init__(self, tmp: Path, speed: float):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.group = "239.74.163.201"
        self.speed = speed
        self.cfg = bench_config(tmp / "agent.toml", interface="udp_multicast",
                                channel=self.group,
                                bus_lines=f"options = {{ port = {self.port} }}\n"
                                          "min_timeout_s = 0.25")
        self.trace = tmp / "drive.log"
        subprocess.run([sys.executable, "-m", "hil.cli", "scenario",
                        str(ROOT / "hil" / "scenarios" / "drive.toml"), "-c", str(self.cfg),
                        "-o", str(self.trace)], check=True, capture_output=True, cwd=ROOT)

    def replay(self) -> None:
        subprocess.run([sys.executable, "-m", "hil.cli", "replay", str(self.trace), "-i",
                        "udp_multicast", "-C", self.group, "-O", f"port={self.port}",
                        "--speed", str(self.speed), "-q"], check=True, capture_output=True,
                       cwd=ROOT)

    def run_agent(self, argv: list[str], *, watch: list[float] | None = None,
                  stderr: Any = subprocess.DEVNULL) -> subprocess.Popen:
        """Start ``argv``, wait 3 s, replay the drive, stop it with SIGTERM."""
        agent = subprocess.Popen(argv, cwd=ROOT, stderr=stderr)
        stop = threading.Event()
        watcher = None
        if watch is not None:
            watcher = threading.Thread(target=peak_rss, args=(agent, stop, watch))
            watcher.start()
        time.sleep(3)
        self.replay()
        time.sleep(1)
        stop.set()
        if watcher is not None:
            watcher.join()
        agent.send_signal(signal.SIGTERM)
        agent.wait(120)
        return agent


# -- roles run in child processes -------------------------------------------------------
def role_used(cfg: Path, out: Path) -> int:
    """``icv-agent run`` with a profile hook: the modules whose code ran outside imports:
    Python functions by their file, C/Rust functions and methods by their module (much of
    ``cryptography`` is Rust called straight from agent code)."""
    used_files: set[str] = set()
    used_modules: set[str] = set()
    depth = [0]
    boot = "<frozen importlib._bootstrap>"

    def hook(frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            code = frame.f_code
            if code.co_name == "_find_and_load" and code.co_filename == boot:
                depth[0] += 1
            elif not depth[0]:
                used_files.add(code.co_filename)
        elif event == "return":
            code = frame.f_code
            if code.co_name == "_find_and_load" and code.co_filename == boot:
                depth[0] -= 1
        elif event == "c_call" and not depth[0]:
            mod = getattr(arg, "__module__", None)
            if mod is None:
                owner = getattr(arg, "__self__", None)
                if owner is not None:
                    mod = getattr(owner, "__name__", None) if isinstance(owner, type(sys)) \
                        else type(owner).__module__
            if mod:
                used_modules.add(mod)

    sys.setprofile(hook)
    threading.setprofile(hook)
    from agent.cli import main

    rc = main(["run", "-c", str(cfg)])
    sys.setprofile(None)
    files = {name: getattr(mod, "__file__", None) for name, mod in list(sys.modules.items())}
    used = {name for name, file in files.items() if file and file in used_files}
    out.write_text(json.dumps({"loaded": list(files), "used": sorted(used | used_modules)}))
    return rc


def role_attribute(modules: Path, out: Path, python_objects: bool) -> int:
    """Import the agent's modules (its own order) with importlib's ``_find_and_load``
    wrapped, like ``-X importtime`` but counting memory: each module is charged what its
    import added minus what its nested imports added. RSS, or with ``python_objects``
    tracemalloc's Python-heap figure (a separate pass: tracing inflates RSS)."""
    import importlib._bootstrap as bootstrap

    names = [n for n in json.loads(modules.read_text()) if n != "__main__"]
    proc = psutil.Process()
    if python_objects:
        import tracemalloc

        tracemalloc.start()

        def now() -> int:
            return tracemalloc.get_traced_memory()[0]
    else:
        def now() -> int:
            return proc.memory_info().rss
    own: dict[str, int] = {}
    nested: list[int] = []
    original = bootstrap._find_and_load

    def find_and_load(name: str, import_: Any) -> Any:
        before = now()
        nested.append(0)
        try:
            return original(name, import_)
        finally:
            inner = nested.pop()
            total = now() - before
            own[name] = own.get(name, 0) + total - inner
            if nested:
                nested[-1] += total

    start = proc.memory_info().rss
    bootstrap._find_and_load = find_and_load  # type: ignore[assignment]
    for name in names:
        if name in sys.modules:
            continue
        try:
            importlib.import_module(name)
        except Exception:
            continue
    bootstrap._find_and_load = original  # type: ignore[assignment]
    out.write_text(json.dumps({"start_rss": start, "end_rss": proc.memory_info().rss,
                               "rows": own}))
    return 0


# -- analysis ----------------------------------------------------------------------------
def group_of(name: str) -> str:
    parts = name.split(".")
    top = parts[0]
    if top.startswith("_") and top not in ("__future__",):
        stripped = top.lstrip("_")
        top = {"cffi_backend": "cffi", "sqlite3": "sqlite3", "ssl": "ssl",
               "hashlib": "hashlib", "asyncio": "asyncio"}.get(stripped, top)
        return top
    return ".".join(parts[: GROUP_DEPTH.get(top, 1)])


def importtime_tree(stderr: str) -> tuple[list[str], dict[str, str]]:
    """From ``-X importtime`` (post-order: a module after everything it imported, deeper =
    indented more): the modules in that order, and module -> the module that imported it."""
    lines = [m.groups() for m in map(_IMPORTTIME.match, stderr.splitlines()) if m]
    parent: dict[str, str] = {}
    stack: list[tuple[int, str]] = []   # finished modules still waiting for their importer
    order = []
    for _self_us, _cum, indent, name in lines:
        depth = len(indent) // 2
        while stack and stack[-1][0] > depth:
            _, child = stack.pop()
            parent.setdefault(child, name)
        stack.append((depth, name))
        order.append(name)
    return order, parent


def pulled_in_by(group: str, members: list[str], parent: dict[str, str]) -> str:
    """Who brought ``group`` in: the module outside it that imported its first member, and
    the agent module at the start of that path."""
    for name in members:
        cur, outside, seen = name, None, set()
        while cur in parent and cur not in seen:
            seen.add(cur)
            cur = parent[cur]
            if outside is None and group_of(cur) != group:
                outside = cur
            if cur.startswith("agent.") and group_of(cur) != group:
                return cur if outside in (None, cur) else f"{outside} ← … {cur}"
        if outside is not None:
            return outside
    return "—"


def import_report(drive: Drive, tmp: Path) -> list[dict[str, Any]]:
    used_json = tmp / "used.json"
    drive.run_agent([sys.executable, __file__, "--role", "used", "--config", str(drive.cfg),
                     "--out", str(used_json)])
    used = json.loads(used_json.read_text())
    err = tmp / "importtime.txt"
    with open(err, "w") as fh:
        drive.run_agent([sys.executable, "-X", "importtime", "-m", "agent.cli", "run", "-c",
                         str(drive.cfg)], stderr=fh)
    order, parent = importtime_tree(err.read_text())
    order_json = tmp / "order.json"
    # The agent's own order, less what the profiling wrapper (this script) imported itself.
    in_agent = set(order)
    names = [n for n in used["loaded"] if n in in_agent]
    names += [n for n in order if n not in set(names)]
    order_json.write_text(json.dumps(names))
    attr = {}
    for kind in ("rss", "py"):
        path = tmp / f"attr-{kind}.json"
        subprocess.run([sys.executable, __file__, "--role", "attribute", "--modules",
                        str(order_json), "--out", str(path)]
                       + (["--python-objects"] if kind == "py" else []), check=True, cwd=ROOT)
        attr[kind] = json.loads(path.read_text())

    used_groups = {group_of(name) for name in used["used"]}
    groups: dict[str, dict[str, Any]] = {}
    for name in names:
        g = groups.setdefault(group_of(name), {"rss": 0, "py": 0, "members": []})
        g["members"].append(name)
        g["rss"] += attr["rss"]["rows"].get(name, 0)
        g["py"] += attr["py"]["rows"].get(name, 0)
    out = []
    for name, g in groups.items():
        out.append({"group": name, "mb": g["rss"] / 2**20, "py_mb": g["py"] / 2**20,
                    "modules": len(g["members"]), "used": name in used_groups,
                    "via": pulled_in_by(name, g["members"], parent)})
    out.sort(key=lambda r: r["mb"], reverse=True)
    rss = attr["rss"]
    print(f"\nimports of a running agent: {len(names)} modules; a fresh "
          f"interpreter importing them goes from "
          f"{rss['start_rss'] / 2**20:.1f} to {rss['end_rss'] / 2**20:.1f} MB RSS. Per "
          "package, what its own modules added (RSS; Python objects per tracemalloc, a "
          "separate pass):\n")
    print("| package | RSS MB | Python objects MB | modules | ran while the agent worked "
          "| imported by |")
    print("|---|---|---|---|---|---|")
    for r in out:
        if r["mb"] < 0.25:
            continue
        print(f"| `{r['group']}` | {r['mb']:.1f} | {r['py_mb']:.1f} | {r['modules']} | "
              f"{'yes' if r['used'] else '**no**'} | {r['via']} |")
    idle = [r for r in out if not r["used"]]
    print(f"\nloaded but never run while the agent worked: {sum(r['mb'] for r in idle):.1f} MB "
          f"RSS in {len(idle)} packages (rows under 0.25 MB not shown)")
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--speed", type=float, default=3.0)
    ap.add_argument("--no-imports", action="store_true", help="peak RSS only")
    ap.add_argument("--role", choices=("used", "attribute"), help=argparse.SUPPRESS)
    ap.add_argument("--config", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--modules", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--python-objects", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.role == "used":
        return role_used(args.config, args.out)
    if args.role == "attribute":
        return role_attribute(args.modules, args.out, args.python_objects)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        drive = Drive(tmp, args.speed)
        peak: list[float] = []
        drive.run_agent([sys.executable, "-m", "agent.cli", "run", "-c", str(drive.cfg)],
                        watch=peak)
        base = floor_rss()
        print(f"# memory — {platform.machine()}, Python {platform.python_version()}, "
              f"{time.strftime('%Y-%m-%d')}\n")
        print("| process | RSS MB |")
        print("|---|---|")
        print(f"| `python -c 'import can, cantools, psutil'` (floor) | {base:.1f} |")
        print(f"| `icv-agent run`, peak during the 45 s drive at x{args.speed:g} | "
              f"{peak[0]:.1f} |")
        if not args.no_imports:
            import_report(drive, tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
