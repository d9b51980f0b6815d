"""Two constructs of real DBCs in a mapping: a sign from a direction bit (Hongqi
``EPS_1.STEER_ANGLE`` + ``STEER_ANGLE_DIRECTION``) and one value from two signals (Hongqi
``TURN_SIGNALS``: left and right at once = hazard lights). Through the shipped
``config/hongqi-hs5.toml`` and ``icv-agent analyze --signals`` on a trace made with
cantools from the real DBC; the BCM content filter carries the second signal's bits; a
wrong ``sign``/``combine`` is a ``FILE: key.path: problem`` line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import can
import cantools
import pytest

from agent import config as agent_config
from agent.ingest.dbc import signal_bits
from agent.ingest.decoder import FrameDecoder
from agent.ingest.socketcan import content_filters

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "config" / "hongqi-hs5.toml"
DBC = ROOT / "dbc" / "hongqi_hs5.dbc"
ANGLE = "Vehicle.Chassis.SteeringWheel.Angle"
HAZARD = "Vehicle.Body.Lights.Hazard.IsSignaling"
T0 = 1751356800.0


def hongqi() -> cantools.database.Database:
    return cantools.database.load_file(str(DBC), strict=False)


def frame(db: cantools.database.Database, name: str, **values: float) -> tuple[int, bytes]:
    msg = db.get_message_by_name(name)
    full = {s.name: 0 for s in msg.signals} | values
    return msg.frame_id, msg.encode(full, strict=False)


def write_trace(path: Path, frames: list[tuple[float, int, bytes]]) -> Path:
    path.write_text("".join(f"({T0 + t:.6f}) can0 {fid:03X}#{data.hex().upper()}\n"
                            for t, fid, data in frames))
    return path


def signals(trace: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "agent.cli", "analyze", "--signals", *extra,
                           "--config", str(CONFIG), str(trace)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_sign_bit_and_combined_turn_signals_through_analyze(tmp_path: Path) -> None:
    db = hongqi()
    steer = [(0.0, 12.375, 0), (0.5, 12.375, 1), (1.0, 0.0225, 1), (1.5, 90.0, 0)]
    lamps = [(0.0, 0, 0), (0.4, 1, 0), (0.8, 1, 1), (1.2, 0, 1), (1.6, 0, 0)]
    frames = []
    for t, angle, direction in steer:
        frames.append((t, *frame(db, "EPS_1", STEER_ANGLE=angle,
                                 STEER_ANGLE_DIRECTION=direction)))
    for t, left, right in lamps:
        frames.append((t + 0.01, *frame(db, "TURN_SIGNALS", LEFT_TURN_SIGNALING=left,
                                        RIGHT_TURN_SIGNALING=right)))
    trace = write_trace(tmp_path / "hongqi.log", sorted(frames))
    r = signals(trace)
    assert r.returncode == 0, r.stderr
    changes = [json.loads(line) for line in r.stdout.splitlines()]
    # the direction bit alone (0.5 s) is a change: right = negative, as VSS counts
    assert [c["value"] for c in changes if c["signal"] == ANGLE] == \
        [12.375, -12.375, -0.0225, 90.0]
    # left alone is a turn signal, left and right together the hazard lights
    assert [(c["ts"][17:23], c["value"]) for c in changes if c["signal"] == HAZARD] == \
        [("00.010", False), ("00.810", True), ("01.210", False)]


def test_the_second_signal_is_in_the_mask_and_the_bcm_filter() -> None:
    setup = agent_config.load(CONFIG).buses[0]
    db = hongqi()
    for message, first, second in (("EPS_1", "STEER_ANGLE", "STEER_ANGLE_DIRECTION"),
                                   ("TURN_SIGNALS", "LEFT_TURN_SIGNALING",
                                    "RIGHT_TURN_SIGNALING")):
        msg = db.get_message_by_name(message)
        plan = setup.plans[msg.frame_id]
        (binding,) = plan.bindings
        assert (binding.dbc_signal, binding.extra) == (first, second)
        bits = 0
        for name in (first, second):
            for byte, bit in signal_bits(msg.get_signal_by_name(name)):
                bits |= 1 << ((plan.length - 1 - byte) * 8 + bit)
        assert plan.mask == bits, message
        (op,) = content_filters({msg.frame_id: plan}, fd=False)
        assert int.from_bytes(op.frames[0][8:8 + plan.length], "big") == bits
    # one flipped bit of the second signal is not skipped as "unchanged"
    decoder = FrameDecoder(setup)
    fid, left = frame(db, "TURN_SIGNALS", LEFT_TURN_SIGNALING=1)
    _, both = frame(db, "TURN_SIGNALS", LEFT_TURN_SIGNALING=1, RIGHT_TURN_SIGNALING=1)
    seen = [decoder.decode(can.Message(arbitration_id=fid, is_extended_id=False, data=d), t)
            for t, d in ((1.0, left), (1.1, left), (1.2, both))]
    assert [None if u is None else [v for _, v in u] for u in seen] == [[False], None, [True]]


def test_plain_entries_keep_the_one_signal_path() -> None:
    for name in ("bench.toml", "mg.toml", "tesla-model3.toml"):
        setup = agent_config.load(ROOT / "config" / name).buses[0]
        assert all(b.extra is None and b.combine is None
                   for p in setup.plans.values() for b in p.bindings), name


STEER = '''[[signal]]
name = "{name}"
message = "EPS_1"
signal = "STEER_ANGLE"
{extra}
'''


@pytest.mark.parametrize("name, extra, key, problem", [
    (ANGLE, 'sign = { signal = "NO_SUCH" }', "signal[0].sign.signal",
     "message EPS_1 has no signal 'NO_SUCH'"),
    (ANGLE, 'sign = { signal = "STEER_ANGLE" }', "signal[0].sign.signal",
     "STEER_ANGLE is the entry's own signal"),
    (ANGLE, 'sign = { signal = "STEER_ANGLE_DIRECTION", negative = ["LEFT"] }',
     "signal[0].sign.negative[0]", "not an integer and not a value of "
     "STEER_ANGLE_DIRECTION's table"),
    (ANGLE, 'sign = { signal = "STEER_ANGLE_DIRECTION", negative = [] }',
     "signal[0].sign.negative", "names no raw value"),
    (ANGLE, 'sign = { negative = [1] }', "signal[0].sign.signal", "missing required key"),
    (ANGLE, 'sign = { signal = "STEER_ANGLE_DIRECTION", side = 1 }', "signal[0].sign.side",
     "unknown key"),
    (HAZARD, 'sign = { signal = "STEER_ANGLE_DIRECTION" }', "signal[0].sign",
     "Vehicle.Body.Lights.Hazard.IsSignaling is bool, sign needs a number"),
    (HAZARD, 'combine = { signal = "STEER_ANGLE_DIRECTION", op = "xor" }',
     "signal[0].combine.op", "'xor' is not one of and, or (for a bool signal)"),
    (ANGLE, 'combine = { signal = "STEER_ANGLE_DIRECTION", op = "and" }',
     "signal[0].combine.op", "'and' is not one of min, max, mean (for a float signal)"),
    (ANGLE, 'combine = { signal = "STEER_RATE", op = "max" }\n'
            'sign = { signal = "STEER_ANGLE_DIRECTION" }',
     "signal[0].combine", "sign and combine cannot both be given"),
    ("Vehicle.ADAS.CDA.FaultCode", 'values = { 0 = 0 }\n'
     'combine = { signal = "STEER_RATE", op = "max" }', "signal[0].combine",
     "not with a values table (sign and combine work on numbers and bools)"),
    (ANGLE, 'combine = "STEER_RATE"', "signal[0].combine", "expected a table"),
])
def test_wrong_sign_or_combine_is_named(tmp_path: Path, name: str, extra: str, key: str,
                                        problem: str) -> None:
    (tmp_path / "map.toml").write_text(STEER.format(name=name, extra=extra))
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[vehicle]\nvin = "LFPH4ABC0P1000001"\n[[bus]]\nname = "pt"\n'
                   f'interface = "virtual"\nchannel = "c1"\ndbc = ["{DBC}"]\n'
                   f'mapping = "map.toml"\n')
    r = subprocess.run([sys.executable, "-m", "agent.cli", "check-config", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert f"{tmp_path / 'map.toml'}: {key}: {problem}" in r.stderr + r.stdout, r.stderr
    assert "Traceback" not in r.stderr


SCENARIO = f"""duration = 3.0
[[step]]
at = 0.0
[step.set]
"Vehicle.Speed" = 50.0
"Vehicle.Chassis.Brake.IsPressed" = false
"Vehicle.Chassis.SteeringWheel.Angle" = 90.0
"Vehicle.Body.Lights.Hazard.IsSignaling" = false
[[step]]
at = 1.0
set = {{ "Vehicle.Chassis.SteeringWheel.Angle" = -45.0, "{HAZARD}" = true }}
[[step]]
at = 2.0
set = {{ "Vehicle.Chassis.SteeringWheel.Angle" = 0.0, "{HAZARD}" = false }}
"""


def test_a_scenario_on_the_hongqi_config_writes_both_signals(tmp_path: Path) -> None:
    """``icv-hil scenario`` sets the direction bit and both turn signals (it used to refuse
    -45 deg: beyond the unsigned magnitude's range)."""
    (tmp_path / "s.toml").write_text(SCENARIO)
    trace = tmp_path / "s.log"
    r = subprocess.run([sys.executable, "-m", "hil.cli", "scenario", str(tmp_path / "s.toml"),
                        "--config", str(CONFIG), "-o", str(trace)], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    db = hongqi()
    lamps = set()
    for line in trace.read_text().splitlines():
        fid, data = line.split()[2].split("#")
        if int(fid, 16) == db.get_message_by_name("TURN_SIGNALS").frame_id:
            v = db.decode_message(int(fid, 16), bytes.fromhex(data))
            lamps.add((v["LEFT_TURN_SIGNALING"], v["RIGHT_TURN_SIGNALING"]))
    assert lamps == {(0, 0), (1, 1)}
    r = signals(trace)
    assert r.returncode == 0, r.stderr
    changes = [json.loads(line) for line in r.stdout.splitlines()]
    assert [c["value"] for c in changes if c["signal"] == ANGLE] == [90.0, -45.0, 0.0]
    assert [c["value"] for c in changes if c["signal"] == HAZARD] == [False, True, False]
