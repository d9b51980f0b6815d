"""Reading identification DIDs from a virtual ECU over ISO-TP."""

from __future__ import annotations

import pytest

from agent.ota.uds import FlashSession, NegativeResponse, StepTimeout, read_ecu_versions
from hil.ecu_sim import Fault
from tests.ota.conftest import UDS_IDENTITY, UDS_NEW_VERSIONS


def test_reads_every_default_version_did(uds_buses, uds_ecu_config, uds_virtual_ecu):
    ecu = uds_ecu_config()
    uds_virtual_ecu(ecu)

    versions = read_ecu_versions(ecu, uds_buses[0])

    assert versions.ecu == "eps"
    assert versions.as_dict() == UDS_IDENTITY
    assert versions.software_version == "1.0.0"
    assert versions.hardware_number == "HW-EPS-03"
    assert versions.missing == []


def test_unsupported_did_is_reported_missing_not_fatal(uds_buses, uds_ecu_config,
                                                       uds_virtual_ecu):
    ecu = uds_ecu_config(version_dids=["F189", "F1A0", "F191"])
    uds_virtual_ecu(ecu)

    versions = read_ecu_versions(ecu, uds_buses[0])

    assert versions.values == {0xF189: "1.0.0", 0xF191: "HW-EPS-03"}
    assert versions.missing == [0xF1A0]


def test_29bit_normal_fixed_addressing(uds_buses, uds_ecu_config, uds_virtual_ecu):
    ecu = uds_ecu_config(addressing="normal_fixed_29bit", source_address=0xF1,
                         target_address=0x5D, txid=0, rxid=0)
    uds_virtual_ecu(ecu)

    assert read_ecu_versions(ecu, uds_buses[0]).software_version == "1.0.0"


def test_silent_ecu_is_a_step_timeout(uds_buses, uds_ecu_config):
    ecu = uds_ecu_config(retries=1)             # nobody answers on this channel

    with pytest.raises(StepTimeout) as info:
        read_ecu_versions(ecu, uds_buses[0])

    assert info.value.step == "versions"


def test_refused_read_is_a_typed_negative_response(uds_buses, uds_ecu_config,
                                                  uds_virtual_ecu):
    ecu = uds_ecu_config()
    uds_virtual_ecu(ecu, fault=[Fault(kind="nrc", step="read", nrc=0x22)])

    with pytest.raises(NegativeResponse) as info:
        read_ecu_versions(ecu, uds_buses[0])

    assert info.value.nrc == 0x22 and info.value.step == "versions"


def test_fingerprint_is_readable_after_a_flash(uds_buses, uds_ecu_config, uds_virtual_ecu,
                                               uds_image):
    import datetime as dt

    ecu = uds_ecu_config(version_dids=["F189", "F198", "F199"])
    uds_virtual_ecu(ecu)
    result = FlashSession(ecu, uds_buses[0], uds_image(64 * 1024), UDS_NEW_VERSIONS,
                          tester_id="WS-0815", programming_date=dt.date(2025, 3, 1)).run()
    assert result.ok, result.error

    versions = read_ecu_versions(ecu, uds_buses[0])

    assert versions.as_dict() == {"F189": "2.0.0", "F198": "WS-0815", "F199": "2025-03-01"}
