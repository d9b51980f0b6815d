"""Set-up shared by the campaign tests: bench repositories served over real HTTP, two
virtual ECUs on a real python-can bus (ISO-TP), an agent config loaded by the real loader,
and a ``CampaignManager`` whose records are collected in order.

The vehicle state is a dict the test sets (``Bench.vehicle``); the end-to-end test feeds
the real agent process CAN frames instead (``hil.demo_ota.ParkedVehicle``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from agent.config import AgentConfig, load
from agent.ota.campaign import CampaignManager
from agent.ota.settings import EcuConfig, HmiConfig
from agent.statestore import StateDB
from hil.backend.campaign import BenchOta, ecu_image
from hil.demo_ota import PARKED
from hil.ecu_sim import VirtualEcu, VirtualEcuConfig
from hil.repo import RepoServer
from tests.helpers import scaled, wait_until  # noqa: F401  (campaign tests import wait_until)
from tests.ota.conftest import uds_sim

ROOT = Path(__file__).resolve().parents[2]
VIN = "LSJWH4098PN000001"          # the VIN of config/bench.toml


EPS_IDENTITY = {"F187": "EPS-4711-A", "F188": "SW-EPS-0100", "F189": "1.0.0",
                "F18C": "EPS0000001", "F190": VIN, "F191": "HW-EPS-03", "F195": "SUP-1.0.0"}
DVR_IDENTITY = {"F187": "DVR-100", "F188": "SW-DVR-0007", "F189": "0.7.0",
                "F18C": "DVR0001234", "F190": VIN, "F191": "HW-DVR-1", "F195": "SUP-DVR-0.7.0"}
EPS_V2 = {"F189": "2.0.0", "F188": "SW-EPS-0200", "F195": "SUP-2.0.0"}
DVR_V2 = {"F189": "0.8.0", "F188": "SW-DVR-0008", "F195": "SUP-DVR-0.8.0"}

# Timings in seconds before scaling (tests.helpers.scaled), formatted into ECU_TOML.
# (The dvr keeps TesterPresent at the agent's default period, 2 s.)
ECU_TIMINGS_S = dict(p2_s=0.2, p2_star_s=2.0, tester_present_s=1.0, dvr_tester_present_s=2.0,
                     versions_s=3.0, erase_s=5.0, transfer_block_s=3.0, reset_s=5.0,
                     restore_s=8.0)
ECU_TOML = """
[[ecu]]
name = "eps"
role = "steering"
bus = "chassis"
txid = 0x7A2
rxid = 0x7AA
security_secret = "5AC3E71B"
memory_address = 0x80000
memory_size = 0x20000
exit_crc32 = true
can_restore = true
p2_s = {p2_s}
p2_star_s = {p2_star_s}
tester_present_s = {tester_present_s}
retries = 1
[ecu.budget]
versions_s = {versions_s}
erase_s = {erase_s}
transfer_block_s = {transfer_block_s}
reset_s = {reset_s}
restore_s = {restore_s}

