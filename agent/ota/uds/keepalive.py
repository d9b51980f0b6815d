"""TesterPresent (0x3E, no answer wanted) while a non-default session sits idle.

The ECU drops back to the default session (and locks security) after S3 (~5 s) without a
request. Long pauses on our side (a slow precondition check, a retry pause, reading the
image) must not cost the programming session, so a keeper thread sends 3E 80 whenever the
link has been quiet for ``interval_s``. It never interrupts a request in flight. With
``functional`` it goes to every ECU of the bus, so ECUs a recipe silenced (85 02, 28 03)
stay in the session that keeps them silent.
"""

from __future__ import annotations

import logging
import threading
import time

from agent.ota.uds.connection import EcuLink

log = logging.getLogger(__name__)
_TESTER_PRESENT_SUPPRESSED = bytes([0x3E, 0x80])


class TesterPresentKeeper:
    def __init__(self, link: EcuLink, interval_s: float, *, functional: bool = False):
        self.link = link
        self.functional = functional
        self.interval_s = interval_s
        self.active = False            # True while a non-default session must be kept
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True,
                                        name=f"tester-present-{link.ecu.name}")

    def start(self) -> TesterPresentKeeper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2.0)

    def _loop(self) -> None:
        tick = max(self.interval_s / 4, 0.005)
        while not self._stop.wait(tick):
            if not self.active:
                continue
            if time.monotonic() - self.link.conn.last_activity < self.interval_s:
                continue
            if not self.link.lock.acquire(blocking=False):
                continue            # a request is in flight: that keeps the session too
            try:
                if self.functional:
                    self.link.send_functional(_TESTER_PRESENT_SUPPRESSED, timeout=1.0)
                else:
                    with self.link.client.suppress_positive_response:
                        self.link.client.tester_present()
                self.link.conn.last_activity = time.monotonic()
                self.sent += 1
            except Exception as exc:  # the flash thread will see the real failure
                log.debug("%s: TesterPresent failed: %s", self.link.ecu.name, exc)
            finally:
                self.link.lock.release()
