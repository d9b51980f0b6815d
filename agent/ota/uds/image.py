"""The flash image format: application bytes followed by a small trailer.

The ECU learns its new software identification from the image it received, not from the
tester, so a version read back after the reset proves which image really runs::

    image   = body || trailer
    trailer = records || crc32(body) u32be || len(records) u16be || b"ICVI"
    record  = kind u8 || DID u16be || len u8 || value (ASCII)
    kind    = 0x01 provides: the ECU reports this DID value once the image is active
              0x02 requires: CheckProgrammingDependencies (0xFF01) fails unless the ECU's
                   current value of this DID (e.g. F191 hardware number) is equal

A trailer is found from the end of the image, so the body can be any size. The tester
checks the body CRC (``check_image``) before it sends the ECU anything: a body damaged on
disk or by its producer is refused before any programming request, not found by the ECU's
checksum after the erase.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = b"ICVI"
CHUNK = 64 * 1024          # bytes read at a time when checking a file
PROVIDES = 0x01
REQUIRES = 0x02
_TAIL = struct.Struct(">IH4s")  # crc32(body), len(records), magic


class ImageFormatError(ValueError):
    pass


@dataclass(frozen=True)
class ImageTrailer:
    body_size: int
    body_crc32: int
    provides: dict[int, str] = field(default_factory=dict)
    requires: dict[int, str] = field(default_factory=dict)


def build_image(body: bytes, provides: Mapping[int, str],
                requires: Mapping[int, str] | None = None) -> bytes:
    records = bytearray()
    for kind, values in ((PROVIDES, provides), (REQUIRES, requires or {})):
        for did, value in values.items():
            raw = value.encode("ascii")
            if len(raw) > 0xFF:
                raise ImageFormatError(f"DID {did:04X} value longer than 255 bytes")
            records += struct.pack(">BHB", kind, did, len(raw)) + raw
    return bytes(body) + bytes(records) + _TAIL.pack(zlib.crc32(body), len(records), MAGIC)


def parse_trailer(image: bytes | bytearray | memoryview) -> ImageTrailer:
    """Parse and check the trailer of a complete image (the body CRC included)."""
    image = memoryview(image)
    if len(image) < _TAIL.size:
        raise ImageFormatError("image shorter than its trailer")
    crc, length, magic = _TAIL.unpack(image[-_TAIL.size:])
    if magic != MAGIC:
        raise ImageFormatError("no image trailer (magic ICVI missing)")
    body_size = len(image) - _TAIL.size - length
    if body_size < 0:
        raise ImageFormatError("trailer length larger than the image")
    records = _parse_records(bytes(image[body_size:body_size + length]))
    if zlib.crc32(image[:body_size]) != crc:
        raise ImageFormatError("body CRC32 does not match the trailer")
    return ImageTrailer(body_size, crc, *records)


def read_trailer(path: str | Path) -> ImageTrailer:
    """Read the trailer of an image file without reading the body (its CRC unchecked:
    use ``check_image`` before flashing)."""
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        if size < _TAIL.size:
            raise ImageFormatError(f"{path}: shorter than an image trailer")
        fh.seek(size - _TAIL.size)
        crc, length, magic = _TAIL.unpack(fh.read(_TAIL.size))
        if magic != MAGIC:
            raise ImageFormatError(f"{path}: no image trailer (magic ICVI missing)")
        body_size = size - _TAIL.size - length
        if body_size < 0:
            raise ImageFormatError(f"{path}: trailer length larger than the file")
        fh.seek(body_size)
        provides, requires = _parse_records(fh.read(length))
    return ImageTrailer(body_size, crc, provides, requires)


def check_image(path: str | Path) -> ImageTrailer:
    """The trailer of an image file whose body CRC32 matches it (read in chunks).

    ``ImageFormatError`` names the file and both CRCs when the body does not match.
    """
    trailer = read_trailer(path)
    crc, left = 0, trailer.body_size
    with open(path, "rb") as fh:
        while left > 0:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                raise ImageFormatError(f"{path}: shorter than its trailer says")
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
    if crc != trailer.body_crc32:
        raise ImageFormatError(f"{path}: body CRC32 {crc:08X} does not match the trailer's "
                               f"{trailer.body_crc32:08X} (corrupted image)")
    return trailer


def _parse_records(raw: bytes) -> tuple[dict[int, str], dict[int, str]]:
    provides: dict[int, str] = {}
    requires: dict[int, str] = {}
    pos = 0
    while pos < len(raw):
        if pos + 4 > len(raw):
            raise ImageFormatError("truncated trailer record")
        kind, did, size = struct.unpack_from(">BHB", raw, pos)
        value = raw[pos + 4:pos + 4 + size]
        if len(value) != size:
            raise ImageFormatError("truncated trailer record")
        if kind not in (PROVIDES, REQUIRES):
            raise ImageFormatError(f"unknown trailer record kind 0x{kind:02X}")
        try:
            text = value.decode("ascii")
        except UnicodeDecodeError:
            raise ImageFormatError(f"DID {did:04X} value is not ASCII") from None
        (provides if kind == PROVIDES else requires)[did] = text
        pos += 4 + size
    return provides, requires
