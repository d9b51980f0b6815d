"""RFC 8785 JSON Canonicalization Scheme (JCS): the bytes every hash and signature covers.

One function for records, OTA history and signed commands, so a verifier in any language
that has an RFC 8785 implementation (or ``JSON.stringify`` with sorted keys) gets the same
bytes. Python's ``json.dumps`` writes numbers its own way (``1e-07``, ``1.0``, ``1e+16``);
JCS writes them as ECMAScript does (``1e-7``, ``1``, ``10000000000000000``) and sorts keys
by UTF-16 code units, not code points. Strings are escaped as ``json.dumps`` does with
``ensure_ascii=False``, which is already what RFC 8785 §3.2.2.2 asks.

Refused with ``ValueError``: NaN/Infinity, integers outside the IEEE 754 exact range
(±(2**53 - 1), I-JSON), strings that are not valid Unicode (lone surrogates), non-string
keys and anything that is not JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

MAX_SAFE_INTEGER = 2**53 - 1
_string = json.JSONEncoder(ensure_ascii=False).encode


def number(value: float | int) -> str:
    """A number as ECMAScript's ``Number.prototype.toString`` writes it (RFC 8785 §3.2.2.3).

    Python's ``repr`` already gives the shortest digits that round-trip (as ECMAScript
    does); only where the decimal point goes and when to switch to exponent form differ.
    """
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is a boolean, not a number")
    if isinstance(value, int):
        if abs(value) > MAX_SAFE_INTEGER:
            raise ValueError(f"integer {value} is outside ±(2**53 - 1): JSON verifiers that "
                             "read numbers as IEEE 754 doubles would change it")
        return int.__repr__(value)                  # an IntEnum too, on every Python
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not allowed in canonical JSON")
    if value == 0.0:
        return "0"                                  # -0 too (ECMAScript: "0")
    text = repr(value)
    if "e" not in text:                             # 1e-4 <= |value| < 1e16: same digits,
        return text[:-2] if text.endswith(".0") else text   # ECMAScript has no ".0"
    sign = "-" if value < 0 else ""
    mantissa, _, exp = repr(abs(value)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = whole + frac
    point = len(whole) + int(exp or 0)              # value = 0.DIGITS x 10**point
    stripped = digits.lstrip("0")
    point -= len(digits) - len(stripped)
    digits = stripped.rstrip("0")
    k = len(digits)
    if k <= point <= 21:
        return sign + digits + "0" * (point - k)
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    e = point - 1
    head = digits[0] + ("." + digits[1:] if k > 1 else "")
    return f"{sign}{head}e{'+' if e >= 0 else '-'}{abs(e)}"


def _utf16_order(key: str) -> bytes:
    return key.encode("utf-16-be", "surrogatepass")


def _write(value: Any, out: list[str]) -> None:
    if type(value) is float:                        # the common case first
        out.append(number(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, (int, float)):
        out.append(number(value))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise ValueError(f"object key {key!r} is not a string")
        out.append("{")
        for i, key in enumerate(sorted(value, key=_utf16_order)):
            if i:
                out.append(",")
            out.append(_string(key))
            out.append(":")
            _write(value[key], out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, out)
        out.append("]")
    else:
        raise ValueError(f"a {type(value).__name__} is not JSON")


def canonical_text(value: Any) -> str:
    """``value`` as RFC 8785 canonical JSON text."""
    out: list[str] = []
    _write(value, out)
    return "".join(out)


def canonical_json(value: Any) -> bytes:
    """``value`` as RFC 8785 canonical JSON, UTF-8 encoded: the bytes that get hashed."""
    try:
        return canonical_text(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"string is not valid Unicode (lone surrogate at {exc.start})") \
            from None
    except RecursionError:
        raise ValueError("nested too deep") from None
