"""HTTP(S) transport for metadata and images, hardened against the network attacker.

Every transfer has a byte cap (endless data), a minimum speed over a sliding window plus
a socket read timeout of one window (slow retrieval), a total time budget (``allowance_s
+ length / min_average_bytes_s``, over all its attempts and pauses: a server that stays
just above the speed floor, or keeps restarting, cannot stretch one image over days) and
a bounded number of retries with exponential backoff, so a call ends with bytes, a
verified file or a typed ``UpdateRejected`` -- never a hang. Images stream into
``<name>.part`` with SHA-256/512 computed on the way; after an interruption the next
attempt asks for the rest with an HTTP Range request and the whole file is verified again
from disk at the end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import urllib3
from tuf.api import exceptions as tuf_exc
from tuf.api.metadata import TargetFile
from tuf.ngclient.fetcher import FetcherInterface

from agent.ota.uptane.errors import (
    ArbitrarySoftware,
    DownloadFailed,
    EndlessData,
    SlowRetrieval,
    UpdateRejected,
)
from agent.ota.uptane.settings import UptaneConfig
from agent.security import EndpointRefused, endpoint_of_url, installed

log = logging.getLogger(__name__)

HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


@dataclass
class TransferLimits:
    min_speed_bytes_s: float = 1024.0
    speed_window_s: float = 30.0
    connect_timeout_s: float = 10.0
    retries: int = 4
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    chunk_bytes: int = 64 * 1024
    min_average_bytes_s: float = 16 * 1024.0
    allowance_s: float = 120.0

    @classmethod
    def from_config(cls, cfg: UptaneConfig) -> TransferLimits:
        return cls(cfg.min_speed_bytes_s, cfg.speed_window_s, cfg.connect_timeout_s,
                   cfg.retries, cfg.backoff_s, cfg.backoff_max_s, cfg.chunk_bytes,
                   min_average_bytes_s=cfg.min_average_bytes_s,
                   allowance_s=cfg.transfer_allowance_s)

    def budget_s(self, length: int) -> float:
        """Seconds one transfer of ``length`` bytes may take in all, attempts included."""
        return self.allowance_s + length / self.min_average_bytes_s


class EndpointNotAllowed(DownloadFailed):
    """The URL's host:port is outside ``[security] allowed_endpoints`` (never fetched)."""


class NotFound(Exception):
    """HTTP 404/410: the file does not exist (for root N+1 this ends the rotation walk)."""


class SpeedFloor:
    """Raise ``SlowRetrieval`` once a full window holds fewer bytes than the floor allows."""

    def __init__(self, min_bytes_s: float, window_s: float,
                 clock: Callable[[], float] = time.monotonic):
        self.need = min_bytes_s * window_s
        self.window = window_s
        self.clock = clock
        self.start = clock()
        self.total = 0
        self.samples: deque[tuple[float, int]] = deque([(self.start, 0)])

    def add(self, n: int, what: str) -> None:
        now = self.clock()
        self.total += n
        self.samples.append((now, self.total))
        edge = now - self.window
        while len(self.samples) > 1 and self.samples[1][0] <= edge:
            self.samples.popleft()
        if now - self.start < self.window or self.need <= 0:
            return
        got = self.total - self.samples[0][1]
        if got < self.need:
            raise SlowRetrieval(f"{what}: {got} bytes in the last {self.window:g} s, "
                                f"floor is {self.need:.0f}")