[[ecu]]
name = "dvr"
role = "dvr"
bus = "chassis"
addressing = "normal_fixed_29bit"
source_address = 0xF1
target_address = 0x5D
security_level = 0x01
security_secret = "A55A0FF0"
memory_address = 0x0
memory_size = 0x10000
exit_crc32 = true
can_restore = false
p2_s = {p2_s}
p2_star_s = {p2_star_s}
tester_present_s = {dvr_tester_present_s}
retries = 1
[ecu.budget]
versions_s = {versions_s}
erase_s = {erase_s}
transfer_block_s = {transfer_block_s}
reset_s = {reset_s}
""".format(**{k: repr(scaled(v)) for k, v in ECU_TIMINGS_S.items()})

SIM = uds_sim(p2_ms=200, p2_star_ms=2000, erase_s=0.05, dependency_s=0.02, boot_s=0.05,
              max_block_length=0x402)


# Services that change an ECU or prepare it for that (ISO 14229-1): programming session
# (10 02), security access, write DID, routine control, request download, transfer data,
# transfer exit, ECU reset, write memory, DTC setting and communication control.
PROGRAMMING = {0x27, 0x2E, 0x31, 0x34, 0x36, 0x37, 0x11, 0x3D, 0x85, 0x28}
FUNCTIONAL_11BIT = 0x7DF


def uds_start(data: bytes) -> bytes:
    """The first bytes of the UDS request an ISO-TP single or first frame carries (b"" for
    consecutive and flow-control frames)."""
    if not data:
        return b""
    kind, low = data[0] >> 4, data[0] & 0x0F
    if kind == 0:                                  # single frame (CAN FD: escaped length)
        return data[2:] if low == 0 else data[1:1 + low]
    if kind == 1:                                  # first frame (> 4095 bytes: escaped)
        return data[6:] if low == 0 and data[1:2] == b"\x00" else data[2:]
    return b""


def is_programming(request: bytes) -> bool:
    if not request:
        return False
    if request[0] == 0x10:
        return len(request) > 1 and request[1] & 0x7F == 0x02
    return request[0] in PROGRAMMING


def agent_toml(tmp: Path, bus_text: str, ota_text: str, extra: str = "",
               ecus: str | None = None) -> Path:
    """config/bench.toml with our bus, state dir, OTA sections and the two ECUs (or the
    ``[[ecu]]`` tables in ``ecus``)."""
    text = (ROOT / "config" / "bench.toml").read_text()
    text = re.sub(r'interface = "virtual".*\n', "", text)
    text = text.replace('channel = "icv-bench"\n', bus_text)
    text = text.replace('"../dbc/', f'"{ROOT}/dbc/')
    text = text.replace('dir = "../.state/bench"', f'dir = "{tmp / "state"}"')
    path = tmp / "agent.toml"
    path.write_text(text + "\n" + ota_text + "\n" + extra + "\n"
                    + (ECU_TOML if ecus is None else ecus))
    return path


@dataclass
class EndToEnd:
    """What an end-to-end campaign test sets up before its ECUs: bench repositories served
    over HTTP, backend command keys, a udp_multicast bus of its own and the agent config
    (uplink to the test's Mosquitto with the vehicle's client certificate)."""

    ota: BenchOta
    server: RepoServer
    private: Path                   # the backend's command signing key
    public: Path
    group: str
    port: int
    cfg_path: Path
    cfg: AgentConfig

    def bus(self) -> can.BusABC:
        return can.Bus(interface="udp_multicast", channel=self.group, port=self.port)

    def backend(self, tmp: Path, mqtt_broker: Any, mqtt_pki: Any, device: Any,
                name: str = "backend-ota") -> Any:
        """A started bench backend that knows the vehicle's device key."""
        from hil.backend.broker import BrokerConfig
        from hil.backend.receiver import Backend

        cert = mqtt_pki.client(name)
        backend = Backend(BrokerConfig(host=mqtt_broker.host, port=mqtt_broker.port,
                                       ca=cert.ca, cert=cert.cert, key=cert.key),
                          tmp / "backend.db", {VIN: device.public_key}, group="",
                          persistent=False)
        assert backend.start(timeout=20)
        return backend


def end_to_end(tmp: Path, mqtt_broker: Any, mqtt_pki: Any, *, ecus: str | None = None,
               consent_timeout_s: float = 60) -> EndToEnd:
    from hil.backend.sender import keygen
    from tests.live_agent import multicast_group, port_of, uplink_section

    group = multicast_group()
    port = port_of(group)
    ota = BenchOta.create(tmp / "bench-ota", vins=[VIN])
    server = ota.serve()
    private, public, _ = keygen(tmp / "backend-keys")
    # A freshness floor: UDP multicast between Python processes is no CAN wire, and a 10 ms
    # message late by 30 ms on a loaded bench would (rightly) make the vehicle state unknown.
    bus_text = (f'interface = "udp_multicast"\nchannel = "{group}"\n'
                f'options = {{ port = {port} }}\nmin_timeout_s = 0.5\n')
    extra = (uplink_section(mqtt_broker, mqtt_pki.client(VIN), backend_key=public)
             + f"\n[ota.extra]\nconsent_timeout_s = {consent_timeout_s}\n")
    cfg_path = agent_toml(tmp, bus_text,
                          ota.agent_section(server.url, download_dir=str(tmp / "dl")),
                          extra, ecus)
    return EndToEnd(ota, server, private, public, group, port, cfg_path, load(cfg_path))


def virtual_bus_text(channel: str) -> str:
    return f'interface = "virtual"\nchannel = "{channel}"\n'


def sim_config(ecu: EcuConfig, identity: dict[str, str], **kw: Any) -> VirtualEcuConfig:
    return VirtualEcuConfig(ecu=ecu, identity=dict(identity), sim=SIM, **kw)


@dataclass
class Records:
    """What the manager emitted, in order; ``wait`` blocks until a record shows up."""

    items: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def __call__(self, type_: str, data: dict[str, Any]) -> None:
        with self.cond:
            self.items.append((type_, data))
            self.cond.notify_all()

    def types(self, activity: str | None = None) -> list[str]:
        with self.cond:
            return [t for t, d in self.items
                    if activity is None or d.get("activity_id") == activity]

    def of(self, type_: str, activity: str | None = None) -> list[dict[str, Any]]:
        with self.cond:
            return [d for t, d in self.items if t == type_
                    and (activity is None or d.get("activity_id") == activity)]

    def wait(self, type_: str, activity: str | None = None, timeout: float = 40.0,
             count: int = 1) -> dict[str, Any]:
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.of(type_, activity)) >= count, timeout)
        assert ok, f"no {type_} for {activity} within {timeout} s; got {self.types()}"
        return self.of(type_, activity)[count - 1]

    def terminal(self, activity: str, timeout: float = 40.0) -> tuple[str, dict[str, Any]]:
        terminal = ("ota.completed", "ota.failed", "ota.rejected", "ota.not_offered")
        with self.cond:
            ok = self.cond.wait_for(lambda: any(t in terminal for t in self.types(activity)),
                                    timeout)
            assert ok, f"activity {activity} did not end within {timeout} s: {self.types()}"
            return next((t, d) for t, d in self.items
                        if t in terminal and d.get("activity_id") == activity)


