"""The strict OEM bootloader of the virtual ECU (``[sim] strict = true``), driven by a
plain udsoncan client over real ISO-TP frames (physical) and a raw can-isotp stack on the
functional id (0x7DF): every wrong order gets the NRC of ISO 14229-1, the right order
flashes an image whose versions change after the reset."""

from __future__ import annotations

import os
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import can
import isotp
import pytest
from udsoncan import Request
from udsoncan.exceptions import NegativeResponseException

from agent.ota.settings import EcuConfig
from agent.ota.uds.connection import EcuLink, isotp_address
from agent.ota.uds.image import build_image
from agent.ota.uds.security import compute_key
from agent.settings_loader import ConfigError
from hil.ecu_sim import Fault, VirtualEcu, VirtualEcuConfig, load_sim_config
from hil.ecu_sim.services import step_of
from hil.ecu_sim.state import DEFAULT_SESSION, EXTENDED_SESSION, PROGRAMMING_SESSION
from tests.helpers import scaled, wait_until
from tests.ota.conftest import UDS_IDENTITY, uds_sim

NEW = {0xF188: "SW-BCM-0500", 0xF189: "5.0.0", 0xF195: "SUP-BCM-5.0.0"}
FINGERPRINT = bytes.fromhex("261202") + b"BENCH1"          # YYMMDD (BCD) + tester serial
ROOT = Path(__file__).resolve().parents[2]
BASE = 0x80000                                              # uds_ecu_config's memory


def h(text: str) -> bytes:
    return bytes.fromhex(text)


class Tester:
    """udsoncan on the physical ids, a can-isotp stack sending functionally, and a log of
    every frame the ECU sends back (to see answers nobody waited for)."""

    __test__ = False                                  # a helper, not a pytest class

    def __init__(self, ecu: EcuConfig, bus: can.BusABC, sim: VirtualEcu):
        self.ecu, self.sim = ecu, sim
        self.notifier = can.Notifier(bus, [], timeout=0.1)
        self.response_id = isotp_address(ecu).get_rx_arbitration_id()
        self.frames: list[can.Message] = []
        self.notifier.add_listener(self._sniff)          # before the link: sees frames first
        self.link = EcuLink(ecu, bus, self.notifier).open()
        self.client = self.link.client
        self.functional_stack = isotp.NotifierBasedCanStack(
            bus, self.notifier, address=functional_tester_address(ecu),
            params={"tx_padding": 0xCC, "blocking_send": True})
        self.functional_stack.start()

    def _sniff(self, msg: can.Message) -> None:
        if msg.arbitration_id == self.response_id:
            self.frames.append(msg)

    def close(self) -> None:
        self.functional_stack.stop()
        self.link.close()
        self.notifier.stop()

    # -- physical -----------------------------------------------------------------------

    def send(self, payload: bytes) -> bytes | None:
        """The positive answer, None when suppressed; NegativeResponseException on a NRC."""
        response = self.client.send_request(Request.from_payload(payload))
        return None if response is None else bytes(response.original_payload)

    def nrc(self, payload: bytes) -> int:
        with pytest.raises(NegativeResponseException) as caught:
            self.send(payload)
        return caught.value.response.code

    def suppressed(self, payload: bytes) -> int | None:
        """A physical request with suppressPosRsp: the NRC, or None when nothing came."""
        try:
            with self.client.suppress_positive_response(wait_nrc=True):
                self.client.send_request(Request.from_payload(payload))
        except NegativeResponseException as exc:
            return exc.response.code
        return None

    def unlock(self) -> None:
        seed = self.send(h("27 11"))
        assert seed is not None and seed[:2] == h("67 11")
        key = compute_key(self.ecu.key_algorithm, 0x11, seed[2:], self.ecu.secret())
        assert self.send(h("27 12") + key) == h("67 12")

    # -- functional ---------------------------------------------------------------------

    def functional(self, payload: bytes) -> list[bytes]:
        """Send ``payload`` to the functional id; every UDS answer the ECU sent to it."""
        before = self.sim.state.counters.get("functional_request", 0)
        mark = len(self.frames)
        self.functional_stack.send(payload, target_address_type=isotp.TargetAddressType.Functional)
        assert wait_until(lambda: self.sim.state.counters.get("functional_request", 0) > before,
                          scaled(5)), f"the ECU never took the functional {payload.hex(' ')}"
        # The answer to this TesterPresent comes after any answer to the functional request.
        assert self.send(h("3E 00")) == h("7E 00")
        answers = [single_frame(m.data) for m in self.frames[mark:]]
        assert answers[-1] == h("7E 00")
        return answers[:-1]

    # -- the flash sequence -------------------------------------------------------------

    def extended_with_bus_silenced(self) -> None:
        answers = self.functional(h("10 03"))
        assert [a[:2] for a in answers] == [h("50 03")]
        assert self.send(h("31 01 02 03")) == h("71 01 02 03 00")
        assert self.functional(h("85 82")) == []
        assert self.functional(h("28 83 01")) == []

    def programming(self) -> None:
        answer = self.send(h("10 02"))
        assert answer is not None and answer[:2] == h("50 02")

    def to_erase(self, size: int) -> None:
        self.extended_with_bus_silenced()
        self.programming()
        self.unlock()
        assert self.send(h("2E F1 5A") + FINGERPRINT) == h("6E F1 5A")
        assert self.send(erase_request(BASE, size)) == h("71 01 FF 00 00")

    def download(self, image: bytes) -> None:
        answer = self.send(h("34 00 44") + BASE.to_bytes(4, "big")
                           + len(image).to_bytes(4, "big"))
        assert answer is not None and answer[:2] == h("74 20")
        block = int.from_bytes(answer[2:4], "big") - 2
        for i, start in enumerate(range(0, len(image), block)):
            counter = (i + 1) & 0xFF
            assert self.send(bytes([0x36, counter]) + image[start:start + block]) == \
                bytes([0x76, counter])
        assert self.send(h("37")) == h("77")


