"""JSON from the network, bounded before it is parsed.

``json.loads`` recurses once per nesting level: a 2 KB payload of ``[`` x 1000 raises
``RecursionError`` before any signature could be checked. Size and depth are checked on
the raw bytes first (strings removed, then only the brackets counted, both at C speed),
and NaN/Infinity, which no sender of ours writes, are refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

MAX_DEPTH = 32
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.S)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def nesting_depth(payload: bytes) -> int:
    """How deep arrays and objects nest in ``payload`` (brackets inside strings aside)."""
    brackets = _STRING.sub(b"", payload).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for b in brackets:
        if b in b"[{":
            depth += 1
            if depth > deepest:
                deepest = depth
        else:
            depth -= 1
    return deepest


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def loads(payload: bytes | bytearray, *, max_bytes: int, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value of ``payload``; ``ValueError`` (never anything else) when it is too
    large, too deep, not UTF-8 or not JSON."""
    if len(payload) > max_bytes:
        raise ValueError(f"{len(payload)} bytes is more than {max_bytes}")
    payload = bytes(payload)
    depth = nesting_depth(payload)
    if depth > max_depth:
        raise ValueError(f"nested {depth} levels deep (at most {max_depth})")
    try:
        return json.loads(payload, parse_constant=_no_constant)
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8: {exc.reason}") from None
    except RecursionError:  # not reachable after the depth check; never let it out
        raise ValueError("nested too deep") from None
