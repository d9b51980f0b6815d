"""ControlDTCSetting (0x85): 85 02 stops storing DTCs while the bus is silenced for the
flash, 85 01 resumes. Only in the extended and programming sessions (NRC 0x7F in default,
which a functional request never hears); the default session and a reset turn it on."""

from __future__ import annotations

from hil.ecu_sim.services.base import Reply
from hil.ecu_sim.state import (
    DTC_SETTING_OFF,
    DTC_SETTING_ON,
    EXTENDED_SESSION,
    PROGRAMMING_SESSION,
    EcuState,
    Nrc,
)


def handle(state: EcuState, request: bytes) -> Reply:
    if len(request) < 2:
        raise Nrc(0x13)
    state.require_session(EXTENDED_SESSION, PROGRAMMING_SESSION)
    setting = request[1] & 0x7F
    if setting not in (DTC_SETTING_ON, DTC_SETTING_OFF):
        raise Nrc(0x12)                       # subFunctionNotSupported
    # request[2:] is the optional DTCSettingControlOptionRecord: all DTCs either way.
    state.dtc_setting = setting
    state.count("dtc_setting_off" if setting == DTC_SETTING_OFF else "dtc_setting_on")
    return Reply(bytes([0xC5, setting]), suppress=bool(request[1] & 0x80))
