"""Live buses: replay between processes, acceptance filters, surviving a failing adapter."""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import time
from pathlib import Path

import can

from agent import config as agent_config
from agent.ingest.buses import BusReader
from hil.benchconfig import bench_config
from tests import flaky_bus
from tests.helpers import wait_until
from tests.live_agent import multicast_group, port_of

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "config" / "bench.toml"


def bench_with(tmp: Path, interface: str, channel: str,
               extra: str = "") -> agent_config.AgentConfig:
    return agent_config.load(bench_config(tmp / "bench.toml", interface=interface,
                                          channel=channel, bus_lines=extra))


def drain(q: queue.SimpleQueue, until: float) -> list:
    out = []
    while time.monotonic() < until:
        try:
            out.append(q.get(timeout=0.05))
        except queue.Empty:
            continue
    return out


def take(q: queue.SimpleQueue, into: list) -> list:
    """Move what ``q`` holds right now to the end of ``into``; return ``into``."""
    while True:
        try:
            into.append(q.get_nowait())
        except queue.Empty:
            return into


def roomy_receive_buffer(bus: can.BusABC, size: int = 8 << 20) -> int:
    """Grow the receive buffer of a python-can udp_multicast bus's socket; the size got.

    A loaded machine can stall a reader thread for a good part of a second, and the kernel
    drops the datagrams that do not fit (``RcvbufErrors`` in /proc/net/snmp): the default
    ~208 KiB holds about 0.3 s of the test drive. Like the vcan suite's ``socket_buffers``
    this gives the bench transport room; what the agent reads and how is unchanged.
    SO_RCVBUFFORCE needs CAP_NET_ADMIN; without it SO_RCVBUF is capped at rmem_max."""
    sock = bus._multicast._socket  # python-can's GeneralPurposeUdpMulticastBus socket
    try:
        sock.setsockopt(socket.SOL_SOCKET, getattr(socket, "SO_RCVBUFFORCE", 33), size)
    except OSError:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    return sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # the kernel doubles it


# After the expected count arrived: how long a surplus (a duplicate, a frame the filter
# should have kept out) gets to show up before the exact assert.
SETTLE_S = 0.3


