"""The agent decodes exactly what cantools decodes, and its change-mask skip misses nothing.

The oracle converts cantools' own decode (with value-table labels) through the mapping
file read independently here, so a bug in the agent's converters cannot hide itself.
"""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import can
import cantools
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from agent import config as agent_config
from agent.ingest.decoder import FrameDecoder
from agent.settings_loader import tomllib
from agent.signals import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"reference": "bench.toml", "mg": "mg.toml", "tesla": "tesla-model3.toml"}


def load(name: str) -> agent_config.AgentConfig:
    return agent_config.load(ROOT / "config" / CONFIGS[name])


class Oracle:
    """Mapping conversion written from docs/mapping.md, on top of cantools' decode."""

    def __init__(self, cfg: agent_config.AgentConfig):
        setup = cfg.buses[0]
        self.db = cantools.database.load_file(str(cfg.resolve(setup.config.dbc[0])),
                                              strict=False)
        table = tomllib.loads(cfg.resolve(setup.config.mapping).read_text())
        self.entries: dict[str, list[tuple[int, dict[str, Any]]]] = {}
        ranks: dict[str, int] = {}
        for e in table.get("signal", []):
            rank = ranks.get(e["name"], 0)
            ranks[e["name"]] = rank + 1
            self.entries.setdefault(e["message"], []).append((rank, e))

    def values(self, msg: Any, data: bytes) -> dict[tuple[str, int], Any]:
        labels = msg.decode(data, decode_choices=True)
        numbers = msg.decode(data, decode_choices=False)
        out = {}
        for rank, e in self.entries.get(msg.name, []):
            if e["signal"] not in numbers:
                continue  # multiplexed away
            out[(e["name"], rank)] = self.convert(e, msg.get_signal_by_name(e["signal"]),
                                                  labels[e["signal"]], numbers[e["signal"]])
        return out

    @staticmethod
    def convert(e: dict[str, Any], sig: Any, label: Any, number: float) -> Any:
        spec = CATALOGUE[e["name"]]
        values = e.get("values")
        raw = round((number - sig.offset) / sig.scale)
        if any(x == raw or x == str(label) for x in e.get("invalid", [])):
            return None
        if values:
            for key, canon in values.items():
                if key == str(label) or (key.lstrip("-").isdigit() and int(key) == raw):
                    return canon
            return e.get("default")
        if spec.kind == "bool":
            return (number != 0) != e.get("invert", False)
        if spec.kind == "int":
            return int(round(number))
        return number * e.get("factor", 1.0) + e.get("offset", 0.0)


def same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)
    return a == b and type(a) is type(b)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoding_matches_cantools(name: str) -> None:
    cfg = load(name)
    oracle = Oracle(cfg)
    decoder = FrameDecoder(cfg.buses[0])
    rng = random.Random(f"oracle-{name}")
    plans = list(cfg.buses[0].plans.values())
    assert plans, "mapping maps nothing"
    current: dict[tuple[str, int], Any] = {}
    checked = 0
    for i in range(12000):
        plan = rng.choice(plans)
        msg = plan.message
        prev = getattr(plan, "_last_data", None)
        if prev is not None and rng.random() < 0.5:
            data = bytearray(prev)   # mutate a few bits, often outside the mapped ones
            for _ in range(rng.randint(1, 3)):
                bit = rng.randrange(len(data) * 8)
                data[bit // 8] ^= 1 << (bit % 8)
            data = bytes(data)
        else:
            data = rng.randbytes(msg.length)
        while not decodes(msg, data):   # valid frames only (e.g. known multiplexer ids)
            data = rng.randbytes(msg.length)
        plan._last_data = data
        frame = can.Message(arbitration_id=msg.frame_id, data=data,
                            is_extended_id=msg.is_extended_frame, is_fd=msg.is_fd)
        for binding, value in decoder.decode(frame, float(i)) or ():
            current[(binding.canonical, binding.rank)] = value
        for key, want in oracle.values(msg, data).items():
            got = current.get(key, "<never decoded>")
            assert same(got, want), (f"{name} frame {i} {msg.name} {data.hex()}: "
                                     f"{key} agent={got!r} cantools={want!r}")
            checked += 1
    assert checked >= 10000
    c = decoder.counters
    assert c.decoded > 0 and c.skipped > 0, c.as_dict()
    assert c.wrong_length == c.undecodable == 0


def decodes(msg: Any, data: bytes) -> bool:
    try:
        msg.decode(data)
        return True
    except cantools.database.DecodeError:
        return False


REF = None


def reference() -> agent_config.AgentConfig:
    global REF
    if REF is None:
        REF = load("reference")
    return REF


@settings(max_examples=400, deadline=None)
@given(data=st.data())
def test_change_mask_never_misses_a_change(data: st.DataObject) -> None:
    cfg = reference()
    oracle = Oracle(cfg)
    plans = list(cfg.buses[0].plans.values())
    plan = data.draw(st.sampled_from(plans))
    msg = plan.message
    first = data.draw(st.binary(min_size=msg.length, max_size=msg.length))
    flips = data.draw(st.lists(st.integers(0, msg.length * 8 - 1), max_size=6))
    second = bytearray(first)
    for bit in flips:
        second[bit // 8] ^= 1 << (bit % 8)
    assume(decodes(msg, first) and decodes(msg, bytes(second)))
    decoder = FrameDecoder(cfg.buses[0])
    mk = lambda d: can.Message(arbitration_id=msg.frame_id, data=bytes(d),  # noqa: E731
                               is_extended_id=msg.is_extended_frame)
    decoder.decode(mk(first), 0.0)
    out = decoder.decode(mk(second), 1.0)
    a, b = oracle.values(msg, bytes(first)), oracle.values(msg, bytes(second))
    changed = {k for k in set(a) | set(b) if not same(a.get(k), b.get(k))}
    if out is None:
        assert not changed, f"skipped a frame that changed {changed}"
    else:
        got = {(bd.canonical, bd.rank): v for bd, v in out}
        for k in changed:
            assert k in got and same(got[k], b[k])


def test_bad_frames_are_counted_not_fatal() -> None:
    cfg = reference()
    decoder = FrameDecoder(cfg.buses[0])
    plan = next(iter(cfg.buses[0].plans.values()))
    msg = plan.message
    short = can.Message(arbitration_id=msg.frame_id, data=b"\x01",
                        is_extended_id=msg.is_extended_frame)
    assert decoder.decode(short, 0.0) is None
    unmapped = can.Message(arbitration_id=0x7FE, data=bytes(8))
    assert decoder.decode(unmapped, 0.0) is None
    error = can.Message(arbitration_id=0x20000040, is_error_frame=True)
    assert decoder.decode(error, 0.0) is None
    c = decoder.counters
    assert (c.wrong_length, c.unmapped, c.error_frames, c.frames) == (1, 1, 1, 3)


def test_filters_cover_exactly_the_mapped_ids() -> None:
    cfg = reference()
    setup = cfg.buses[0]
    ids = {f["can_id"] for f in setup.can_filters()}
    assert ids == {p.message.frame_id for p in setup.plans.values()}
    assert all(f["can_mask"] in (0x7FF, 0x1FFFFFFF) for f in setup.can_filters())
