"""``make demo``: the whole live pipeline on one machine, on the agent's embedded defaults.

A local Mosquitto with mutual TLS on a free port (installed with apt if missing and we are
root), the bench backend, ``icv-agent run`` on the bench config (reference DBC) over a
``udp_multicast`` CAN bus, and a scenario drive replayed onto that bus: hands-off ->
warnings -> minimal risk manoeuvre -> lockout, then a crash. The backend verifies every
record; a signed command asks the vehicle for its quarterly report; the demo ends with
the backend's summary. Everything lands in ``out/demo/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from agent.records.keys import load_public_key, public_pem
from hil.benchconfig import bench_config, ecu_entries, uplink_section

ROOT = Path(__file__).resolve().parents[1]
VIN = "LSJWH4098PN000001"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m", flush=True)


def ensure_mosquitto() -> None:
    if shutil.which("mosquitto") or Path("/usr/sbin/mosquitto").exists():
        return
    if os.geteuid() != 0:
        raise SystemExit("mosquitto is missing: sudo apt-get install -y mosquitto")
    say("installing mosquitto (apt)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", "mosquitto"],
                   check=True, env=env)


def current_quarter(tz: str = "Asia/Shanghai") -> str:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    now = datetime.now(ZoneInfo(tz))
    return f"{now.year}Q{(now.month - 1) // 3 + 1}"


def free_tcp_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agent_config(out: Path, broker: Any, cert: Any, backend_pub: Path, group: str,
                 port: int, ota_section: str) -> Path:
    extra = "[health]\ninterval_s = 15.0\n" + uplink_section(
        broker.host, broker.port, cert, backend_key=backend_pub, backoff_min_s=0.2,
        backoff_max_s=2.0) + "\n" + ota_section + ecu_entries("eps", "dvr")
    return bench_config(out / "agent.toml", interface="udp_multicast", channel=group,
                        bus_lines=f"options = {{ port = {port} }}\n"
                                  "min_timeout_s = 0.5                   # software replay jitter",
                        state_dir=out / "state", extra=extra)


def period_summary(response: dict[str, Any]) -> str:
    """The ``report.period`` answer in a few lines: period, CDA use, the event counts."""
    result = response.get("result")
    if not response.get("ok") or not isinstance(result, dict):
        return json.dumps(response, ensure_ascii=False)[:500]
    base = result.get("base") or {}
    lines = [f"{result.get('report')}: {result.get('vin')} {result.get('period')} "
             f"({result.get('status')}, as of {result.get('as_of')})",
             f"  CDA in use {base.get('active_s')} s, {base.get('active_km')} km: "
             + ", ".join(f"{f} {v.get('active_s')} s"
                         for f, v in (base.get("by_function") or {}).items())]
    for key, title in (("events", "events"), ("security_events", "security events")):
        flat = _flat(result.get(key) or {})
        lines.append(f"  {title}: " + ", ".join(f"{k} {v}" for k, v in flat.items()))
    return "\n".join(lines)


def _flat(table: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in table.items():
        out.update(_flat(v) if isinstance(v, dict) else {k: v})
    return out


def replay_drive(trace: Path, group: str, port: int, speed: float) -> None:
    """The drive onto the bus from this process, so the parked vehicle can follow its last
    frame without the gap of a subprocess ending."""
    import can

    from hil.trace.replay import load_frames, replay

    bus = can.Bus(interface="udp_multicast", channel=group, port=port)
    try:
        result = replay(load_frames(trace), bus, speed=speed, progress=None)
    finally:
        bus.shutdown()
    print(f"sent {result.sent} frames in {result.duration_s:.2f} s, {result.errors} send "
          f"errors, timing error mean {result.mean_error_ms:.3f} ms")


def run(args: argparse.Namespace) -> int:
    from hil import demo_ota
    from hil.backend import Backend, BrokerConfig, format_summaries, keygen, load_backend_key
    from hil.backend.campaign import BenchOta
    from hil.mosquitto import BrokerPKI, MosquittoBroker

    out = ROOT / "out" / "demo"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    ensure_mosquitto()
    scenario = ROOT / "hil" / "scenarios" / "drive.toml"

    say("local broker with mutual TLS (generated CA and certificates)")
    pki = BrokerPKI(out / "pki")
    broker = MosquittoBroker(out / "broker", pki)
    broker.start()
    print(f"mosquitto on {broker.host}:{broker.port}")
    agent = None
    backend = None
    bench = None
    try:
        group, port = "239.74.163.200", free_udp_port()
        backend_key, backend_pub, key_id = keygen(out / "backend-keys")
        ota = BenchOta.open_or_create(out / "ota")
        repo_port = free_tcp_port()
        cfg = agent_config(out, broker, pki.client(VIN), backend_pub, group, port,
                           ota.agent_section(f"http://127.0.0.1:{repo_port}"))
        subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(cfg)], check=True)
        subprocess.run([sys.executable, "-m", "agent.cli", "keys", "generate", "--config",
                        str(cfg)], check=True, stdout=subprocess.DEVNULL)
        vehicle_keys = out / "vehicle-keys"
        vehicle_keys.mkdir()
        # The backend gets the public key only: the private one never leaves the vehicle.
        public = load_public_key(out / "state" / "device.key")
        (vehicle_keys / f"{VIN}.pem").write_text(public_pem(public))

        say("bench backend: shared subscription, verifies signatures, chain and gaps")
        bcert = pki.client("icv-backend")
        backend = Backend(BrokerConfig(host=broker.host, port=broker.port, ca=bcert.ca,
                                       cert=bcert.cert, key=bcert.key),
                          out / "backend.db", vehicle_keys, group="", live=sys.stdout)
        if not backend.start(30):
            raise SystemExit("backend could not subscribe")

        say("virtual ECUs eps and dvr on the bus (UDS; the agent reads their versions at start)")
        from agent.config import load

        bench = demo_ota.Bench(load(cfg)).start_ecus()

        say("icv-agent run (bench config, udp_multicast CAN bus)")
        agent = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", "--config",
                                  str(cfg)], stderr=open(out / "agent.log", "wb"))  # noqa: SIM115
        if not backend.wait(lambda: backend.summary(VIN).records > 0, 30):
            raise SystemExit(f"agent did not come online; see {out / 'agent.log'}")

        say("scenario -> trace -> replay onto the bus (45 s drive)")
        trace = out / "drive.log"
        subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(scenario), "--config",
                        str(cfg), "-o", str(trace)], check=True)
        replay_drive(trace, group, port, args.speed)
        # the parked vehicle takes over the bus at once: no gap, so no signal goes stale
        bench.park()

        say("signed command: report.period (Att.3 二 contribution of this vehicle)")
        period = current_quarter()
        response = backend.send_command(load_backend_key(out / "backend-keys" / "backend.key"),
                                        VIN, "report.period", {"period": period}, timeout=15)
        print(period_summary(response) if response else "no response")

        say("OTA: a signed campaign, Uptane verification, consent, UDS flash of two ECUs")
        ocert = pki.client("icv-ota-backend")
        ota_rc = demo_ota.main([
            "--config", str(cfg), "--ota-dir", str(out / "ota"), "--repo-port",
            str(repo_port), "--signing-key", str(backend_key), "--host", broker.host,
            "--port", str(broker.port), "--ca", str(ocert.ca), "--cert", str(ocert.cert),
            "--key", str(ocert.key), "--timeout", "240"], bench=bench)
        subprocess.run([sys.executable, "-m", "agent.cli", "ecu", "versions", "--config",
                        str(cfg)], check=False)

        say("stop the agent (SIGTERM: flush, offline status)")
        agent.send_signal(signal.SIGTERM)
        agent.wait(30)
        backend.wait_idle(2.0, 20)
        say("backend summary")
        print(format_summaries(backend.summaries()))
        print(f"\nbackend key {key_id}; records in {out / 'backend.db'}; "
              f"agent log {out / 'agent.log'}")
        ok = all(s.ok for s in backend.summaries())
        return 0 if ok and ota_rc == 0 else 1
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
        if bench is not None:
            bench.close()
        if backend is not None:
            backend.close()
        broker.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--speed", type=float, default=1.0, help="replay time scale")
    return run(ap.parse_args())


if __name__ == "__main__":
    sys.exit(main())