def functional_tester_address(ecu: EcuConfig) -> isotp.AsymmetricAddress:
    """Transmit on the functional request id; receive on an id nobody uses (the link
    receives the answers; a second receiver would send a second flow control)."""
    if ecu.addressing == "normal_fixed_29bit":
        tx = isotp.Address(isotp.AddressingMode.NormalFixed_29bits, tx_only=True,
                           source_address=ecu.source_address, target_address=ecu.target_address)
        rx = isotp.Address(isotp.AddressingMode.Normal_29bits, rxid=0x1FFFFFF0, rx_only=True)
        return isotp.AsymmetricAddress(tx_addr=tx, rx_addr=rx)
    mode = (isotp.AddressingMode.Normal_11bits if ecu.addressing == "normal_11bit"
            else isotp.AddressingMode.Normal_29bits)
    return isotp.AsymmetricAddress(
        tx_addr=isotp.Address(mode, txid=ecu.functional_id, tx_only=True),
        rx_addr=isotp.Address(mode, rxid=0x7F0, rx_only=True))


def single_frame(data: bytes | bytearray) -> bytes:
    """The payload of an ISO-TP single frame (classic CAN), or the whole frame marked."""
    if data[0] >> 4 != 0:
        return b"not-a-single-frame:" + bytes(data)
    return bytes(data[1:1 + (data[0] & 0x0F)])


def erase_request(address: int, size: int) -> bytes:
    return h("31 01 FF 00 44") + address.to_bytes(4, "big") + size.to_bytes(4, "big")


def image_of(size: int) -> bytes:
    trailer = len(build_image(b"", NEW, {}))
    return build_image(os.urandom(size - trailer), NEW, {0xF191: UDS_IDENTITY["F191"]})


@pytest.fixture
def strict(uds_buses, uds_ecu_config) -> Iterator:
    """``make(**sim_changes)``: a strict single-bank ECU (BCM ids) and a Tester on it."""
    made: list[tuple[Tester, VirtualEcu]] = []

    def make(ecu: EcuConfig | None = None, faults: list[Fault] | None = None,
             **changes: object) -> Tester:
        ecu = ecu or uds_ecu_config(name="bcm", role="body", txid=0x7A6, rxid=0x7AE,
                                    key_algorithm="aes128-cmac", can_restore=False,
                                    exit_crc32=False)
        values: dict[str, object] = dict(strict=True, session_switch_s=0.3, s3_s=5.0)
        values.update(changes)
        config = VirtualEcuConfig(ecu=ecu, identity=dict(UDS_IDENTITY), sim=uds_sim(**values),
                                  fault=faults or [])
        sim = VirtualEcu(config, uds_buses[1]).start()
        tester = Tester(ecu, uds_buses[0], sim)
        made.append((tester, sim))
        return tester

    yield make
    for tester, sim in made:
        tester.close()
        sim.stop()


