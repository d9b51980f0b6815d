"""The image trailer's body CRC32 is checked by the tester before the ECU hears anything:
a damaged body is refused with a clear error and no request at all on the bus."""

from __future__ import annotations

from pathlib import Path

import can
import pytest
from bus_sniff import programming_requests

from agent.ota.uds import FlashSession, ImageError
from agent.ota.uds.image import ImageFormatError, check_image, read_trailer
from tests.ota.conftest import UDS_NEW_VERSIONS


def corrupt(path: Path, offset: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x40
    path.write_bytes(bytes(data))


def test_check_image_accepts_a_good_image_and_names_both_crcs_of_a_bad_one(uds_image):
    image = uds_image(8 * 1024)
    assert check_image(image).provides == UDS_NEW_VERSIONS
    corrupt(image)
    assert read_trailer(image).body_crc32            # the trailer itself still parses
    with pytest.raises(ImageFormatError, match=r"body CRC32 [0-9A-F]{8} does not match "
                                               r"the trailer's [0-9A-F]{8}"):
        check_image(image)


def test_corrupted_body_is_refused_before_any_request(uds_buses, uds_ecu_config,
                                                      uds_virtual_ecu, uds_image):
    """Before the fix the session erased the ECU and streamed the damaged body."""
    ecu = uds_ecu_config()
    sim = uds_virtual_ecu(ecu)
    image = uds_image(64 * 1024)
    corrupt(image, 30_000)
    sniffer = can.Bus(interface="virtual", channel=uds_buses[0].channel_id)
    try:
        result = FlashSession(ecu, uds_buses[0], image, UDS_NEW_VERSIONS).run()
        seen = []
        while (m := sniffer.recv(0.2)) is not None:
            seen.append(m)
    finally:
        sniffer.shutdown()
    assert isinstance(result.error, ImageError), result.error
    assert "body CRC32" in str(result.error) and result.error.step == "image"
    assert not result.touched and result.bytes_sent == 0
    assert programming_requests(seen, [ecu]) == []
    assert [m for m in seen if m.arbitration_id == ecu.txid] == []   # not even a read
    assert sim.versions()[0xF189] == "1.0.0"
