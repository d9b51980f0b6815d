"""One consented OTA update of virtual ECUs on the bench, end to end, for ``make demo``.

Given a broker, the agent's config (the agent already running with it, or started here
with ``--start-agent``) and a bench OTA folder, it: keeps a parked vehicle on the agent's
bus (CAN frames through the agent's own mapping), runs the virtual ECUs of the config's
``[[ecu]]`` entries (unless ``--no-ecus``), releases a new image per ECU in the bench
Director/Image repositories, serves them over HTTP, sends the signed ``ota.campaign``,
accepts the offer through ``icv-agent ota consent`` (naming the offer's nonce from the
``ota.consent_requested`` record) and prints the verified outcome::

    python -m hil.demo_ota --config agent.toml --ota-dir out/ota --signing-key backend.key \\
        --host 127.0.0.1 --port 8883 --ca ca.crt --cert backend.crt --key backend.key.pem

The agent config must point ``[ota.uptane]`` at the served repositories: ``--print-section``
prints that section (``BenchOta.agent_section``) for a given ``--repo-port``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import can

from agent.config import AgentConfig
from agent.ota.preconditions import (
    CDA_STATE,
    GEAR,
    LV_VOLTAGE,
    PARKING_BRAKE,
    POWER_STATE,
    SOC,
    SPEED,
)
from hil.trace.encode import TraceEncoder

PARKED = {GEAR: "P", PARKING_BRAKE: True, SPEED: 0.0, POWER_STATE: "ON", LV_VOLTAGE: 13.5,
          SOC: 80.0, CDA_STATE: "OFF"}


class ParkedVehicle:
    """Sends every mapped message of one agent bus every ``period_s``, encoding ``values``
    (canonical signal -> value) through the bus mapping; ``set`` changes them live."""

    def __init__(self, cfg: AgentConfig, bus: can.BusABC, values: dict[str, Any] | None = None,
                 *, bus_index: int = 0, period_s: float = 0.1):
        self.encoder = TraceEncoder(cfg.buses[bus_index])
        self.bus = bus
        self.values = dict(PARKED if values is None else values)
        self.period_s = period_s
        self.sent = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="parked-vehicle", daemon=True)

    def set(self, **changes: Any) -> None:
        """``set(**{GEAR: "D"})``; a value of None makes the signal absent (unknown)."""
        with self._lock:
            self.values.update(changes)

    def start(self) -> ParkedVehicle:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        # Every message at half its cycle time: the agent calls a signal stale after 3
        # cycles, and a sender thread on a busy bench machine is sometimes late.
        messages = self.encoder.messages
        period = [min(m.cycle_s or self.period_s, self.period_s) / 2 for m in messages]
        due = [0.0] * len(messages)
        while not self._stop.wait(min(period)):
            now = time.monotonic()
            with self._lock:
                wanted = {k: v for k, v in self.values.items() if v is not None}
            ready = []
            for i, m in enumerate(messages):
                if due[i] <= now:
                    ready.append(m)
                    due[i] = max(due[i] + period[i], now)
            for frame_id, data, ext, fd in self.encoder.frames(wanted, ready):
                try:
                    self.bus.send(can.Message(arbitration_id=frame_id, data=data,
                                              is_extended_id=ext, is_fd=fd))
                    self.sent += 1
                except can.CanError:
                    pass


class Bench:
    """What stands on the agent's bus besides the agent: the virtual ECUs of the config's
    ``[[ecu]]`` entries and the parked vehicle, on one python-can bus. ``make demo`` starts
    the ECUs before the agent (its inventory at start reads them: no ``ecu.versions``
    errors) and parks the vehicle the moment the drive replay ends (a gap in the traffic
    makes every signal stale, then restored)."""

    def __init__(self, cfg: AgentConfig):
        self.cfg = cfg
        bus_cfg = cfg.bus[0]
        self.bus = can.Bus(interface=bus_cfg.interface, channel=bus_cfg.channel,
                           **bus_cfg.options)
        self.sims: list[Any] = []
        self.vehicle: ParkedVehicle | None = None

    def start_ecus(self) -> Bench:
        if not self.sims:
            self.sims = _start_ecus(self.cfg, self.bus)
        return self

    def park(self) -> Bench:
        if self.vehicle is None:
            self.vehicle = ParkedVehicle(self.cfg, self.bus).start()
        return self

    def close(self) -> None:
        for sim in self.sims:
            sim.stop()
        if self.sims:
            self.sims[0].notifier.stop()          # shared by all of them
        if self.vehicle is not None:
            self.vehicle.stop()
        self.bus.shutdown()


def main(argv: list[str] | None = None, bench: Bench | None = None) -> int:
    """``bench``: ECUs and parked vehicle already on the bus (kept running on return);
    without it they are started here (ECUs unless ``--no-ecus``) and stopped at the end."""
    from agent.config import load
    from hil.backend.broker import BrokerConfig
    from hil.backend.campaign import BenchOta, campaign_args, ecu_image, run_campaign
    from hil.backend.receiver import Backend
    from hil.backend.sender import load_backend_key

    p = argparse.ArgumentParser(prog="demo_ota", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", type=Path, required=True, help="the agent's config")
    p.add_argument("--ota-dir", type=Path, required=True, help="bench OTA folder (created)")
    p.add_argument("--repo-port", type=int, default=8765)
    p.add_argument("--print-section", action="store_true",
                   help="print the [ota] TOML for the agent config and exit")
    p.add_argument("--signing-key", type=Path, help="backend command key (private)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8883)
    p.add_argument("--ca", type=Path)
    p.add_argument("--cert", type=Path)
    p.add_argument("--key", type=Path)
    p.add_argument("--activity-id", default=f"OTA-DEMO-{int(time.time())}")
    p.add_argument("--no-ecus", action="store_true", help="ECUs are simulated elsewhere")
    p.add_argument("--timeout", type=float, default=180.0)
    args = p.parse_args(argv)

    ota = BenchOta.open_or_create(args.ota_dir)
    url = f"http://127.0.0.1:{args.repo_port}"
    if args.print_section:
        print(ota.agent_section(url))
        return 0
    if args.signing_key is None:
        p.error("--signing-key is required")
    cfg = load(args.config)
    own = bench is None
    if bench is None:
        bench = Bench(cfg).park()
        if not args.no_ecus:
            bench.start_ecus()
    server = ota.serve(port=args.repo_port)
    broker = BrokerConfig(host=args.host, port=args.port, ca=args.ca or "",
                          cert=args.cert or "", key=args.key or "")
    keys = {cfg.vehicle.vin: _vehicle_key(cfg)}
    backend = Backend(broker, args.ota_dir / "backend.db", keys, group="", persistent=False)
    backend.start()
    try:
        version = time.strftime("%Y%m%d.%H%M%S")
        for n, ecu in enumerate(cfg.ecu):
            hw = _current(cfg, ecu.name, "F191") or _identity(ecu).get("F191", "")
            provides = {"F189": f"{version}.{n}", "F188": f"SW-{ecu.name.upper()}-{version}",
                        "F195": f"SUP-{ecu.name.upper()}-{version}"}
            counter = int(time.time())
            ota.release(cfg.vehicle.vin, ecu.name, f"{ecu.name}/{ecu.name}-{version}.bin",
                        ecu_image(min(64 * 1024, ecu.memory_size), provides,
                                  {"F191": hw} if hw else {}),
                        hardware_id=hw or "", release_counter=counter, versions=provides)
        done = threading.Event()

        def show(record: dict[str, Any]) -> None:
            data = record["data"]
            if own:   # in `make demo` the backend prints every record already
                print(f"#{record['seq']:<4} {record['type']:<24} "
                      + ", ".join(f"{k}={v}" for k, v in data.items()
                                  if k in ("ecu", "percent", "decision", "channel", "reason",
                                           "threat", "condition")))
            if record["type"] == "ota.consent_requested":
                print(f"     the user is asked: {data['purpose']} ({data['changes']}); "
                      f"~{data['estimated_duration_s']:g} s; unavailable: "
                      f"{', '.join(data['unavailable_functions'])} -> accepting via the CLI")
                subprocess.run([sys.executable, "-m", "agent.cli", "ota", "consent",
                                args.activity_id, "--nonce", data["offer_nonce"], "--accept",
                                "--config", str(args.config)], check=False)

        result = run_campaign(backend, load_backend_key(args.signing_key), cfg.vehicle.vin,
                              campaign_args(args.activity_id, version),
                              timeout=args.timeout, on_record=show)
        done.set()
        outcome = result["outcome"]
        if outcome is None:
            print(f"no outcome within {args.timeout:g} s (response {result['response']})")
            return 1
        print(f"outcome: {outcome['type']} (verified by the backend, seq {outcome['seq']})")
        for row in outcome["data"].get("ecus", []):
            print(f"  {row['ecu']}: {(row.get('before') or {}).get('F189')} -> "
                  f"{(row.get('after') or {}).get('F189')}")
        return 0 if outcome["type"] == "ota.completed" else 1
    finally:
        backend.close()
        server.stop()
        if own:
            bench.close()


def _vehicle_key(cfg: AgentConfig) -> Any:
    from agent.records.keys import load_public_key

    return load_public_key(cfg.key_path)


def _current(cfg: AgentConfig, ecu: str, did: str) -> str:
    from agent.ota.inventory import CURRENT_KEY
    from agent.statestore import StateDB

    db = StateDB(cfg.state_dir / "state.db")
    try:
        return (db.get(CURRENT_KEY, {}).get(ecu) or {}).get(did, "")
    finally:
        db.close()


def _identity(ecu: Any) -> dict[str, str]:
    """The virtual ECU's identity: config/ecu/<name>.toml when it exists."""
    from hil.ecu_sim.settings import load_sim_config

    example = Path(__file__).resolve().parents[1] / "config" / "ecu" / f"{ecu.name}.toml"
    if example.exists():
        return dict(load_sim_config(example).identity)
    return {"F189": "1.0.0", "F191": f"HW-{ecu.name.upper()}"}


def _start_ecus(cfg: AgentConfig, bus: can.BusABC) -> list[Any]:
    """Virtual ECUs for the config's [[ecu]] entries, identity from config/ecu/<name>.toml
    when it exists."""
    from hil.ecu_sim import VirtualEcu, VirtualEcuConfig

    notifier = can.Notifier(bus, [], timeout=0.1)
    sims = []
    for ecu in cfg.ecu:
        sims.append(VirtualEcu(VirtualEcuConfig(ecu=ecu, identity=_identity(ecu)), bus,
                               notifier).start())
    return sims


if __name__ == "__main__":
    sys.exit(main())
