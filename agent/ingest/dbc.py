"""DBC loading (lenient, warn once) and the bit geometry the change mask needs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cantools

log = logging.getLogger(__name__)

_warned: set[Path] = set()


def load_dbc(path: Path) -> tuple[Any, str | None]:
    """Load strictly; if the file is imperfect (overlapping signals, odd attributes), load
    it again leniently and return the strict error as a warning, logged once per file."""
    try:
        return cantools.database.load_file(str(path), strict=True), None
    except (OSError, UnicodeDecodeError):
        raise
    except Exception as strict_error:  # cantools raises several unrelated error types
        db = cantools.database.load_file(str(path), strict=False)
        warning = f"{path}: loaded leniently ({strict_error})"
        if path not in _warned:
            _warned.add(path)
            log.warning("%s", warning)
        return db, warning


def signal_bits(sig: Any) -> list[tuple[int, int]]:
    """(byte index, bit index within byte, LSB = 0) of every bit of a cantools signal."""
    bits = []
    if sig.byte_order == "little_endian":
        for i in range(sig.length):
            pos = sig.start + i
            bits.append((pos // 8, pos % 8))
    else:  # Motorola: DBC start bit is the MSB, walking the "sawtooth" numbering
        pos = sig.start
        for _ in range(sig.length):
            bits.append((pos // 8, pos % 8))
            pos = pos + 15 if pos % 8 == 0 else pos - 1
    return bits


def _bit(length: int, byte: int, bit: int) -> int:
    return 1 << ((length - 1 - byte) * 8 + bit) if byte < length else 0


def value_bits(sig: Any, raw: int, length: int) -> int:
    """``raw`` placed in the bits of ``sig``, on the same integer basis as ``mask_of``."""
    bits = signal_bits(sig)
    if sig.byte_order != "little_endian":
        bits.reverse()  # signal_bits walks a Motorola signal from its MSB
    out = 0
    for i, (byte, bit) in enumerate(bits):
        if raw >> i & 1:
            out |= _bit(length, byte, bit)
    return out


def mask_of(signals: list[Any], length: int) -> int:
    """Integer mask over ``int.from_bytes(data[:length], "big")`` covering ``signals``."""
    mask = 0
    for sig in signals:
        for byte, bit in signal_bits(sig):
            mask |= _bit(length, byte, bit)
    return mask
