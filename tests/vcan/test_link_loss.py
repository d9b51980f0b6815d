"""The CAN interface goes away under the running agent (``ip link set vcan0 down``, then
deleted and created again): the agent stays up, counts it, reconnects and decodes again."""

from __future__ import annotations

from pathlib import Path

from tests.vcan.can_bench import (
    cansend,
    ip_link,
    records,
    running_agent,
    send_until,
    wait_counters,
    write_config,
)


def speed_frame(i: int) -> str:
    """ESP_VehSpd with a payload of its own, so the decoder decodes it (not 'unchanged')."""
    return f"125#{bytes([i] * 8).hex().upper()}"


def test_agent_survives_link_down_and_interface_recreated(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    state = tmp_path / "state"
    try:
        with running_agent(cfg) as agent:
            cansend("vcan0", speed_frame(1))
            wait_counters(state, lambda c: c["decoded"] == 1, "first frame decoded")

            ip_link("set", "vcan0", "down")
            down = wait_counters(state, lambda c: c["errors"] >= 1 and c["reconnects"] >= 1,
                                 "read error counted and bus reopened after link down")
            ip_link("set", "vcan0", "up")
            up = send_until(state, "vcan0", lambda c: c["decoded"] >= 2,
                            "decoded after link up")
            assert up["connected"]

            ip_link("delete", "vcan0")
            gone = wait_counters(state, lambda c: c["open_failures"] >= 1 and
                                 not c["connected"], "open failures while vcan0 is gone")
            ip_link("add", "dev", "vcan0", "type", "vcan")
            ip_link("set", "vcan0", "mtu", "16")          # classic CAN, as the VM made it
            ip_link("set", "vcan0", "up")
            back = send_until(state, "vcan0", lambda c: c["decoded"] > up["decoded"],
                              "decoded on the new vcan0")
            assert agent.proc is not None and agent.proc.poll() is None
    finally:
        if not Path("/sys/class/net/vcan0").exists():   # leave vcan0 for the other tests
            ip_link("add", "dev", "vcan0", "type", "vcan")
            ip_link("set", "vcan0", "mtu", "16")
        ip_link("set", "vcan0", "up")
    assert down["errors"] >= 1 and not up["bus_off"]
    assert gone["errors"] > up["errors"]                # the delete broke the open socket
    assert back["connected"] and back["reconnects"] > gone["reconnects"]
    assert back["unmapped"] == 0
    types = [r["type"] for r in records(state)]
    assert types[0] == "agent.started" and types[-1] == "agent.stopped"
    assert types.count("agent.started") == 1                # one process all along