# -- the right order ------------------------------------------------------------------------

def test_the_strict_sequence_flashes_and_the_new_versions_run_after_the_reset(strict):
    t = strict()
    state = t.sim.state
    image = image_of(6000)

    t.extended_with_bus_silenced()
    assert (state.session, state.dtc_setting, state.comm_control, state.comm_type) == \
        (EXTENDED_SESSION, 0x02, 0x03, 0x01)
    t.programming()
    assert state.counters["boot_into_bootloader"] == 1
    assert any(single_frame(m.data) == h("7F 10 78") for m in t.frames)   # it booted first
    t.unlock()
    assert t.send(h("2E F1 5A") + FINGERPRINT) == h("6E F1 5A")
    assert t.send(h("22 F1 5A")) == h("62 F1 5A") + FINGERPRINT
    assert t.send(erase_request(BASE, 0x10000)) == h("71 01 FF 00 00")
    t.download(image)
    crc = zlib.crc32(image).to_bytes(4, "big")
    assert t.send(h("31 01 02 02") + crc) == h("71 01 02 02 00")
    assert t.send(h("31 01 FF 01")) == h("71 01 FF 01 00")
    assert state.dtc_setting == 0x02 and state.comm_control == 0x03   # still silenced
    assert t.send(h("11 01")) == h("51 01")
    assert wait_until(lambda: not state.rebooting, scaled(5))

    for did, value in NEW.items():
        assert t.send(h("22") + did.to_bytes(2, "big")) == \
            h("62") + did.to_bytes(2, "big") + value.encode()
    assert state.mode == "application" and state.session == DEFAULT_SESSION
    assert bytes(state.banks[state.active].data[:len(image)]) == image
    # The reset turned DTC setting and communication back on; the re-enable requests the
    # tester still sends hit a default-session ECU: 0x7F, which a functional request never
    # hears.
    assert (state.dtc_setting, state.comm_control) == (0x01, 0x00)
    assert t.functional(h("85 81")) == []
    assert t.functional(h("28 80 01")) == []
    assert state.counters.get("dtc_setting_on") is None


def test_re_enable_in_the_extended_session_before_the_reset(strict):
    t = strict()
    t.extended_with_bus_silenced()
    assert t.functional(h("85 81")) == []
    assert t.functional(h("28 80 01")) == []
    assert (t.sim.state.dtc_setting, t.sim.state.comm_control) == (0x01, 0x00)
    # Without suppressPosRsp a functional request is answered positively.
    assert t.functional(h("85 02")) == [h("C5 02")]
    assert t.functional(h("28 03 01")) == [h("68 03")]
    assert t.send(h("10 01"))[:2] == h("50 01")
    assert (t.sim.state.dtc_setting, t.sim.state.comm_control) == (0x01, 0x00)


# -- sessions ---------------------------------------------------------------------------------

def test_programming_session_only_from_extended(strict):
    t = strict()
    assert t.nrc(h("10 02")) == 0x22                         # conditionsNotCorrect
    assert t.sim.state.session == DEFAULT_SESSION
    # Functionally too: 0x22 is not one of the NRCs a functional request never hears.
    assert t.functional(h("10 82")) == [h("7F 10 22")]
    assert [a[:2] for a in t.functional(h("10 03"))] == [h("50 03")]
    t.programming()
    assert t.sim.state.session == PROGRAMMING_SESSION
    assert t.send(h("10 02"))[:2] == h("50 02")             # staying is fine
    assert t.nrc(h("10 03")) == 0x22                         # out only by reset or 10 01
    assert t.send(h("10 01"))[:2] == h("50 01")


def test_preconditions_not_met_refuse_the_programming_session(strict):
    t = strict(preconditions_ok=False)
    assert t.send(h("10 03"))[:2] == h("50 03")
    assert t.send(h("31 01 02 03")) == h("71 01 02 03 01")    # not ok
    assert t.nrc(h("10 02")) == 0x22


