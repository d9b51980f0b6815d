"""systemd notify protocol (sd_notify) over the ``NOTIFY_SOCKET`` datagram socket.

A few lines instead of a dependency: one datagram per message, abstract sockets
(leading ``@``) included; without ``NOTIFY_SOCKET`` (not under systemd) it does nothing.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self, address: str | None = None):
        address = address if address is not None else os.environ.get("NOTIFY_SOCKET", "")
        self.address = "\0" + address[1:] if address.startswith("@") else address
        self.sock: socket.socket | None = None
        if self.address:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.failures = 0

    @property
    def enabled(self) -> bool:
        return self.sock is not None

    def send(self, **fields: str | int) -> bool:
        if self.sock is None:
            return False
        text = "\n".join(f"{k.upper()}={v}" for k, v in fields.items())
        try:
            self.sock.sendto(text.encode("utf-8"), self.address)
            return True
        except OSError as exc:
            self.failures += 1
            if self.failures == 1:
                log.warning("sd_notify to %s failed: %s", self.address, exc)
            return False

    def ready(self, status: str) -> None:
        self.send(ready=1, status=status)

    def status(self, status: str) -> None:
        self.send(status=status)

    def watchdog(self) -> None:
        self.send(watchdog=1)

    def stopping(self, status: str = "stopping") -> None:
        self.send(stopping=1, status=status)

    def watchdog_interval(self) -> float | None:
        """Half of WatchdogSec (systemd passes WATCHDOG_USEC), or None when not watched."""
        usec = os.environ.get("WATCHDOG_USEC")
        pid = os.environ.get("WATCHDOG_PID")
        if not usec or (pid and pid != str(os.getpid())):
            return None
        try:
            return int(usec) / 1e6 / 2
        except ValueError:
            return None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
