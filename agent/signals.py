"""Canonical signal catalogue: the contract docs/signals.md is generated from.

Monitors, mappings, scenarios and records speak only these names, never DBC names, so one
monitor serves every OEM database. VSS paths where COVESA VSS has the signal;
``Vehicle.ADAS.CDA.*`` and ``Vehicle.Safety.*`` are the project's overlay.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FLOAT = "float"
BOOL = "bool"
ENUM = "enum"
INT = "int"


@dataclass(frozen=True)
class SignalSpec:
    """One canonical signal: its type, unit, allowed values and what each value means.

    ``doc`` and ``meanings`` are the text of docs/signals.md (``python -m agent.signals
    --markdown`` writes it), so the contract a mapping author reads is this data.
    """

    name: str
    kind: str
    unit: str = ""
    values: tuple[str, ...] = ()
    doc: str = ""
    meanings: tuple[tuple[str, str], ...] = ()     # (value, meaning): enum states, int codes

    def coerce(self, value: object) -> object:
        """Turn a scenario/config value into the canonical Python type, or raise ValueError."""
        if self.kind == FLOAT:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if self.kind == INT:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer, got {value!r}")
            return value
        if self.kind == BOOL:
            if not isinstance(value, bool):
                raise ValueError(f"expected true/false, got {value!r}")
            return value
        if value not in self.values:
            raise ValueError(f"expected one of {', '.join(self.values)}, got {value!r}")
        return value


def _s(name: str, kind: str, unit: str = "", doc: str = "",
       states: dict[str, str] | None = None) -> SignalSpec:
    """A signal; for an enum ``states`` lists every value with its meaning, in order."""
    meanings = tuple((states or {}).items())
    values = tuple(v for v, _ in meanings) if kind == ENUM else ()
    return SignalSpec(name, kind, unit, values, doc, meanings)


CATALOGUE: dict[str, SignalSpec] = {
    s.name: s
    for s in (
        _s("Vehicle.Speed", FLOAT, "km/h", "Vehicle speed over ground, as the driver's "
           "display shows it; never negative (reversing is the gear, not the sign)."),
        _s("Vehicle.TraveledDistance", FLOAT, "km", "Odometer reading. Session distances "
           "are its difference where mapped, else the integral of the speed."),
        _s("Vehicle.Acceleration.Longitudinal", FLOAT, "m/s^2", "Acceleration along the "
           "vehicle's x axis (ISO 8855): positive forward, braking negative. Feeds the "
           "delta-V accident trigger (|a| integrated) and the MRM's peak deceleration."),
        _s("Vehicle.Acceleration.Lateral", FLOAT, "m/s^2",
           "Acceleration along the y axis (ISO 8855): positive to the left."),
        _s("Vehicle.Chassis.SteeringWheel.Angle", FLOAT, "deg",
           "Steering wheel angle: positive to the left, negative to the right (VSS)."),
        _s("Vehicle.Chassis.Accelerator.PedalPosition", FLOAT, "%",
           "Accelerator pedal travel, 0 released .. 100 fully pressed."),
        _s("Vehicle.Chassis.Brake.IsPressed", BOOL, "", "The driver presses the brake "
           "pedal; a cue that the driver ended a CDA session."),
        _s("Vehicle.Chassis.ParkingBrake.IsEngaged", BOOL, "", "Parking brake applied."),
        _s("Vehicle.Powertrain.Transmission.SelectedGear", ENUM, "", "Gear selector.",
           {"P": "park", "R": "reverse", "N": "neutral", "D": "drive (any forward gear)"}),
        _s("Vehicle.LowVoltageSystemState", ENUM, "", "Ignition / power mode (terminal "
           "states).", {"OFF": "off (terminal 30 only)", "ACC": "accessories (terminal R)",
                        "ON": "ignition on (terminal 15)", "START": "cranking (terminal 50)"}),
        _s("Vehicle.IgnitionCycle", INT, "", "Ignition (power-on) cycle counter as the "
           "body controller or gateway counts it: any change starts a new ignition cycle, "
           "the period the instructions confirmation holds for. Where it is unmapped, "
           "Vehicle.LowVoltageSystemState entering ON or START from OFF or ACC starts "
           "one."),
        _s("Vehicle.LowVoltageBattery.CurrentVoltage", FLOAT, "V",
           "12 V (or 24 V) battery voltage; an OTA precondition."),
        _s("Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed", FLOAT, "%",
           "High-voltage battery state of charge as displayed; an OTA precondition."),
        _s("Vehicle.CurrentLocation.Latitude", FLOAT, "deg",
           "WGS-84 latitude, positive north; in accident records."),
        _s("Vehicle.CurrentLocation.Longitude", FLOAT, "deg",
           "WGS-84 longitude, positive east; in accident records."),
        _s("Vehicle.Body.Lights.Hazard.IsSignaling", BOOL, "", "Hazard lights flashing. "
           "An MRM must switch them on (limit mrm_requires_hazard_lights)."),
        _s("Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted", BOOL, "", "Driver's seat belt "
           "fastened; in accident records."),
        _s("Vehicle.Driver.IsHandsOnWheel", BOOL, "", "The system detects the driver's "
           "hands on the wheel (torque or capacitive sensing). False while CDA is active "
           "above the monitoring speed starts a hands-off episode."),
        _s("Vehicle.Driver.IsEyesOnRoad", BOOL, "", "The driver monitoring system (DMS) "
           "sees the driver looking at the road. False while CDA is active above the "
           "monitoring speed starts an eyes-off episode."),
        _s("Vehicle.Driver.Monitoring.IsAvailable", BOOL, "", "The DMS is working (camera "
           "not blocked, driver found); false means IsEyesOnRoad tells nothing."),
        _s("Vehicle.ADAS.CDA.State", ENUM, "",
           "State of combined driver assistance (组合驾驶辅助, L2). ACTIVE, OVERRIDE and "
           "MRM are \"in use\": they open a session (cda.activated ... cda.deactivated) "
           "and count in the statistics and the accident look-back.", {
               "OFF": "switched off (by the driver, or not yet switched on this drive); "
                      "cannot be activated until switched on",
               "STANDBY": "switched on and available, not controlling the vehicle; the "
                          "driver can activate it",
               "ACTIVE": "the system controls steering and/or speed; the driver "
                         "supervises (hands and eyes monitored)",
               "OVERRIDE": "still engaged, but the driver is overriding for the moment "
                           "(steering, accelerator) without switching it off; in use",
               "MRM": "minimal risk manoeuvre: the system brings the vehicle to a safe "
                      "stop on its own (driver unresponsive or a failure); in use",
               "FAULT": "not available because of a system failure (see FaultCode)",
               "INHIBITED": "activation prohibited: a lockout after misuse (repeated "
                            "ignored warnings, an MRM for an unresponsive driver) or a "
                            "precondition not met; entering it gives cda.lockout",
           }),
        _s("Vehicle.ADAS.CDA.IsInstructionsConfirmed", BOOL, "", "The driver confirmed the "
           "system's use instructions (training) in this ignition cycle, as the HMI shows "
           "it; the HMI sets it false at every power-on. Activating CDA without it is "
           "misuse (draft GB 组合驾驶辅助系统安全要求: confirmation at every ignition); a "
           "true carried over from the previous cycle without a reset does not count."),
        _s("Vehicle.ADAS.CDA.IsActivationRequested", BOOL, "", "The driver operates the "
           "activation control (lever or button) to switch CDA on: an activation attempt, "
           "whether the system accepts it or not."),
        _s("Vehicle.ADAS.CDA.Function", ENUM, "", "Which assistance function is engaged.",
           {"NONE": "none engaged", "ACC": "adaptive cruise control (longitudinal only)",
            "LKA": "lane keeping assist (lateral only)",
            "LCC": "lane centring with ACC (lateral and longitudinal)",
            "NOA": "navigate on autopilot / pilot assist on a route (lane changes, "
                   "ramps)", "PARK": "assisted or remote parking"}),
        _s("Vehicle.ADAS.CDA.ExitReason", ENUM, "", "Why the system says the last session "
           "ended, if it says so; else the agent infers the reason (cda.deactivated "
           "exit_reason_source).",
           {"NONE": "no reason given (the agent infers one)",
            "DRIVER": "the driver switched it off or took over (brake, steering)",
            "SYSTEM_FAILURE": "a system failure ended it",
            "ODD_EXIT": "the vehicle left the operational design domain (road type, "
                        "weather, speed range)",
            "DRIVER_DISENGAGED": "ended because the driver did not respond to hands-on / "
                                 "eyes-on warnings",
            "MRM": "ended by (or after) a minimal risk manoeuvre"}),
        _s("Vehicle.ADAS.CDA.WarningLevel", ENUM, "", "The driver warning the system is "
           "giving now; the disengagement monitors time each step against the limits.",
           {"NONE": "no warning",
            "HANDS_ON_REQUEST": "first request to put the hands on the wheel (visual)",
            "HANDS_ON_ESCALATED": "escalated hands-on warning (acoustic and/or haptic)",
            "EYES_ON_REQUEST": "first request to look at the road",
            "EYES_ON_ESCALATED": "escalated eyes-on warning (acoustic and/or haptic)",
            "TAKE_CONTROL": "take-over alert: the driver must take control now (an MRM "
                            "follows if not)"}),
        _s("Vehicle.ADAS.CDA.WarningModality", INT, "bit set", "How the current warning is "
           "given: bits 1 visual, 2 acoustic, 4 haptic (3 = visual + acoustic).",
           {"0": "no warning output", "1": "visual", "2": "acoustic", "4": "haptic"}),
        _s("Vehicle.ADAS.CDA.OddStatus", ENUM, "",
           "Where the vehicle is relative to the operational design domain.",
           {"WITHIN": "inside the ODD",
            "APPROACHING_LIMIT": "an ODD limit is near (e.g. end of a mapped motorway)",
            "EXCEEDED": "outside the ODD; a session ending now is an odd_exit"}),
        _s("Vehicle.ADAS.CDA.SystemInitiatedManoeuvre", ENUM, "", "A manoeuvre the system "
           "starts on its own while in use (UN R171 system-initiated manoeuvres), counted "
           "per period.",
           {"NONE": "none running",
            "LANE_CHANGE": "a lane change the system decided (overtaking, lane ending, "
                           "route)",
            "RAMP": "entering or leaving a motorway ramp or interchange on the route",
            "OTHER": "another system-initiated manoeuvre (e.g. yielding to an emergency "
                     "vehicle)"}),
        _s("Vehicle.ADAS.CDA.FaultCode", INT, "", "The system's fault code; any value but "
           "0 is a fault (a session ending with one is a system_failure).",
           {"0": "no fault"}),
        _s("Vehicle.ADAS.AEB.IsEngaged", BOOL, "",
           "Automatic emergency braking is braking (gives safety.aeb)."),
        _s("Vehicle.ADAS.AEB.IsAvailable", BOOL, "", "Automatic emergency braking is "
           "switched on and able to brake (not off, degraded or faulted). It must not "
           "become unavailable while CDA is in use (limit aeb_must_stay_available)."),
        _s("Vehicle.ADAS.ELK.IsEngaged", BOOL, "",
           "Emergency lane keeping is steering (gives safety.elk)."),
        _s("Vehicle.ADAS.FCW.IsWarning", BOOL, "",
           "Forward collision warning is shown (gives safety.fcw)."),
        _s("Vehicle.Safety.Airbag.IsDeployed", BOOL, "", "Any airbag fired: an accident "
           "trigger with possible injury (report deadline 24 h)."),
        _s("Vehicle.Safety.Restraint.IsDeployed", BOOL, "", "An irreversible restraint "
           "(belt pretensioner) fired: an accident trigger (24 h)."),
        _s("Vehicle.Safety.VRUProtection.IsDeployed", BOOL, "", "Pedestrian protection "
           "(active hood, external airbag) fired: an accident trigger (24 h)."),
        _s("Vehicle.Safety.CrashDetected", BOOL, "", "The restraint controller's crash "
           "output without a deployment: an accident trigger (48 h)."),
    )
}

# Warning modality bits (Vehicle.ADAS.CDA.WarningModality).
MODALITY_VISUAL = 1
MODALITY_ACOUSTIC = 2
MODALITY_HAPTIC = 4


def modality_names(bits: int) -> list[str]:
    names = []
    for bit, name in ((MODALITY_VISUAL, "visual"), (MODALITY_ACOUSTIC, "acoustic"),
                      (MODALITY_HAPTIC, "haptic")):
        if bits & bit:
            names.append(name)
    return names


# -- docs/signals.md ------------------------------------------------------------------------

DOC_PATH = "docs/signals.md"
_INTRO = """\
These names are a contract: mappings, monitors, scenarios, records and tests all use
them, never DBC names, so one monitor serves every OEM database. VSS paths where COVESA
VSS has the signal; `Vehicle.ADAS.CDA.*` (combined driver assistance, 组合驾驶辅助) and
`Vehicle.Safety.*` are the project's overlay. Enumerations are strings in records,
mappings and scenarios (`docs/mapping.md` turns raw DBC values into them).

