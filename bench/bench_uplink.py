"""Journal drain rate to a real Mosquitto (mutual TLS, QoS 1) next to raw paho publishing.

Both sides send the same payloads (signed records of a realistic mix) to the same broker in
the same run, with the same in-flight window, and stop the clock at the last PUBACK. The
journal figure includes what raw paho does not do: reading the outbox in lane order and
deleting every acknowledged record. Also: commit -> PUBACK latency of a single
accident.trigger on an idle link (durable commit, notify, publish, PUBACK, delete), and the
store rate with one fsync per record versus one per group of records.

    python3 bench/bench_uplink.py [--records 5000] [--runs 3] [--inflight 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from agent.journal.outbox import Journal, Pending  # noqa: E402
from agent.records.chain import RecordChain  # noqa: E402
from agent.records.keys import DeviceKey  # noqa: E402
from agent.statestore import StateDB  # noqa: E402
from agent.uplink import topics  # noqa: E402
from agent.uplink.client import ONLINE, Uplink  # noqa: E402
from agent.uplink.settings import UplinkConfig  # noqa: E402
from hil.mosquitto import BrokerPKI, ClientCert, MosquittoBroker  # noqa: E402

VIN = "BENCH000000000001"
DATA: dict[str, dict[str, Any]] = {
    "safety.aeb": {"speed": 31.5, "cda_state": "ACTIVE", "duration_s": 1.24},
    "cda.activated": {"function": "lcc", "speed": 72.0},
    "signal.stale": {"signal": "Vehicle.ADAS.CDA.State", "last_seen": "2025-01-01T00:00:00.000Z"},
    "agent.health": {"cpu_percent": 3.5, "rss_mb": 41.2, "disk_free_mb": 812.0,
                     "frames": {"can0": 123456, "can1": 65432}, "decode_errors": 0},
    "ecu.versions": {"ecu": "brake", "dids": {"F187": "BRK-1", "F189": "1.2.3", "F18C": "S1"}},
}
TRIGGER = {"trigger": "airbag", "cda_in_use_5s": True, "cda_in_use_30s": True, "speed": 42.0,
           "location": None, "report_deadline": "2025-01-02T00:00:00.000Z"}


def fill(db: StateDB, journal: Journal, chain: RecordChain, n: int, group: int) -> float:
    """Make and store ``n`` records, ``group`` per commit; seconds taken."""
    types = list(DATA)
    t0 = time.perf_counter()
    done = 0
    while done < n:
        with db.transaction():
            for _ in range(min(group, n - done)):
                t = types[done % len(types)]
                journal.store(chain.make(t, DATA[t], 1.7e9 + done, time_source="system"))
                done += 1
    return time.perf_counter() - t0


def raw_paho(broker: MosquittoBroker, cert: ClientCert, items: list[Pending],
             inflight: int) -> float:
    """Publish the same payloads with plain paho (MQTT 5, QoS 1, same window); seconds."""
    done = threading.Event()
    acked = [0]
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-raw",
                         protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(cert.ca), certfile=str(cert.cert), keyfile=str(cert.key))
    client.max_inflight_messages_set(inflight)
    client.max_queued_messages_set(0)
    connected = threading.Event()
    client.on_connect = lambda *a: connected.set()

    def on_publish(*_a: Any) -> None:
        acked[0] += 1
        if acked[0] == len(items):
            done.set()

    client.on_publish = on_publish
    client.connect(broker.host, broker.port)
    client.loop_start()
    connected.wait(10)
    t0 = time.perf_counter()
    for item in items:
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("schema", item.schema), ("id", item.id)]
        props.ContentType = "application/json"
        client.publish(topics.events(VIN, item.type), item.payload, qos=1, properties=props)
    done.wait(600)
    elapsed = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=5000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--inflight", type=int, default=20)
    ap.add_argument("--latency-samples", type=int, default=200)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        pki = BrokerPKI(folder / "pki")
        with MosquittoBroker(folder / "broker", pki) as broker:
            cert = pki.client(VIN)
            db = StateDB(folder / "state.db")
            journal = Journal(db)
            chain = RecordChain(db, DeviceKey.generate(), VIN)

            acked: dict[str, float] = {}
            ack_cond = threading.Condition()

            def on_acked(ids: list[str]) -> None:
                now = time.perf_counter()
                with ack_cond:
                    for i in ids:
                        acked[i] = now
                    ack_cond.notify_all()

            cfg = UplinkConfig(host=broker.host, port=broker.port, ca=str(cert.ca),
                               cert=str(cert.cert), key=str(cert.key), inflight=args.inflight)
            uplink = Uplink(cfg, VIN, folder / "state.db", on_acked=on_acked)
            uplink.start()
            while uplink.state != ONLINE:
                time.sleep(0.01)

            drain, raw = [], []
            size = 0
            for _ in range(args.runs):
                fill(db, journal, chain, args.records, group=500)
                items = journal.next_batch(args.records)
                size = sum(len(i.payload) for i in items) // len(items)
                t0 = time.perf_counter()
                uplink.notify()
                if not uplink.wait_idle(600):
                    print("journal drain did not finish", file=sys.stderr)
                    return 1
                drain.append(args.records / (time.perf_counter() - t0))
                raw.append(args.records / raw_paho(broker, cert, items, args.inflight))

            latencies = []
            for _ in range(args.latency_samples):
                t0 = time.perf_counter()
                with db.transaction():
                    record = chain.make("accident.trigger", TRIGGER, 1.7e9, time_source="system")
                    journal.store(record)
                uplink.notify()
                rid = record["id"]
                with ack_cond:
                    ack_cond.wait_for(lambda rid=rid: rid in acked, 30)
                latencies.append((acked[rid] - t0) * 1000)
            uplink.stop()

            single = fill(db, journal, chain, 500, group=1)
            grouped = fill(db, journal, chain, 5000, group=100)
            db.close()

    d, r = statistics.median(drain), statistics.median(raw)
    lat = sorted(latencies)
    print(f"records per run: {args.records}, mean payload {size} B, in-flight window "
          f"{args.inflight}, mosquitto with mutual TLS on loopback, MQTT 5 QoS 1")
    print(f"journal drain (outbox -> PUBACK -> delete): median {d:8.0f} records/s  "
          f"(runs: {', '.join(f'{x:.0f}' for x in drain)})")
    print(f"raw paho QoS 1, same payloads/window:       median {r:8.0f} records/s  "
          f"(runs: {', '.join(f'{x:.0f}' for x in raw)})")
    print(f"ratio journal/raw: {d / r:.2f}")
    print(f"accident.trigger commit -> PUBACK (durable commit included, idle link, "
          f"n={len(lat)}): p50 {lat[len(lat) // 2]:.2f} ms, "
          f"p99 {lat[min(len(lat) - 1, int(len(lat) * 0.99))]:.2f} ms")
    print(f"store rate, fsync per record: {500 / single:8.0f} records/s; "
          f"per 100 records (group commit): {5000 / grouped:8.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