def test_replay_over_udp_multicast_between_processes(tmp_path: Path) -> None:
    group = multicast_group()
    port = port_of(group)
    cfg = bench_with(tmp_path, "udp_multicast", group, f"options = {{ port = {port} }}")
    sc = tmp_path / "ten.toml"
    sc.write_text('duration = 10.0\n[[step]]\nat = 0.0\nset = { "Vehicle.Speed" = 0.0 }\n'
                  '[[step]]\nat = 1.0\nramp = { "Vehicle.Speed" = [120.0, 8.0] }\n')
    trace = tmp_path / "ten.log"
    r = subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(sc), "-c",
                        str(BENCH), "-o", str(trace)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sent = [(m.arbitration_id, bytes(m.data)) for m in can.LogReader(str(trace))]
    assert len(sent) > 1000

    q: queue.SimpleQueue = queue.SimpleQueue()
    reader = BusReader(0, cfg.buses[0], q)
    reader.start()
    assert reader.opened.wait(10), "agent bus did not open"
    try:
        roomy_receive_buffer(reader.link.bus)
        proc = subprocess.run(
            [sys.executable, "-m", "hil.cli", "replay", str(trace), "--interface",
             "udp_multicast", "--channel", group, "-O", f"port={port}", "--quiet"],
            cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert f"sent {len(sent)} frames" in proc.stdout, proc.stdout
        # The reader may lag the sender on a loaded machine: wait for the count (generous,
        # a lost frame still fails below), then give a surplus time to arrive.
        got: list = []
        wait_until(lambda: len(take(q, got)) >= len(sent), 60)
        time.sleep(SETTLE_S)
        take(q, got)
    finally:
        reader.stop()
        reader.join(5)
    received = [(m.arbitration_id, bytes(m.data)) for _, m, _ in got]
    assert received == sent, f"{len(received)} of {len(sent)} frames, or out of order"
    stamps = [t for _, _, t in got]
    assert stamps == sorted(stamps)


def test_acceptance_filters_keep_unmapped_frames_out(tmp_path: Path) -> None:
    cfg = bench_with(tmp_path, "virtual", "filters-1")
    mapped = next(iter(cfg.buses[0].plans.values())).message
    mapped_ids = {p.message.frame_id for p in cfg.buses[0].plans.values()}
    unmapped_id = next(i for i in range(0x700, 0x7FF) if i not in mapped_ids)
    q: queue.SimpleQueue = queue.SimpleQueue()
    reader = BusReader(0, cfg.buses[0], q)
    reader.start()
    assert reader.opened.wait(5)
    tx = can.Bus(interface="virtual", channel="filters-1")
    got: list = []
    try:
        for i in range(50):
            tx.send(can.Message(arbitration_id=unmapped_id, data=bytes(8)))
            tx.send(can.Message(arbitration_id=mapped.frame_id, data=bytes([i]) * mapped.length,
                                is_extended_id=mapped.is_extended_frame))
        # The last mapped frame comes after every unmapped one: once 50 arrived, a leaked
        # unmapped frame would be among them or arrive within the settle time.
        wait_until(lambda: len(take(q, got)) >= 50 and reader.counters.received >= 50, 30)
        time.sleep(SETTLE_S)
    finally:
        tx.shutdown()
        reader.stop()
        reader.join(5)
    take(q, got)
    assert [m.arbitration_id for _, m, _ in got] == [mapped.frame_id] * 50
    assert reader.counters.received == 50


def test_failing_and_vanishing_adapter_is_survived(tmp_path: Path) -> None:
    flaky_bus.install_plugin(tmp_path / "site")
    cfg = bench_with(tmp_path, "flaky", "flaky-1",
                     "reconnect_min_s = 0.05\nreconnect_max_s = 0.2")
    flaky_bus.PLAN.update(fail_recv_after=5, refuse_opens=2, opens=0)
    mapped = next(iter(cfg.buses[0].plans.values())).message
    q: queue.SimpleQueue = queue.SimpleQueue()
    reader = BusReader(0, cfg.buses[0], q, recv_timeout=0.05)
    reader.start()
    tx = can.Bus(interface="virtual", channel="flaky-1")
    got = []
    try:
        deadline = time.monotonic() + 20
        i = 0
        while len(got) < 20 and time.monotonic() < deadline:
            tx.send(can.Message(arbitration_id=mapped.frame_id,
                                data=bytes([i % 256]) * mapped.length,
                                is_extended_id=mapped.is_extended_frame))
            i += 1
            got.extend(drain(q, time.monotonic() + 0.01))
    finally:
        tx.shutdown()
        reader.stop()
        reader.join(5)
    c = reader.counters
    assert len(got) >= 20, c.as_dict()
    assert c.open_failures == 2       # the adapter was gone twice at start
    assert c.errors == 1              # then "Network is down" while reading
    assert c.reconnects == 1          # ... and it came back
    assert flaky_bus.PLAN["opens"] == 4


def test_a_driver_outside_python_can_plugs_in_as_a_can_interface_entry_point(
        tmp_path: Path) -> None:
    """A fresh interpreter with the plugin package installed: the config names the
    interface and the agent opens it through python-can's factory, nothing else."""
    flaky_bus.install_plugin(tmp_path / "site", name="oem_adapter")
    cfg_path = bench_config(tmp_path / "bench.toml", interface="oem_adapter", channel="x")
    script = ("import sys; from agent import config; from agent.ingest.buses import open_bus;"
              f"cfg = config.load({str(cfg_path)!r}); bus = open_bus(cfg.buses[0]);"
              "print(type(bus).__module__, type(bus).__name__); bus.shutdown()")
    r = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                       text=True, timeout=120,
                       env={"PYTHONPATH": f"{tmp_path / 'site'}:{ROOT}", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["tests.flaky_bus", "FlakyBus"]


def test_an_unknown_interface_is_a_config_problem(tmp_path: Path) -> None:
    for interface, hint in (("pcann", False), ("tests.flaky_bus:FlakyBus", True)):
        try:
            bench_with(tmp_path, interface, "x")
        except agent_config.ConfigError as exc:
            text = str(exc)
        else:
            raise AssertionError(f"{interface!r} was accepted")
        assert f"bus[0].interface: {interface!r} is not a python-can interface (known: " in text
        assert "socketcan" in text and "virtual" in text
        assert ("'can.interface' group" in text) is hint, text


def test_can_conf_canrc_and_can_variables_do_not_change_a_bus(tmp_path: Path,
                                                              monkeypatch) -> None:
    """python-can merges /etc/can.conf, ~/.canrc and CAN_* into what a caller did not set
    (CAN_CONFIG may set anything): the agent's buses are what its config says. Fails before
    ignore_config: the bus received its own frames."""
    from agent.ingest.buses import open_bus

    (tmp_path / ".canrc").write_text("[default]\ninterface = udp_multicast\n"
                                     "receive_own_messages = True\nbitrate = 125000\n")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("CAN_INTERFACE", "udp_multicast")
    monkeypatch.setenv("CAN_CHANNEL", "239.74.163.2")
    monkeypatch.setenv("CAN_BITRATE", "125000")
    monkeypatch.setenv("CAN_CONFIG", '{"receive_own_messages": true, "can_filters": null}')
    cfg = bench_with(tmp_path, "virtual", "icv-env-test")
    bus = open_bus(cfg.buses[0])
    try:
        assert type(bus).__name__ == "VirtualBus" and bus.channel_info.endswith("icv-env-test")
        assert bus.receive_own_messages is False
        mapped = next(iter(cfg.buses[0].plans.values())).message
        bus.send(can.Message(arbitration_id=mapped.frame_id, data=bytes(mapped.length),
                             is_extended_id=mapped.is_extended_frame))
        assert bus.recv(0.2) is None            # its own frame is not read back
    finally:
        bus.shutdown()