class HttpFetcher(FetcherInterface):
    """urllib3 transport; also usable as a python-tuf ``FetcherInterface``."""

    def __init__(self, limits: TransferLimits | None = None, *, ca_file: str | None = None,
                 client_cert: str | None = None, client_key: str | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.limits = limits or TransferLimits()
        kw: dict[str, object] = {}
        if ca_file:
            kw["ca_certs"] = ca_file
        if client_cert:
            kw["cert_file"] = client_cert
            kw["key_file"] = client_key
        self.pool = urllib3.PoolManager(
            num_pools=4, headers={"Accept-Encoding": "identity",
                                  "User-Agent": "icv-edge-agent-uptane"}, **kw)
        self.sleep = sleep
        self.clock = clock

    @classmethod
    def from_config(cls, cfg: UptaneConfig, config_dir: Path) -> HttpFetcher:
        def opt(v: str) -> str | None:
            return str(cfg.resolve(v, config_dir)) if v else None
        return cls(TransferLimits.from_config(cfg), ca_file=opt(cfg.ca_file),
                   client_cert=opt(cfg.client_cert), client_key=opt(cfg.client_key))

    # -- python-tuf interface ------------------------------------------------------
    def _fetch(self, url: str) -> Iterator[bytes]:
        try:
            resp = self._open(url, {})
        except NotFound as exc:
            raise tuf_exc.DownloadHTTPError(str(exc), 404) from exc
        return self._chunks(resp, url)

    # -- metadata -------------------------------------------------------------------
    def fetch_metadata(self, url: str, max_length: int) -> bytes:
        """Whole file up to ``max_length`` bytes; ``NotFound`` on 404, else typed errors."""
        def attempt(deadline: float) -> bytes:
            resp = self._open(url, {}, deadline)
            declared = resp.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > max_length:
                resp.release_conn()
                raise EndlessData(f"{url}: server announces {declared} bytes, "
                                  f"cap is {max_length}")
            parts: list[bytes] = []
            got = 0
            for chunk in self._chunks(resp, url, deadline):
                got += len(chunk)
                if got > max_length:
                    raise EndlessData(f"{url}: more than {max_length} bytes")
                parts.append(chunk)
            return b"".join(parts)
        return cast(bytes, self._with_retries(url, attempt, self.limits.budget_s(max_length)))

    # -- images ---------------------------------------------------------------------
    def download_image(self, url: str, dest: Path, length: int,
                       hashes: dict[str, str]) -> Path:
        """Stream ``url`` to ``dest`` and verify length and every listed hash.

        A ``dest.part`` left by an interrupted attempt (or an earlier run) is resumed with
        a Range request. Returns ``dest``; on rejection nothing is left at ``dest``.
        """
        unknown = sorted(set(hashes) - set(HASHES))
        if unknown or not hashes:
            raise ArbitrarySoftware(f"{dest.name}: cannot verify hash algorithm(s) "
                                    f"{unknown or 'none listed'}")
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        state = {"resumed": False}

        def attempt(deadline: float) -> None:
            self._image_attempt(url, part, length, hashes, state, deadline)

        try:
            self._with_retries(url, attempt, self.limits.budget_s(length))
            self._verify_file(part, length, hashes, dest.name, state["resumed"])
        except (EndlessData, ArbitrarySoftware):
            part.unlink(missing_ok=True)
            raise
        os.replace(part, dest)
        return dest

    def _image_attempt(self, url: str, part: Path, length: int, hashes: dict[str, str],
                       state: dict[str, bool], deadline: float | None = None) -> None:
        offset = part.stat().st_size if part.exists() else 0
        if offset > length:
            part.unlink()
            offset = 0
        if offset == length:
            state["resumed"] = True   # verified from disk below
            return
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        try:
            resp = self._open(url, headers, deadline)
        except NotFound as exc:
            raise DownloadFailed(str(exc)) from exc
        if resp.status == 206 and offset:
            match = _CONTENT_RANGE.fullmatch(resp.headers.get("Content-Range", ""))
            if not match or int(match.group(1)) != offset:
                resp.release_conn()
                part.unlink()
                raise DownloadFailed(f"{url}: bad Content-Range "
                                     f"{resp.headers.get('Content-Range')!r}; restarting")
            state["resumed"] = True
            mode = "ab"
            log.info("resuming %s at byte %d of %d", url, offset, length)
        elif resp.status == 200:
            offset = 0
            mode = "wb"
            state["resumed"] = False
        else:
            resp.release_conn()
            raise DownloadFailed(f"{url}: unexpected HTTP status {resp.status}")
        declared = resp.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and offset + int(declared) > length:
            resp.release_conn()
            raise EndlessData(f"{url}: server announces {offset + int(declared)} bytes, "
                              f"signed length is {length}")
        hashers = None if state["resumed"] else {a: HASHES[a]() for a in hashes}
        got = offset
        with open(part, mode) as fh:
            try:
                for chunk in self._chunks(resp, url, deadline):
                    got += len(chunk)
                    if got > length:
                        raise EndlessData(f"{url}: more than the signed {length} bytes")
                    fh.write(chunk)
                    if hashers:
                        for h in hashers.values():
                            h.update(chunk)
            finally:
                fh.flush()
                os.fsync(fh.fileno())
        if got < length:
            raise DownloadFailed(f"{url}: connection ended at {got} of {length} bytes")
        if hashers:
            for algo, h in hashers.items():
                if h.hexdigest() != hashes[algo]:
                    raise ArbitrarySoftware(f"{part.name[:-5]}: {algo} of the download does "
                                            f"not match the signed target")

    def _verify_file(self, part: Path, length: int, hashes: dict[str, str], name: str,
                     resumed: bool) -> None:
        if not resumed:
            return          # hashed while streaming in one piece
        info = TargetFile(length, hashes, name)
        with open(part, "rb") as fh:
            try:
                info.verify_length_and_hashes(fh)
            except tuf_exc.LengthOrHashMismatchError as exc:
                raise ArbitrarySoftware(f"{name}: {exc}") from exc

    # -- plumbing ---------------------------------------------------------------------
    def _open(self, url: str, headers: dict[str, str], deadline: float | None = None
              ) -> urllib3.BaseHTTPResponse:
        lim = self.limits
        connect, read = lim.connect_timeout_s, lim.speed_window_s
        if deadline is not None:
            left = self._left(url, deadline)
            connect, read = min(connect, left), min(read, left)
        timeout = urllib3.Timeout(connect=connect, read=read)
        policy, security = installed()          # GB 44495: allowed endpoints only
        if policy is not None:
            try:
                policy.check_url(url, "ota")
            except EndpointRefused as exc:
                raise EndpointNotAllowed(str(exc)) from None
        try:
            resp = self.pool.request("GET", url, headers=headers, preload_content=False,
                                     timeout=timeout, retries=False, redirect=False)
        except urllib3.exceptions.SSLError as exc:
            if security is not None:
                security.report("certificate_failure", {"endpoint": endpoint_of_url(url),
                                                        "what": "ota", "error": str(exc)[:300]})
            raise DownloadFailed(f"{url}: {exc}") from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise SlowRetrieval(f"{url}: no response within {lim.speed_window_s:g} s") \
                from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise DownloadFailed(f"{url}: {exc}") from exc
        if resp.status in (404, 410):
            resp.release_conn()
            raise NotFound(f"{url}: HTTP {resp.status}")
        if resp.status >= 300:
            resp.release_conn()
            raise DownloadFailed(f"{url}: HTTP {resp.status}")
        return resp

    def _chunks(self, resp: urllib3.BaseHTTPResponse, url: str,
                deadline: float | None = None) -> Iterator[bytes]:
        floor = SpeedFloor(self.limits.min_speed_bytes_s, self.limits.speed_window_s,
                           self.clock)
        try:
            while True:
                # read1: return what has arrived instead of waiting for a full chunk, so a
                # trickling server is measured, not waited for.
                chunk = resp.read1(self.limits.chunk_bytes, decode_content=False)
                if not chunk:
                    return
                floor.add(len(chunk), url)
                if deadline is not None:
                    self._left(url, deadline)
                yield chunk
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise SlowRetrieval(f"{url}: nothing received for "
                                f"{self.limits.speed_window_s:g} s") from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise DownloadFailed(f"{url}: transfer broken: {exc}") from exc
        finally:
            resp.release_conn()

    def _left(self, url: str, deadline: float) -> float:
        """Seconds left of the transfer's total budget; ``SlowRetrieval`` when none."""
        left = deadline - self.clock()
        if left <= 0:
            raise SlowRetrieval(f"{url}: not done within its total time budget")
        return left

    def _with_retries(self, url: str, attempt: Callable[[float], object],
                      budget_s: float) -> object:
        """``attempt(deadline)`` until it succeeds, at most ``retries`` more times, all of
        it (pauses included) within ``budget_s`` seconds."""
        lim = self.limits
        deadline = self.clock() + budget_s
        last: UpdateRejected | None = None
        for n in range(lim.retries + 1):
            if n:
                pause = min(lim.backoff_max_s, lim.backoff_s * 2 ** (n - 1))
                if self.clock() + pause >= deadline:
                    raise SlowRetrieval(f"{url}: not done within its total time budget of "
                                        f"{budget_s:.1f} s after {n} attempt(s); last: "
                                        f"{last}") from last
                log.info("retry %d/%d of %s in %.2f s: %s", n, lim.retries, url, pause, last)
                self.sleep(pause)
            try:
                return attempt(deadline)
            except EndpointNotAllowed:
                raise                           # asking again changes nothing
            except (SlowRetrieval, DownloadFailed) as exc:
                last = exc
                if self.clock() >= deadline:
                    raise SlowRetrieval(f"{url}: not done within its total time budget of "
                                        f"{budget_s:.1f} s after {n + 1} attempt(s); last: "
                                        f"{exc}") from exc
        assert last is not None
        raise last
