"""Image trailer and seed/key algorithms: the contract between FlashSession and the ECU."""

from __future__ import annotations

import os

import pytest
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.cmac import CMAC
from hypothesis import given
from hypothesis import strategies as st

from agent.ota.uds.image import ImageFormatError, build_image, parse_trailer, read_trailer
from agent.ota.uds.security import UnknownKeyAlgorithm, compute_key, register_key_algorithm


def test_trailer_round_trip_from_bytes_and_file(tmp_path):
    body = os.urandom(5000)
    image = build_image(body, {0xF189: "2.0.0"}, {0xF191: "HW-EPS-03"})
    path = tmp_path / "a.bin"
    path.write_bytes(image)
    for trailer in (parse_trailer(image), read_trailer(path)):
        assert trailer.body_size == 5000
        assert trailer.provides == {0xF189: "2.0.0"}
        assert trailer.requires == {0xF191: "HW-EPS-03"}


def test_flipped_body_bit_is_detected():
    image = bytearray(build_image(os.urandom(1000), {0xF189: "2.0.0"}))
    image[10] ^= 0x01
    with pytest.raises(ImageFormatError, match="CRC32"):
        parse_trailer(image)


def test_image_without_trailer_is_rejected(tmp_path):
    path = tmp_path / "raw.bin"
    path.write_bytes(os.urandom(100))
    with pytest.raises(ImageFormatError, match="magic"):
        read_trailer(path)


@given(st.binary(max_size=300))
def test_garbage_never_crashes_the_parser(data):
    try:
        parse_trailer(data)
    except ImageFormatError:
        pass


def test_xor_key_is_seed_xor_secret():
    assert compute_key("xor", 0x11, bytes([0x12, 0x34, 0x56]), b"\xff\x00") == \
        bytes([0xED, 0x34, 0xA9])


def test_aes_cmac_key_matches_an_independent_cmac():
    secret, seed = os.urandom(16), os.urandom(16)
    mac = CMAC(algorithms.AES(secret))
    mac.update(b"\x11" + seed)
    assert compute_key("aes128-cmac", 0x11, seed, secret) == mac.finalize()
    with pytest.raises(ValueError, match="16-byte"):
        compute_key("aes128-cmac", 0x11, seed, b"short")


def test_registry_is_pluggable():
    register_key_algorithm("test-invert", lambda level, seed, secret: bytes(~b & 0xFF
                                                                           for b in seed))
    assert compute_key("test-invert", 1, b"\x0f", b"") == b"\xf0"
    with pytest.raises(UnknownKeyAlgorithm, match="known:"):
        compute_key("nope", 1, b"", b"")


def test_progress_helpers_throttle():
    import io

    from agent.ota.uds.progress import ProgressBar, ProgressEvery

    out = io.StringIO()
    bar = ProgressBar("eps", out, width=10)
    records: list[int] = []
    every = ProgressEvery(lambda done, total, pct: records.append(pct), step_percent=25)
    for done in range(0, 1001, 1):
        bar(done, 1000)
        every(done, 1000)
    assert out.getvalue().count("\r") == 101           # once per whole percent
    assert out.getvalue().endswith("[##########] 100% 0/0 KiB\n")
    assert records == [0, 25, 50, 75, 100]