A mapping may leave a signal unmapped (`[mapping.lacks]`): a monitor that **needs** it
then says once, at start, that it cannot run, and stays off; it never guesses. A monitor
that only **watches** a signal gets its changes when it is mapped and does without it
otherwise (the record then says `null` or names the source it used instead). Monitors
also read the value of other signals at the moment of an event (the speed at an AEB
onset, the odometer at a session's end); those reads are not listed. Every signal mapped
goes into the ±window of an `accident.record`.

Freshness: every mapped signal has a timeout (3 × its message's cycle time from the DBC,
else 1 s; `timeout` in the mapping overrides it). A timed-out signal is unknown (`null`),
never its last value, and gives `signal.stale` / `signal.restored` records."""


def _users(spec: SignalSpec, monitors: list[Any], conditions: dict[str, str]
           ) -> tuple[list[str], list[str], list[str]]:
    needed = [m.name for m in monitors if spec.name in m.inputs]
    watched = [m.name for m in monitors if spec.name in m.watches and m.name not in needed]
    ota = [cond for cond, signal in conditions.items() if signal == spec.name]
    return needed, watched, ota


def _names(items: list[str]) -> str:
    return ", ".join(f"`{i}`" for i in items) or "–"


def markdown() -> str:
    """docs/signals.md: every canonical signal with its meaning and who uses it."""
    from agent.monitors import ALL
    from agent.ota.preconditions import CONDITIONS

    monitors: list[Any] = []
    todo = list(ALL)
    while todo:                  # ALL and the monitors they use (started for them)
        m = todo.pop(0)
        if m not in monitors:
            monitors.append(m)
            todo[:0] = getattr(m, "uses", ())
    lines = ["# Canonical signals", "",
             f"<!-- Generated from agent/signals.py by `python -m agent.signals --markdown > "
             f"{DOC_PATH}`; tests/test_signals_doc.py fails when this file differs. -->", "",
             _INTRO, "", "## Overview", "",
             "| signal | type | unit | values | needed by | watched by | OTA precondition |",
             "|---|---|---|---|---|---|---|"]
    for spec in CATALOGUE.values():
        needed, watched, ota = _users(spec, monitors, CONDITIONS)
        values = " ".join(f"`{v}`" for v in spec.values) if spec.kind == ENUM else ""
        if spec.kind == BOOL:
            values = "`true` `false`"
        lines.append(f"| [`{spec.name}`](#{_anchor(spec.name)}) | {spec.kind} | "
                     f"{spec.unit or '–'} | {values or '–'} | {_names(needed)} | "
                     f"{_names(watched)} | {_names(ota)} |")
    lines += ["", "## Signals", ""]
    for spec in CATALOGUE.values():
        needed, watched, ota = _users(spec, monitors, CONDITIONS)
        kind = spec.kind + (f", {spec.unit}" if spec.unit else "")
        lines += [f"### {spec.name}", "", f"*{kind}.* {spec.doc}", ""]
        if spec.meanings:
            head = "state" if spec.kind == ENUM else "value"
            lines += [f"| {head} | meaning |", "|---|---|"]
            lines += [f"| `{value}` | {meaning} |" for value, meaning in spec.meanings]
            lines.append("")
        users = [f"needed by {_names(needed)}" if needed else "",
                 f"watched by {_names(watched)}" if watched else "",
                 f"OTA precondition {_names(ota)}" if ota else ""]
        lines += ["Used: " + ("; ".join(u for u in users if u) or
                              "in accident records only") + ".", ""]
    lines += ["## Monitors", "",
              "| monitor | module | needs (off without) | watches | uses the results of |",
              "|---|---|---|---|---|"]
    for m in monitors:
        watches = [w for w in m.watches if w not in m.inputs]
        uses = [u.name for u in getattr(m, "uses", ())]
        lines.append(f"| `{m.name}` | `{m.__module__}` | {_names(list(m.inputs))} | "
                     f"{_names(watches)} | {_names(uses)} |")
    lines += ["", "The limits the monitors judge against (`[limits]`) are listed with their "
              "defaults in `config/full.toml`.", ""]
    return "\n".join(lines + _events())


def _field(name: str, spec: dict[str, Any]) -> str:
    values = [v for v in spec.get("enum", ()) if v is not None]
    return f"`{name}`" + (f" ({' '.join(f'`{v}`' for v in values)})" if values else "")


def _events() -> list[str]:
    """The event types of the record schema, with what they mean and their data fields."""
    import json
    from pathlib import Path

    schema = json.loads((Path(__file__).parent / "records" / "schema.json")
                        .read_text(encoding="utf-8"))
    lines = ["## Event records", "",
             "What the monitors and the agent emit, by `type`. Every record has the common "
             "fields, hash and signature of `docs/records.md`; `data` as below (from "
             "`agent/records/schema.json`, which checks it; fields not listed may be there "
             "too).", "",
             "| type | emitted when | `data` fields (required; *optional*) |", "|---|---|---|"]
    for kind, spec in schema["$defs"]["data"].items():
        props = spec.get("properties", {})
        required = spec.get("required", [])
        fields = [_field(n, props.get(n, {})) for n in required]
        fields += [f"*{_field(n, p)}*" for n, p in props.items() if n not in required]
        lines.append(f"| `{kind}` | {spec.get('description', '')} | "
                     f"{', '.join(fields) or '–'} |")
    return lines + [""]


def _anchor(name: str) -> str:
    """The GitHub heading anchor of ``### name``: lowercase, dots dropped."""
    return name.lower().replace(".", "")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m agent.signals",
                                     description="The canonical signal catalogue.")
    parser.add_argument("--markdown", action="store_true",
                        help=f"print {DOC_PATH} (every signal, its states and its users)")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown())
    else:
        for spec in CATALOGUE.values():
            print(f"{spec.name}\t{spec.kind}\t{spec.unit}\t{' '.join(spec.values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
