"""Safe state for an update (regulation §2): read from the live vehicle state.

An unknown value (signal unmapped, never seen or stale) is NOT safe, unless the
``[ota.extra] not_required`` list names the condition (e.g. ``soc`` on a vehicle without a
traction battery). The campaign checks before the start, before each ECU and, through
``FlashSession(precondition=...)``, between transfer blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from agent.ota.settings import OtaConfig

GEAR = "Vehicle.Powertrain.Transmission.SelectedGear"
PARKING_BRAKE = "Vehicle.Chassis.ParkingBrake.IsEngaged"
SPEED = "Vehicle.Speed"
POWER_STATE = "Vehicle.LowVoltageSystemState"
LV_VOLTAGE = "Vehicle.LowVoltageBattery.CurrentVoltage"
SOC = "Vehicle.Powertrain.TractionBattery.StateOfCharge.Displayed"
CDA_STATE = "Vehicle.ADAS.CDA.State"

# Condition name -> canonical signal it reads.
CONDITIONS = {
    "gear": GEAR, "parking_brake": PARKING_BRAKE, "speed": SPEED,
    "power_state": POWER_STATE, "lv_voltage": LV_VOLTAGE, "soc": SOC, "cda_off": CDA_STATE,
}
# CDA states in which the function is in use (the update must not start or go on).
CDA_IN_USE = ("ACTIVE", "OVERRIDE", "MRM")

Reader = Callable[[str], Any]


@dataclass(frozen=True)
class Violation:
    condition: str          # one of CONDITIONS
    signal: str
    value: Any              # None: unknown (unmapped, stale or never seen)
    required: Any

    def reason(self) -> str:
        shown = "unknown" if self.value is None else repr(self.value)
        return f"{self.condition}: {self.signal} is {shown}, required {self.required}"

    def as_dict(self) -> dict[str, Any]:
        return {"condition": self.condition, "signal": self.signal, "value": self.value,
                "required": self.required}


class SafeState:
    """Checks the configured preconditions against ``read(signal) -> value | None``."""

    def __init__(self, config: OtaConfig, read: Reader, not_required: Iterable[str] = ()):
        self.config = config
        self.read = read
        self.not_required = set(not_required)
        unknown = self.not_required - set(CONDITIONS)
        if unknown:
            raise ValueError(f"not_required: unknown condition(s) {sorted(unknown)}, "
                             f"known: {', '.join(CONDITIONS)}")
        self.last: Violation | None = None

    def rules(self) -> list[tuple[str, Any, Callable[[Any], bool]]]:
        """(condition, required (for the record), test) of every enabled condition."""
        c = self.config
        rules: list[tuple[str, Any, Callable[[Any], bool]]] = []
        if c.require_gear:
            rules.append(("gear", c.require_gear, lambda v: v == c.require_gear))
        if c.require_parking_brake:
            rules.append(("parking_brake", True, lambda v: v is True))
        rules.append(("speed", f"<= {c.max_speed_kmh:g} km/h",
                      lambda v: isinstance(v, (int, float)) and v <= c.max_speed_kmh))
        if c.allowed_power_states:
            rules.append(("power_state", list(c.allowed_power_states),
                          lambda v: v in c.allowed_power_states))
        if c.min_lv_voltage > 0:
            rules.append(("lv_voltage", f">= {c.min_lv_voltage:g} V",
                          lambda v: isinstance(v, (int, float)) and v >= c.min_lv_voltage))
        if c.min_soc_percent > 0:
            rules.append(("soc", f">= {c.min_soc_percent:g} %",
                          lambda v: isinstance(v, (int, float)) and v >= c.min_soc_percent))
        if c.require_cda_off:
            rules.append(("cda_off", f"not {'/'.join(CDA_IN_USE)}",
                          lambda v: isinstance(v, str) and v not in CDA_IN_USE))
        return rules

    def violations(self) -> list[Violation]:
        out = []
        for name, required, ok in self.rules():
            signal = CONDITIONS[name]
            value = self.read(signal)
            if value is None and name in self.not_required:
                continue
            if value is None or not ok(value):
                out.append(Violation(name, signal, value, required))
        return out

    def check(self) -> Violation | None:
        """The first violated condition, or None when the vehicle is in the safe state."""
        found = self.violations()
        self.last = found[0] if found else None
        return self.last

    def __call__(self) -> str | None:
        """``FlashSession`` precondition: None when safe, else the reason."""
        violation = self.check()
        return None if violation is None else violation.reason()
