"""Canonical signal catalogue (the contract of ``signals.md``).

Monitors, mappings, scenarios and records speak only these names, never DBC names, so one
monitor serves every OEM database. VSS paths where COVESA VSS has the signal;
``Vehicle.ADAS.CDA.*`` and ``Vehicle.Safety.*`` are the project's overlay.
"""

from __future__ import annotations

from dataclasses import dataclass

FLOAT = "float"
BOOL = "bool"
ENUM = "enum"
INT = "int"


@dataclass(frozen=True)
class SignalSpec:
    name: str
    kind: str
    unit: str = ""
    values: tuple[str, ...] = ()

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


def _s(name: str, kind: str, unit: str = "", values: str = "") -> SignalSpec:
    return SignalSpec(name, kind, unit, tuple(values.split()))


CATALOGUE: dict[str, SignalSpec] = {
    s.name: s
    for s in (
        _s("Vehicle.Speed", FLOAT, "km/h"),
        _s("Vehicle.TraveledDistance", FLOAT, "km"),
        _s("Vehicle.Acceleration.Longitudinal", FLOAT, "m/s^2"),
        _s("Vehicle.Acceleration.Lateral", FLOAT, "m/s^2"),
        _s("Vehicle.Chassis.SteeringWheel.Angle", FLOAT, "deg"),
        _s("Vehicle.Chassis.Accelerator.PedalPosition", FLOAT, "%"),
        _s("Vehicle.Chassis.Brake.IsPressed", BOOL),
        _s("Vehicle.Chassis.ParkingBrake.IsEngaged", BOOL),
        _s("Vehicle.Powertrain.Transmission.SelectedGear", ENUM, "", "P R N D"),
        _s("Vehicle.LowVoltageSystemState", ENUM, "", "OFF ACC ON START"),
        _s("Vehicle.LowVoltageBattery.CurrentVoltage", FLOAT, "V"),
        _s("Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed", FLOAT, "%"),
        _s("Vehicle.CurrentLocation.Latitude", FLOAT, "deg"),
        _s("Vehicle.CurrentLocation.Longitude", FLOAT, "deg"),
        _s("Vehicle.Body.Lights.Hazard.IsSignaling", BOOL),
        _s("Vehicle.Cabin.Seat.Row1.DriverSide.IsBelted", BOOL),
        _s("Vehicle.Driver.IsHandsOnWheel", BOOL),
        _s("Vehicle.Driver.IsEyesOnRoad", BOOL),
        _s("Vehicle.Driver.Monitoring.IsAvailable", BOOL),
        _s("Vehicle.ADAS.CDA.State", ENUM, "",
           "OFF STANDBY ACTIVE OVERRIDE MRM FAULT INHIBITED"),
        _s("Vehicle.ADAS.CDA.Function", ENUM, "", "NONE ACC LKA LCC NOA PARK"),
        _s("Vehicle.ADAS.CDA.ExitReason", ENUM, "",
           "NONE DRIVER SYSTEM_FAILURE ODD_EXIT DRIVER_DISENGAGED MRM"),
        _s("Vehicle.ADAS.CDA.WarningLevel", ENUM, "",
           "NONE HANDS_ON_REQUEST HANDS_ON_ESCALATED EYES_ON_REQUEST EYES_ON_ESCALATED "
           "TAKE_CONTROL"),
        _s("Vehicle.ADAS.CDA.WarningModality", INT),
        _s("Vehicle.ADAS.CDA.OddStatus", ENUM, "", "WITHIN APPROACHING_LIMIT EXCEEDED"),
        _s("Vehicle.ADAS.CDA.FaultCode", INT),
        _s("Vehicle.ADAS.AEB.IsEngaged", BOOL),
        _s("Vehicle.ADAS.ELK.IsEngaged", BOOL),
        _s("Vehicle.ADAS.FCW.IsWarning", BOOL),
        _s("Vehicle.Safety.Airbag.IsDeployed", BOOL),
        _s("Vehicle.Safety.Restraint.IsDeployed", BOOL),
        _s("Vehicle.Safety.VRUProtection.IsDeployed", BOOL),
        _s("Vehicle.Safety.CrashDetected", BOOL),
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
