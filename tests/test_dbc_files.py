"""The DBC files, their mapping files and the example configs agree with each other.

Only cantools and tomllib: these checks hold whatever the agent's mapping loader does, so a
broken mapping is caught here with the exact entry named.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import cantools
import pytest

from agent.config import AgentConfig
from agent.settings_loader import Problems, build
from agent.signals import BOOL, CATALOGUE, ENUM, FLOAT

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
DBC_DIR = ROOT / "dbc"
CONFIG_DIR = ROOT / "config"
REFERENCE_DBC = DBC_DIR / "icv_reference.dbc"
REFERENCE_MAP = DBC_DIR / "icv_reference.map.toml"

# mapping file -> the DBC it is written for
MAPPINGS = {
    "icv_reference.map.toml": "icv_reference.dbc",
    "mg.map.toml": "mg.dbc",
    "tesla_model3_party.map.toml": "tesla_model3_party.dbc",
}
REAL_MAPPINGS = ["mg.map.toml", "tesla_model3_party.map.toml"]
CONFIGS = ["bench.toml", "mg.toml", "tesla-model3.toml"]

ENTRY_KEYS = {"name", "message", "signal", "factor", "offset", "values", "default", "invert",
              "timeout", "invalid"}
COUNTER_OR_CHECKSUM = re.compile(r"(alive|cntr|counter|chksum|checksum|crc)", re.IGNORECASE)


def read_toml(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        return tomllib.load(fh)


def load_db(name: str) -> Any:
    return cantools.database.load_file(str(DBC_DIR / name))


def raw_range(sig: Any) -> tuple[int, int]:
    if sig.is_signed:
        return -(1 << (sig.length - 1)), (1 << (sig.length - 1)) - 1
    return 0, (1 << sig.length) - 1


def entry_problems(entry: dict[str, Any], db: Any) -> list[str]:
    """Everything wrong with one [[signal]] entry against its DBC."""
    out = []
    unknown = set(entry) - ENTRY_KEYS
    if unknown:
        out.append(f"unknown keys {sorted(unknown)}")
    spec = CATALOGUE.get(entry.get("name"))
    if spec is None:
        return out + [f"{entry.get('name')!r} is not a canonical signal"]
    try:
        msg = db.get_message_by_name(entry["message"])
    except KeyError:
        return out + [f"no message {entry['message']!r}"]
    try:
        sig = msg.get_signal_by_name(entry["signal"])
    except KeyError:
        return out + [f"message {msg.name} has no signal {entry['signal']!r}"]

    labels: dict[str, list[int]] = {}
    for raw, label in (sig.choices or {}).items():
        labels.setdefault(str(label), []).append(int(raw))
    lo, hi = raw_range(sig)
    values = entry.get("values", {})
    for key, canon in values.items():
        try:
            raw = int(key, 0)
        except ValueError:
            if key not in labels:
                out.append(f"{key!r} is not an integer nor a label of {sig.name}")
                continue
            if len(labels[key]) > 1:
                out.append(f"label {key!r} is ambiguous in {sig.name}: raw {labels[key]}")
                continue
            raw = labels[key][0]
        if not lo <= raw <= hi:
            out.append(f"raw {raw} does not fit the {sig.length}-bit signal {sig.name}")
        try:
            spec.coerce(canon)
        except ValueError as exc:
            out.append(f"values.{key}: {exc}")
    if "default" in entry:
        try:
            spec.coerce(entry["default"])
        except ValueError as exc:
            out.append(f"default: {exc}")
    if spec.kind == ENUM and not values:
        out.append(f"{spec.name} is an enum: a values table is needed")
    if ("factor" in entry or "offset" in entry) and spec.kind != FLOAT:
        out.append("factor/offset apply to float signals only")
    if "invert" in entry and (spec.kind != BOOL or values):
        out.append("invert applies to bool signals without values only")
    if "timeout" in entry and not entry["timeout"] > 0:
        out.append("timeout must be > 0")
    return out


# --- the reference DBC --------------------------------------------------------------------

def test_reference_dbc_loads_strictly_as_classic_can_500k():
    db = cantools.database.load_file(str(REFERENCE_DBC), strict=True)
    assert db.dbc.attributes["Baudrate"].value == 500000
    for msg in db.messages:
        assert not msg.is_extended_frame and msg.frame_id <= 0x7FF, msg.name
        assert not msg.is_fd and msg.length <= 8, msg.name


def test_reference_messages_all_have_a_cycle_time():
    db = load_db("icv_reference.dbc")
    missing = [m.name for m in db.messages if not m.cycle_time]
    assert missing == []


def test_reference_dynamics_and_cda_state_are_sent_every_10_ms():
    db = load_db("icv_reference.dbc")
    by_name = {e["name"]: e for e in read_toml(REFERENCE_MAP)["signal"]}
    for canonical in ("Vehicle.Speed", "Vehicle.Acceleration.Longitudinal",
                      "Vehicle.Chassis.SteeringWheel.Angle", "Vehicle.ADAS.CDA.State"):
        msg = db.get_message_by_name(by_name[canonical]["message"])
        assert msg.cycle_time == 10, (canonical, msg.name, msg.cycle_time)


def test_reference_mapping_maps_every_canonical_signal():
    table = read_toml(REFERENCE_MAP)
    mapped = [e["name"] for e in table["signal"]]
    assert set(mapped) == set(CATALOGUE)
    assert table["mapping"]["lacks"] == {}


def test_reference_mapping_never_maps_alive_counters_or_checksums():
    mapped = [e["signal"] for e in read_toml(REFERENCE_MAP)["signal"]]
    assert [s for s in mapped if COUNTER_OR_CHECKSUM.search(s)] == []


def test_reference_fast_messages_carry_4_bit_counter_and_8_bit_checksum():
    db = load_db("icv_reference.dbc")
    for msg in db.messages:
        if msg.cycle_time > 20:
            continue
        counters = [s for s in msg.signals if s.name.endswith("_AliveCntr")]
        checksums = [s for s in msg.signals if s.name.endswith("_Chksum")]
        assert [s.length for s in counters] == [4], msg.name
        assert [s.length for s in checksums] == [8], msg.name


def test_reference_has_motorola_signed_scaled_and_multiplexed_signals():
    db = load_db("icv_reference.dbc")
    sigs = {s.name: (m, s) for m in db.messages for s in m.signals}
    _, angle = sigs["EPS_SteerWhlAng"]
    assert angle.byte_order == "big_endian" and angle.is_signed
    _, accel = sigs["ESP_LongAccel"]
    assert accel.is_signed and accel.minimum < -100 and accel.maximum > 100  # crash pulses
    _, odo = sigs["VCU_TotOdo"]
    assert odo.length >= 24 and odo.scale == pytest.approx(0.1)
    _, speed = sigs["ESP_VehSpd"]
    assert speed.scale == pytest.approx(0.01)
    for name in ("TBOX_GNSS_Lat", "TBOX_GNSS_Lon"):
        _, pos = sigs[name]
        assert pos.length == 32 and pos.is_signed and pos.scale == pytest.approx(1e-7)
    msg, eyes = sigs["DMS_EyesOnRoadSts"]
    assert msg.is_multiplexed() and eyes.multiplexer_ids == [0]
    _, modality = sigs["ADAS_CDA_WarnModality"]
    assert modality.length == 3 and not modality.choices   # a bit set, not an enum


def _round_trip_cases() -> list[tuple[str, int | None]]:
    # Lenient at collection time: a broken DBC fails the strict test, not the collection.
    db = cantools.database.load_file(str(REFERENCE_DBC), strict=False)
    cases: list[tuple[str, int | None]] = []
    for msg in db.messages:
        muxes = sorted({i for s in msg.signals for i in (s.multiplexer_ids or [])})
        cases += [(msg.name, m) for m in muxes] if muxes else [(msg.name, None)]
    return cases


@pytest.mark.parametrize("fraction", [0.27, 0.73])
@pytest.mark.parametrize(("message", "mux"), _round_trip_cases())
def test_reference_message_round_trips(message: str, mux: int | None, fraction: float):
    msg = load_db("icv_reference.dbc").get_message_by_name(message)
    values: dict[str, float | int] = {}
    for sig in msg.signals:
        if sig.is_multiplexer:
            values[sig.name] = mux
        elif sig.multiplexer_ids is not None and mux not in sig.multiplexer_ids:
            continue
        elif sig.choices:
            raws = sorted(int(k) for k in sig.choices)
            values[sig.name] = raws[int(fraction * (len(raws) - 1) + 0.5)]
        else:
            target = sig.minimum + fraction * (sig.maximum - sig.minimum)
            raw = round((target - sig.offset) / sig.scale)
            values[sig.name] = raw * sig.scale + sig.offset
    data = msg.encode(values, strict=True)
    assert len(data) == msg.length
    decoded = msg.decode(data, decode_choices=False)
    assert set(decoded) == set(values)
    for name, value in values.items():
        tolerance = msg.get_signal_by_name(name).scale / 2
        assert decoded[name] == pytest.approx(value, abs=tolerance), name


# --- every mapping file against its DBC ---------------------------------------------------

@pytest.mark.parametrize("mapping", sorted(MAPPINGS))
def test_mapping_entries_name_real_dbc_signals_and_valid_values(mapping: str):
    db = load_db(MAPPINGS[mapping])
    table = read_toml(DBC_DIR / mapping)
    assert set(table) == {"mapping", "signal"}
    assert table["mapping"]["description"]
    problems = [f"signal[{i}] {e.get('name')}: {p}"
                for i, e in enumerate(table["signal"]) for p in entry_problems(e, db)]
    assert problems == []


@pytest.mark.parametrize("mapping", REAL_MAPPINGS)
def test_real_mapping_maps_or_explains_every_canonical_signal(mapping: str):
    table = read_toml(DBC_DIR / mapping)
    mapped = {e["name"] for e in table["signal"]}
    lacks = table["mapping"]["lacks"]
    assert mapped & set(lacks) == set(), "both mapped and listed as lacking"
    assert set(CATALOGUE) - mapped - set(lacks) == set(), "neither mapped nor listed as lacking"
    assert set(lacks) - set(CATALOGUE) == set(), "lacks names a non-canonical signal"
    assert [n for n, reason in lacks.items() if not reason.strip()] == []


def test_tesla_hands_on_escalation_overrides_autopilot_state():
    entries = [e for e in read_toml(DBC_DIR / "tesla_model3_party.map.toml")["signal"]
               if e["name"] == "Vehicle.ADAS.CDA.State"]
    first = entries[0]
    assert first["signal"] == "DAS_autopilotHandsOnState"
    assert first["values"] == {"LC_HANDS_ON_REQD_SLOWING": "MRM",
                               "LC_HANDS_ON_REQD_STRUCK_OUT": "INHIBITED"}
    assert "default" not in first   # every other hands-on state falls through
    assert any(e["signal"] == "DAS_autopilotState" for e in entries[1:])


def test_imperfect_real_dbcs_need_lenient_loading():
    for name in ("gwm_haval_h6_phev_2024.dbc", "hongqi_hs5.dbc"):
        with pytest.raises(Exception, match="overlapping"):
            cantools.database.load_file(str(DBC_DIR / name), strict=True)
        assert cantools.database.load_file(str(DBC_DIR / name), strict=False).messages


# --- example configs ----------------------------------------------------------------------

@pytest.mark.parametrize("config", CONFIGS)
def test_example_config_matches_the_agent_model_and_names_existing_files(config: str):
    path = CONFIG_DIR / config
    table = read_toml(path)
    problems = Problems()
    cfg = build(AgentConfig, table, path, problems)
    assert problems.lines() == []
    assert cfg.bus
    for bus in cfg.bus:
        dbcs = [(path.parent / d).resolve() for d in bus.dbc]
        mapping = (path.parent / bus.mapping).resolve()
        assert all(d.is_file() for d in dbcs), dbcs
        assert mapping.is_file(), mapping
        assert MAPPINGS[mapping.name] in [d.name for d in dbcs]
