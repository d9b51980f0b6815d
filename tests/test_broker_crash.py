"""Delivery end to end across broker crashes: Mosquitto is SIGKILLed again and again while
the live agent sends; what the broker acknowledged and then lost comes again from the
agent's archive of sent records when the bench backend asks for its gaps (a signed
``records.resend``), on the ``resent`` topics. The backend ends with seq 1..N, no gap."""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hil.backend import Backend, BrokerConfig, keygen, load_backend_key
from tests.live_agent import (
    Agent,
    chain_state,
    make_trace,
    multicast_group,
    replay,
    uplink_section,
    vehicle_keys,
    wait_until,
    write_config,
)

VIN = "LSJWH4098PN000001"
KILLS = 12


@pytest.mark.parametrize("session", ["persistent", "clean"])
def test_repeated_broker_crashes_end_with_every_record_at_the_backend(
        tmp_path: Path, mqtt_broker: Any, mqtt_pki: Any, session: str) -> None:
    """``persistent``: the deployment as documented (durable broker, persistent backend
    session); ``clean``: a backend whose session dies with each crash and that reconnects
    later than the agent, so the broker acknowledges records nobody receives: only the
    re-send path brings them back."""
    group = multicast_group()
    backend_key, backend_pub, _ = keygen(tmp_path / "backend-keys")
    cfg = write_config(tmp_path, group, uplink_section(
        mqtt_broker, mqtt_pki.client(VIN), backend_key=backend_pub)
        + "\n[health]\ninterval_s = 0.2\n")      # a steady stream of records
    keys_dir = vehicle_keys(cfg, VIN)
    trace = make_trace(tmp_path)
    bcert = mqtt_pki.client("backend-crash")
    # Outside any share group: Mosquitto restores a persistent session's shared
    # subscriptions only partly after its own restart (hil/backend/receiver.py).
    backend = Backend(BrokerConfig(host=mqtt_broker.host, port=mqtt_broker.port,
                                   ca=bcert.ca, cert=bcert.cert, key=bcert.key,
                                   backoff_min_s=0.1 if session == "persistent" else 2.0,
                                   backoff_max_s=0.5 if session == "persistent" else 2.0),
                      tmp_path / "backend.db", keys_dir, group="",
                      persistent=session == "persistent",
                      resend_key=load_backend_key(backend_key), gap_wait_s=1.0)
    assert backend.start(30)
    agent = Agent(cfg).start()
    rng = random.Random(7)
    state = tmp_path / "state"

    def caught_up() -> bool:
        s = backend.summary(VIN)
        return not s.gaps and s.last_seq is not None and \
            s.last_seq >= chain_state(state).get("seq", 0) - 1

    try:
        assert backend.wait(lambda: backend.summary(VIN).records > 0, 30), agent.log_text()
        replayed: list[Any] = []
        drive = threading.Thread(target=lambda: replayed.append(replay(trace, group)))
        drive.start()
        for _ in range(KILLS):
            time.sleep(rng.uniform(0.3, 1.5))
            mqtt_broker.kill()                 # a crash: nothing saved since the autosave
            time.sleep(rng.uniform(0.1, 0.6))
            mqtt_broker.start()
        drive.join(120)
        assert replayed and replayed[0].returncode == 0
        # Gaps are asked for while the agent runs (it keeps sending health records).
        assert wait_until(caught_up, 90), (backend.summary(VIN).to_dict(), agent.log_text())
        assert agent.stop(signal.SIGTERM, timeout=60) == 0
    finally:
        agent.kill()
    final = chain_state(state)["seq"]
    assert wait_until(lambda: backend.summary(VIN).last_seq == final, 30)
    summary = backend.summary(VIN)
    counters = backend.counters
    backend.close()
    assert summary.first_seq == 1 and summary.last_seq == final, summary.to_dict()
    assert summary.records == final and summary.gaps == [], summary.to_dict()
    assert summary.chain == "intact" and not summary.alarms
    # Whatever came again came as re-sent, and only when asked for.
    assert counters.resent == 0 or counters.resend_requests > 0
    if session == "clean":
        assert counters.resend_requests > 0 and counters.resent > 0, counters
