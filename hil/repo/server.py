"""Threaded HTTP server for the bench repositories, with Range support and fault switches.

Faults imitate the network attacker of the Uptane threat model: a trickle below any sane
speed (slow retrieval), a body that never ends (endless data), a connection dropped after
N bytes (resume), and per-path substitutes (mix-and-match, tampered files).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

log = logging.getLogger(__name__)

_RANGE = re.compile(r"bytes=(\d+)-(\d*)")


@dataclass
class Faults:
    only: str = ""                    # apply the faults below only to paths containing this
    slow_bytes_per_s: float = 0.0     # > 0: trickle bodies at this rate
    endless: bool = False             # no Content-Length, file then zeros until hang-up
    drop_after: int | None = None     # close the connection after N body bytes ...
    drop_times: int = 1               # ... on this many requests
    ignore_range: bool = False        # answer Range requests with the whole file (200)
    status: int = 0                   # answer every request with this HTTP status
    overrides: dict[str, bytes] = field(default_factory=dict)   # URL path -> body
    missing: set[str] = field(default_factory=set)              # URL paths answered 404


@dataclass(frozen=True)
class Request:
    path: str
    range: str | None
    status: int


class _Handler(BaseHTTPRequestHandler):
    server: RepoServer

    def log_message(self, fmt: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def do_GET(self) -> None:  # noqa: N802 - http.server API
        srv = self.server
        path = unquote(urlsplit(self.path).path)
        rng = self.headers.get("Range")
        faults = srv.faults
        hit = faults.only in path
        data = faults.overrides.get(path)
        if data is None and path not in faults.missing:
            data = srv.read(path)
        if data is None or (hit and faults.status):
            code = faults.status if data is not None else 404
            srv.record(path, rng, code)
            self.send_error(code)
            return
        start, end, status = 0, len(data) - 1, 200
        match = None if hit and faults.ignore_range else _RANGE.fullmatch(rng or "")
        if match:
            start = int(match.group(1))
            end = min(int(match.group(2)), end) if match.group(2) else end
            if start >= len(data) or start > end:
                srv.record(path, rng, 416)
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = 206
        body = data[start:end + 1]
        srv.record(path, rng, status)
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Type", "application/octet-stream")
        if not (hit and faults.endless):
            self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            if hit and faults.endless:
                self._endless(body)
            elif hit and faults.drop_after is not None and srv.take_drop():
                self.wfile.write(body[:faults.drop_after])
                self.wfile.flush()
            elif hit and faults.slow_bytes_per_s > 0:
                self._trickle(body, faults.slow_bytes_per_s)
            else:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True

    def _endless(self, body: bytes) -> None:
        self.wfile.write(body)
        zeros = bytes(64 * 1024)
        for _ in range(64 * 1024):            # 4 GiB at most, then give up
            if self.server.stopping.is_set():
                return
            self.wfile.write(zeros)

    def _trickle(self, body: bytes, rate: float) -> None:
        tick = 0.05
        piece = max(1, int(rate * tick))
        for i in range(0, len(body), piece):
            if self.server.stopping.wait(tick):
                return
            self.wfile.write(body[i:i + piece])
            self.wfile.flush()


class RepoServer(ThreadingHTTPServer):
    """Serves ``root`` on ``host:port`` (0 = a free port) in a background thread."""

    daemon_threads = True

    def __init__(self, root: Path | str, host: str = "127.0.0.1", port: int = 0):
        super().__init__((host, port), _Handler)
        self.root = Path(root).resolve()
        self.faults = Faults()
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._drops = 0
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def read(self, path: str) -> bytes | None:
        target = (self.root / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target.read_bytes()

    def record(self, path: str, rng: str | None, status: int) -> None:
        with self._lock:
            self.requests.append(Request(path, rng, status))

    def take_drop(self) -> bool:
        with self._lock:
            if self._drops >= self.faults.drop_times:
                return False
            self._drops += 1
            return True

    def set_faults(self, faults: Faults | None = None) -> None:
        with self._lock:
            self.faults = faults or Faults()
            self._drops = 0

    def start(self) -> RepoServer:
        self._thread = threading.Thread(target=self.serve_forever, args=(0.05,), name="repo-server",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.shutdown()
        self.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> RepoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
