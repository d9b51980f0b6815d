"""What the agent asks of the kernel's broadcast manager, checked without a CAN kernel: the
content filters cover exactly the mapped bits (multiplexed messages per page), the drop
counter accounts for every lost frame, and a kernel silence makes signals stale like a
polled timeout does. (The kernel's side: tests/vcan/test_bcm.py, in the vcan VM.)"""

from __future__ import annotations

from pathlib import Path

import can
import pytest

from agent import config as agent_config
from agent.ingest.dbc import signal_bits
from agent.ingest.decoder import Silence
from agent.ingest.socketcan import DropCounter, content_filters
from agent.monitors import ALL
from agent.pipeline import Pipeline, TimeBase
from tests.helpers import RecordingSink

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ["bench.toml", "mg.toml", "tesla-model3.toml", "hongqi-hs5.toml"]


def frame_bits(frame: bytes, length: int) -> int:
    """The data of a struct can_frame / canfd_frame on the decoder's integer basis."""
    return int.from_bytes(frame[8:8 + length], "big")


def bit_of(length: int, byte: int, bit: int) -> int:
    return 1 << ((length - 1 - byte) * 8 + bit)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("fd", [False, True])
def test_every_mapped_bit_and_nothing_else_is_in_the_filter(name: str, fd: bool) -> None:
    setup = agent_config.load(ROOT / "config" / name).buses[0]
    ops = content_filters(setup.plans, fd)
    assert {(op.key, op.fd) for op in ops} == \
        {(k, f) for k in setup.plans for f in ((False, True) if fd else (False,))}
    for op in ops:
        plan = setup.plans[op.key]
        msg = plan.message
        mapped = {b.dbc_signal for b in plan.bindings} | {b.extra for b in plan.bindings if b.extra}
        assert len(op.frames[0]) == (72 if op.fd else 16)
        assert op.timeout == plan.timeout
        if not plan.mux_filters:
            assert len(op.frames) == 1
            want = 0
            for sig in msg.signals:
                if sig.name in mapped or any(
                        s.multiplexer_signal == sig.name for s in msg.signals
                        if s.name in mapped):
                    for byte, bit in signal_bits(sig):
                        want |= bit_of(plan.length, byte, bit)
            assert frame_bits(op.frames[0], plan.length) == want, msg.name
            continue
        # Multiplexed: frame 0 is the multiplexor's mask, then one frame per mapped page,
        # carrying that page's multiplexor value and the mask of what is mapped in it.
        muxor = next(s for s in msg.signals if s.is_multiplexer)
        mux_mask = 0
        for byte, bit in signal_bits(muxor):
            mux_mask |= bit_of(plan.length, byte, bit)
        assert frame_bits(op.frames[0], plan.length) == mux_mask
        pages = sorted({v for s in msg.signals if s.name in mapped and s.multiplexer_ids
                        for v in s.multiplexer_ids})
        assert len(op.frames) == 1 + len(pages)
        for page, frame in zip(pages, op.frames[1:], strict=True):
            bits = frame_bits(frame, plan.length)
            encoded = msg.encode({s.name: 0 for s in msg.signals
                                  if not s.multiplexer_ids or page in s.multiplexer_ids}
                                 | {muxor.name: page}, strict=False)
            assert bits & mux_mask == int.from_bytes(encoded, "big") & mux_mask
            for sig in msg.signals:
                if sig.is_multiplexer:
                    continue
                inside = (sig.name in mapped
                          and (not sig.multiplexer_ids or page in sig.multiplexer_ids))
                sig_mask = 0
                for byte, bit in signal_bits(sig):
                    sig_mask |= bit_of(plan.length, byte, bit)
                assert (bits & sig_mask == sig_mask) == inside, (msg.name, page, sig.name)


def test_the_reference_dbc_has_a_multiplexed_mapped_message() -> None:
    setup = agent_config.load(ROOT / "config" / "bench.toml").buses[0]
    assert any(p.mux_filters for p in setup.plans.values())


def test_drop_counter_accounts_for_every_loss_and_where_it_lay() -> None:
    drops = DropCounter()
    drops.update(0, 10.0)
    drops.update(0, 10.1)
    assert drops.take() is None
    drops.update(7, 12.0)            # 7 lost between 10.1 and 12.0
    drops.update(7, 12.1)
    drops.update(9, 13.0)            # 2 more
    assert drops.take() == (9, 10.1, 13.0)
    assert drops.take() is None
    drops.update(0xFFFFFFFF, 14.0)   # the kernel's u32 wraps
    drops.update(3, 15.0)
    assert drops.total == 3
    assert drops.take() == ((0xFFFFFFFF - 9) + 4, 13.0, 15.0)




def stale_records(kernel: bool) -> list[tuple[str, str, float]]:
    """Speed frames for 1 s, then silence: polled (raw, offline) or reported (BCM)."""
    cfg = agent_config.load(ROOT / "config" / "bench.toml")
    sink = RecordingSink()
    pipeline = Pipeline(cfg, sink, TimeBase("trace"), ALL)
    pipeline.decoders[0].kernel_freshness = kernel
    key = 0x125
    plan = cfg.buses[0].plans[key]
    t = 1_750_000_000.0
    for i in range(100):
        pipeline.feed(0, can.Message(arbitration_id=key, is_extended_id=False,
                                     data=bytes([i % 2, 0x10, 0, 0, 0, 0, 0, 0])), t)
        last, t = t, t + 0.01
    end = last + plan.timeout
    if kernel:
        pipeline.advance(end + 0.2)            # polling finds nothing on a BCM bus
        assert not [r for r in sink.records if r[0] == "signal.stale"]
        pipeline.feed(0, Silence(key, 0.0), end + 0.004)
    else:
        while t <= end + 0.06:
            pipeline.advance(t)
            t += 0.05
    return [(type_, data["signal"], data["last_seen"]) for type_, data, _ in sink.records
            if type_ == "signal.stale"]


def test_a_kernel_silence_makes_signals_stale_like_a_polled_timeout() -> None:
    polled, reported = stale_records(False), stale_records(True)
    assert polled and [r[:2] for r in polled] == [r[:2] for r in reported]
    # last seen = when the silence was noticed minus the timeout: the real last frame,
    # give or take how late the notice was read (4 ms here).
    for a, b in zip(polled, reported, strict=True):
        assert a[2] <= b[2]


def test_an_error_frame_whose_class_bits_equal_a_mapped_id_is_not_data() -> None:
    """Bus-off + transceiver error (class 0x050) must not be decoded as ACU_CrashSts."""
    from agent.ingest.decoder import FrameDecoder

    setup = agent_config.load(ROOT / "config" / "bench.toml").buses[0]
    assert 0x050 in setup.plans
    decoder = FrameDecoder(setup)
    err = can.Message(arbitration_id=0x050, is_extended_id=False, is_error_frame=True,
                      data=bytes([0xFF] * 8))
    assert decoder.decode(err, 1.0) is None
    assert decoder.counters.error_frames == 1 and decoder.counters.decoded == 0
    assert decoder.messages[0x050].seen is None      # not "fresh" either
