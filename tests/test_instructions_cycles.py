"""The ignition cycle of the instructions confirmation (draft GB L2) when the agent restarts
with every ignition (the counter and the confirmation persisted in the state db), and on a
bus without a cycle counter (power mode). Scenario -> trace -> the agent's pipeline on a
real SQLite state db, one run per ignition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.records.keys import DeviceKey
from tests.test_stats_restart import ROOT, make_config, make_trace, run_pipeline

BASE = ('"Vehicle.Speed" = 80.0, "Vehicle.ADAS.CDA.State" = "STANDBY", '
        '"Vehicle.ADAS.CDA.Function" = "NONE", "Vehicle.ADAS.CDA.ExitReason" = "NONE", '
        '"Vehicle.LowVoltageSystemState" = "ON"')


def drive(start: str, first: str, steps: list[tuple[float, str]], duration: float = 12.0
          ) -> str:
    """A scenario: ``first`` values at 0 s, then ``steps``; LCC on at 5 s, off at 9 s
    unless the steps say otherwise."""
    body = [f'start = "{start}"', f"duration = {duration}", "", "[[step]]", "at = 0.0",
            f"set = {{ {first}, {BASE} }}"]
    for at, values in steps:
        body += ["", "[[step]]", f"at = {at}", f"set = {{ {values} }}"]
    return "\n".join(body) + "\n"


ON = '"Vehicle.ADAS.CDA.State" = "ACTIVE", "Vehicle.ADAS.CDA.Function" = "LCC"'
OFF = '"Vehicle.ADAS.CDA.State" = "STANDBY", "Vehicle.ADAS.CDA.Function" = "NONE"'
CONFIRMED = '"Vehicle.ADAS.CDA.IsInstructionsConfirmed"'


def misuse(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r["data"] for r in records if r["type"] == "cda.misuse"]


def test_an_agent_started_with_every_ignition_still_sees_the_new_cycle(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    key = tmp_path / "device.key"
    DeviceKey.generate().save(key)

    def run(name: str, toml: str) -> list[dict[str, Any]]:
        return run_pipeline(cfg, make_trace(tmp_path, cfg, toml, name), key)

    # Cycle 7: reset, confirmed, LCC: fine.
    a = run("a", drive("2026-07-01T08:00:00Z", f'"Vehicle.IgnitionCycle" = 7, {CONFIRMED} = false',
                       [(2.0, f"{CONFIRMED} = true"), (5.0, ON), (9.0, OFF)]))
    assert misuse(a) == []
    # Cycle 8, a new agent run: the HMI shows true from power-on (never reset).
    b = run("b", drive("2026-07-01T09:00:00Z", f'"Vehicle.IgnitionCycle" = 8, {CONFIRMED} = true',
                       [(5.0, ON), (9.0, OFF)]))
    (m,) = misuse(b)
    assert (m["kind"], m["confirmation"], m["ignition_cycle"]) == ("activation", "carried_over", 8)
    assert (m["cycle_source"], m["cycle_start"]) == ("counter", None)   # began before the run
    assert [r["data"]["rule"] for r in b if r["type"] == "selfcheck.violation"] == [
        "instructions_confirmation_required"]
    # Cycle 9: reset and confirmed; the agent restarts within the cycle (same counter) and
    # the confirmation it saw still holds.
    c = run("c", drive("2026-07-01T10:00:00Z", f'"Vehicle.IgnitionCycle" = 9, {CONFIRMED} = false',
                       [(2.0, f"{CONFIRMED} = true"), (5.0, ON), (9.0, OFF)]))
    d = run("d", drive("2026-07-01T10:05:00Z", f'"Vehicle.IgnitionCycle" = 9, {CONFIRMED} = true',
                       [(5.0, ON), (9.0, OFF)]))
    assert misuse(c) == [] and misuse(d) == []
    assert [r["type"] for r in d].count("cda.activated") == 1


def test_without_a_counter_power_mode_starts_the_cycle(tmp_path: Path) -> None:
    mapping = (ROOT / "dbc" / "icv_reference.map.toml").read_text("utf-8")
    block = ('[[signal]]\nname = "Vehicle.IgnitionCycle"\nmessage = "BCM_BodySts"\n'
             'signal = "BCM_IgnCycCnt"\n\n')
    assert block in mapping
    mapping = mapping.replace(block, "").replace(
        "[mapping.lacks]\n", '[mapping.lacks]\n"Vehicle.IgnitionCycle" = "left out by the test"\n')
    (tmp_path / "ref.map.toml").write_text(mapping, "utf-8")
    cfg = make_config(tmp_path)
    cfg.write_text(cfg.read_text("utf-8").replace(
        f'"{ROOT}/dbc/icv_reference.map.toml"', f'"{tmp_path / "ref.map.toml"}"'), "utf-8")
    key = tmp_path / "device.key"
    DeviceKey.generate().save(key)
    power = '"Vehicle.LowVoltageSystemState"'
    toml = drive("2026-07-01T08:00:00Z", f"{CONFIRMED} = true", [
        (5.0, ON), (9.0, OFF),
        (12.0, f'{power} = "OFF"'), (14.0, f'{power} = "ACC"'), (15.0, f'{power} = "ON"'),
        (20.0, ON), (24.0, OFF),                       # the HMI kept true: carried over
        (26.0, f"{CONFIRMED} = false"), (27.0, f"{CONFIRMED} = true"),
        (30.0, ON), (34.0, OFF)], duration=36.0)
    records = run_pipeline(cfg, make_trace(tmp_path, cfg, toml), key)
    (m,) = misuse(records)
    assert (m["confirmation"], m["cycle_source"], m["ignition_cycle"]) == (
        "carried_over", "power_mode", None)
    assert m["cycle_start"].startswith("2026-07-01T08:00:15.")
    assert [r["type"] for r in records].count("cda.activated") == 3