def test_precondition_fault_reports_not_ok_once(strict):
    t = strict(faults=[Fault(kind="preconditions_fail")])
    assert t.nrc(h("31 01 02 03")) == 0x31                   # not in the default session
    assert t.send(h("10 03"))[:2] == h("50 03")
    assert t.send(h("31 01 02 03")) == h("71 01 02 03 01")
    assert t.send(h("31 01 02 03")) == h("71 01 02 03 00")
    assert t.nrc(h("31 03 02 03")) == 0x12                   # only startRoutine


def test_functional_tester_present_keeps_the_session_past_s3(strict):
    t = strict(s3_s=1.0)
    t.extended_with_bus_silenced()
    end = time.monotonic() + scaled(2.5)
    while time.monotonic() < end:
        assert t.functional(h("3E 80")) == []
        time.sleep(scaled(0.2))
    assert t.sim.state.session == EXTENDED_SESSION
    assert t.sim.state.counters.get("s3_timeout") is None
    # Silence: back to default, DTC setting and communication on again.
    assert wait_until(lambda: t.sim.state.counters.get("s3_timeout") == 1, scaled(5))
    state = t.sim.state
    assert (state.session, state.dtc_setting, state.comm_control) == (DEFAULT_SESSION, 1, 0)


# -- 85 / 28 ----------------------------------------------------------------------------------

def test_dtc_setting_and_communication_control_nrcs(strict):
    t = strict()
    state = t.sim.state
    # Default session: 0x7F physically (also with suppressPosRsp), nothing functionally.
    assert t.nrc(h("85 02")) == 0x7F
    assert t.suppressed(h("85 82")) == 0x7F
    assert t.nrc(h("28 03 01")) == 0x7F
    assert t.functional(h("85 82")) == []
    assert t.functional(h("28 83 01")) == []
    assert (state.dtc_setting, state.comm_control) == (0x01, 0x00)

    assert t.send(h("10 03"))[:2] == h("50 03")
    assert t.nrc(h("85 05")) == 0x12                         # unknown sub-function
    assert t.nrc(h("28 05 01")) == 0x12                      # unknown controlType
    assert t.nrc(h("28 03 00")) == 0x31                      # unknown communicationType
    assert t.nrc(h("28 03 05")) == 0x31
    assert t.nrc(h("28 03")) == 0x13
    for quiet in ("85 85", "28 85 01", "28 83 00"):          # 0x12 / 0x31: not sent
        assert t.functional(h(quiet)) == []
    assert (state.dtc_setting, state.comm_control) == (0x01, 0x00)
    assert t.suppressed(h("85 82")) is None
    assert t.suppressed(h("28 83 03")) is None
    assert (state.dtc_setting, state.comm_control, state.comm_type) == (0x02, 0x03, 0x03)
    assert t.send(h("85 01 FF FF FF")) == h("C5 01")          # with an option record


# -- security ---------------------------------------------------------------------------------

def test_security_only_in_programming_and_delay_after_too_many_keys(strict):
    t = strict(security_delay_s=2.0)
    assert t.nrc(h("27 11")) == 0x7F
    assert t.send(h("10 03"))[:2] == h("50 03")
    assert t.nrc(h("27 11")) == 0x7F                         # extended is not enough
    t.programming()
    assert t.nrc(h("27 12") + bytes(16)) == 0x24             # key before seed
    codes = []
    for _ in range(3):
        assert t.send(h("27 11"))[:2] == h("67 11")
        codes.append(t.nrc(h("27 12") + bytes(16)))
    assert codes == [0x35, 0x35, 0x36]
    assert t.nrc(h("27 11")) == 0x37                         # requiredTimeDelayNotExpired
    assert wait_until(lambda: time.monotonic() >= t.sim.state.security_delay_until,
                      scaled(10))
    t.unlock()                                               # the delay ran out
    assert t.sim.state.unlocked_level == 0x11


# -- fingerprint, erase, download ---------------------------------------------------------------

