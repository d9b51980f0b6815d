"""Scenario (a timeline of canonical values) -> CAN trace, through a config's mapping.

Scenario file (TOML)::

    duration = 60.0                       # seconds
    start = "2026-07-01T08:00:00Z"        # UTC of t = 0 (optional)
    [[step]]
    at = 0.0
    set = { "Vehicle.Speed" = 0.0, "Vehicle.ADAS.CDA.State" = "OFF" }
    [[step]]
    at = 5.0
    ramp = { "Vehicle.Speed" = [100.0, 10.0] }   # to 100 km/h over 10 s, linearly
    [[step]]
    at = 20.0
    mute = ["Vehicle.Driver.IsEyesOnRoad"]       # its message stops (ECU silent, wire cut)
    [[step]]
    at = 22.0
    unmute = ["Vehicle.Driver.IsEyesOnRoad"]

Values hold until changed. Every mapped message is sent at its DBC cycle time with alive
counters advancing. ``Vehicle.TraveledDistance`` (if mapped and never set after t = 0)
integrates ``Vehicle.Speed``, so odometer and speed agree like on a real vehicle.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import can

from agent.config import AgentConfig
from agent.settings_loader import ConfigError, Problems, build, read_toml
from agent.signals import CATALOGUE, FLOAT
from agent.timefmt import parse_iso, plausible
from hil.trace.encode import EncodeError, TraceEncoder

ODOMETER = "Vehicle.TraveledDistance"
SPEED = "Vehicle.Speed"


@dataclass
class Step:
    at: float
    set: dict[str, Any] = field(default_factory=dict)
    ramp: dict[str, list[float]] = field(default_factory=dict)
    # Canonical signals whose messages stop being sent (mute) or come back (unmute).
    mute: list[str] = field(default_factory=list)
    unmute: list[str] = field(default_factory=list)


@dataclass
class Scenario:
    duration: float
    step: list[Step] = field(default_factory=list)
    start: str = "2026-07-01T08:00:00Z"
    description: str = ""
    # Used by the scenario tests only; the generator ignores them. ``config`` names the
    # file in config/ the scenario is written for; ``expect`` is an ordered list of
    # records ({type, data subset, at seconds, tol}); ``expect_absent`` types must not occur.
    config: str = "bench"
    expect: list[dict[str, Any]] = field(default_factory=list)
    expect_absent: list[str] = field(default_factory=list)

    @property
    def start_epoch(self) -> float:
        return parse_iso(self.start)


class GenerateError(Exception):
    """The trace cannot be written (``str()`` is one line naming the file)."""


def load_scenario(path: Path) -> Scenario:
    problems = Problems()
    table = read_toml(path, problems)
    if table is None:
        raise ConfigError(problems)
    sc = build(Scenario, table, path, problems)
    try:
        if not plausible(sc.start_epoch):
            problems.add(path, "start", f"{sc.start!r} is outside 1970..2200")
    except ValueError:
        problems.add(path, "start", f"not an ISO-8601 time: {sc.start!r}")
    # TOML has inf and nan: an endless duration never ends, a NaN cannot be encoded
    if not (math.isfinite(sc.duration) and sc.duration > 0):
        problems.add(path, "duration", f"expected a finite number of seconds > 0, got "
                     f"{sc.duration!r}")
    last = -1.0
    for i, step in enumerate(sc.step):
        if not (math.isfinite(step.at) and step.at >= 0):
            problems.add(path, f"step[{i}].at", f"expected a finite time >= 0, got {step.at!r}")
        elif step.at < last:
            problems.add(path, f"step[{i}].at", "steps must be in time order")
        else:
            last = step.at
        for name, value in step.set.items():
            spec = CATALOGUE.get(name)
            if spec is None:
                problems.add(path, f"step[{i}].set.{name}", "not a canonical signal")
                continue
            try:
                step.set[name] = spec.coerce(value)
            except ValueError as exc:
                problems.add(path, f"step[{i}].set.{name}", str(exc))
                continue
            if isinstance(value, float) and not math.isfinite(value):
                problems.add(path, f"step[{i}].set.{name}", f"not a finite number: {value!r}")
        for key, names in (("mute", step.mute), ("unmute", step.unmute)):
            for j, name in enumerate(names):
                if name not in CATALOGUE:
                    problems.add(path, f"step[{i}].{key}[{j}]", "not a canonical signal")
        for name, value in step.ramp.items():
            spec = CATALOGUE.get(name)
            if spec is None or spec.kind != FLOAT:
                problems.add(path, f"step[{i}].ramp.{name}", "only float signals can ramp")
            elif (len(value) != 2 or not all(math.isfinite(v) for v in value)
                  or value[1] <= 0):
                problems.add(path, f"step[{i}].ramp.{name}", "expected [target, seconds > 0]")
    if problems:
        raise ConfigError(problems)
    return sc


def check_scenario(cfg: AgentConfig, sc: Scenario, path: Path) -> Problems:
    """Where the trace would not be what the scenario says, as ``key.path: problem``: a step
    after ``duration`` (it would never happen), a signal no bus carries (mapped nowhere or
    listed under ``[mapping.lacks]``: it would be dropped), a value the mapping cannot
    express (an enum value would come out as another one, often OFF/NONE) or a number
    beyond the range of its DBC signal."""
    problems = Problems()
    encoders = [TraceEncoder(setup) for setup in cfg.buses]
    carried = {name for enc in encoders for name in enc.ranks}
    kind = {name: spec.kind for name, spec in CATALOGUE.items()}
    timeline = Timeline(sc)
    for i, step in enumerate(sc.step):
        if step.at > sc.duration:
            problems.add(path, f"step[{i}].at", f"{step.at:g} is after duration = "
                         f"{sc.duration:g}: the step would never happen")
            continue
        named = ([(f"set.{n}", n) for n in step.set] + [(f"ramp.{n}", n) for n in step.ramp]
                 + [(f"{key}[{j}]", n) for key, names in (("mute", step.mute),
                                                           ("unmute", step.unmute))
                    for j, n in enumerate(names)])
        for key, name in named:
            if name not in carried:
                problems.add(path, f"step[{i}].{key}", _not_carried(cfg, name))
        values = [("set", name, value) for name, value in step.set.items()]
        values += [("ramp", name, float(v[0])) for name, v in step.ramp.items()]
        for key, name, value in values:
            for enc in encoders:
                why = enc.range_problem(name, value)
                if why is not None:
                    problems.add(path, f"step[{i}].{key}.{name}",
                                 f"{why} on bus {enc.setup.name}")
        exact = {n: v for n, v in step.set.items() if n in carried and kind[n] != FLOAT}
        if not exact:
            continue
        # an enum/bool/int value must come back from the frames as it was set
        wanted = dict(timeline.at(step.at))
        for enc in encoders:
            shown = enc.shown(wanted)
            for name, want in exact.items():
                if name in shown and shown[name] != want and enc.range_problem(
                        name, want) is None:
                    can = ", ".join(map(str, enc.expressible(name)))
                    problems.add(path, f"step[{i}].set.{name}",
                                 f"{want!r} cannot be expressed on bus {enc.setup.name} "
                                 f"(its mapping carries {can}); the trace would carry "
                                 f"{shown[name]!r}")
    return problems


def _not_carried(cfg: AgentConfig, name: str) -> str:
    for setup in cfg.buses:
        why = setup.mapping.mapping.lacks.get(name)
        if why is not None:
            return (f"bus {setup.name} lacks it ({setup.config.mapping}: {why}); "
                    "the trace cannot carry it")
    return "no bus of the config maps it; the trace cannot carry it"


class Timeline:
    """Canonical values at any time of a scenario."""

    def __init__(self, sc: Scenario):
        self.sc = sc
        self.values: dict[str, Any] = {}
        self.muted: set[str] = set()
        self.ramps: dict[str, tuple[float, float, float, float]] = {}  # t0, v0, t1, v1
        self._i = 0
        self._last_t = 0.0
        self.integrate_odometer = not any(
            ODOMETER in s.set for s in sc.step if s.at > 0) and not any(
            ODOMETER in s.ramp for s in sc.step)

    def at(self, t: float) -> dict[str, Any]:
        steps = self.sc.step
        while self._i < len(steps) and steps[self._i].at <= t + 1e-9:
            step = steps[self._i]
            for name, value in step.set.items():
                self.values[name] = value
                self.ramps.pop(name, None)
            for name, (target, seconds) in step.ramp.items():
                v0 = float(self.values.get(name, 0.0))
                self.ramps[name] = (step.at, v0, step.at + seconds, float(target))
            self.muted.update(step.mute)
            self.muted.difference_update(step.unmute)
            self._i += 1
        for name, (t0, v0, t1, v1) in list(self.ramps.items()):
            if t >= t1:
                self.values[name] = v1
                del self.ramps[name]
            else:
                self.values[name] = v0 + (v1 - v0) * (t - t0) / (t1 - t0)
        if self.integrate_odometer and SPEED in self.values:
            odo = float(self.values.get(ODOMETER, 0.0))
            self.values[ODOMETER] = odo + float(self.values[SPEED]) * (t - self._last_t) / 3600
        self._last_t = t
        return self.values


def generate(cfg: AgentConfig, sc: Scenario, out: Path) -> int:
    """Write the trace; return the number of frames. The format follows the suffix of
    ``out`` (candump ``.log``, ``.asc``, ``.blf``, ...) as python-can's Logger picks it.
    GenerateError (one line) if the file cannot be written."""
    encoders = [TraceEncoder(setup) for setup in cfg.buses]
    timeline = Timeline(sc)
    t0 = sc.start_epoch
    queue: list[tuple[float, int, int, int]] = []   # (t, seq, bus, message index)
    seq = 0
    for b, enc in enumerate(encoders):
        for m, me in enumerate(enc.messages):
            # stagger messages inside their cycle like real ECUs do
            heapq.heappush(queue, ((m * 0.0007) % me.cycle_s, seq, b, m))
            seq += 1
    count = 0
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        writer = can.Logger(str(out))
    except ValueError as exc:       # python-can: no writer for this suffix
        raise GenerateError(f"{out}: cannot write a trace in this format ({exc}); use .log "
                            "(candump), .asc, .blf, .csv, .trc or .db") from exc
    except OSError as exc:
        raise GenerateError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    t = 0.0
    try:
        with writer:
            while queue and queue[0][0] <= sc.duration:
                t, _, b, m = heapq.heappop(queue)
                enc = encoders[b]
                me = enc.messages[m]
                wanted = timeline.at(t)
                silent = timeline.muted and any(b.canonical in timeline.muted
                                                for b in me.plan.bindings)
                for frame_id, data, ext, fd in [] if silent else enc.frames(wanted, [me]):
                    writer.on_message_received(can.Message(
                        timestamp=t0 + t, arbitration_id=frame_id, data=data,
                        is_extended_id=ext, is_fd=fd, channel=cfg.buses[b].config.channel))
                    count += 1
                heapq.heappush(queue, (round(t + me.cycle_s, 6), seq, b, m))
                seq += 1
    except EncodeError as exc:
        raise GenerateError(f"{out}: cannot encode the frame at t = {t:g} s: {exc}") from exc
    except OSError as exc:
        raise GenerateError(f"{out}: cannot write: {exc.strerror or exc}") from exc
    return count
