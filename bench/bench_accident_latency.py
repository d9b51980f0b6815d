"""Accident-trigger frame -> broker PUBACK, through the whole live agent, durable commit included.

The real ``Service`` (reader thread, pipeline, monitors, signed record, SQLite commit with
``synchronous=FULL``, uplink, TLS Mosquitto) runs in this process on python-can's virtual
bus. A sender puts the restraint controller's frame on the bus with the airbag bit set;
the clock runs from just before ``send()`` to the uplink's ``on_acked`` for the
``accident.trigger`` record. Baseline in the same run: raw paho QoS 1 publish -> PUBACK
of a payload of the same size on the same broker.

    python3 bench/bench_accident_latency.py [--crashes 60]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import can  # noqa: E402
import paho.mqtt.client as mqtt  # noqa: E402

from agent import config as agent_config  # noqa: E402
from agent.service.service import Service  # noqa: E402
from hil.benchconfig import bench_config, uplink_section  # noqa: E402
from hil.mosquitto import BrokerPKI, MosquittoBroker  # noqa: E402

VIN = "LSJWH4098PN000001"


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    k = min(len(values) - 1, max(0, round(p / 100 * (len(values) - 1))))
    return values[k]


def write_config(tmp: Path, broker: MosquittoBroker, pki: BrokerPKI) -> Path:
    extra = "[limits]\naccident_after_s = 0.3\n\n[health]\ninterval_s = 3600.0\n"
    extra += uplink_section(broker.host, broker.port, pki.client(VIN))
    return bench_config(tmp / "agent.toml", channel="bench-accident-latency", extra=extra)


class CrashSender(threading.Thread):
    """The restraint controller: its status frame every 20 ms, airbag bit on demand."""

    def __init__(self, cfg: agent_config.AgentConfig):
        super().__init__(daemon=True)
        plan = next(p for p in cfg.buses[0].plans.values()
                    if any(b.canonical == "Vehicle.Safety.Airbag.IsDeployed" for b in p.bindings))
        self.msg = plan.message
        self.airbag = next(b.dbc_signal for b in plan.bindings
                           if b.canonical == "Vehicle.Safety.Airbag.IsDeployed")
        self.bus = can.Bus(interface="virtual", channel="bench-accident-latency")
        self.deployed = False
        self.lock = threading.Lock()
        self.stop_flag = threading.Event()

    def frame(self) -> can.Message:
        values = {s.name: (s.minimum if s.minimum and s.minimum > 0 else 0)
                  for s in self.msg.signals}
        values[self.airbag] = 1 if self.deployed else 0
        data = self.msg.encode(values, strict=False)
        return can.Message(arbitration_id=self.msg.frame_id, data=data,
                           is_extended_id=self.msg.is_extended_frame)

    def run(self) -> None:
        while not self.stop_flag.wait(0.02):
            with self.lock:
                self.bus.send(self.frame())

    def deploy(self, deployed: bool) -> float:
        with self.lock:
            self.deployed = deployed
            frame = self.frame()
            t0 = time.perf_counter()
            self.bus.send(frame)
        return t0


def agent_latencies(tmp: Path, broker: MosquittoBroker, pki: BrokerPKI, crashes: int
                    ) -> list[float]:
    cfg = agent_config.load(write_config(tmp, broker, pki))
    service = Service(cfg)
    triggers: dict[str, float] = {}
    acked: dict[str, float] = {}
    done = threading.Condition()
    deliver = service.recorder.deliver

    def on_records(records: list[dict[str, Any]]) -> None:
        for r in records:
            if r["type"] == "accident.trigger" and not r["data"].get("update"):
                triggers[r["id"]] = 0.0
        if deliver is not None:
            deliver(records)

    def on_acked(ids: list[str]) -> None:
        now = time.perf_counter()
        with done:
            for i in ids:
                if i in triggers:
                    acked[i] = now
            done.notify_all()

    service.recorder.deliver = on_records
    thread = threading.Thread(target=service.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while service.uplink is None or not service.uplink.online:
        if time.monotonic() > deadline:
            raise SystemExit("agent uplink did not come online")
        time.sleep(0.05)
    service.uplink.on_acked = on_acked
    sender = CrashSender(cfg)
    sender.start()
    time.sleep(1.0)  # airbag known "not deployed" before the first crash
    latencies = []
    for _ in range(crashes):
        before = set(acked)
        t0 = sender.deploy(True)
        with done:
            done.wait_for(lambda b=before: len(set(acked) - b) > 0, timeout=10)
        new = set(acked) - before
        if new:
            latencies.append(1000 * (acked[new.pop()] - t0))
        sender.deploy(False)
        time.sleep(0.6)  # the post-window closes, the accident record goes out
    sender.stop_flag.set()
    service.request_stop("benchmark done")
    thread.join(20)
    return latencies


def paho_latencies(broker: MosquittoBroker, pki: BrokerPKI, n: int) -> list[float]:
    cert = pki.client("bench-raw")
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw",
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(cert.ca), certfile=str(cert.cert), keyfile=str(cert.key))
    acks: dict[int, float] = {}
    cond = threading.Condition()

    def on_publish(_c: Any, _u: Any, mid: int, _rc: Any, _p: Any) -> None:
        with cond:
            acks[mid] = time.perf_counter()
            cond.notify_all()

    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    time.sleep(0.5)
    payload = b"x" * 700  # about the size of an accident.trigger record
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        info = client.publish(f"icv/{VIN}/events/accident.trigger", payload, qos=1)
        with cond:
            cond.wait_for(lambda m=info.mid: m in acks, timeout=10)
        if info.mid in acks:
            out.append(1000 * (acks[info.mid] - t0))
        time.sleep(0.05)
    client.disconnect()
    client.loop_stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--crashes", type=int, default=60)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        pki = BrokerPKI(tmp / "pki")
        with MosquittoBroker(tmp / "broker", pki) as broker:
            raw = paho_latencies(broker, pki, args.crashes)
            agent = agent_latencies(tmp, broker, pki, args.crashes)
    print(f"# accident trigger latency — {platform.machine()}, Python "
          f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    print(f"{len(agent)} crashes, {len(raw)} raw publishes\n")
    print("| path | p50 ms | p99 ms | max ms |")
    print("|---|---|---|---|")
    print(f"| raw paho QoS 1 publish -> PUBACK (baseline) | {statistics.median(raw):.2f} | "
          f"{pct(raw, 99):.2f} | {max(raw):.2f} |")
    print(f"| agent: airbag frame -> decode -> monitor -> signed record -> durable commit "
          f"-> publish -> PUBACK | {statistics.median(agent):.2f} | {pct(agent, 99):.2f} | "
          f"{max(agent):.2f} |")
    return 0 if agent else 1


if __name__ == "__main__":
    sys.exit(main())