def test_fingerprint_and_erase_order(strict):
    t = strict()
    assert t.nrc(h("2E F1 5A") + FINGERPRINT) == 0x31        # not in the default session
    t.extended_with_bus_silenced()
    assert t.nrc(h("2E F1 5A") + FINGERPRINT) == 0x31        # nor in extended
    assert t.nrc(erase_request(BASE, 0x1000)) == 0x31        # erase neither
    t.programming()
    assert t.nrc(h("2E F1 5A") + FINGERPRINT) == 0x33        # locked
    assert t.nrc(erase_request(BASE, 0x1000)) == 0x33
    t.unlock()
    assert t.nrc(h("2E F1 5A") + FINGERPRINT[:-1]) == 0x13   # 8 bytes, 9 expected
    assert t.nrc(h("2E F1 98") + b"BENCH-01") == 0x31        # only the configured DID
    assert t.nrc(erase_request(BASE, 0x1000)) == 0x22        # no fingerprint yet
    assert t.send(h("2E F1 5A") + FINGERPRINT) == h("6E F1 5A")
    assert t.nrc(h("31 01 FF 00")) == 0x13                   # the range is required
    assert t.nrc(erase_request(BASE + 0x100000, 0x1000)) == 0x31
    assert t.nrc(h("34 00 44") + BASE.to_bytes(4, "big") + (0x100).to_bytes(4, "big")) \
        == 0x22                                              # not erased
    assert t.send(erase_request(BASE, 0x1000)) == h("71 01 FF 00 00")
    assert t.nrc(h("34 00 44") + (BASE + 0x1000).to_bytes(4, "big")
                 + (0x100).to_bytes(4, "big")) == 0x22       # outside the erased range
    assert t.nrc(h("34 00 44") + (BASE + 0x7FF00).to_bytes(4, "big")
                 + (0x1000).to_bytes(4, "big")) == 0x31      # outside the memory
    # A new programming session wants a new fingerprint before it erases.
    assert t.send(h("10 01"))[:2] == h("50 01")
    assert t.nrc(h("10 02")) == 0x22
    t.extended_with_bus_silenced()
    t.programming()
    t.unlock()
    assert t.nrc(erase_request(BASE, 0x1000)) == 0x22


def test_download_order_and_counters(strict):
    t = strict()
    t.to_erase(0x2000)
    assert t.nrc(h("36 01 00")) == 0x24                      # no download open
    assert t.nrc(h("37")) == 0x24
    answer = t.send(h("34 00 44") + BASE.to_bytes(4, "big") + (0x20).to_bytes(4, "big"))
    assert answer == h("74 20") + t.sim.config.sim.max_block_length.to_bytes(2, "big")
    assert t.nrc(h("31 01 02 02 00 00 00 00")) == 0x24       # check memory before 37
    assert t.nrc(h("36 02") + bytes(16)) == 0x73             # wrong counter
    assert t.send(h("36 01") + bytes(16)) == h("76 01")
    assert t.nrc(h("37")) == 0x24                            # not all data yet
    assert t.send(h("36 02") + bytes(16)) == h("76 02")
    assert t.nrc(h("31 01 FF 01")) == 0x24                   # dependencies before memory
    assert t.send(h("37")) == h("77")
    assert t.nrc(h("31 01 FF 01")) == 0x24                   # still: no memory check yet
    assert t.nrc(h("31 01 02 02 00 00")) == 0x13             # CRC is 4 bytes


def test_a_wrong_crc_keeps_the_new_image_from_running(strict):
    t = strict()
    image = image_of(3000)
    t.to_erase(0x1000)
    t.download(image)
    wrong = (zlib.crc32(image) ^ 1).to_bytes(4, "big")
    assert t.send(h("31 01 02 02") + wrong) == h("71 01 02 02 01")   # mismatch
    assert t.nrc(h("31 01 FF 01")) == 0x24
    assert t.send(h("11 01")) == h("51 01")
    assert wait_until(lambda: not t.sim.state.rebooting, scaled(5))
    # Single bank, erased and never validated: the ECU stays in its bootloader.
    assert t.sim.state.mode == "bootloader"
    assert t.nrc(h("22 F1 89")) == 0x31


# -- addressing ---------------------------------------------------------------------------------