@dataclass
class Bench:
    tmp: Path
    ota: BenchOta
    server: RepoServer
    cfg: AgentConfig
    channel: str
    ecu_bus: can.BusABC
    ecus: dict[str, VirtualEcu]
    vehicle: dict[str, Any]
    records: Records
    manager: CampaignManager | None = None
    sniffed: list[can.Message] = field(default_factory=list)

    def start_manager(self, **settings: Any) -> CampaignManager:
        extra = dataclasses.replace(self.cfg.ota.extra, hmi=HmiConfig(enabled=False),
                                    **settings)
        manager = CampaignManager.from_config(self.cfg, self.records, self.vehicle.get,
                                              settings=extra)
        self.manager = manager.start()
        return manager

    def stop_manager(self) -> None:
        if self.manager is not None:
            self.manager.stop()
            self.manager = None

    def release(self, ecu: str, version: dict[str, str], counter: int, *,
                requires: dict[str, str] | None = None, size: int = 24 * 1024,
                hardware_id: str | None = None) -> Any:
        identity = EPS_IDENTITY if ecu == "eps" else DVR_IDENTITY
        hw = hardware_id or identity["F191"]
        image = ecu_image(size, version, requires if requires is not None else {"F191": hw},
                          seed=f"{ecu}-{counter}")
        return self.ota.release(VIN, ecu, f"{ecu}/{ecu}-{version['F189']}.bin", image,
                                hardware_id=hw, release_counter=counter, versions=version)

    def db(self) -> StateDB:
        return StateDB(self.cfg.state_dir / "state.db")

    def programming_requests(self, ecu: str) -> list[can.Message]:
        """Frames that start a programming service (``PROGRAMMING``) and reach ``ecu``,
        physically or functionally addressed; single and first ISO-TP frames are read."""
        conf = self.cfg.ecu[[e.name for e in self.cfg.ecu].index(ecu)]
        if conf.addressing == "normal_fixed_29bit":
            req_id = 0x18DA0000 | (conf.target_address << 8) | conf.source_address
            ids = {req_id, 0x18DB3300 | conf.source_address}
        else:
            ids = {conf.txid, FUNCTIONAL_11BIT}
        return [m for m in list(self.sniffed)
                if m.arbitration_id in ids and is_programming(uds_start(bytes(m.data)))]


@contextlib.contextmanager
def make_bench(tmp: Path, *, ota_extra: str = "", uptane: dict[str, Any] | None = None,
               sims: dict[str, dict[str, Any]] | None = None) -> Iterator[Bench]:
    """Repositories + HTTP server, agent config, two virtual ECUs on a virtual bus and a
    sniffer on it; the manager is started by the test (``bench.start_manager()``)."""
    ota = BenchOta.create(tmp / "bench-ota", vins=[VIN])
    server = ota.serve()
    channel = f"ota-{uuid.uuid4().hex}"
    options = dict(download_dir=str(tmp / "downloads"), min_speed_bytes_s=10_000.0,
                   speed_window_s=1.0, connect_timeout_s=5.0, retries=2, backoff_s=0.05,
                   backoff_max_s=0.2)
    options.update(uptane or {})
    cfg_path = agent_toml(tmp, virtual_bus_text(channel), ota.agent_section(server.url,
                                                                             **options),
                          ota_extra)
    cfg = load(cfg_path)
    bus = can.Bus(interface="virtual", channel=channel)
    sniffer_bus = can.Bus(interface="virtual", channel=channel)
    sniffed: list[can.Message] = []
    notifier = can.Notifier(sniffer_bus, [sniffed.append], timeout=0.1)
    ecus: dict[str, VirtualEcu] = {}
    ecu_notifier = can.Notifier(bus, [], timeout=0.1)
    sims = sims or {}
    for conf in cfg.ecu:
        identity = EPS_IDENTITY if conf.name == "eps" else DVR_IDENTITY
        ecus[conf.name] = VirtualEcu(sim_config(conf, identity, **sims.get(conf.name, {})),
                                     bus, ecu_notifier).start()
    bench = Bench(tmp, ota, server, cfg, channel, bus, ecus, dict(PARKED), Records(),
                  sniffed=sniffed)
    try:
        yield bench
    finally:
        bench.stop_manager()
        for ecu in ecus.values():
            ecu.stop()
        ecu_notifier.stop()
        notifier.stop()
        sniffer_bus.shutdown()
        bus.shutdown()
        server.stop()


def consent_via_inbox(bench: Bench, activity: str, accept: bool = True) -> None:
    from agent.ota.consent import ConsentInbox

    db = bench.db()
    try:
        ConsentInbox(db).post(activity, accept)
    finally:
        db.close()