@pytest.mark.parametrize("addressing", ["normal_11bit", "normal_29bit", "normal_fixed_29bit"])
def test_functional_requests_reach_the_ecu_in_every_addressing(strict, uds_ecu_config,
                                                               addressing):
    ids: dict[str, object] = {
        "normal_11bit": dict(txid=0x7A6, rxid=0x7AE, functional_id=0x7DF),
        "normal_29bit": dict(txid=0x18DA26F1, rxid=0x18DAF126, functional_id=0x18DB33F1),
        "normal_fixed_29bit": dict(source_address=0xF1, target_address=0x26),
    }[addressing]
    ecu = uds_ecu_config(name="bcm", addressing=addressing, can_restore=False, **ids)
    t = strict(ecu)
    answers = t.functional(h("10 03"))
    assert [a[:2] for a in answers] == [h("50 03")]
    assert t.sim.state.session == EXTENDED_SESSION
    assert t.functional(h("85 82")) == []
    assert t.sim.state.dtc_setting == 0x02
    # A multi-frame physical request: exactly one flow control from the ECU (the
    # functional receiver must not answer the physical first frame as well).
    mark = len(t.frames)
    dids = [0xF187, 0xF188, 0xF189, 0xF18C, 0xF190, 0xF191, 0xF195]
    request = h("22") + b"".join(d.to_bytes(2, "big") for d in dids)
    answer = t.send(request)
    assert answer is not None and answer[:3] == h("62 F1 87")
    flow_controls = [m for m in t.frames[mark:] if m.data[0] >> 4 == 3]
    assert len(flow_controls) == 1


# -- lenient mode stays as it was ---------------------------------------------------------------

def test_lenient_ecu_still_takes_programming_straight_from_default(strict):
    t = strict(strict=False)
    t.programming()                                          # 10 02 from default
    t.unlock()
    assert t.send(h("2E F1 98") + b"BENCH-01") == h("6E F1 98")
    assert t.send(h("31 01 FF 00")) == h("71 01 FF 00 00")   # no fingerprint or range needed
    assert t.nrc(h("31 01 02 02 00 00 00 00")) == 0x31       # no strict routines
    assert t.suppressed(h("3E 80")) is None


# -- faults and config ----------------------------------------------------------------------------

def test_faults_target_the_strict_steps_by_name(strict):
    refuse = Fault(kind="nrc", step="communication_control", nrc=0x22)
    late = Fault(kind="pending", step="dtc_setting", count=2, interval_s=scaled(0.05))
    t = strict(faults=[refuse, late], check_memory_routine=0x0210)
    assert step_of(h("31 01 02 10"), t.sim.config.sim) == "check_memory"
    assert step_of(h("31 01 02 03"), t.sim.config.sim) == "preconditions"
    assert [a[:2] for a in t.functional(h("10 03"))] == [h("50 03")]
    # 0x22 reaches a functional request; after 0x78 the final answer comes despite SPR.
    assert t.functional(h("28 83 01")) == [h("7F 28 22")]
    assert t.functional(h("85 82")) == [h("7F 85 78"), h("7F 85 78"), h("C5 02")]
    assert refuse.fired == 1 and late.fired == 1


def test_strict_ids_are_checked(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[ecu]\nname = "bcm"\ntxid = 0x7A6\nrxid = 0x7AE\nmemory_size = 1024\n'
                    "[sim]\nstrict = true\npreconditions_routine = 0xFF00\n"
                    "check_memory_routine = 0x10000\nfingerprint_length = 0\n"
                    "security_delay_s = -1.0\n")
    with pytest.raises(ConfigError) as caught:
        load_sim_config(path)
    text = str(caught.value)
    assert f"{path}: sim.preconditions_routine: 0xFF00 is the erase routine" in text
    assert f"{path}: sim.check_memory_routine: must be a 16-bit routine identifier" in text
    assert f"{path}: sim.fingerprint_length: must be 1..64" in text
    assert f"{path}: sim.security_delay_s: must be >= 0" in text


def test_the_bcm_file_is_a_strict_bootloader():
    cfg = load_sim_config(ROOT / "config" / "ecu" / "bcm.toml")
    assert cfg.sim.strict and cfg.ecu.functional_id == 0x7DF
    assert (cfg.ecu.txid, cfg.ecu.rxid, cfg.ecu.memory_size) == (0x7A6, 0x7AE, 1 << 20)
    others = [load_sim_config(p).ecu for p in (ROOT / "config" / "ecu").glob("*.toml")
              if p.name != "bcm.toml"]
    used = {i for e in others for i in (e.txid, e.rxid) if e.addressing != "normal_fixed_29bit"}
    assert not used & {0x7A6, 0x7AE, 0x7DF}
